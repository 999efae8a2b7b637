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

static int down(const char *in, struct buf *out)
{
    buf_init(out, 0);
    return mime_downgrade_7bit(in, strlen(in), out);
}

static void test_downgrade_text_qp(void **state)
{
    (void)state;
    struct buf o;
    assert_int_equal(down("Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          "Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 =\r\nend \r\n",
                          &o), PT_OK);
    assert_string_equal(o.data, "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                "MIME-Version: 1.0\r\n"   /* a CTE needs it */
                                "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                                "caf=C3=A9 =3D\r\nend=20\r\n");
    buf_free(&o);
    /* 7-bit: copied byte for byte */
    assert_int_equal(down("Subject: x\r\n\r\nplain\r\n", &o), PT_OK);
    assert_string_equal(o.data, "Subject: x\r\n\r\nplain\r\n");
    buf_free(&o);
    /* no MIME headers: added, charset from the body */
    assert_int_equal(down("Subject: x\r\n\r\n\xc3\xa9\r\n", &o), PT_OK);
    assert_non_null(strstr(o.data, "MIME-Version: 1.0\r\nContent-Type: text/plain; "
                                   "charset=utf-8\r\nContent-Transfer-Encoding: "
                                   "quoted-printable\r\n\r\n=C3=A9\r\n"));
    buf_free(&o);
    assert_int_equal(down("Subject: x\r\n\r\n\xe9\r\n", &o), PT_OK);
    assert_non_null(strstr(o.data, "charset=unknown-8bit"));
    buf_free(&o);
}

static void test_downgrade_soft_breaks(void **state)
{
    (void)state;
    struct buf in, o;
    buf_init(&in, 0);
    buf_appends(&in, "Content-Type: text/plain\r\n\r\n");
    for (int i = 0; i < 100; i++)
        buf_appends(&in, "\xc3\xa9");
    buf_appends(&in, "\r\n");
    buf_init(&o, 0);
    assert_int_equal(mime_downgrade_7bit(in.data, in.len, &o), PT_OK);
    for (char *l = o.data, *e; (e = strstr(l, "\r\n")) != NULL; l = e + 2)
        assert_true(e - l <= 76);
    buf_free(&in);
    buf_free(&o);
}

static void test_downgrade_multipart(void **state)
{
    (void)state;
    struct buf o;
    assert_int_equal(down("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n"
                          "--b\r\nContent-Type: text/plain\r\n\r\n\xc3\xa9\r\n"
                          "--b\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n"
                          "--b--\r\nepi\r\n", &o), PT_OK);
    assert_string_equal(o.data, "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n"
                                "--b\r\nContent-Type: text/plain\r\n"
                                "Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n"
                                "--b\r\nContent-Type: image/png\r\n"
                                "Content-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n\r\n"
                                "--b--\r\nepi\r\n");
    buf_free(&o);
}

static void test_downgrade_refused(void **state)
{
    (void)state;
    struct buf o;
    const char *bad[] = {
        "Subject: caf\xc3\xa9\r\n\r\nx\r\n",                                  /* header */
        "Content-Transfer-Encoding: binary\r\n\r\n\xc3\xa9\r\n",                  /* binary */
        "Content-Transfer-Encoding: base64\r\n\r\n\xc3\xa9\r\n",                  /* encoded */
        "Content-Type: message/rfc822\r\n\r\nSubject: y\r\n\r\n\xc3\xa9\r\n",   /* message */
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xc3\xa9\r\n", /* open */
        "Content-Type: multipart/mixed\r\n\r\n\xc3\xa9\r\n",                     /* no boundary */
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n\xc3\xa9\r\n--b\r\n\r\nx\r\n--b--\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(down(bad[i], &o), PT_INVALID);
        buf_free(&o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_boundary_clashes),
        cmocka_unit_test(test_downgrade_text_qp),
        cmocka_unit_test(test_downgrade_soft_breaks),
        cmocka_unit_test(test_downgrade_multipart),
        cmocka_unit_test(test_downgrade_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
