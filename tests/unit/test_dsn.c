/* Unit tests for the DSN builder: required fields and MIME structure, CRLF and
 * line limits, header/boundary injection, and one parse by Python's email package.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "queue/dsn.h"
#include "util/buf.h"
#include "util/result.h"

static const char orig_msg[] =
    "Received: from client (client [192.0.2.7])\r\n"
    "\tby relay.example with ESMTP id 0123456789abcdef\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.com, carol@example.net\r\n"
    "Subject: quarterly numbers\r\n"
    "Message-ID: <m1@example.org>\r\n"
    "\r\n"
    "SECRET BODY TEXT must not be returned\r\n";

static const struct dsn_rcpt two_rcpts[] = {
    { .addr = "bob@example.com", .status = "5.1.1",
      .diagnostic = "550 5.1.1 <bob@example.com>: no such user", .remote_mta = "mx1.example.com" },
    { .addr = "carol@example.net", .status = "5.7.1", .diagnostic = "554 5.7.1 rejected by policy",
      .remote_mta = "mx.example.net" },
};

static struct dsn_info base_info(void)
{
    struct dsn_info in = {
        .reporting_mta = "relay.example",
        .id = "0123456789abcdef",
        .sender = "alice@example.org",
        .arrival = 1763941082.0,
        .expired = false,
        .rcpts = two_rcpts,
        .nrcpt = 2,
        .orig = orig_msg,
        .orig_len = sizeof orig_msg - 1,
    };
    return in;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* CRLF only, no line over 998 octets, no NUL. */
static void assert_wire_clean(const struct buf *b)
{
    size_t col = 0;
    assert_int_equal(strlen(b->data), b->len);
    for (size_t i = 0; i < b->len; i++) {
        char c = b->data[i];
        if (c == '\r') {
            assert_true(i + 1 < b->len && b->data[i + 1] == '\n');
            continue;
        }
        if (c == '\n') {
            assert_true(i > 0 && b->data[i - 1] == '\r');
            col = 0;
            continue;
        }
        col++;
        assert_true(col <= 998);
    }
    assert_int_equal(col, 0);                      /* ends with CRLF */
}

/* Extracts the boundary parameter; returns a static string. */
static const char *boundary_of(const char *msg)
{
    static char b[128];
    const char *p = strstr(msg, "boundary=\"");
    assert_non_null(p);
    p += 10;
    size_t n = strcspn(p, "\"");
    assert_true(n > 0 && n < sizeof b);
    memcpy(b, p, n);
    b[n] = 0;
    return b;
}

/* The head of the message: up to the first empty line. */
static char *head_of(const char *msg)
{
    const char *e = strstr(msg, "\r\n\r\n");
    assert_non_null(e);
    return strndup(msg, (size_t)(e - msg) + 2);
}

static void test_structure(void **state)
{
    struct dsn_info in = base_info();
    struct buf b;
    buf_init(&b, 0);
    buf_appends(&b, "X");                          /* appends, keeps what was there */
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_true(b.data[0] == 'X');
    const char *m = b.data + 1;
    struct buf view = { (char *)m, b.len - 1, 0, 0 };
    assert_wire_clean(&view);

    char *head = head_of(m);
    assert_non_null(strstr(head, "From: Mail Delivery System <MAILER-DAEMON@relay.example>\r\n"));
    assert_non_null(strstr(head, "\r\nTo: <alice@example.org>\r\n"));
    assert_non_null(strstr(head, "\r\nSubject: Undelivered Mail Returned to Sender\r\n"));
    assert_non_null(strstr(head, "\r\nDate: "));
    assert_non_null(strstr(head, "\r\nMessage-ID: <0123456789abcdef.dsn@relay.example>\r\n"));
    assert_non_null(strstr(head, "\r\nAuto-Submitted: auto-replied\r\n"));
    assert_non_null(strstr(head, "\r\nMIME-Version: 1.0\r\n"));
    assert_non_null(strstr(head, "\r\nContent-Type: multipart/report; report-type=delivery-status;"));
    free(head);

    char delim[160], close[160];
    const char *bd = boundary_of(m);
    assert_non_null(strstr(bd, "0123456789abcdef"));
    snprintf(delim, sizeof delim, "\r\n--%s\r\n", bd);
    snprintf(close, sizeof close, "\r\n--%s--\r\n", bd);
    assert_int_equal(count(m, delim), 3);
    assert_int_equal(count(m, close), 1);
    assert_true(strcmp(m + strlen(m) - strlen(close), close) == 0);

    /* the parts in order */
    const char *p1 = strstr(m, delim);
    const char *p2 = strstr(p1 + 1, delim);
    const char *p3 = strstr(p2 + 1, delim);
    const char *end = strstr(m, close);
    assert_true(p1 < p2 && p2 < p3 && p3 < end);
    char *human = strndup(p1, (size_t)(p2 - p1));
    char *status = strndup(p2, (size_t)(p3 - p2));
    char *hdrs = strndup(p3, (size_t)(end - p3));

    assert_non_null(strstr(human, "Content-Type: text/plain"));
    assert_non_null(strstr(human, "<bob@example.com>"));
    assert_non_null(strstr(human, "550 5.1.1 <bob@example.com>: no such user"));
    assert_non_null(strstr(human, "<carol@example.net>"));
    assert_non_null(strstr(human, "mx.example.net"));

    assert_non_null(strstr(status, "Content-Type: message/delivery-status\r\n\r\n"
                                   "Reporting-MTA: dns; relay.example\r\n"
                                   "X-Petrel-Id: 0123456789abcdef\r\n"
                                   "Arrival-Date: "));
    assert_non_null(strstr(status, "\r\n\r\nFinal-Recipient: rfc822; bob@example.com\r\n"
                                   "Action: failed\r\n"
                                   "Status: 5.1.1\r\n"
                                   "Remote-MTA: dns; mx1.example.com\r\n"
                                   "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: no such user\r\n"
                                   "Last-Attempt-Date: "));
    assert_non_null(strstr(status, "\r\n\r\nFinal-Recipient: rfc822; carol@example.net\r\n"
                                   "Action: failed\r\n"
                                   "Status: 5.7.1\r\n"));
    assert_int_equal(count(status, "Action: failed\r\n"), 2);
    assert_int_equal(count(status, "Last-Attempt-Date: "), 2);

    assert_non_null(strstr(hdrs, "Content-Type: text/rfc822-headers\r\n\r\n"
                                 "Received: from client (client [192.0.2.7])\r\n"));
    assert_non_null(strstr(hdrs, "Subject: quarterly numbers\r\nMessage-ID: <m1@example.org>\r\n"));
    assert_null(strstr(m, "SECRET BODY"));
    free(human);
    free(status);
    free(hdrs);
    buf_free(&b);
}

static void test_expired(void **state)
{
    static const struct dsn_rcpt r[] = {
        { .addr = "x@slow.example", .status = "4.4.7",
          .diagnostic = "451 4.3.0 mailbox temporarily unavailable", .remote_mta = "mx.slow.example" },
        { .addr = "y@dead.example" },
    };
    struct dsn_info in = base_info();
    in.expired = true;
    in.rcpts = r;
    in.nrcpt = 2;
    in.arrival = 0;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_wire_clean(&b);
    assert_non_null(strstr(b.data, "\r\nSubject: Delivery Status Notification (Failure): message expired\r\n"));
    assert_null(strstr(b.data, "Arrival-Date:"));
    assert_non_null(strstr(b.data, "Final-Recipient: rfc822; y@dead.example\r\n"
                                   "Action: failed\r\n"
                                   "Status: 4.4.7\r\n"
                                   "Last-Attempt-Date: "));
    assert_int_equal(count(b.data, "Remote-MTA: "), 1);
    assert_int_equal(count(b.data, "Diagnostic-Code: smtp; 451 4.3.0 mailbox temporarily unavailable\r\n"), 1);
    buf_free(&b);
}

static void test_refusals(void **state)
{
    struct dsn_info in = base_info();
    struct buf b;
    buf_init(&b, 0);
    buf_appends(&b, "keep");
    in.sender = "";
    assert_int_equal(dsn_build(&in, &b), PT_INVALID);
    in.sender = NULL;
    assert_int_equal(dsn_build(&in, &b), PT_INVALID);
    in = base_info();
    in.nrcpt = 0;
    assert_int_equal(dsn_build(&in, &b), PT_INVALID);
    assert_string_equal(b.data, "keep");
    buf_free(&b);

    /* a capped buffer: the error comes back and nothing is appended */
    buf_init(&b, 300);
    buf_appends(&b, "keep");
    in = base_info();
    assert_int_equal(dsn_build(&in, &b), PT_TOOLONG);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");
    buf_free(&b);
}

static void test_injection_and_folding(void **state)
{
    char longword[3000], longtext[6000];
    memset(longword, 'w', sizeof longword - 1);
    longword[sizeof longword - 1] = 0;
    size_t n = 0;
    for (int i = 0; n < sizeof longtext - 20; i++)
        n += (size_t)snprintf(longtext + n, sizeof longtext - n, "word%d ", i);
    struct dsn_rcpt r[] = {
        { .addr = "evil@example.com\r\nBcc: victim@example.net", .status = "5.1.1",
          .diagnostic = "550 5.1.1 bad\r\nX-Injected: yes\n\nbody\rmore\t\x01",
          .remote_mta = "mx\r\n.example", .orcpt = "rfc822;o@x\r\nX-Evil: 1" },
        { .addr = "long@example.com", .status = "5.0.0", .diagnostic = longword },
        { .addr = "text@example.com", .status = "not-a-status", .diagnostic = longtext },
    };
    struct dsn_info in = base_info();
    in.rcpts = r;
    in.nrcpt = 3;
    in.sender = "alice@example.org\r\nSubject: phish";
    in.envid = "env\r\nX-Evil: 2";
    in.reporting_mta = "relay.example>\r\nX-Bad: 1";
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_wire_clean(&b);
    assert_null(strstr(b.data, "\r\nBcc:"));
    assert_null(strstr(b.data, "\r\nX-Injected:"));
    assert_null(strstr(b.data, "\r\nX-Evil:"));
    assert_null(strstr(b.data, "\r\nX-Bad:"));
    assert_null(strstr(b.data, "\r\nSubject: phish"));
    assert_non_null(strstr(b.data, "Diagnostic-Code: smtp; 550 5.1.1 bad  X-Injected: yes  body more"));
    assert_non_null(strstr(b.data, "\r\nStatus: 5.0.0\r\n"));    /* garbage status replaced */
    assert_non_null(strstr(b.data, "Message-ID: <0123456789abcdef.dsn@relay.exampleX-Bad1>"));
    /* the folded diagnostic keeps its words, each continuation starts with a blank */
    const char *d = strstr(b.data, "Diagnostic-Code: smtp; word0 word1");
    assert_non_null(d);
    const char *eol = strstr(d, "\r\n");
    assert_true(eol - d <= 78);
    assert_true(eol[2] == ' ');
    buf_free(&b);
}

static void test_orig_headers(void **state)
{
    /* bare LF, a 3000-octet header line, no body separator in reach */
    struct buf o;
    buf_init(&o, 0);
    buf_appends(&o, "From: a@b\nX-Long: ");
    for (int i = 0; i < 3000; i++)
        buf_append(&o, "y", 1);
    buf_appends(&o, "\nSubject: s\r\n\nbody line\n");
    struct dsn_info in = base_info();
    in.orig = o.data;
    in.orig_len = o.len;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_wire_clean(&b);
    assert_non_null(strstr(b.data, "\r\n\r\nFrom: a@b\r\nX-Long: yyy"));
    assert_non_null(strstr(b.data, "yyy\r\n yyy"));
    assert_non_null(strstr(b.data, "\r\nSubject: s\r\n"));
    assert_null(strstr(b.data, "body line"));
    buf_free(&b);

    /* huge header block: capped at 64 KiB on a line end */
    buf_reset(&o);
    while (o.len < 200 * 1024)
        buf_appends(&o, "X-Filler: 0123456789012345678901234567890123456789\r\n");
    in.orig = o.data;
    in.orig_len = o.len;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_wire_clean(&b);
    assert_true(b.len < 64 * 1024 + 8192);
    assert_true(count(b.data, "X-Filler: ") > 1000);
    buf_free(&b);

    /* an original that carries our boundary must not break the structure */
    buf_reset(&o);
    buf_appends(&o, "X-A: 1\r\n--=_petrel-dsn-0123456789abcdef-0\r\n"
                    "X-B: --=_petrel-dsn-0123456789abcdef-1--\r\n\r\n");
    in.orig = o.data;
    in.orig_len = o.len;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    const char *bd = boundary_of(b.data);
    assert_string_equal(bd, "=_petrel-dsn-0123456789abcdef-2");
    buf_free(&b);

    /* no original at all, or no headers in it */
    in.orig = NULL;
    in.orig_len = 0;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_non_null(strstr(b.data, "text/rfc822-headers"));
    buf_reset(&b);
    in.orig = "\r\nbody only";
    in.orig_len = 11;
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_null(strstr(b.data, "body only"));
    assert_wire_clean(&b);
    buf_free(&b);
    buf_free(&o);
}

/* RFC 3461/3464 fields: Original-Envelope-Id, Original-Recipient, the diagnostic
 * type (smtp only for a remote reply), RET=FULL returning the whole message. */
static void test_dsn_fields(void **state)
{
    struct dsn_rcpt r[] = {
        { .addr = "bob@example.com", .status = "5.1.1", .diagnostic = "550 5.1.1 no such user",
          .remote_mta = "mx1.example.com", .orcpt = "rfc822;Bob@Example.com" },
        { .addr = "carol@example.net", .status = "5.4.4", .local = true,
          .diagnostic = "550 5.4.4 domain has no usable MX" },
    };
    struct dsn_info in = base_info();
    in.rcpts = r;
    in.envid = "QQ314159";
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_wire_clean(&b);
    assert_non_null(strstr(b.data, "\r\n\r\nOriginal-Envelope-Id: QQ314159\r\n"
                                   "Reporting-MTA: dns; relay.example\r\n"));
    assert_non_null(strstr(b.data, "\r\n\r\nOriginal-Recipient: rfc822;Bob@Example.com\r\n"
                                   "Final-Recipient: rfc822; bob@example.com\r\n"));
    assert_int_equal(count(b.data, "Original-Recipient:"), 1);
    assert_int_equal(count(b.data, "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"), 1);
    assert_int_equal(count(b.data, "Diagnostic-Code: X-Petrel; 550 5.4.4 domain has no usable MX\r\n"), 1);
    assert_int_equal(count(b.data, "Diagnostic-Code: smtp;"), 1);
    /* no RET (and RET=HDRS): the header block only */
    assert_null(strstr(b.data, "SECRET BODY TEXT"));
    assert_non_null(strstr(b.data, "Content-Type: text/rfc822-headers"));
    buf_reset(&b);
    in.ret_full = true;
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_wire_clean(&b);
    assert_non_null(strstr(b.data, "Content-Type: message/rfc822\r\n\r\nReceived: from client"));
    assert_int_equal(count(b.data, "SECRET BODY TEXT must not be returned\r\n"), 1);
    assert_null(strstr(b.data, "text/rfc822-headers"));
    assert_non_null(strstr(b.data, "Your message is attached."));
    buf_free(&b);
}

/* Delay warnings (Action: delayed, Will-Retry-Until) and success reports
 * (delivered / relayed) never return the body, whatever RET says. */
static void test_delayed_and_relayed(void **state)
{
    struct dsn_rcpt d[] = {
        { .addr = "slow@example.com", .status = "4.2.2", .diagnostic = "452 4.2.2 mailbox full",
          .action = DSN_DELAYED },
        { .addr = "odd@example.com", .status = "5.1.1", .action = DSN_DELAYED }, /* wrong class */
    };
    struct dsn_info in = base_info();
    in.rcpts = d;
    in.ret_full = true;
    in.retry_until = 1763941082.0 + 72 * 3600;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_wire_clean(&b);
    assert_non_null(strstr(b.data, "\r\nSubject: Delayed Mail (still being retried)\r\n"));
    assert_non_null(strstr(b.data, "Action: delayed\r\nStatus: 4.2.2\r\n"));
    assert_non_null(strstr(b.data, "Action: delayed\r\nStatus: 4.0.0\r\n"));
    assert_int_equal(count(b.data, "Will-Retry-Until: "), 2);
    assert_int_equal(count(b.data, "Action: failed"), 0);
    assert_null(strstr(b.data, "SECRET BODY TEXT"));
    assert_non_null(strstr(b.data, "Content-Description: Delayed Message Headers"));
    buf_reset(&b);

    struct dsn_rcpt ok[] = {
        { .addr = "bob@example.com", .status = "2.0.0", .diagnostic = "250 2.0.0 queued as X",
          .remote_mta = "mx1.example.com", .action = DSN_RELAYED, .orcpt = "rfc822;bob@example.com" },
    };
    in.rcpts = ok;
    in.nrcpt = 1;
    in.envid = "E1";
    assert_int_equal(dsn_build(&in, &b), PT_OK);
    assert_wire_clean(&b);
    assert_non_null(strstr(b.data, "\r\nSubject: Successful Mail Delivery Report\r\n"));
    assert_non_null(strstr(b.data, "Action: relayed\r\nStatus: 2.0.0\r\n"));
    assert_null(strstr(b.data, "Will-Retry-Until"));
    assert_null(strstr(b.data, "SECRET BODY TEXT"));
    assert_non_null(strstr(b.data, "Original-Envelope-Id: E1\r\n"));
    buf_free(&b);
}

/* One independent parser reads it back: Python's email package. */
static const char py_check[] =
    "import sys, email\n"
    "m = email.message_from_bytes(sys.stdin.buffer.read())\n"
    "assert not m.defects, m.defects\n"
    "assert m.get_content_type() == \"multipart/report\"\n"
    "assert m.get_param(\"report-type\") == \"delivery-status\"\n"
    "assert m[\"To\"] == \"<alice@example.org>\", m[\"To\"]\n"
    "p = m.get_payload()\n"
    "assert len(p) == 3, len(p)\n"
    "assert [x.get_content_type() for x in p] == [\"text/plain\", \"message/delivery-status\", \"text/rfc822-headers\"]\n"
    "ds = p[1].get_payload()\n"
    "assert len(ds) == 3, len(ds)\n"
    "assert ds[0][\"Reporting-MTA\"] == \"dns; relay.example\"\n"
    "assert [b[\"Action\"] for b in ds[1:]] == [\"failed\", \"failed\"]\n"
    "assert ds[1][\"Status\"] == \"5.1.1\"\n"
    "assert \"no such user\" in ds[1][\"Diagnostic-Code\"]\n"
    "assert \"Subject: quarterly numbers\" in p[2].get_payload()\n";

static void test_python_parses(void **state)
{
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        skip();
        return;
    }
    struct dsn_info in = base_info();
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(dsn_build(&in, &b), PT_OK);

    char script[] = "/tmp/petrel_dsn_check_XXXXXX";
    int fd = mkstemp(script);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(py_check, f);
    fclose(f);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "python3 %s", script);
    FILE *py = popen(cmd, "w");
    assert_non_null(py);
    assert_int_equal(fwrite(b.data, 1, b.len, py), b.len);
    int st = pclose(py);
    unlink(script);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_injection_and_folding),
        cmocka_unit_test(test_orig_headers),
        cmocka_unit_test(test_python_parses),
        cmocka_unit_test(test_dsn_fields),
        cmocka_unit_test(test_delayed_and_relayed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
