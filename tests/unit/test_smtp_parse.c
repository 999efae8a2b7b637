/* Unit tests for smtp_parse: the line splitter (pipelining, split packets,
 * over-long lines, bare LF) and the command parser (normal and hostile input).
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/smtp_parse.h"
#include "util/result.h"

/* ---- line splitter ---- */

/* Collects the events of a stream: lines as "L:text|", over-long lines as "T|". */
struct tsp_stream {
    struct smtp_lines s;
    char pend[4096];
    size_t plen;
    char events[8192];
    size_t elen;
};

static void tsp_event(struct tsp_stream *st, const char *p, size_t n)
{
    assert_true(st->elen + n < sizeof st->events);
    memcpy(st->events + st->elen, p, n);
    st->elen += n;
    st->events[st->elen] = 0;
}

static void tsp_feed(struct tsp_stream *st, const char *p, size_t n)
{
    assert_true(st->plen + n <= sizeof st->pend);
    memcpy(st->pend + st->plen, p, n);
    st->plen += n;
    for (;;) {
        size_t line_len, used;
        int rc = smtp_lines_next(&st->s, st->pend, st->plen, &line_len, &used);
        if (rc == PT_OK) {
            tsp_event(st, "L:", 2);
            tsp_event(st, st->pend, line_len);
            tsp_event(st, "|", 1);
        } else if (rc == PT_TOOLONG) {
            tsp_event(st, "T|", 2);
        } else {
            assert_int_equal(rc, PT_AGAIN);
        }
        memmove(st->pend, st->pend + used, st->plen - used);
        st->plen -= used;
        if (rc == PT_AGAIN)
            break;
    }
}

static void tsp_init(struct tsp_stream *st, size_t max)
{
    memset(st, 0, sizeof *st);
    smtp_lines_init(&st->s, max);
}

static void test_lines_pipelined(void **state)
{
    static const char in[] = "EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\nDATA\r\n";
    struct tsp_stream st;

    tsp_init(&st, SMTP_LINE_MAX);
    tsp_feed(&st, in, strlen(in));
    assert_string_equal(st.events, "L:EHLO a|L:MAIL FROM:<a@b>|L:RCPT TO:<c@d>|L:DATA|");
    assert_int_equal(st.plen, 0);
}

/* Every split point (and every pair of split points) gives the same lines. */
static void test_lines_split_everywhere(void **state)
{
    static const char in[] =
        "EHLO client.example\r\nMAIL FROM:<a@b.c> SIZE=10\r\n\r\nRCPT TO:<x@y>\n"
        "NOOP\r\r\nQUIT\r\n";
    const size_t n = strlen(in);
    struct tsp_stream ref, st;

    tsp_init(&ref, SMTP_LINE_MAX);
    tsp_feed(&ref, in, n);
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            tsp_init(&st, SMTP_LINE_MAX);
            tsp_feed(&st, in, i);
            tsp_feed(&st, in + i, j - i);
            tsp_feed(&st, in + j, n - j);
            assert_string_equal(st.events, ref.events);
            assert_int_equal(st.plen, 0);
        }
    }
    /* "NOOP\r\r\n": only the last CR is stripped; the parser rejects the other */
    assert_non_null(strstr(ref.events, "L:NOOP\r|"));
}

static void test_lines_byte_by_byte(void **state)
{
    static const char in[] = "HELO x\r\nRSET\r\n";
    struct tsp_stream st;

    tsp_init(&st, SMTP_LINE_MAX);
    for (size_t i = 0; i < strlen(in); i++)
        tsp_feed(&st, in + i, 1);
    assert_string_equal(st.events, "L:HELO x|L:RSET|");
}

static void test_lines_too_long(void **state)
{
    char big[2000];
    struct tsp_stream st;

    /* exactly max (510 + CRLF = 512) fits; one more does not */
    tsp_init(&st, SMTP_LINE_MAX);
    memset(big, 'a', 510);
    memcpy(big + 510, "\r\n", 2);
    tsp_feed(&st, big, 512);
    assert_int_equal(st.elen, 2 + 510 + 1);
    tsp_init(&st, SMTP_LINE_MAX);
    memset(big, 'a', 511);
    memcpy(big + 511, "\r\nNOOP\r\n", 8);
    tsp_feed(&st, big, 519);
    assert_string_equal(st.events, "T|L:NOOP|");

    /* reported once even when it arrives in many pieces, then the stream recovers */
    tsp_init(&st, SMTP_LINE_MAX);
    memset(big, 'b', sizeof big);
    for (int k = 0; k < 10; k++) {
        tsp_feed(&st, big, sizeof big);
        assert_true(st.plen < SMTP_LINE_MAX); /* bounded buffering */
    }
    assert_string_equal(st.events, "");
    tsp_feed(&st, "xx\r\nQUIT\r\n", 10);
    assert_string_equal(st.events, "T|L:QUIT|");

    /* a bare-LF line of exactly max octets fits */
    tsp_init(&st, 8);
    tsp_feed(&st, "1234567\n12345678\nok\n", 20);
    assert_string_equal(st.events, "L:1234567|T|L:ok|");
}

static void test_lines_empty_and_nul(void **state)
{
    struct tsp_stream st;
    static const char in[] = "\r\n\nA\0B\r\n";

    tsp_init(&st, SMTP_LINE_MAX);
    tsp_feed(&st, in, sizeof in - 1);
    assert_int_equal(st.elen, 12);
    assert_memory_equal(st.events, "L:|L:|L:A\0B|", st.elen);

    /* no input, no line */
    size_t ll = 1, used = 1;
    assert_int_equal(smtp_lines_next(&st.s, "", 0, &ll, &used), PT_AGAIN);
    assert_int_equal(used, 0);
    assert_int_equal(smtp_lines_next(&st.s, NULL, 0, &ll, &used), PT_AGAIN);
    struct smtp_cmd cmd;
    assert_int_equal(smtp_cmd_parse(NULL, 0, &cmd), PT_OK);
    assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
    assert_int_equal(cmd.arg_len, 0);
}

/* ---- command parser ---- */

static int tsp_parse(const char *line, struct smtp_cmd *cmd)
{
    return smtp_cmd_parse(line, strlen(line), cmd);
}

static void tsp_expect_error(const char *line, const char *prefix)
{
    struct smtp_cmd cmd;
    int rc = tsp_parse(line, &cmd);
    if (rc != PT_INVALID)
        fail_msg("expected PT_INVALID for \"%s\", got %d", line, rc);
    assert_non_null(cmd.error);
    if (strncmp(cmd.error, prefix, strlen(prefix)) != 0)
        fail_msg("\"%s\": reply \"%s\", expected \"%s...\"", line, cmd.error, prefix);
}

static void tsp_expect_path(const char *line, enum smtp_verb verb, const char *path)
{
    struct smtp_cmd cmd;
    int rc = tsp_parse(line, &cmd);
    if (rc != PT_OK)
        fail_msg("\"%s\": rc %d, reply %s", line, rc, cmd.error ? cmd.error : "-");
    assert_int_equal(cmd.verb, verb);
    assert_string_equal(cmd.path, path);
}

static void test_cmd_verbs(void **state)
{
    static const struct {
        const char *line;
        enum smtp_verb verb;
        const char *arg;
    } cases[] = {
        {"QUIT", SMTP_VERB_QUIT, ""},
        {"quit", SMTP_VERB_QUIT, ""},
        {"rSeT", SMTP_VERB_RSET, ""},
        {"NOOP hello there", SMTP_VERB_NOOP, "hello there"},
        {"DATA", SMTP_VERB_DATA, ""},
        {"DATA x", SMTP_VERB_DATA, "x"},
        {"DATA  ", SMTP_VERB_DATA, ""},
        {"STARTTLS", SMTP_VERB_STARTTLS, ""},
        {"AUTH PLAIN AGZvbwBiYXI=", SMTP_VERB_AUTH, "PLAIN AGZvbwBiYXI="},
        {"auth login", SMTP_VERB_AUTH, "login"},
        {"VRFY postmaster", SMTP_VERB_VRFY, "postmaster"},
        {"EXPN list", SMTP_VERB_EXPN, "list"},
        {"HELP", SMTP_VERB_HELP, ""},
        {"BDAT 100 LAST", SMTP_VERB_BDAT, "100 LAST"},
        {"FOO bar", SMTP_VERB_UNKNOWN, "bar"},
        {"", SMTP_VERB_UNKNOWN, ""},
        {"QUITX", SMTP_VERB_UNKNOWN, ""},
        {"QUI", SMTP_VERB_UNKNOWN, ""},
        {"STARTTLSX", SMTP_VERB_UNKNOWN, ""},
        {"\xc3\xa9HLO x", SMTP_VERB_UNKNOWN, "x"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_cmd cmd;
        assert_int_equal(tsp_parse(cases[i].line, &cmd), PT_OK);
        assert_int_equal(cmd.verb, cases[i].verb);
        assert_int_equal(cmd.arg_len, strlen(cases[i].arg));
        assert_memory_equal(cmd.arg, cases[i].arg, cmd.arg_len);
        assert_null(cmd.error);
    }
    assert_string_equal(smtp_verb_name(SMTP_VERB_STARTTLS), "STARTTLS");
    assert_string_equal(smtp_verb_name(SMTP_VERB_HELO), "HELO");
    assert_string_equal(smtp_verb_name(SMTP_VERB_BDAT), "BDAT");
    assert_string_equal(smtp_verb_name(SMTP_VERB_UNKNOWN), "UNKNOWN");
    assert_string_equal(smtp_verb_name(SMTP_VERB__COUNT), "UNKNOWN");
}

static void test_cmd_helo(void **state)
{
    tsp_expect_path("EHLO client.example.com", SMTP_VERB_EHLO, "client.example.com");
    tsp_expect_path("ehlo [192.0.2.1]", SMTP_VERB_EHLO, "[192.0.2.1]");
    tsp_expect_path("EHLO [IPv6:2001:db8::1]", SMTP_VERB_EHLO, "[IPv6:2001:db8::1]");
    tsp_expect_path("HELO my_host", SMTP_VERB_HELO, "my_host");
    tsp_expect_path("HELO  spaced  ", SMTP_VERB_HELO, "spaced");
    tsp_expect_error("EHLO", "501 5.5.4 Syntax: EHLO hostname");
    tsp_expect_error("EHLO ", "501 5.5.4 Syntax: EHLO hostname");
    tsp_expect_error("HELO", "501 5.5.4 Syntax: HELO hostname");

    char line[300] = "EHLO ";
    memset(line + 5, 'a', 256);
    line[261] = 0;
    tsp_expect_error(line, "501 5.5.4");
    line[260] = 0; /* 255 octets: fine */
    struct smtp_cmd cmd;
    assert_int_equal(tsp_parse(line, &cmd), PT_OK);
    assert_int_equal(strlen(cmd.path), 255);
}

static void test_cmd_mail_good(void **state)
{
    struct smtp_cmd cmd;

    assert_int_equal(tsp_parse("MAIL FROM:<a@b.c> SIZE=1000 BODY=8BITMIME SMTPUTF8", &cmd),
                     PT_OK);
    assert_int_equal(cmd.verb, SMTP_VERB_MAIL);
    assert_string_equal(cmd.path, "a@b.c");
    assert_int_equal(cmd.size, 1000);
    assert_true(cmd.body_8bit);
    assert_true(cmd.smtputf8);
    assert_false(cmd.path_utf8);

    assert_int_equal(tsp_parse("mail from:<a@b.c>", &cmd), PT_OK);
    assert_int_equal(cmd.size, 0);
    assert_false(cmd.body_8bit);
    assert_false(cmd.smtputf8);

    tsp_expect_path("MAIL FROM: <a@b>", SMTP_VERB_MAIL, "a@b");
    tsp_expect_path("MAIL FROM:<>", SMTP_VERB_MAIL, "");
    tsp_expect_path("MAIL FROM:<> SIZE=5", SMTP_VERB_MAIL, "");
    tsp_expect_path("MAIL FROM:<a@b>  BODY=7bit   size=7  ", SMTP_VERB_MAIL, "a@b");
    tsp_expect_path("MAIL FROM:<first.last+tag@sub.example.co.uk>", SMTP_VERB_MAIL,
                    "first.last+tag@sub.example.co.uk");
    tsp_expect_path("MAIL FROM:<\"john doe\"@example.com>", SMTP_VERB_MAIL,
                    "\"john doe\"@example.com");
    tsp_expect_path("MAIL FROM:<\"a>b\\\"c\"@x.y>", SMTP_VERB_MAIL, "\"a>b\\\"c\"@x.y");
    tsp_expect_path("MAIL FROM:<u@[192.0.2.7]>", SMTP_VERB_MAIL, "u@[192.0.2.7]");
    tsp_expect_path("MAIL FROM:<u@[IPv6:::1]>", SMTP_VERB_MAIL, "u@[IPv6:::1]");
    tsp_expect_path("MAIL FROM:<@relay.example,@[10.0.0.1]:u@x.y>", SMTP_VERB_MAIL, "u@x.y");
    tsp_expect_path("MAIL FROM:<a@b> AUTH=<>", SMTP_VERB_MAIL, "a@b");
    tsp_expect_path("MAIL FROM:<!#$%&'*+-/=?^_`{|}~@x>", SMTP_VERB_MAIL,
                    "!#$%&'*+-/=?^_`{|}~@x");

    /* UTF-8 needs SMTPUTF8 on MAIL; the flag tells the caller for RCPT */
    assert_int_equal(tsp_parse("MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc\x63her.de> SMTPUTF8", &cmd),
                     PT_OK);
    assert_true(cmd.path_utf8);
    assert_string_equal(cmd.path, "j\xc3\xb6rg@b\xc3\xbc\x63her.de");
    tsp_expect_error("MAIL FROM:<j\xc3\xb6rg@x.de>", "553 5.6.7");
    assert_int_equal(tsp_parse("RCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@x.cn>", &cmd), PT_OK);
    assert_true(cmd.path_utf8);

    /* size at the top of uint64 */
    assert_int_equal(tsp_parse("MAIL FROM:<a@b> SIZE=18446744073709551615", &cmd), PT_OK);
    assert_true(cmd.size == UINT64_MAX);
}

static void test_cmd_mail_bad(void **state)
{
    tsp_expect_error("MAIL", "501 5.5.4 Syntax: MAIL FROM:<address>");
    tsp_expect_error("MAIL TO:<a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>");
    tsp_expect_error("MAIL FROM:a@b.c", "501 5.5.4 Syntax: MAIL FROM:<address>");
    tsp_expect_error("MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>");
    tsp_expect_error("MAIL FROM :<a@b>", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b", "501 5.1.7 Bad sender address syntax");
    tsp_expect_error("MAIL FROM:<a b@c>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<@b>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<ab>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<.a@b>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a.@b>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a..b@c>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@b..c>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@-b.c>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@b-.c>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@b.c.>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@b_c.d>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@[1.2.3]>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@[300.1.1.1]>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@[IPv6:zz]>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@[tag:content]>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<\"unterminated@b>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@b>junk", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a<b@c>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<@a:>", "501 5.1.7");
    tsp_expect_error("MAIL FROM:<a@b\xff>", "501 5.1.7");          /* not UTF-8 */
    tsp_expect_error("MAIL FROM:<a\xc0\xaf@b> SMTPUTF8", "501 5.1.7"); /* overlong */
    tsp_expect_error("MAIL FROM:<a@b> FOO=bar", "555 5.5.4 Unsupported parameter");
    tsp_expect_error("MAIL FROM:<a@b> SIZE=", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> SIZE=12x", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> SIZE=-1", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> SIZE=18446744073709551616", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> SIZE=1 SIZE=2", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> BODY=BINARY", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> BODY=BINARYMIME BODY=7BIT", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> BODY", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> SMTPUTF8=yes", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> =x", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> SIZE==1", "501 5.5.4");
}

static void test_cmd_rcpt(void **state)
{
    tsp_expect_path("RCPT TO:<x@y.z>", SMTP_VERB_RCPT, "x@y.z");
    tsp_expect_path("rcpt to: <x@y.z>", SMTP_VERB_RCPT, "x@y.z");
    tsp_expect_path("RCPT TO:<postmaster>", SMTP_VERB_RCPT, "postmaster");
    tsp_expect_path("RCPT TO:<PostMaster>", SMTP_VERB_RCPT, "PostMaster");
    tsp_expect_path("RCPT TO:<@hop:x@y>", SMTP_VERB_RCPT, "x@y");
    tsp_expect_error("RCPT TO:<>", "501 5.1.3 Bad recipient address syntax");
    tsp_expect_error("RCPT TO:<postmistress>", "501 5.1.3");
    tsp_expect_error("RCPT TO:<a@b", "501 5.1.3");
    tsp_expect_error("RCPT TO:x@y", "501 5.5.4 Syntax: RCPT TO:<address>");
    tsp_expect_error("RCPT FROM:<x@y>", "501 5.5.4 Syntax: RCPT TO:<address>");
    tsp_expect_error("RCPT", "501 5.5.4 Syntax: RCPT TO:<address>");
    tsp_expect_error("RCPT TO:<x@y> SIZE=1", "555 5.5.4 Unsupported parameter");
}

/* DSN parameters (RFC 3461) and REQUIRETLS (RFC 8689): values decoded and
 * stored, every malformed one refused with 501 5.5.4. */
static void test_cmd_dsn_params(void **state)
{
    struct smtp_cmd c;
    assert_int_equal(tsp_parse("MAIL FROM:<a@b.c> RET=HDRS ENVID=QQ+2B314+3D", &c), PT_OK);
    assert_int_equal(c.ret, SMTP_RET_HDRS);
    assert_string_equal(c.envid, "QQ+314=");
    assert_false(c.requiretls);
    assert_int_equal(tsp_parse("mail from:<a@b.c> ret=full envid=x+20y requiretls", &c), PT_OK);
    assert_int_equal(c.ret, SMTP_RET_FULL);
    assert_string_equal(c.envid, "x y");
    assert_true(c.requiretls);
    assert_int_equal(tsp_parse("MAIL FROM:<a@b.c>", &c), PT_OK);
    assert_int_equal(c.ret, SMTP_RET_NONE);
    assert_string_equal(c.envid, "");
    assert_int_equal(tsp_parse("RCPT TO:<x@y.z> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;X+2BY@y.z",
                               &c), PT_OK);
    assert_int_equal(c.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    assert_string_equal(c.orcpt, "rfc822;X+Y@y.z");
    assert_int_equal(tsp_parse("RCPT TO:<x@y.z> notify=never", &c), PT_OK);
    assert_int_equal(c.notify, SMTP_NOTIFY_NEVER);
    assert_string_equal(c.orcpt, "");
    assert_int_equal(tsp_parse("RCPT TO:<x@y.z> NOTIFY=delay", &c), PT_OK);
    assert_int_equal(c.notify, SMTP_NOTIFY_DELAY);
    assert_int_equal(tsp_parse("RCPT TO:<x@y.z>", &c), PT_OK);
    assert_int_equal(c.notify, 0);

    /* ENVID at its bound, and one over */
    char line[700];
    snprintf(line, sizeof line, "MAIL FROM:<a@b.c> ENVID=%0100d", 0);
    assert_int_equal(tsp_parse(line, &c), PT_OK);
    assert_int_equal(strlen(c.envid), 100);
    snprintf(line, sizeof line, "MAIL FROM:<a@b.c> ENVID=%0101d", 0);
    tsp_expect_error(line, "501 5.5.4 Invalid ENVID");
    /* ORCPT at 500 characters, and 501 (command line limit is 512) */
    int n = snprintf(line, sizeof line, "RCPT TO:<x@y.z> ORCPT=rfc822;");
    memset(line + n, 'a', 493);
    line[n + 493] = 0;
    assert_int_equal(tsp_parse(line, &c), PT_OK);
    line[n + 493] = 'a';
    line[n + 494] = 0;
    tsp_expect_error(line, "501 5.5.4 Invalid ORCPT");

    tsp_expect_error("MAIL FROM:<a@b> RET=ALL", "501 5.5.4 Invalid RET");
    tsp_expect_error("MAIL FROM:<a@b> RET", "501 5.5.4 Invalid RET");
    tsp_expect_error("MAIL FROM:<a@b> RET=FULL RET=HDRS", "501 5.5.4 Duplicate");
    tsp_expect_error("MAIL FROM:<a@b> ENVID=a+2", "501 5.5.4 Invalid ENVID");   /* short hex */
    tsp_expect_error("MAIL FROM:<a@b> ENVID=a+zz", "501 5.5.4 Invalid ENVID");
    tsp_expect_error("MAIL FROM:<a@b> ENVID=a+0A", "501 5.5.4 Invalid ENVID");  /* decodes to LF */
    tsp_expect_error("MAIL FROM:<a@b> ENVID=\xc3\xa9", "501 5.5.4 Invalid ENVID"); /* 8-bit */
    tsp_expect_error("MAIL FROM:<a@b> ENVID", "501 5.5.4 Invalid ENVID");
    tsp_expect_error("MAIL FROM:<a@b> ENVID=a ENVID=b", "501 5.5.4 Duplicate");
    tsp_expect_error("MAIL FROM:<a@b> REQUIRETLS=yes", "501 5.5.4");
    tsp_expect_error("MAIL FROM:<a@b> REQUIRETLS REQUIRETLS", "501 5.5.4 Duplicate");
    tsp_expect_error("MAIL FROM:<a@b> NOTIFY=NEVER", "555 5.5.4 Unsupported parameter");
    tsp_expect_error("RCPT TO:<x@y> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Invalid NOTIFY");
    tsp_expect_error("RCPT TO:<x@y> NOTIFY=FAILURE,NEVER", "501 5.5.4 Invalid NOTIFY");
    tsp_expect_error("RCPT TO:<x@y> NOTIFY=SUCCESS,SUCCESS", "501 5.5.4 Invalid NOTIFY");
    tsp_expect_error("RCPT TO:<x@y> NOTIFY=SOMETIMES", "501 5.5.4 Invalid NOTIFY");
    tsp_expect_error("RCPT TO:<x@y> NOTIFY=SUCCESS,", "501 5.5.4 Invalid NOTIFY");
    tsp_expect_error("RCPT TO:<x@y> NOTIFY=,DELAY", "501 5.5.4 Invalid NOTIFY");
    tsp_expect_error("RCPT TO:<x@y> NOTIFY", "501 5.5.4 Invalid NOTIFY");
    tsp_expect_error("RCPT TO:<x@y> NOTIFY=DELAY NOTIFY=DELAY", "501 5.5.4 Duplicate");
    tsp_expect_error("RCPT TO:<x@y> ORCPT=rfc822", "501 5.5.4 Invalid ORCPT");  /* no ';' */
    tsp_expect_error("RCPT TO:<x@y> ORCPT=;a@b", "501 5.5.4 Invalid ORCPT");    /* no type */
    tsp_expect_error("RCPT TO:<x@y> ORCPT=rfc822;", "501 5.5.4 Invalid ORCPT"); /* no address */
    tsp_expect_error("RCPT TO:<x@y> ORCPT=rfc(822;a@b", "501 5.5.4 Invalid ORCPT");
    tsp_expect_error("RCPT TO:<x@y> ORCPT=rfc822;a+@b", "501 5.5.4 Invalid ORCPT");
    tsp_expect_error("RCPT TO:<x@y> ORCPT=rfc822;a+7Fb", "501 5.5.4 Invalid ORCPT"); /* DEL */
    tsp_expect_error("RCPT TO:<x@y> ORCPT=rfc822;a ORCPT=rfc822;b", "501 5.5.4 Duplicate");
    tsp_expect_error("RCPT TO:<x@y> RET=FULL", "555 5.5.4 Unsupported parameter");
    tsp_expect_error("RCPT TO:<x@y> REQUIRETLS", "555 5.5.4 Unsupported parameter");
}

/* Builds "<prefix><local@domain>" with a local part of nl octets and a domain of
 * nd octets (labels of 63 joined by dots). */
static void tsp_build_path(char *line, const char *prefix, size_t nl, size_t nd)
{
    char *p = line + sprintf(line, "%s<", prefix);
    memset(p, 'l', nl);
    p += nl;
    *p++ = '@';
    for (size_t i = 0; i < nd; i++)
        p[i] = (i % 64 == 63) ? '.' : 'd';
    strcpy(p + nd, ">");
}

static void test_cmd_path_length(void **state)
{
    char line[600];
    struct smtp_cmd cmd;

    /* "<" + 64 + "@" + 189 + ">" = 256 octets: the limit (RFC 5321 4.5.3.1.3) */
    tsp_build_path(line, "RCPT TO:", 64, 189);
    assert_int_equal(tsp_parse(line, &cmd), PT_OK);
    assert_int_equal(strlen(cmd.path), 254);
    tsp_build_path(line, "MAIL FROM:", 64, 189);
    assert_int_equal(tsp_parse(line, &cmd), PT_OK);

    tsp_build_path(line, "RCPT TO:", 65, 189);
    tsp_expect_error(line, "501 5.1.3");
    tsp_build_path(line, "MAIL FROM:", 64, 190);
    tsp_expect_error(line, "501 5.1.7");
    tsp_build_path(line, "MAIL FROM:", 200, 300);
    tsp_expect_error(line, "501 5.1.7");

    /* a label over 63 octets */
    sprintf(line, "RCPT TO:<a@%064d.com>", 0);
    tsp_expect_error(line, "501 5.1.3");
    sprintf(line, "RCPT TO:<a@%063d.com>", 0);
    assert_int_equal(tsp_parse(line, &cmd), PT_OK);
}

static void test_cmd_control_bytes(void **state)
{
    static const char with_nul[] = "MAIL FROM:<a@b>\0 SIZE=1";
    struct smtp_cmd cmd;

    assert_int_equal(smtp_cmd_parse(with_nul, sizeof with_nul - 1, &cmd), PT_INVALID);
    assert_string_equal(cmd.error, "500 5.5.2 Invalid characters in command");
    tsp_expect_error("NOOP\r", "500 5.5.2");
    tsp_expect_error("EHLO a\tb", "500 5.5.2");
    tsp_expect_error("RCPT TO:<a\x7f@b>", "500 5.5.2");
    tsp_expect_error("\x1b[31mQUIT", "500 5.5.2");
    /* an unknown verb is fine for the parser; the session replies 500 */
    assert_int_equal(tsp_parse("XYZZY", &cmd), PT_OK);
    assert_int_equal(cmd.verb, SMTP_VERB_UNKNOWN);
}

static void test_domain_helpers(void **state)
{
    char out[SMTP_DOMAIN_MAX + 1];

    assert_true(smtp_domain_valid("example.com", 11));
    assert_true(smtp_domain_valid("localhost", 9));
    assert_true(smtp_domain_valid("a-b.c1", 6));
    assert_true(smtp_domain_valid("[127.0.0.1]", 11));
    assert_true(smtp_domain_valid("[IPv6:fe80::1]", 14));
    assert_true(smtp_domain_valid("[ipv6:::ffff:1.2.3.4]", 21));
    assert_false(smtp_domain_valid("", 0));
    assert_false(smtp_domain_valid(".com", 4));
    assert_false(smtp_domain_valid("a b", 3));
    assert_false(smtp_domain_valid("[1.2.3.4", 8));
    assert_false(smtp_domain_valid("[]", 2));
    assert_false(smtp_domain_valid("[IPv6:]", 7));
    assert_false(smtp_domain_valid("[1.2.3.4\0]", 10));

    assert_string_equal(smtp_addr_domain("a@b.c"), "b.c");
    assert_string_equal(smtp_addr_domain("\"x@y\"@z"), "z");
    assert_null(smtp_addr_domain("postmaster"));
    assert_null(smtp_addr_domain(NULL));

    smtp_domain_lower("ExAmPle.COM", out, sizeof out);
    assert_string_equal(out, "example.com");
    smtp_domain_lower("ABCDEF", out, 4);
    assert_string_equal(out, "abc");
    smtp_domain_lower(NULL, out, sizeof out);
    assert_string_equal(out, "");
}

/* BDAT leaves its argument to smtp_bdat_args; BODY=BINARYMIME (RFC 3030); the
 * address literals of RFC 5321 4.1.3 (general literals are refused). */
static void test_cmd_bdat_and_literals(void **state)
{
    struct smtp_cmd cmd;
    (void)state;
    assert_int_equal(tsp_parse("BDAT 1024 LAST", &cmd), PT_OK);
    assert_int_equal(cmd.verb, SMTP_VERB_BDAT);
    assert_int_equal(cmd.arg_len, 9);
    assert_memory_equal(cmd.arg, "1024 LAST", 9);
    assert_int_equal(tsp_parse("bdat 0", &cmd), PT_OK);
    assert_int_equal(cmd.verb, SMTP_VERB_BDAT);
    assert_int_equal(cmd.arg_len, 1);
    assert_int_equal(tsp_parse("BDAT", &cmd), PT_OK);
    assert_int_equal(cmd.arg_len, 0);

    assert_int_equal(tsp_parse("MAIL FROM:<a@b> BODY=binarymime", &cmd), PT_OK);
    assert_true(cmd.body_binary);
    assert_false(cmd.body_8bit);
    assert_int_equal(tsp_parse("MAIL FROM:<a@b> BODY=8BITMIME", &cmd), PT_OK);
    assert_false(cmd.body_binary);
    tsp_expect_path("RCPT TO:<u@[192.0.2.1]>", SMTP_VERB_RCPT, "u@[192.0.2.1]");
    tsp_expect_path("RCPT TO:<u@[IPv6:2001:db8:0:0:0:0:0:1]>", SMTP_VERB_RCPT,
                    "u@[IPv6:2001:db8:0:0:0:0:0:1]");
    tsp_expect_path("RCPT TO:<u@[IPv6:::ffff:192.0.2.1]>", SMTP_VERB_RCPT,
                    "u@[IPv6:::ffff:192.0.2.1]");
    tsp_expect_path("RCPT TO:<\"a b\"@[127.0.0.1]>", SMTP_VERB_RCPT, "\"a b\"@[127.0.0.1]");
    tsp_expect_error("RCPT TO:<u@[x-tag:content]>", "501 5.1.3");
    tsp_expect_error("RCPT TO:<u@[192.0.2]>", "501 5.1.3");
    tsp_expect_error("RCPT TO:<u@[2001:db8::1]>", "501 5.1.3"); /* IPv6 needs the tag */
    tsp_expect_error("RCPT TO:<u@[IPv6:2001:db8::1>", "501 5.1.3");
    tsp_expect_error("RCPT TO:<u@192.0.2.1]>", "501 5.1.3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_pipelined),
        cmocka_unit_test(test_lines_split_everywhere),
        cmocka_unit_test(test_lines_byte_by_byte),
        cmocka_unit_test(test_lines_too_long),
        cmocka_unit_test(test_lines_empty_and_nul),
        cmocka_unit_test(test_cmd_verbs),
        cmocka_unit_test(test_cmd_helo),
        cmocka_unit_test(test_cmd_mail_good),
        cmocka_unit_test(test_cmd_mail_bad),
        cmocka_unit_test(test_cmd_rcpt),
        cmocka_unit_test(test_cmd_dsn_params),
        cmocka_unit_test(test_cmd_bdat_and_literals),
        cmocka_unit_test(test_cmd_path_length),
        cmocka_unit_test(test_cmd_control_bytes),
        cmocka_unit_test(test_domain_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
