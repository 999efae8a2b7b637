/* Unit tests for smtp_data: end-of-data detection (incl. SMTP smuggling forms),
 * dot-unstuffing, CRLF normalization, limits, split input and dot-stuffing.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/smtp_bdat.h"
#include "smtp/smtp_data.h"
#include "util/buf.h"
#include "util/result.h"

struct tsd_run {
    int rc;
    size_t consumed;
    struct buf out;
    struct smtp_data d;
};

/* Feeds in[0..n) split at offsets a <= b (pieces [0,a) [a,b) [b,n)). */
static void tsd_feed3(const char *in, size_t n, size_t a, size_t b, uint64_t max,
                      struct tsd_run *r)
{
    const size_t cut[4] = {0, a, b, n};

    smtp_data_init(&r->d, max);
    buf_init(&r->out, 0);
    r->rc = PT_AGAIN;
    r->consumed = 0;
    for (int i = 0; i < 3 && r->rc == PT_AGAIN; i++) {
        size_t used = 0, len = cut[i + 1] - cut[i];
        r->rc = smtp_data_feed(&r->d, in + cut[i], len, &used, &r->out);
        if (r->rc == PT_AGAIN)
            assert_int_equal(used, len);
        r->consumed += used;
    }
}

static void tsd_feed(const char *in, size_t n, uint64_t max, struct tsd_run *r)
{
    tsd_feed3(in, n, n, n, max, r);
}

static void tsd_expect(const char *in, int rc, const char *content)
{
    struct tsd_run r;
    tsd_feed(in, strlen(in), 0, &r);
    if (r.rc != rc)
        fail_msg("input \"%s\": rc %d, expected %d", in, r.rc, rc);
    assert_int_equal(r.out.len, strlen(content));
    assert_memory_equal(r.out.data ? r.out.data : "", content, r.out.len);
    assert_int_equal(r.d.size, strlen(content));
    buf_free(&r.out);
}

static void test_data_simple(void **state)
{
    static const char in[] = "Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";
    struct tsd_run r;

    tsd_feed(in, strlen(in), 0, &r);
    assert_int_equal(r.rc, PT_OK);
    assert_int_equal(r.consumed, strlen(in) - 6); /* "QUIT\r\n" is the next command */
    assert_string_equal(r.out.data, "Subject: hi\r\n\r\nbody\r\n");
    assert_false(r.d.bare_lf || r.d.too_big || r.d.line_too_long || r.d.has_nul);

    /* after the end: nothing more is taken */
    size_t used = 99;
    assert_int_equal(smtp_data_feed(&r.d, "x\r\n", 3, &used, &r.out), PT_OK);
    assert_int_equal(used, 0);
    buf_free(&r.out);

    tsd_expect(".\r\n", PT_OK, "");                 /* empty message */
    tsd_expect("\r\n.\r\n", PT_OK, "\r\n");         /* one empty line */
    tsd_expect("no end\r\n", PT_AGAIN, "no end\r\n");
    tsd_expect("", PT_AGAIN, "");

    /* an empty read (even with no buffer) is harmless */
    struct smtp_data d;
    struct buf out;
    size_t none = 7;
    smtp_data_init(&d, 0);
    buf_init(&out, 0);
    assert_int_equal(smtp_data_feed(&d, NULL, 0, &none, &out), PT_AGAIN);
    assert_int_equal(none, 0);
    assert_int_equal(smtp_data_feed(&d, ".\r\n", 3, &none, &out), PT_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(smtp_dot_stuff(NULL, 0, &out), PT_OK);
    assert_string_equal(out.data, ".\r\n");
    buf_free(&out);
}

static void test_data_unstuff(void **state)
{
    tsd_expect("..\r\n.\r\n", PT_OK, ".\r\n");
    tsd_expect("...\r\n.\r\n", PT_OK, "..\r\n");
    tsd_expect(".x\r\n.\r\n", PT_OK, "x\r\n");
    tsd_expect("a\r\n..b\r\n.\r\n", PT_OK, "a\r\n.b\r\n");
    tsd_expect("a.\r\n.\r\n", PT_OK, "a.\r\n");        /* only a leading dot counts */
    tsd_expect("a\r\n. \r\n.\r\n", PT_OK, "a\r\n \r\n");
    tsd_expect("..\r\n", PT_AGAIN, ".\r\n");
    tsd_expect(".", PT_AGAIN, "");                    /* withheld until decided */
    tsd_expect(".\r", PT_AGAIN, "");
}

/* Only <CRLF>.<CRLF> ends DATA; the lone-dot lines of the smuggling forms are
 * content and come out as ".\r\n" (re-stuffed to ".." on relay). */
static void test_data_smuggling(void **state)
{
    static const struct {
        const char *in;
        const char *content;
    } cases[] = {
        {"a\n.\nMAIL FROM:<x@y>\r\n.\r\n", "a\r\n.\r\nMAIL FROM:<x@y>\r\n"},
        {"a\r\n.\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"},
        {"a\n.\r\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"},
        {"a\r.\r\nb\r\n.\r\n", "a\r\n.\r\nb\r\n"},
        {"a\r\n.\rb\r\n.\r\n", "a\r\n.\r\nb\r\n"},
        {"a\r\n.\r\r\n.\r\n", "a\r\n.\r\n\r\n"},
        {".\n.\r\n.\r\n", ".\r\n.\r\n"},
        {"\n.\r\n.\r\n", "\r\n.\r\n"},
        {"a\r\r\n.\r\n", "a\r\n\r\n"},          /* the CRLF.CRLF is there: ends */
        {"a\n\r\n.\r\n", "a\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tsd_run r;
        tsd_feed(cases[i].in, strlen(cases[i].in), 0, &r);
        if (r.rc != PT_OK || r.consumed != strlen(cases[i].in))
            fail_msg("case %zu: rc %d consumed %zu", i, r.rc, r.consumed);
        assert_string_equal(r.out.data, cases[i].content);
        assert_true(r.d.bare_lf);
        buf_free(&r.out);
    }
    /* none of these ends the data */
    tsd_expect("a\n.\n", PT_AGAIN, "a\r\n.\r\n");
    tsd_expect("a\r\n.\n", PT_AGAIN, "a\r\n.\r\n");
    tsd_expect("a\n.\r\n", PT_AGAIN, "a\r\n.\r\n");
    tsd_expect("a\r.\r", PT_AGAIN, "a\r\n");
}

static void test_data_bare_lf(void **state)
{
    struct tsd_run r;

    tsd_feed("one\ntwo\r\n.\r\n", 12, 0, &r);
    assert_int_equal(r.rc, PT_OK);
    assert_string_equal(r.out.data, "one\r\ntwo\r\n");
    assert_true(r.d.bare_lf);
    buf_free(&r.out);

    tsd_feed("x\ry\r\n.\r\n", 8, 0, &r);
    assert_int_equal(r.rc, PT_OK);
    assert_string_equal(r.out.data, "x\r\ny\r\n");
    assert_true(r.d.bare_lf);
    buf_free(&r.out);
}

/* The same result for every split into three pieces, pipelined command included. */
static void test_data_split_everywhere(void **state)
{
    static const char in[] =
        "From: a\r\n..stuffed\r\nbare\nlf\rcr\r\n.\n.x\r\n\r\n..\r\n.\r\nRSET\r\n";
    const size_t n = strlen(in);
    struct tsd_run ref, r;

    tsd_feed(in, n, 0, &ref);
    assert_int_equal(ref.rc, PT_OK);
    assert_int_equal(ref.consumed, n - 6);
    assert_string_equal(ref.out.data,
                        "From: a\r\n.stuffed\r\nbare\r\nlf\r\ncr\r\n.\r\nx\r\n\r\n.\r\n");
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            tsd_feed3(in, n, a, b, 0, &r);
            assert_int_equal(r.rc, PT_OK);
            assert_int_equal(r.consumed, ref.consumed);
            assert_int_equal(r.out.len, ref.out.len);
            assert_memory_equal(r.out.data, ref.out.data, ref.out.len);
            assert_true(r.d.bare_lf);
            buf_free(&r.out);
        }
    }
    buf_free(&ref.out);
}

static void test_data_byte_by_byte(void **state)
{
    static const char in[] = "a\r\n..\r\n\r\n.\r\n";
    struct smtp_data d;
    struct buf out;
    size_t used, total = 0;
    int rc = PT_AGAIN;

    smtp_data_init(&d, 0);
    buf_init(&out, 0);
    for (size_t i = 0; i < strlen(in) && rc == PT_AGAIN; i++) {
        rc = smtp_data_feed(&d, in + i, 1, &used, &out);
        total += used;
    }
    assert_int_equal(rc, PT_OK);
    assert_int_equal(total, strlen(in));
    assert_string_equal(out.data, "a\r\n.\r\n\r\n");
    buf_free(&out);
}

static void test_data_size_limit(void **state)
{
    static const char in[] = "0123456789\r\n0123456789\r\n.\r\nQUIT\r\n";
    struct tsd_run r;

    tsd_feed(in, strlen(in), 15, &r);
    assert_int_equal(r.rc, PT_OK);                 /* the end is still found */
    assert_int_equal(r.consumed, strlen(in) - 6);
    assert_true(r.d.too_big);
    assert_int_equal(r.d.size, 24);                /* counted, not stored */
    assert_int_equal(r.out.len, 15);               /* a prefix, never more */
    assert_memory_equal(r.out.data, "0123456789\r\n012", 15);
    buf_free(&r.out);

    /* exactly at the limit is fine */
    tsd_feed(in, strlen(in), 24, &r);
    assert_false(r.d.too_big);
    assert_int_equal(r.out.len, 24);
    buf_free(&r.out);

    /* the same prefix whatever the split */
    for (size_t a = 0; a < strlen(in); a++) {
        tsd_feed3(in, strlen(in), a, a, 15, &r);
        assert_true(r.d.too_big);
        assert_int_equal(r.out.len, 15);
        buf_free(&r.out);
    }
}

static void test_data_out_max(void **state)
{
    static const char in[] = "0123456789\r\n.\r\n";
    struct smtp_data d;
    struct buf out;
    size_t used;

    smtp_data_init(&d, 0);
    buf_init(&out, 8);
    assert_int_equal(buf_append(&out, "HDR:", 4), PT_OK); /* caller's own prefix */
    assert_int_equal(smtp_data_feed(&d, in, strlen(in), &used, &out), PT_OK);
    assert_int_equal(used, strlen(in));
    assert_true(d.too_big);
    assert_int_equal(out.len, 8);
    assert_memory_equal(out.data, "HDR:0123", 8);
    buf_free(&out);
}

static void test_data_discard(void **state)
{
    struct smtp_data d;
    struct buf out;
    size_t used;

    smtp_data_init(&d, 0);
    buf_init(&out, 0);
    d.too_big = true; /* the caller chose to drop this message */
    assert_int_equal(smtp_data_feed(&d, "abc\r\n.\r\n", 8, &used, &out), PT_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(d.size, 5);
    buf_free(&out);
}

static void test_data_line_length(void **state)
{
    char in[2100];
    struct tsd_run r;

    /* 998 octets: fine; also when dot-stuffed (999 on the wire) */
    memset(in, 'x', 998);
    strcpy(in + 998, "\r\n.\r\n");
    tsd_feed(in, strlen(in), 0, &r);
    assert_int_equal(r.rc, PT_OK);
    assert_false(r.d.line_too_long);
    buf_free(&r.out);
    in[0] = '.';
    memset(in + 1, 'x', 998);
    strcpy(in + 999, "\r\n.\r\n");
    tsd_feed(in, strlen(in), 0, &r);
    assert_false(r.d.line_too_long);
    assert_int_equal(r.out.len, 1000);
    buf_free(&r.out);

    /* 999 octets: flagged, still consumed up to the end */
    memset(in, 'x', 999);
    strcpy(in + 999, "\r\nnext\r\n.\r\n");
    tsd_feed(in, strlen(in), 0, &r);
    assert_int_equal(r.rc, PT_OK);
    assert_true(r.d.line_too_long);
    assert_int_equal(r.out.len, 999 + 2 + 6);
    buf_free(&r.out);

    /* counted across splits and bare-LF lines */
    memset(in, 'y', 2000);
    strcpy(in + 2000, "\n.\r\n");
    tsd_feed3(in, strlen(in), 500, 1500, 0, &r);
    assert_true(r.d.line_too_long);
    assert_true(r.d.bare_lf);
    assert_int_equal(r.rc, PT_AGAIN); /* ".\r\n" after a bare LF is content */
    buf_free(&r.out);

    /* many short lines never add up */
    memset(in, 0, sizeof in);
    for (int i = 0; i < 600; i++)
        memcpy(in + i * 3, "a\r\n", 3);
    tsd_feed(in, strlen(in), 0, &r);
    assert_false(r.d.line_too_long);
    buf_free(&r.out);
}

static void test_data_nul(void **state)
{
    static const char in[] = "a\0b\r\n.\r\n";
    struct tsd_run r;

    tsd_feed(in, sizeof in - 1, 0, &r);
    assert_int_equal(r.rc, PT_OK);
    assert_true(r.d.has_nul);
    assert_int_equal(r.out.len, 5);
    assert_memory_equal(r.out.data, "a\0b\r\n", 5);
    buf_free(&r.out);
}

static void tsd_stuff_expect(const char *content, const char *wire)
{
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(smtp_dot_stuff(content, strlen(content), &out), PT_OK);
    assert_string_equal(out.data, wire);
    buf_free(&out);
}

static void test_dot_stuff(void **state)
{
    tsd_stuff_expect("", ".\r\n");
    tsd_stuff_expect("a\r\n", "a\r\n.\r\n");
    tsd_stuff_expect("a", "a\r\n.\r\n");
    tsd_stuff_expect("a\n.b\n.", "a\r\n..b\r\n..\r\n.\r\n");
    tsd_stuff_expect(".\r\n", "..\r\n.\r\n");
    tsd_stuff_expect("x\r.\r\n", "x\r\n..\r\n.\r\n");
    tsd_stuff_expect("x\r", "x\r\n.\r\n");
    tsd_stuff_expect("a.b\r\n..\r\n", "a.b\r\n...\r\n.\r\n");

    struct buf small;
    buf_init(&small, 4);
    assert_int_equal(smtp_dot_stuff("abcdef\r\n", 8, &small), PT_TOOLONG);
    buf_free(&small);
}

/* Stuffing then reading back gives the original (normalized) content. */
static void test_dot_stuff_round_trip(void **state)
{
    static const char *const contents[] = {
        "", "\r\n", ".\r\n", "..\r\n", ".\r\n.\r\n", "a\r\n.\r\nb\r\n",
        "Subject: x\r\n\r\n.hidden\r\n..\r\n.\r\nend\r\n", "\r\n\r\n.\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof contents / sizeof contents[0]; i++) {
        struct buf wire;
        struct tsd_run r;
        buf_init(&wire, 0);
        assert_int_equal(smtp_dot_stuff(contents[i], strlen(contents[i]), &wire), PT_OK);
        tsd_feed(wire.data, wire.len, 0, &r);
        assert_int_equal(r.rc, PT_OK);
        assert_int_equal(r.consumed, wire.len);
        assert_int_equal(r.out.len, strlen(contents[i]));
        assert_memory_equal(r.out.data ? r.out.data : "", contents[i], r.out.len);
        assert_false(r.d.bare_lf);
        buf_free(&wire);
        buf_free(&r.out);
    }

    /* and a big pseudo-random message with dots, CRs and LFs everywhere */
    char content[20000];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof content; i++) {
        x = x * 1103515245u + 12345u;
        content[i] = ".\r\nab"[(x >> 16) % 5];
    }
    struct buf wire, norm;
    struct tsd_run r;
    buf_init(&wire, 0);
    buf_init(&norm, 0);
    assert_int_equal(smtp_dot_stuff(content, sizeof content, &wire), PT_OK);
    /* normalized form: the parser's own output when fed the wire form */
    tsd_feed3(wire.data, wire.len, wire.len / 3, wire.len / 2, 0, &r);
    assert_int_equal(r.rc, PT_OK);
    assert_int_equal(r.consumed, wire.len);
    assert_false(r.d.bare_lf);
    /* stuffing the normalized content again gives the same wire form */
    assert_int_equal(smtp_dot_stuff(r.out.data, r.out.len, &norm), PT_OK);
    assert_int_equal(norm.len, wire.len);
    assert_memory_equal(norm.data, wire.data, wire.len);
    buf_free(&wire);
    buf_free(&norm);
    buf_free(&r.out);
}

/* ---- BDAT (smtp_bdat) ---- */

static void test_bdat_args(void **state)
{
    uint64_t n;
    bool last;
    (void)state;
    assert_int_equal(smtp_bdat_args("0", 1, &n, &last), PT_OK);
    assert_true(n == 0 && !last);
    assert_int_equal(smtp_bdat_args("1234 LAST", 9, &n, &last), PT_OK);
    assert_true(n == 1234 && last);
    assert_int_equal(smtp_bdat_args("7 last", 6, &n, &last), PT_OK);
    assert_true(n == 7 && last);
    assert_int_equal(smtp_bdat_args("18446744073709551615", 20, &n, &last), PT_OK);
    assert_true(n == UINT64_MAX);
    static const char *const bad[] = {
        "", "LAST", "-1", "+1", "1x", "1 LAST ", "1  LAST", "1 LASTX", "1 FIRST", " 1",
        "18446744073709551616", "99999999999999999999999", "0x10", "1 LAST LAST",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(smtp_bdat_args(bad[i], strlen(bad[i]), &n, &last), PT_INVALID);
    assert_int_equal(smtp_bdat_args(NULL, 0, &n, &last), PT_INVALID);
}

/* Feeds chunks (each fed in pieces of step octets) and returns the content. */
static void tsb_run(const char *const *chunks, size_t nchunks, size_t step, struct smtp_bdat *b,
                    struct buf *out)
{
    smtp_bdat_init(b);
    buf_init(out, 0);
    for (size_t i = 0; i < nchunks; i++) {
        size_t len = strlen(chunks[i]), off = 0;
        smtp_bdat_chunk(b, len, i + 1 == nchunks, false);
        for (;;) {
            size_t piece = len - off < step ? len - off : step, used = 0;
            int rc = smtp_bdat_feed(b, chunks[i] + off, piece, &used, out);
            assert_int_equal(used, piece);
            off += used;
            if (rc == PT_OK)
                break;
            assert_int_equal(rc, PT_AGAIN);
            assert_true(off < len);
        }
        assert_int_equal(off, len);
    }
    smtp_bdat_finish(b, out);
}

static void tsb_expect(const char *const *chunks, size_t n, const char *want, bool bare)
{
    for (size_t step = 1; step <= 64; step = step * 2 + 1) {
        struct smtp_bdat b;
        struct buf out;
        tsb_run(chunks, n, step, &b, &out);
        assert_int_equal(out.len, strlen(want));
        assert_memory_equal(out.data ? out.data : "", want, out.len);
        assert_int_equal(b.bare_lf, bare);
        assert_false(b.nomem);
        buf_free(&out);
    }
}

static void test_bdat_content(void **state)
{
    (void)state;
    /* no dot-stuffing and no end marker: ".\r\n" and ".." are content */
    const char *a[] = { "a\r\n.\r\n..b\r\n", ".\r\n" };
    tsb_expect(a, 2, "a\r\n.\r\n..b\r\n.\r\n", false);
    /* a CRLF split across chunks is one CRLF */
    const char *b[] = { "line\r", "\nnext\r\n" };
    tsb_expect(b, 2, "line\r\nnext\r\n", false);
    /* bare LF and bare CR (also at a chunk's end) become CRLF */
    const char *c[] = { "x\ny\rz\r", "w\r\n" };
    tsb_expect(c, 2, "x\r\ny\r\nz\r\nw\r\n", true);
    /* an unterminated last line is ended; a final CR too */
    const char *d[] = { "abc" };
    tsb_expect(d, 1, "abc\r\n", false);
    const char *e[] = { "abc\r" };
    tsb_expect(e, 1, "abc\r\n", true);
    /* empty chunks, and an empty message */
    const char *f[] = { "", "ab\r\n", "" };
    tsb_expect(f, 3, "ab\r\n", false);
    const char *g[] = { "" };
    tsb_expect(g, 1, "", false);
}

static void test_bdat_bounds(void **state)
{
    struct smtp_bdat b;
    struct buf out;
    size_t used;
    (void)state;
    /* never takes more than the chunk: the rest is the next command */
    smtp_bdat_init(&b);
    buf_init(&out, 0);
    smtp_bdat_chunk(&b, 5, true, false);
    assert_int_equal(smtp_bdat_feed(&b, "hello\r\nQUIT\r\n", 13, &used, &out), PT_OK);
    assert_int_equal(used, 5);
    assert_int_equal(b.total, 5);
    assert_int_equal(out.len, 5);
    smtp_bdat_finish(&b, &out);
    assert_memory_equal(out.data, "hello\r\n", 7);
    /* a zero chunk is complete without input */
    smtp_bdat_chunk(&b, 0, true, false);
    assert_int_equal(smtp_bdat_feed(&b, NULL, 0, &used, &out), PT_OK);
    assert_int_equal(used, 0);
    /* a discarded chunk is consumed, not stored, not counted */
    buf_reset(&out);
    smtp_bdat_init(&b);
    smtp_bdat_chunk(&b, 10, false, true);
    assert_int_equal(smtp_bdat_feed(&b, "RSET\r\n", 6, &used, &out), PT_AGAIN);
    assert_int_equal(used, 6);
    assert_int_equal(smtp_bdat_feed(&b, "QUIT\r\nNOOP\r\n", 12, &used, &out), PT_OK);
    assert_int_equal(used, 4);
    assert_int_equal(out.len, 0);
    assert_int_equal(b.total, 0);
    /* lines over 998 octets are flagged, across chunks too */
    smtp_bdat_init(&b);
    char line[600];
    memset(line, 'x', sizeof line);
    smtp_bdat_chunk(&b, sizeof line, false, false);
    assert_int_equal(smtp_bdat_feed(&b, line, sizeof line, &used, &out), PT_OK);
    assert_false(b.line_too_long);
    smtp_bdat_chunk(&b, sizeof line, true, false);
    assert_int_equal(smtp_bdat_feed(&b, line, sizeof line, &used, &out), PT_OK);
    assert_true(b.line_too_long);
    /* exactly 998 octets is fine */
    smtp_bdat_init(&b);
    char ok[1000];
    memset(ok, 'y', 998);
    ok[998] = '\r';
    ok[999] = '\n';
    smtp_bdat_chunk(&b, sizeof ok, true, false);
    assert_int_equal(smtp_bdat_feed(&b, ok, sizeof ok, &used, &out), PT_OK);
    assert_false(b.line_too_long);
    /* NUL octets are kept and noted */
    smtp_bdat_init(&b);
    smtp_bdat_chunk(&b, 3, true, false);
    assert_int_equal(smtp_bdat_feed(&b, "a\0b", 3, &used, &out), PT_OK);
    assert_true(b.has_nul);
    buf_free(&out);
}

/* An out buffer with a max: appends fail, nomem is set, octets still counted. */
static void test_bdat_nomem(void **state)
{
    struct smtp_bdat b;
    struct buf out;
    size_t used;
    (void)state;
    smtp_bdat_init(&b);
    buf_init(&out, 8);
    smtp_bdat_chunk(&b, 20, true, false);
    assert_int_equal(smtp_bdat_feed(&b, "0123456789\r\n01234567", 20, &used, &out), PT_OK);
    assert_int_equal(used, 20);
    assert_true(b.nomem);
    assert_true(out.len <= 8);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_simple),
        cmocka_unit_test(test_data_unstuff),
        cmocka_unit_test(test_data_smuggling),
        cmocka_unit_test(test_data_bare_lf),
        cmocka_unit_test(test_data_split_everywhere),
        cmocka_unit_test(test_data_byte_by_byte),
        cmocka_unit_test(test_data_size_limit),
        cmocka_unit_test(test_data_out_max),
        cmocka_unit_test(test_data_discard),
        cmocka_unit_test(test_data_line_length),
        cmocka_unit_test(test_data_nul),
        cmocka_unit_test(test_dot_stuff),
        cmocka_unit_test(test_dot_stuff_round_trip),
        cmocka_unit_test(test_bdat_args),
        cmocka_unit_test(test_bdat_content),
        cmocka_unit_test(test_bdat_bounds),
        cmocka_unit_test(test_bdat_nomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
