-- petrel.lua: the bundled default configuration (used by `make run`).
-- A local relay: applications on this machine hand mail over SMTP (port 2525) or
-- HTTP (port 8080); petrel queues it in ./var/spool and delivers it by MX lookup.
-- SPDX-License-Identifier: Apache-2.0
--
-- This file is plain Lua 5.4. `petrel` holds the API and `kumo` is the same
-- table, so KumoMTA-style snippets work as written. Durations are "30s", "5m",
-- "72h", "7d" or seconds; sizes are "25MB", "512KB" or bytes. A misspelt option,
-- a wrong type or a bad value stops petrel with FILE:LINE and the option name:
-- check a change with `build/petrel -c petrel.lua --check`.
-- Values written out below are the defaults unless marked "example".

-- Inbound SMTP. Only loopback clients may relay without AUTH: never widen
-- relay_hosts to networks you do not control (an open relay is blocklisted fast).
petrel.start_smtp_listener {
  listen = "127.0.0.1:2525",
  name = "relay-in",
  relay_hosts = { "127.0.0.0/8", "::1/128" },
  max_message_size = "25MB",
  max_recipients = 1000,
  -- hostname = "relay.example.com",    -- greeting/EHLO name; default: host name
  -- auth_mechanisms = { "PLAIN", "LOGIN", "CRAM-MD5" },  -- needs configure_auth
  -- tls = { cert_file = "tls/server.crt", key_file = "tls/server.key" },
}

-- Example: a submission port with implicit TLS (SMTPS) and AUTH.
-- petrel.start_smtp_listener {
--   listen = "[::]:465",
--   name = "smtps",
--   relay_hosts = {},                  -- everyone must authenticate
--   auth_mechanisms = { "PLAIN", "LOGIN" },
--   tls = { cert_file = "tls/server.crt", key_file = "tls/server.key", implicit = true },
-- }
-- petrel.configure_auth { users_file = "users.txt" }  -- `petrelctl hash-password`

-- HTTP: GET /metrics (Prometheus), /healthz, /readyz. The injection API
-- (POST /v1/message, /api/inject/v1) and the queue admin API are not built yet.
-- Loopback callers need no key; others send "Authorization: Bearer KEY".
petrel.start_http_listener {
  listen = "127.0.0.1:8080",
  trusted_hosts = { "127.0.0.1", "::1" },
  api_keys = {},                       -- example: { "change-me" }
}

-- -- The durable queue and its retry schedule.

petrel.configure_queue {
  spool_dir = "./var/spool",           -- created if missing
  retry_interval = "5m",               -- first retry; doubles each time
  max_retry_interval = "1h",
  max_retry_age = "72h",               -- then the message bounces as expired
  max_queue_depth = 1000000,           -- above it new mail gets 452 4.3.1
}

-- Outbound delivery: direct to each domain's MX hosts (no relayhost).
petrel.configure_delivery {
  threads = 0,                         -- 0 = one per CPU core
  tls = "may",                         -- may | encrypt | verify
  max_connections_per_domain = 10,
  max_deliveries_per_connection = 100,
  connect_timeout = "30s",
  -- Example: send everything through a smarthost instead (brackets = no MX lookup).
  -- relayhost = "[smtp.example.com]:587",
  -- tls = "encrypt",
  -- auth = { username = "relay-user", password_file = "secrets/relay.pass" },
  -- max_message_rate = 1000,           -- per minute per destination domain
}

-- Example: per-domain routing, like Postfix transport maps. The most specific
-- key wins: "domain", then ".parent" keys, then "*".
-- petrel.configure_transport {
--   ["highpriority.com"] = { relayhost = "[smtp.premiumrelay.com]:587", tls = "encrypt",
--                            auth = { username = "u", password = "p" } },
--   [".highpriority.com"] = { relayhost = "[smtp.premiumrelay.com]:587" },
--   ["yourdomain.com"] = "discard",     -- accepted, then dropped
--   ["blocked.example"] = "error:550 5.1.1 local delivery disabled",
--   ["*"] = { relayhost = "[smtp.primaryrelay.com]:587" },
-- }

-- Example: DKIM signing (one call per key; two keys for a domain = dual signing).
-- petrel.configure_dkim_signing {
--   domain = "example.com", selector = "mail", key_file = "keys/mail.pem",
--   headers = { "From", "To", "Subject", "Date", "Message-ID" },
--   algorithm = "rsa-sha256",          -- or "ed25519-sha256"
-- }

-- Example: strip internal details from the client's headers at reception.
-- petrel.configure_header_checks {
--   { pattern = "^Received: from (internal|localhost|192\\.168\\.|10\\.)", action = "IGNORE" },
--   { pattern = "^X-Originating-IP:", action = "IGNORE" },
-- }

-- petrel.configure_dns { resolvers = { "127.0.0.1:5353" } }  -- default: resolv.conf
-- petrel.configure_tls { min_tls_version = "1.2", prefer_server_ciphers = true }
-- petrel.configure_process {
--   user = "petrel",     -- drop root after binding
--   smtp_threads = 0,    -- SMTP event loops; 0 = half the cores, at least one
-- }

-- One JSON record per recipient per event; diagnostics go to stderr.
petrel.configure_logging {
  path = "./var/log/petrel.jsonl",
  level = "info",                      -- debug | info | warn | error
}

-- Hooks (examples). Handlers of one event run in the order registered; inside
-- them the actions (add_header, remove_header, set_queue_priority, route_to,
-- sign_dkim, limit_sending, log_info) act on the message being handled. An error in
-- smtp_message_received answers 451 4.3.0. All five events run: smtp_server_greeting,
-- smtp_message_received, http_message_received, http_request and
-- smtp_delivery_result (after every delivery attempt, on the delivery thread).
--
-- petrel.on("smtp_message_received", function(domain, meta)
--   if meta.headers["X-Type"] == "transactional" then
--     petrel.set_queue_priority("high")
--   end
--   petrel.add_header("X-Relayed-By", "petrel")
-- end)
--
-- petrel.on("smtp_delivery_result", function(result, meta)
--   if result.code == 421 or result.code == 429 then
--     adjust_domain_rate(meta.domain, -0.3)  -- 30% slower, recovering over time
--     log_warn("throttled by " .. meta.domain)
--   end
-- end)
