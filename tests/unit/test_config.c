/* Unit tests of the config loader (DESIGN §4): defaults, every option, exact
 * "FILE:LINE: message" errors, the seeds' snippets, routes and worker states.
 * Config files are temp files under /tmp, always removed; nothing is bound.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lua.h>
#include <lauxlib.h>

#include "core/config.h"
#include "util/result.h"

/* ---- helpers ---------------------------------------------------------------- */

/* Writes text to a fresh temp file; path gets its name. */
static void write_cfg(const char *text, char path[64])
{
    snprintf(path, 64, "/tmp/petrel_test_config_XXXXXX.lua");
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
}

static struct config *load_ok(const char *text)
{
    char path[64], err[1024] = "";
    write_cfg(text, path);
    struct config *cfg = config_load(path, err, sizeof err);
    unlink(path);
    if (!cfg)
        fail_msg("config did not load: %s", err);
    return cfg;
}

/* Loads text, expects failure with exactly "PATH:LINE: msg". */
static void load_err(const char *text, int line, const char *msg)
{
    char path[64], err[1024] = "", want[1200];
    write_cfg(text, path);
    struct config *cfg = config_load(path, err, sizeof err);
    unlink(path);
    if (cfg) {
        config_free(cfg);
        fail_msg("config loaded, expected error: %s", msg);
    }
    snprintf(want, sizeof want, "%s:%d: %s", path, line, msg);
    assert_string_equal(err, want);
}

/* Like load_err but msg only has to start the message after "PATH:LINE: ". */
static void load_err_prefix(const char *text, int line, const char *msg)
{
    char path[64], err[1024] = "", want[1200];
    write_cfg(text, path);
    struct config *cfg = config_load(path, err, sizeof err);
    unlink(path);
    if (cfg) {
        config_free(cfg);
        fail_msg("config loaded, expected error: %s", msg);
    }
    snprintf(want, sizeof want, "%s:%d: %s", path, line, msg);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("got  \"%s\"\nwant \"%s...\"", err, want);
}

static void host_name(char out[256])
{
    if (gethostname(out, 256) != 0 || !out[0])
        snprintf(out, 256, "localhost");
    out[255] = '\0';
}

/* ---- defaults --------------------------------------------------------------- */

static void test_defaults(void **state)
{
    struct config *c = load_ok("-- nothing\n");
    char hn[256];
    host_name(hn);
    assert_int_equal(c->n_listeners, 0);
    assert_int_equal(c->n_http, 0);
    assert_string_equal(c->queue.spool_dir, "./var/spool");
    assert_true(c->queue.retry_interval == 300);
    assert_true(c->queue.max_retry_interval == 3600);
    assert_true(c->queue.max_retry_age == 72 * 3600);
    assert_int_equal(c->queue.max_queue_depth, 1000000);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c->delivery.threads, cpus < 1 ? 1 : cpus);
    assert_int_equal(c->smtp_threads, cpus / 2 < 1 ? 1 : cpus / 2);
    assert_int_equal(c->delivery.dflt.kind, ROUTE_DEFAULT);
    assert_null(c->delivery.dflt.relayhost);
    assert_string_equal(c->delivery.dflt.tls, "may");
    assert_null(c->delivery.dflt.ca_file);
    assert_null(c->delivery.dflt.auth);
    assert_int_equal(c->delivery.smtp_port, 25);
    assert_int_equal(c->delivery.max_connections_per_domain, 10);
    assert_int_equal(c->delivery.max_message_rate, 0);
    assert_int_equal(c->delivery.max_deliveries_per_connection, 100);
    assert_true(c->delivery.connect_timeout == 30);
    assert_string_equal(c->delivery.helo_name, hn);
    assert_int_equal(c->n_routes, 0);
    assert_null(c->dns_resolvers);
    assert_int_equal(c->n_dns_resolvers, 0);
    assert_string_equal(c->tls.min_tls_version, "1.2");
    assert_null(c->tls.ciphers);
    assert_true(c->tls.prefer_server_ciphers);
    assert_int_equal(c->n_dkim, 0);
    assert_null(c->auth_users_file);
    assert_null(c->process_user);
    assert_int_equal(c->n_header_checks, 0);
    assert_string_equal(c->logging.path, "./var/log/petrel.jsonl");
    assert_string_equal(c->logging.level, "info");
    assert_int_equal(c->n_hooks, 0);
    assert_null(config_route_for(c, "example.com"));
    config_free(c);
    config_free(NULL);
}

static void test_listener_defaults(void **state)
{
    struct config *c = load_ok("\n"
                               "petrel.start_smtp_listener { listen = \"127.0.0.1:2525\" }\n"
                               "petrel.start_http_listener { listen = \"127.0.0.1:8080\" }\n");
    char hn[256];
    host_name(hn);
    assert_int_equal(c->n_listeners, 1);
    struct cfg_listener *l = &c->listeners[0];
    assert_string_equal(l->listen, "127.0.0.1:2525");
    assert_string_equal(l->host, "127.0.0.1");
    assert_int_equal(l->port, 2525);
    assert_string_equal(l->name, "127.0.0.1:2525");
    assert_string_equal(l->hostname, hn);
    assert_int_equal(l->n_relay_hosts, 2);
    assert_int_equal(l->relay_hosts[0].family, AF_INET);
    assert_int_equal(l->relay_hosts[0].prefix, 8);
    assert_int_equal(l->relay_hosts[0].addr[0], 127);
    assert_int_equal(l->relay_hosts[1].family, AF_INET6);
    assert_int_equal(l->relay_hosts[1].prefix, 128);
    assert_int_equal(l->relay_hosts[1].addr[15], 1);
    assert_int_equal(l->n_auth_mechanisms, 0);
    assert_true(l->auth_require_tls);
    assert_null(l->tls);
    assert_int_equal(l->max_message_size, 25 * 1024 * 1024);
    assert_int_equal(l->max_recipients, 1000);
    assert_int_equal(l->max_connections, 10000);
    assert_int_equal(l->max_connections_per_ip, 100);
    assert_true(l->greeting_timeout == 30);
    assert_true(l->command_timeout == 300);
    assert_true(l->data_timeout == 600);
    assert_false(l->proxy_protocol);
    assert_false(l->hide_received);
    assert_null(l->tenant);
    assert_int_equal(l->line, 2);

    assert_int_equal(c->n_http, 1);
    struct cfg_http_listener *h = &c->http[0];
    assert_string_equal(h->host, "127.0.0.1");
    assert_int_equal(h->port, 8080);
    assert_int_equal(h->n_trusted_hosts, 2);
    assert_int_equal(h->trusted_hosts[0].family, AF_INET);
    assert_int_equal(h->trusted_hosts[0].prefix, 32);
    assert_int_equal(h->trusted_hosts[1].family, AF_INET6);
    assert_int_equal(h->trusted_hosts[1].prefix, 128);
    assert_int_equal(h->n_api_keys, 0);
    assert_null(h->tls);
    config_free(c);
}

static void test_listen_forms(void **state)
{
    struct config *c = load_ok(
        "petrel.start_smtp_listener { listen = \"127.0.0.1:2525\" }\n"
        "petrel.start_smtp_listener { listen = \"[::]:2525\" }\n"
        "petrel.start_smtp_listener { listen = \"[::1]:2526\" }\n"
        "petrel.start_smtp_listener { listen = \"0.0.0.0:25\" }\n");
    assert_int_equal(c->n_listeners, 4);
    assert_string_equal(c->listeners[1].host, "::");
    assert_int_equal(c->listeners[1].port, 2525);
    assert_string_equal(c->listeners[2].host, "::1");
    assert_int_equal(c->listeners[2].port, 2526);
    assert_string_equal(c->listeners[3].host, "0.0.0.0");
    assert_int_equal(c->listeners[3].port, 25);
    assert_int_equal(c->listeners[3].line, 4);
    config_free(c);
}

/* ---- every option ----------------------------------------------------------- */

static const char every_option[] =
    "petrel.start_smtp_listener {\n"
    "  listen = \"[::]:465\", name = \"smtps\", hostname = \"relay.example.com\",\n"
    "  relay_hosts = { \"10.0.0.0/8\", \"192.168.1.7\" },\n"
    "  auth_mechanisms = { \"plain\", \"LOGIN\", \"Cram-MD5\" },\n"
    "  auth_require_tls = false,\n"
    "  tls = { cert_file = \"c.pem\", key_file = \"k.pem\", implicit = true,\n"
    "          min_tls_version = \"1.3\" },\n"
    "  max_message_size = \"512KB\", max_recipients = 50, max_connections = 20,\n"
    "  max_connections_per_ip = 5, greeting_timeout = \"1m\", command_timeout = 90,\n"
    "  data_timeout = \"1.5h\", proxy_protocol = true, hide_received = true,\n"
    "  proxy_trusted_hosts = { \"10.0.1.0/24\", \"::1\" },\n"
    "  tenant = \"acme\",\n"
    "}\n"
    "petrel.start_http_listener {\n"
    "  listen = \"127.0.0.1:2000\", trusted_hosts = { \"10.1.0.0/16\" },\n"
    "  api_keys = { \"k1\", \"k2\" }, tls = { cert_file = \"h.pem\", key_file = \"hk.pem\" },\n"
    "}\n"
    "petrel.configure_queue {\n"
    "  spool_dir = \"/srv/spool\", retry_interval = \"30s\", max_retry_interval = \"2h\",\n"
    "  max_retry_age = \"5d\", max_queue_depth = 5000,\n"
    "}\n"
    "petrel.configure_delivery {\n"
    "  threads = 3, relayhost = \"[smtp.example.com]:587\", smtp_port = 2526,\n"
    "  tls = \"verify\", ca_file = \"ca.pem\",\n"
    "  auth = { username = \"u\", password_file = \"pw.txt\" },\n"
    "  max_connections_per_domain = 4, max_message_rate = 1000,\n"
    "  max_deliveries_per_connection = 7, connect_timeout = \"10s\", helo_name = \"out.example\",\n"
    "}\n"
    "petrel.configure_transport {\n"
    "  [\"HighPriority.com\"] = { relayhost = \"[smtp.premiumrelay.com]:587\",\n"
    "     auth = { username = \"pu\", password = \"pp\" }, tls = \"encrypt\", ca_file = \"x\" },\n"
    "  [\".highpriority.com\"] = { relayhost = \"mx.premiumrelay.com\" },\n"
    "  [\"yourdomain.com\"] = \"discard\",\n"
    "  [\"blocked.example\"] = \"error:550 5.1.1 local delivery disabled\",\n"
    "  [\"*\"] = { relayhost = \"[smtp.primaryrelay.com]:587\" },\n"
    "}\n"
    "petrel.configure_dns { resolvers = { \"127.0.0.1:5353\", \"::1\" } }\n"
    "petrel.configure_tls { min_tls_version = \"1.3\", ciphers = \"HIGH\",\n"
    "  prefer_server_ciphers = false }\n"
    "petrel.configure_dkim_signing { domain = \"Example.COM\", selector = \"mail\",\n"
    "  key_file = \"keys/mail.pem\", headers = { \"From\", \"Subject\" },\n"
    "  algorithm = \"ed25519-sha256\" }\n"
    "petrel.configure_dkim_signing { domain = \"example.com\", selector = \"rsa\",\n"
    "  key_file = \"keys/rsa.pem\" }\n"
    "petrel.configure_auth { users_file = \"users.txt\" }\n"
    "petrel.configure_process { user = \"petrel\", smtp_threads = 3 }\n"
    "petrel.configure_header_checks {\n"
    "  { pattern = \"^Received: from (internal|localhost|192\\\\.168\\\\.|10\\\\.)\",\n"
    "    action = \"IGNORE\" },\n"
    "  { pattern = \"^X-Originating-IP:\", action = \"ignore\" },\n"
    "  { pattern = \"^Subject: spam\", action = \"reject  no spam please\" },\n"
    "}\n"
    "petrel.configure_logging { path = \"/var/log/p.jsonl\", level = \"debug\" }\n"
    "petrel.on(\"smtp_server_greeting\", function() end)\n"
    "petrel.on(\"smtp_message_received\", function() end)\n"
    "petrel.on(\"http_message_received\", function() end)\n"
    "petrel.on(\"smtp_delivery_result\", function() end)\n"
    "petrel.on(\"http_request\", function() end)\n";

static void test_every_option(void **state)
{
    struct config *c = load_ok(every_option);
    struct cfg_listener *l = &c->listeners[0];
    assert_string_equal(l->host, "::");
    assert_int_equal(l->port, 465);
    assert_string_equal(l->name, "smtps");
    assert_string_equal(l->hostname, "relay.example.com");
    assert_int_equal(l->n_relay_hosts, 2);
    assert_int_equal(l->relay_hosts[0].prefix, 8);
    assert_int_equal(l->relay_hosts[1].prefix, 32);
    assert_int_equal(l->n_auth_mechanisms, 3);
    assert_string_equal(l->auth_mechanisms[0], "PLAIN");
    assert_string_equal(l->auth_mechanisms[1], "LOGIN");
    assert_string_equal(l->auth_mechanisms[2], "CRAM-MD5");
    assert_false(l->auth_require_tls);
    assert_non_null(l->tls);
    assert_string_equal(l->tls->cert_file, "c.pem");
    assert_string_equal(l->tls->key_file, "k.pem");
    assert_true(l->tls->implicit);
    assert_string_equal(l->tls->min_tls_version, "1.3");
    assert_int_equal(l->max_message_size, 512 * 1024);
    assert_int_equal(l->max_recipients, 50);
    assert_int_equal(l->max_connections, 20);
    assert_int_equal(l->max_connections_per_ip, 5);
    assert_true(l->greeting_timeout == 60);
    assert_true(l->command_timeout == 90);
    assert_true(l->data_timeout == 5400);
    assert_true(l->proxy_protocol);
    assert_int_equal(l->n_proxy_trusted_hosts, 2);
    assert_true(l->hide_received);
    assert_string_equal(l->tenant, "acme");

    struct cfg_http_listener *h = &c->http[0];
    assert_int_equal(h->port, 2000);
    assert_int_equal(h->n_trusted_hosts, 1);
    assert_int_equal(h->trusted_hosts[0].prefix, 16);
    assert_int_equal(h->n_api_keys, 2);
    assert_string_equal(h->api_keys[1], "k2");
    assert_string_equal(h->tls->cert_file, "h.pem");
    assert_true(h->tls->implicit);

    assert_string_equal(c->queue.spool_dir, "/srv/spool");
    assert_true(c->queue.retry_interval == 30);
    assert_true(c->queue.max_retry_interval == 7200);
    assert_true(c->queue.max_retry_age == 5 * 86400);
    assert_int_equal(c->queue.max_queue_depth, 5000);

    struct cfg_delivery *d = &c->delivery;
    assert_int_equal(d->threads, 3);
    assert_int_equal(d->dflt.kind, ROUTE_RELAY);
    assert_string_equal(d->dflt.relayhost, "[smtp.example.com]:587");
    assert_string_equal(d->dflt.relay_host, "smtp.example.com");
    assert_int_equal(d->dflt.relay_port, 587);
    assert_true(d->dflt.relay_no_mx);
    assert_string_equal(d->dflt.tls, "verify");
    assert_string_equal(d->dflt.ca_file, "ca.pem");
    assert_string_equal(d->dflt.auth->username, "u");
    assert_null(d->dflt.auth->password);
    assert_string_equal(d->dflt.auth->password_file, "pw.txt");
    assert_int_equal(d->smtp_port, 2526);
    assert_int_equal(d->max_connections_per_domain, 4);
    assert_int_equal(d->max_message_rate, 1000);
    assert_int_equal(d->max_deliveries_per_connection, 7);
    assert_true(d->connect_timeout == 10);
    assert_string_equal(d->helo_name, "out.example");

    assert_int_equal(c->n_routes, 5);
    const struct cfg_route *r = config_route_for(c, "highpriority.com");
    assert_string_equal(r->key, "highpriority.com");
    assert_int_equal(r->kind, ROUTE_RELAY);
    assert_string_equal(r->relay_host, "smtp.premiumrelay.com");
    assert_int_equal(r->relay_port, 587);
    assert_true(r->relay_no_mx);
    assert_string_equal(r->auth->username, "pu");
    assert_string_equal(r->auth->password, "pp");
    assert_string_equal(r->tls, "encrypt");
    assert_string_equal(r->ca_file, "x");
    r = config_route_for(c, "a.highpriority.com");
    assert_string_equal(r->key, ".highpriority.com");
    assert_string_equal(r->relay_host, "mx.premiumrelay.com");
    assert_int_equal(r->relay_port, 25);
    assert_false(r->relay_no_mx);
    assert_null(r->tls);
    r = config_route_for(c, "yourdomain.com");
    assert_int_equal(r->kind, ROUTE_DISCARD);
    r = config_route_for(c, "blocked.example");
    assert_int_equal(r->kind, ROUTE_ERROR);
    assert_int_equal(r->error_code, 550);
    assert_string_equal(r->error_text, "550 5.1.1 local delivery disabled");
    r = config_route_for(c, "gmail.com");
    assert_string_equal(r->key, "*");
    assert_string_equal(r->relay_host, "smtp.primaryrelay.com");

    assert_int_equal(c->n_dns_resolvers, 2);
    assert_string_equal(c->dns_resolvers[0], "127.0.0.1:5353");
    assert_string_equal(c->dns_resolvers[1], "::1");
    assert_string_equal(c->tls.min_tls_version, "1.3");
    assert_string_equal(c->tls.ciphers, "HIGH");
    assert_false(c->tls.prefer_server_ciphers);

    assert_int_equal(c->n_dkim, 2);
    assert_string_equal(c->dkim[0].domain, "example.com");
    assert_string_equal(c->dkim[0].selector, "mail");
    assert_string_equal(c->dkim[0].key_file, "keys/mail.pem");
    assert_int_equal(c->dkim[0].n_headers, 2);
    assert_string_equal(c->dkim[0].headers[1], "Subject");
    assert_string_equal(c->dkim[0].algorithm, "ed25519-sha256");
    assert_string_equal(c->dkim[1].algorithm, "rsa-sha256");
    assert_int_equal(c->dkim[1].n_headers, 5);
    assert_string_equal(c->dkim[1].headers[4], "Message-ID");

    assert_string_equal(c->auth_users_file, "users.txt");
    assert_string_equal(c->process_user, "petrel");
    assert_int_equal(c->smtp_threads, 3);
    assert_int_equal(c->n_header_checks, 3);
    assert_string_equal(c->header_checks[0].pattern,
                        "^Received: from (internal|localhost|192\\.168\\.|10\\.)");
    assert_string_equal(c->header_checks[0].action, "IGNORE");
    assert_string_equal(c->header_checks[1].action, "IGNORE");
    assert_string_equal(c->header_checks[2].action, "REJECT no spam please");
    assert_string_equal(c->logging.path, "/var/log/p.jsonl");
    assert_string_equal(c->logging.level, "debug");
    assert_int_equal(c->n_hooks, 5);
    config_free(c);
}

static void test_relayhost_forms(void **state)
{
    struct config *c = load_ok("petrel.configure_delivery { relayhost = \"smtp.example.com\" }\n");
    assert_int_equal(c->delivery.dflt.kind, ROUTE_RELAY);
    assert_string_equal(c->delivery.dflt.relay_host, "smtp.example.com");
    assert_int_equal(c->delivery.dflt.relay_port, 25);
    assert_false(c->delivery.dflt.relay_no_mx);
    config_free(c);

    c = load_ok("petrel.configure_delivery { relayhost = \"[10.0.0.1]\" }\n");
    assert_string_equal(c->delivery.dflt.relay_host, "10.0.0.1");
    assert_int_equal(c->delivery.dflt.relay_port, 25);
    assert_true(c->delivery.dflt.relay_no_mx);
    config_free(c);

    /* Postfix's empty relayhost: MX delivery. */
    c = load_ok("petrel.configure_delivery { relayhost = \"[a.example]:587\" }\n"
                "petrel.configure_delivery { relayhost = \"\" }\n");
    assert_int_equal(c->delivery.dflt.kind, ROUTE_DEFAULT);
    assert_null(c->delivery.dflt.relayhost);
    config_free(c);
}

static void test_calls_merge(void **state)
{
    struct config *c = load_ok(
        "petrel.configure_queue { retry_interval = \"1m\" }\n"
        "petrel.configure_queue { max_retry_age = \"1d\" }\n"
        "petrel.configure_transport { [\"a.example\"] = \"discard\", [\"b.example\"] = \"discard\" }\n"
        "petrel.configure_transport { [\"A.example\"] = { relayhost = \"r.example:2525\" } }\n"
        "petrel.configure_header_checks { { pattern = \"^A:\", action = \"IGNORE\" } }\n"
        "petrel.configure_header_checks { { pattern = \"^B:\", action = \"IGNORE\" } }\n");
    assert_true(c->queue.retry_interval == 60);
    assert_true(c->queue.max_retry_age == 86400);
    assert_int_equal(c->n_routes, 2);
    const struct cfg_route *r = config_route_for(c, "a.example");
    assert_int_equal(r->kind, ROUTE_RELAY);
    assert_int_equal(r->relay_port, 2525);
    assert_int_equal(c->n_header_checks, 2);
    config_free(c);
}

/* ---- errors: exact FILE:LINE and option names ------------------------------- */

static void test_err_unknown_option(void **state)
{
    load_err("-- line 1\n"
             "petrel.start_smtp_listener {\n"
             "  listen = \"127.0.0.1:2525\",\n"
             "  foo = 1,\n"
             "}\n",
             2, "start_smtp_listener: unknown option 'foo'");
    load_err("kumo.configure_queue { shards = 4 }\n", 1,
             "configure_queue: unknown option 'shards'");
    load_err("\nkumo.configure_queue { backend = \"redis\" }\n", 2,
             "configure_queue: backend = \"redis\" needs redis_url");
    load_err_prefix("kumo.configure_queue { backend = \"memcached\" }\n", 1,
             "configure_queue: option 'backend' must be");
    load_err_prefix("kumo.configure_queue { backend = \"redis\", redis_url = \"redis://h:99999\" }\n", 1,
             "configure_queue: option 'redis_url': bad port");
    load_err("\n\npetrel.start_smtp_listener { listen = \"127.0.0.1:25\",\n"
             "  tls = { cert_file = \"c\", key_file = \"k\", verify = true } }\n",
             3, "start_smtp_listener: unknown option 'tls.verify'");
    load_err("petrel.start_http_listener { listen = \"127.0.0.1:80\",\n"
             "  tls = { cert_file = \"c\", key_file = \"k\", implicit = true } }\n",
             1, "start_http_listener: unknown option 'tls.implicit'");
    load_err("petrel.configure_delivery { auth = { username = \"u\", pass = \"p\" } }\n", 1,
             "configure_delivery: unknown option 'auth.pass'");
    load_err("petrel.configure_transport { [\"x.example\"] = { relay = \"a:25\" } }\n", 1,
             "configure_transport: route 'x.example': unknown option 'relay'");
    load_err("petrel.configure_logging { file = \"x\" }\n", 1,
             "configure_logging: unknown option 'file'");
    load_err_prefix("petrel.configure_queue { \"5m\" }\n", 1,
                    "configure_queue: unexpected number key");
}

static void test_err_wrong_type(void **state)
{
    load_err("petrel.start_smtp_listener {\n"
             "  listen = \"127.0.0.1:2525\",\n"
             "  max_recipients = \"many\",\n"
             "}\n",
             1, "start_smtp_listener: option 'max_recipients' must be an integer");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", max_recipients = 1.5 }\n",
             1, "start_smtp_listener: option 'max_recipients' must be an integer");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", max_recipients = 0 }\n",
             1, "start_smtp_listener: option 'max_recipients' must be at least 1");
    load_err("petrel.start_smtp_listener { listen = 2525 }\n", 1,
             "start_smtp_listener: option 'listen' must be a string");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", proxy_protocol = \"yes\" }\n",
             1, "start_smtp_listener: option 'proxy_protocol' must be a boolean (true or false)");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", proxy_protocol = true }\n",
             1, "start_smtp_listener: proxy_protocol = true needs proxy_trusted_hosts (the CIDRs "
             "of the load balancers allowed to send the PROXY header)");
    load_err_prefix("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", proxy_trusted_hosts = { \"10.0.0.0/33\" } }\n",
             1, "start_smtp_listener: option 'proxy_trusted_hosts");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", relay_hosts = \"10.0.0.0/8\" }\n",
             1, "start_smtp_listener: option 'relay_hosts' must be a list of strings (CIDRs or "
             "addresses)");
    load_err("petrel.start_http_listener { listen = \"127.0.0.1:8080\", api_keys = { 1, 2 } }\n",
             1, "start_http_listener: option 'api_keys' must be a list of strings");
    load_err("petrel.configure_delivery { threads = 2000 }\n", 1,
             "configure_delivery: option 'threads' must be between 0 and 1024");
    load_err("petrel.configure_delivery { smtp_port = 70000 }\n", 1,
             "configure_delivery: option 'smtp_port' must be between 1 and 65535");
    load_err("petrel.configure_delivery { auth = \"u:p\" }\n", 1,
             "configure_delivery: option 'auth' must be a table { username = ..., password = ... }");
    load_err("petrel.configure_process { user = \"\" }\n", 1,
             "configure_process: option 'user' must not be empty");
    load_err("petrel.configure_process { smtp_threads = -1 }\n", 1,
             "configure_process: option 'smtp_threads' must be between 0 and 1024");
    load_err("petrel.configure_queue \"x\"\n", 1,
             "configure_queue: expects one table of options: petrel.configure_queue { ... }");
}

static void test_err_bad_values(void **state)
{
    load_err("\npetrel.start_smtp_listener { listen = \"127.0.0.1:2525\",\n"
             "  relay_hosts = { \"10.0.0.0/8\", \"10.0.0.0/33\" } }\n",
             2, "start_smtp_listener: option 'relay_hosts': invalid CIDR '10.0.0.0/33'");
    load_err("petrel.start_http_listener { listen = \"127.0.0.1:8080\", trusted_hosts = { \"host\" } }\n",
             1, "start_http_listener: option 'trusted_hosts': invalid CIDR 'host'");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", greeting_timeout = \"30x\" }\n",
             1, "start_smtp_listener: option 'greeting_timeout': invalid duration '30x' "
             "(e.g. \"30s\", \"5m\", \"72h\", \"7d\" or seconds)");
    load_err("petrel.configure_queue { retry_interval = true }\n", 1,
             "configure_queue: option 'retry_interval' must be a duration (\"30s\", \"5m\", "
             "\"72h\", \"7d\" or a number of seconds)");
    load_err("petrel.configure_queue { retry_interval = 0 }\n", 1,
             "configure_queue: option 'retry_interval' must be a positive duration");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", max_message_size = \"25XB\" }\n",
             1, "start_smtp_listener: option 'max_message_size': invalid size '25XB' "
             "(e.g. \"25MB\", \"512KB\" or bytes)");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", max_message_size = {} }\n",
             1, "start_smtp_listener: option 'max_message_size' must be a size (\"25MB\", "
             "\"512KB\" or bytes)");
    load_err("petrel.configure_delivery { tls = \"maybe\" }\n", 1,
             "configure_delivery: option 'tls' must be \"may\", \"encrypt\" or \"verify\"");
    load_err("petrel.configure_transport { [\"a.example\"] = { tls = \"none\" } }\n", 1,
             "configure_transport: route 'a.example': option 'tls' must be \"may\", "
             "\"encrypt\" or \"verify\"");
    load_err("petrel.configure_tls { min_tls_version = \"1.1\" }\n", 1,
             "configure_tls: option 'min_tls_version' must be \"1.2\" or \"1.3\"");
    load_err("petrel.configure_dkim_signing { domain = \"e.com\", selector = \"s\",\n"
             "  key_file = \"k\", algorithm = \"rsa-sha1\" }\n", 1,
             "configure_dkim_signing: option 'algorithm' must be \"rsa-sha256\" or "
             "\"ed25519-sha256\"");
    load_err("petrel.configure_dkim_signing { domain = \"e.com\", selector = \"s\",\n"
             "  key_file = \"k\", headers = { \"To\" } }\n", 1,
             "configure_dkim_signing: option 'headers' must include \"From\" (RFC 6376)");
    load_err("petrel.configure_dkim_signing { domain = \"e.com\", key_file = \"k\" }\n", 1,
             "configure_dkim_signing: option 'selector' is required");
    load_err("petrel.configure_logging { level = \"verbose\" }\n", 1,
             "configure_logging: option 'level' must be \"debug\", \"info\", \"warn\" or \"error\"");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\",\n"
             "  auth_mechanisms = { \"XOAUTH2\" } }\n", 1,
             "start_smtp_listener: option 'auth_mechanisms': unsupported mechanism 'XOAUTH2' "
             "(PLAIN, LOGIN or CRAM-MD5)");
    load_err("petrel.start_smtp_listener { listen = \"localhost:25\" }\n", 1,
             "start_smtp_listener: option 'listen': invalid address 'localhost:25' (IP:PORT, "
             "e.g. \"127.0.0.1:2525\" or \"[::]:2525\")");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1\" }\n", 1,
             "start_smtp_listener: option 'listen': invalid address '127.0.0.1' (IP:PORT, "
             "e.g. \"127.0.0.1:2525\" or \"[::]:2525\")");
    load_err("petrel.start_smtp_listener { name = \"x\" }\n", 1,
             "start_smtp_listener: option 'listen' is required");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:25\", tls = { cert_file = \"c\" } }\n",
             1, "start_smtp_listener: option 'tls.key_file' is required");
    load_err("petrel.configure_delivery { auth = { username = \"u\" } }\n", 1,
             "configure_delivery: option 'auth' needs exactly one of 'password' and "
             "'password_file'");
    load_err("petrel.configure_delivery { relayhost = \"[smtp.example.com]:0\" }\n", 1,
             "configure_delivery: option 'relayhost': invalid relay host '[smtp.example.com]:0' "
             "(e.g. \"[smtp.example.com]:587\")");
    load_err("petrel.configure_dns { resolvers = { \"dns.example\" } }\n", 1,
             "configure_dns: option 'resolvers': invalid resolver 'dns.example' (IP or "
             "IP:PORT, e.g. \"127.0.0.1:5353\")");
    load_err("petrel.start_smtp_listener { listen = \"127.0.0.1:25\", name = \"a\" }\n"
             "petrel.start_http_listener { listen = \"127.0.0.1:25\" }\n", 2,
             "start_http_listener: address '127.0.0.1:25' is already used by listener 'a'");
}

static void test_err_header_checks(void **state)
{
    load_err_prefix("petrel.configure_header_checks {\n"
                    "  { pattern = \"^A:\", action = \"IGNORE\" },\n"
                    "  { pattern = \"^(X-Foo\", action = \"IGNORE\" },\n"
                    "}\n", 1, "configure_header_checks: entry 2: option 'pattern': "
                    "invalid regex '^(X-Foo': ");
    load_err_prefix("petrel.configure_header_checks { { pattern = \"^A:\", action = \"DROP\" } }\n",
                    1, "configure_header_checks: entry 1: option 'action': invalid action 'DROP'");
    load_err_prefix("petrel.configure_header_checks { { pattern = \"^A:\", action = \"PREPEND\" } }\n",
                    1, "configure_header_checks: entry 1: option 'action': invalid action");
    load_err("petrel.configure_header_checks { { pattern = \"^A:\" } }\n", 1,
             "configure_header_checks: entry 1: option 'action' is required");
    load_err("petrel.configure_header_checks { pattern = \"^A:\", action = \"IGNORE\" }\n", 1,
             "configure_header_checks: expects a list of { pattern = ..., action = ... } tables");
}

static void test_err_routes(void **state)
{
    load_err("petrel.configure_transport {\n"
             "  [\"blocked.example\"] = \"error:250 all fine\",\n"
             "}\n", 1,
             "configure_transport: route 'blocked.example': invalid error route 'error:250 all "
             "fine' (expected \"error:CODE TEXT\" with a 4xx or 5xx CODE, e.g. \"error:550 5.1.1 "
             "local delivery disabled\")");
    load_err_prefix("petrel.configure_transport { [\"b.example\"] = \"error:oops\" }\n", 1,
                    "configure_transport: route 'b.example': invalid error route 'error:oops'");
    load_err_prefix("petrel.configure_transport { [\"b.example\"] = \"relay\" }\n", 1,
                    "configure_transport: route 'b.example': invalid route 'relay'");
    load_err_prefix("petrel.configure_transport { [\"bad domain\"] = \"discard\" }\n", 1,
                    "configure_transport: invalid route key 'bad domain'");
    load_err("petrel.configure_transport { \"discard\" }\n", 1,
             "configure_transport: unexpected number key (routes are written "
             "[\"domain\"] = route)");
    load_err("petrel.configure_delivery { auth = { \"u\", \"p\" } }\n", 1,
             "configure_delivery: unexpected number key in 'auth' (options are written "
             "name = value)");
    load_err_prefix("petrel.configure_transport { [\"a.example\"] = 25 }\n", 1,
                    "configure_transport: route 'a.example' must be");
    load_err("petrel.configure_transport { [\"a.example\"] = \"discard\",\n"
             "  [\"A.EXAMPLE\"] = \"discard\" }\n", 1,
             "configure_transport: route 'a.example' is given twice");
    /* A 4xx route is a temporary refusal. */
    struct config *c = load_ok("petrel.configure_transport { [\"t.example\"] = "
                               "\"error:451 4.3.0 try later\", [\"u.example\"] = \"error:554\" }\n");
    assert_int_equal(config_route_for(c, "t.example")->error_code, 451);
    assert_string_equal(config_route_for(c, "u.example")->error_text, "554");
    config_free(c);
}

static void test_err_lua(void **state)
{
    load_err("petrel.configure_queue {\n"
             "  spool_dir = \"x\"\n"
             "  retry_interval = \"5m\",\n"
             "}\n", 3, "'}' expected (to close '{' at line 1) near 'retry_interval'");
    load_err("local t = nil\n\nlocal x = t.field\n", 3,
             "attempt to index a nil value (local 't')");
    load_err("\nerror(\"custom failure\")\n", 2, "custom failure");
    load_err("\n\nerror(\"no position\", 0)\n", 3, "no position");
    load_err("error({})\n", 1, "(error object is a table value)");
    load_err_prefix("petrel.configure_redis { url = \"x\" }\n", 1,
             "configure_redis: option 'url': must start with redis:// or rediss://");
    load_err_prefix("\npetrel.configure_redis { key_prefix = \"p:\" }\n", 2,
             "configure_redis: option 'url' is required");
    load_err_prefix("petrel.configure_redis { url = \"redis://h/1\", bogus = 1 }\n", 1,
             "configure_redis: unknown option 'bogus'");
    /* An API error raised from inside a function reports the calling line. */
    load_err("local function listen(addr)\n"
             "  petrel.start_smtp_listener { listen = addr, foo = 1 }\n"
             "end\n"
             "listen(\"127.0.0.1:25\")\n", 2, "start_smtp_listener: unknown option 'foo'");

    char err[256];
    assert_null(config_load("/nonexistent/petrel.lua", err, sizeof err));
    assert_string_equal(err, "/nonexistent/petrel.lua:0: cannot open config file: "
                        "No such file or directory");
}

static void test_err_hooks(void **state)
{
    load_err("\n\npetrel.on(\"smtp_message_recieved\", function() end)\n", 3,
             "on: unknown event 'smtp_message_recieved' (known: smtp_server_greeting, "
             "smtp_message_received, http_message_received, smtp_delivery_result, "
             "http_request)");
    load_err("petrel.on(\"http_request\", \"handler\")\n", 1,
             "on: the handler for 'http_request' must be a function");
    load_err("petrel.on(42, print)\n", 1, "on: the event name must be a string");
    load_err("\nkumo.add_header(\"X-A\", \"b\")\n", 2,
             "add_header can only be called inside a hook");
    load_err("kumo.set_queue_priority(\"high\")\n", 1,
             "set_queue_priority can only be called inside a hook");
    load_err("adjust_domain_rate(\"example.com\", -0.3)\n", 1,
             "adjust_domain_rate can only be called inside a hook");
    load_err("local r = kumo.route_to\nr(\"relay\")\n", 2,
             "route_to can only be called inside a hook");
    /* log_* print to stderr outside hooks instead of failing. */
    struct config *c = load_ok("log_info(\"config loading\")\npetrel.log_warn(\"careful\")\n");
    config_free(c);
}

/* ---- seeds ------------------------------------------------------------------ */

/* seeds/000: the KumoMTA relay guide's snippets, as written. */
static const char seed_000[] =
    "-- /etc/kumomta/relay.conf\n"
    "-- Production SMTP relay configuration\n"
    "\n"
    "-- SMTP Listener (accepts from internal apps)\n"
    "kumo.start_smtp_listener {\n"
    "    listen = \"[::]:2525\",  -- Internal relay port\n"
    "    name = \"relay-in\",\n"
    "    relay_hosts = { \"10.0.0.0/8\", \"172.16.0.0/12\" }, -- Internal networks only\n"
    "    auth_require_tls = true, -- Require AUTH from application servers\n"
    "}\n"
    "\n"
    "-- HTTP API for application injection\n"
    "kumo.start_http_listener {\n"
    "    listen = \"[::]:8080\",\n"
    "    trusted_hosts = { \"10.0.0.0/8\", \"127.0.0.1\" },\n"
    "}\n"
    "\n"
    "-- DKIM signing for all outbound\n"
    "kumo.configure_dkim_signing {\n"
    "    domain = \"example.com\",\n"
    "    selector = \"mail\",\n"
    "    key_file = \"/etc/kumomta/keys/mail._domainkey.example.com.pem\",\n"
    "    headers = { \"From\", \"To\", \"Subject\", \"Date\", \"Message-ID\" },\n"
    "}\n"
    "\n"
    "-- TLS for outbound delivery\n"
    "kumo.configure_tls {\n"
    "    min_tls_version = \"1.3\",\n"
    "    ciphers = \"ECDHE-RSA-AES256-GCM-SHA384\",\n"
    "}\n"
    "\n"
    "-- Prometheus metrics\n"
    "kumo.start_http_listener {\n"
    "    listen = \"[::]:2000\",\n"
    "    trusted_hosts = { \"127.0.0.1\" },\n"
    "}\n"
    "-- Per-customer relay configuration\n"
    "kumo.on(\"smtp_server_greeting\", function(domain, meta)\n"
    "    local tenant = meta.tenant\n"
    "\n"
    "    if tenant then\n"
    "        -- Apply per-tenant rate limits\n"
    "        local limit = get_tenant_rate_limit(tenant)\n"
    "        kumo.limit_sending(tenant, limit, { per = \"minute\" })\n"
    "\n"
    "        -- Set tenant-specific DKIM\n"
    "        local dkim = get_tenant_dkim(tenant)\n"
    "        if dkim then\n"
    "            kumo.sign_dkim(dkim.domain, dkim.selector, dkim.key_file)\n"
    "        end\n"
    "    end\n"
    "end)\n"
    "-- Enforce TLS 1.3 for all delivery\n"
    "kumo.configure_tls {\n"
    "    min_tls_version = \"1.3\",\n"
    "    prefer_server_ciphers = true,\n"
    "}\n"
    "\n"
    "-- For submission ports (SMTPS)\n"
    "kumo.start_smtp_listener {\n"
    "    listen = \"[::]:465\",\n"
    "    name = \"smtps\",\n"
    "    tls = {\n"
    "        cert_file = \"/etc/kumomta/tls/server.crt\",\n"
    "        key_file = \"/etc/kumomta/tls/server.key\",\n"
    "    },\n"
    "}\n"
    "-- Require AUTH for submission port\n"
    "kumo.start_smtp_listener {\n"
    "    listen = \"[::]:587\",\n"
    "    name = \"submission\",\n"
    "    auth_require_tls = true,\n"
    "    -- Supported mechanisms\n"
    "    auth_mechanisms = { \"PLAIN\", \"LOGIN\", \"CRAM-MD5\" },\n"
    "}\n"
    "-- API key validation\n"
    "kumo.on(\"http_request\", function(request)\n"
    "    local token = request.headers[\"Authorization\"]:gsub(\"Bearer \", \"\")\n"
    "    if not validate_api_key(token) then\n"
    "        return { status = 401, body = \"Unauthorized\" }\n"
    "    end\n"
    "end)\n"
    "-- /etc/kumomta/tuning.conf\n"
    "\n"
    "-- Delivery threads (scale with CPU cores)\n"
    "kumo.configure_delivery {\n"
    "    threads = 16, -- 2x CPU cores\n"
    "    max_connections_per_domain = 10,\n"
    "    max_message_rate = 1000, -- per minute per domain\n"
    "}\n"
    "\n"
    "-- Queue management\n"
    "kumo.configure_queue {\n"
    "    max_queue_depth = 100000,\n"
    "    retry_interval = \"5m\",\n"
    "    max_retry_age = \"72h\",\n"
    "    dead_letter_after = \"7d\",\n"
    "}\n"
    "-- Transactional: low latency priority\n"
    "kumo.on(\"smtp_message_received\", function(domain, meta)\n"
    "    local headers = meta.headers or {}\n"
    "    if headers[\"X-Type\"] == \"transactional\" then\n"
    "        -- Elevate priority\n"
    "        kumo.set_queue_priority(\"high\")\n"
    "    end\n"
    "end)\n"
    "-- Bulk: throughput priority\n"
    "kumo.on(\"smtp_message_received\", function(domain, meta)\n"
    "    local headers = meta.headers or {}\n"
    "    local campaign = headers[\"X-Campaign\"]\n"
    "\n"
    "    if campaign then\n"
    "        -- Track campaign metrics\n"
    "        increment_campaign_metric(campaign, \"queued\")\n"
    "    end\n"
    "end)\n"
    "\n"
    "-- List-Unsubscribe header (RFC 8058 - required for bulk)\n"
    "kumo.on(\"smtp_message_received\", function(domain, meta)\n"
    "    if is_bulk_campaign(meta.headers) then\n"
    "        kumo.add_header(\"List-Unsubscribe\", \"<mailto:unsubscribe@example.com?subject=unsubscribe>\")\n"
    "        kumo.add_header(\"List-Unsubscribe-Post\", \"List-Unsubscribe=One-Click\")\n"
    "    end\n"
    "end)\n"
    "kumo.on(\"smtp_delivery_result\", function(result, meta)\n"
    "    if result.code == 421 or result.code == 429 then\n"
    "        -- Reduce rate by 30%\n"
    "        adjust_domain_rate(meta.domain, -0.3)\n"
    "        log_warn(\"Throttled by \" .. meta.domain .. \", reducing rate\")\n"
    "    end\n"
    "end)\n";

/* seed_000 with its dead_letter_after line removed and a configure_auth added:
 * what a user ends up with after following --check's two errors. */
static char *seed_000_fixed(void)
{
    const char *dl = strstr(seed_000, "    dead_letter_after = \"7d\",\n");
    assert_non_null(dl);
    size_t n = strlen(seed_000), cut = strlen("    dead_letter_after = \"7d\",\n");
    const char *add = "kumo.configure_auth { users_file = \"/etc/kumomta/users\" }\n";
    char *t = malloc(n + strlen(add) + 1);
    assert_non_null(t);
    memcpy(t, seed_000, (size_t)(dl - seed_000));
    strcpy(t + (dl - seed_000), dl + cut);
    strcat(t, add);
    return t;
}

static int line_of(const char *text, const char *needle)
{
    const char *at = strstr(text, needle);
    assert_non_null(at);
    int line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

/* As written, the seed asks for a thing that would not work: --check says so. */
static void test_seed_000_check_errors(void **state)
{
    /* dead_letter_after is applied (expired mail kept that long); auth_mechanisms
     * with no configure_auth never offers AUTH: refused at its listener's line */
    load_err(seed_000, line_of(seed_000, "kumo.start_smtp_listener {\n    listen = \"[::]:587\""),
             "start_smtp_listener: option 'auth_mechanisms' needs petrel.configure_auth { "
             "users_file = ... } (without users AUTH is never offered)");
}

/* Warnings: port 465 without implicit TLS, AUTH never offered without TLS; the
 * config still loads. */
static void test_check_warnings(void **state)
{
    char *t = seed_000_fixed();
    struct config *c = load_ok(t);
    assert_non_null(c->warnings);
    char want[256];
    snprintf(want, sizeof want, ":%d: warning: start_smtp_listener [::]:465: clients expect "
             "implicit TLS (SMTPS) on port 465 but this listener speaks STARTTLS; set tls = {",
             line_of(t, "kumo.start_smtp_listener {\n    listen = \"[::]:465\""));
    if (!strstr(c->warnings, want))
        fail_msg("no '%s' in:\n%s", want, c->warnings);
    snprintf(want, sizeof want, ":%d: warning: start_smtp_listener [::]:587: AUTH is never offered",
             line_of(t, "kumo.start_smtp_listener {\n    listen = \"[::]:587\""));
    if (!strstr(c->warnings, want))
        fail_msg("no '%s' in:\n%s", want, c->warnings);
    config_free(c);
    free(t);
    /* implicit = true on 465, no port 465, tls with auth: no warning */
    c = load_ok("petrel.start_smtp_listener { listen = \"127.0.0.1:465\",\n"
                "  tls = { cert_file = \"c\", key_file = \"k\", implicit = true },\n"
                "  auth_mechanisms = { \"PLAIN\" } }\n"
                "petrel.configure_auth { users_file = \"u\" }\n");
    assert_null(c->warnings);
    config_free(c);
    c = load_ok("petrel.start_smtp_listener { listen = \"127.0.0.1:465\" }\n");
    assert_non_null(c->warnings);
    assert_non_null(strstr(c->warnings, "but this listener has no tls"));
    config_free(c);
    /* HTTPS ignores configure_tls ciphers: said */
    c = load_ok("petrel.configure_tls { ciphers = \"ECDHE-RSA-AES256-GCM-SHA384\" }\n"
                "petrel.start_http_listener { listen = \"127.0.0.1:8443\",\n"
                "  tls = { cert_file = \"c\", key_file = \"k\" } }\n");
    assert_non_null(c->warnings);
    assert_non_null(strstr(c->warnings, ":2: warning: start_http_listener 127.0.0.1:8443: "
                                        "configure_tls 'ciphers'"));
    config_free(c);
}

static void test_seed_000(void **state)
{
    char *t = seed_000_fixed();
    struct config *c = load_ok(t);
    free(t);
    assert_int_equal(c->n_listeners, 3);
    assert_string_equal(c->listeners[0].name, "relay-in");
    assert_string_equal(c->listeners[0].host, "::");
    assert_int_equal(c->listeners[0].n_relay_hosts, 2);
    assert_int_equal(c->listeners[0].relay_hosts[1].prefix, 12);
    assert_string_equal(c->listeners[1].name, "smtps");
    assert_false(c->listeners[1].tls->implicit);
    assert_int_equal(c->listeners[2].n_auth_mechanisms, 3);
    assert_int_equal(c->n_http, 2);
    assert_int_equal(c->http[1].port, 2000);
    assert_int_equal(c->n_dkim, 1);
    assert_string_equal(c->tls.min_tls_version, "1.3");
    assert_string_equal(c->tls.ciphers, "ECDHE-RSA-AES256-GCM-SHA384");
    assert_int_equal(c->delivery.threads, 16);
    assert_int_equal(c->delivery.max_message_rate, 1000);
    assert_int_equal(c->queue.max_queue_depth, 100000);
    assert_int_equal(c->n_hooks, 6);
    config_free(c);
}

/* seeds/003: the snippets within DESIGN's API (its configure_queue { backend =
 * "redis" } is test_seed_redis_queue's). */
static const char seed_003[] =
    "-- /etc/kumomta/security.conf\n"
    "-- Restrict relay to authorized networks only\n"
    "kumo.start_smtp_listener {\n"
    "    listen = \"[::]:25\",\n"
    "    name = \"mx\",\n"
    "    -- Reject connections from known spammers\n"
    "    max_connections_per_ip = 10,\n"
    "    greeting_timeout = \"30s\",\n"
    "}\n"
    "-- KumoMTA equivalent: per-tenant routing in Lua\n"
    "kumo.on(\"smtp_message_received\", function(domain, meta)\n"
    "    if domain == \"example.com\" then\n"
    "        kumo.route_to(\"relay-cluster\", { priority = \"high\" })\n"
    "    end\n"
    "end)\n";

/* The seed's cluster config, verbatim (issue 13). */
static void test_seed_redis_queue(void **state)
{
    struct config *c = load_ok("kumo.configure_queue {\n"
                               "    backend = \"redis\",\n"
                               "    redis_url = \"redis://shared-redis:6379\",\n"
                               "}\n");
    assert_string_equal(c->queue.backend, "redis");
    assert_string_equal(c->queue.redis_url, "redis://shared-redis:6379");
    assert_string_equal(c->queue.key_prefix, "petrel:");
    assert_true(c->queue.lease == 60.0);
    assert_int_equal(c->queue.wait_replicas, 0);
    config_free(c);
}

static void test_seed_003(void **state)
{
    struct config *c = load_ok(seed_003);
    assert_int_equal(c->listeners[0].port, 25);
    assert_int_equal(c->listeners[0].max_connections_per_ip, 10);
    assert_int_equal(c->n_hooks, 1);
    config_free(c);
}

/* seeds/004 is a Postfix guide: its relay, transport map and header checks
 * written with petrel's API. */
static const char seed_004[] =
    "-- main.cf: mynetworks, relayhost, smtp_sasl_*, smtp_tls_security_level, CAfile\n"
    "petrel.start_smtp_listener {\n"
    "  listen = \"0.0.0.0:25\",\n"
    "  relay_hosts = { \"127.0.0.1/32\", \"10.0.0.0/8\", \"192.168.0.0/16\" },\n"
    "  hostname = \"relay.yourdomain.com\",\n"
    "}\n"
    "petrel.configure_delivery {\n"
    "  relayhost = \"[email-smtp.us-east-1.amazonaws.com]:587\",\n"
    "  auth = { username = \"AKIAIOSFODNN7EXAMPLE\", password = \"wJalrXUtnFEMI/K7MDENG\" },\n"
    "  tls = \"encrypt\",\n"
    "  ca_file = \"/etc/ssl/certs/ca-certificates.crt\",\n"
    "}\n"
    "-- transport_maps and master.cf transports\n"
    "petrel.configure_transport {\n"
    "  [\"yourdomain.com\"] = \"discard\",\n"
    "  [\".yourdomain.com\"] = \"discard\",\n"
    "  [\"highpriority.com\"] = { relayhost = \"[smtp.premiumrelay.com]:587\",\n"
    "                           auth = { username = \"u\", password_file = \"sasl_premium\" },\n"
    "                           tls = \"encrypt\" },\n"
    "  [\".highpriority.com\"] = { relayhost = \"[smtp.premiumrelay.com]:587\" },\n"
    "  [\"*\"] = { relayhost = \"[smtp.primaryrelay.com]:587\",\n"
    "            auth = { username = \"u\", password_file = \"sasl_default\" } },\n"
    "  [\"local.invalid\"] = \"error:550 5.1.1 local delivery disabled\",\n"
    "}\n"
    "-- smtp_header_checks\n"
    "petrel.configure_header_checks {\n"
    "  { pattern = \"^Received: from (internal|localhost|192\\\\.168\\\\.|10\\\\.)\", action = \"IGNORE\" },\n"
    "  { pattern = \"^X-Originating-IP:\", action = \"IGNORE\" },\n"
    "  { pattern = \"^X-PHP-Originating-Script:\", action = \"IGNORE\" },\n"
    "}\n";

static void test_seed_004(void **state)
{
    struct config *c = load_ok(seed_004);
    assert_int_equal(c->listeners[0].n_relay_hosts, 3);
    assert_string_equal(c->delivery.dflt.relay_host, "email-smtp.us-east-1.amazonaws.com");
    assert_int_equal(c->delivery.dflt.relay_port, 587);
    assert_true(c->delivery.dflt.relay_no_mx);
    assert_string_equal(c->delivery.dflt.tls, "encrypt");
    assert_int_equal(c->n_routes, 6);
    assert_int_equal(config_route_for(c, "mail.yourdomain.com")->kind, ROUTE_DISCARD);
    assert_string_equal(config_route_for(c, "x.highpriority.com")->key, ".highpriority.com");
    assert_string_equal(config_route_for(c, "other.org")->auth->password_file, "sasl_default");
    assert_int_equal(c->n_header_checks, 3);
    config_free(c);
}

/* The bundled petrel.lua (tests run from the repository root). */
static void test_bundled_config(void **state)
{
    if (access("petrel.lua", R_OK) != 0)
        skip();
    char err[1024];
    struct config *c = config_load("petrel.lua", err, sizeof err);
    if (!c)
        fail_msg("petrel.lua: %s", err);
    assert_int_equal(c->n_listeners, 1);
    assert_string_equal(c->listeners[0].host, "127.0.0.1");
    assert_int_equal(c->listeners[0].port, 2525);
    assert_int_equal(c->listeners[0].n_relay_hosts, 2);
    assert_int_equal(c->n_http, 1);
    assert_string_equal(c->http[0].listen, "127.0.0.1:8080");
    assert_string_equal(c->queue.spool_dir, "./var/spool");
    assert_string_equal(c->logging.path, "./var/log/petrel.jsonl");
    assert_int_equal(c->delivery.dflt.kind, ROUTE_DEFAULT);
    config_free(c);
}

/* ---- routes, alias, worker -------------------------------------------------- */

/* configure_auth: users_file plus the AUTH failure ban (issue 3). */
static void test_auth_options(void **state)
{
    (void)state;
    struct config *c = load_ok("");
    assert_null(c->auth_users_file);
    assert_int_equal(c->auth_max_failures, 5);
    assert_true(c->auth_failure_window == 600);
    assert_true(c->auth_ban_time == 600);
    config_free(c);

    c = load_ok("petrel.configure_auth { users_file = \"u.txt\", max_failures = 3,\n"
                "  failure_window = \"2m\", ban_time = 3600 }\n");
    assert_string_equal(c->auth_users_file, "u.txt");
    assert_int_equal(c->auth_max_failures, 3);
    assert_true(c->auth_failure_window == 120);
    assert_true(c->auth_ban_time == 3600);
    config_free(c);

    load_err("petrel.configure_auth { users_file = \"u\", max_failures = 0 }\n", 1,
             "configure_auth: option 'max_failures' must be between 1 and 100");
    load_err("petrel.configure_auth { users_file = \"u\", max_failures = 2.5 }\n", 1,
             "configure_auth: option 'max_failures' must be an integer");
    load_err("\npetrel.configure_auth { users_file = \"u\", ban_time = 0 }\n", 2,
             "configure_auth: option 'ban_time' must be a positive duration");
    load_err_prefix("petrel.configure_auth { users_file = \"u\", failure_window = \"10q\" }\n",
                    1, "configure_auth: option 'failure_window': invalid duration '10q'");
    load_err("petrel.configure_auth { max_failures = 3 }\n", 1,
             "configure_auth: option 'users_file' is required");
    load_err("petrel.configure_auth { users_file = \"u\", max_failure = 3 }\n", 1,
             "configure_auth: unknown option 'max_failure'");
}

static void test_route_lookup(void **state)
{
    struct config *c = load_ok(
        "petrel.configure_transport {\n"
        "  [\"example.com\"] = \"error:550 exact\",\n"
        "  [\".example.com\"] = \"error:550 subdomains\",\n"
        "  [\".c.example.com\"] = \"error:550 deeper\",\n"
        "  [\"*\"] = \"error:550 star\",\n"
        "}\n");
    assert_string_equal(config_route_for(c, "example.com")->error_text, "550 exact");
    assert_string_equal(config_route_for(c, "EXAMPLE.com")->error_text, "550 exact");
    assert_string_equal(config_route_for(c, "example.com.")->error_text, "550 exact");
    assert_string_equal(config_route_for(c, "a.example.com")->error_text, "550 subdomains");
    assert_string_equal(config_route_for(c, "c.example.com")->error_text, "550 subdomains");
    assert_string_equal(config_route_for(c, "x.c.example.com")->error_text, "550 deeper");
    assert_string_equal(config_route_for(c, "y.x.c.example.com")->error_text, "550 deeper");
    assert_string_equal(config_route_for(c, "notexample.com")->error_text, "550 star");
    assert_string_equal(config_route_for(c, "com")->error_text, "550 star");
    config_free(c);

    c = load_ok("petrel.configure_transport { [\".example.com\"] = \"discard\" }\n");
    assert_null(config_route_for(c, "example.com"));  /* ".d" covers subdomains only */
    assert_non_null(config_route_for(c, "a.example.com"));
    assert_null(config_route_for(c, "example.org"));
    config_free(c);
}

static void test_kumo_alias(void **state)
{
    struct config *c = load_ok(
        "assert(rawequal(kumo, petrel))\n"
        "assert(kumo.start_smtp_listener == petrel.start_smtp_listener)\n"
        "assert(type(petrel.on) == 'function')\n"
        "for _, f in ipairs { 'add_header', 'remove_header', 'set_queue_priority',\n"
        "    'sign_dkim', 'route_to', 'limit_sending', 'adjust_domain_rate', 'log_info',\n"
        "    'log_warn', 'log_error', 'configure_queue', 'configure_delivery',\n"
        "    'configure_transport', 'configure_dns', 'configure_tls',\n"
        "    'configure_dkim_signing', 'configure_auth', 'configure_process',\n"
        "    'configure_header_checks', 'configure_logging', 'start_http_listener' } do\n"
        "  assert(type(petrel[f]) == 'function', f)\n"
        "end\n"
        "assert(adjust_domain_rate == petrel.adjust_domain_rate)\n"
        "assert(log_info and log_warn and log_error)\n"
        "assert(string and table and math and os and io)\n"
        "kumo.start_smtp_listener { listen = '127.0.0.1:2525' }\n");
    assert_int_equal(c->n_listeners, 1);
    config_free(c);
}

static const char worker_cfg[] =
    "order = {}\n"
    "petrel.start_smtp_listener { listen = '127.0.0.1:2525' }\n"
    "kumo.on('smtp_message_received', function(d) table.insert(order, 'a:' .. d) end)\n"
    "petrel.on('smtp_delivery_result', function() table.insert(order, 'x') end)\n"
    "kumo.on('smtp_message_received', function(d) table.insert(order, 'b:' .. d) end)\n"
    "petrel.on('smtp_message_received', function(d)\n"
    "  table.insert(order, 'c:' .. d)\n"
    "  kumo.add_header('X-Test', 'yes')\n"
    "end)\n"
    "log_info('only once')\n";

static int fake_add_header(lua_State *L)
{
    lua_getglobal(L, "order");
    lua_pushfstring(L, "add_header %s=%s", luaL_checkstring(L, 1), luaL_checkstring(L, 2));
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pushinteger(L, 7);
    return 1;
}

static void test_worker_handlers(void **state)
{
    char path[64], err[1024] = "";
    write_cfg(worker_cfg, path);
    struct config *c = config_load(path, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(c->n_hooks, 4);

    lua_State *L = config_lua_worker(c, err, sizeof err);
    if (!L)
        fail_msg("%s", err);
    assert_int_equal(config_lua_handlers(L, "smtp_message_received"), 3);
    assert_int_equal(config_lua_handlers(L, "smtp_delivery_result"), 1);
    assert_int_equal(config_lua_handlers(L, "http_request"), 0);
    assert_int_equal(config_lua_handlers(L, "no_such_event"), PT_NOTFOUND);

    /* The hooks engine installs the actions, then runs the handlers in order. */
    lua_getfield(L, LUA_REGISTRYINDEX, "petrel.actions");
    assert_int_equal(lua_type(L, -1), LUA_TNIL);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, fake_add_header);
    lua_setfield(L, -2, "add_header");
    lua_setfield(L, LUA_REGISTRYINDEX, "petrel.actions");

    lua_getfield(L, LUA_REGISTRYINDEX, "petrel.handlers");
    lua_getfield(L, -1, "smtp_message_received");
    for (int i = 1; i <= 3; i++) {
        lua_rawgeti(L, -1, i);
        lua_pushstring(L, "example.com");
        if (lua_pcall(L, 1, 0, 0) != LUA_OK)
            fail_msg("handler %d: %s", i, lua_tostring(L, -1));
    }
    lua_pop(L, 2);
    assert_int_equal(lua_gettop(L), 0);
    assert_int_equal(luaL_dostring(L, "return table.concat(order, ',')"), LUA_OK);
    assert_string_equal(lua_tostring(L, -1),
                        "a:example.com,b:example.com,c:example.com,add_header X-Test=yes");
    lua_pop(L, 1);
    /* The forwarding returns what the implementation returns. */
    assert_int_equal(luaL_dostring(L, "return petrel.add_header('A', 'b')"), LUA_OK);
    assert_int_equal(lua_tointeger(L, -1), 7);
    lua_pop(L, 1);
    /* Without an implementation, other actions still refuse. */
    assert_int_not_equal(luaL_dostring(L, "kumo.remove_header('A')"), LUA_OK);
    assert_non_null(strstr(lua_tostring(L, -1), "remove_header can only be called inside a hook"));
    lua_close(L);
    config_free(c);
    unlink(path);
}

/* Worker states accept configure_* silently: the snapshot was validated. */
static void test_worker_accepts_config(void **state)
{
    char path[64], err[1024] = "";
    write_cfg("petrel.configure_queue { retry_interval = '1m' }\n"
              "if os.getenv('PETREL_TEST_WORKER') then\n"
              "  petrel.configure_queue { nonsense = 1 }\n"
              "  petrel.start_smtp_listener 'not even a table'\n"
              "end\n", path);
    struct config *c = config_load(path, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    setenv("PETREL_TEST_WORKER", "1", 1);
    lua_State *L = config_lua_worker(c, err, sizeof err);
    unsetenv("PETREL_TEST_WORKER");
    unlink(path);
    if (!L)
        fail_msg("%s", err);
    lua_close(L);

    /* A runtime error in the worker run is reported like at load. */
    write_cfg("\nerror('worker boom')\n", path);
    struct config fake = *c;  /* only path is read */
    fake.path = path;
    L = config_lua_worker(&fake, err, sizeof err);
    assert_null(L);
    char want[256];
    snprintf(want, sizeof want, "%s:2: worker boom", path);
    assert_string_equal(err, want);
    unlink(path);
    config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_listener_defaults),
        cmocka_unit_test(test_listen_forms),
        cmocka_unit_test(test_every_option),
        cmocka_unit_test(test_relayhost_forms),
        cmocka_unit_test(test_calls_merge),
        cmocka_unit_test(test_err_unknown_option),
        cmocka_unit_test(test_err_wrong_type),
        cmocka_unit_test(test_err_bad_values),
        cmocka_unit_test(test_err_header_checks),
        cmocka_unit_test(test_err_routes),
        cmocka_unit_test(test_err_lua),
        cmocka_unit_test(test_err_hooks),
        cmocka_unit_test(test_seed_000),
        cmocka_unit_test(test_seed_000_check_errors),
        cmocka_unit_test(test_check_warnings),
        cmocka_unit_test(test_seed_003),
        cmocka_unit_test(test_seed_redis_queue),
        cmocka_unit_test(test_seed_004),
        cmocka_unit_test(test_bundled_config),
        cmocka_unit_test(test_route_lookup),
        cmocka_unit_test(test_auth_options),
        cmocka_unit_test(test_kumo_alias),
        cmocka_unit_test(test_worker_handlers),
        cmocka_unit_test(test_worker_accepts_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
