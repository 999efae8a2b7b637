-- /etc/petrel/petrel.lua: the default configuration `make install` puts in place
-- (never overwriting an existing one). A local relay: applications on this host
-- submit over SMTP (127.0.0.1:2525, or `sendmail`) and HTTP (127.0.0.1:8080);
-- petrel queues in /var/lib/petrel/spool and delivers by MX lookup.
-- See petrel.lua(5); check a change with `petrel -c /etc/petrel/petrel.lua --check`.
-- SPDX-License-Identifier: Apache-2.0

petrel.start_smtp_listener {
  listen = "127.0.0.1:2525",
  name = "relay-in",
  relay_hosts = { "127.0.0.0/8", "::1/128" },
  -- Behind HAProxy (send-proxy-v2): the load balancers' addresses here.
  -- proxy_protocol = true, proxy_trusted_hosts = { "10.0.1.5/32" },
}

petrel.start_http_listener {
  listen = "127.0.0.1:8080",            -- /metrics, /healthz, /readyz and the APIs
  trusted_hosts = { "127.0.0.1", "::1" },
}

petrel.configure_queue {
  spool_dir = "/var/lib/petrel/spool",
  retry_interval = "5m",
  max_retry_interval = "1h",
  max_retry_age = "72h",
}

petrel.configure_delivery {
  tls = "may",
  -- relayhost = "[smtp.example.com]:587",
}

-- petrel.configure_dkim_signing {     -- keys from `petrelctl dkim-keygen`
--   domain = "example.com", selector = "mail",
--   key_file = "/etc/petrel/keys/mail.example.com.pem",
-- }

petrel.configure_logging {
  path = "/var/log/petrel/petrel.jsonl", -- rotated by /etc/logrotate.d/petrel
  level = "info",
}
