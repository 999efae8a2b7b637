/* Unit tests of the header-check engine (policy/header_checks.c): every action,
 * first match wins, unfolded matching, body untouched, compile errors.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/header_checks.h"
#include "util/result.h"

static const char MSG[] =
    "Received: from internal.corp (10.1.2.3)\r\n\tby mx.corp; Mon, 1 Jan 2024\r\n"
    "Received: from mail.example.org\r\n\tby mx.corp; Mon, 1 Jan 2024\r\n"
    "X-Originating-IP: [192.168.7.7]\r\n"
    "X-Mailer: PHPMailer 5.2\r\n"
    "Subject: hello\r\n"
    " world\r\n"
    "From: <a@b.test>\r\n"
    "\r\n"
    "X-Originating-IP: in the body stays\r\n";

static struct header_checks *build(const struct header_checks_rule *r, size_t n)
{
    struct header_checks *hc = NULL;
    size_t bad;
    char err[256];
    assert_int_equal(header_checks_new(r, n, &hc, &bad, err, sizeof err), PT_OK);
    assert_int_equal(header_checks_count(hc), n);
    return hc;
}

static void apply(const struct header_checks *hc, const char *msg, struct buf *out,
                  struct header_checks_result *res)
{
    buf_reset(out);
    assert_int_equal(header_checks_apply(hc, msg, strlen(msg), out, res), PT_OK);
}

static void test_seed_rules_hide_internal_hops(void **state)
{
    /* the seed's Postfix smtp_header_checks, as configure_header_checks entries */
    const struct header_checks_rule r[] = {
        { "^Received: from (internal|localhost|192\\.168\\.|10\\.)", "IGNORE" },
        { "^X-Originating-IP:", "IGNORE" },
        { "^X-PHP-Originating-Script:", "IGNORE" },
    };
    struct header_checks *hc = build(r, 3);
    struct buf out;
    buf_init(&out, 0);
    struct header_checks_result res;
    apply(hc, MSG, &out, &res);
    assert_int_equal(res.verdict, HEADER_CHECKS_ACCEPT);
    assert_int_equal(res.changed, 2);
    assert_string_equal(out.data,
        "Received: from mail.example.org\r\n\tby mx.corp; Mon, 1 Jan 2024\r\n"
        "X-Mailer: PHPMailer 5.2\r\n"
        "Subject: hello\r\n"
        " world\r\n"
        "From: <a@b.test>\r\n"
        "\r\n"
        "X-Originating-IP: in the body stays\r\n");
    buf_free(&out);
    header_checks_free(hc);
}

static void test_replace_prepend_warn_dunno(void **state)
{
    const struct header_checks_rule r[] = {
        { "^x-mailer:", "REPLACE X-Mailer: petrel" },         /* case-insensitive */
        { "^Subject: hello world$", "PREPEND X-Checked: yes" }, /* matched unfolded */
        { "^From:", "WARN sender seen" },
        { "^Received:", "DUNNO" },
        { "^Received:", "IGNORE" },                          /* never reached */
    };
    struct header_checks *hc = build(r, 5);
    struct buf out;
    buf_init(&out, 0);
    struct header_checks_result res;
    apply(hc, MSG, &out, &res);
    assert_int_equal(res.verdict, HEADER_CHECKS_ACCEPT);
    assert_int_equal(res.changed, 2);
    assert_int_equal(res.warnings, 1);
    assert_string_equal(res.warning, "rule 3: sender seen: From: <a@b.test>");
    assert_string_equal(out.data,
        "Received: from internal.corp (10.1.2.3)\r\n\tby mx.corp; Mon, 1 Jan 2024\r\n"
        "Received: from mail.example.org\r\n\tby mx.corp; Mon, 1 Jan 2024\r\n"
        "X-Originating-IP: [192.168.7.7]\r\n"
        "X-Mailer: petrel\r\n"
        "X-Checked: yes\r\n"
        "Subject: hello\r\n"
        " world\r\n"
        "From: <a@b.test>\r\n"
        "\r\n"
        "X-Originating-IP: in the body stays\r\n");
    buf_free(&out);
    header_checks_free(hc);
}

static void test_reject_and_discard(void **state)
{
    const struct header_checks_rule r[] = {
        { "^Subject:.*viagra", "REJECT 5.7.1 message content rejected" },
        { "^Subject:.*lottery", "REJECT no lotteries" },
        { "^Subject:.*casino", "REJECT" },
        { "^Subject:.*drop", "DISCARD" },
    };
    struct header_checks *hc = build(r, 4);
    struct buf out;
    buf_init(&out, 0);
    buf_appends(&out, "kept");
    struct header_checks_result res;
    const char *m = "From: a\r\nSubject: cheap\r\n VIAGRA now\r\n\r\nbody\r\n";
    assert_int_equal(header_checks_apply(hc, m, strlen(m), &out, &res), PT_OK);
    assert_int_equal(res.verdict, HEADER_CHECKS_REJECT);
    assert_string_equal(res.text, "5.7.1 message content rejected");
    assert_int_equal(res.rule, 0);
    assert_string_equal(out.data, "kept");   /* untouched on refusal */
    m = "Subject: lottery\r\n\r\n";
    assert_int_equal(header_checks_apply(hc, m, strlen(m), &out, &res), PT_OK);
    assert_string_equal(res.text, "5.7.1 no lotteries");
    m = "Subject: casino\r\n\r\n";
    assert_int_equal(header_checks_apply(hc, m, strlen(m), &out, &res), PT_OK);
    assert_string_equal(res.text, "5.7.1 message content rejected");
    m = "Subject: drop me\r\n\r\n";
    assert_int_equal(header_checks_apply(hc, m, strlen(m), &out, &res), PT_OK);
    assert_int_equal(res.verdict, HEADER_CHECKS_DISCARD);
    assert_int_equal(res.rule, 3);
    /* the body never matches */
    m = "From: a\r\n\r\nSubject: viagra\r\n";
    buf_reset(&out);
    assert_int_equal(header_checks_apply(hc, m, strlen(m), &out, &res), PT_OK);
    assert_int_equal(res.verdict, HEADER_CHECKS_ACCEPT);
    assert_string_equal(out.data, m);
    buf_free(&out);
    header_checks_free(hc);
}

static void test_no_rules_is_identity(void **state)
{
    struct header_checks *hc = build(NULL, 0);
    struct buf out;
    buf_init(&out, 0);
    struct header_checks_result res;
    apply(hc, MSG, &out, &res);
    assert_string_equal(out.data, MSG);
    apply(NULL, MSG, &out, &res);
    assert_string_equal(out.data, MSG);
    buf_free(&out);
    header_checks_free(hc);
    header_checks_free(NULL);
}

static void bad_rule(const char *pattern, const char *action, const char *want)
{
    const struct header_checks_rule r[] = { { "^A:", "IGNORE" }, { pattern, action } };
    struct header_checks *hc = NULL;
    size_t bad = 99;
    char err[256];
    assert_int_equal(header_checks_new(r, 2, &hc, &bad, err, sizeof err), PT_INVALID);
    assert_null(hc);
    assert_int_equal(bad, 1);
    if (!strstr(err, want))
        fail_msg("error '%s' does not mention '%s'", err, want);
}

static void test_compile_errors(void **state)
{
    bad_rule("^Subject: (", "IGNORE", "invalid regex");
    bad_rule("^A:", "DROP", "invalid action 'DROP'");
    bad_rule("^A:", "IGNORE me", "takes no text");
    bad_rule("^A:", "PREPEND", "needs a header line");
    bad_rule("^A:", "REPLACE not a header", "one header line");
    bad_rule("^A:", "PREPEND : empty name", "one header line");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_rules_hide_internal_hops),
        cmocka_unit_test(test_replace_prepend_warn_dunno),
        cmocka_unit_test(test_reject_and_discard),
        cmocka_unit_test(test_no_rules_is_identity),
        cmocka_unit_test(test_compile_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
