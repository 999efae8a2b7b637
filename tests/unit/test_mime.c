/* Unit tests of the multipart writer (util/mime.c).
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "util/mime.h"
#include "util/result.h"

static void test_framing(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    struct bufw w = { &b, PT_OK };
    mime_multipart_begin(&w, "mixed", NULL, "=_b1", NULL);
    bufw_puts(&w, "part one\r\n");
    mime_multipart_next(&w, "=_b1");
    bufw_puts(&w, "part two\r\n");
    mime_multipart_end(&w, "=_b1");
    assert_int_equal(w.rc, PT_OK);
    assert_string_equal(b.data, "Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\r\n"
                                "--=_b1\r\npart one\r\n--=_b1\r\npart two\r\n--=_b1--\r\n");
    buf_reset(&b);
    mime_multipart_begin(&w, "report", "report-type=delivery-status", "x", "Preamble.");
    assert_string_equal(b.data, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                                "\tboundary=\"x\"\r\n\r\nPreamble.\r\n\r\n--x\r\n");
    buf_free(&b);
}

static void test_boundary_clashes(void **state)
{
    struct buf parts[2];
    buf_init(&parts[0], 0);
    buf_init(&parts[1], 0);
    buf_appends(&parts[0], "hello\r\n");
    assert_false(mime_boundary_clashes("=_b", parts, 2));   /* parts[1] empty, NULL data */
    buf_appends(&parts[1], "a line --=_b in the middle");
    assert_true(mime_boundary_clashes("=_b", parts, 2));
    assert_false(mime_boundary_clashes("=_c", parts, 2));
    char longb[MIME_BOUNDARY_MAX + 5];
    memset(longb, 'b', sizeof longb - 1);
    longb[sizeof longb - 1] = 0;
    assert_true(mime_boundary_clashes(longb, parts, 2));    /* too long to use */
    buf_free(&parts[0]);
    buf_free(&parts[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_boundary_clashes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
