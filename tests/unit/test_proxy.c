/* Unit tests for the PROXY protocol parser: v1 TCP4/TCP6/UNKNOWN, v2 PROXY/LOCAL
 * with TLVs, every split point (resumable), malformed and oversized headers.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "smtp/proxy.h"
#include "util/cidr.h"
#include "util/result.h"

/* Every strict prefix must be PT_AGAIN, the whole input PT_OK with len = hlen. */
static void check_all_splits(const void *in, size_t n, size_t hlen, struct proxy_header *h)
{
    for (size_t k = 0; k < hlen; k++)
        assert_int_equal(proxy_parse(in, k, h), PT_AGAIN);
    assert_int_equal(proxy_parse(in, n, h), PT_OK);
    assert_int_equal(h->len, hlen);
}

static void src_is(const struct proxy_header *h, const char *ip, int port)
{
    char s[64];
    cidr_addr_str((const struct sockaddr *)&h->src, s, sizeof s);
    assert_string_equal(s, ip);
    uint16_t p = h->src.ss_family == AF_INET ? ((const struct sockaddr_in *)&h->src)->sin_port
                                             : ((const struct sockaddr_in6 *)&h->src)->sin6_port;
    assert_int_equal(ntohs(p), port);
}

static void test_v1_tcp4(void **st)
{
    const char in[] = "PROXY TCP4 192.0.2.7 127.0.0.1 56324 2525\r\nEHLO x\r\n";
    struct proxy_header h;
    size_t hlen = strlen("PROXY TCP4 192.0.2.7 127.0.0.1 56324 2525\r\n");
    check_all_splits(in, sizeof in - 1, hlen, &h);
    assert_int_equal(h.version, 1);
    assert_false(h.local);
    src_is(&h, "192.0.2.7", 56324);
}

static void test_v1_tcp6_and_unknown(void **st)
{
    struct proxy_header h;
    const char in6[] = "PROXY TCP6 2001:db8::1 ::1 65535 25\r\n";
    check_all_splits(in6, sizeof in6 - 1, sizeof in6 - 1, &h);
    src_is(&h, "2001:db8::1", 65535);
    const char unk[] = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    check_all_splits(unk, sizeof unk - 1, sizeof unk - 1, &h);
    assert_true(h.local);
    assert_int_equal(proxy_parse("PROXY UNKNOWN\r\n", 15, &h), PT_OK);
    assert_true(h.local);
}

static void test_v1_invalid(void **st)
{
    struct proxy_header h;
    static const char *const bad[] = {
        "EHLO x\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        "PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY\r\n", "PROXY \r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = proxy_parse(bad[i], strlen(bad[i]), &h);
        if (rc != PT_INVALID)
            fail_msg("%zu: \"%s\" gave %d", i, bad[i], rc);
    }
    char longline[200];
    memset(longline, 'A', sizeof longline);
    memcpy(longline, "PROXY UNKNOWN ", 14);
    assert_int_equal(proxy_parse(longline, 105, &h), PT_AGAIN);
    assert_int_equal(proxy_parse(longline, 106, &h), PT_TOOLONG);
    assert_int_equal(proxy_parse(longline, sizeof longline, &h), PT_TOOLONG);
    memcpy(longline + 105, "\r\n", 2);          /* exactly 107 bytes: the bound */
    assert_int_equal(proxy_parse(longline, 106, &h), PT_AGAIN);
    assert_int_equal(proxy_parse(longline, 107, &h), PT_OK);
    assert_int_equal(h.len, 107);
    memcpy(longline + 105, "A\r\n", 3);         /* 108 bytes: over */
    assert_int_equal(proxy_parse(longline, 108, &h), PT_TOOLONG);
}

static size_t v2(uint8_t *b, int cmd, int fam, const uint8_t *addr, size_t alen, size_t tlv)
{
    static const uint8_t sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55,
                                     0x49, 0x54, 0x0A };
    memcpy(b, sig, 12);
    b[12] = (uint8_t)(0x20 | cmd);
    b[13] = (uint8_t)fam;
    size_t plen = alen + tlv;
    b[14] = (uint8_t)(plen >> 8);
    b[15] = (uint8_t)plen;
    memcpy(b + 16, addr, alen);
    for (size_t i = 0; i < tlv; i++)
        b[16 + alen + i] = (uint8_t)(i * 7);
    return 16 + plen;
}

static void test_v2_tcp4_tlv(void **st)
{
    uint8_t b[256], a[12] = { 198, 51, 100, 9, 127, 0, 0, 1, 0x1F, 0x90, 0x09, 0xDD };
    size_t n = v2(b, 1, 0x11, a, sizeof a, 20);
    memcpy(b + n, "EHLO", 4);
    struct proxy_header h;
    check_all_splits(b, n + 4, n, &h);
    assert_int_equal(h.version, 2);
    assert_false(h.local);
    src_is(&h, "198.51.100.9", 8080);
}

static void test_v2_tcp6_local(void **st)
{
    uint8_t b[256], a[36] = { 0x20, 0x01, 0x0d, 0xb8 };
    a[15] = 5;
    a[31] = 1;
    a[32] = 0x30;
    a[33] = 0x39;
    struct proxy_header h;
    size_t n = v2(b, 1, 0x21, a, sizeof a, 0);
    check_all_splits(b, n, n, &h);
    src_is(&h, "2001:db8::5", 12345);
    n = v2(b, 0, 0x00, a, 0, 0);      /* LOCAL, UNSPEC: HAProxy's health check */
    check_all_splits(b, n, n, &h);
    assert_true(h.local);
    n = v2(b, 0, 0x11, a, 12, 3);     /* LOCAL with addresses: still the real peer */
    check_all_splits(b, n, n, &h);
    assert_true(h.local);
}

static void test_v2_invalid(void **st)
{
    uint8_t b[8192], a[36] = { 0 };
    struct proxy_header h;
    size_t n = v2(b, 1, 0x11, a, 12, 0);
    b[12] = 0x11;                               /* version 1 in a v2 header */
    assert_int_equal(proxy_parse(b, n, &h), PT_INVALID);
    assert_int_equal(proxy_parse(b, 13, &h), PT_INVALID);
    n = v2(b, 2, 0x11, a, 12, 0);               /* command 2 */
    assert_int_equal(proxy_parse(b, n, &h), PT_INVALID);
    n = v2(b, 1, 0x11, a, 8, 0);                /* TCP4 with a short address block */
    assert_int_equal(proxy_parse(b, n, &h), PT_INVALID);
    n = v2(b, 1, 0x21, a, 20, 0);               /* TCP6 too short */
    assert_int_equal(proxy_parse(b, n, &h), PT_INVALID);
    n = v2(b, 1, 0x12, a, 12, 0);               /* UDP4 */
    assert_int_equal(proxy_parse(b, n, &h), PT_INVALID);
    n = v2(b, 1, 0x41, a, 12, 0);               /* family 4 */
    assert_int_equal(proxy_parse(b, n, &h), PT_INVALID);
    n = v2(b, 1, 0x11, a, 12, PROXY_V2_MAX_PAYLOAD);  /* payload over our bound */
    assert_int_equal(proxy_parse(b, 16, &h), PT_TOOLONG);
    n = v2(b, 1, 0x11, a, 12, 0);
    b[5] = 0x0E;                                /* broken signature */
    assert_int_equal(proxy_parse(b, 6, &h), PT_INVALID);
    assert_int_equal(proxy_parse("\r\n\r\n", 4, &h), PT_AGAIN);
    assert_int_equal(proxy_parse("\r\n\r\r", 4, &h), PT_INVALID);
    assert_int_equal(proxy_parse("", 0, &h), PT_AGAIN);
    assert_string_equal(proxy_strerror(PT_TOOLONG), "PROXY header too long");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),     cmocka_unit_test(test_v1_tcp6_and_unknown),
        cmocka_unit_test(test_v1_invalid),  cmocka_unit_test(test_v2_tcp4_tlv),
        cmocka_unit_test(test_v2_tcp6_local), cmocka_unit_test(test_v2_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
