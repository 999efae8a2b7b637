/* Unit tests of util/base64.c: RFC 4648 test vectors both ways, round trips of
 * every length, MIME line wrapping, bad input, canonical pad bits, bounds.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "util/base64.h"
#include "util/result.h"

static const char *const vec[][2] = {
    { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
};

static void test_rfc4648_vectors(void **state)
{
    char out[32];
    unsigned char dec[32];
    size_t n;
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        assert_int_equal(base64_encode(vec[i][0], strlen(vec[i][0]), out, sizeof out), PT_OK);
        assert_string_equal(out, vec[i][1]);
        assert_int_equal(base64_encoded_len(strlen(vec[i][0])), strlen(vec[i][1]));
        assert_int_equal(base64_decode(vec[i][1], strlen(vec[i][1]), BASE64_CANONICAL, dec,
                                       sizeof dec, &n), PT_OK);
        assert_int_equal(n, strlen(vec[i][0]));
        assert_memory_equal(dec, vec[i][0], n);
    }
    assert_int_equal(base64_encode("foo", 3, out, 4), PT_TOOLONG);   /* no room for NUL */
    assert_int_equal(base64_decode("Zm9vYmFy", 8, 0, dec, 5, &n), PT_TOOLONG);
}

static void test_round_trip_every_length(void **state)
{
    unsigned char in[300], dec[300];
    char enc[420];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(i * 37 + 11);
    for (size_t len = 0; len <= sizeof in; len++) {
        size_t n;
        assert_int_equal(base64_encode(in, len, enc, sizeof enc), PT_OK);
        assert_int_equal(base64_decode(enc, strlen(enc), BASE64_CANONICAL, dec, sizeof dec, &n),
                         PT_OK);
        assert_int_equal(n, len);
        assert_memory_equal(dec, in, len);
    }
}

static void test_mime_lines(void **state)
{
    unsigned char in[200];
    memset(in, 0xa5, sizeof in);
    struct buf b;
    buf_init(&b, 0);
    struct bufw w = { &b, PT_OK };
    base64_put(&w, in, sizeof in, 76);
    assert_int_equal(w.rc, PT_OK);
    /* 200 octets = 268 characters: lines of 76, 76, 76, 40, each with CRLF */
    assert_int_equal(b.len, 268 + 4 * 2);
    assert_memory_equal(b.data + 76, "\r\n", 2);
    assert_memory_equal(b.data + b.len - 2, "\r\n", 2);
    unsigned char dec[256];
    size_t n;
    assert_int_equal(base64_decode(b.data, b.len, 0, dec, sizeof dec, &n), PT_INVALID);
    assert_int_equal(base64_decode(b.data, b.len, BASE64_SKIP_SPACE, dec, sizeof dec, &n), PT_OK);
    assert_int_equal(n, sizeof in);
    assert_memory_equal(dec, in, n);
    /* unwrapped: one run, same as base64_encode */
    buf_reset(&b);
    base64_put(&w, in, sizeof in, 0);
    char enc[300];
    base64_encode(in, sizeof in, enc, sizeof enc);
    assert_string_equal(b.data, enc);
    buf_free(&b);
}

static void test_bad_input(void **state)
{
    static const char *const bad[] = {
        "Zm9", "Zm9vY", "Zm=v", "Z===", "=m9v", "Zm9v=", "Zm9vYg==Zm9v", "Zm9v Yg==",
        "Zm9vYg=", "Zm\x80v", "Zm9vYg==\n",
    };
    unsigned char out[32];
    size_t n;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (base64_decode(bad[i], strlen(bad[i]), 0, out, sizeof out, &n) != PT_INVALID)
            fail_msg("'%s' was accepted", bad[i]);
    /* spaces only where allowed */
    assert_int_equal(base64_decode(" Zm9v\r\nYg==\t", 12, BASE64_SKIP_SPACE, out, sizeof out, &n),
                     PT_OK);
    assert_int_equal(n, 4);
    /* non-zero pad bits: only canonical mode refuses them */
    assert_int_equal(base64_decode("Zh==", 4, BASE64_CANONICAL, out, sizeof out, &n), PT_INVALID);
    assert_int_equal(base64_decode("Zm9=", 4, BASE64_CANONICAL, out, sizeof out, &n), PT_INVALID);
    assert_int_equal(base64_decode("Zh==", 4, 0, out, sizeof out, &n), PT_OK);
    assert_int_equal(n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_round_trip_every_length),
        cmocka_unit_test(test_mime_lines),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
