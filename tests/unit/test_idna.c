/* Unit tests for util/idna: U-labels to A-labels for DNS lookups (IDNA2008, UTS #46
 * nontransitional), ASCII passed through, bad names refused with a reason.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/idna.h"
#include "util/result.h"

static void conv_ok(const char *in, const char *want)
{
    char out[300], err[160];
    assert_int_equal(idna_to_ascii(in, out, sizeof out, err, sizeof err), PT_OK);
    assert_string_equal(out, want);
    assert_string_equal(err, "");
}

static void conv_bad(const char *in)
{
    char out[300], err[160];
    assert_int_not_equal(idna_to_ascii(in, out, sizeof out, err, sizeof err), PT_OK);
    assert_non_null(strstr(err, "IDNA conversion failed: "));
}

static void test_idna_ulabels(void **state)
{
    (void)state;
    conv_ok("bücher.example", "xn--bcher-kva.example");
    conv_ok("mail.bücher.example", "mail.xn--bcher-kva.example");
    conv_ok("例え.テスト", "xn--r8jz45g.xn--zckzah");
    conv_ok("_mta-sts.bücher.example", "_mta-sts.xn--bcher-kva.example");
    conv_ok("_smtp._tls.bücher.example", "_smtp._tls.xn--bcher-kva.example");
    /* nontransitional: ß stays a letter of its own (not "ss") */
    conv_ok("faß.de", "xn--fa-hia.de");
    /* NFC input: u + combining diaeresis is ü */
    conv_ok("bu\xcc\x88" "cher.example", "xn--bcher-kva.example");
}

static void test_idna_case(void **state)
{
    (void)state;
    conv_ok("BÜCHER.example", "xn--bcher-kva.example");
    conv_ok("Bücher.EXAMPLE", "xn--bcher-kva.example");
    /* ASCII names are left as they are: the DNS layer lowercases */
    conv_ok("Example.COM", "Example.COM");
}

static void test_idna_ascii_passthrough(void **state)
{
    (void)state;
    conv_ok("xn--bcher-kva.example", "xn--bcher-kva.example");
    conv_ok("XN--BCHER-KVA.example", "XN--BCHER-KVA.example");
    conv_ok("example.com", "example.com");
    assert_true(idna_is_ascii("xn--bcher-kva.example"));
    assert_false(idna_is_ascii("bücher.example"));
}

static void test_idna_invalid(void **state)
{
    (void)state;
    conv_bad("bü-.example");          /* hyphen at a label's end */
    conv_bad("-bü.example");          /* ... and at its start */
    conv_bad("b\xc3.example");        /* truncated UTF-8 */
    conv_bad("b\xff\xfe.example");    /* not UTF-8 at all */
    char out[8];
    assert_int_equal(idna_to_ascii(NULL, out, sizeof out, NULL, 0), PT_INVALID);
    /* out too small for the A-label */
    assert_int_equal(idna_to_ascii("bücher.example", out, sizeof out, NULL, 0), PT_TOOLONG);
    assert_int_equal(idna_to_ascii("example.com", out, sizeof out, NULL, 0), PT_TOOLONG);
}

static void test_idna_long_labels(void **state)
{
    (void)state;
    /* 55 'a' + 'ü' encodes to a 63-octet A-label, the longest a label may be;
     * one more 'a' is one octet too many */
    char in[300];
    memset(in, 'a', 55);
    strcpy(in + 55, "ü.example");
    char out[300];
    assert_int_equal(idna_to_ascii(in, out, sizeof out, NULL, 0), PT_OK);
    assert_int_equal(strchr(out, '.') - out, 63);
    assert_memory_equal(out, "xn--", 4);
    memset(in, 'a', 56);
    strcpy(in + 56, "ü.example");
    conv_bad(in);
    /* 70 'ü' cannot fit in one 63-octet label */
    size_t n = 0;
    for (int i = 0; i < 70; i++) {
        memcpy(in + n, "ü", 2);
        n += 2;
    }
    strcpy(in + n, ".example");
    conv_bad(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idna_ulabels),
        cmocka_unit_test(test_idna_case),
        cmocka_unit_test(test_idna_ascii_passthrough),
        cmocka_unit_test(test_idna_invalid),
        cmocka_unit_test(test_idna_long_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
