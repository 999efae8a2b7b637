/* Asynchronous MX and address lookups (see dns.h): one c-ares channel per struct dns,
 * driven by its owner's libuv loop, with a TTL cache and one query per name in flight.
 * It never blocks the loop and never runs a callback from inside dns_resolve_*.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>
#include <uv.h>

#include "delivery/dns.h"
#include "delivery/dnsrec.h"
#include "util/idna.h"
#include "util/result.h"

/* Tunables: every default in one place. */
#define DNS_TRY_TIMEOUT_MS 2000 /* first try per server; c-ares doubles it each round */
#define DNS_TRIES 2             /* rounds over the server list: ~6 s for one server */
#define DNS_TTL_MIN 5           /* s: floor for cached positive answers */
#define DNS_TTL_MAX 3600        /* s: ceiling for cached answers */
#define DNS_TTL_NEGATIVE 30     /* s: NXDOMAIN, NODATA, null MX, half-failed A+AAAA */
#define DNS_CACHE_MAX 10000     /* cached names per kind (mail domains; MX hosts) */
#define DNS_MX_SCAN_MAX 256     /* MX records examined in one answer */
#define DNS_OOM_SLOTS 8         /* callbacks owed while no request could be allocated */

#define DNS_NAME_MAX 253

enum { DNS_TYPE_A = 1, DNS_TYPE_CNAME = 5, DNS_TYPE_MX = 15, DNS_TYPE_AAAA = 28 };
enum { DNS_CLASS_IN = 1 };
enum { RCODE_NOERROR = 0, RCODE_NXDOMAIN = 3 };

/* ---- cache entries ------------------------------------------------------------ */

/* One name of one kind: a lookup in flight (waiters attached) or a cached answer.
 * An entry in flight is only freed after c-ares has called back each of its queries,
 * which c-ares does exactly once per query, also from ares_destroy. */
enum ent_kind { ENT_MX, ENT_ADDR, ENT_NKINDS };

struct dns_req;
struct ent;

struct waiter {
    struct waiter *next;
    struct dns_req *req;
    int slot;                  /* host index, or -1 for the MX stage */
};

struct subquery {              /* the c-ares callback argument; lives in its entry */
    struct dns *d;
    struct ent *e;
    int family;                /* AF_INET, AF_INET6; AF_UNSPEC for MX */
};

struct mx_target {
    uint16_t pref;
    char *name;
};

struct ent {
    struct ent *hnext;         /* hash chain */
    struct ent *older, *newer; /* age list of its kind: cached entries only */
    uint32_t hash;
    enum ent_kind kind;
    bool ready;                /* answered (cached, or TEMPFAIL about to be dropped) */
    bool notifying;            /* waiters being told: never evicted meanwhile */
    int pending;               /* c-ares queries in flight */
    enum dns_status status;
    uint32_t ttl;              /* smallest TTL seen, s */
    uint64_t expires;          /* loop time, ms */
    char error[96];
    struct waiter *waiters;
    struct subquery q[2];
    bool nodata;               /* ENT_MX: no MX records -> A/AAAA of the domain */
    bool ad;                   /* ENT_MX: the answer had the AD bit */
    int ntargets;              /* ENT_MX */
    struct mx_target *targets;
    bool part_tempfail;        /* ENT_ADDR: one family failed temporarily */
    int n4, n6;                /* ENT_ADDR */
    struct in_addr a4[DNS_MAX_ADDRS];
    struct in6_addr a6[DNS_MAX_ADDRS];
    char name[];               /* lower case, no trailing dot */
};

/* ---- requests ----------------------------------------------------------------- */

/* One dns_resolve_* call: waits for its MX entry (waiter w[DNS_MAX_HOSTS]), then for
 * one address entry per host (w[i]), then sits in the done queue until its callback
 * has run. Owned by struct dns from the call until the callback returns. */
struct dns_req {
    struct dns_req *next;      /* done queue */
    struct dns *d;
    dns_cb cb;
    void *arg;
    bool fallback;             /* MX request answered by A/AAAA of the domain */
    bool host_only;            /* dns_resolve_host */
    int outstanding;           /* address lookups not yet answered (+1 while starting) */
    char name[DNS_NAME_MAX + 1];
    bool any_tempfail;
    char detail[128];          /* why hosts failed, for the error text */
    struct waiter w[DNS_MAX_HOSTS + 1];
    struct dns_result res;
};

struct dns_sock {
    struct dns_sock *next;
    struct dns *d;
    ares_socket_t fd;
    uv_poll_t poll;
};

/* One dns_query_raw call; owned by struct dns until its callback returns. */
struct dns_raw {
    struct dns_raw *next;      /* raw_done */
    struct dns *d;
    dns_raw_cb cb;
    void *arg;
    bool starting;             /* inside ares_send: an answer now is parked */
    bool answered;
    unsigned char *abuf;       /* parked answer (NULL = the query failed) */
    int alen;
};

struct dns {
    uv_loop_t *loop;
    ares_channel ch;
    uv_timer_t timer;          /* next c-ares timeout */
    uv_idle_t idle;            /* runs finished requests' callbacks */
    struct dns_sock *socks;
    int open_handles;          /* struct dns is freed when the last one has closed */
    bool closing;
    struct ent **buckets;
    uint32_t nbuckets, nent;
    struct ent *oldest[ENT_NKINDS], *newest[ENT_NKINDS];
    uint32_t ncached[ENT_NKINDS];
    struct dns_req *done_head, *done_tail;
    struct dns_raw *raw_done;  /* raw queries answered inside ares_send: owed callbacks */
    bool trusted;              /* resolvers came from the config (dns_new n > 0) */
    struct {
        dns_cb cb;
        void *arg;
    } oom[DNS_OOM_SLOTS];
    int noom;
    uint64_t rng;
    struct dns_result scratch; /* parse output of the answer being handled */
};

static const struct dns_result oom_result = {
    .status = DNS_TEMPFAIL,
    .error = "DNS: out of memory",
};

static void ent_start(struct dns *d, struct ent *e);
static void on_idle(uv_idle_t *h);
static void on_timer(uv_timer_t *t);
static void req_attach(struct dns_req *r, enum ent_kind kind, const char *name, int slot);

/* ---- small helpers ------------------------------------------------------------ */

static uint32_t dns_rng(void *arg)
{
    struct dns *d = arg;
    uint64_t z = (d->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* Uniform in [0, bound): rejection sampling, bounded so a broken source cannot spin. */
static uint32_t rng_below(uint32_t (*rnd)(void *), void *arg, uint32_t bound)
{
    uint32_t threshold = (uint32_t)(0u - bound) % bound;
    uint32_t r = rnd(arg);
    for (int i = 0; i < 8 && r < threshold; i++)
        r = rnd(arg);
    return r % bound;
}

static bool ascii_host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* Copies in to out in lower case without its trailing dot. PT_OK for a syntactically
 * valid host name (labels of 1..63 letters, digits, '-', '_'; at most 253 in all),
 * else PT_INVALID. */
static int name_normalize(const char *in, char out[DNS_NAME_MAX + 1])
{
    size_t len = strnlen(in, DNS_NAME_MAX + 2);
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len > DNS_NAME_MAX)
        return PT_INVALID;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '.') {
            if (label == 0)
                return PT_INVALID;
            label = 0;
        } else if (ascii_host_char(c)) {
            if (++label > 63)
                return PT_INVALID;
        } else {
            return PT_INVALID;
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    out[len] = '\0';
    return label ? PT_OK : PT_INVALID;
}

/* The name a lookup queries: a UTF-8 (SMTPUTF8) domain converted to A-labels
 * (util/idna.h), then normalized. PT_OK, or PT_INVALID with the reason in why. */
static int name_lookup(const char *in, char out[DNS_NAME_MAX + 1], char *why, size_t whylen)
{
    char alabel[DNS_NAME_MAX + 3];
    char err[128];
    if (idna_to_ascii(in, alabel, sizeof alabel, err, sizeof err) != PT_OK) {
        snprintf(why, whylen, "bad destination domain: %s", err);
        return PT_INVALID;
    }
    if (name_normalize(alabel, out) != PT_OK) {
        snprintf(why, whylen, "%s", idna_is_ascii(in) ? "invalid domain name"
                                                      : "bad destination domain: invalid "
                                                        "name after IDNA conversion");
        return PT_INVALID;
    }
    return PT_OK;
}

/* An IPv4 or IPv6 literal, bare or in brackets ("[192.0.2.1]", "[IPv6:2001:db8::1]"):
 * fills ss (port 0). */
static bool ip_literal(const char *s, struct sockaddr_storage *ss)
{
    char buf[64];
    size_t len = strnlen(s, sizeof buf);
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len + 1);
    char *p = buf;
    if (p[0] == '[') {
        if (len < 3 || p[len - 1] != ']')
            return false;
        p[len - 1] = '\0';
        p++;
        if (strncasecmp(p, "IPv6:", 5) == 0)
            p += 5;
    }
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, p, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return true;
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, p, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        return true;
    }
    return false;
}

static void set_v4(struct sockaddr_storage *ss, const struct in_addr *a)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof *ss);
    sin->sin_family = AF_INET;
    sin->sin_addr = *a;
}

static void set_v6(struct sockaddr_storage *ss, const struct in6_addr *a)
{
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_addr = *a;
}

/* Copies src into dst[size], cut short if need be. */
static void text_copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static uint32_t ttl_clamp(uint32_t ttl)
{
    return ttl < DNS_TTL_MIN ? DNS_TTL_MIN : ttl > DNS_TTL_MAX ? DNS_TTL_MAX : ttl;
}

/* ---- ordering ----------------------------------------------------------------- */

void dns_order_mx(struct dns_host *hosts, int n, uint32_t (*rnd)(void *), void *rnd_arg)
{
    /* Insertion sort: stable, and n is at most a few dozen. */
    for (int i = 1; i < n; i++) {
        if (hosts[i].pref >= hosts[i - 1].pref)
            continue;
        struct dns_host tmp = hosts[i];
        int j = i;
        while (j > 0 && hosts[j - 1].pref > tmp.pref) {
            hosts[j] = hosts[j - 1];
            j--;
        }
        hosts[j] = tmp;
    }
    if (!rnd)
        return;
    /* RFC 5321 §5.1: hosts of equal preference in random order (Fisher-Yates). */
    for (int lo = 0; lo < n;) {
        int hi = lo + 1;
        while (hi < n && hosts[hi].pref == hosts[lo].pref)
            hi++;
        for (int i = hi - 1; i > lo; i--) {
            int j = lo + (int)rng_below(rnd, rnd_arg, (uint32_t)(i - lo + 1));
            if (j != i) {
                struct dns_host tmp = hosts[i];
                hosts[i] = hosts[j];
                hosts[j] = tmp;
            }
        }
        lo = hi;
    }
}

/* ---- answer parsing (pure) ---------------------------------------------------- */

static void result_reset(struct dns_result *out)
{
    out->status = DNS_TEMPFAIL;
    out->nhosts = 0;
    out->error[0] = '\0';
}

static int malformed(struct dns_result *out, const char *why)
{
    out->status = DNS_TEMPFAIL;
    out->nhosts = 0;
    snprintf(out->error, sizeof out->error, "malformed DNS answer (%s)", why);
    return PT_INVALID;
}


/* Walks the question and answer sections, checking every length against alen, and
 * returns the smallest TTL among answer records of type or CNAME (how many: *nrec).
 * c-ares parses the records themselves; this only checks framing and reads TTLs,
 * which ares_parse_mx_reply does not report. */
static int scan_answer(const unsigned char *b, int len, unsigned type, uint32_t *min_ttl,
                       int *nrec)
{
    unsigned qd = dnsrec_get16(b + 4), an = dnsrec_get16(b + 6);
    int off = 12;
    for (unsigned i = 0; i < qd; i++) {
        if (dnsrec_skip_name(b, len, &off) != PT_OK || off + 4 > len)
            return PT_INVALID;
        off += 4;
    }
    uint32_t ttl = UINT32_MAX;
    int n = 0;
    for (unsigned i = 0; i < an; i++) {
        if (dnsrec_skip_name(b, len, &off) != PT_OK || off + 10 > len)
            return PT_INVALID;
        unsigned rtype = dnsrec_get16(b + off);
        uint32_t rttl = (uint32_t)b[off + 4] << 24 | (uint32_t)b[off + 5] << 16 |
                        (uint32_t)b[off + 6] << 8 | b[off + 7];
        unsigned rdlen = dnsrec_get16(b + off + 8);
        off += 10;
        if (rdlen > (unsigned)(len - off))
            return PT_INVALID;
        off += (int)rdlen;
        if (rtype == type || rtype == DNS_TYPE_CNAME) {
            if (rttl > 0x7fffffffu) /* RFC 2181 §8: treat as zero */
                rttl = 0;
            if (rttl < ttl)
                ttl = rttl;
            n++;
        }
    }
    *min_ttl = n ? ttl : 0;
    *nrec = n;
    return PT_OK;
}

/* Decides from the header alone where it can: *decided is set with out->status for
 * NXDOMAIN, server failures and broken headers; the return value is what the public
 * parser returns then. */
static int answer_rcode(const unsigned char *b, int len, struct dns_result *out,
                        bool *decided)
{
    *decided = true;
    if (!b || len < 12)
        return malformed(out, "short");
    if (!(b[2] & 0x80))
        return malformed(out, "not a response");
    unsigned rcode = b[3] & 0x0f;
    if (rcode == RCODE_NOERROR) {
        *decided = false;
        return PT_OK;
    }
    if (rcode == RCODE_NXDOMAIN) {
        out->status = DNS_NOTFOUND;
        snprintf(out->error, sizeof out->error, "NXDOMAIN");
        return PT_OK;
    }
    static const char *const names[] = {
        [1] = "FORMERR", [2] = "SERVFAIL", [4] = "NOTIMP", [5] = "REFUSED"};
    const char *name = rcode < sizeof names / sizeof names[0] ? names[rcode] : NULL;
    out->status = DNS_TEMPFAIL;
    if (name)
        snprintf(out->error, sizeof out->error, "DNS server answered %s", name);
    else
        snprintf(out->error, sizeof out->error, "DNS server answered rcode %u", rcode);
    return PT_OK;
}

/* Keeps each host once, with the DNS_MAX_HOSTS lowest preferences: when full, a
 * better record replaces the worst one kept. */
static void mx_keep(struct dns_result *out, const char *name, uint16_t pref)
{
    for (int i = 0; i < out->nhosts; i++) {
        if (strcmp(out->hosts[i].name, name) == 0) { /* listed twice: best pref wins */
            if (pref < out->hosts[i].pref)
                out->hosts[i].pref = pref;
            return;
        }
    }
    int slot = out->nhosts;
    if (slot == DNS_MAX_HOSTS) {
        slot = 0;
        for (int i = 1; i < DNS_MAX_HOSTS; i++)
            if (out->hosts[i].pref >= out->hosts[slot].pref)
                slot = i;
        if (pref >= out->hosts[slot].pref)
            return;
    } else {
        out->nhosts++;
    }
    struct dns_host *h = &out->hosts[slot];
    text_copy(h->name, sizeof h->name, name);
    h->pref = pref;
    h->naddr = 0;
}

int dns_parse_mx_answer(const unsigned char *abuf, int alen, struct dns_result *out,
                        uint32_t *ttl)
{
    bool decided;
    uint32_t min_ttl = 0;
    int nrec = 0;
    if (ttl)
        *ttl = 0;
    result_reset(out);
    int rc = answer_rcode(abuf, alen, out, &decided);
    if (decided)
        return rc;
    if (scan_answer(abuf, alen, DNS_TYPE_MX, &min_ttl, &nrec) != PT_OK)
        return malformed(out, "bad record framing");
    if (ttl)
        *ttl = min_ttl;
    out->status = DNS_OK;
    if (nrec == 0)
        return PT_OK; /* NODATA */

    struct ares_mx_reply *mx = NULL;
    int st = ares_parse_mx_reply(abuf, alen, &mx);
    if (st == ARES_ENODATA)
        return PT_OK; /* e.g. only a CNAME */
    if (st == ARES_ENOMEM) {
        out->status = DNS_TEMPFAIL;
        snprintf(out->error, sizeof out->error, "DNS: out of memory");
        return PT_NOMEM;
    }
    if (st != ARES_SUCCESS)
        return malformed(out, ares_strerror(st));

    int nnull = 0, nbad = 0, scanned = 0;
    char bad[64] = "";
    for (struct ares_mx_reply *m = mx; m && scanned < DNS_MX_SCAN_MAX; m = m->next) {
        char name[DNS_NAME_MAX + 1];
        struct sockaddr_storage ss;
        scanned++;
        if (!m->host || m->host[0] == '\0' || strcmp(m->host, ".") == 0) {
            nnull++;
        } else if (ip_literal(m->host, &ss) || name_normalize(m->host, name) != PT_OK) {
            if (nbad++ == 0)
                snprintf(bad, sizeof bad, "%.40s is %s", m->host,
                         ip_literal(m->host, &ss) ? "an IP address" : "not a host name");
        } else {
            mx_keep(out, name, m->priority);
        }
    }
    ares_free_data(mx);

    if (scanned == 0)
        return PT_OK; /* only other records (a CNAME chain): NODATA */
    if (out->nhosts > 0) {
        dns_order_mx(out->hosts, out->nhosts, NULL, NULL);
        return PT_OK;
    }
    if (nnull > 0) {
        out->status = DNS_NULLMX;
        snprintf(out->error, sizeof out->error, "null MX: domain accepts no mail (RFC 7505)");
    } else {
        out->status = DNS_NOTFOUND;
        snprintf(out->error, sizeof out->error, "no usable MX host (%s)", bad);
    }
    return PT_OK;
}

int dns_parse_addr_answer(const unsigned char *abuf, int alen, int family,
                          struct dns_result *out, uint32_t *ttl)
{
    bool decided;
    uint32_t min_ttl = 0;
    int nrec = 0;
    if (ttl)
        *ttl = 0;
    result_reset(out);
    if (family != AF_INET && family != AF_INET6) {
        snprintf(out->error, sizeof out->error, "bad address family");
        return PT_INVALID;
    }
    const char *rr = family == AF_INET ? "A" : "AAAA";
    int rc = answer_rcode(abuf, alen, out, &decided);
    if (decided)
        return rc;
    if (scan_answer(abuf, alen, family == AF_INET ? DNS_TYPE_A : DNS_TYPE_AAAA, &min_ttl,
                    &nrec) != PT_OK)
        return malformed(out, "bad record framing");

    struct dns_host *h = &out->hosts[0];
    h->name[0] = '\0';
    h->pref = 0;
    h->naddr = 0;
    int n = DNS_MAX_ADDRS, st = ARES_ENODATA;
    if (nrec > 0 && family == AF_INET) {
        struct ares_addrttl at[DNS_MAX_ADDRS];
        st = ares_parse_a_reply(abuf, alen, NULL, at, &n);
        for (int i = 0; st == ARES_SUCCESS && i < n && i < DNS_MAX_ADDRS; i++) {
            set_v4(&h->addrs[h->naddr++], &at[i].ipaddr);
            if (at[i].ttl >= 0 && (uint32_t)at[i].ttl < min_ttl)
                min_ttl = (uint32_t)at[i].ttl;
        }
    } else if (nrec > 0) {
        struct ares_addr6ttl at[DNS_MAX_ADDRS];
        st = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
        for (int i = 0; st == ARES_SUCCESS && i < n && i < DNS_MAX_ADDRS; i++) {
            struct in6_addr a;
            memcpy(&a, &at[i].ip6addr, sizeof a);
            set_v6(&h->addrs[h->naddr++], &a);
            if (at[i].ttl >= 0 && (uint32_t)at[i].ttl < min_ttl)
                min_ttl = (uint32_t)at[i].ttl;
        }
    }
    if (st == ARES_ENOMEM) {
        snprintf(out->error, sizeof out->error, "DNS: out of memory");
        return PT_NOMEM;
    }
    if (st != ARES_SUCCESS && st != ARES_ENODATA)
        return malformed(out, ares_strerror(st));
    if (h->naddr == 0) {
        out->status = DNS_NOTFOUND;
        snprintf(out->error, sizeof out->error, "no %s record", rr);
        return PT_OK;
    }
    out->status = DNS_OK;
    out->nhosts = 1;
    if (ttl)
        *ttl = min_ttl;
    return PT_OK;
}

/* ---- the cache ---------------------------------------------------------------- */

static uint32_t ent_hash(enum ent_kind kind, const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)kind;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static int ent_table_grow(struct dns *d)
{
    uint32_t nb = d->nbuckets ? d->nbuckets * 2 : 256;
    struct ent **b = calloc(nb, sizeof *b);
    if (!b)
        return PT_NOMEM;
    for (uint32_t i = 0; i < d->nbuckets; i++) {
        struct ent *e = d->buckets[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = nb;
    return PT_OK;
}

static void ent_unhash(struct dns *d, struct ent *e)
{
    struct ent **pp = &d->buckets[e->hash & (d->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = e->hnext;
        d->nent--;
    }
    e->hnext = NULL;
}

static void age_append(struct dns *d, struct ent *e)
{
    e->newer = NULL;
    e->older = d->newest[e->kind];
    if (e->older)
        e->older->newer = e;
    else
        d->oldest[e->kind] = e;
    d->newest[e->kind] = e;
    d->ncached[e->kind]++;
}

static void age_remove(struct dns *d, struct ent *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        d->oldest[e->kind] = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        d->newest[e->kind] = e->older;
    e->older = e->newer = NULL;
    d->ncached[e->kind]--;
}

static void ent_free(struct ent *e)
{
    for (int i = 0; i < e->ntargets; i++)
        free(e->targets[i].name);
    free(e->targets);
    free(e);
}

/* Drops a cached entry (expired or evicted). */
static void ent_drop(struct dns *d, struct ent *e)
{
    ent_unhash(d, e);
    age_remove(d, e);
    ent_free(e);
}

static void ent_evict(struct dns *d, enum ent_kind kind)
{
    struct ent *e = d->oldest[kind];
    while (e && d->ncached[kind] > DNS_CACHE_MAX) {
        struct ent *newer = e->newer;
        if (!e->notifying)
            ent_drop(d, e);
        e = newer;
    }
}

/* The entry for (kind, name): in flight, or cached and fresh; NULL if neither. */
static struct ent *ent_find(struct dns *d, enum ent_kind kind, const char *name, uint32_t h)
{
    if (!d->nbuckets)
        return NULL;
    for (struct ent *e = d->buckets[h & (d->nbuckets - 1)]; e; e = e->hnext) {
        if (e->hash != h || e->kind != kind || strcmp(e->name, name) != 0)
            continue;
        if (e->ready && !e->notifying && uv_now(d->loop) >= e->expires) {
            ent_drop(d, e);
            return NULL;
        }
        return e;
    }
    return NULL;
}

static struct ent *ent_new(struct dns *d, enum ent_kind kind, const char *name, uint32_t h)
{
    if (d->nent >= d->nbuckets && ent_table_grow(d) != PT_OK && !d->nbuckets)
        return NULL;
    size_t len = strlen(name);
    struct ent *e = calloc(1, sizeof *e + len + 1);
    if (!e)
        return NULL;
    memcpy(e->name, name, len + 1);
    e->hash = h;
    e->kind = kind;
    e->status = DNS_TEMPFAIL;
    e->ttl = UINT32_MAX;
    e->hnext = d->buckets[h & (d->nbuckets - 1)];
    d->buckets[h & (d->nbuckets - 1)] = e;
    d->nent++;
    return e;
}

/* ---- requests ----------------------------------------------------------------- */

/* Queues the finished request; the idle handle runs its callback on a later turn of
 * the loop (dns_free runs what is left synchronously). */
static void req_complete(struct dns_req *r)
{
    struct dns *d = r->d;
    r->next = NULL;
    if (d->done_tail)
        d->done_tail->next = r;
    else
        d->done_head = r;
    d->done_tail = r;
    if (!d->closing)
        uv_idle_start(&d->idle, on_idle);
}

static void req_fail(struct dns_req *r, enum dns_status st, const char *what, const char *why)
{
    r->res.status = st;
    r->res.nhosts = 0;
    snprintf(r->res.error, sizeof r->res.error, "%.60s: %.96s", what, why);
    req_complete(r);
}

static void detail_add(struct dns_req *r, const char *host, const char *why)
{
    size_t len = strlen(r->detail);
    if (len + 4 >= sizeof r->detail)
        return;
    snprintf(r->detail + len, sizeof r->detail - len, "%s%s: %s", len ? "; " : "", host, why);
}

/* All address lookups are in: keep the hosts that have an address, in order. */
static void req_finish(struct dns_req *r)
{
    struct dns_result *res = &r->res;
    int kept = 0;
    for (int i = 0; i < res->nhosts; i++) {
        if (res->hosts[i].naddr == 0)
            continue;
        if (kept != i)
            res->hosts[kept] = res->hosts[i];
        kept++;
    }
    res->nhosts = kept;
    if (kept > 0) {
        res->status = DNS_OK;
        res->error[0] = '\0';
    } else {
        res->status = r->any_tempfail ? DNS_TEMPFAIL : DNS_NOTFOUND;
        snprintf(res->error, sizeof res->error, "%.60s: %s (%.68s)", r->name,
                 r->host_only  ? "no address"
                 : r->fallback ? "no MX and no address"
                               : "no address for any MX host",
                 r->detail);
    }
    req_complete(r);
}

static void req_addr_done(struct dns_req *r)
{
    if (--r->outstanding == 0)
        req_finish(r);
}

/* Fills host slot from an answered address entry, the families interleaved IPv6
 * first (RFC 8305 §4: v6, v4, v6, v4...; the client races them, smtp/happy.h); IPv6
 * keeps up to half the slots when there are both. */
static void req_on_addr(struct dns_req *r, int slot, const struct ent *e)
{
    struct dns_host *h = &r->res.hosts[slot];
    h->naddr = 0;
    if (e->status == DNS_OK) {
        int n6 = e->n6 < DNS_MAX_ADDRS / 2 ? e->n6 : DNS_MAX_ADDRS / 2;
        int n4 = e->n4 < DNS_MAX_ADDRS - n6 ? e->n4 : DNS_MAX_ADDRS - n6;
        n6 = e->n6 < DNS_MAX_ADDRS - n4 ? e->n6 : DNS_MAX_ADDRS - n4;
        for (int i = 0; i < n4 || i < n6; i++) {
            if (i < n6)
                set_v6(&h->addrs[h->naddr++], &e->a6[i]);
            if (i < n4)
                set_v4(&h->addrs[h->naddr++], &e->a4[i]);
        }
    } else {
        if (e->status == DNS_TEMPFAIL)
            r->any_tempfail = true;
        if (r->fallback)
            text_copy(r->detail, sizeof r->detail, e->error);
        else
            detail_add(r, h->name, e->error);
    }
    req_addr_done(r);
}

/* The MX answer is in: either the verdict, or the hosts whose addresses come next. */
static void req_on_mx(struct dns_req *r, const struct ent *e)
{
    struct dns_result *res = &r->res;
    if (e->status != DNS_OK) {
        req_fail(r, e->status, r->name, e->error);
        return;
    }
    res->mx_secure = e->ad;
    if (e->nodata) {
        r->fallback = true;
        res->nhosts = 1;
        text_copy(res->hosts[0].name, sizeof res->hosts[0].name, r->name);
        res->hosts[0].pref = 0;
    } else {
        res->nhosts = e->ntargets < DNS_MAX_HOSTS ? e->ntargets : DNS_MAX_HOSTS;
        for (int i = 0; i < res->nhosts; i++) {
            text_copy(res->hosts[i].name, sizeof res->hosts[i].name, e->targets[i].name);
            res->hosts[i].pref = e->targets[i].pref;
        }
        dns_order_mx(res->hosts, res->nhosts, dns_rng, r->d);
    }
    r->outstanding = 1; /* held while starting, so an early answer cannot finish us */
    for (int i = 0; i < res->nhosts; i++) {
        res->hosts[i].naddr = 0;
        r->outstanding++;
        req_attach(r, ENT_ADDR, res->hosts[i].name, i);
    }
    req_addr_done(r);
}

static void req_on_ent(struct dns_req *r, int slot, const struct ent *e)
{
    if (slot < 0)
        req_on_mx(r, e);
    else
        req_on_addr(r, slot, e);
}

/* Joins the lookup of (kind, name): a fresh cached answer applies at once, a lookup in
 * flight gains a waiter, otherwise a new lookup starts. */
static void req_attach(struct dns_req *r, enum ent_kind kind, const char *name, int slot)
{
    struct dns *d = r->d;
    uint32_t h = ent_hash(kind, name);
    struct ent *e = ent_find(d, kind, name, h);
    if (e && e->ready) {
        req_on_ent(r, slot, e);
        return;
    }
    bool start = false;
    if (!e) {
        e = ent_new(d, kind, name, h);
        if (!e) {
            struct ent oom = {.kind = kind, .status = DNS_TEMPFAIL, .error = "out of memory"};
            req_on_ent(r, slot, &oom);
            return;
        }
        start = true;
    }
    struct waiter *w = &r->w[slot < 0 ? DNS_MAX_HOSTS : slot];
    w->req = r;
    w->slot = slot;
    w->next = e->waiters;
    e->waiters = w;
    if (start)
        ent_start(d, e);
}

/* ---- lookups on c-ares -------------------------------------------------------- */

/* The entry has its answer: cache it (unless TEMPFAIL) and tell its waiters. */
static void ent_settle(struct dns *d, struct ent *e)
{
    e->ready = true;
    if (e->status == DNS_TEMPFAIL) {
        ent_unhash(d, e);
    } else {
        uint32_t ttl = e->status == DNS_OK && !e->nodata ? ttl_clamp(e->ttl) : DNS_TTL_NEGATIVE;
        if (e->part_tempfail && ttl > DNS_TTL_NEGATIVE)
            ttl = DNS_TTL_NEGATIVE;
        e->expires = uv_now(d->loop) + (uint64_t)ttl * 1000;
        age_append(d, e);
    }
    e->notifying = true;
    struct waiter *w = e->waiters;
    e->waiters = NULL;
    while (w) {
        struct waiter *next = w->next;
        req_on_ent(w->req, w->slot, e);
        w = next;
    }
    e->notifying = false;
    if (e->status == DNS_TEMPFAIL)
        ent_free(e);
    else
        ent_evict(d, e->kind);
}

static const char *ares_status_text(struct dns *d, int status)
{
    if (d->closing || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
        return "shutting down";
    switch (status) {
    case ARES_ETIMEOUT:
        return "DNS timeout";
    case ARES_ESERVFAIL:
        return "DNS server answered SERVFAIL";
    case ARES_EREFUSED:
        return "DNS server answered REFUSED";
    case ARES_ECONNREFUSED: /* c-ares 1.18 also ends SERVFAIL/REFUSED this way */
        return "DNS servers failed (SERVFAIL, REFUSED or unreachable)";
    case ARES_EBADRESP:
        return "malformed DNS answer";
    default:
        return ares_strerror(status);
    }
}

static void ent_on_mx(struct dns *d, struct ent *e, const struct dns_result *s, uint32_t ttl)
{
    e->status = s->status;
    text_copy(e->error, sizeof e->error, s->error);
    if (s->status != DNS_OK)
        return;
    e->ttl = ttl;
    e->nodata = s->nhosts == 0;
    if (e->nodata)
        return;
    e->targets = calloc((size_t)s->nhosts, sizeof *e->targets);
    if (!e->targets)
        goto oom;
    for (int i = 0; i < s->nhosts; i++) {
        e->targets[i].pref = s->hosts[i].pref;
        e->targets[i].name = strdup(s->hosts[i].name);
        if (!e->targets[i].name)
            goto oom;
        e->ntargets++;
    }
    return;
oom:
    e->status = DNS_TEMPFAIL;
    snprintf(e->error, sizeof e->error, "out of memory");
}

/* One family of an address entry answered; the other may still be in flight. */
static void ent_on_addr(struct ent *e, int family, const struct dns_result *s, uint32_t ttl)
{
    if (s->status == DNS_OK) {
        const struct dns_host *h = &s->hosts[0];
        for (int i = 0; i < h->naddr; i++) {
            if (family == AF_INET && e->n4 < DNS_MAX_ADDRS)
                e->a4[e->n4++] = ((const struct sockaddr_in *)&h->addrs[i])->sin_addr;
            else if (family == AF_INET6 && e->n6 < DNS_MAX_ADDRS)
                e->a6[e->n6++] = ((const struct sockaddr_in6 *)&h->addrs[i])->sin6_addr;
        }
        if (ttl < e->ttl)
            e->ttl = ttl;
    } else if (s->status == DNS_TEMPFAIL) {
        e->part_tempfail = true;
        text_copy(e->error, sizeof e->error, s->error);
    } else if (!e->part_tempfail && (!e->error[0] || strcmp(s->error, "NXDOMAIN") == 0)) {
        text_copy(e->error, sizeof e->error, s->error);
    }
    if (e->n4 + e->n6 > 0)
        e->status = DNS_OK;
    else if (e->part_tempfail)
        e->status = DNS_TEMPFAIL;
    else
        e->status = DNS_NOTFOUND;
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct subquery *q = arg;
    struct dns *d = q->d;
    struct ent *e = q->e;
    struct dns_result *s = &d->scratch;
    uint32_t ttl = 0;

    if (abuf && alen > 0 && status != ARES_EDESTRUCTION && status != ARES_ECANCELLED) {
        if (e->kind == ENT_MX) {
            dns_parse_mx_answer(abuf, alen, s, &ttl);
            e->ad = alen >= 4 && (abuf[3] & 0x20) != 0;
        }
        else
            dns_parse_addr_answer(abuf, alen, q->family, s, &ttl);
    } else {
        result_reset(s);
        text_copy(s->error, sizeof s->error, ares_status_text(d, status));
    }
    if (e->kind == ENT_MX)
        ent_on_mx(d, e, s, ttl);
    else
        ent_on_addr(e, q->family, s, ttl);
    if (--e->pending == 0)
        ent_settle(d, e);
}

/* Sends the entry's queries: MX, or A and AAAA in parallel. c-ares may call back
 * before ares_query returns, so the entry is not touched after the last call. */
static void ent_start(struct dns *d, struct ent *e)
{
    if (d->closing) {
        e->status = DNS_TEMPFAIL;
        snprintf(e->error, sizeof e->error, "shutting down");
        ent_settle(d, e);
        return;
    }
    e->q[0] = (struct subquery){.d = d, .e = e, .family = AF_UNSPEC};
    if (e->kind == ENT_MX) {
        e->pending = 1;
        /* with AD in the query, as dns_query_raw: the MX RRset's DNSSEC status
         * decides whether DANE applies (RFC 7672 §2.2.1) */
        unsigned char *q = NULL;
        int qlen = 0;
        if (ares_create_query(e->name, DNS_CLASS_IN, DNS_TYPE_MX, 0, 1, &q, &qlen, 1232) ==
                ARES_SUCCESS && qlen >= 12) {
            q[3] |= 0x20;
            ares_send(d->ch, q, qlen, on_answer, &e->q[0]);
        } else {
            ares_query(d->ch, e->name, DNS_CLASS_IN, DNS_TYPE_MX, on_answer, &e->q[0]);
        }
        if (q)
            ares_free_string(q);
        return;
    }
    e->q[0].family = AF_INET;
    e->q[1] = (struct subquery){.d = d, .e = e, .family = AF_INET6};
    e->pending = 2;
    ares_query(d->ch, e->name, DNS_CLASS_IN, DNS_TYPE_A, on_answer, &e->q[0]);
    ares_query(d->ch, e->name, DNS_CLASS_IN, DNS_TYPE_AAAA, on_answer, &e->q[1]);
}

/* ---- c-ares on the libuv loop ------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    struct dns *d = h->data;
    if (--d->open_handles == 0) {
        free(d->buckets);
        free(d);
    }
}

static void on_sock_closed(uv_handle_t *h)
{
    struct dns_sock *s = h->data;
    struct dns *d = s->d;
    free(s);
    if (--d->open_handles == 0) {
        free(d->buckets);
        free(d);
    }
}

static void arm_timer(struct dns *d)
{
    struct timeval tv, *t;
    if (d->closing)
        return;
    t = ares_timeout(d->ch, NULL, &tv);
    if (!t) {
        uv_timer_stop(&d->timer);
        return;
    }
    uint64_t ms = (uint64_t)t->tv_sec * 1000 + ((uint64_t)t->tv_usec + 999) / 1000;
    uv_timer_start(&d->timer, on_timer, ms, 0);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct dns_sock *s = p->data;
    struct dns *d = s->d;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    /* On an error c-ares must see the socket to notice and close it. */
    if (status < 0 || (events & UV_READABLE))
        rfd = s->fd;
    if (status < 0 || (events & UV_WRITABLE))
        wfd = s->fd;
    ares_process_fd(d->ch, rfd, wfd); /* may close s */
    arm_timer(d);
}

static void on_timer(uv_timer_t *t)
{
    struct dns *d = t->data;
    ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_timer(d);
}

static void sock_close(struct dns *d, struct dns_sock *s)
{
    struct dns_sock **pp = &d->socks;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* c-ares tells which sockets it wants watched; one uv_poll_t each. It calls with
 * (0, 0) before it closes a socket, so the poll stops before the fd is reused. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct dns_sock *s = d->socks;
    while (s && s->fd != fd)
        s = s->next;
    if (!readable && !writable) {
        if (s)
            sock_close(d, s);
        return;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return; /* the query times out: TEMPFAIL */
        if (uv_poll_init_socket(d->loop, &s->poll, fd) != 0) {
            free(s);
            return;
        }
        s->d = d;
        s->fd = fd;
        s->poll.data = s;
        s->next = d->socks;
        d->socks = s;
        d->open_handles++;
    }
    uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                  on_poll);
}

/* Runs one owed callback; false when none is left. */
static bool dispatch_one(struct dns *d)
{
    if (d->noom > 0) {
        d->noom--;
        d->oom[d->noom].cb(d->oom[d->noom].arg, &oom_result);
        return true;
    }
    struct dns_raw *w = d->raw_done;
    if (w) {
        d->raw_done = w->next;
        w->cb(w->arg, w->abuf, w->abuf ? w->alen : 0);
        free(w->abuf);
        free(w);
        return true;
    }
    struct dns_req *r = d->done_head;
    if (!r)
        return false;
    d->done_head = r->next;
    if (!d->done_head)
        d->done_tail = NULL;
    r->cb(r->arg, &r->res);
    free(r);
    return true;
}

static void on_idle(uv_idle_t *h)
{
    struct dns *d = h->data;
    /* Only what was queued before this turn: callbacks that queue more (cache hits)
     * wait for the next turn instead of starving the loop. */
    int n = d->noom;
    for (struct dns_req *r = d->done_head; r; r = r->next)
        n++;
    for (struct dns_raw *w = d->raw_done; w; w = w->next)
        n++;
    while (n-- > 0 && !d->closing && dispatch_one(d))
        ;
    if (!d->closing && !d->done_head && !d->raw_done && d->noom == 0)
        uv_idle_stop(h);
}

/* ---- public API --------------------------------------------------------------- */

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_status;

static void ares_global_init(void)
{
    ares_init_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* "ip", "ip:port", "[v6]:port" -> one comma-separated list for c-ares. */
static int servers_csv(const char *const *resolvers, int n, char *out, size_t outlen,
                       char *err, size_t errlen)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *r = resolvers[i];
        size_t rl = r ? strlen(r) : 0;
        if (rl == 0 || rl > 64 || strpbrk(r, ", \t\r\n")) {
            snprintf(err, errlen, "DNS resolver \"%.64s\": not an address", r ? r : "");
            return PT_INVALID;
        }
        if (len + rl + 2 > outlen) {
            snprintf(err, errlen, "too many DNS resolvers");
            return PT_TOOLONG;
        }
        len += (size_t)snprintf(out + len, outlen - len, "%s%s", i ? "," : "", r);
    }
    return PT_OK;
}

struct dns *dns_new(uv_loop_t *loop, const char *const *resolvers, int n, char *err,
                    size_t errlen)
{
    char csv[1024];
    if (n < 0 || (n > 0 && !resolvers)) {
        snprintf(err, errlen, "DNS: bad resolver list");
        return NULL;
    }
    if (n > 0 && servers_csv(resolvers, n, csv, sizeof csv, err, errlen) != PT_OK)
        return NULL;
    pthread_once(&ares_once, ares_global_init);
    if (ares_init_status != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(ares_init_status));
        return NULL;
    }
    struct dns *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "DNS: out of memory");
        return NULL;
    }
    d->loop = loop;
    d->trusted = n > 0;
    if (getrandom(&d->rng, sizeof d->rng, GRND_NONBLOCK) != (ssize_t)sizeof d->rng)
        d->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)d;

    /* ares_query never applies search domains: names are always absolute. */
    struct ares_options opts = {
        .flags = ARES_FLAG_NOSEARCH,
        .timeout = DNS_TRY_TIMEOUT_MS,
        .tries = DNS_TRIES,
        .ndomains = 0,
        .sock_state_cb = on_sock_state,
        .sock_state_cb_data = d,
    };
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_DOMAINS |
               ARES_OPT_SOCK_STATE_CB;
    int st = ares_init_options(&d->ch, &opts, mask);
    if (st != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(st));
        free(d);
        return NULL;
    }
    if (n > 0 && (st = ares_set_servers_ports_csv(d->ch, csv)) != ARES_SUCCESS) {
        snprintf(err, errlen, "DNS resolvers \"%.80s\": %s", csv, ares_strerror(st));
        ares_destroy(d->ch);
        free(d);
        return NULL;
    }
    if (ent_table_grow(d) != PT_OK) {
        snprintf(err, errlen, "DNS: out of memory");
        ares_destroy(d->ch);
        free(d);
        return NULL;
    }
    uv_timer_init(loop, &d->timer);
    uv_idle_init(loop, &d->idle);
    d->timer.data = d;
    d->idle.data = d;
    d->open_handles = 2;
    return d;
}

void dns_free(struct dns *d)
{
    if (!d || d->closing)
        return;
    d->closing = true;
    /* Every query calls back with ARES_EDESTRUCTION: entries settle as TEMPFAIL
     * "shutting down", their requests complete, and c-ares reports each socket
     * closed (0, 0) so the polls go. */
    ares_destroy(d->ch);
    d->ch = NULL;
    while (d->socks)
        sock_close(d, d->socks);
    /* Callbacks may call dns_resolve_* on d: those complete at once (closing). */
    while (dispatch_one(d))
        ;
    for (uint32_t i = 0; i < d->nbuckets; i++) {
        struct ent *e = d->buckets[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            ent_free(e);
        }
        d->buckets[i] = NULL;
    }
    uv_close((uv_handle_t *)&d->timer, on_handle_closed);
    uv_close((uv_handle_t *)&d->idle, on_handle_closed);
}

static struct dns_req *req_new(struct dns *d, const char *name, dns_cb cb, void *arg)
{
    struct dns_req *r = calloc(1, sizeof *r);
    if (!r) {
        if (d->noom < DNS_OOM_SLOTS) {
            d->oom[d->noom].cb = cb;
            d->oom[d->noom].arg = arg;
            d->noom++;
            if (!d->closing)
                uv_idle_start(&d->idle, on_idle);
        } else {
            cb(arg, &oom_result); /* last resort: nowhere left to park the call */
        }
        return NULL;
    }
    r->d = d;
    r->cb = cb;
    r->arg = arg;
    r->res.status = DNS_TEMPFAIL;
    /* Until validated, the name is only used in error text: printable ASCII only. */
    size_t i = 0;
    for (; name && name[i] && i < sizeof r->name - 1; i++)
        r->name[i] = name[i] > 0x20 && name[i] < 0x7f ? name[i] : '?';
    r->name[i] = '\0';
    return r;
}

void dns_resolve_mx(struct dns *d, const char *domain, dns_cb cb, void *arg)
{
    struct dns_req *r = req_new(d, domain, cb, arg);
    if (!r)
        return;
    char name[DNS_NAME_MAX + 1], why[160];
    if (!domain || name_lookup(domain, name, why, sizeof why) != PT_OK) {
        req_fail(r, DNS_NOTFOUND, r->name, domain ? why : "invalid domain name");
        return;
    }
    memcpy(r->name, name, sizeof name);
    req_attach(r, ENT_MX, name, -1);
    arm_timer(d);
}

void dns_resolve_host(struct dns *d, const char *host, dns_cb cb, void *arg)
{
    struct dns_req *r = req_new(d, host, cb, arg);
    if (!r)
        return;
    struct dns_result *res = &r->res;
    struct sockaddr_storage ss;
    if (host && ip_literal(host, &ss)) {
        res->status = DNS_OK;
        res->nhosts = 1;
        res->hosts[0].pref = 0;
        res->hosts[0].naddr = 1;
        res->hosts[0].addrs[0] = ss;
        text_copy(res->hosts[0].name, sizeof res->hosts[0].name, host);
        req_complete(r);
        return;
    }
    char name[DNS_NAME_MAX + 1], why[160];
    if (!host || name_lookup(host, name, why, sizeof why) != PT_OK) {
        req_fail(r, DNS_NOTFOUND, r->name, host ? why : "invalid host name");
        return;
    }
    memcpy(r->name, name, sizeof name);
    r->fallback = true;
    r->host_only = true;
    res->nhosts = 1;
    memcpy(res->hosts[0].name, name, sizeof name);
    r->outstanding = 2; /* the lookup, and the hold while starting it */
    req_attach(r, ENT_ADDR, name, 0);
    req_addr_done(r);
    arm_timer(d);
}

/* ---- raw queries (TXT, TLSA) ------------------------------------------------------ */

static void raw_park(struct dns *d, struct dns_raw *w, const unsigned char *abuf, int alen)
{
    w->abuf = NULL;
    if (abuf && alen > 0 && (w->abuf = malloc((size_t)alen)) != NULL) {
        memcpy(w->abuf, abuf, (size_t)alen);
        w->alen = alen;
    }
    w->next = d->raw_done;
    d->raw_done = w;
    if (!d->closing)
        uv_idle_start(&d->idle, on_idle);
}

static void on_raw_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_raw *w = arg;
    struct dns *d = w->d;
    (void)timeouts;
    bool ok = status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND ||
              status == ARES_ESERVFAIL || status == ARES_EREFUSED || status == ARES_EFORMERR;
    if (!ok || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED)
        abuf = NULL;
    w->answered = true;
    if (w->starting || d->closing) {
        raw_park(d, w, abuf, alen);
        return;
    }
    w->cb(w->arg, abuf, abuf ? alen : 0);
    free(w);
}

void dns_query_raw(struct dns *d, const char *name, int type, dns_raw_cb cb, void *arg)
{
    struct dns_raw *w = calloc(1, sizeof *w);
    if (!w) {
        cb(arg, NULL, 0);   /* documented: only when out of memory */
        return;
    }
    w->d = d;
    w->cb = cb;
    w->arg = arg;
    char norm[DNS_NAME_MAX + 1], why[160];
    unsigned char *q = NULL;
    int qlen = 0;
    if (d->closing || !name || name_lookup(name, norm, why, sizeof why) != PT_OK ||
        ares_create_query(norm, DNS_CLASS_IN, type, 0, 1, &q, &qlen, 1232) != ARES_SUCCESS ||
        qlen < 12) {
        if (q)
            ares_free_string(q);
        raw_park(d, w, NULL, 0);
        return;
    }
    q[3] |= 0x20;   /* AD in the query: ask the resolver for its validation verdict
                       (RFC 6840 §5.7) */
    w->starting = true;
    ares_send(d->ch, q, qlen, on_raw_answer, w);
    ares_free_string(q);
    if (w->answered)
        return;     /* parked; runs from the idle handler */
    w->starting = false;
    arm_timer(d);
}

bool dns_trusted(const struct dns *d)
{
    return d->trusted;
}
