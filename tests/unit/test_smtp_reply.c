/* Unit tests for the SMTP reply parser and EHLO capability reader: framing,
 * splits at every offset, pipelining, enhanced codes, bounds. No network.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/smtp_reply.h"
#include "util/result.h"

#define MAXR 16

struct results {
    int n;
    int rc;                    /* last non-OK result */
    struct smtp_reply r[MAXR];
};

/* Feeds in[] in pieces of at most `step` bytes (0 = all at once), resuming after
 * every complete reply, until the input is used up or an error. */
static void feed(const char *in, size_t len, size_t step, struct results *res)
{
    struct smtp_reply_parser p;
    smtp_reply_init(&p);
    res->n = 0;
    res->rc = PT_AGAIN;
    size_t off = 0;
    while (off < len) {
        size_t chunk = step && step < len - off ? step : len - off;
        size_t used = 0;
        while (used < chunk) {
            size_t c = 0;
            struct smtp_reply *out = &res->r[res->n < MAXR ? res->n : MAXR - 1];
            int rc = smtp_reply_feed(&p, in + off + used, chunk - used, &c, out);
            assert_true(c <= chunk - used);
            used += c;
            if (rc == PT_OK) {
                res->n++;
                continue;
            }
            res->rc = rc;
            if (rc != PT_AGAIN)
                return;
            assert_int_equal(c, chunk - (used - c));
        }
        off += chunk;
    }
}

static void feed_split(const char *in, size_t len, size_t at, struct results *res)
{
    struct smtp_reply_parser p;
    smtp_reply_init(&p);
    res->n = 0;
    res->rc = PT_AGAIN;
    const char *parts[2] = { in, in + at };
    size_t lens[2] = { at, len - at };
    for (int k = 0; k < 2; k++) {
        size_t used = 0;
        while (used < lens[k]) {
            size_t c = 0;
            int rc = smtp_reply_feed(&p, parts[k] + used, lens[k] - used, &c, &res->r[res->n]);
            used += c;
            if (rc == PT_OK) {
                res->n++;
                continue;
            }
            res->rc = rc;
            if (rc != PT_AGAIN)
                return;
        }
    }
}

static void assert_same(const struct results *a, const struct results *b)
{
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->rc, b->rc);
    for (int i = 0; i < a->n; i++) {
        assert_int_equal(a->r[i].code, b->r[i].code);
        assert_int_equal(a->r[i].nlines, b->r[i].nlines);
        assert_int_equal(a->r[i].len, b->r[i].len);
        assert_string_equal(a->r[i].enhanced, b->r[i].enhanced);
        assert_string_equal(a->r[i].text, b->r[i].text);
    }
}

static int parse_one(const char *s, struct smtp_reply *r, size_t *consumed)
{
    struct smtp_reply_parser p;
    smtp_reply_init(&p);
    return smtp_reply_feed(&p, s, strlen(s), consumed, r);
}

static void test_single_line(void **state)
{
    struct smtp_reply r;
    size_t c;
    assert_int_equal(parse_one("250 OK\r\n", &r, &c), PT_OK);
    assert_int_equal(c, 8);
    assert_int_equal(r.code, 250);
    assert_int_equal(r.nlines, 1);
    assert_string_equal(r.text, "OK");
    assert_int_equal(r.len, 2);
    assert_string_equal(r.enhanced, "");

    assert_int_equal(parse_one("354\r\n", &r, &c), PT_OK);
    assert_int_equal(r.code, 354);
    assert_string_equal(r.text, "");
    assert_int_equal(parse_one("221 \r\n", &r, &c), PT_OK);
    assert_string_equal(r.text, "");
    assert_int_equal(parse_one("220 mx.example.com\tESMTP ready\r\n", &r, &c), PT_OK);
    assert_string_equal(r.text, "mx.example.com\tESMTP ready");
    /* UTF-8 text from an SMTPUTF8 server is passed through */
    assert_int_equal(parse_one("550 f\xc3\xbcr\r\n", &r, &c), PT_OK);
    assert_string_equal(r.text, "f\xc3\xbcr");
}

static void test_bare_lf(void **state)
{
    struct smtp_reply r;
    size_t c;
    assert_int_equal(parse_one("250-a\n250 b\n", &r, &c), PT_OK);
    assert_int_equal(c, 12);
    assert_int_equal(r.nlines, 2);
    assert_string_equal(r.text, "a\nb");
    assert_int_equal(parse_one("250-a\r\n250 b\n", &r, &c), PT_OK);
    assert_string_equal(r.text, "a\nb");
}

static void test_need_more(void **state)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    size_t c = 99;
    smtp_reply_init(&p);
    assert_int_equal(smtp_reply_feed(&p, "250-first\r\n250 sec", 18, &c, &r), PT_AGAIN);
    assert_int_equal(c, 18);
    assert_int_equal(smtp_reply_feed(&p, "", 0, &c, &r), PT_AGAIN);
    assert_int_equal(c, 0);
    assert_int_equal(smtp_reply_feed(&p, "ond\r", 4, &c, &r), PT_AGAIN);
    assert_int_equal(smtp_reply_feed(&p, "\n", 1, &c, &r), PT_OK);
    assert_int_equal(c, 1);
    assert_string_equal(r.text, "first\nsecond");
}

static const char ehlo[] =
    "250-mx.example.com Hello client [192.0.2.1]\r\n"
    "250-SIZE 35882577\r\n"
    "250-8BITMIME\r\n"
    "250-AUTH LOGIN PLAIN XOAUTH2\r\n"
    "250-ENHANCEDSTATUSCODES\r\n"
    "250-PIPELINING\r\n"
    "250-CHUNKING\r\n"
    "250 SMTPUTF8\r\n";

static void test_multiline(void **state)
{
    struct smtp_reply r;
    size_t c;
    assert_int_equal(parse_one(ehlo, &r, &c), PT_OK);
    assert_int_equal(c, strlen(ehlo));
    assert_int_equal(r.code, 250);
    assert_int_equal(r.nlines, 8);
    assert_true(strncmp(r.text, "mx.example.com Hello client [192.0.2.1]\nSIZE 35882577\n", 54) == 0);
    assert_int_equal(r.len, strlen(r.text));
    /* "NNN-" with empty text continues too */
    assert_int_equal(parse_one("250-\r\n250 x\r\n", &r, &c), PT_OK);
    assert_string_equal(r.text, "\nx");
}

static const char pipeline[] =
    "250 2.1.0 Sender ok\r\n"
    "250 2.1.5 Recipient ok\r\n"
    "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
    "550-5.1.1 Please try double-checking the recipient's email\r\n"
    "550 5.1.1 address for typos. x-gsmtp\r\n"
    "354 End data with <CR><LF>.<CR><LF>\n"
    "250 2.0.0 Ok: queued as 4Bx\r\n"
    "221 2.0.0 Bye\r\n";

static void test_pipelined(void **state)
{
    struct results res;
    feed(pipeline, strlen(pipeline), 0, &res);
    assert_int_equal(res.rc, PT_AGAIN);
    assert_int_equal(res.n, 6);
    int codes[] = { 250, 250, 550, 354, 250, 221 };
    for (int i = 0; i < 6; i++)
        assert_int_equal(res.r[i].code, codes[i]);
    assert_string_equal(res.r[0].enhanced, "2.1.0");
    assert_string_equal(res.r[0].text, "Sender ok");
    assert_string_equal(res.r[2].enhanced, "5.1.1");
    assert_int_equal(res.r[2].nlines, 3);
    assert_string_equal(res.r[2].text,
                        "The email account that you tried to reach does not exist.\n"
                        "Please try double-checking the recipient's email\n"
                        "address for typos. x-gsmtp");
    assert_string_equal(res.r[3].enhanced, "");
    assert_string_equal(res.r[3].text, "End data with <CR><LF>.<CR><LF>");

    /* consumed points exactly at the next reply */
    struct smtp_reply_parser p;
    struct smtp_reply r;
    size_t c;
    smtp_reply_init(&p);
    assert_int_equal(smtp_reply_feed(&p, pipeline, strlen(pipeline), &c, &r), PT_OK);
    assert_int_equal(c, strlen("250 2.1.0 Sender ok\r\n"));
    assert_int_equal(smtp_reply_feed(&p, pipeline + c, strlen(pipeline) - c, &c, &r), PT_OK);
    assert_string_equal(r.text, "Recipient ok");
}

static void test_split_every_offset(void **state)
{
    struct results whole, part;
    size_t len = strlen(pipeline);
    feed(pipeline, len, 0, &whole);
    for (size_t at = 0; at <= len; at++) {
        feed_split(pipeline, len, at, &part);
        assert_same(&whole, &part);
    }
    for (size_t step = 1; step < 40; step++) {
        feed(pipeline, len, step, &part);
        assert_same(&whole, &part);
    }
    len = strlen(ehlo);
    feed(ehlo, len, 0, &whole);
    assert_int_equal(whole.n, 1);
    for (size_t at = 0; at <= len; at++) {
        feed_split(ehlo, len, at, &part);
        assert_same(&whole, &part);
    }
}

static void test_enhanced(void **state)
{
    struct smtp_reply r;
    size_t c;
    assert_int_equal(parse_one("250 2.0.0\r\n", &r, &c), PT_OK);
    assert_string_equal(r.enhanced, "2.0.0");
    assert_string_equal(r.text, "");
    assert_int_equal(parse_one("451 4.7.650 rate  limited\r\n", &r, &c), PT_OK);
    assert_string_equal(r.enhanced, "4.7.650");
    assert_string_equal(r.text, "rate  limited");
    /* class must match the reply */
    assert_int_equal(parse_one("550 4.1.1 nope\r\n", &r, &c), PT_OK);
    assert_string_equal(r.enhanced, "");
    assert_string_equal(r.text, "4.1.1 nope");
    /* not a code: glued text, too many digits, missing part */
    assert_int_equal(parse_one("550 5.1.1x\r\n", &r, &c), PT_OK);
    assert_string_equal(r.enhanced, "");
    assert_int_equal(parse_one("550 5.1000.1 x\r\n", &r, &c), PT_OK);
    assert_string_equal(r.enhanced, "");
    assert_int_equal(parse_one("550 5.1 x\r\n", &r, &c), PT_OK);
    assert_string_equal(r.enhanced, "");
    assert_string_equal(r.text, "5.1 x");
    /* only the first line decides; later lines lose only the same code */
    assert_int_equal(parse_one("550-no code here\r\n550 5.1.1 late\r\n", &r, &c), PT_OK);
    assert_string_equal(r.enhanced, "");
    assert_string_equal(r.text, "no code here\n5.1.1 late");
    assert_int_equal(parse_one("550-5.7.1 a\r\n550-b\r\n550 5.7.2 c\r\n", &r, &c), PT_OK);
    assert_string_equal(r.enhanced, "5.7.1");
    assert_string_equal(r.text, "a\nb\n5.7.2 c");
}

static void expect_error(const char *in, size_t len, int want, size_t want_consumed)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    size_t c = 12345;
    smtp_reply_init(&p);
    int rc = smtp_reply_feed(&p, in, len, &c, &r);
    assert_int_equal(rc, want);
    if (want_consumed != (size_t)-1)
        assert_int_equal(c, want_consumed);
    /* sticky until re-init */
    assert_int_equal(smtp_reply_feed(&p, "250 ok\r\n", 8, &c, &r), want);
    assert_int_equal(c, 0);
    smtp_reply_init(&p);
    assert_int_equal(smtp_reply_feed(&p, "250 ok\r\n", 8, &c, &r), PT_OK);
}

#define EXPECT_INVALID(s, at) expect_error(s, sizeof(s) - 1, PT_INVALID, at)

static void test_garbage(void **state)
{
    EXPECT_INVALID("HTTP/1.1 400 Bad Request\r\n", 1);
    EXPECT_INVALID("SSH-2.0-OpenSSH\r\n", 1);
    EXPECT_INVALID("\r\n", 1);
    EXPECT_INVALID("\n", 1);
    EXPECT_INVALID("199 no\r\n", 1);
    EXPECT_INVALID("600 no\r\n", 1);
    EXPECT_INVALID("2x0 no\r\n", 2);
    EXPECT_INVALID("25\r\n", 3);
    EXPECT_INVALID("25\n", 3);
    EXPECT_INVALID("250x\r\n", 4);
    EXPECT_INVALID("250\tx\r\n", 4);
    EXPECT_INVALID("250 a\x01z\r\n", 6);
    EXPECT_INVALID("250 a\x7fz\r\n", 6);
    EXPECT_INVALID("250 a\rb\r\n", 7);
    EXPECT_INVALID("250 a\r\r\n", 7);
    expect_error("250 a\0b\r\n", 9, PT_INVALID, 6);
    EXPECT_INVALID("250-a\r\n251 b\r\n", 14);      /* mixed codes */
    EXPECT_INVALID("250-a\r\n\r\n", 8);
}

static void test_too_long(void **state)
{
    char buf[8192];
    struct smtp_reply r;
    size_t c;
    /* 998 octets of line plus CRLF is fine; 999 is not */
    memcpy(buf, "250 ", 4);
    memset(buf + 4, 'a', 994);
    memcpy(buf + 998, "\r\n", 3);
    assert_int_equal(parse_one(buf, &r, &c), PT_OK);
    assert_int_equal(r.len, 994);
    memset(buf + 4, 'a', 995);
    memcpy(buf + 999, "\r\n", 3);
    expect_error(buf, 1001, PT_TOOLONG, 999);
    memcpy(buf + 999, "\n", 2);
    expect_error(buf, 1000, PT_TOOLONG, 999);

    /* SMTP_REPLY_LINES lines is fine, one more is not */
    size_t n = 0;
    for (int i = 0; i < SMTP_REPLY_LINES - 1; i++)
        n += (size_t)sprintf(buf + n, "250-l%d\r\n", i);
    size_t before_last = n;
    n += (size_t)sprintf(buf + n, "250 end\r\n");
    assert_int_equal(parse_one(buf, &r, &c), PT_OK);
    assert_int_equal(r.nlines, SMTP_REPLY_LINES);
    n = before_last + (size_t)sprintf(buf + before_last, "250-one more\r\n250 end\r\n");
    expect_error(buf, n, PT_TOOLONG, n);   /* the 65th line's end */

    /* total text over SMTP_REPLY_MAX */
    n = 0;
    for (int i = 0; i < 5; i++) {
        n += (size_t)sprintf(buf + n, "550-");
        memset(buf + n, 'x', 900);
        n += 900;
        n += (size_t)sprintf(buf + n, "\r\n");
    }
    n += (size_t)sprintf(buf + n, "550 end\r\n");
    expect_error(buf, n, PT_TOOLONG, (size_t)-1);
}

static void test_caps(void **state)
{
    struct smtp_reply r;
    struct smtp_caps caps;
    size_t c;
    assert_int_equal(parse_one(ehlo, &r, &c), PT_OK);
    smtp_caps_parse(&r, &caps);
    assert_int_equal(caps.flags, SMTP_CAP_SIZE | SMTP_CAP_8BITMIME | SMTP_CAP_AUTH |
                                 SMTP_CAP_ENHANCEDSTATUSCODES | SMTP_CAP_PIPELINING |
                                 SMTP_CAP_CHUNKING | SMTP_CAP_SMTPUTF8);
    assert_int_equal(caps.size, 35882577);
    assert_string_equal(caps.auth, "LOGIN PLAIN XOAUTH2");

    assert_int_equal(parse_one("250-mx hi\r\n250-starttls\r\n250-size\r\n250-Auth=plain login\r\n"
                               "250-AUTH cram-md5 PLAIN\r\n250-PIPELININGX\r\n250-X-EXPS GSSAPI\r\n"
                               "250 8bitmime\r\n", &r, &c), PT_OK);
    smtp_caps_parse(&r, &caps);
    assert_int_equal(caps.flags, SMTP_CAP_STARTTLS | SMTP_CAP_SIZE | SMTP_CAP_AUTH |
                                 SMTP_CAP_8BITMIME);
    assert_int_equal(caps.size, 0);
    assert_string_equal(caps.auth, "PLAIN LOGIN CRAM-MD5");

    /* the greeting line is not a capability; no EHLO lines = nothing */
    assert_int_equal(parse_one("250 PIPELINING\r\n", &r, &c), PT_OK);
    smtp_caps_parse(&r, &caps);
    assert_int_equal(caps.flags, 0);
    /* not a 250: nothing */
    assert_int_equal(parse_one("550-x\r\n550 PIPELINING\r\n", &r, &c), PT_OK);
    smtp_caps_parse(&r, &caps);
    assert_int_equal(caps.flags, 0);
    /* SIZE saturates rather than wrapping */
    assert_int_equal(parse_one("250-x\r\n250 SIZE 99999999999999999999999\r\n", &r, &c), PT_OK);
    smtp_caps_parse(&r, &caps);
    assert_true(caps.size == UINT64_MAX);

    /* AUTH list is bounded */
    char big[1100];
    int n = sprintf(big, "250-x\r\n250 AUTH");
    for (int i = 0; i < 40; i++)
        n += sprintf(big + n, " MECH%02d", i);
    sprintf(big + n, "\r\n");
    assert_int_equal(parse_one(big, &r, &c), PT_OK);
    smtp_caps_parse(&r, &caps);
    assert_true(strlen(caps.auth) < sizeof caps.auth);
    assert_true(strncmp(caps.auth, "MECH00 MECH01", 13) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_line),
        cmocka_unit_test(test_bare_lf),
        cmocka_unit_test(test_need_more),
        cmocka_unit_test(test_multiline),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_split_every_offset),
        cmocka_unit_test(test_enhanced),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_too_long),
        cmocka_unit_test(test_caps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
