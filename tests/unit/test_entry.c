/* Unit tests for queue entries: construction and layout, encode/decode round trip,
 * rejection of truncated and corrupted encodings, id format and uniqueness.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "queue/entry.h"
#include "util/buf.h"
#include "util/result.h"

static const char *const rcpts3[] = { "a@Example.com", "b@example.com", "" };

static struct entry *sample(void)
{
    struct entry *e = entry_new("0123456789abcdef", "Example.COM", "s@x.org", rcpts3, 3);
    assert_non_null(e);
    e->rcpts[0].state = RCPT_DELIVERED;
    e->rcpts[1].state = RCPT_BOUNCED;
    e->attempts = 7;
    e->ndomains = 65535;
    e->protocol = PROTO_HTTP;
    e->priority = PRIO_BULK;
    e->flags = ENTRY_F_DSN | 0x80;
    e->received_at = 1763941082.125;
    e->next_attempt = -0.0;
    e->size = UINT64_MAX;
    assert_int_equal(entry_set_route(e, "relay:[10.0.0.1]:2525"), PT_OK);
    entry_set_last_response(e, "451 4.7.1 try later\nsecond line");
    return e;
}

static void assert_entry_equal(const struct entry *a, const struct entry *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->domain, b->domain);
    assert_string_equal(a->sender, b->sender);
    if (a->route || b->route)
        assert_string_equal(a->route, b->route);
    if (a->last_response || b->last_response)
        assert_string_equal(a->last_response, b->last_response);
    assert_int_equal(a->nrcpt, b->nrcpt);
    for (uint32_t i = 0; i < a->nrcpt; i++) {
        assert_string_equal(a->rcpts[i].addr, b->rcpts[i].addr);
        assert_int_equal(a->rcpts[i].state, b->rcpts[i].state);
    }
    assert_int_equal(a->attempts, b->attempts);
    assert_int_equal(a->ndomains, b->ndomains);
    assert_int_equal(a->protocol, b->protocol);
    assert_int_equal(a->priority, b->priority);
    assert_int_equal(a->flags, b->flags);
    assert_memory_equal(&a->received_at, &b->received_at, sizeof(double));
    assert_memory_equal(&a->next_attempt, &b->next_attempt, sizeof(double));
    assert_true(a->size == b->size);
}

/* Decodes from an exact-size heap copy, so ASan sees any over-read. */
static int decode_exact(const void *p, size_t n, struct entry **out)
{
    void *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, p, n);
    int rc = entry_decode(copy, n, out);
    free(copy);
    return rc;
}

static void test_new_layout(void **state)
{
    struct entry *e = entry_new("abc", "MiXed.Example", NULL, rcpts3, 3);
    assert_non_null(e);
    assert_string_equal(e->id, "abc");
    assert_string_equal(e->domain, "mixed.example");
    assert_string_equal(e->sender, "");
    assert_null(e->route);
    assert_null(e->last_response);
    assert_int_equal(e->nrcpt, 3);
    assert_string_equal(e->rcpts[0].addr, "a@Example.com");  /* addresses untouched */
    assert_string_equal(e->rcpts[2].addr, "");
    assert_int_equal(entry_pending(e), 3);
    assert_int_equal(e->ndomains, 1);
    assert_int_equal(e->priority, PRIO_NORMAL);
    assert_int_equal(e->protocol, PROTO_SMTP);

    /* one block: struct, then the recipient array, then the strings */
    const char *base = (const char *)e;
    assert_ptr_equal(e->rcpts, (void *)(e + 1));
    const char *strs = (const char *)(e->rcpts + 3);
    assert_ptr_equal(e->domain, strs);
    assert_true(e->sender > strs && e->rcpts[2].addr > e->sender);
    assert_true(e->rcpts[2].addr < base + sizeof *e + 3 * sizeof(struct entry_rcpt) + 64);
    assert_true(sizeof(struct entry_rcpt) <= 16);
    assert_true(sizeof(struct entry) <= 152);

    e->rcpts[1].state = RCPT_DELIVERED;
    assert_int_equal(entry_pending(e), 2);
    entry_set_last_response(e, "first");
    entry_set_last_response(e, "second");
    assert_string_equal(e->last_response, "second");
    entry_set_last_response(e, NULL);
    assert_null(e->last_response);
    assert_int_equal(entry_set_route(e, "x"), PT_OK);
    assert_string_equal(e->route, "x");
    assert_int_equal(entry_set_route(e, NULL), PT_OK);
    assert_null(e->route);
    entry_free(e);
    entry_free(NULL);

    /* id NULL = fresh id; zero recipients allowed; too long ids are cut */
    e = entry_new(NULL, "d", "s", NULL, 0);
    assert_non_null(e);
    assert_int_equal(strlen(e->id), ENTRY_ID_LEN);
    assert_null(e->rcpts);
    entry_free(e);
    e = entry_new("0123456789abcdefXYZ", "d", "s", NULL, 0);
    assert_string_equal(e->id, "0123456789abcdef");
    entry_free(e);
}

static void test_round_trip(void **state)
{
    struct entry *e = sample();
    struct buf b;
    buf_init(&b, 0);
    buf_appends(&b, "prefix");
    assert_int_equal(entry_encode(e, &b), PT_OK);
    assert_memory_equal(b.data, "prefix", 6);
    assert_int_equal((unsigned char)b.data[6], 5);     /* version */

    struct entry *d;
    assert_int_equal(decode_exact(b.data + 6, b.len - 6, &d), PT_OK);
    assert_entry_equal(e, d);
    assert_int_equal(entry_pending(d), 1);

    /* re-encoding is byte-identical */
    struct buf b2;
    buf_init(&b2, 0);
    assert_int_equal(entry_encode(d, &b2), PT_OK);
    assert_int_equal(b2.len, b.len - 6);
    assert_memory_equal(b2.data, b.data + 6, b2.len);
    entry_free(d);

    /* NULL route / response, null sender, no recipients */
    struct entry *m = entry_new("ffffffffffffffff", "x.y", "", NULL, 0);
    buf_reset(&b2);
    assert_int_equal(entry_encode(m, &b2), PT_OK);
    assert_int_equal(decode_exact(b2.data, b2.len, &d), PT_OK);
    assert_entry_equal(m, d);
    assert_null(d->route);
    assert_null(d->last_response);
    assert_null(d->rcpts);
    assert_null(d->hdr_edits);
    entry_free(d);
    /* header edits survive */
    assert_int_equal(entry_set_hdr_edits(m, "+X-A: 1\n-Received\n"), PT_OK);
    buf_reset(&b2);
    assert_int_equal(entry_encode(m, &b2), PT_OK);
    assert_int_equal(decode_exact(b2.data, b2.len, &d), PT_OK);
    assert_string_equal(d->hdr_edits, "+X-A: 1\n-Received\n");
    entry_free(d);
    assert_int_equal(entry_set_hdr_edits(m, NULL), PT_OK);
    /* sign_dkim requests survive */
    const char *req = "example.com\tmail\t/etc/keys/a.pem\nother.test\ts2\tk.pem\n";
    assert_int_equal(entry_set_dkim_sign(m, req), PT_OK);
    buf_reset(&b2);
    assert_int_equal(entry_encode(m, &b2), PT_OK);
    assert_int_equal(decode_exact(b2.data, b2.len, &d), PT_OK);
    assert_string_equal(d->dkim_sign, req);
    assert_null(d->hdr_edits);
    entry_free(d);
    assert_int_equal(entry_set_dkim_sign(m, NULL), PT_OK);
    assert_null(m->dkim_sign);
    /* empty (not NULL) strings survive as empty */
    entry_set_last_response(m, "");
    assert_int_equal(entry_set_route(m, ""), PT_OK);
    buf_reset(&b2);
    assert_int_equal(entry_encode(m, &b2), PT_OK);
    assert_int_equal(decode_exact(b2.data, b2.len, &d), PT_OK);
    assert_string_equal(d->route, "");
    assert_string_equal(d->last_response, "");
    entry_free(d);
    entry_free(m);

    entry_free(e);
    buf_free(&b);
    buf_free(&b2);
}

static void test_ident_round_trip(void **state)
{
    struct entry *e = entry_new("0123456789abcdef", "d", "s", (const char *const[]){ "r" }, 1);
    assert_null(entry_tenant(e));
    assert_int_equal(entry_set_ident(e, "acme", NULL), PT_OK);
    assert_string_equal(entry_tenant(e), "acme");
    assert_null(entry_source(e));
    assert_int_equal(entry_set_ident(e, entry_tenant(e), "ip1"), PT_OK);  /* its own tenant */
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(entry_encode(e, &b), PT_OK);
    struct entry *d;
    assert_int_equal(decode_exact(b.data, b.len, &d), PT_OK);
    assert_string_equal(entry_tenant(d), "acme");
    assert_string_equal(entry_source(d), "ip1");
    assert_int_equal(entry_set_ident(d, NULL, "ip2"), PT_OK);
    assert_null(entry_tenant(d));
    assert_string_equal(entry_source(d), "ip2");
    char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    assert_int_equal(entry_set_ident(d, long_name, NULL), PT_TOOLONG);
    entry_free(d);
    buf_free(&b);
    entry_free(e);
}

static void test_many_rcpts(void **state)
{
    enum { N = 5000 };
    static char addrs[N][32];
    static const char *ptrs[N];
    for (int i = 0; i < N; i++) {
        snprintf(addrs[i], sizeof addrs[i], "user%d@example.net", i);
        ptrs[i] = addrs[i];
    }
    struct entry *e = entry_new(NULL, "example.net", "s@a", ptrs, N);
    for (int i = 0; i < N; i += 3)
        e->rcpts[i].state = RCPT_BOUNCED;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(entry_encode(e, &b), PT_OK);
    struct entry *d;
    assert_int_equal(decode_exact(b.data, b.len, &d), PT_OK);
    assert_entry_equal(e, d);
    entry_free(d);
    entry_free(e);
    buf_free(&b);
}

static void test_truncated(void **state)
{
    struct entry *e = sample(), *d = (struct entry *)1;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(entry_encode(e, &b), PT_OK);
    for (size_t n = 0; n < b.len; n++) {
        assert_int_equal(decode_exact(b.data, n, &d), PT_INVALID);
        assert_null(d);
    }
    /* trailing garbage */
    buf_append(&b, "", 1);
    assert_int_equal(decode_exact(b.data, b.len, &d), PT_INVALID);
    assert_int_equal(entry_decode(NULL, 0, &d), PT_INVALID);
    entry_free(e);
    buf_free(&b);
}

/* Every single-byte change either fails cleanly or decodes into something that
 * re-encodes to exactly the changed bytes. */
static void test_corrupted(void **state)
{
    struct entry *e = sample();
    struct buf b, re;
    buf_init(&b, 0);
    buf_init(&re, 0);
    assert_int_equal(entry_encode(e, &b), PT_OK);
    static const unsigned char vals[] = { 0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xfe, 0xff };
    int ok = 0, bad = 0;
    for (size_t i = 0; i < b.len; i++) {
        for (size_t k = 0; k < sizeof vals; k++) {
            char saved = b.data[i];
            b.data[i] = (char)vals[k];
            struct entry *d;
            int rc = decode_exact(b.data, b.len, &d);
            if (rc == PT_OK) {
                ok++;
                buf_reset(&re);
                assert_int_equal(entry_encode(d, &re), PT_OK);
                assert_int_equal(re.len, b.len);
                assert_memory_equal(re.data, b.data, b.len);
                entry_free(d);
            } else {
                bad++;
                assert_int_equal(rc, PT_INVALID);
            }
            b.data[i] = saved;
        }
    }
    assert_true(ok > 0 && bad > 0);
    entry_free(e);
    buf_free(&b);
    buf_free(&re);
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void test_specific_rejections(void **state)
{
    struct entry *e = entry_new("0123456789abcdef", "d", "s", (const char *const[]){ "r" }, 1);
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(entry_encode(e, &b), PT_OK);
    /* layout for this entry: 1 + (4+16) + (4+1) + (4+1) + 4 + 4 + 4 (hdr_edits@39)
     * + 4 (dkim_sign@43) + 4 (envid@47) = 51, then protocol@51 priority@52 flags@53
     * ndomains@54 attempts@56 size@60 received@68 next@76 nrcpt@84 state@88
     * addrlen@89 addr@93 notify@94 dflags@95 orcpt@96 */
    /* v5 adds tenant@51 and egress_source@55 (NULL here); the mutations below work on
     * the v4 record of the same entry (what a previous version wrote) */
    assert_int_equal(b.len, 108);
    assert_int_equal((unsigned char)b.data[0], 5);
    for (int i = 51; i < 59; i++)
        assert_int_equal((unsigned char)b.data[i], 0xff);
    memmove(b.data + 51, b.data + 59, 108 - 59);
    b.data[0] = 4;
    unsigned char *p = (unsigned char *)b.data, orig[100];
    memcpy(orig, p, sizeof orig);
    struct entry *d;
#define REJECT(mutation)                                                   \
    do {                                                                   \
        memcpy(p, orig, sizeof orig);                                      \
        mutation;                                                          \
        assert_int_equal(decode_exact(p, sizeof orig, &d), PT_INVALID);    \
    } while (0)
    REJECT(p[0] = 6);                               /* unknown version */
    REJECT(p[0] = 5);                               /* v5 has tenant, source: misaligned */
    REJECT(p[0] = 0);
    REJECT(p[0] = 1);                               /* v1 has no hdr_edits: misaligned */
    REJECT(p[0] = 2);                               /* v2 has no dkim_sign: misaligned */
    REJECT(p[0] = 3);                               /* v3 has no envid: misaligned */
    REJECT(put_le(p + 1, 0, 4));                    /* empty id */
    REJECT(put_le(p + 1, 17, 4));                   /* id too long */
    REJECT(put_le(p + 1, 0xffffffff, 4));           /* NULL id */
    REJECT(put_le(p + 21, 0xffffffff, 4));          /* NULL domain */
    REJECT(put_le(p + 21, 0x7fffffff, 4));          /* length beyond input */
    REJECT(p[5] = 0);                               /* NUL inside the id */
    REJECT(put_le(p + 39, 0x7fffffff, 4));          /* hdr_edits beyond input */
    REJECT(put_le(p + 43, 0x7fffffff, 4));          /* dkim_sign beyond input */
    REJECT(put_le(p + 47, 0x7fffffff, 4));          /* envid beyond input */
    REJECT(p[51] = 2);                              /* protocol */
    REJECT(p[52] = 3);                              /* priority */
    REJECT(put_le(p + 68, 0x7ff8000000000000ull, 8)); /* NaN */
    REJECT(put_le(p + 76, 0x7ff0000000000000ull, 8)); /* +inf */
    REJECT(put_le(p + 84, 2, 4));                   /* more rcpts than bytes */
    REJECT(put_le(p + 84, 0, 4));                   /* fewer: trailing bytes */
    REJECT(put_le(p + 84, 0xffffffff, 4));
    REJECT(p[88] = 3);                              /* rcpt state */
    REJECT(put_le(p + 89, 0xffffffff, 4));          /* NULL address */
    REJECT(put_le(p + 89, 2, 4));
    REJECT(p[94] = 0x10);                           /* unknown NOTIFY bit */
    REJECT(p[95] = ENTRY_R_ORCPT);                  /* derived flag is never stored */
    REJECT(p[95] = 0x80);
    REJECT(put_le(p + 96, 1, 4));                   /* orcpt beyond input */
    /* a v3 record (recipients without DSN fields, no envid) still decodes */
    unsigned char v3[90];
    memcpy(v3, orig, 47);
    memcpy(v3 + 47, orig + 51, 94 - 51);
    v3[0] = 3;
    assert_int_equal(decode_exact(v3, sizeof v3, &d), PT_OK);
    assert_string_equal(d->rcpts[0].addr, "r");
    assert_null(d->envid);
    assert_int_equal(d->rcpts[0].notify, 0);
    assert_null(entry_rcpt_orcpt(&d->rcpts[0]));
    entry_free(d);
    /* a v1 record (no hdr_edits, no dkim_sign) still decodes: spools of earlier builds */
    unsigned char v1[82];
    memcpy(v1, v3, 39);
    memcpy(v1 + 39, v3 + 47, sizeof v3 - 47);
    v1[0] = 1;
    assert_int_equal(decode_exact(v1, sizeof v1, &d), PT_OK);
    assert_string_equal(d->rcpts[0].addr, "r");
    assert_null(d->hdr_edits);
    assert_null(d->dkim_sign);
    entry_free(d);
    /* and a v2 record (no dkim_sign) */
    unsigned char v2[86];
    memcpy(v2, v3, 43);
    memcpy(v2 + 43, v3 + 47, sizeof v3 - 47);
    v2[0] = 2;
    assert_int_equal(decode_exact(v2, sizeof v2, &d), PT_OK);
    assert_string_equal(d->rcpts[0].addr, "r");
    assert_null(d->dkim_sign);
    entry_free(d);
    memcpy(p, orig, sizeof orig);
    assert_int_equal(decode_exact(p, sizeof orig, &d), PT_OK);   /* v4 still loads */
    assert_null(entry_tenant(d));
    assert_null(entry_source(d));
    entry_free(d);

    /* a huge recipient count is refused before any allocation */
    unsigned char big[100 + 8];
    memcpy(big, orig, 88);
    put_le(big + 84, 100001, 4);
    assert_int_equal(decode_exact(big, 88, &d), PT_INVALID);

    /* encode refuses what decode would refuse; out is left untouched */
    buf_reset(&b);
    e->rcpts[0].state = 9;
    assert_int_equal(entry_encode(e, &b), PT_INVALID);
    e->rcpts[0].state = RCPT_PENDING;
    e->next_attempt = NAN;
    assert_int_equal(entry_encode(e, &b), PT_INVALID);
    e->next_attempt = 0;
    char *huge = malloc(70000);
    memset(huge, 'x', 69999);
    huge[69999] = 0;
    entry_set_last_response(e, huge);               /* capped on the way in */
    assert_int_equal(entry_encode(e, &b), PT_OK);
    assert_int_equal(decode_exact(b.data, b.len, &d), PT_OK);
    assert_int_equal(strlen(d->last_response), 65536);
    entry_free(d);
    assert_int_equal(entry_set_route(e, huge), PT_OK);
    buf_reset(&b);
    assert_int_equal(entry_encode(e, &b), PT_OK);
    free(huge);
    entry_free(e);
    buf_free(&b);
}

/* DSN parameters (RFC 3461) survive the spool: ENVID, RET and REQUIRETLS per
 * message, NOTIFY, ORCPT and the delay-warning mark per recipient. */
static void test_dsn_round_trip(void **state)
{
    const char *const addrs[] = { "a@x.test", "b@x.test", "c@x.test" };
    const uint8_t notify[] = { ENTRY_N_SUCCESS | ENTRY_N_FAILURE, ENTRY_N_NEVER, 0 };
    const char *const orcpt[] = { "rfc822;A@Orig.test", NULL, "x-type;weird+ value" };
    struct entry_dsn dsn = { .envid = "env-42 id", .notify = notify, .orcpt = orcpt };
    struct entry *e = entry_new_dsn("0123456789abcdef", "x.test", "s@y.test", addrs, 3, &dsn);
    assert_non_null(e);
    assert_string_equal(e->envid, "env-42 id");
    assert_string_equal(entry_rcpt_orcpt(&e->rcpts[0]), "rfc822;A@Orig.test");
    assert_null(entry_rcpt_orcpt(&e->rcpts[1]));
    assert_string_equal(entry_rcpt_orcpt(&e->rcpts[2]), "x-type;weird+ value");
    assert_string_equal(e->rcpts[2].addr, "c@x.test");
    e->flags = ENTRY_F_REQUIRETLS | ENTRY_F_RET_HDRS | ENTRY_F_BINARYMIME;
    assert_int_equal(entry_ret(e), ENTRY_F_RET_HDRS);
    e->rcpts[2].dflags |= ENTRY_R_DELAY_SENT;

    struct buf b, b2;
    buf_init(&b, 0);
    buf_init(&b2, 0);
    assert_int_equal(entry_encode(e, &b), PT_OK);
    struct entry *d;
    assert_int_equal(decode_exact(b.data, b.len, &d), PT_OK);
    assert_entry_equal(e, d);
    assert_string_equal(d->envid, "env-42 id");
    assert_int_equal(d->flags, ENTRY_F_REQUIRETLS | ENTRY_F_RET_HDRS | ENTRY_F_BINARYMIME);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(d->rcpts[i].notify, notify[i]);
        assert_int_equal(d->rcpts[i].dflags, e->rcpts[i].dflags);
        const char *o = entry_rcpt_orcpt(&d->rcpts[i]);
        if (orcpt[i])
            assert_string_equal(o, orcpt[i]);
        else
            assert_null(o);
    }
    assert_int_equal(entry_encode(d, &b2), PT_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    entry_free(d);

    /* encode refuses what decode would refuse: control bytes, over-long values */
    buf_reset(&b2);
    e->rcpts[1].notify = 0x40;
    assert_int_equal(entry_encode(e, &b2), PT_INVALID);
    e->rcpts[1].notify = 0;
    e->envid[0] = '\n';
    assert_int_equal(entry_encode(e, &b2), PT_INVALID);
    assert_int_equal(b2.len, 0);
    entry_free(e);
    char long_id[600];
    memset(long_id, 'i', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    dsn.envid = long_id;
    e = entry_new_dsn("0123456789abcdef", "x.test", "s@y.test", addrs, 3, &dsn);
    assert_int_equal(entry_encode(e, &b2), PT_INVALID);
    entry_free(e);
    buf_free(&b);
    buf_free(&b2);
}

static int is_lower_hex(const char *s)
{
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static void test_id_format(void **state)
{
    char a[ENTRY_ID_LEN + 1], b[ENTRY_ID_LEN + 1];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    entry_new_id(a);
    assert_int_equal(strlen(a), ENTRY_ID_LEN);
    assert_true(is_lower_hex(a));
    /* the top 44 bits are the time in ms (allow the counter to run ahead a little) */
    uint64_t v = strtoull(a, NULL, 16);
    assert_true((v >> 20) + 5 >= ms && (v >> 20) <= ms + 5000);
    for (int i = 0; i < 1000; i++) {
        entry_new_id(b);
        assert_true(strcmp(b, a) > 0);              /* strictly increasing */
        memcpy(a, b, sizeof a);
    }
}

enum { ID_THREADS = 4, ID_PER_THREAD = 100000 };
static uint64_t ids[ID_THREADS * ID_PER_THREAD];

static void *id_worker(void *arg)
{
    uint64_t *out = arg;
    char s[ENTRY_ID_LEN + 1];
    for (int i = 0; i < ID_PER_THREAD; i++) {
        entry_new_id(s);
        out[i] = strtoull(s, NULL, 16);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_id_unique_threads(void **state)
{
    pthread_t t[ID_THREADS];
    for (int i = 0; i < ID_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, id_worker, ids + i * ID_PER_THREAD), 0);
    for (int i = 0; i < ID_THREADS; i++)
        pthread_join(t[i], NULL);
    size_t n = ID_THREADS * ID_PER_THREAD;
    qsort(ids, n, sizeof ids[0], cmp_u64);
    for (size_t i = 1; i < n; i++)
        assert_true(ids[i] != ids[i - 1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_layout),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_many_rcpts),
        cmocka_unit_test(test_ident_round_trip),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupted),
        cmocka_unit_test(test_specific_rejections),
        cmocka_unit_test(test_dsn_round_trip),
        cmocka_unit_test(test_id_format),
        cmocka_unit_test(test_id_unique_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
