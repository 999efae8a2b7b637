/* Unit tests for the small util modules: CIDR parsing and matching, config value
 * parsers (durations, sizes, host:port) and time formatting.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "util/cidr.h"
#include "util/parse.h"
#include "util/result.h"
#include "util/timeutil.h"

/* ---- cidr ---- */

/* A sockaddr for a numeric address, v4 or v6 (storage owned by the caller). */
static const struct sockaddr *tu_addr(const char *ip, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(25);
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(25);
    }
    return (const struct sockaddr *)ss;
}

static bool tu_match(const char *range, const char *ip)
{
    struct cidr c;
    struct sockaddr_storage ss;
    assert_int_equal(cidr_parse(range, &c), PT_OK);
    return cidr_match(&c, tu_addr(ip, &ss));
}

static void test_cidr_parse(void **state)
{
    struct cidr c;

    assert_int_equal(cidr_parse("10.0.0.0/8", &c), PT_OK);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 8);
    assert_int_equal(cidr_parse("10.1.2.3/8", &c), PT_OK); /* host bits masked off */
    assert_int_equal(c.addr[1], 0);
    assert_int_equal(c.addr[3], 0);
    assert_int_equal(cidr_parse("192.0.2.1", &c), PT_OK);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(cidr_parse("::1/128", &c), PT_OK);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(cidr_parse("::1", &c), PT_OK);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(cidr_parse("0.0.0.0/0", &c), PT_OK);
    assert_int_equal(cidr_parse("::/0", &c), PT_OK);
    assert_int_equal(cidr_parse("172.16.0.0/12", &c), PT_OK);
    assert_int_equal(cidr_parse("fe80::/10", &c), PT_OK);
    assert_int_equal(c.addr[0], 0xfe);
    assert_int_equal(c.addr[1], 0x80);

    static const char *const bad[] = {
        "", "/8", "10.0.0.0/", "10.0.0.0/33", "::1/129", "10.0.0.0/-1", "10.0.0.0/+8",
        "10.0.0.0/8x", "10.0.0.0/ 8", " 10.0.0.0/8", "10.0.0/8", "10.0.0.256", "foo",
        "10.0.0.0/8/8", "::1/1280", "fe80::1%eth0", "1.2.3.4/0008", "localhost",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cidr_parse(bad[i], &c) != PT_INVALID)
            fail_msg("cidr_parse accepted \"%s\"", bad[i]);
    }
    assert_int_equal(cidr_parse(NULL, &c), PT_INVALID);
}

static void test_cidr_match(void **state)
{
    assert_true(tu_match("10.0.0.0/8", "10.255.1.2"));
    assert_false(tu_match("10.0.0.0/8", "11.0.0.1"));
    assert_true(tu_match("172.16.0.0/12", "172.31.255.255"));
    assert_false(tu_match("172.16.0.0/12", "172.32.0.0"));
    assert_true(tu_match("192.0.2.7/32", "192.0.2.7"));
    assert_false(tu_match("192.0.2.7/32", "192.0.2.6"));
    assert_true(tu_match("192.0.2.7", "192.0.2.7"));
    assert_true(tu_match("0.0.0.0/0", "203.0.113.9"));
    assert_true(tu_match("1.2.3.4/0", "9.9.9.9"));
    assert_true(tu_match("192.0.2.0/25", "192.0.2.127"));
    assert_false(tu_match("192.0.2.0/25", "192.0.2.128"));

    assert_true(tu_match("::1/128", "::1"));
    assert_false(tu_match("::1/128", "::2"));
    assert_true(tu_match("2001:db8::/32", "2001:db8:ffff::1"));
    assert_false(tu_match("2001:db8::/32", "2001:db9::1"));
    assert_true(tu_match("fe80::/10", "febf::1"));
    assert_false(tu_match("fe80::/10", "fec0::1"));
    assert_true(tu_match("::/0", "2001:db8::1"));

    /* IPv4-mapped IPv6 clients (dual-stack listener) match IPv4 ranges */
    assert_true(tu_match("127.0.0.0/8", "::ffff:127.0.0.1"));
    assert_true(tu_match("10.0.0.0/8", "::ffff:10.9.8.7"));
    assert_false(tu_match("10.0.0.0/8", "::ffff:11.0.0.1"));
    assert_true(tu_match("0.0.0.0/0", "::ffff:1.2.3.4"));
    /* but a plain v6 address never matches a v4 range */
    assert_false(tu_match("0.0.0.0/0", "::1"));
    assert_false(tu_match("0.0.0.0/0", "::a00:1")); /* IPv4-compatible, not mapped */
    /* and a v4 client matches a v6 range only through its mapped form */
    assert_true(tu_match("::ffff:0:0/96", "10.0.0.1"));
    assert_false(tu_match("::1/128", "127.0.0.1"));

    struct cidr list[2];
    struct sockaddr_storage ss;
    assert_int_equal(cidr_parse("127.0.0.0/8", &list[0]), PT_OK);
    assert_int_equal(cidr_parse("::1/128", &list[1]), PT_OK);
    assert_true(cidr_match_any(list, 2, tu_addr("::1", &ss)));
    assert_true(cidr_match_any(list, 2, tu_addr("127.0.0.2", &ss)));
    assert_false(cidr_match_any(list, 2, tu_addr("192.0.2.1", &ss)));
    assert_false(cidr_match_any(list, 0, tu_addr("127.0.0.1", &ss)));
    assert_false(cidr_match(&list[0], NULL));

    struct sockaddr unix_sa = {.sa_family = AF_UNIX};
    assert_false(cidr_match(&list[0], &unix_sa));
}

static void test_cidr_addr_str(void **state)
{
    struct sockaddr_storage ss;
    char out[64];

    cidr_addr_str(tu_addr("192.0.2.1", &ss), out, sizeof out);
    assert_string_equal(out, "192.0.2.1");
    cidr_addr_str(tu_addr("2001:db8::1", &ss), out, sizeof out);
    assert_string_equal(out, "2001:db8::1");
    cidr_addr_str(tu_addr("::ffff:10.1.2.3", &ss), out, sizeof out);
    assert_string_equal(out, "10.1.2.3");
    cidr_addr_str(NULL, out, sizeof out);
    assert_string_equal(out, "unknown");
    cidr_addr_str(tu_addr("192.0.2.1", &ss), out, 4);
    assert_string_equal(out, "192");
}

/* ---- parse ---- */

static void tu_dur(const char *s, double want)
{
    double v = -1;
    if (parse_duration(s, &v) != PT_OK)
        fail_msg("parse_duration(\"%s\") failed", s);
    if (v < want - 1e-9 || v > want + 1e-9)
        fail_msg("parse_duration(\"%s\") = %f, want %f", s, v, want);
}

static void test_parse_duration(void **state)
{
    tu_dur("30s", 30);
    tu_dur("5m", 300);
    tu_dur("72h", 72 * 3600);
    tu_dur("7d", 7 * 86400);
    tu_dur("30", 30);
    tu_dur("0", 0);
    tu_dur("0s", 0);
    tu_dur("1.5h", 5400);
    tu_dur("250ms", 0.25);
    tu_dur("0.5", 0.5);
    tu_dur("36500d", 36500.0 * 86400);

    static const char *const bad[] = {
        "", "s", "-5s", "+5s", "5x", "5 s", " 5s", "5s ", "5ss", "5S", "1e3", "0x10",
        "inf", "nan", ".5s", "5.s", "5..1s", "1.2.3s", "5sm", "99999999999d", "5mss",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v = 42;
        if (parse_duration(bad[i], &v) != PT_INVALID)
            fail_msg("parse_duration accepted \"%s\"", bad[i]);
        assert_true(v == 42); /* untouched on error */
    }
    double v;
    assert_int_equal(parse_duration(NULL, &v), PT_INVALID);
}

static void tu_size(const char *s, uint64_t want)
{
    uint64_t v = 0;
    if (parse_size(s, &v) != PT_OK)
        fail_msg("parse_size(\"%s\") failed", s);
    if (v != want)
        fail_msg("parse_size(\"%s\") = %llu", s, (unsigned long long)v);
}

static void test_parse_size(void **state)
{
    tu_size("25MB", 25ull << 20);
    tu_size("512KB", 512ull << 10);
    tu_size("1GB", 1ull << 30);
    tu_size("1000", 1000);
    tu_size("0", 0);
    tu_size("100B", 100);
    tu_size("100b", 100);
    tu_size("25mb", 25ull << 20);
    tu_size("3k", 3072);
    tu_size("2M", 2ull << 20);
    tu_size("4g", 4ull << 30);
    tu_size("18446744073709551615", UINT64_MAX);
    tu_size("17179869183G", 17179869183ull << 30);

    static const char *const bad[] = {
        "", "MB", "-1", "+1", "1.5MB", "25 MB", " 25MB", "25MB ", "25MBB", "25TB", "25BB",
        "25KBx", "18446744073709551616", "17179869184G", "0x10", "25M B", "1e6",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 42;
        if (parse_size(bad[i], &v) != PT_INVALID)
            fail_msg("parse_size accepted \"%s\"", bad[i]);
        assert_true(v == 42);
    }
}

static void tu_hp(const char *s, const char *host, uint16_t port, int bracketed)
{
    char h[256];
    uint16_t p = 0;
    int br = -1;
    if (parse_hostport(s, h, &p, &br, 25) != PT_OK)
        fail_msg("parse_hostport(\"%s\") failed", s);
    assert_string_equal(h, host);
    assert_int_equal(p, port);
    assert_int_equal(br, bracketed);
}

static void test_parse_hostport(void **state)
{
    tu_hp("127.0.0.1:2525", "127.0.0.1", 2525, 0);
    tu_hp("[::]:2525", "::", 2525, 1);
    tu_hp("[::1]:8080", "::1", 8080, 1);
    tu_hp("[smtp.example.com]:587", "smtp.example.com", 587, 1);
    tu_hp("[smtp.example.com]", "smtp.example.com", 25, 1);
    tu_hp("mx.example.com", "mx.example.com", 25, 0);
    tu_hp("mx.example.com:2525", "mx.example.com", 2525, 0);
    tu_hp("localhost:0", "localhost", 0, 0);
    tu_hp("h:65535", "h", 65535, 0);
    tu_hp("2001:db8::1", "2001:db8::1", 25, 0); /* bare IPv6: no port possible */
    tu_hp("[2001:db8::1]:26", "2001:db8::1", 26, 1);

    static const char *const bad[] = {
        "", ":25", "[]:25", "[::1", "[::1]x", "[::1]:", "h:", "h:65536", "h:-1", "h:2a",
        "h:25:26", "bad host:25", "h/x:25", "[a b]:25", "1:2:3", "::zz", "h: 25",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char h[256];
        uint16_t p = 7;
        if (parse_hostport(bad[i], h, &p, NULL, 25) != PT_INVALID)
            fail_msg("parse_hostport accepted \"%s\"", bad[i]);
    }

    /* host room is 256 bytes: 255 octets fit, 256 do not */
    char longhost[300], h[256];
    uint16_t p;
    memset(longhost, 'a', 255);
    strcpy(longhost + 255, ":25");
    assert_int_equal(parse_hostport(longhost, h, &p, NULL, 25), PT_OK);
    assert_int_equal(strlen(h), 255);
    memset(longhost, 'a', 256);
    strcpy(longhost + 256, ":25");
    assert_int_equal(parse_hostport(longhost, h, &p, NULL, 25), PT_INVALID);
}

/* ---- timeutil ---- */

static void test_time_formats(void **state)
{
    char out[64];

    time_rfc3339(0, out, sizeof out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    time_rfc3339(1795477082.123, out, sizeof out);
    assert_string_equal(out, "2026-11-23T23:38:02.123Z");
    time_rfc3339(1795477082.9999, out, sizeof out); /* truncated, not rounded up */
    assert_string_equal(out, "2026-11-23T23:38:02.999Z");
    time_rfc3339(951782400.5, out, sizeof out); /* leap day */
    assert_string_equal(out, "2000-02-29T00:00:00.500Z");
    time_rfc3339(-0.25, out, sizeof out);
    assert_string_equal(out, "1969-12-31T23:59:59.750Z");
    time_rfc3339(1e300, out, sizeof out); /* unrepresentable: the epoch */
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");

    time_rfc5322(1795477082.7, out, sizeof out);
    assert_string_equal(out, "Mon, 23 Nov 2026 23:38:02 +0000");
    time_rfc5322(0, out, sizeof out);
    assert_string_equal(out, "Thu, 1 Jan 1970 00:00:00 +0000");

    time_rfc3339(0, out, 5);
    assert_string_equal(out, "1970");
}

static void test_time_clocks(void **state)
{
    double now = time_now();
    assert_true(now > 1.6e9); /* after 2020 */
    uint64_t a = time_mono_ms();
    uint64_t b = time_mono_ms();
    assert_true(b >= a);
    char out[32];
    time_rfc3339(now, out, sizeof out);
    assert_int_equal(strlen(out), 24);
    assert_int_equal(out[23], 'Z');
    assert_int_equal(out[19], '.');
}

static void test_time_mono(void **state)
{
    (void)state;
    double m = time_mono();
    assert_true(m > 0);
    assert_true(time_mono() >= m);
    /* wall <-> monotonic at the same instant, both ways */
    double w = time_now();
    assert_true(fabs(time_mono_at(w + 60) - (m + 60)) < 0.5);
    assert_true(fabs(time_wall_at(time_mono() - 30) - (w - 30)) < 0.5);
}

static void test_time_ticks(void **state)
{
    (void)state;
    /* rounded up: a deadline never comes early */
    assert_int_equal(time_tick(0.3), 3);
    assert_int_equal(time_tick(0.31), 4);
    assert_int_equal(time_tick(12345.6), 123456);
    assert_true(time_tick_mono(time_tick(777.77)) >= 777.77);
    assert_true(time_tick_mono(time_tick(777.77)) - 777.77 < TIME_TICK_S + 1e-9);
    /* the ends of the range */
    assert_int_equal(time_tick(0), 0);
    assert_int_equal(time_tick(-5), 0);
    assert_int_equal(time_tick(1e12), UINT32_MAX);
    assert_int_equal(time_tick(NAN), UINT32_MAX);
    assert_int_equal(time_tick(INFINITY), UINT32_MAX);
    /* 13 years of uptime fit */
    assert_true(time_tick(13.0 * 365 * 86400) < UINT32_MAX);
    assert_true(fabs(time_tick_mono(time_tick(1e8)) - 1e8) < 1e-6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_parse),
        cmocka_unit_test(test_cidr_match),
        cmocka_unit_test(test_cidr_addr_str),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_time_formats),
        cmocka_unit_test(test_time_clocks),
        cmocka_unit_test(test_time_mono),
        cmocka_unit_test(test_time_ticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
