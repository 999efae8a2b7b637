-- petrel.lua for the container image: SMTP and HTTP on all addresses (the
-- container network is the boundary), spool on the /var/lib/petrel volume, the
-- JSON log on stdout's neighbour /var/log/petrel. Mount your own over it.
-- SPDX-License-Identifier: Apache-2.0
petrel.start_smtp_listener {
  listen = "0.0.0.0:2525",
  relay_hosts = { "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8" },
}
petrel.start_http_listener {
  listen = "0.0.0.0:8080",
  trusted_hosts = { "127.0.0.1", "::1" },   -- /metrics, /healthz and /readyz need no key
}
petrel.configure_queue { spool_dir = "/var/lib/petrel/spool" }
petrel.configure_logging { path = "/var/log/petrel/petrel.jsonl", level = "info" }
