/* Unit tests of util/regex.c: ordinary configured patterns compile; patterns that
 * would make glibc's regcomp build an enormous automaton are refused before it runs.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "util/regex.h"
#include "util/result.h"

static void test_ordinary_patterns(void **state)
{
    static const char *const ok[] = {
        "^Received:", "^X-Originating-IP:", "421 4\\.7\\.(0|28) .*(rate limit|Try again)",
        "5\\.7\\.1 .*(blocked|blacklisted)", "[[:alpha:]]+@[a-z.]{2,63}", "a]b", "x{3}",
        "(ab|cd)*e?f+", "[]a-]+", "",
    };
    char err[256];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        regex_t re;
        assert_int_equal(regex_compile(&re, ok[i], REG_EXTENDED | REG_NOSUB, err, sizeof err),
                         PT_OK);
        regfree(&re);
    }
}

static void test_explosive_patterns_refused(void **state)
{
    char err[256], p[200];
    /* the fuzzer's find: stacked '+' double the tree each (2^60 copies) */
    memset(p, '+', sizeof p);
    p[0] = '0';
    p[sizeof p - 1] = 0;
    assert_int_equal(regex_check(p, err, sizeof err), PT_INVALID);
    assert_non_null(strstr(err, "too complex"));
    regex_t re;
    assert_int_equal(regex_compile(&re, p, REG_EXTENDED, err, sizeof err), PT_INVALID);
    assert_non_null(strstr(err, "invalid regex '0+++"));
    assert_int_equal(regex_check("((a{99}){99}){99}", err, sizeof err), PT_INVALID);
    assert_int_equal(regex_check("(((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))",
                                 err, sizeof err), PT_INVALID);
    char longp[REGEX_MAX_LEN + 2];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    assert_int_equal(regex_check(longp, err, sizeof err), PT_INVALID);
    assert_int_equal(regex_check("(a{60}){60}", err, sizeof err), PT_OK);  /* 3,721 copies */
}

static void test_syntax_errors_come_from_regcomp(void **state)
{
    char err[256];
    regex_t re;
    assert_int_equal(regex_compile(&re, "a[b", REG_EXTENDED, err, sizeof err), PT_INVALID);
    assert_non_null(strstr(err, "invalid regex 'a[b'"));
    assert_int_equal(regex_compile(&re, "(ab", REG_EXTENDED, err, sizeof err), PT_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordinary_patterns),
        cmocka_unit_test(test_explosive_patterns_refused),
        cmocka_unit_test(test_syntax_errors_come_from_regcomp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
