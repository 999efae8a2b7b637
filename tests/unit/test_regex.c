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
        /* word boundaries, optional runs, ranges: what header checks are written with */
        "\\bviagra\\b", "^Subject:.*\\<(free|win)\\>", "[a-z0-9-]{0,63}(\\.[a-z0-9-]{0,63})*",
        "^Received: from [a-z0-9-]{0,63}(\\.[a-z0-9-]{0,63}){0,10}", "(\\.[a-z]+){1,10}",
        "^(From|To|Cc):.*\\b(foo|bar)\\b", "(a*)*", "( *, *[a-z]*)?", "(^|,)x", "a{0,1000}",
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
    assert_non_null(strstr(err, "a repetition of a repetition at offset 2"));
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

/* Each took glibc's regcomp from seconds to minutes (measured natively, DESIGN of
 * regex.h), though within the size budget; each is refused, and says why. */
static void test_slow_patterns_refused(void **state)
{
    static const struct { const char *pattern, *why; } slow[] = {
        /* fuzz_header_checks' timeout (2026-12-07): an empty group, 11 '+' stacked */
        { "\xd5(\"\xd4)S\xdc\xd4()+++++++++++\x95++", "a repetition of a repetition" },
        { "a+?", "no lazy" },
        { "a**", "a repetition of a repetition" },
        { "x{2}{3}", "a repetition of a repetition at offset 4 ('{3}')" },
        { "(\\b){40}", "repeats an anchor" },
        { "(^){200}", "repeats an anchor" },
        { "(a\\1){9}", "repeats an anchor" },
        { "(^|,)+", "repeats an anchor" },
        { "(a*){255}", "what can match nothing" },
        { "(|a){1,40}b?(|a){255}", "what can match nothing" },
        { "((a?){9}){9}", "what can match nothing" },
        { "[a-z]{0,4000}", "optional copies" },
        /* fuzz_header_checks' out-of-memory (2026-12-07): "{,n}" is "{0,n}" to glibc */
        { "I{,22222}`", "copies" },
        { "a{,2000}", "optional copies" },
        { "\\b(a|){1,40}[a-z]{0,500}\\<", "with a word boundary" },
        { "\\b[a-z]{0,300}", "with a word boundary" },
        { "(a{0,30}){0,40}", "optional copies" },
        { "\\b(a|)\\b(a|)\\b(a|)\\b(a|)\\b(a|)\\b(a|)\\b(a|)\\b(a|)\\b(a|)", "word boundaries" },
    };
    char err[256];
    for (size_t i = 0; i < sizeof slow / sizeof slow[0]; i++) {
        err[0] = 0;
        if (regex_check(slow[i].pattern, err, sizeof err) != PT_INVALID ||
            !strstr(err, slow[i].why))
            fail_msg("'%s': expected '%s', got '%s'", slow[i].pattern, slow[i].why, err);
    }
    /* just within each budget */
    static const char *const fine[] = {
        "(|a){63}", "(a?){31}", "(a{1,30}){0,32}", "a{0,1024}",
        "\\b\\b\\b\\b\\b\\b\\b\\b", "\\b(a|){1,15}[a-z]{0,240}\\<",
    };
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++)
        if (regex_check(fine[i], err, sizeof err) != PT_OK)
            fail_msg("'%s' refused: %s", fine[i], err);
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
        cmocka_unit_test(test_slow_patterns_refused),
        cmocka_unit_test(test_syntax_errors_come_from_regcomp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
