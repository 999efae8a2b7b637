/* Configuration: runs the Lua config (DESIGN §4) and validates every option into
 * an immutable struct config. Never opens the files the config names, never
 * binds anything, and never keeps the Lua state of the load.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "cluster/redis.h"
#include "core/authban.h"
#include "core/config.h"
#include "util/regex.h"
#include "delivery/shaping_rules.h"
#include "delivery/site.h"
#include "policy/header_checks.h"
#include "policy/lua_api.h"
#include "util/cidr.h"
#include "util/parse.h"
#include "util/result.h"

/* ---- Defaults (DESIGN §4), all in one place -------------------------------- */

#define DEF_RELAY_HOSTS        { "127.0.0.0/8", "::1/128" }
#define DEF_TRUSTED_HOSTS      { "127.0.0.1", "::1" }
#define DEF_AUTH_REQUIRE_TLS   true
#define DEF_AUTH_MAX_FAILURES  5          /* AUTH failures per client address ... */
#define DEF_AUTH_FAILURE_WINDOW (10 * 60.0) /* ... within this window ... */
#define DEF_AUTH_BAN_TIME      (10 * 60.0) /* ... ban it (421) for this long */
#define DEF_MAX_MESSAGE_SIZE   (25ull * 1024 * 1024)
#define DEF_MAX_RECIPIENTS     1000
#define DEF_MAX_CONNECTIONS    10000
#define DEF_MAX_CONN_PER_IP    100
#define DEF_GREETING_TIMEOUT   30.0
#define DEF_COMMAND_TIMEOUT    (5 * 60.0)
#define DEF_DATA_TIMEOUT       (10 * 60.0)
#define DEF_SPOOL_DIR          "./var/spool"
#define DEF_QUEUE_BACKEND      "rocksdb"    /* one machine: the embedded spool */
#define DEF_KEY_PREFIX         "petrel:"
#define DEF_LEASE              60.0         /* s: a dead node's mail waits at most this */
#define DEF_RETRY_INTERVAL     (5 * 60.0)
#define DEF_MAX_RETRY_INTERVAL (60 * 60.0)
#define DEF_MAX_RETRY_AGE      (72 * 3600.0)
#define DEF_DELAY_WARNING_AFTER 0.0       /* off: senders asked for none (RFC 3461 leaves
                                             DELAY to the MTA); "4h" is Postfix's choice */
#define DEF_DEAD_LETTER_AFTER  0.0       /* off: expired mail is removed after its DSN
                                            (DESIGN's example keeps it "7d") */
#define DEF_MAX_QUEUE_DEPTH    1000000
#define DEF_DELIVERY_THREADS   0          /* = online CPUs, resolved after load */
#define DEF_SMTP_PORT          25
#define DEF_RELAY_PORT         25
#define DEF_OUTBOUND_TLS       "may"
#define DEF_MAX_CONN_PER_DOMAIN 10
#define DEF_MAX_MESSAGE_RATE   0          /* unlimited */
#define DEF_MAX_DELIVERIES_PER_CONN 100
#define DEF_CONNECT_TIMEOUT    30.0
#define DEF_CHUNKING           true       /* BDAT saves the dot-stuffing pass (RFC 3030) */
#define DEF_MTA_STS            true       /* honour published MTA-STS policies (RFC 8461) */
#define DEF_DANE               false      /* needs a DNSSEC-validating configured resolver */
#define DEF_TLS_RPT            false      /* send TLS-RPT reports (RFC 8460) */
#define DEF_TLS_RPT_INTERVAL   86400.0    /* RFC 8460 §4.1: daily reports */
#define DEF_EIGHT_BIT_DOWNGRADE true      /* RFC 6152 §3: convert rather than bounce */
#define DEF_MIN_TLS_VERSION    "1.2"
#define DEF_PREFER_SERVER_CIPHERS true
#define DEF_DKIM_HEADERS       { "From", "To", "Subject", "Date", "Message-ID" }
#define DEF_DKIM_ALGORITHM     "rsa-sha256"
#define DEF_LOG_PATH           "./var/log/petrel.jsonl"
#define DEF_LOG_LEVEL          "info"

#define MAX_THREADS 1024
#define OPT_NAME_MAX 160           /* "tls.min_tls_version" and the like */

/* ---- Option tables ---------------------------------------------------------- */

enum opt_kind {
    OPT_STR,       /* char *, non-empty */
    OPT_LSTR,      /* char *, non-empty, lowercased (domains) */
    OPT_INT,       /* int within [lo, hi] */
    OPT_U64,       /* uint64_t within [lo, hi] */
    OPT_PORT,      /* uint16_t, 1..65535 */
    OPT_BOOL,      /* bool */
    OPT_DURATION,  /* double seconds, > 0 (>= 0 with zero_ok) */
    OPT_SIZE,      /* uint64_t bytes, >= 1 */
    OPT_CHOICE,    /* char *, one of choices */
    OPT_STRLIST,   /* char **, count (int) at aux */
    OPT_MECHLIST,  /* char **, count at aux: SASL mechanisms, uppercased */
    OPT_CIDRLIST,  /* struct cidr *, count at aux */
    OPT_LISTEN,    /* char *listen; char host[256] at aux; uint16_t port at aux2 */
    OPT_RELAYHOST, /* struct cfg_route at off: relayhost and the parsed fields */
    OPT_AUTH,      /* struct cfg_auth_client *, fields in sub */
    OPT_TLS_FILES, /* struct cfg_tls_files *, fields in sub; false = none */
};

struct opt {
    const char *name;
    enum opt_kind kind;
    size_t off, aux, aux2;       /* byte offsets into the target struct */
    double lo, hi;               /* OPT_INT, OPT_U64 */
    bool required, zero_ok;
    const char *const *choices;  /* OPT_CHOICE */
    const struct opt *sub;       /* OPT_AUTH, OPT_TLS_FILES */
    const char *unimpl;          /* not NULL: the option is refused, this says why/what instead */
};

static const char *const tls_levels[] = { "may", "encrypt", "verify", NULL };
static const char *const tls_versions[] = { "1.2", "1.3", NULL };
static const char *const dkim_algorithms[] = { "rsa-sha256", "ed25519-sha256", NULL };
static const char *const queue_backends[] = { "rocksdb", "redis", NULL };
static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const sasl_mechanisms[] = { "PLAIN", "LOGIN", "CRAM-MD5", NULL };

/* Name, kind and offset of an option; the other fields follow as designators. */
#define O(n, k, o) .name = n, .kind = k, .off = o

#define TLSF(f) offsetof(struct cfg_tls_files, f)
static const struct opt smtp_tls_opts[] = {
    { O("cert_file", OPT_STR, TLSF(cert_file)), .required = true },
    { O("key_file", OPT_STR, TLSF(key_file)), .required = true },
    { O("implicit", OPT_BOOL, TLSF(implicit)) },
    { O("min_tls_version", OPT_CHOICE, TLSF(min_tls_version)), .choices = tls_versions },
    { .name = NULL },
};
static const struct opt http_tls_opts[] = {
    { O("cert_file", OPT_STR, TLSF(cert_file)), .required = true },
    { O("key_file", OPT_STR, TLSF(key_file)), .required = true },
    { O("min_tls_version", OPT_CHOICE, TLSF(min_tls_version)), .choices = tls_versions },
    { .name = NULL },
};

#define AUTHF(f) offsetof(struct cfg_auth_client, f)
static const struct opt auth_client_opts[] = {
    { O("username", OPT_STR, AUTHF(username)), .required = true },
    { O("password", OPT_STR, AUTHF(password)) },
    { O("password_file", OPT_STR, AUTHF(password_file)) },
    { .name = NULL },
};

#define LST(f) offsetof(struct cfg_listener, f)
static const struct opt smtp_listener_opts[] = {
    { O("listen", OPT_LISTEN, LST(listen)), .aux = LST(host), .aux2 = LST(port), .required = true },
    { O("name", OPT_STR, LST(name)) },
    { O("hostname", OPT_STR, LST(hostname)) },
    { O("relay_hosts", OPT_CIDRLIST, LST(relay_hosts)), .aux = LST(n_relay_hosts) },
    { O("auth_mechanisms", OPT_MECHLIST, LST(auth_mechanisms)), .aux = LST(n_auth_mechanisms) },
    { O("auth_require_tls", OPT_BOOL, LST(auth_require_tls)) },
    { O("tls", OPT_TLS_FILES, LST(tls)), .sub = smtp_tls_opts },
    { O("max_message_size", OPT_SIZE, LST(max_message_size)) },
    { O("max_recipients", OPT_INT, LST(max_recipients)), .lo = 1, .hi = INT_MAX },
    { O("max_connections", OPT_INT, LST(max_connections)), .lo = 1, .hi = INT_MAX },
    { O("max_connections_per_ip", OPT_INT, LST(max_connections_per_ip)), .lo = 1, .hi = INT_MAX },
    { O("greeting_timeout", OPT_DURATION, LST(greeting_timeout)) },
    { O("command_timeout", OPT_DURATION, LST(command_timeout)) },
    { O("data_timeout", OPT_DURATION, LST(data_timeout)) },
    { O("proxy_protocol", OPT_BOOL, LST(proxy_protocol)) },
    { O("proxy_trusted_hosts", OPT_CIDRLIST, LST(proxy_trusted_hosts)),
      .aux = LST(n_proxy_trusted_hosts) },
    { O("hide_received", OPT_BOOL, LST(hide_received)) },
    { O("tls_required", OPT_BOOL, LST(tls_required)) },
    { O("tenant", OPT_STR, LST(tenant)) },
    { .name = NULL },
};

#define HTTP(f) offsetof(struct cfg_http_listener, f)
static const struct opt http_listener_opts[] = {
    { O("listen", OPT_LISTEN, HTTP(listen)), .aux = HTTP(host), .aux2 = HTTP(port),
      .required = true },
    { O("trusted_hosts", OPT_CIDRLIST, HTTP(trusted_hosts)), .aux = HTTP(n_trusted_hosts) },
    { O("api_keys", OPT_STRLIST, HTTP(api_keys)), .aux = HTTP(n_api_keys) },
    { O("tls", OPT_TLS_FILES, HTTP(tls)), .sub = http_tls_opts },
    { .name = NULL },
};

#define CFG(f) offsetof(struct config, f)
static const struct opt queue_opts[] = {
    { O("spool_dir", OPT_STR, CFG(queue.spool_dir)) },
    { O("retry_interval", OPT_DURATION, CFG(queue.retry_interval)) },
    { O("max_retry_interval", OPT_DURATION, CFG(queue.max_retry_interval)) },
    { O("max_retry_age", OPT_DURATION, CFG(queue.max_retry_age)) },
    /* nil (the default) = no delay warnings; "4h" = Postfix's delay_warning_time */
    { O("delay_warning_after", OPT_DURATION, CFG(queue.delay_warning_after)) },
    /* nil (the default) = an expired entry is removed after its DSN; "7d" = kept as a
     * dead letter (never delivered, shown by the API) that long, then purged */
    { O("dead_letter_after", OPT_DURATION, CFG(queue.dead_letter_after)) },
    { O("max_queue_depth", OPT_U64, CFG(queue.max_queue_depth)), .lo = 1,
      .hi = 9007199254740992.0 },
    { O("backend", OPT_CHOICE, CFG(queue.backend)), .choices = queue_backends },
    { O("redis_url", OPT_STR, CFG(queue.redis_url)) },
    { O("key_prefix", OPT_STR, CFG(queue.key_prefix)) },
    { O("wait_replicas", OPT_INT, CFG(queue.wait_replicas)), .lo = 0, .hi = 64 },
    { O("lease", OPT_DURATION, CFG(queue.lease)) },
    { O("max_redis_bytes", OPT_SIZE, CFG(queue.max_redis_bytes)) },
    { .name = NULL },
};

#define DFLT(f) (CFG(delivery.dflt) + offsetof(struct cfg_route, f))
static const struct opt delivery_opts[] = {
    { O("threads", OPT_INT, CFG(delivery.threads)), .lo = 0, .hi = MAX_THREADS },
    { O("relayhost", OPT_RELAYHOST, CFG(delivery.dflt)) },
    { O("smtp_port", OPT_PORT, CFG(delivery.smtp_port)) },
    { O("tls", OPT_CHOICE, DFLT(tls)), .choices = tls_levels },
    { O("ca_file", OPT_STR, DFLT(ca_file)) },
    { O("auth", OPT_AUTH, DFLT(auth)), .sub = auth_client_opts },
    { O("max_connections_per_domain", OPT_INT, CFG(delivery.max_connections_per_domain)), .lo = 1,
      .hi = INT_MAX },
    { O("max_message_rate", OPT_INT, CFG(delivery.max_message_rate)), .lo = 0, .hi = INT_MAX },
    { O("max_deliveries_per_connection", OPT_INT, CFG(delivery.max_deliveries_per_connection)),
      .lo = 1, .hi = INT_MAX },
    { O("connect_timeout", OPT_DURATION, CFG(delivery.connect_timeout)) },
    { O("helo_name", OPT_STR, CFG(delivery.helo_name)) },
    { O("chunking", OPT_BOOL, CFG(delivery.chunking)) },
    { O("mta_sts", OPT_BOOL, CFG(delivery.mta_sts)) },
    { O("dane", OPT_BOOL, CFG(delivery.dane)) },
    { O("tls_rpt", OPT_BOOL, CFG(delivery.tls_rpt)) },
    { O("tls_rpt_interval", OPT_DURATION, CFG(delivery.tls_rpt_interval)) },
    { O("tls_rpt_org", OPT_STR, CFG(delivery.tls_rpt_org)) },
    { O("tls_rpt_from", OPT_STR, CFG(delivery.tls_rpt_from)) },
    { O("eight_bit_downgrade", OPT_BOOL, CFG(delivery.eight_bit_downgrade)) },
    { .name = NULL },
};

#define ROUTE(f) offsetof(struct cfg_route, f)
static const struct opt route_opts[] = {
    { O("relayhost", OPT_RELAYHOST, 0) },
    { O("auth", OPT_AUTH, ROUTE(auth)), .sub = auth_client_opts },
    { O("tls", OPT_CHOICE, ROUTE(tls)), .choices = tls_levels },
    { O("ca_file", OPT_STR, ROUTE(ca_file)) },
    { .name = NULL },
};

static const struct opt dns_opts[] = {
    { O("resolvers", OPT_STRLIST, CFG(dns_resolvers)), .aux = CFG(n_dns_resolvers) },
    { .name = NULL },
};

static const struct opt tls_opts[] = {
    { O("min_tls_version", OPT_CHOICE, CFG(tls.min_tls_version)), .choices = tls_versions },
    { O("ciphers", OPT_STR, CFG(tls.ciphers)) },
    { O("prefer_server_ciphers", OPT_BOOL, CFG(tls.prefer_server_ciphers)) },
    { .name = NULL },
};

#define DKIM(f) offsetof(struct cfg_dkim_key, f)
static const struct opt dkim_opts[] = {
    { O("domain", OPT_LSTR, DKIM(domain)), .required = true },
    { O("selector", OPT_STR, DKIM(selector)), .required = true },
    { O("key_file", OPT_STR, DKIM(key_file)), .required = true },
    { O("headers", OPT_STRLIST, DKIM(headers)), .aux = DKIM(n_headers) },
    { O("algorithm", OPT_CHOICE, DKIM(algorithm)), .choices = dkim_algorithms },
    { .name = NULL },
};

static const struct opt auth_opts[] = {
    { O("users_file", OPT_STR, CFG(auth_users_file)), .required = true },
    { O("max_failures", OPT_INT, CFG(auth_max_failures)), .lo = 1,
      .hi = AUTHBAN_MAX_FAILURES },
    { O("failure_window", OPT_DURATION, CFG(auth_failure_window)) },
    { O("ban_time", OPT_DURATION, CFG(auth_ban_time)) },
    { .name = NULL },
};

static const struct opt process_opts[] = {
    { O("user", OPT_STR, CFG(process_user)) },
    { O("smtp_threads", OPT_INT, CFG(smtp_threads)), .lo = 0, .hi = MAX_THREADS },
    { .name = NULL },
};

#define HC(f) offsetof(struct cfg_header_check, f)
static const struct opt header_check_opts[] = {
    { O("pattern", OPT_STR, HC(pattern)), .required = true },
    { O("action", OPT_STR, HC(action)), .required = true },
    { .name = NULL },
};

static const struct opt logging_opts[] = {
    { O("path", OPT_STR, CFG(logging.path)) },
    { O("level", OPT_CHOICE, CFG(logging.level)), .choices = log_levels },
    { .name = NULL },
};

/* ---- Small helpers ---------------------------------------------------------- */

static struct config *cfg_of(lua_State *L)
{
    return lua_api_ctx(L)->user;
}

static void *xcalloc(lua_State *L, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        lua_api_error(L, "out of memory");
    return p;
}

/* Returns arr grown by one zeroed element at index n. The caller stores it and
 * bumps its count at once, so config_free() owns the element even if a later
 * option raises. */
static void *grow(lua_State *L, void *arr, int n, size_t size)
{
    char *p = realloc(arr, ((size_t)n + 1) * size);
    if (!p)
        lua_api_error(L, "out of memory");
    memset(p + (size_t)n * size, 0, size);
    return p;
}

static char *xstrdup(lua_State *L, const char *s)
{
    char *d = strdup(s);
    if (!d)
        lua_api_error(L, "out of memory");
    return d;
}

static void set_str(lua_State *L, char **slot, const char *s)
{
    char *d = xstrdup(L, s);
    free(*slot);
    *slot = d;
}

static void lowercase(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static void host_name(char out[256])
{
    if (gethostname(out, 256) != 0 || !out[0])
        snprintf(out, 256, "localhost");
    out[255] = '\0';
}

static bool is_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* Joins choices as "a", "b" or "c" into out. */
static const char *choice_text(const char *const *choices, char *out, size_t outlen)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; choices[i]; i++) {
        const char *sep = i == 0 ? "" : choices[i + 1] ? ", " : " or ";
        n += (size_t)snprintf(out + n, n < outlen ? outlen - n : 0, "%s\"%s\"", sep, choices[i]);
        if (n >= outlen)
            break;
    }
    return out;
}

static void free_strlist(char **l, int n)
{
    for (int i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

/* Length of the list at v when it is a proper sequence whose items all have
 * type item_type; -1 otherwise. */
static int list_len(lua_State *L, int v, int item_type)
{
    if (lua_type(L, v) != LUA_TTABLE)
        return -1;
    lua_Integer len = (lua_Integer)lua_rawlen(L, v), count = 0;
    lua_pushnil(L);
    while (lua_next(L, v)) {
        bool ok = lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1 &&
                  lua_tointeger(L, -2) <= len && lua_type(L, -1) == item_type;
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return -1;
        }
        count++;
    }
    return count == len && len <= INT_MAX ? (int)len : -1;
}

/* ---- Value parsers: each raises "FN: option 'NAME' ..." on a bad value ------ */

static lua_Integer get_integer(lua_State *L, int v, const char *fn, const char *oname,
                               double lo, double hi)
{
    int isint = 0;
    lua_Integer i = lua_type(L, v) == LUA_TNUMBER ? lua_tointegerx(L, v, &isint) : 0;
    if (!isint)
        lua_api_error(L, "%s: option '%s' must be an integer", fn, oname);
    if ((double)i < lo || (double)i > hi) {
        if (hi >= (double)INT_MAX)
            lua_api_error(L, "%s: option '%s' must be at least %.0f", fn, oname, lo);
        lua_api_error(L, "%s: option '%s' must be between %.0f and %.0f", fn, oname, lo, hi);
    }
    return i;
}

static double get_duration(lua_State *L, int v, const char *fn, const char *oname, bool zero_ok)
{
    double secs;
    if (lua_type(L, v) == LUA_TNUMBER) {
        secs = lua_tonumber(L, v);
        if (!isfinite(secs) || secs < 0)
            lua_api_error(L, "%s: option '%s': invalid duration %s", fn, oname,
                          lua_tostring(L, v));
    } else if (lua_type(L, v) == LUA_TSTRING) {
        const char *s = lua_tostring(L, v);
        if (parse_duration(s, &secs) != PT_OK)
            lua_api_error(L, "%s: option '%s': invalid duration '%s' "
                          "(e.g. \"30s\", \"5m\", \"72h\", \"7d\" or seconds)", fn, oname, s);
    } else {
        lua_api_error(L, "%s: option '%s' must be a duration (\"30s\", \"5m\", \"72h\", "
                      "\"7d\" or a number of seconds)", fn, oname);
    }
    if (secs <= 0 && !zero_ok)
        lua_api_error(L, "%s: option '%s' must be a positive duration", fn, oname);
    return secs;
}

static uint64_t get_size(lua_State *L, int v, const char *fn, const char *oname)
{
    uint64_t bytes = 0;
    if (lua_type(L, v) == LUA_TNUMBER) {
        int isint = 0;
        lua_Integer i = lua_tointegerx(L, v, &isint);
        if (!isint || i < 0)
            lua_api_error(L, "%s: option '%s': invalid size %s", fn, oname, lua_tostring(L, v));
        bytes = (uint64_t)i;
    } else if (lua_type(L, v) == LUA_TSTRING) {
        const char *s = lua_tostring(L, v);
        if (parse_size(s, &bytes) != PT_OK)
            lua_api_error(L, "%s: option '%s': invalid size '%s' "
                          "(e.g. \"25MB\", \"512KB\" or bytes)", fn, oname, s);
    } else {
        lua_api_error(L, "%s: option '%s' must be a size (\"25MB\", \"512KB\" or bytes)",
                      fn, oname);
    }
    if (bytes == 0)
        lua_api_error(L, "%s: option '%s' must be at least 1 byte", fn, oname);
    return bytes;
}

static const char *get_string(lua_State *L, int v, const char *fn, const char *oname)
{
    if (lua_type(L, v) != LUA_TSTRING)
        lua_api_error(L, "%s: option '%s' must be a string", fn, oname);
    const char *s = lua_tostring(L, v);
    if (!s[0])
        lua_api_error(L, "%s: option '%s' must not be empty", fn, oname);
    return s;
}

static void set_strlist(lua_State *L, int v, const char *fn, const char *oname,
                        char ***slot, int *n, bool mechanisms)
{
    int len = list_len(L, v, LUA_TSTRING);
    if (len < 0)
        lua_api_error(L, "%s: option '%s' must be a list of strings", fn, oname);
    for (int i = 1; i <= len; i++) {
        lua_rawgeti(L, v, i);
        const char *s = lua_tostring(L, -1);
        if (!s[0])
            lua_api_error(L, "%s: option '%s': item %d is empty", fn, oname, i);
        if (mechanisms) {
            int m;
            for (m = 0; sasl_mechanisms[m]; m++)
                if (strcasecmp(sasl_mechanisms[m], s) == 0)
                    break;
            if (!sasl_mechanisms[m])
                lua_api_error(L, "%s: option '%s': unsupported mechanism '%s' "
                              "(PLAIN, LOGIN or CRAM-MD5)", fn, oname, s);
        }
        lua_pop(L, 1);
    }
    free_strlist(*slot, *n);
    *slot = NULL;
    *n = 0;
    if (len == 0)
        return;
    *slot = xcalloc(L, (size_t)len, sizeof **slot);
    for (int i = 1; i <= len; i++) {
        lua_rawgeti(L, v, i);
        (*slot)[i - 1] = xstrdup(L, lua_tostring(L, -1));
        (*n)++;
        if (mechanisms)
            for (char *c = (*slot)[i - 1]; *c; c++)
                *c = (char)toupper((unsigned char)*c);
        lua_pop(L, 1);
    }
}

static void set_cidrlist(lua_State *L, int v, const char *fn, const char *oname,
                         struct cidr **slot, int *n)
{
    int len = list_len(L, v, LUA_TSTRING);
    if (len < 0)
        lua_api_error(L, "%s: option '%s' must be a list of strings (CIDRs or addresses)",
                      fn, oname);
    struct cidr tmp;
    for (int i = 1; i <= len; i++) {
        lua_rawgeti(L, v, i);
        const char *s = lua_tostring(L, -1);
        if (cidr_parse(s, &tmp) != PT_OK)
            lua_api_error(L, "%s: option '%s': invalid CIDR '%s'", fn, oname, s);
        lua_pop(L, 1);
    }
    struct cidr *list = len ? xcalloc(L, (size_t)len, sizeof *list) : NULL;
    for (int i = 1; i <= len; i++) {
        lua_rawgeti(L, v, i);
        cidr_parse(lua_tostring(L, -1), &list[i - 1]);
        lua_pop(L, 1);
    }
    free(*slot);
    *slot = list;
    *n = len;
}

static void set_listen(lua_State *L, int v, const char *fn, const char *oname,
                       char **listen, char *host, uint16_t *port)
{
    const char *s = get_string(L, v, fn, oname);
    char h[256];
    uint16_t p = 0;
    int bracketed = 0;
    if (parse_hostport(s, h, &p, &bracketed, 0) != PT_OK || p == 0 || !is_ip(h))
        lua_api_error(L, "%s: option '%s': invalid address '%s' (IP:PORT, e.g. "
                      "\"127.0.0.1:2525\" or \"[::]:2525\")", fn, oname, s);
    set_str(L, listen, s);
    memcpy(host, h, sizeof h);
    *port = p;
}

static void free_auth(struct cfg_auth_client *a)
{
    if (!a)
        return;
    free(a->username);
    free(a->password);
    free(a->password_file);
    free(a);
}

static void free_tls_files(struct cfg_tls_files *t)
{
    if (!t)
        return;
    free(t->cert_file);
    free(t->key_file);
    free(t->min_tls_version);
    free(t);
}

/* Frees what a route owns; the struct itself belongs to its array. */
static void free_route(struct cfg_route *r)
{
    free(r->key);
    free(r->relayhost);
    free(r->tls);
    free(r->ca_file);
    free_auth(r->auth);
    free(r->error_text);
    memset(r, 0, sizeof *r);
}

static void set_relayhost(lua_State *L, int v, const char *fn, const char *oname,
                          struct cfg_route *r)
{
    if (lua_type(L, v) != LUA_TSTRING)
        lua_api_error(L, "%s: option '%s' must be a string", fn, oname);
    const char *s = lua_tostring(L, v);
    if (!s[0]) {               /* Postfix's "relayhost =": deliver by MX */
        free(r->relayhost);
        r->relayhost = NULL;
        r->relay_host[0] = '\0';
        r->relay_port = 0;
        r->relay_no_mx = false;
        r->kind = ROUTE_DEFAULT;
        return;
    }
    char h[256];
    uint16_t p = 0;
    int bracketed = 0;
    if (parse_hostport(s, h, &p, &bracketed, DEF_RELAY_PORT) != PT_OK || !h[0] || p == 0)
        lua_api_error(L, "%s: option '%s': invalid relay host '%s' (e.g. "
                      "\"[smtp.example.com]:587\")", fn, oname, s);
    set_str(L, &r->relayhost, s);
    memcpy(r->relay_host, h, sizeof h);
    r->relay_port = p;
    r->relay_no_mx = bracketed != 0;
    r->kind = ROUTE_RELAY;
}

static void opts_apply(lua_State *L, int t, const char *fn, const char *prefix,
                       const struct opt *spec, void *target);

/* Validates the value at v for option o and stores it into target. */
static void opt_set(lua_State *L, int v, const char *fn, const char *oname,
                    const struct opt *o, char *target)
{
    void *slot = target + o->off;
    char buf[OPT_NAME_MAX + 8];
    if (o->unimpl)
        lua_api_error(L, "%s: option '%s' is not implemented yet (%s)", fn, oname, o->unimpl);
    switch (o->kind) {
    case OPT_STR:
    case OPT_LSTR:
        set_str(L, slot, get_string(L, v, fn, oname));
        if (o->kind == OPT_LSTR)
            lowercase(*(char **)slot);
        break;
    case OPT_INT:
        *(int *)slot = (int)get_integer(L, v, fn, oname, o->lo, o->hi);
        break;
    case OPT_U64:
        *(uint64_t *)slot = (uint64_t)get_integer(L, v, fn, oname, o->lo, o->hi);
        break;
    case OPT_PORT:
        *(uint16_t *)slot = (uint16_t)get_integer(L, v, fn, oname, 1, 65535);
        break;
    case OPT_BOOL:
        if (lua_type(L, v) != LUA_TBOOLEAN)
            lua_api_error(L, "%s: option '%s' must be a boolean (true or false)", fn, oname);
        *(bool *)slot = lua_toboolean(L, v);
        break;
    case OPT_DURATION:
        *(double *)slot = get_duration(L, v, fn, oname, o->zero_ok);
        break;
    case OPT_SIZE:
        *(uint64_t *)slot = get_size(L, v, fn, oname);
        break;
    case OPT_CHOICE: {
        const char *s = lua_type(L, v) == LUA_TSTRING ? lua_tostring(L, v) : NULL;
        int i = 0;
        while (s && o->choices[i] && strcmp(o->choices[i], s) != 0)
            i++;
        if (!s || !o->choices[i])
            lua_api_error(L, "%s: option '%s' must be %s", fn, oname,
                          choice_text(o->choices, buf, sizeof buf));
        set_str(L, slot, s);
        break;
    }
    case OPT_STRLIST:
    case OPT_MECHLIST:
        set_strlist(L, v, fn, oname, slot, (int *)(target + o->aux), o->kind == OPT_MECHLIST);
        break;
    case OPT_CIDRLIST:
        set_cidrlist(L, v, fn, oname, slot, (int *)(target + o->aux));
        break;
    case OPT_LISTEN:
        set_listen(L, v, fn, oname, slot, target + o->aux, (uint16_t *)(target + o->aux2));
        break;
    case OPT_RELAYHOST:
        set_relayhost(L, v, fn, oname, slot);
        break;
    case OPT_AUTH: {
        struct cfg_auth_client **a = slot;
        if (lua_type(L, v) != LUA_TTABLE)
            lua_api_error(L, "%s: option '%s' must be a table { username = ..., "
                          "password = ... }", fn, oname);
        free_auth(*a);
        *a = xcalloc(L, 1, sizeof **a);
        snprintf(buf, sizeof buf, "%s.", oname);
        opts_apply(L, v, fn, buf, o->sub, *a);
        if (!(*a)->password == !(*a)->password_file)
            lua_api_error(L, "%s: option '%s' needs exactly one of 'password' and "
                          "'password_file'", fn, oname);
        break;
    }
    case OPT_TLS_FILES: {
        struct cfg_tls_files **t = slot;
        if (lua_type(L, v) == LUA_TBOOLEAN && !lua_toboolean(L, v)) {
            free_tls_files(*t);
            *t = NULL;
            break;
        }
        if (lua_type(L, v) != LUA_TTABLE)
            lua_api_error(L, "%s: option '%s' must be a table { cert_file = ..., "
                          "key_file = ... }", fn, oname);
        free_tls_files(*t);
        *t = xcalloc(L, 1, sizeof **t);
        snprintf(buf, sizeof buf, "%s.", oname);
        opts_apply(L, v, fn, buf, o->sub, *t);
        break;
    }
    }
}

/* Applies the option table at t to target following spec; every key must be
 * known, every required option present. prefix names nested tables ("tls."). */
static void opts_apply(lua_State *L, int t, const char *fn, const char *prefix,
                       const struct opt *spec, void *target)
{
    char oname[OPT_NAME_MAX];
    uint64_t seen = 0;
    t = lua_absindex(L, t);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING && !prefix[0])
            lua_api_error(L, "%s: unexpected %s key (options are written name = value)", fn,
                          luaL_typename(L, -2));
        if (lua_type(L, -2) != LUA_TSTRING)
            lua_api_error(L, "%s: unexpected %s key in '%.*s' (options are written "
                          "name = value)", fn, luaL_typename(L, -2),
                          (int)strlen(prefix) - 1, prefix);
        const char *key = lua_tostring(L, -2);
        int i = 0;
        while (spec[i].name && strcmp(spec[i].name, key) != 0)
            i++;
        snprintf(oname, sizeof oname, "%s%s", prefix, key);
        if (!spec[i].name)
            lua_api_error(L, "%s: unknown option '%s'", fn, oname);
        seen |= 1ull << i;
        opt_set(L, lua_absindex(L, -1), fn, oname, &spec[i], target);
        lua_pop(L, 1);
    }
    for (int i = 0; spec[i].name; i++)
        if (spec[i].required && !(seen & (1ull << i)))
            lua_api_error(L, "%s: option '%s%s' is required", fn, prefix, spec[i].name);
}

/* Every config function takes exactly one table: fn { ... }. */
static void check_args(lua_State *L, const char *fn)
{
    if (lua_gettop(L) != 1 || lua_type(L, 1) != LUA_TTABLE)
        lua_api_error(L, "%s: expects one table of options: petrel.%s { ... }", fn, fn);
}

static void default_cidrs(lua_State *L, const char *const *src, int n, struct cidr **list,
                          int *count)
{
    *list = xcalloc(L, (size_t)n, sizeof **list);
    for (int i = 0; i < n; i++)
        if (cidr_parse(src[i], &(*list)[i]) != PT_OK)
            abort();  /* our own defaults must parse */
    *count = n;
}

/* The listener already bound to host:port in this config, if any: binding it
 * twice would only fail at startup. */
static const char *listen_owner(const struct config *cfg, const char *host, uint16_t port)
{
    for (int i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].port == port && strcmp(cfg->listeners[i].host, host) == 0)
            return cfg->listeners[i].name;
    for (int i = 0; i < cfg->n_http; i++)
        if (cfg->http[i].port == port && strcmp(cfg->http[i].host, host) == 0)
            return cfg->http[i].listen;
    return NULL;
}

/* ---- The configure_* / start_* functions ------------------------------------ */

static int api_start_smtp_listener(lua_State *L)
{
    static const char fn[] = "start_smtp_listener";
    static const char *const relay[] = DEF_RELAY_HOSTS;
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    if (cfg->n_listeners == CFG_MAX_LISTENERS)
        return lua_api_error(L, "%s: too many SMTP listeners (at most %d)", fn,
                             CFG_MAX_LISTENERS);
    struct cfg_listener *l = &cfg->listeners[cfg->n_listeners++];
    l->line = lua_api_line(L);
    default_cidrs(L, relay, 2, &l->relay_hosts, &l->n_relay_hosts);
    l->auth_require_tls = DEF_AUTH_REQUIRE_TLS;
    l->max_message_size = DEF_MAX_MESSAGE_SIZE;
    l->max_recipients = DEF_MAX_RECIPIENTS;
    l->max_connections = DEF_MAX_CONNECTIONS;
    l->max_connections_per_ip = DEF_MAX_CONN_PER_IP;
    l->greeting_timeout = DEF_GREETING_TIMEOUT;
    l->command_timeout = DEF_COMMAND_TIMEOUT;
    l->data_timeout = DEF_DATA_TIMEOUT;
    opts_apply(L, 1, fn, "", smtp_listener_opts, l);
    cfg->n_listeners--;             /* not itself while looking for a clash */
    const char *owner = listen_owner(cfg, l->host, l->port);
    cfg->n_listeners++;
    if (owner)
        return lua_api_error(L, "%s: address '%s' is already used by listener '%s'", fn,
                             l->listen, owner);
    if (l->proxy_protocol && l->n_proxy_trusted_hosts == 0)
        return lua_api_error(L, "%s: proxy_protocol = true needs proxy_trusted_hosts (the "
                             "CIDRs of the load balancers allowed to send the PROXY header)",
                             fn);
    if (l->tls_required && !l->tls)
        return lua_api_error(L, "%s: tls_required = true needs tls = { cert_file=, key_file= }",
                             fn);
    if (!l->name)
        l->name = xstrdup(L, l->listen);
    if (!l->hostname) {
        char h[256];
        host_name(h);
        l->hostname = xstrdup(L, h);
    }
    return 0;
}

static int api_start_http_listener(lua_State *L)
{
    static const char fn[] = "start_http_listener";
    static const char *const trusted[] = DEF_TRUSTED_HOSTS;
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    if (cfg->n_http == CFG_MAX_LISTENERS)
        return lua_api_error(L, "%s: too many HTTP listeners (at most %d)", fn,
                             CFG_MAX_LISTENERS);
    struct cfg_http_listener *h = &cfg->http[cfg->n_http++];
    h->line = lua_api_line(L);
    default_cidrs(L, trusted, 2, &h->trusted_hosts, &h->n_trusted_hosts);
    opts_apply(L, 1, fn, "", http_listener_opts, h);
    if (h->tls)
        h->tls->implicit = true;  /* HTTPS has no STARTTLS */
    cfg->n_http--;
    const char *owner = listen_owner(cfg, h->host, h->port);
    cfg->n_http++;
    if (owner)
        return lua_api_error(L, "%s: address '%s' is already used by listener '%s'", fn,
                             h->listen, owner);
    return 0;
}

/* The functions that set fields of struct config directly. */
static int configure(lua_State *L, const char *fn, const struct opt *spec)
{
    check_args(L, fn);
    opts_apply(L, 1, fn, "", spec, cfg_of(L));
    return 0;
}

static int api_configure_queue(lua_State *L)
{
    configure(L, "configure_queue", queue_opts);
    struct cfg_queue *q = &cfg_of(L)->queue;
    char why[200];
    struct redis_url u;
    if (q->redis_url && redis_url_parse(q->redis_url, &u, why, sizeof why) != PT_OK)
        return lua_api_error(L, "configure_queue: option 'redis_url': %s (e.g. "
                             "\"redis://127.0.0.1:6379/0\")", why);
    if (q->key_prefix && strlen(q->key_prefix) > 64)
        return lua_api_error(L, "configure_queue: option 'key_prefix': at most 64 bytes");
    if (q->lease < 3)
        return lua_api_error(L, "configure_queue: option 'lease': at least 3s (renewed every "
                             "third of it)");
    if (strcmp(q->backend, "redis") == 0 && !q->redis_url)
        return lua_api_error(L, "configure_queue: backend = \"redis\" needs redis_url");
    /* a shared queue has no per-node dead-letter list yet: refused, never ignored */
    if (strcmp(q->backend, "redis") == 0 && q->dead_letter_after > 0)
        return lua_api_error(L, "configure_queue: option 'dead_letter_after' is not supported "
                             "with backend = \"redis\" (expired mail is removed there)");
    /* the Redis options do nothing with the local spool: refused, never ignored */
    const char *redis_only = strcmp(q->backend, "redis") == 0 ? NULL
                           : q->redis_url ? "redis_url"
                           : q->wait_replicas ? "wait_replicas"
                           : q->max_redis_bytes ? "max_redis_bytes"
                           : q->lease != DEF_LEASE ? "lease"
                           : strcmp(q->key_prefix, DEF_KEY_PREFIX) != 0 ? "key_prefix" : NULL;
    if (redis_only)
        return lua_api_error(L, "configure_queue: option '%s' applies only with backend = "
                             "\"redis\"", redis_only);
    return 0;
}

static const struct opt redis_opts[] = {
    { O("url", OPT_STR, CFG(redis.url)) },
    { O("key_prefix", OPT_STR, CFG(redis.key_prefix)) },
    { .name = NULL },
};

/* Cluster-wide limits, AUTH bans and suspensions shared through Redis with the
 * local spool (cluster/limits.h). */
static int api_configure_redis(lua_State *L)
{
    configure(L, "configure_redis", redis_opts);
    struct config *c = cfg_of(L);
    char why[200];
    struct redis_url u;
    if (!c->redis.url)
        return lua_api_error(L, "configure_redis: option 'url' is required (e.g. "
                             "\"redis://127.0.0.1:6379/0\")");
    if (redis_url_parse(c->redis.url, &u, why, sizeof why) != PT_OK)
        return lua_api_error(L, "configure_redis: option 'url': %s (e.g. "
                             "\"redis://127.0.0.1:6379/0\")", why);
    if (c->redis.key_prefix && strlen(c->redis.key_prefix) > 64)
        return lua_api_error(L, "configure_redis: option 'key_prefix': at most 64 bytes");
    return 0;
}

/* A plain addr-spec "local@domain": what a report's From: and MAIL FROM carry. */
static bool tls_rpt_from_ok(const char *s)
{
    const char *at = strrchr(s, '@');
    if (!at || at == s || !at[1] || strlen(s) > 254)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || strchr("<>\"(),;:\\[]", *p))
            return false;
    return strchr(at + 1, '@') == NULL && at[1] != '.';
}

static int api_configure_delivery(lua_State *L)
{
    configure(L, "configure_delivery", delivery_opts);
    struct cfg_delivery *d = &cfg_of(L)->delivery;
    if (lua_getfield(L, 1, "ca_file") != LUA_TNIL)
        d->dflt.line = lua_api_line(L);       /* where a ca_file error will point */
    lua_pop(L, 1);
    if (d->tls_rpt_interval < 1.0)
        return lua_api_error(L, "configure_delivery: option 'tls_rpt_interval' must be at "
                             "least 1s (e.g. \"24h\")");
    if (d->tls_rpt_org && (!d->tls_rpt_org[0] || strlen(d->tls_rpt_org) > 200 ||
                           strpbrk(d->tls_rpt_org, "\r\n")))
        return lua_api_error(L, "configure_delivery: option 'tls_rpt_org' must be a "
                             "non-empty single line of at most 200 bytes");
    if (d->tls_rpt_from && !tls_rpt_from_ok(d->tls_rpt_from))
        return lua_api_error(L, "configure_delivery: option 'tls_rpt_from' must be a mail "
                             "address like \"postmaster@example.com\" (no <>, spaces or "
                             "quotes)");
    return 0;
}

static int api_configure_tls(lua_State *L)
{
    configure(L, "configure_tls", tls_opts);
    cfg_of(L)->tls.line = lua_api_line(L);
    return 0;
}

static int api_configure_auth(lua_State *L)
{
    configure(L, "configure_auth", auth_opts);
    cfg_of(L)->auth_line = lua_api_line(L);
    return 0;
}

static int api_configure_process(lua_State *L)
{
    return configure(L, "configure_process", process_opts);
}

static int api_configure_logging(lua_State *L)
{
    return configure(L, "configure_logging", logging_opts);
}

static int api_configure_dns(lua_State *L)
{
    static const char fn[] = "configure_dns";
    struct config *cfg = cfg_of(L);
    configure(L, fn, dns_opts);
    for (int i = 0; i < cfg->n_dns_resolvers; i++) {
        char h[256];
        uint16_t port = 0;
        int bracketed = 0;
        const char *r = cfg->dns_resolvers[i];
        if (parse_hostport(r, h, &port, &bracketed, 53) != PT_OK || port == 0 || !is_ip(h))
            return lua_api_error(L, "%s: option 'resolvers': invalid resolver '%s' (IP or "
                                 "IP:PORT, e.g. \"127.0.0.1:5353\")", fn, r);
    }
    return 0;
}

/* "*", "domain" or ".domain": labels of letters, digits, '-' and '_' (UTF-8
 * allowed); out gets the lowercased key. */
static bool route_key(const char *key, char *out, size_t outlen)
{
    size_t n = strlen(key);
    if (n == 0 || n >= outlen)
        return false;
    memcpy(out, key, n + 1);
    lowercase(out);
    if (strcmp(out, "*") == 0)
        return true;
    const char *s = out[0] == '.' ? out + 1 : out;
    size_t label = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (isalnum(c) || c == '-' || c == '_' || c >= 0x80) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

/* "discard" or "error:CODE TEXT" (CODE 4xx or 5xx). */
static void route_string(lua_State *L, const char *fn, struct cfg_route *r, const char *s)
{
    if (strcmp(s, "discard") == 0) {
        r->kind = ROUTE_DISCARD;
        return;
    }
    if (strncmp(s, "error:", 6) == 0) {
        const char *t = s + 6;
        while (*t == ' ')
            t++;
        if ((t[0] == '4' || t[0] == '5') && isdigit((unsigned char)t[1]) &&
            isdigit((unsigned char)t[2]) && (t[3] == '\0' || t[3] == ' ')) {
            r->kind = ROUTE_ERROR;
            r->error_code = (t[0] - '0') * 100 + (t[1] - '0') * 10 + (t[2] - '0');
            set_str(L, &r->error_text, t);
            return;
        }
        lua_api_error(L, "%s: invalid error route '%s' (expected \"error:CODE TEXT\" with a "
                      "4xx or 5xx CODE, e.g. \"error:550 5.1.1 local delivery disabled\")",
                      fn, s);
    }
    lua_api_error(L, "%s: invalid route '%s' (expected \"discard\", \"error:CODE TEXT\" or a "
                  "table { relayhost = ... })", fn, s);
}

/* The route for key: the existing one (reset; a later call overrides) or a new one. */
static struct cfg_route *route_slot(lua_State *L, struct config *cfg, const char *key)
{
    for (int i = 0; i < cfg->n_routes; i++)
        if (strcmp(cfg->routes[i].key, key) == 0) {
            char *k = cfg->routes[i].key;
            cfg->routes[i].key = NULL;
            free_route(&cfg->routes[i]);
            cfg->routes[i].key = k;
            return &cfg->routes[i];
        }
    char *k = xstrdup(L, key);
    struct cfg_route *arr = realloc(cfg->routes, ((size_t)cfg->n_routes + 1) * sizeof *arr);
    if (!arr) {
        free(k);
        lua_api_error(L, "out of memory");
    }
    cfg->routes = arr;
    struct cfg_route *r = &arr[cfg->n_routes++];
    memset(r, 0, sizeof *r);
    r->key = k;
    return r;
}

static int api_configure_transport(lua_State *L)
{
    static const char fn[] = "configure_transport";
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    lua_newtable(L);               /* index 2: lowercased keys seen in this call */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        char key[256], where[320];
        if (lua_type(L, -2) != LUA_TSTRING)
            return lua_api_error(L, "%s: unexpected %s key (routes are written "
                                 "[\"domain\"] = route)", fn, luaL_typename(L, -2));
        const char *raw = lua_tostring(L, -2);
        if (!route_key(raw, key, sizeof key))
            return lua_api_error(L, "%s: invalid route key '%s' (a domain, \".domain\" for "
                                 "its subdomains, or \"*\")", fn, raw);
        if (lua_getfield(L, 2, key) != LUA_TNIL)
            return lua_api_error(L, "%s: route '%s' is given twice", fn, key);
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
        lua_setfield(L, 2, key);
        snprintf(where, sizeof where, "%s: route '%s'", fn, key);
        struct cfg_route *r = route_slot(L, cfg, key);
        r->line = lua_api_line(L);
        int v = lua_absindex(L, -1);
        if (lua_type(L, v) == LUA_TSTRING) {
            route_string(L, where, r, lua_tostring(L, v));
        } else if (lua_type(L, v) == LUA_TTABLE) {
            opts_apply(L, v, where, "", route_opts, r);
        } else {
            return lua_api_error(L, "%s must be \"discard\", \"error:CODE TEXT\" or a table "
                                 "{ relayhost = ..., auth = ..., tls = ..., ca_file = ... }",
                                 where);
        }
        lua_pop(L, 1);
    }
    return 0;
}

static int api_configure_dkim_signing(lua_State *L)
{
    static const char fn[] = "configure_dkim_signing";
    static const char *const headers[] = DEF_DKIM_HEADERS;
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    cfg->dkim = grow(L, cfg->dkim, cfg->n_dkim, sizeof *cfg->dkim);
    struct cfg_dkim_key *k = &cfg->dkim[cfg->n_dkim++];
    k->line = lua_api_line(L);
    k->algorithm = xstrdup(L, DEF_DKIM_ALGORITHM);
    int nh = (int)(sizeof headers / sizeof headers[0]);
    k->headers = xcalloc(L, (size_t)nh, sizeof *k->headers);
    for (int i = 0; i < nh; i++, k->n_headers++)
        k->headers[i] = xstrdup(L, headers[i]);
    opts_apply(L, 1, fn, "", dkim_opts, k);
    int i = 0;
    while (i < k->n_headers && strcasecmp(k->headers[i], "From") != 0)
        i++;
    if (i == k->n_headers)
        return lua_api_error(L, "%s: option 'headers' must include \"From\" (RFC 6376)", fn);
    return 0;
}

static int api_configure_header_checks(lua_State *L)
{
    static const char fn[] = "configure_header_checks";
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    int n = list_len(L, 1, LUA_TTABLE);
    if (n < 0)
        return lua_api_error(L, "%s: expects a list of { pattern = ..., action = ... } tables",
                             fn);
    for (int i = 1; i <= n; i++) {
        char where[64];
        snprintf(where, sizeof where, "%s: entry %d", fn, i);
        cfg->header_checks = grow(L, cfg->header_checks, cfg->n_header_checks,
                                  sizeof *cfg->header_checks);
        struct cfg_header_check *hc = &cfg->header_checks[cfg->n_header_checks++];
        lua_rawgeti(L, 1, i);
        opts_apply(L, -1, where, "", header_check_opts, hc);
        lua_pop(L, 1);

        /* the engine itself judges the rule: one parser for --check and for use */
        struct header_checks_rule rule = { hc->pattern, hc->action };
        struct header_checks *one;
        size_t bad;
        char why[256];
        int rc = header_checks_new(&rule, 1, &one, &bad, why, sizeof why);
        header_checks_free(one);
        if (rc == PT_NOMEM)
            return luaL_error(L, "out of memory");
        if (rc != PT_OK)
            return lua_api_error(L, "%s: option '%s': %s", where,
                                 strstr(why, "regex") ? "pattern" : "action", why);
        char canon[1024];
        if (header_checks_canon(hc->action, canon, sizeof canon, why, sizeof why) != PT_OK)
            return lua_api_error(L, "%s: option 'action': %s", where, why);
        set_str(L, &hc->action, canon);
    }
    return 0;
}


/* ---- configure_shaping (DESIGN §9) ------------------------------------------ */

/* A rate: "N/s|min|h|d" or a number per minute; per second into *out. */
static double get_rate(lua_State *L, int v, const char *fn, const char *oname)
{
    double r;
    if (lua_type(L, v) == LUA_TNUMBER) {
        r = lua_tonumber(L, v);
        if (!isfinite(r) || r <= 0)
            lua_api_error(L, "%s: option '%s' must be a positive rate", fn, oname);
        return r / 60.0;
    }
    if (lua_type(L, v) != LUA_TSTRING || shaping_rate_parse(lua_tostring(L, v), &r) != PT_OK)
        lua_api_error(L, "%s: option '%s': invalid rate '%s' (e.g. \"300/min\", \"10/s\", "
                      "\"5000/h\", \"100000/d\", or a number per minute)", fn, oname,
                      lua_type(L, v) == LUA_TSTRING ? lua_tostring(L, v) : luaL_typename(L, v));
    return r;
}

/* One rule table at v into r (unset fields stay < 0). */
/* A rule's tls: "may", "encrypt" or "verify" (tls_levels) into 1, 2, 3 (enum
 * client_tls_policy). */
static int shaping_tls_parse(lua_State *L, int v, const char *fn, const char *oname)
{
    char buf[200];
    const char *s = lua_type(L, v) == LUA_TSTRING ? lua_tostring(L, v) : NULL;
    for (int i = 0; s && tls_levels[i]; i++)
        if (strcmp(tls_levels[i], s) == 0)
            return i + 1;
    lua_api_error(L, "%s: option '%s' must be %s", fn, oname,
                  choice_text(tls_levels, buf, sizeof buf));
    return -1;
}

static void shaping_rule_parse(lua_State *L, int v, const char *fn, struct shaping_rule *r)
{
    char oname[OPT_NAME_MAX];
    if (lua_type(L, v) != LUA_TTABLE)
        lua_api_error(L, "%s: rule '%s' must be a table { connection_limit = ..., "
                      "max_message_rate = ... }", fn, r->key);
    v = lua_absindex(L, v);
    lua_pushnil(L);
    while (lua_next(L, v)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            lua_api_error(L, "%s: rule '%s': option names must be strings", fn, r->key);
        const char *k = lua_tostring(L, -2);
        snprintf(oname, sizeof oname, "%s.%s", r->key, k);
        if (strcmp(k, "connection_limit") == 0)
            r->connection_limit = (int)get_integer(L, -1, fn, oname, 1, 100000);
        else if (strcmp(k, "max_message_rate") == 0)
            r->message_rate = get_rate(L, -1, fn, oname);
        else if (strcmp(k, "max_connection_rate") == 0)
            r->connection_rate = get_rate(L, -1, fn, oname);
        else if (strcmp(k, "max_deliveries_per_connection") == 0)
            r->max_deliveries_per_connection = (int)get_integer(L, -1, fn, oname, 1, INT_MAX);
        else if (strcmp(k, "connect_timeout") == 0)
            r->connect_timeout = get_duration(L, -1, fn, oname, false);
        else if (strcmp(k, "tls") == 0)
            r->tls = shaping_tls_parse(L, -1, fn, oname);
        else
            lua_api_error(L, "%s: unknown option '%s' (known: connection_limit, "
                          "max_message_rate, max_connection_rate, "
                          "max_deliveries_per_connection, connect_timeout, tls)", fn, oname);
        lua_pop(L, 1);
    }
}

static void shaping_auto_parse(lua_State *L, int v, const char *fn, int idx,
                               struct shaping_rules *sr)
{
    char where[64], oname[OPT_NAME_MAX];
    snprintf(where, sizeof where, "%s: automation rule %d", fn, idx);
    if (lua_type(L, v) != LUA_TTABLE)
        lua_api_error(L, "%s must be a table { match = ..., action = ... }", where);
    v = lua_absindex(L, v);
    struct shaping_auto a = { .action = SHAPING__N, .factor = -1, .value = -1 };
    const char *match = NULL;
    bool has_duration = false;
    lua_pushnil(L);
    while (lua_next(L, v)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        snprintf(oname, sizeof oname, "%s", k);
        if (strcmp(k, "match") == 0) {
            match = get_string(L, -1, where, oname);
        } else if (strcmp(k, "action") == 0) {
            const char *s = get_string(L, -1, where, oname);
            int act = shaping_action_parse(s);
            if (act < 0)
                lua_api_error(L, "%s: option 'action': unknown action '%s' (suspend, set_rate, "
                              "reduce_rate, set_connection_limit, bounce)", where, s);
            a.action = (enum shaping_action)act;
        } else if (strcmp(k, "duration") == 0) {
            a.duration = get_duration(L, -1, where, oname, false);
            has_duration = true;
        } else if (strcmp(k, "factor") == 0) {
            a.factor = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
            if (!(a.factor > 0 && a.factor < 1))
                lua_api_error(L, "%s: option 'factor' must be a number between 0 and 1 "
                              "(exclusive), e.g. 0.5", where);
        } else if (strcmp(k, "value") == 0) {
            if (lua_type(L, -1) == LUA_TNUMBER) {
                a.value = lua_tonumber(L, -1);
                if (!(a.value > 0) || !isfinite(a.value))
                    lua_api_error(L, "%s: option 'value' must be positive", where);
            } else {
                a.value = get_rate(L, -1, where, oname) * 60.0;   /* per minute, see below */
            }
        } else {
            lua_api_error(L, "%s: unknown option '%s' (known: match, action, duration, factor, "
                          "value)", where, k);
        }
        lua_pop(L, 1);
    }
    if (!match || a.action == SHAPING__N)
        lua_api_error(L, "%s: options 'match' and 'action' are required", where);
    if (a.action == SHAPING_BOUNCE && (has_duration || a.factor >= 0 || a.value >= 0))
        lua_api_error(L, "%s: action 'bounce' takes no duration, factor or value", where);
    if (a.action != SHAPING_BOUNCE && !has_duration)
        lua_api_error(L, "%s: option 'duration' is required for action '%s'", where,
                      shaping_action_name(a.action));
    if (a.action == SHAPING_REDUCE_RATE && (a.factor < 0 || a.value >= 0))
        lua_api_error(L, "%s: action 'reduce_rate' needs 'factor' (and no 'value')", where);
    if ((a.action == SHAPING_SET_RATE || a.action == SHAPING_SET_CONN_LIMIT) &&
        (a.value < 0 || a.factor >= 0))
        lua_api_error(L, "%s: action '%s' needs 'value' (and no 'factor')", where,
                      shaping_action_name(a.action));
    if (a.action == SHAPING_SUSPEND && (a.value >= 0 || a.factor >= 0))
        lua_api_error(L, "%s: action 'suspend' takes no factor or value", where);
    if (a.action == SHAPING_SET_CONN_LIMIT && (a.value < 1 || a.value != floor(a.value)))
        lua_api_error(L, "%s: option 'value' must be a whole number of connections (>= 1)",
                      where);
    if (a.action == SHAPING_SET_RATE)
        a.value /= 60.0;          /* a number is per minute, as max_message_rate */
    char why[300];
    if (regex_compile(&a.re, match, REG_EXTENDED | REG_NOSUB, why, sizeof why) != PT_OK)
        lua_api_error(L, "%s: option 'match': %s", where, why);
    a.match = strdup(match);
    if (!a.match) {
        regfree(&a.re);
        lua_api_error(L, "out of memory");
    }
    struct shaping_auto *p = realloc(sr->autos, ((size_t)sr->n_autos + 1) * sizeof *p);
    if (!p) {
        free(a.match);
        regfree(&a.re);
        lua_api_error(L, "out of memory");
    }
    sr->autos = p;
    sr->autos[sr->n_autos++] = a;
}

static void shaping_rule_init(struct shaping_rule *r)
{
    r->connection_limit = -1;
    r->message_rate = -1;
    r->connection_rate = -1;
    r->max_deliveries_per_connection = -1;
    r->connect_timeout = -1;
    r->tls = -1;
}

static int api_configure_shaping(lua_State *L)
{
    static const char fn[] = "configure_shaping";
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    if (!cfg->shaping) {
        cfg->shaping = xcalloc(L, 1, sizeof *cfg->shaping);
        shaping_rule_init(&cfg->shaping->dflt);
        cfg->shaping->dflt.key = xstrdup(L, "default");
    }
    struct shaping_rules *sr = cfg->shaping;
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            lua_api_error(L, "%s: keys must be \"default\", \"automation\", a domain or "
                          "\"site:GLOB\"", fn);
        const char *k = lua_tostring(L, -2);
        if (strcmp(k, "automation") == 0) {
            int n = list_len(L, lua_gettop(L), LUA_TTABLE);
            if (n < 0)
                lua_api_error(L, "%s: option 'automation' must be a list of { match = ..., "
                              "action = ... } tables", fn);
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                shaping_auto_parse(L, -1, fn, i, sr);
                lua_pop(L, 1);
            }
        } else if (strcmp(k, "default") == 0) {
            shaping_rule_parse(L, -1, fn, &sr->dflt);
        } else {
            char key[SITE_NAME_MAX + 8], why[300];
            snprintf(key, sizeof key, "%s", k);
            lowercase(key);
            bool site = strncmp(key, "site:", 5) == 0;
            if (site && !site_glob_valid(key + 5, why, sizeof why))
                lua_api_error(L, "%s: rule '%s': %s", fn, k, why);
            if (!site && (strchr(key, '*') || strchr(key, '?') || strchr(key, ':') ||
                          !strchr(key, '.') ||
                          !site_glob_valid(key, why, sizeof why)))
                lua_api_error(L, "%s: unknown key '%s' (a rule key is \"default\", "
                              "\"automation\", a destination domain such as \"gmail.com\" or "
                              "\"site:GLOB\" such as \"site:*.google.com\")", fn, k);
            struct shaping_rule *r = NULL;
            for (int i = 0; i < sr->n_rules && !r; i++)
                if (strcmp(sr->rules[i].key, key) == 0)
                    r = &sr->rules[i];
            if (!r) {
                sr->rules = grow(L, sr->rules, sr->n_rules, sizeof *sr->rules);
                r = &sr->rules[sr->n_rules++];
                shaping_rule_init(r);
                r->key = xstrdup(L, key);
                /* grow() moved the array: globs point into their own keys */
                for (int i = 0; i < sr->n_rules; i++)
                    sr->rules[i].glob = strncmp(sr->rules[i].key, "site:", 5) == 0
                                        ? sr->rules[i].key + 5 : NULL;
            }
            shaping_rule_parse(L, -1, fn, r);
            if (site)
                sr->has_sites = true;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* Egress sources, pools and tenants (DESIGN §9). */

const struct cfg_egress_source *config_egress_source(const struct config *cfg, const char *name)
{
    for (int i = 0; name && i < cfg->n_egress_sources; i++)
        if (strcmp(cfg->egress_sources[i].name, name) == 0)
            return &cfg->egress_sources[i];
    return NULL;
}

int config_egress_pool_index(const struct config *cfg, const char *name)
{
    for (int i = 0; name && i < cfg->n_egress_pools; i++)
        if (strcmp(cfg->egress_pools[i].name, name) == 0)
            return i;
    return -1;
}

const struct cfg_tenant *config_tenant(const struct config *cfg, const char *name)
{
    for (int i = 0; name && i < cfg->n_tenants; i++)
        if (strcmp(cfg->tenants[i].name, name) == 0)
            return &cfg->tenants[i];
    return NULL;
}

/* The string option k of the table at 1 (NULL when absent); raises on another type. */
static const char *str_field(lua_State *L, const char *fn, const char *k, bool required)
{
    int t = lua_getfield(L, 1, k);
    const char *v = t == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);   /* the table keeps the string alive */
    if (t != LUA_TNIL && t != LUA_TSTRING)
        lua_api_error(L, "%s: option '%s' must be a string", fn, k);
    if (required && !v)
        lua_api_error(L, "%s: option '%s' is required", fn, k);
    return v;
}

/* Only the keys of known (NULL-terminated) in the table at 1. */
static void known_keys(lua_State *L, const char *fn, const char *const *known)
{
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        bool ok = lua_type(L, -2) == LUA_TSTRING;
        for (int i = 0; ok && known[i]; i++)
            if (strcmp(lua_tostring(L, -2), known[i]) == 0)
                goto next;
        lua_api_error(L, "%s: unknown option '%s'", fn,
                      ok ? lua_tostring(L, -2) : "(not a string)");
    next:
        lua_pop(L, 1);
    }
}

/* Source, pool and tenant names: 1..63 of [A-Za-z0-9_.-]. */
static void egress_name(lua_State *L, const char *fn, const char *what, const char *n)
{
    size_t len = strlen(n);
    bool ok = len >= 1 && len <= CFG_EGRESS_NAME_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = isalnum((unsigned char)n[i]) || n[i] == '_' || n[i] == '.' || n[i] == '-';
    if (!ok)
        lua_api_error(L, "%s: %s '%s' is not a valid name (1 to %d letters, digits, '_', "
                      "'.', '-')", fn, what, n, CFG_EGRESS_NAME_MAX);
}

static int api_make_egress_source(lua_State *L)
{
    const char *fn = "make_egress_source";
    static const char *const known[] = { "name", "source_address", "ehlo_domain", "warmup",
                                         NULL };
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    known_keys(L, fn, known);
    const char *name = str_field(L, fn, "name", true);
    const char *addr = str_field(L, fn, "source_address", true);
    const char *ehlo = str_field(L, fn, "ehlo_domain", false);
    egress_name(L, fn, "name", name);
    if (config_egress_source(cfg, name))
        lua_api_error(L, "%s: source '%s' is defined twice", fn, name);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    else
        lua_api_error(L, "%s: source_address '%s' is not an IPv4 or IPv6 address", fn, addr);
    /* the host must have it: bind a throwaway socket to it */
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t sl = ss.ss_family == AF_INET ? sizeof *v4 : sizeof *v6;
    int berr = fd < 0 ? errno : (bind(fd, (struct sockaddr *)&ss, sl) == 0 ? 0 : errno);
    if (fd >= 0)
        close(fd);
    if (berr)
        lua_api_error(L, "%s: source_address '%s' is not an address of this host (bind: %s)",
                      fn, addr, strerror(berr));
    if (ehlo) {
        char why[200];
        if (!site_glob_valid(ehlo, why, sizeof why) || strchr(ehlo, '*') || strchr(ehlo, '?'))
            lua_api_error(L, "%s: ehlo_domain '%s' is not a host name", fn, ehlo);
    }
    int *warm = NULL, nwarm = 0;
    if (lua_getfield(L, 1, "warmup") != LUA_TNIL) {
        nwarm = list_len(L, lua_gettop(L), LUA_TNUMBER);
        if (nwarm <= 0)
            lua_api_error(L, "%s: option 'warmup' must be a list of daily caps such as "
                          "{ 50, 100, 500 }", fn);
        warm = xcalloc(L, (size_t)nwarm, sizeof *warm);
        for (int i = 0; i < nwarm; i++) {
            lua_rawgeti(L, -1, i + 1);
            lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
            lua_pop(L, 1);
            if (v < 1 || v > 100000000) {
                free(warm);
                lua_api_error(L, "%s: warmup day %d: a cap must be a whole number from 1 to "
                              "100000000", fn, i + 1);
            }
            warm[i] = (int)v;
        }
    }
    lua_pop(L, 1);
    cfg->egress_sources = grow(L, cfg->egress_sources, cfg->n_egress_sources,
                               sizeof *cfg->egress_sources);
    struct cfg_egress_source *src = &cfg->egress_sources[cfg->n_egress_sources++];
    src->warmup = warm;
    src->n_warmup = nwarm;
    src->addr = ss;
    src->name = xstrdup(L, name);
    src->source_address = xstrdup(L, addr);
    if (ehlo)
        src->ehlo_domain = xstrdup(L, ehlo);
    return 0;
}

static int api_make_egress_pool(lua_State *L)
{
    const char *fn = "make_egress_pool";
    static const char *const known[] = { "name", "entries", NULL };
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    known_keys(L, fn, known);
    const char *name = str_field(L, fn, "name", true);
    egress_name(L, fn, "name", name);
    if (config_egress_pool_index(cfg, name) >= 0)
        lua_api_error(L, "%s: pool '%s' is defined twice", fn, name);
    lua_getfield(L, 1, "entries");
    int n = list_len(L, lua_gettop(L), LUA_TTABLE);
    if (n <= 0)
        lua_api_error(L, "%s: option 'entries' must be a non-empty list of "
                      "{ name = SOURCE, weight = N }", fn);
    cfg->egress_pools = grow(L, cfg->egress_pools, cfg->n_egress_pools,
                             sizeof *cfg->egress_pools);
    struct cfg_egress_pool *p = &cfg->egress_pools[cfg->n_egress_pools++];
    p->name = xstrdup(L, name);
    p->src = xcalloc(L, (size_t)n, sizeof *p->src);
    p->weight = xcalloc(L, (size_t)n, sizeof *p->weight);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) != LUA_TSTRING || (strcmp(lua_tostring(L, -2), "name") != 0 &&
                                                   strcmp(lua_tostring(L, -2), "weight") != 0))
                lua_api_error(L, "%s: entry %d: unknown key (known: name, weight)", fn, i);
            lua_pop(L, 1);
        }
        const char *sn = lua_getfield(L, -1, "name") == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        lua_pop(L, 1);
        if (!sn)
            lua_api_error(L, "%s: entry %d: 'name' (an egress source) is required", fn, i);
        const struct cfg_egress_source *s = config_egress_source(cfg, sn);
        if (!s)
            lua_api_error(L, "%s: entry %d: no egress source named '%s' (define it with "
                          "make_egress_source before the pool)", fn, i, sn);
        lua_Integer w = 1;
        int wt = lua_getfield(L, -1, "weight");
        if (wt != LUA_TNIL)
            w = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
        lua_pop(L, 1);
        if (w <= 0 || w > 1000000)
            lua_api_error(L, "%s: entry %d ('%s'): weight must be a whole number from 1 to "
                          "1000000", fn, i, sn);
        for (int k = 0; k < p->n; k++)
            if (p->src[k] == (int)(s - cfg->egress_sources))
                lua_api_error(L, "%s: source '%s' is listed twice", fn, sn);
        p->src[p->n] = (int)(s - cfg->egress_sources);
        p->weight[p->n++] = (int)w;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

static int api_configure_tenant(lua_State *L)
{
    const char *fn = "configure_tenant";
    static const char *const known[] = { "name", "egress_pool", "max_message_rate", NULL };
    struct config *cfg = cfg_of(L);
    check_args(L, fn);
    known_keys(L, fn, known);
    const char *name = str_field(L, fn, "name", true);
    const char *pool = str_field(L, fn, "egress_pool", false);
    egress_name(L, fn, "name", name);
    if (config_tenant(cfg, name))
        lua_api_error(L, "%s: tenant '%s' is configured twice", fn, name);
    int pi = -1;
    if (pool && (pi = config_egress_pool_index(cfg, pool)) < 0)
        lua_api_error(L, "%s: egress_pool '%s' is not defined (make_egress_pool it before "
                      "the tenant)", fn, pool);
    double rate = 0;
    int rt = lua_getfield(L, 1, "max_message_rate");
    if (rt == LUA_TNUMBER && lua_tonumber(L, -1) > 0 && isfinite(lua_tonumber(L, -1)))
        rate = lua_tonumber(L, -1) / 60.0;              /* a number = per minute */
    else if (rt != LUA_TNIL && (rt != LUA_TSTRING ||
                                shaping_rate_parse(lua_tostring(L, -1), &rate) != PT_OK ||
                                rate <= 0))
        lua_api_error(L, "%s: max_message_rate must be a rate such as \"100/min\" "
                      "(N/s, N/min, N/h, N/d) or a number per minute", fn);
    lua_pop(L, 1);
    cfg->tenants = grow(L, cfg->tenants, cfg->n_tenants, sizeof *cfg->tenants);
    struct cfg_tenant *t = &cfg->tenants[cfg->n_tenants++];
    t->pool = pi;
    t->max_message_rate = rate;
    t->name = xstrdup(L, name);
    return 0;
}

static const luaL_Reg config_fns[] = {
    { "start_smtp_listener", api_start_smtp_listener },
    { "start_http_listener", api_start_http_listener },
    { "configure_queue", api_configure_queue },
    { "configure_redis", api_configure_redis },
    { "configure_delivery", api_configure_delivery },
    { "configure_transport", api_configure_transport },
    { "configure_dns", api_configure_dns },
    { "configure_tls", api_configure_tls },
    { "configure_dkim_signing", api_configure_dkim_signing },
    { "configure_auth", api_configure_auth },
    { "configure_process", api_configure_process },
    { "configure_header_checks", api_configure_header_checks },
    { "configure_logging", api_configure_logging },
    { "configure_shaping", api_configure_shaping },
    { "make_egress_source", api_make_egress_source },
    { "make_egress_pool", api_make_egress_pool },
    { "configure_tenant", api_configure_tenant },
    { NULL, NULL },
};

/* ---- Snapshot lifecycle ----------------------------------------------------- */

static int config_defaults(struct config *cfg)
{
    cfg->queue.spool_dir = strdup(DEF_SPOOL_DIR);
    cfg->queue.retry_interval = DEF_RETRY_INTERVAL;
    cfg->queue.max_retry_interval = DEF_MAX_RETRY_INTERVAL;
    cfg->queue.max_retry_age = DEF_MAX_RETRY_AGE;
    cfg->queue.delay_warning_after = DEF_DELAY_WARNING_AFTER;
    cfg->queue.dead_letter_after = DEF_DEAD_LETTER_AFTER;
    cfg->queue.max_queue_depth = DEF_MAX_QUEUE_DEPTH;
    cfg->queue.backend = strdup(DEF_QUEUE_BACKEND);
    cfg->queue.key_prefix = strdup(DEF_KEY_PREFIX);
    cfg->queue.lease = DEF_LEASE;

    cfg->delivery.threads = DEF_DELIVERY_THREADS;
    cfg->delivery.dflt.kind = ROUTE_DEFAULT;
    cfg->delivery.dflt.tls = strdup(DEF_OUTBOUND_TLS);
    cfg->delivery.smtp_port = DEF_SMTP_PORT;
    cfg->delivery.max_connections_per_domain = DEF_MAX_CONN_PER_DOMAIN;
    cfg->delivery.max_message_rate = DEF_MAX_MESSAGE_RATE;
    cfg->delivery.max_deliveries_per_connection = DEF_MAX_DELIVERIES_PER_CONN;
    cfg->delivery.connect_timeout = DEF_CONNECT_TIMEOUT;
    cfg->delivery.chunking = DEF_CHUNKING;
    cfg->delivery.mta_sts = DEF_MTA_STS;
    cfg->delivery.dane = DEF_DANE;
    cfg->delivery.tls_rpt = DEF_TLS_RPT;
    cfg->delivery.tls_rpt_interval = DEF_TLS_RPT_INTERVAL;
    cfg->delivery.eight_bit_downgrade = DEF_EIGHT_BIT_DOWNGRADE;

    cfg->auth_max_failures = DEF_AUTH_MAX_FAILURES;
    cfg->auth_failure_window = DEF_AUTH_FAILURE_WINDOW;
    cfg->auth_ban_time = DEF_AUTH_BAN_TIME;

    cfg->tls.min_tls_version = strdup(DEF_MIN_TLS_VERSION);
    cfg->tls.prefer_server_ciphers = DEF_PREFER_SERVER_CIPHERS;
    cfg->logging.path = strdup(DEF_LOG_PATH);
    cfg->logging.level = strdup(DEF_LOG_LEVEL);
    return cfg->queue.spool_dir && cfg->queue.backend && cfg->queue.key_prefix &&
           cfg->delivery.dflt.tls && cfg->tls.min_tls_version &&
           cfg->logging.path && cfg->logging.level ? PT_OK : PT_NOMEM;
}

static int route_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cfg_route *)a)->key, ((const struct cfg_route *)b)->key);
}

/* Values that depend on the machine, resolved once the file has run. */
static int config_finish(struct config *cfg)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    if (cfg->delivery.threads == 0)
        cfg->delivery.threads = ncpu > MAX_THREADS ? MAX_THREADS : (int)ncpu;
    /* SMTP workers share the cores with the spool thread and the delivery threads,
     * and parsing SMTP is the cheap part of relaying a message: half the cores.
     * Measured on 2 cores (bench/bench.py, 50 KB): one worker used 5-13% less CPU
     * per message than two at the same throughput, because each wakeup of a busier
     * loop handles more events (fewer context switches per message). */
    if (cfg->smtp_threads == 0)
        cfg->smtp_threads = ncpu / 2 < 1 ? 1 : ncpu / 2 > MAX_THREADS ? MAX_THREADS : (int)(ncpu / 2);
    if (!cfg->delivery.helo_name) {
        char h[256];
        host_name(h);
        if (!(cfg->delivery.helo_name = strdup(h)))
            return PT_NOMEM;
    }
    if (!cfg->shaping) {
        if (!(cfg->shaping = calloc(1, sizeof *cfg->shaping)) ||
            !(cfg->shaping->dflt.key = strdup("default")))
            return PT_NOMEM;
        shaping_rule_init(&cfg->shaping->dflt);
    }
    /* configure_delivery's values are the default rule's unless it sets them */
    struct shaping_rule *d = &cfg->shaping->dflt;
    if (d->connection_limit < 0)
        d->connection_limit = cfg->delivery.max_connections_per_domain;
    if (d->message_rate < 0)
        d->message_rate = cfg->delivery.max_message_rate / 60.0;
    if (d->connection_rate < 0)
        d->connection_rate = 0;
    if (d->max_deliveries_per_connection < 0)
        d->max_deliveries_per_connection = cfg->delivery.max_deliveries_per_connection;
    if (d->connect_timeout < 0)
        d->connect_timeout = cfg->delivery.connect_timeout;
    if (cfg->n_routes > 1)
        qsort(cfg->routes, (size_t)cfg->n_routes, sizeof *cfg->routes, route_cmp);
    if (cfg->n_header_checks) {
        /* each rule compiled once already at its call: only memory can fail here */
        struct header_checks_rule *r = calloc((size_t)cfg->n_header_checks, sizeof *r);
        if (!r)
            return PT_NOMEM;
        for (int i = 0; i < cfg->n_header_checks; i++)
            r[i] = (struct header_checks_rule){ cfg->header_checks[i].pattern,
                                                cfg->header_checks[i].action };
        size_t bad;
        char why[256];
        int rc = header_checks_new(r, (size_t)cfg->n_header_checks, &cfg->header_checks_set,
                                   &bad, why, sizeof why);
        free(r);
        if (rc != PT_OK)
            return PT_NOMEM;
    }
    return PT_OK;
}

/* Appends "FILE:LINE: warning: message\n" to cfg->warnings. */
static int warn(struct config *cfg, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int warn(struct config *cfg, int line, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t old = cfg->warnings ? strlen(cfg->warnings) : 0;
    size_t add = strlen(cfg->path) + strlen(msg) + 40;
    char *w = realloc(cfg->warnings, old + add);
    if (!w)
        return PT_NOMEM;
    snprintf(w + old, add, "%s:%d: warning: %s\n", cfg->path, line, msg);
    cfg->warnings = w;
    return PT_OK;
}

/* Rules between options of different calls, checked once the whole file ran: an
 * option whose feature cannot work as configured is an error naming what is
 * missing; a setting clients will trip on is a warning. */
static int config_validate(struct config *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        if (l->n_auth_mechanisms && !cfg->auth_users_file) {
            snprintf(err, errlen, "%s:%d: start_smtp_listener: option 'auth_mechanisms' needs "
                     "petrel.configure_auth { users_file = ... } (without users AUTH is never "
                     "offered)", cfg->path, l->line);
            return PT_INVALID;
        }
        if (l->n_auth_mechanisms && !l->tls && l->auth_require_tls &&
            warn(cfg, l->line, "start_smtp_listener %s: AUTH is never offered: "
                 "auth_require_tls = true and the listener has no tls; add tls = { cert_file = "
                 "..., key_file = ... } or set auth_require_tls = false", l->listen))
            return PT_NOMEM;
        if (l->port == 465 && (!l->tls || !l->tls->implicit) &&
            warn(cfg, l->line, "start_smtp_listener %s: clients expect implicit TLS (SMTPS) on "
                 "port 465 but this listener %s; set tls = { cert_file = ..., key_file = ..., "
                 "implicit = true }", l->listen, l->tls ? "speaks STARTTLS" : "has no tls"))
            return PT_NOMEM;
    }
    for (int i = 0; i < cfg->n_http; i++) {
        const struct cfg_http_listener *h = &cfg->http[i];
        if (h->tls && (cfg->tls.ciphers || !cfg->tls.prefer_server_ciphers) &&
            warn(cfg, h->line, "start_http_listener %s: configure_tls 'ciphers' and "
                 "'prefer_server_ciphers' apply to SMTP only; HTTPS uses the GnuTLS NORMAL "
                 "priorities (with min_tls_version)", h->listen))
            return PT_NOMEM;
    }
    return PT_OK;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    struct config *cfg = calloc(1, sizeof *cfg);
    lua_State *L = NULL;
    if (!cfg || !(cfg->path = strdup(path)) || config_defaults(cfg) != PT_OK)
        goto nomem;
    if (!(L = luaL_newstate()))
        goto nomem;
    luaL_openlibs(L);
    struct lua_api_ctx *ctx = lua_api_open(L, LUA_API_LOAD, path, config_fns, cfg);
    if (!ctx)
        goto nomem;
    if (lua_api_run(L, ctx, err, errlen) != PT_OK) {
        lua_close(L);
        config_free(cfg);
        return NULL;
    }
    cfg->n_hooks = ctx->n_hooks;
    lua_close(L);
    L = NULL;
    if (config_finish(cfg) != PT_OK)
        goto nomem;
    int rc = config_validate(cfg, err, errlen);
    if (rc == PT_NOMEM)
        goto nomem;
    if (rc != PT_OK) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
nomem:
    if (L)
        lua_close(L);
    config_free(cfg);
    snprintf(err, errlen, "%s:0: out of memory", path);
    return NULL;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    for (int i = 0; i < cfg->n_listeners; i++) {
        struct cfg_listener *l = &cfg->listeners[i];
        free(l->listen);
        free(l->name);
        free(l->hostname);
        free(l->relay_hosts);
        free(l->proxy_trusted_hosts);
        free_strlist(l->auth_mechanisms, l->n_auth_mechanisms);
        free_tls_files(l->tls);
        free(l->tenant);
    }
    for (int i = 0; i < cfg->n_http; i++) {
        struct cfg_http_listener *h = &cfg->http[i];
        free(h->listen);
        free(h->trusted_hosts);
        free_strlist(h->api_keys, h->n_api_keys);
        free_tls_files(h->tls);
    }
    free(cfg->queue.spool_dir);
    free(cfg->queue.backend);
    free(cfg->queue.redis_url);
    free(cfg->queue.key_prefix);
    free(cfg->redis.url);
    free(cfg->redis.key_prefix);
    free_route(&cfg->delivery.dflt);
    shaping_rules_free(cfg->shaping);
    free(cfg->delivery.helo_name);
    free(cfg->delivery.tls_rpt_org);
    free(cfg->delivery.tls_rpt_from);
    for (int i = 0; i < cfg->n_routes; i++)
        free_route(&cfg->routes[i]);
    free(cfg->routes);
    free_strlist(cfg->dns_resolvers, cfg->n_dns_resolvers);
    free(cfg->tls.min_tls_version);
    free(cfg->tls.ciphers);
    for (int i = 0; i < cfg->n_dkim; i++) {
        struct cfg_dkim_key *k = &cfg->dkim[i];
        free(k->domain);
        free(k->selector);
        free(k->key_file);
        free(k->algorithm);
        free_strlist(k->headers, k->n_headers);
    }
    free(cfg->dkim);
    free(cfg->auth_users_file);
    free(cfg->process_user);
    for (int i = 0; i < cfg->n_egress_sources; i++) {
        free(cfg->egress_sources[i].name);
        free(cfg->egress_sources[i].source_address);
        free(cfg->egress_sources[i].ehlo_domain);
        free(cfg->egress_sources[i].warmup);
    }
    free(cfg->egress_sources);
    for (int i = 0; i < cfg->n_egress_pools; i++) {
        free(cfg->egress_pools[i].name);
        free(cfg->egress_pools[i].src);
        free(cfg->egress_pools[i].weight);
    }
    free(cfg->egress_pools);
    for (int i = 0; i < cfg->n_tenants; i++)
        free(cfg->tenants[i].name);
    free(cfg->tenants);
    for (int i = 0; i < cfg->n_header_checks; i++) {
        free(cfg->header_checks[i].pattern);
        free(cfg->header_checks[i].action);
    }
    free(cfg->header_checks);
    header_checks_free(cfg->header_checks_set);
    free(cfg->logging.path);
    free(cfg->logging.level);
    free(cfg->warnings);
    free(cfg);
}

int config_listener_index(const struct config *cfg, const char *host, uint16_t port)
{
    for (int i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].port == port && strcmp(cfg->listeners[i].host, host) == 0)
            return i;
    return -1;
}

static const struct cfg_route *find_route(const struct config *cfg, const char *key)
{
    struct cfg_route probe = { .key = (char *)key };
    return bsearch(&probe, cfg->routes, (size_t)cfg->n_routes, sizeof *cfg->routes, route_cmp);
}

const struct cfg_route *config_route_named(const struct config *cfg, const char *key)
{
    return cfg && cfg->n_routes && key ? find_route(cfg, key) : NULL;
}

int config_parse_route_literal(const char *spec, struct cfg_route *out)
{
    memset(out, 0, sizeof *out);
    int bracketed = 0;
    if (!spec || (spec[0] != '[' && !strchr(spec, ':')) ||
        parse_hostport(spec, out->relay_host, &out->relay_port, &bracketed,
                       DEF_RELAY_PORT) != PT_OK || !out->relay_host[0] || out->relay_port == 0)
        return PT_INVALID;
    out->kind = ROUTE_RELAY;
    out->relay_no_mx = bracketed != 0;
    return PT_OK;
}

const struct cfg_route *config_route_for(const struct config *cfg, const char *domain)
{
    if (!cfg || cfg->n_routes == 0)
        return NULL;
    char d[256];
    size_t n = domain ? strlen(domain) : 0;
    if (n > 0 && domain[n - 1] == '.')
        n--;                               /* "example.com." is example.com */
    if (n > 0 && n < sizeof d) {
        memcpy(d, domain, n);
        d[n] = '\0';
        lowercase(d);
        const struct cfg_route *r = find_route(cfg, d);
        for (char *dot = strchr(d, '.'); !r && dot; dot = strchr(dot + 1, '.'))
            r = find_route(cfg, dot);      /* ".b.c" before ".c" */
        if (r)
            return r;
    }
    return find_route(cfg, "*");
}

struct lua_State *config_lua_worker(const struct config *cfg, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        snprintf(err, errlen, "%s:0: out of memory", cfg->path);
        return NULL;
    }
    luaL_openlibs(L);
    struct lua_api_ctx *ctx = lua_api_open(L, LUA_API_WORKER, cfg->path, config_fns, NULL);
    if (!ctx) {
        snprintf(err, errlen, "%s:0: out of memory", cfg->path);
        lua_close(L);
        return NULL;
    }
    if (lua_api_run(L, ctx, err, errlen) != PT_OK) {
        lua_close(L);
        return NULL;
    }
    return L;
}

int config_lua_handlers(struct lua_State *L, const char *event)
{
    return lua_api_handlers(L, event);
}
