/* Configuration: loads the Lua config file (DESIGN §4) into an immutable snapshot.
 * Strict: an unknown option, a wrong type or a bad value is an error naming
 * FILE:LINE and the option. The snapshot is never modified after load.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_CONFIG_H
#define PETREL_CORE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include <sys/socket.h>

#include "util/cidr.h"

struct lua_State;
struct header_checks;
struct shaping_rules;

#define CFG_MAX_LISTENERS 16

struct cfg_tls_files {               /* listener tls = { ... }; NULL when absent */
    char *cert_file, *key_file;
    bool implicit;
    char *min_tls_version;           /* NULL = configure_tls value */
};

struct cfg_listener {
    char *listen;                    /* as written, e.g. "127.0.0.1:2525" */
    char host[256];                  /* parsed address ("::" for [::]) */
    uint16_t port;
    char *name;                      /* default: listen string */
    char *hostname;                  /* default: gethostname() */
    struct cidr *relay_hosts; int n_relay_hosts;   /* default 127.0.0.0/8, ::1/128 */
    char **auth_mechanisms; int n_auth_mechanisms; /* uppercased */
    bool auth_require_tls;           /* default true */
    struct cfg_tls_files *tls;       /* NULL = no TLS */
    uint64_t max_message_size;       /* default 25MB */
    int max_recipients;              /* 1000 */
    int max_connections;             /* 10000 */
    int max_connections_per_ip;      /* 100 */
    double greeting_timeout;         /* 30s */
    double command_timeout;          /* 5m */
    double data_timeout;             /* 10m */
    bool proxy_protocol;             /* false */
    struct cidr *proxy_trusted_hosts; int n_proxy_trusted_hosts; /* none; required with proxy_protocol */
    bool hide_received;              /* false */
    bool tls_required;               /* false; true needs tls (checked at load) */
    char *tenant;                    /* NULL */
    int line;                        /* config line of the call, for messages */
};

struct cfg_http_listener {
    char *listen; char host[256]; uint16_t port;
    struct cidr *trusted_hosts; int n_trusted_hosts; /* default 127.0.0.1, ::1 */
    char **api_keys; int n_api_keys;
    struct cfg_tls_files *tls;
    int line;                        /* config line of the call, for messages */
};

struct cfg_auth_client { char *username, *password, *password_file; };

enum cfg_route_kind { ROUTE_DEFAULT = 0, ROUTE_RELAY, ROUTE_DISCARD, ROUTE_ERROR };

/* One configure_transport entry, or the configure_delivery defaults (kind
 * ROUTE_DEFAULT with relayhost NULL = MX delivery). */
struct cfg_route {
    char *key;                       /* "example.com", ".example.com", "*" */
    enum cfg_route_kind kind;
    char *relayhost;                 /* as written: "[smtp.example.com]:587" */
    char relay_host[256];            /* parsed host */
    uint16_t relay_port;             /* parsed; default 25 */
    bool relay_no_mx;                /* brackets: no MX lookup */
    char *tls;                       /* "may" | "encrypt" | "verify"; NULL = inherit */
    char *ca_file;
    struct cfg_auth_client *auth;
    int error_code;                  /* ROUTE_ERROR: e.g. 550 */
    char *error_text;                /* ROUTE_ERROR: the whole reply, e.g. "550 5.1.1 local delivery disabled" */
    int line;                        /* config line of the call, for messages; 0 = default */
};

struct cfg_queue {
    char *spool_dir;                 /* "./var/spool" */
    double retry_interval;           /* 5m */
    double max_retry_interval;       /* 1h */
    double max_retry_age;            /* 72h */
    double delay_warning_after;      /* 0 = off (nil); one delay DSN per recipient after it */
    double dead_letter_after;        /* 0 = off (nil): expired entries are removed; else
                                        kept (dead, never delivered) this long after expiry */
    uint64_t max_queue_depth;        /* 1000000 */
    char *backend;                   /* "rocksdb" | "redis" */
    char *redis_url;                 /* backend = "redis": required */
    char *key_prefix;                /* "petrel:" */
    int wait_replicas;               /* 0 */
    double lease;                    /* 60s */
    uint64_t max_redis_bytes;        /* 0 = 90% of Redis's maxmemory when it has one */
};

struct cfg_delivery {
    int threads;                     /* 0 = cores (resolved at load: never 0 after load) */
    struct cfg_route dflt;           /* relayhost/tls/ca_file/auth defaults */
    uint16_t smtp_port;              /* 25 */
    int max_connections_per_domain;  /* 10 */
    int max_message_rate;            /* 0 = unlimited (per minute per domain) */
    int max_deliveries_per_connection; /* 100 */
    double connect_timeout;          /* 30s */
    char *helo_name;                 /* default: host name */
    bool chunking;                   /* true: BDAT to a next hop offering CHUNKING */
    bool mta_sts;                    /* true: MTA-STS policies of MX destinations honoured */
    bool dane;                       /* true: DANE TLSA checks (configured resolvers' AD) */
    bool tls_rpt;                    /* true: TLS-RPT aggregate reports sent */
    double tls_rpt_interval;         /* 24h: one report per policy domain this often */
    char *tls_rpt_org;               /* organization-name; NULL = the host name */
    char *tls_rpt_from;              /* report sender; NULL = postmaster@host name */
    bool eight_bit_downgrade;        /* true: 8-bit to a hop without 8BITMIME is converted
                                        to quoted-printable (RFC 6152 §3); false: 5.6.3 */
};

struct cfg_dkim_key {
    char *domain, *selector, *key_file, *algorithm;
    char **headers; int n_headers;
    int line;                        /* config line of the call, for messages */
};

struct cfg_header_check { char *pattern; char *action; };

/* DESIGN §9: make_egress_source, make_egress_pool, configure_tenant. */
#define CFG_EGRESS_NAME_MAX 63
struct cfg_egress_source {
    char *name, *source_address, *ehlo_domain;   /* ehlo_domain NULL = helo_name */
    struct sockaddr_storage addr;                /* source_address, port 0 */
    int *warmup; int n_warmup;                   /* daily cap per site, day 1, 2, ...;
                                                    none = no cap */
};
struct cfg_egress_pool {
    char *name;
    int *src; int *weight; int n;                /* index in cfg->egress_sources, weight */
};
struct cfg_tenant {
    char *name;
    int pool;                                    /* index in cfg->egress_pools, -1 = none */
    double max_message_rate;                     /* per s, per destination queue; 0 = none */
};

struct config {
    char *path;                      /* config file as given */
    struct cfg_listener listeners[CFG_MAX_LISTENERS]; int n_listeners;
    struct cfg_http_listener http[CFG_MAX_LISTENERS]; int n_http;
    struct cfg_queue queue;
    struct cfg_delivery delivery;
    /* configure_redis: cluster-wide limits, bans and suspensions with the local spool;
     * url NULL = none (backend = "redis" implies the queue's url and prefix) */
    struct { char *url, *key_prefix; } redis;
    struct cfg_route *routes; int n_routes;       /* configure_transport */
    char **dns_resolvers; int n_dns_resolvers;    /* "127.0.0.1:5353"; NULL = resolv.conf */
    struct { char *min_tls_version, *ciphers; bool prefer_server_ciphers; int line; } tls;
    struct cfg_dkim_key *dkim; int n_dkim;
    char *auth_users_file;
    int auth_line;                   /* config line of configure_auth, for messages */
    int auth_max_failures;           /* 5: AUTH failures from one address ... */
    double auth_failure_window;      /* 10m: ... within this window ... */
    double auth_ban_time;            /* 10m: ... get it refused (421) this long */
    char *process_user;
    int smtp_threads;                /* SMTP worker threads; 0 = auto (config_finish) */
    struct cfg_header_check *header_checks; int n_header_checks;
    struct header_checks *header_checks_set; /* the rules compiled (policy/header_checks.h);
                                                NULL when there are none */
    struct { char *path, *level; } logging;       /* "./var/log/petrel.jsonl", "info" */
    struct shaping_rules *shaping;   /* configure_shaping (delivery/shaping_rules.h); never
                                        NULL after load: the default rule takes
                                        configure_delivery's values it does not set */
    struct cfg_egress_source *egress_sources; int n_egress_sources;
    struct cfg_egress_pool *egress_pools; int n_egress_pools;
    struct cfg_tenant *tenants; int n_tenants;
    int n_hooks;                     /* petrel.on registrations seen (for information) */
    char *warnings;                  /* "FILE:LINE: warning: ...\n" lines; NULL = none */
};

/* The egress source / pool / tenant named name; NULL if none. Borrowed from cfg. */
const struct cfg_egress_source *config_egress_source(const struct config *cfg, const char *name);
int config_egress_pool_index(const struct config *cfg, const char *name);   /* -1 = none */
const struct cfg_tenant *config_tenant(const struct config *cfg, const char *name);

/* Loads and validates path. On error returns NULL and writes "FILE:LINE: message"
 * (naming the option) into err. Settings that work but will surprise (e.g. port
 * 465 without implicit TLS) are listed in cfg->warnings for the caller to print.
 * The returned snapshot is owned by the caller. */
struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *cfg);

/* Index in cfg->listeners of the SMTP listener on host:port (host as parsed,
 * e.g. "::" for [::]); -1 if none. */
int config_listener_index(const struct config *cfg, const char *host, uint16_t port);

/* Finds the transport route for a lowercased domain: exact key, then ".parent"
 * keys from the most specific, then "*". NULL when none matches (use delivery
 * defaults). Borrowed from cfg. */
const struct cfg_route *config_route_for(const struct config *cfg, const char *domain);

/* The configure_transport route whose key is exactly key (route_to names one);
 * NULL if none. Borrowed from cfg. */
const struct cfg_route *config_route_named(const struct config *cfg, const char *key);

/* A route_to target that is not a transport key: "[host]:port", "[host]" or
 * "host:port" (brackets = no MX lookup). Fills out (kind ROUTE_RELAY, relayhost
 * NULL: the caller keeps spec) and returns PT_OK, or PT_INVALID. */
int config_parse_route_literal(const char *spec, struct cfg_route *out);

/* Creates a Lua state for a worker thread with the petrel/kumo API installed and
 * the config file run in "worker" mode: configure_* calls are accepted (already
 * validated) and petrel.on handlers are kept for the policy hooks. NULL on error. */
struct lua_State *config_lua_worker(const struct config *cfg, char *err, size_t errlen);

/* Hook registry of a worker state (layout owned by policy/lua_api.h):
 *   registry["petrel.handlers"][event] = { fn1, fn2, ... }
 *     a sequence per event (smtp_server_greeting, smtp_message_received,
 *     http_message_received, smtp_delivery_result, http_request), always present,
 *     in petrel.on() order: run them all, first to last;
 *   registry["petrel.actions"][name] = fn   (set by the hooks engine)
 *     implementations of add_header, remove_header, set_queue_priority, sign_dkim,
 *     route_to, limit_sending, adjust_domain_rate, log_info, log_warn, log_error.
 *     petrel.NAME / kumo.NAME and the globals adjust_domain_rate and log_* forward
 *     to them (so handlers that saved a reference at load still work); without
 *     one, an action raises "NAME can only be called inside a hook" and log_*
 *     print "FILE:LINE: LEVEL: msg" to stderr.
 * Returns the number of handlers for event, or PT_NOTFOUND for an unknown event.
 * The state is the caller's (lua_close when done). */
int config_lua_handlers(struct lua_State *L, const char *event);

#endif
