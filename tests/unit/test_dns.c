/* Unit tests for delivery/dns: MX ordering, the answer parsers, and real lookups
 * through c-ares against tests/unit/dns_fixture.py on a free loopback port. They
 * never send a query anywhere but to that fixture.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "delivery/dns.h"
#include "util/result.h"

#define LOOKUP_DEADLINE_MS 15000

/* The fixture process, shared by the whole group. */
static pid_t fx_pid = -1;
static int fx_port;
static char fx_log[64];

/* ---- fixture process ---------------------------------------------------------- */

static const char *fixture_path(void)
{
    static char from_file[512];
    const char *env = getenv("DNS_FIXTURE");
    if (env && access(env, R_OK) == 0)
        return env;
    if (access("tests/unit/dns_fixture.py", R_OK) == 0)
        return "tests/unit/dns_fixture.py";
    /* Next to this source file, when run from elsewhere. */
    snprintf(from_file, sizeof from_file, "%s", __FILE__);
    char *slash = strrchr(from_file, '/');
    if (slash) {
        snprintf(slash + 1, sizeof from_file - (size_t)(slash + 1 - from_file),
                 "dns_fixture.py");
        if (access(from_file, R_OK) == 0)
            return from_file;
    }
    return NULL;
}

static int fixture_start(void **state)
{
    const char *path = fixture_path();
    if (!path) {
        fprintf(stderr, "dns_fixture.py not found (run from the repo root)\n");
        return -1;
    }
    snprintf(fx_log, sizeof fx_log, "/tmp/petrel-dns-fixture-XXXXXX");
    int lfd = mkstemp(fx_log);
    if (lfd < 0)
        return -1;
    close(lfd);

    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    const char *python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    fx_pid = fork();
    if (fx_pid < 0)
        return -1;
    if (fx_pid == 0) {
        dup2(pfd[1], STDOUT_FILENO);
        close(pfd[0]);
        close(pfd[1]);
        execlp(python, python, path, "--port", "0", "--log", fx_log, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);

    char line[64];
    size_t len = 0;
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    while (len < sizeof line - 1 && !memchr(line, '\n', len)) {
        if (poll(&p, 1, 10000) <= 0)
            break;
        ssize_t n = read(pfd[0], line + len, sizeof line - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(pfd[0]);
    line[len] = '\0';
    if (sscanf(line, "ready %d", &fx_port) != 1 || fx_port <= 0) {
        fprintf(stderr, "dns fixture did not start: \"%s\"\n", line);
        kill(fx_pid, SIGTERM);
        waitpid(fx_pid, NULL, 0);
        fx_pid = -1;
        return -1;
    }
    return 0;
}

static int fixture_stop(void **state)
{
    if (fx_pid > 0) {
        kill(fx_pid, SIGTERM);
        waitpid(fx_pid, NULL, 0);
        fx_pid = -1;
    }
    unlink(fx_log);
    return 0;
}

/* Queries of name/type that reached the fixture (over UDP or TCP); transport may be
 * NULL for either. */
static int fixture_count(const char *transport, const char *name, const char *type)
{
    FILE *f = fopen(fx_log, "r");
    char line[512], tr[8], n[300], t[16];
    int count = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%7s %299s %15s", tr, n, t) != 3)
            continue;
        if ((!transport || strcmp(tr, transport) == 0) && strcmp(n, name) == 0 &&
            strcmp(t, type) == 0)
            count++;
    }
    fclose(f);
    return count;
}

/* ---- loop helpers ------------------------------------------------------------- */

struct got {
    int calls;
    struct dns_result res;
    struct dns *free_me; /* if set, dns_free is called from inside the callback */
    int *total;          /* if set, counts calls across several requests */
};

static void on_result(void *arg, const struct dns_result *res)
{
    struct got *g = arg;
    g->calls++;
    g->res = *res;
    if (g->total)
        (*g->total)++;
    if (g->free_me) {
        struct dns *d = g->free_me;
        g->free_me = NULL;
        dns_free(d);
    }
}

static struct dns *new_dns(uv_loop_t *loop)
{
    char srv[32], err[160] = "";
    snprintf(srv, sizeof srv, "127.0.0.1:%d", fx_port);
    const char *resolvers[] = {srv};
    struct dns *d = dns_new(loop, resolvers, 1, err, sizeof err);
    if (!d)
        fprintf(stderr, "dns_new: %s\n", err);
    assert_non_null(d);
    return d;
}

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until *calls reaches want or ms pass. */
static void run_until(uv_loop_t *loop, const int *calls, int want, uint64_t ms)
{
    bool expired = false;
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, on_deadline, ms, 0);
    while (*calls < want && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void finish(uv_loop_t *loop, struct dns *d)
{
    dns_free(d);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0); /* every handle closed */
}

enum kind { MX, HOST };

/* One lookup on a fresh loop and resolver: checks that the callback is asynchronous
 * and runs exactly once. */
static void lookup(enum kind kind, const char *name, struct dns_result *out)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d = new_dns(&loop);
    struct got *g = calloc(1, sizeof *g);
    assert_non_null(g);
    if (kind == MX)
        dns_resolve_mx(d, name, on_result, g);
    else
        dns_resolve_host(d, name, on_result, g);
    assert_int_equal(g->calls, 0);
    run_until(&loop, &g->calls, 1, LOOKUP_DEADLINE_MS);
    assert_int_equal(g->calls, 1);
    *out = g->res;
    finish(&loop, d);
    assert_int_equal(g->calls, 1);
    free(g);
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    if (ss->ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf,
                         (socklen_t)len);
    if (ss->ss_family == AF_INET6)
        return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf,
                         (socklen_t)len);
    return "?";
}

static void assert_addr(const struct dns_host *h, int i, const char *want)
{
    char buf[INET6_ADDRSTRLEN];
    assert_true(i < h->naddr);
    assert_string_equal(addr_str(&h->addrs[i], buf, sizeof buf), want);
}

static struct dns_result *new_result(void)
{
    struct dns_result *r = calloc(1, sizeof *r);
    assert_non_null(r);
    return r;
}

/* ---- dns_order_mx ------------------------------------------------------------- */

static uint32_t test_rng(void *arg)
{
    uint32_t *s = arg; /* xorshift32 */
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static uint32_t zero_rng(void *arg)
{
    return 0;
}

static void set_host(struct dns_host *h, const char *name, uint16_t pref)
{
    memset(h, 0, sizeof *h);
    snprintf(h->name, sizeof h->name, "%s", name);
    h->pref = pref;
}

static void test_order_distinct(void **state)
{
    struct dns_host h[4];
    uint32_t seed = 12345;
    for (int run = 0; run < 50; run++) {
        set_host(&h[0], "c", 30);
        set_host(&h[1], "a", 10);
        set_host(&h[2], "b", 20);
        set_host(&h[3], "z", 5);
        dns_order_mx(h, 4, test_rng, &seed);
        assert_string_equal(h[0].name, "z");
        assert_string_equal(h[1].name, "a");
        assert_string_equal(h[2].name, "b");
        assert_string_equal(h[3].name, "c");
    }
    /* Without a random source, equal preferences keep their order (stable). */
    set_host(&h[0], "a", 10);
    set_host(&h[1], "b", 5);
    set_host(&h[2], "c", 10);
    dns_order_mx(h, 3, NULL, NULL);
    assert_string_equal(h[0].name, "b");
    assert_string_equal(h[1].name, "a");
    assert_string_equal(h[2].name, "c");
}

static void test_order_shuffle(void **state)
{
    static const char *const perms[6] = {"abc", "acb", "bac", "bca", "cab", "cba"};
    int seen[6] = {0};
    uint32_t seed = 0x9e3779b9u;
    struct dns_host h[5];
    for (int run = 0; run < 1000; run++) {
        set_host(&h[0], "a", 10);
        set_host(&h[1], "z", 20);
        set_host(&h[2], "b", 10);
        set_host(&h[3], "x", 5);
        set_host(&h[4], "c", 10);
        dns_order_mx(h, 5, test_rng, &seed);
        assert_string_equal(h[0].name, "x");
        assert_string_equal(h[4].name, "z");
        char perm[4] = {h[1].name[0], h[2].name[0], h[3].name[0], '\0'};
        int found = -1;
        for (int i = 0; i < 6; i++)
            if (strcmp(perm, perms[i]) == 0)
                found = i;
        assert_true(found >= 0);
        seen[found]++;
    }
    for (int i = 0; i < 6; i++)
        assert_true(seen[i] > 100); /* ~167 each */
}

static void test_order_edges(void **state)
{
    struct dns_host h[3];
    dns_order_mx(h, 0, zero_rng, NULL);
    set_host(&h[0], "only", 7);
    dns_order_mx(h, 1, zero_rng, NULL);
    assert_string_equal(h[0].name, "only");
    /* A degenerate random source must not hang the shuffle. */
    set_host(&h[0], "a", 1);
    set_host(&h[1], "b", 1);
    set_host(&h[2], "c", 1);
    dns_order_mx(h, 3, zero_rng, NULL);
    assert_int_equal(h[0].pref + h[1].pref + h[2].pref, 3);
}

/* ---- answer parsers on hand-built messages ------------------------------------ */

struct msg {
    unsigned char b[8192];
    int len;
};

static void put8(struct msg *m, unsigned v)
{
    m->b[m->len++] = (unsigned char)v;
}

static void put16(struct msg *m, unsigned v)
{
    put8(m, v >> 8);
    put8(m, v & 0xff);
}

static void put32(struct msg *m, uint32_t v)
{
    put16(m, v >> 16);
    put16(m, v & 0xffff);
}

static void put_name(struct msg *m, const char *name)
{
    while (*name && strcmp(name, ".") != 0) {
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        put8(m, (unsigned)n);
        memcpy(m->b + m->len, name, n);
        m->len += (int)n;
        name += n + (dot ? 1 : 0);
    }
    put8(m, 0);
}

static void msg_begin(struct msg *m, unsigned rcode, const char *qname, unsigned qtype)
{
    m->len = 0;
    put16(m, 0x1234);
    put8(m, 0x81);          /* QR, RD */
    put8(m, 0x80 | rcode);  /* RA */
    put16(m, 1);
    put16(m, 0);
    put16(m, 0);
    put16(m, 0);
    put_name(m, qname);
    put16(m, qtype);
    put16(m, 1);
}

/* Starts an answer record owned by the question name; returns where rdlength goes. */
static int msg_rr(struct msg *m, unsigned type, uint32_t ttl)
{
    unsigned an = (unsigned)m->b[6] << 8 | m->b[7];
    an++;
    m->b[6] = (unsigned char)(an >> 8);
    m->b[7] = (unsigned char)an;
    put16(m, 0xc00c);
    put16(m, type);
    put16(m, 1);
    put32(m, ttl);
    put16(m, 0);
    return m->len - 2;
}

static void msg_rr_end(struct msg *m, int rdlen_at)
{
    unsigned n = (unsigned)(m->len - rdlen_at - 2);
    m->b[rdlen_at] = (unsigned char)(n >> 8);
    m->b[rdlen_at + 1] = (unsigned char)n;
}

static void msg_mx(struct msg *m, uint32_t ttl, unsigned pref, const char *target)
{
    int at = msg_rr(m, 15, ttl);
    put16(m, pref);
    put_name(m, target);
    msg_rr_end(m, at);
}

static void msg_a(struct msg *m, uint32_t ttl, const char *ip)
{
    int at = msg_rr(m, 1, ttl);
    inet_pton(AF_INET, ip, m->b + m->len);
    m->len += 4;
    msg_rr_end(m, at);
}

static void msg_aaaa(struct msg *m, uint32_t ttl, const char *ip)
{
    int at = msg_rr(m, 28, ttl);
    inet_pton(AF_INET6, ip, m->b + m->len);
    m->len += 16;
    msg_rr_end(m, at);
}

static void test_parse_mx(void **state)
{
    struct msg *m = calloc(1, sizeof *m);
    struct dns_result *r = new_result();
    uint32_t ttl = 1;

    msg_begin(m, 0, "example.org", 15);
    msg_mx(m, 300, 20, "MX2.Example.org");
    msg_mx(m, 60, 10, "mx1.example.org.");
    assert_int_equal(dns_parse_mx_answer(m->b, m->len, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 2);
    assert_string_equal(r->hosts[0].name, "mx1.example.org");
    assert_int_equal(r->hosts[0].pref, 10);
    assert_string_equal(r->hosts[1].name, "mx2.example.org");
    assert_int_equal(ttl, 60);

    /* Cut anywhere: malformed, never a crash or a partial success. */
    for (int cut = 0; cut < m->len; cut++) {
        int rc = dns_parse_mx_answer(m->b, cut, r, NULL);
        assert_int_equal(rc, PT_INVALID);
        assert_int_equal(r->status, DNS_TEMPFAIL);
        assert_non_null(strstr(r->error, "malformed"));
    }

    msg_begin(m, 3, "nx.example", 15);
    assert_int_equal(dns_parse_mx_answer(m->b, m->len, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_NOTFOUND);
    assert_string_equal(r->error, "NXDOMAIN");

    msg_begin(m, 2, "sf.example", 15);
    assert_int_equal(dns_parse_mx_answer(m->b, m->len, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_TEMPFAIL);
    assert_non_null(strstr(r->error, "SERVFAIL"));

    msg_begin(m, 0, "nodata.example", 15);
    assert_int_equal(dns_parse_mx_answer(m->b, m->len, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 0);

    msg_begin(m, 0, "null.example", 15);
    msg_mx(m, 300, 0, ".");
    assert_int_equal(dns_parse_mx_answer(m->b, m->len, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_NULLMX);

    msg_begin(m, 0, "lit.example", 15);
    msg_mx(m, 300, 10, "192.0.2.1");
    assert_int_equal(dns_parse_mx_answer(m->b, m->len, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_NOTFOUND);
    assert_non_null(strstr(r->error, "IP address"));

    msg_begin(m, 0, "dup.example", 15);
    msg_mx(m, 300, 20, "mx.dup.example");
    msg_mx(m, 300, 10, "mx.dup.example");
    msg_mx(m, 300, 30, "192.0.2.1");
    assert_int_equal(dns_parse_mx_answer(m->b, m->len, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_int_equal(r->hosts[0].pref, 10);

    /* More MX than DNS_MAX_HOSTS: the lowest preferences are kept. */
    msg_begin(m, 0, "many.example", 15);
    for (int i = 0; i < 40; i++) {
        char name[32];
        snprintf(name, sizeof name, "mx%d.many.example", i);
        msg_mx(m, 300, (unsigned)(100 - i), name);
    }
    assert_int_equal(dns_parse_mx_answer(m->b, m->len, r, &ttl), PT_OK);
    assert_int_equal(r->nhosts, DNS_MAX_HOSTS);
    assert_int_equal(r->hosts[0].pref, 61);
    assert_int_equal(r->hosts[DNS_MAX_HOSTS - 1].pref, 61 + DNS_MAX_HOSTS - 1);

    assert_int_equal(dns_parse_mx_answer(NULL, 0, r, &ttl), PT_INVALID);
    free(r);
    free(m);
}

static void test_parse_addr(void **state)
{
    struct msg *m = calloc(1, sizeof *m);
    struct dns_result *r = new_result();
    uint32_t ttl = 0;

    msg_begin(m, 0, "h.example", 1);
    msg_a(m, 120, "192.0.2.7");
    msg_a(m, 90, "192.0.2.8");
    assert_int_equal(dns_parse_addr_answer(m->b, m->len, AF_INET, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_int_equal(r->hosts[0].naddr, 2);
    assert_addr(&r->hosts[0], 0, "192.0.2.7");
    assert_addr(&r->hosts[0], 1, "192.0.2.8");
    assert_int_equal(ttl, 90);
    for (int cut = 0; cut < m->len; cut++)
        assert_int_equal(dns_parse_addr_answer(m->b, cut, AF_INET, r, NULL), PT_INVALID);

    msg_begin(m, 0, "h.example", 28);
    msg_aaaa(m, 300, "2001:db8::7");
    assert_int_equal(dns_parse_addr_answer(m->b, m->len, AF_INET6, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_OK);
    assert_addr(&r->hosts[0], 0, "2001:db8::7");

    msg_begin(m, 0, "h.example", 28);
    assert_int_equal(dns_parse_addr_answer(m->b, m->len, AF_INET6, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_NOTFOUND);

    msg_begin(m, 3, "h.example", 1);
    assert_int_equal(dns_parse_addr_answer(m->b, m->len, AF_INET, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_NOTFOUND);

    msg_begin(m, 5, "h.example", 1);
    assert_int_equal(dns_parse_addr_answer(m->b, m->len, AF_INET, r, &ttl), PT_OK);
    assert_int_equal(r->status, DNS_TEMPFAIL);
    assert_non_null(strstr(r->error, "REFUSED"));

    assert_int_equal(dns_parse_addr_answer(m->b, m->len, AF_UNIX, r, &ttl), PT_INVALID);
    free(r);
    free(m);
}

/* ---- lookups against the fixture ---------------------------------------------- */

static void test_mx_two_prefs(void **state)
{
    struct dns_result *r = new_result();
    lookup(MX, "two.test", r);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 2);
    assert_string_equal(r->hosts[0].name, "mx1.two.test");
    assert_int_equal(r->hosts[0].pref, 10);
    assert_int_equal(r->hosts[0].naddr, 1);
    assert_addr(&r->hosts[0], 0, "192.0.2.1");
    assert_string_equal(r->hosts[1].name, "mx2.two.test");
    assert_int_equal(r->hosts[1].pref, 20);
    assert_int_equal(r->hosts[1].naddr, 2);
    assert_addr(&r->hosts[1], 0, "2001:db8::2"); /* interleaved, IPv6 first (RFC 8305) */
    assert_addr(&r->hosts[1], 1, "192.0.2.2");
    assert_int_equal(((struct sockaddr_in *)&r->hosts[1].addrs[0])->sin_port, 0);
    free(r);
}

static void test_mx_equal_pref_shuffle(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d = new_dns(&loop);
    struct got *g = calloc(1, sizeof *g);
    int first[3] = {0};
    for (int run = 0; run < 60; run++) {
        g->calls = 0;
        dns_resolve_mx(d, "eq.test", on_result, g);
        run_until(&loop, &g->calls, 1, LOOKUP_DEADLINE_MS);
        assert_int_equal(g->calls, 1);
        assert_int_equal(g->res.status, DNS_OK);
        assert_int_equal(g->res.nhosts, 3);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(g->res.hosts[i].pref, 10);
            assert_int_equal(g->res.hosts[i].naddr, 1);
        }
        first[g->res.hosts[0].name[0] - 'a']++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(first[i] > 0); /* each MX came first at least once */
    assert_int_equal(fixture_count(NULL, "eq.test", "MX"), 1); /* the rest were cached */
    finish(&loop, d);
    free(g);
}

static void test_mx_fallback_a(void **state)
{
    struct dns_result *r = new_result();
    lookup(MX, "nomx.test", r);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_string_equal(r->hosts[0].name, "nomx.test");
    assert_int_equal(r->hosts[0].pref, 0);
    assert_int_equal(r->hosts[0].naddr, 1);
    assert_addr(&r->hosts[0], 0, "192.0.2.20");

    /* A CNAME with no MX behind it: the A/AAAA of the name, through the CNAME. */
    lookup(MX, "alias.test", r);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_string_equal(r->hosts[0].name, "alias.test");
    assert_addr(&r->hosts[0], 0, "192.0.2.20");
    free(r);
}

static void test_aaaa_only(void **state)
{
    struct dns_result *r = new_result();
    lookup(HOST, "v6only.test", r);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_int_equal(r->hosts[0].naddr, 1);
    assert_int_equal(r->hosts[0].addrs[0].ss_family, AF_INET6);
    assert_addr(&r->hosts[0], 0, "2001:db8::6");

    lookup(MX, "V6ONLY.test.", r); /* case and trailing dot do not matter */
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_addr(&r->hosts[0], 0, "2001:db8::6");
    free(r);
}

static void test_null_mx(void **state)
{
    struct dns_result *r = new_result();
    lookup(MX, "nullmx.test", r);
    assert_int_equal(r->status, DNS_NULLMX);
    assert_int_equal(r->nhosts, 0);
    assert_true(r->error[0] != '\0');
    free(r);
}

static void test_nxdomain(void **state)
{
    struct dns_result *r = new_result();
    lookup(MX, "nonexistent.test", r);
    assert_int_equal(r->status, DNS_NOTFOUND);
    assert_non_null(strstr(r->error, "NXDOMAIN"));

    lookup(HOST, "nonexistent.test", r);
    assert_int_equal(r->status, DNS_NOTFOUND);

    lookup(MX, "deadmx.test", r); /* MX hosts that do not exist */
    assert_int_equal(r->status, DNS_NOTFOUND);
    assert_non_null(strstr(r->error, "nohost.deadmx.test"));
    free(r);
}

static void test_servfail(void **state)
{
    struct dns_result *r = new_result();
    lookup(MX, "servfail.test", r);
    assert_int_equal(r->status, DNS_TEMPFAIL);
    assert_non_null(strstr(r->error, "SERVFAIL"));

    lookup(MX, "refused.test", r);
    assert_int_equal(r->status, DNS_TEMPFAIL);

    lookup(MX, "tempmx.test", r); /* every MX host fails temporarily */
    assert_int_equal(r->status, DNS_TEMPFAIL);

    lookup(MX, "partial.test", r); /* one MX host fails: the other is used */
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_string_equal(r->hosts[0].name, "mx1.two.test");
    free(r);
}

static void test_no_answer_times_out(void **state)
{
    struct dns_result *r = new_result();
    uint64_t t0 = uv_hrtime();
    lookup(MX, "drop.test", r);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(r->status, DNS_TEMPFAIL);
    assert_non_null(strstr(r->error, "timeout"));
    assert_true(ms < 8000);
    free(r);
}

static void test_malformed_answer(void **state)
{
    struct dns_result *r = new_result();
    lookup(MX, "garbage.test", r);
    assert_int_equal(r->status, DNS_TEMPFAIL);
    assert_non_null(strstr(r->error, "malformed"));
    free(r);
}

static void test_mx_ip_literal_target(void **state)
{
    struct dns_result *r = new_result();
    lookup(MX, "iplit.test", r);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, 1);
    assert_string_equal(r->hosts[0].name, "mx1.two.test");

    lookup(MX, "iponly.test", r);
    assert_int_equal(r->status, DNS_NOTFOUND);
    assert_non_null(strstr(r->error, "IP address"));
    free(r);
}

static void test_big_answer_over_tcp(void **state)
{
    struct dns_result *r = new_result();
    lookup(MX, "big.test", r);
    assert_int_equal(r->status, DNS_OK);
    assert_int_equal(r->nhosts, DNS_MAX_HOSTS);
    for (int i = 0; i < r->nhosts; i++)
        assert_int_equal(r->hosts[i].naddr, 1);
    assert_int_equal(fixture_count("tcp", "big.test", "MX"), 1);
    free(r);
}

static void test_cache_hit(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d = new_dns(&loop);
    struct got *g = calloc(1, sizeof *g);

    dns_resolve_mx(d, "cached.test", on_result, g);
    run_until(&loop, &g->calls, 1, LOOKUP_DEADLINE_MS);
    assert_int_equal(g->calls, 1);
    assert_int_equal(g->res.status, DNS_OK);

    dns_resolve_mx(d, "Cached.Test", on_result, g);
    assert_int_equal(g->calls, 1); /* a cache hit still answers asynchronously */
    run_until(&loop, &g->calls, 2, LOOKUP_DEADLINE_MS);
    assert_int_equal(g->calls, 2);
    assert_int_equal(g->res.status, DNS_OK);
    assert_int_equal(g->res.nhosts, 1);
    assert_addr(&g->res.hosts[0], 0, "192.0.2.30");

    dns_resolve_host(d, "mx.cached.test", on_result, g); /* shares the MX host's entry */
    run_until(&loop, &g->calls, 3, LOOKUP_DEADLINE_MS);
    assert_int_equal(g->res.status, DNS_OK);

    assert_int_equal(fixture_count(NULL, "cached.test", "MX"), 1);
    assert_int_equal(fixture_count(NULL, "mx.cached.test", "A"), 1);
    assert_int_equal(fixture_count(NULL, "mx.cached.test", "AAAA"), 1);
    finish(&loop, d);
    free(g);
}

static void test_coalesce(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d = new_dns(&loop);
    struct got *g = calloc(3, sizeof *g);
    int total = 0;
    for (int i = 0; i < 3; i++) {
        g[i].total = &total;
        dns_resolve_mx(d, "coal.test", on_result, &g[i]);
    }
    run_until(&loop, &total, 3, LOOKUP_DEADLINE_MS);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].res.status, DNS_OK);
        assert_addr(&g[i].res.hosts[0], 0, "192.0.2.31");
    }
    assert_int_equal(fixture_count(NULL, "coal.test", "MX"), 1);
    assert_int_equal(fixture_count(NULL, "mx.coal.test", "A"), 1);
    finish(&loop, d);
    free(g);
}

static void test_free_with_pending(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d = new_dns(&loop);
    struct got *g = calloc(2, sizeof *g);
    dns_resolve_mx(d, "drop.test", on_result, &g[0]);
    dns_resolve_host(d, "drop.host.test", on_result, &g[1]);
    int none = 0;
    run_until(&loop, &none, 1, 200); /* queries are out, no answer will come */
    assert_int_equal(g[0].calls + g[1].calls, 0);
    dns_free(d);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(g[i].calls, 1);
        assert_int_equal(g[i].res.status, DNS_TEMPFAIL);
        assert_non_null(strstr(g[i].res.error, "shutting down"));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(g[0].calls + g[1].calls, 2);
    free(g);
}

static void test_free_inside_callback(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d = new_dns(&loop);
    struct got *g = calloc(3, sizeof *g);
    g[0].free_me = d;
    dns_resolve_host(d, "192.0.2.1", on_result, &g[0]);   /* answers first, frees d */
    dns_resolve_host(d, "192.0.2.2", on_result, &g[1]);   /* already answered */
    dns_resolve_mx(d, "drop.test", on_result, &g[2]);     /* pending: cancelled */
    run_until(&loop, &g[0].calls, 1, LOOKUP_DEADLINE_MS);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(g[i].calls, 1);
    assert_int_equal(g[1].res.status, DNS_OK);
    assert_int_equal(g[2].res.status, DNS_TEMPFAIL);
    free(g);
}

static void test_ip_literals(void **state)
{
    static const struct {
        const char *in, *addr;
        int family;
    } cases[] = {
        {"192.0.2.9", "192.0.2.9", AF_INET},
        {"[192.0.2.9]", "192.0.2.9", AF_INET},
        {"2001:db8::9", "2001:db8::9", AF_INET6},
        {"[IPv6:2001:db8::9]", "2001:db8::9", AF_INET6},
        {"[::1]", "::1", AF_INET6},
    };
    struct dns_result *r = new_result();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        lookup(HOST, cases[i].in, r);
        assert_int_equal(r->status, DNS_OK);
        assert_int_equal(r->nhosts, 1);
        assert_int_equal(r->hosts[0].naddr, 1);
        assert_int_equal(r->hosts[0].addrs[0].ss_family, cases[i].family);
        assert_addr(&r->hosts[0], 0, cases[i].addr);
    }
    free(r);
}

static void test_invalid_names(void **state)
{
    static const char *const bad[] = {"", ".", "a..b", "a b.test", "-\x01.test",
                                      "[192.0.2.1", "x.test\n"};
    struct dns_result *r = new_result();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lookup(MX, bad[i], r);
        assert_int_equal(r->status, DNS_NOTFOUND);
        lookup(HOST, bad[i], r);
        assert_int_equal(r->status, DNS_NOTFOUND);
    }
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    lookup(MX, longname, r);
    assert_int_equal(r->status, DNS_NOTFOUND);
    free(r);
}

static void test_new_errors(void **state)
{
    uv_loop_t loop;
    char err[160] = "";
    uv_loop_init(&loop);
    const char *bad1[] = {"not an address"};
    assert_null(dns_new(&loop, bad1, 1, err, sizeof err));
    assert_true(err[0] != '\0');
    err[0] = '\0';
    const char *bad2[] = {"999.1.1.1"};
    assert_null(dns_new(&loop, bad2, 1, err, sizeof err));
    assert_true(err[0] != '\0');

    /* Several servers in all accepted forms; and the system default. */
    const char *good[] = {"127.0.0.1:5353", "[::1]:5353", "10.0.0.1"};
    struct dns *d = dns_new(&loop, good, 3, err, sizeof err);
    assert_non_null(d);
    dns_free(d);
    d = dns_new(&loop, NULL, 0, err, sizeof err);
    assert_non_null(d);
    dns_free(d);
    dns_free(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_distinct),
        cmocka_unit_test(test_order_shuffle),
        cmocka_unit_test(test_order_edges),
        cmocka_unit_test(test_parse_mx),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_mx_two_prefs),
        cmocka_unit_test(test_mx_equal_pref_shuffle),
        cmocka_unit_test(test_mx_fallback_a),
        cmocka_unit_test(test_aaaa_only),
        cmocka_unit_test(test_null_mx),
        cmocka_unit_test(test_nxdomain),
        cmocka_unit_test(test_servfail),
        cmocka_unit_test(test_no_answer_times_out),
        cmocka_unit_test(test_malformed_answer),
        cmocka_unit_test(test_mx_ip_literal_target),
        cmocka_unit_test(test_big_answer_over_tcp),
        cmocka_unit_test(test_cache_hit),
        cmocka_unit_test(test_coalesce),
        cmocka_unit_test(test_free_with_pending),
        cmocka_unit_test(test_free_inside_callback),
        cmocka_unit_test(test_ip_literals),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_new_errors),
    };
    return cmocka_run_group_tests(tests, fixture_start, fixture_stop);
}
