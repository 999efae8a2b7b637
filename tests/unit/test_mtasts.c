/* Unit tests for delivery/mtasts: the _mta-sts TXT record, the policy file (RFC 8461
 * §3.1-3.2, valid and invalid), MX pattern matching (§4.1), the cache file round
 * trip and the cache decision (§5.1).
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "delivery/mtasts.h"
#include "util/result.h"

static int txt(const char *s, char id[MTASTS_ID_MAX + 1])
{
    return mtasts_parse_txt(s, strlen(s), id);
}

static void test_txt_record(void **state)
{
    (void)state;
    char id[MTASTS_ID_MAX + 1];
    assert_int_equal(txt("v=STSv1; id=20160831085700Z;", id), PT_OK);
    assert_string_equal(id, "20160831085700Z");
    assert_int_equal(txt("v=STSv1;id=abc", id), PT_OK);
    assert_string_equal(id, "abc");
    assert_int_equal(txt("v=STSv1 ; id=abc ; ext_1=foo.bar ;", id), PT_OK);
    assert_string_equal(id, "abc");
    /* other TXT at that name: not ours */
    assert_int_equal(txt("google-site-verification=xyz", id), PT_NOTFOUND);
    assert_int_equal(txt("v=spf1 -all", id), PT_NOTFOUND);
    /* malformed STSv1 records */
    assert_int_equal(txt("v=STSv1", id), PT_INVALID);
    assert_int_equal(txt("v=STSv1;", id), PT_INVALID);
    assert_int_equal(txt("v=STSv1; id=", id), PT_INVALID);
    assert_int_equal(txt("v=STSv1; id=a-b", id), PT_INVALID);
    assert_int_equal(txt("v=STSv1; id=123456789012345678901234567890123", id), PT_INVALID);
    assert_int_equal(txt("v=STSv1; id=1; id=2", id), PT_INVALID);
    assert_int_equal(txt("v=STSv1 id=1", id), PT_INVALID);
    assert_int_equal(txt("v=STSv1; foo", id), PT_INVALID);
    assert_int_equal(txt("v=STSv1; x=1", id), PT_INVALID); /* no id */
    assert_int_equal(txt("v=STSv1; id=1\x01", id), PT_INVALID);
}

static int pol(const char *s, struct mtasts_policy *p)
{
    char why[128];
    return mtasts_parse_policy(s, strlen(s), p, why, sizeof why);
}

static void test_policy_valid(void **state)
{
    (void)state;
    struct mtasts_policy p;
    assert_int_equal(pol("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                         "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
                         &p), PT_OK);
    assert_int_equal(p.mode, MTASTS_ENFORCE);
    assert_int_equal(p.max_age, 604800);
    assert_int_equal(p.nmx, 3);
    assert_string_equal(p.mx[1], "*.example.net");
    /* LF only, no trailing newline, extra whitespace, unknown keys, case folded mx */
    assert_int_equal(pol("version:STSv1\nmode:   testing\nmx: MX.Example.COM.\n"
                         "max_age: 86400   \nfoo: bar baz", &p), PT_OK);
    assert_int_equal(p.mode, MTASTS_TESTING);
    assert_string_equal(p.mx[0], "mx.example.com");
    /* mode none needs no mx */
    assert_int_equal(pol("version: STSv1\nmode: none\nmax_age: 0\n", &p), PT_OK);
    assert_int_equal(p.mode, MTASTS_NONE);
    assert_int_equal(p.max_age, 0);
    /* first of a repeated key counts */
    assert_int_equal(pol("version: STSv1\nmode: testing\nmode: enforce\nmx: a.b\nmax_age: 5\n"
                         "max_age: 6\n", &p), PT_OK);
    assert_int_equal(p.mode, MTASTS_TESTING);
    assert_int_equal(p.max_age, 5);
    assert_string_equal(mtasts_mode_name(MTASTS_ENFORCE), "enforce");
}

static void test_policy_invalid(void **state)
{
    (void)state;
    struct mtasts_policy p;
    const char *bad[] = {
        "",
        "<html>not a policy</html>",
        "mode: enforce\nmx: a.b\nmax_age: 5\n",                      /* no version */
        "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 5\n",
        "version: STSv1\nmx: a.b\nmax_age: 5\n",                     /* no mode */
        "version: STSv1\nmode: reject\nmx: a.b\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: a.b\n",                  /* no max_age */
        "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n",
        "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 12345678901\n",
        "version: STSv1\nmode: enforce\nmax_age: 5\n",               /* no mx */
        "version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: *\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx:\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: a b\nmax_age: 5\n",
        "version: STSv1\nmode enforce\nmx: a.b\nmax_age: 5\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pol(bad[i], &p) != PT_INVALID)
            fail_msg("accepted: %s", bad[i]);
    }
    /* over the size cap */
    size_t n = MTASTS_POLICY_MAX + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, '\n', n);
    char why[128];
    assert_int_equal(mtasts_parse_policy(big, n, &p, why, sizeof why), PT_TOOLONG);
    free(big);
}

static void test_mx_match(void **state)
{
    (void)state;
    assert_true(mtasts_pattern_match("mail.example.com", "mail.example.com"));
    assert_true(mtasts_pattern_match("mail.example.com", "MAIL.example.com."));
    assert_false(mtasts_pattern_match("mail.example.com", "mail2.example.com"));
    assert_true(mtasts_pattern_match("*.example.com", "mx1.example.com"));
    assert_true(mtasts_pattern_match("*.example.com", "Mx1.Example.Com."));
    assert_false(mtasts_pattern_match("*.example.com", "example.com"));
    assert_false(mtasts_pattern_match("*.example.com", "a.b.example.com"));
    assert_false(mtasts_pattern_match("*.example.com", ".example.com"));
    assert_false(mtasts_pattern_match("*.example.com", "mx1.example.com.evil"));
    assert_false(mtasts_pattern_match("*.example.com", "mx1example.com"));
    struct mtasts_policy p;
    assert_int_equal(pol("version: STSv1\nmode: enforce\nmx: *.a.test\nmx: mx.b.test\n"
                         "max_age: 60\n", &p), PT_OK);
    assert_true(mtasts_mx_match(&p, "x.a.test"));
    assert_true(mtasts_mx_match(&p, "mx.b.test"));
    assert_false(mtasts_mx_match(&p, "mx.c.test"));
}

static void test_cache_file(void **state)
{
    (void)state;
    char head[128], file[512], id[MTASTS_ID_MAX + 1];
    const char *body = "version: STSv1\nmode: enforce\nmx: mx.a.test\nmax_age: 86400\n";
    assert_int_equal(mtasts_cache_header("abc123", 1700000000, head, sizeof head), PT_OK);
    snprintf(file, sizeof file, "%s%s", head, body);
    struct mtasts_policy p;
    int64_t fetched;
    assert_int_equal(mtasts_cache_parse(file, strlen(file), id, &fetched, &p), PT_OK);
    assert_string_equal(id, "abc123");
    assert_int_equal(fetched, 1700000000);
    assert_int_equal(p.mode, MTASTS_ENFORCE);
    assert_int_equal(p.max_age, 86400);
    /* damaged files are no cache */
    assert_int_equal(mtasts_cache_parse(body, strlen(body), id, &fetched, &p), PT_INVALID);
    snprintf(file, sizeof file, "petrel-mta-sts id=abc fetched=x\n%s", body);
    assert_int_equal(mtasts_cache_parse(file, strlen(file), id, &fetched, &p), PT_INVALID);
    snprintf(file, sizeof file, "petrel-mta-sts id=abc fetched=1\nmode: bogus\n");
    assert_int_equal(mtasts_cache_parse(file, strlen(file), id, &fetched, &p), PT_INVALID);
    assert_int_equal(mtasts_cache_parse("", 0, id, &fetched, &p), PT_INVALID);
}

static void test_decide(void **state)
{
    (void)state;
    assert_int_equal(mtasts_decide("1", "1"), MTASTS_USE_CACHED);
    assert_int_equal(mtasts_decide("2", "1"), MTASTS_FETCH);
    assert_int_equal(mtasts_decide("2", NULL), MTASTS_FETCH);
    assert_int_equal(mtasts_decide(NULL, "1"), MTASTS_USE_CACHED);
    assert_int_equal(mtasts_decide(NULL, NULL), MTASTS_NO_POLICY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_record),
        cmocka_unit_test(test_policy_valid),
        cmocka_unit_test(test_policy_invalid),
        cmocka_unit_test(test_mx_match),
        cmocka_unit_test(test_cache_file),
        cmocka_unit_test(test_decide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
