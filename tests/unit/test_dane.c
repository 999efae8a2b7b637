/* Unit tests for delivery/dnsrec and delivery/dane: raw answers (rcode, AD bit, TXT
 * and TLSA RDATA), TLSA usability (RFC 7672 §3.1) and the per-host verdict (§2.2:
 * usable -> authenticate, all unusable -> TLS without authentication, lookup failure
 * -> host unusable, no AD or untrusted resolver -> DANE does not apply).
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "delivery/dane.h"
#include "delivery/dnsrec.h"
#include "util/result.h"

struct pkt { unsigned char b[4096]; int n; };

static void put16(struct pkt *p, unsigned v)
{
    p->b[p->n++] = (unsigned char)(v >> 8);
    p->b[p->n++] = (unsigned char)v;
}

/* A response for _25._tcp.mx.test with answers added by add_rr. */
static void start(struct pkt *p, unsigned rcode, bool ad)
{
    memset(p, 0, sizeof *p);
    put16(p, 0x1234);
    p->b[p->n++] = 0x81;                       /* QR, RD */
    p->b[p->n++] = (unsigned char)(0x80 | (ad ? 0x20 : 0) | rcode); /* RA, AD */
    put16(p, 1);
    put16(p, 0);
    put16(p, 0);
    put16(p, 0);
    static const char q[] = "\3_25\4_tcp\2mx\4test";
    memcpy(p->b + p->n, q, sizeof q);          /* with the root label */
    p->n += (int)sizeof q;
    put16(p, 52);
    put16(p, 1);
}

static void add_rr(struct pkt *p, unsigned type, const unsigned char *rd, unsigned len)
{
    p->b[7]++;                                 /* ANCOUNT */
    put16(p, 0xc00c);
    put16(p, type);
    put16(p, 1);
    put16(p, 0);
    put16(p, 60);
    put16(p, len);
    memcpy(p->b + p->n, rd, len);
    p->n += (int)len;
}

static void add_tlsa(struct pkt *p, int u, int s, int m, unsigned dlen)
{
    unsigned char rd[128] = { (unsigned char)u, (unsigned char)s, (unsigned char)m };
    for (unsigned i = 0; i < dlen; i++)
        rd[3 + i] = (unsigned char)i;
    add_rr(p, 52, rd, 3 + dlen);
}

static void test_dnsrec(void **state)
{
    (void)state;
    struct pkt p;
    struct dnsrec_set s;
    start(&p, 0, true);
    static const unsigned char txt[] = "\x07v=STSv1\x06; id=1";
    add_rr(&p, 16, txt, sizeof txt - 1);
    add_tlsa(&p, 3, 1, 1, 32);
    assert_int_equal(dnsrec_parse(p.b, p.n, DNSREC_TYPE_TXT, &s), PT_OK);
    assert_true(s.ad);
    assert_int_equal(s.rcode, 0);
    assert_int_equal(s.n, 1);
    char out[64];
    size_t n;
    assert_int_equal(dnsrec_txt_join(p.b + s.rr[0].off, s.rr[0].len, out, sizeof out, &n), PT_OK);
    assert_string_equal(out, "v=STSv1; id=1");
    assert_int_equal(dnsrec_txt_join(p.b + s.rr[0].off, s.rr[0].len, out, 5, &n), PT_TOOLONG);
    static const unsigned char badtxt[] = "\x09v=STSv1";
    assert_int_equal(dnsrec_txt_join(badtxt, sizeof badtxt - 1, out, sizeof out, &n), PT_INVALID);
    /* truncations at every length are rejected or parsed, never overread */
    for (int cut = 0; cut < p.n; cut++) {
        int rc = dnsrec_parse(p.b, cut, DNSREC_TYPE_TLSA, &s);
        assert_true(rc == PT_OK || rc == PT_INVALID);
        for (int i = 0; rc == PT_OK && i < s.n; i++)
            assert_true(s.rr[i].off + s.rr[i].len <= cut);
    }
    p.b[2] = 0x01;                             /* a query, not a response */
    assert_int_equal(dnsrec_parse(p.b, p.n, DNSREC_TYPE_TLSA, &s), PT_INVALID);
}

static void test_usable(void **state)
{
    (void)state;
    unsigned char rd[80] = { 3, 1, 1 };
    struct dane_tlsa t;
    assert_int_equal(dane_tlsa_parse(rd, 3 + 32, &t), PT_OK);
    assert_true(dane_tlsa_usable(&t));
    assert_int_equal(dane_tlsa_parse(rd, 3, &t), PT_INVALID);
    rd[0] = 2; rd[2] = 2;
    assert_int_equal(dane_tlsa_parse(rd, 3 + 64, &t), PT_OK);
    assert_true(dane_tlsa_usable(&t));
    assert_int_equal(dane_tlsa_parse(rd, 3 + 32, &t), PT_OK);   /* SHA-512 of 32 bytes */
    assert_false(dane_tlsa_usable(&t));
    rd[0] = 1; rd[2] = 1;                                     /* PKIX-EE: not for SMTP */
    assert_int_equal(dane_tlsa_parse(rd, 3 + 32, &t), PT_OK);
    assert_false(dane_tlsa_usable(&t));
    rd[0] = 0;
    assert_int_equal(dane_tlsa_parse(rd, 3 + 32, &t), PT_OK);
    assert_false(dane_tlsa_usable(&t));
    rd[0] = 3; rd[1] = 2;                                     /* unknown selector */
    assert_int_equal(dane_tlsa_parse(rd, 3 + 32, &t), PT_OK);
    assert_false(dane_tlsa_usable(&t));
    rd[1] = 0; rd[2] = 3;                                     /* unknown matching type */
    assert_int_equal(dane_tlsa_parse(rd, 3 + 32, &t), PT_OK);
    assert_false(dane_tlsa_usable(&t));
    rd[2] = 0;                                                /* full cert/key: any length */
    assert_int_equal(dane_tlsa_parse(rd, 3 + 40, &t), PT_OK);
    assert_true(dane_tlsa_usable(&t));
    static unsigned char big[3 + DANE_DATA_MAX + 1];
    assert_int_equal(dane_tlsa_parse(big, sizeof big, &t), PT_TOOLONG);
}

static void test_verdict(void **state)
{
    (void)state;
    struct pkt p;
    struct dane_host *h = malloc(sizeof *h);
    assert_non_null(h);
    /* usable record with AD from a trusted resolver: authenticate */
    start(&p, 0, true);
    add_tlsa(&p, 3, 1, 1, 32);
    add_tlsa(&p, 4, 1, 1, 32);                 /* unknown usage: ignored */
    dane_host_verdict(p.b, p.n, true, h);
    assert_int_equal(h->verdict, DANE_AUTH);
    assert_int_equal(h->n, 1);
    assert_int_equal(h->tlsa[0].usage, 3);
    /* same answer without AD, or from an untrusted resolver: DANE does not apply */
    dane_host_verdict(p.b, p.n, false, h);
    assert_int_equal(h->verdict, DANE_NONE);
    start(&p, 0, false);
    add_tlsa(&p, 3, 1, 1, 32);
    dane_host_verdict(p.b, p.n, true, h);
    assert_int_equal(h->verdict, DANE_NONE);
    /* secure but every record unusable: mandatory TLS without authentication */
    start(&p, 0, true);
    add_tlsa(&p, 1, 1, 1, 32);
    add_tlsa(&p, 4, 0, 0, 10);
    add_tlsa(&p, 3, 1, 2, 32);
    dane_host_verdict(p.b, p.n, true, h);
    assert_int_equal(h->verdict, DANE_ENCRYPT);
    assert_int_equal(h->n, 0);
    /* NODATA and NXDOMAIN: no TLSA */
    start(&p, 0, true);
    dane_host_verdict(p.b, p.n, true, h);
    assert_int_equal(h->verdict, DANE_NONE);
    start(&p, 3, true);
    dane_host_verdict(p.b, p.n, true, h);
    assert_int_equal(h->verdict, DANE_NONE);
    /* SERVFAIL, garbage, timeout: the host is unusable */
    start(&p, 2, false);
    dane_host_verdict(p.b, p.n, true, h);
    assert_int_equal(h->verdict, DANE_FAIL);
    dane_host_verdict(p.b, 5, true, h);
    assert_int_equal(h->verdict, DANE_FAIL);
    dane_host_verdict(NULL, 0, true, h);
    assert_int_equal(h->verdict, DANE_FAIL);
    assert_string_equal(dane_verdict_name(DANE_AUTH), "dane-auth");
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dnsrec),
        cmocka_unit_test(test_usable),
        cmocka_unit_test(test_verdict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
