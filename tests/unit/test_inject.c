/* Unit tests for the HTTP injection bodies: /v1/message MIME assembly checked
 * structurally (and once by Python's email package), every refusal, KumoMTA
 * templates, and generated inputs whose output must obey the content rules.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "http/inject.h"
#include "smtp/smtp_parse.h"
#include "util/result.h"

#define T_HOST "relay.example"
#define T_ID "0123456789abcdef"
#define T_NOW 1795477082.0
#define T_DATE "Mon, 23 Nov 2026 23:38:02 +0000"

/* ---- oracles, independent of inject.c ---- */

/* The output rules: CRLF only, no NUL, no line over 998, ends with CRLF, and a header
 * section (a first line "name:" then fields up to a blank line or the end).
 * Returns NULL or what is wrong. long_ok allows long lines (kumo passes them on). */
static const char *content_problem(const char *c, size_t n, bool long_ok)
{
    size_t line = 0;
    if (n < 2 || c[n - 2] != '\r' || c[n - 1] != '\n')
        return "does not end with CRLF";
    for (size_t i = 0; i < n; i++) {
        if (c[i] == 0)
            return "NUL";
        if (c[i] == '\r' && (i + 1 == n || c[i + 1] != '\n'))
            return "bare CR";
        if (c[i] == '\n' && (i == 0 || c[i - 1] != '\r'))
            return "bare LF";
        line = c[i] == '\n' ? 0 : line + 1;
        if (!long_ok && line > 999)
            return "line over 998 octets";
    }
    size_t k = 0;
    while (k < n && c[k] > 32 && c[k] < 127 && c[k] != ':')
        k++;
    if (k == 0 || k >= n || c[k] != ':')
        return "no header section";
    return NULL;
}

static void assert_content_ok(const struct inject_msg *m, bool long_ok)
{
    const char *why = content_problem(m->content, m->content_len, long_ok);
    if (why)
        fail_msg("bad content (%s):\n%.*s", why, (int)m->content_len, m->content);
    assert_int_equal(strlen(m->content), m->content_len);
    for (size_t i = 0; i < m->nrcpt; i++)
        assert_true(smtp_mailbox_valid(m->rcpts[i], strlen(m->rcpts[i])));
}

/* Unfolded value of top-level field name in the header of c (malloc'd, first one)
 * or NULL; *count = how many fields of that name there are. */
static char *field(const char *c, const char *name, int *count)
{
    size_t nl = strlen(name);
    char *val = NULL;
    size_t vlen = 0;
    bool in = false;
    int cnt = 0;
    for (const char *p = c; *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e || e == p)
            break;
        if (*p == ' ' || *p == '\t') {
            if (in) {
                val = realloc(val, vlen + (size_t)(e - p) + 1);
                memcpy(val + vlen, p, (size_t)(e - p));
                vlen += (size_t)(e - p);
                val[vlen] = 0;
            }
        } else {
            in = false;
            if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
                if (cnt++ == 0) {
                    const char *v = p + nl + 1;
                    if (*v == ' ')
                        v++;
                    vlen = (size_t)(e - v);
                    val = strndup(v, vlen);
                    in = true;
                }
            }
        }
        p = e + 2;
    }
    if (count)
        *count = cnt;
    return val;
}

static const char *body_of(const char *c)
{
    const char *b = strstr(c, "\r\n\r\n");
    return b ? b + 4 : NULL;
}

/* Parts of a multipart body (each "headers CRLF CRLF body", delimiter CRLF excluded). */
static size_t parts(const char *body, const char *boundary, const char **p, size_t *plen,
                    size_t max)
{
    char delim[128];
    size_t n = 0;
    snprintf(delim, sizeof delim, "--%s\r\n", boundary);
    assert_memory_equal(body, delim, strlen(delim));
    const char *s = body + strlen(delim);
    snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    for (;;) {
        const char *e = strstr(s, delim);
        assert_non_null(e);
        assert_true(n < max);
        p[n] = s;
        plen[n++] = (size_t)(e - s);
        e += strlen(delim);
        if (strncmp(e, "--", 2) == 0) {     /* close: then CRLF, or the end of a part */
            assert_true(e[2] == 0 || strncmp(e + 2, "\r\n", 2) == 0);
            return n;
        }
        assert_memory_equal(e, "\r\n", 2);
        s = e + 2;
    }
}

static size_t b64_decode(const char *s, size_t n, unsigned char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *q = s[i] ? strchr(a, s[i]) : NULL;
        if (!q)
            continue;
        acc = acc << 6 | (uint32_t)(q - a);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (unsigned char)(acc >> bits);
        }
    }
    return k;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes quoted-printable and checks its lines stay within 76 characters. */
static size_t qp_decode(const char *s, size_t n, char *out)
{
    size_t k = 0, col = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') {
            out[k++] = '\r';
            out[k++] = '\n';
            i++;
            col = 0;
            continue;
        }
        assert_true(++col <= 76);
        if (s[i] != '=') {
            assert_true(s[i] == ' ' || s[i] == '\t' || (s[i] > 32 && s[i] < 127));
            if (s[i] == ' ' || s[i] == '\t')
                assert_true(i + 1 < n && s[i + 1] != '\r');   /* no trailing blank */
            out[k++] = s[i];
            continue;
        }
        if (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
            i += 2;
            col = 0;
            continue;
        }
        assert_true(i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0);
        out[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
        i += 2;
        col += 2;
    }
    return k;
}

/* s with every LF, CR or CRLF as CRLF (malloc'd). */
static char *crlf(const char *s)
{
    char *o = malloc(strlen(s) * 2 + 1), *p = o;
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n') {
            *p++ = '\r';
            *p++ = '\n';
            if (*s == '\r' && s[1] == '\n')
                s++;
        } else {
            *p++ = *s;
        }
    }
    *p = 0;
    return o;
}

static int v1(const char *json, struct inject_msg *m, char *err, size_t errlen)
{
    return inject_v1_message(json, strlen(json), T_HOST, T_ID, T_NOW, m, err, errlen);
}

/* ---- /v1/message ---- */

/* The full request: text (non-ASCII, a 2000-octet line, '=' and a trailing blank)
 * and html, two attachments, to/cc/bcc with a duplicate. */
static json_t *full_request(unsigned char *bin, size_t binlen, char **text_out)
{
    char *text = malloc(2200), *p = text;
    p += sprintf(p, "Grüße =?x?= a=b \nline two ends in blank \r\n");
    for (int i = 0; i < 1000; i++)          /* one line of 1100 octets */
        p += sprintf(p, "%s", i % 10 == 9 ? "é" : "x");
    strcpy(p, "é\rlast");
    for (size_t i = 0; i < binlen; i++)
        bin[i] = (unsigned char)(i * 7 + 3);
    char b64[1024];
    size_t k = 0;
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < binlen; i += 3) {
        uint32_t v = (uint32_t)bin[i] << 16 | (i + 1 < binlen ? bin[i + 1] << 8 : 0) |
                     (i + 2 < binlen ? bin[i + 2] : 0);
        b64[k++] = a[v >> 18 & 63];
        b64[k++] = a[v >> 12 & 63];
        b64[k++] = i + 1 < binlen ? a[v >> 6 & 63] : '=';
        b64[k++] = i + 2 < binlen ? a[v & 63] : '=';
        if (k % 60 == 0)
            b64[k++] = '\n';                /* wrapped input is accepted */
    }
    b64[k] = 0;
    *text_out = text;
    return json_pack("{s:s, s:[s, s], s:[{s:s, s:s}], s:[s, s], s:s, s:s, s:s, s:{s:s, s:s},"
                     " s:[{s:s, s:s}, {s:s, s:s, s:s}]}",
                     "from", "Alice Example <alice@example.org>",
                     "to", "Bob <bob@example.com>", "carol@example.com",
                     "cc", "email", "Dave@Example.com", "name", "Dave, Jr.",
                     "bcc", "hidden@example.net", "BOB@example.COM",
                     "subject", "Quarterly numbers",
                     "text", text,
                     "html", "<p>hi</p>\n<p>there</p>\n",
                     "headers", "X-Campaign", "q3", "List-Unsubscribe", "<mailto:u@example.org>",
                     "attachments",
                     "filename", "data.bin", "content", b64,
                     "filename", "résumé \"final\".txt", "content_type", "text/plain",
                     "content", "aGVsbG8=");
}

static void test_v1_full(void **state)
{
    unsigned char bin[300], got[600];
    char *text, err[256];
    struct inject_msg m;
    int n;
    json_t *req = full_request(bin, sizeof bin, &text);
    char *json = json_dumps(req, 0);

    assert_int_equal(v1(json, &m, err, sizeof err), PT_OK);
    assert_content_ok(&m, false);
    assert_string_equal(m.sender, "alice@example.org");
    assert_int_equal(m.nrcpt, 4);
    assert_string_equal(m.rcpts[0], "bob@example.com");
    assert_string_equal(m.rcpts[1], "carol@example.com");
    assert_string_equal(m.rcpts[2], "Dave@Example.com");
    assert_string_equal(m.rcpts[3], "hidden@example.net");

    static const char *const once[] = { "Date", "From", "To", "Cc", "Subject", "Message-ID",
                                        "MIME-Version", "Content-Type", "X-Campaign",
                                        "List-Unsubscribe" };
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++) {
        free(field(m.content, once[i], &n));
        if (n != 1)
            fail_msg("%s appears %d times", once[i], n);
    }
    free(field(m.content, "Bcc", &n));
    assert_int_equal(n, 0);
    free(field(m.content, "Reply-To", &n));
    assert_int_equal(n, 0);
    assert_null(strstr(m.content, "hidden@"));
    /* header order as documented */
    const char *order[] = { "Date:", "From:", "To:", "Cc:", "Subject:", "Message-ID:",
                            "MIME-Version:", "X-Campaign:", "List-Unsubscribe:",
                            "Content-Type:" };
    const char *at = m.content;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const char *f = strstr(at, order[i]);
        assert_non_null(f);
        at = f;
    }

    char *v = field(m.content, "Date", NULL);
    assert_string_equal(v, T_DATE);
    free(v);
    v = field(m.content, "Message-ID", NULL);
    assert_string_equal(v, "<" T_ID "@" T_HOST ">");
    free(v);
    v = field(m.content, "From", NULL);
    assert_string_equal(v, "Alice Example <alice@example.org>");
    free(v);
    v = field(m.content, "To", NULL);
    assert_string_equal(v, "Bob <bob@example.com>, carol@example.com");
    free(v);
    v = field(m.content, "Cc", NULL);
    assert_string_equal(v, "\"Dave, Jr.\" <Dave@Example.com>");
    free(v);
    v = field(m.content, "Content-Type", NULL);
    assert_string_equal(v, "multipart/mixed; boundary=\"=_petrel_mixed_" T_ID "\"");
    free(v);

    const char *p[8], *sub[8];
    size_t plen[8], sublen[8];
    assert_int_equal(parts(body_of(m.content), "=_petrel_mixed_" T_ID, p, plen, 8), 3);

    /* part 0: multipart/alternative, text then html */
    char *part = strndup(p[0], plen[0]);
    v = field(part, "Content-Type", NULL);
    assert_string_equal(v, "multipart/alternative; boundary=\"=_petrel_alt_" T_ID "\"");
    free(v);
    assert_int_equal(parts(body_of(part), "=_petrel_alt_" T_ID, sub, sublen, 8), 2);
    char *tp = strndup(sub[0], sublen[0]), *hp = strndup(sub[1], sublen[1]);
    v = field(tp, "Content-Type", NULL);
    assert_string_equal(v, "text/plain; charset=utf-8");
    free(v);
    v = field(tp, "Content-Transfer-Encoding", NULL);
    assert_string_equal(v, "quoted-printable");
    free(v);
    char *dec = malloc(strlen(tp) + 1), *want = crlf(text);
    size_t dn = qp_decode(body_of(tp), strlen(body_of(tp)), dec);
    assert_int_equal(dn, strlen(want));
    assert_memory_equal(dec, want, dn);
    free(dec);
    free(want);
    v = field(hp, "Content-Transfer-Encoding", NULL);
    assert_string_equal(v, "7bit");
    free(v);
    assert_string_equal(body_of(hp), "<p>hi</p>\r\n<p>there</p>\r\n");
    free(tp);
    free(hp);
    free(part);

    /* attachments: base64 in 76-column lines decoding to the input */
    part = strndup(p[1], plen[1]);
    v = field(part, "Content-Type", NULL);
    assert_string_equal(v, "application/octet-stream; name=\"data.bin\"");
    free(v);
    v = field(part, "Content-Disposition", NULL);
    assert_string_equal(v, "attachment; filename=\"data.bin\"");
    free(v);
    v = field(part, "Content-Transfer-Encoding", NULL);
    assert_string_equal(v, "base64");
    free(v);
    for (const char *l = body_of(part); *l;) {
        const char *e = strstr(l, "\r\n");
        size_t ll = e ? (size_t)(e - l) : strlen(l);
        assert_true(ll <= 76);
        l += ll + (e ? 2 : 0);
    }
    assert_int_equal(b64_decode(body_of(part), strlen(body_of(part)), got), sizeof bin);
    assert_memory_equal(got, bin, sizeof bin);
    free(part);

    part = strndup(p[2], plen[2]);
    v = field(part, "Content-Type", NULL);
    assert_string_equal(v, "text/plain; name*0*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt");
    free(v);
    v = field(part, "Content-Disposition", NULL);
    assert_string_equal(v, "attachment; filename*0*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.txt");
    free(v);
    assert_int_equal(b64_decode(body_of(part), strlen(body_of(part)), got), 5);
    assert_memory_equal(got, "hello", 5);
    free(part);

    inject_msg_free(&m);
    inject_msg_free(&m);                    /* idempotent */
    inject_msg_free(NULL);
    free(json);
    free(text);
    json_decref(req);
}

/* One independent parse: Python's email package decodes every part back. */
static const char py_check[] =
    "import sys, json, base64, email\n"
    "from email import policy\n"
    "req = json.load(open(sys.argv[1]))\n"
    "msg = email.message_from_binary_file(sys.stdin.buffer, policy=policy.default)\n"
    "nl = lambda s: s.replace('\\r\\n', '\\n').replace('\\r', '\\n')\n"
    "assert str(msg['Subject']) == req['subject'], str(msg['Subject'])\n"
    "assert msg['Bcc'] is None\n"
    "assert msg['Cc'].addresses[0].display_name == req['cc'][0]['name']\n"
    "assert msg['To'].addresses[0].display_name == 'Bob'\n"
    "assert nl(msg.get_body(('plain',)).get_content()) == nl(req['text'])\n"
    "assert nl(msg.get_body(('html',)).get_content()) == nl(req['html'])\n"
    "atts = list(msg.iter_attachments())\n"
    "assert len(atts) == len(req['attachments'])\n"
    "for a, r in zip(atts, req['attachments']):\n"
    "    assert a.get_filename() == r['filename'], a.get_filename()\n"
    "    assert a.get_content_type() == r.get('content_type', 'application/octet-stream')\n"
    "    assert a.get_payload(decode=True) == base64.b64decode(r['content'])\n"
    "for p in msg.walk():\n"
    "    assert not p.defects, p.defects\n";

static void test_v1_python_parses(void **state)
{
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        skip();
        return;
    }
    unsigned char bin[300];
    char *text, err[256];
    struct inject_msg m;
    json_t *req = full_request(bin, sizeof bin, &text);
    json_object_set_new(req, "subject", json_string("Grüße aus Köln — a long subject line "
                                                    "that needs folding and encoding, twice "
                                                    "over, to be sure"));
    char *json = json_dumps(req, 0);
    assert_int_equal(v1(json, &m, err, sizeof err), PT_OK);

    char script[] = "/tmp/petrel_inject_py_XXXXXX", reqf[] = "/tmp/petrel_inject_req_XXXXXX";
    int fd = mkstemp(script), rfd = mkstemp(reqf);
    assert_true(fd >= 0 && rfd >= 0);
    assert_int_equal(write(fd, py_check, strlen(py_check)), (ssize_t)strlen(py_check));
    assert_int_equal(write(rfd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    close(rfd);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "python3 %s %s", script, reqf);
    FILE *py = popen(cmd, "w");
    assert_non_null(py);
    assert_int_equal(fwrite(m.content, 1, m.content_len, py), m.content_len);
    int st = pclose(py);
    unlink(script);
    unlink(reqf);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    inject_msg_free(&m);
    free(json);
    free(text);
    json_decref(req);
}

static void test_v1_refusals(void **state)
{
    static const struct {
        const char *json, *err;
    } cases[] = {
        { "", "invalid JSON" },
        { "{\"from\":", "invalid JSON" },
        { "[]", "must be a JSON object" },
        { "{\"from\":\"a@b.example\",\"from\":\"c@d.example\"}", "invalid JSON" },
        { "{\"from\":\"bob@\",\"to\":[\"x@y.example\"],\"subject\":\"s\"}",
          "from: invalid address \"bob@\"" },
        { "{\"from\":\"José <jo\\u00e9@x.example>\",\"to\":[\"x@y.example\"],\"subject\":\"s\"}",
          "from: invalid address" },                       /* not ASCII */
        { "{\"to\":[\"x@y.example\"],\"subject\":\"s\"}", "missing field \"from\"" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\",\"z@y.example\",\"bob@\"],"
          "\"subject\":\"s\"}", "to[2]: invalid address \"bob@\"" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"cc\":[{\"email\":\"c@\"}],"
          "\"subject\":\"s\"}", "cc[0].email: invalid address \"c@\"" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"cc\":[{\"name\":\"C\"}],"
          "\"subject\":\"s\"}", "cc[0].email: missing" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"bcc\":[{\"email\":\"c@d.example\","
          "\"nam\":\"C\"}],\"subject\":\"s\"}", "bcc[0]: unknown field \"nam\"" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"]}", "missing field \"subject\"" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"sbject\":\"s\"}",
          "unknown field \"sbject\"" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"X-A\":\"v\\r\\nBcc: evil@x.example\"}}",
          "headers.X-A: value contains CR or LF" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"X-A\":\"v\\nX-B: w\"}}", "headers.X-A: value contains CR or LF" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"X A\":\"v\"}}", "headers: invalid header name \"X A\"" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"X:A\":\"v\"}}", "headers: invalid header name" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"\":\"v\"}}", "headers: invalid header name" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"bcc\":\"v@x.example\"}}", "headers.bcc: set by petrel" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"Content-Type\":\"text/html\"}}", "headers.Content-Type: set by petrel" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"message-id\":\"<x@y>\"}}", "headers.message-id: set by petrel" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"headers\":{\"X-A\":1}}", "headers.X-A: expected a string" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"attachments\":[{\"filename\":\"a\",\"content\":\"aGVsbG8\"}]}",
          "attachments[0].content: invalid base64" },          /* padding required */
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"attachments\":[{\"filename\":\"a\",\"content\":\"aGVs*G8=\"}]}",
          "attachments[0].content: invalid base64" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"attachments\":[{\"filename\":\"a\",\"content\":\"aGVsbG8=aGVs\"}]}",
          "attachments[0].content: invalid base64" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"attachments\":[{\"filename\":\"a\",\"content\":\"\"},{\"content\":\"\"}]}",
          "attachments[1].filename: missing" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"attachments\":[{\"filename\":\"a\",\"content\":\"\",\"content_type\":\"text\"}]}",
          "attachments[0].content_type: invalid media type \"text\"" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"attachments\":[{\"filename\":\"a\",\"content\":\"\",\"content_type\":"
          "\"text/plain\\r\\nX: y\"}]}", "attachments[0].content_type: invalid media type" },
        { "{\"from\":\"a@b.example\",\"to\":\"x@y.example\",\"subject\":\"s\"}",
          "to: expected an array" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":5}",
          "subject: expected a string" },
        { "{\"from\":[\"a@b.example\"],\"to\":[\"x@y.example\"],\"subject\":\"s\"}",
          "from: expected an address" },
        { "{\"from\":\"a@b.example\",\"to\":[7],\"subject\":\"s\"}",
          "to[0]: expected an address" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\",\"text\":null}",
          "text: expected a string" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\",\"html\":[]}",
          "html: expected a string" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\",\"headers\":[]}",
          "headers: expected an object" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"attachments\":{}}", "attachments: expected an array" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"s\","
          "\"reply_to\":\"nope\"}", "reply_to: invalid address \"nope\"" },
        { "{\"from\":\"a@b.example\",\"to\":[],\"cc\":[],\"subject\":\"s\"}",
          "no recipients" },
        { "{\"from\":\"a@b.example\",\"subject\":\"s\",\"bcc\":[\"x@y.example\"]}",
          "missing field \"to\"" },
        { "{\"from\":\"A\\u0001B <a@b.example>\",\"to\":[\"x@y.example\"],\"subject\":\"s\"}",
          "from: control character in display name" },
        { "{\"from\":\"a@b.example\",\"to\":[\"x@y.example\"],\"subject\":\"\\u0000\"}",
          "invalid JSON" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct inject_msg m;
        char err[256] = "unset";
        int rc = v1(cases[i].json, &m, err, sizeof err);
        if (rc != PT_INVALID || !strstr(err, cases[i].err))
            fail_msg("case %zu: rc %d err \"%s\", want \"%s\"", i, rc, err, cases[i].err);
        assert_null(m.content);
        assert_null(m.sender);
        assert_null(m.rcpts);
        assert_null(strchr(err, '\n'));
    }
    /* a long value is quoted shortened, on one line */
    char json[600];
    char big[300];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = 0;
    snprintf(json, sizeof json, "{\"%s\":1}", big);
    struct inject_msg m;
    char err[256];
    assert_int_equal(v1(json, &m, err, sizeof err), PT_INVALID);
    assert_non_null(strstr(err, "qqq...\""));
    assert_true(strlen(err) < 100);
    /* NULL body and tiny err buffer are fine */
    assert_int_equal(inject_v1_message(NULL, 0, T_HOST, T_ID, T_NOW, &m, err, 4), PT_INVALID);
    assert_int_equal(strlen(err), 3);
}

/* A last line of 999 octets with no line end (found by fuzz_inject): not 7bit, so it
 * is encoded and no line of the output passes 998. 998 stays 7bit. */
static void test_v1_last_line_999(void **state)
{
    (void)state;
    for (size_t len = 998; len <= 999; len++) {
        struct inject_msg m;
        char err[256], *json = malloc(len + 200);
        int k = sprintf(json, "{\"from\":\"a@b.example\",\"to\":[\"t@x.example\"],"
                              "\"subject\":\"s\",\"text\":\"");
        memset(json + k, 'K', len);
        strcpy(json + k + len, "\"}");
        assert_int_equal(v1(json, &m, err, sizeof err), PT_OK);
        assert_content_ok(&m, false);
        bool qp = strstr(m.content, "quoted-printable") || strstr(m.content, "base64");
        assert_true(len == 999 ? qp : !qp);
        inject_msg_free(&m);
        free(json);
    }
}

static void test_v1_headers_encoded(void **state)
{
    struct inject_msg m;
    char err[256];
    const char *json =
        "{\"from\":{\"email\":\"a@b.example\",\"name\":\"Zoë Ålund\"},"
        "\"to\":[\"\\\"Smith, John\\\" <j@x.example>\",\"Plain Name <p@x.example>\"],"
        "\"reply_to\":\"r@b.example\","
        "\"subject\":\"Grüße aus Köln\",\"text\":\"hi\","
        "\"headers\":{\"X-Note\":\"café\"}}";
    assert_int_equal(v1(json, &m, err, sizeof err), PT_OK);
    assert_content_ok(&m, false);
    char *v = field(m.content, "Subject", NULL);
    /* base64 of the UTF-8 text, one encoded-word */
    assert_string_equal(v, "=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=");
    free(v);
    v = field(m.content, "From", NULL);
    assert_string_equal(v, "=?UTF-8?B?Wm/DqyDDhWx1bmQ=?= <a@b.example>");
    free(v);
    v = field(m.content, "To", NULL);
    assert_string_equal(v, "\"Smith, John\" <j@x.example>, Plain Name <p@x.example>");
    free(v);
    v = field(m.content, "Reply-To", NULL);
    assert_string_equal(v, "r@b.example");
    free(v);
    v = field(m.content, "X-Note", NULL);
    assert_string_equal(v, "=?UTF-8?B?Y2Fmw6k=?=");
    free(v);
    /* text only: a single text/plain part, 7bit */
    v = field(m.content, "Content-Type", NULL);
    assert_string_equal(v, "text/plain; charset=utf-8");
    free(v);
    assert_string_equal(body_of(m.content), "hi\r\n");
    inject_msg_free(&m);

    /* a long ASCII subject is folded below 78 columns and unfolds to itself */
    char subj[400] = "";
    for (int i = 0; i < 30; i++)
        strcat(subj, i ? " word" : "start");
    char buf[700];
    snprintf(buf, sizeof buf,
             "{\"from\":\"a@b.example\",\"to\":[],\"bcc\":[\"c@d.example\"],\"subject\":\"%s\","
             "\"html\":\"<b>x</b>\"}", subj);
    assert_int_equal(v1(buf, &m, err, sizeof err), PT_OK);
    assert_content_ok(&m, false);
    int n;
    free(field(m.content, "To", &n));
    assert_int_equal(n, 0);                  /* to empty: no To field */
    v = field(m.content, "Subject", NULL);
    assert_string_equal(v, subj);
    free(v);
    const char *s = strstr(m.content, "Subject:");
    for (const char *l = s; *l == 'S' || *l == ' '; l = strstr(l, "\r\n") + 2)
        assert_true(strstr(l, "\r\n") - l <= 78);
    v = field(m.content, "Content-Type", NULL);
    assert_string_equal(v, "text/html; charset=utf-8");
    free(v);
    assert_int_equal(m.nrcpt, 1);
    inject_msg_free(&m);

    /* neither text nor html: an empty text/plain body */
    assert_int_equal(v1("{\"from\":\"a@b.example\",\"to\":[\"c@d.example\"],\"subject\":\"\"}",
                        &m, err, sizeof err), PT_OK);
    assert_content_ok(&m, false);
    v = field(m.content, "Content-Type", NULL);
    assert_string_equal(v, "text/plain; charset=utf-8");
    free(v);
    assert_string_equal(body_of(m.content), "");
    inject_msg_free(&m);

    /* text that contains a boundary look-alike is not sent 7bit */
    assert_int_equal(v1("{\"from\":\"a@b.example\",\"to\":[\"c@d.example\"],\"subject\":\"s\","
                        "\"text\":\"a\\n--=_petrel_alt_0123456789abcdef--\\n\",\"html\":\"h\"}",
                        &m, err, sizeof err), PT_OK);
    assert_content_ok(&m, false);
    int delims = 0;
    for (const char *d = m.content; (d = strstr(d, "--=_petrel_alt_" T_ID)); d++)
        delims++;
    assert_int_equal(delims, 3);            /* open, between, close: none from the text */
    inject_msg_free(&m);
}

/* ---- /api/inject/v1 ---- */

static void next_id(void *arg, char out[17])
{
    int *n = arg;
    snprintf(out, 17, "%016x", ++*n);
}

static int kumo(const char *json, struct inject_batch *b, int *ids, char *err, size_t errlen)
{
    return inject_kumo(json, strlen(json), T_HOST, T_NOW, next_id, ids, b, err, errlen);
}

static void test_kumo_substitutions(void **state)
{
    struct inject_batch b;
    char err[256];
    int ids = 0;
    const char *json =
        "{\"envelope_sender\":\"bounce@b.example\","
        "\"content\":\"Subject: hi {{name}}\\nDate: x\\n\\nDear {{ name }}, {{greeting}} "
        "{{ missing }} {{n}} {{r}} {{t}} {{z}} {{ bad key }} {{{name}}}\","
        "\"substitutions\":{\"greeting\":\"hello\",\"n\":42,\"r\":1.5,\"t\":true,\"z\":null},"
        "\"recipients\":[{\"email\":\"a@x.example\",\"name\":\"Ann\"},"
        "{\"email\":\"b@x.example\",\"substitutions\":{\"name\":\"Bea\",\"greeting\":\"hey\","
        "\"n\":-7}},"
        "{\"email\":\"c@x.example\",\"name\":\"Cy\",\"substitutions\":{\"name\":\"Cyrus\"}}]}";
    assert_int_equal(kumo(json, &b, &ids, err, sizeof err), PT_OK);
    assert_int_equal(b.nmsgs, 3);
    assert_int_equal(b.nfailed, 0);
    static const char *const want[] = {
        "Message-ID: <0000000000000001@" T_HOST ">\r\nSubject: hi Ann\r\nDate: x\r\n\r\n"
        "Dear Ann, hello  42 1.5 true  {{ bad key }} {Ann}\r\n",
        "Message-ID: <0000000000000002@" T_HOST ">\r\nSubject: hi Bea\r\nDate: x\r\n\r\n"
        "Dear Bea, hey  -7 1.5 true  {{ bad key }} {Bea}\r\n",
        "Message-ID: <0000000000000003@" T_HOST ">\r\nSubject: hi Cyrus\r\nDate: x\r\n\r\n"
        "Dear Cyrus, hello  42 1.5 true  {{ bad key }} {Cyrus}\r\n",
    };
    for (size_t i = 0; i < 3; i++) {
        assert_content_ok(&b.msgs[i], true);
        assert_string_equal(b.msgs[i].sender, "bounce@b.example");
        assert_int_equal(b.msgs[i].nrcpt, 1);
        assert_string_equal(b.msgs[i].content, want[i]);
    }
    assert_string_equal(b.msgs[1].rcpts[0], "b@x.example");
    inject_batch_free(&b);
    inject_batch_free(&b);
    inject_batch_free(NULL);
}

static void test_kumo_shared_and_failed(void **state)
{
    struct inject_batch b;
    char err[256];
    int ids = 0;
    /* no "{{": one message for every valid recipient; bad ones reported */
    const char *json =
        "{\"envelope_sender\":\"\",\"content\":\"From: a@b.example\\r\\nSubject: s\\r\\n"
        "Message-ID: <m@b.example>\\r\\n\\r\\nbody { not a placeholder }\","
        "\"recipients\":[{\"email\":\"a@x.example\"},{\"email\":\"bob@\"},\"c@x.example\","
        "{\"name\":\"No Email\"},{\"email\":5},{\"email\":\"d@x.example\",\"extra\":1},"
        "{\"email\":\"e@x.example\",\"name\":\"E\"}]}";
    assert_int_equal(kumo(json, &b, &ids, err, sizeof err), PT_OK);
    assert_int_equal(b.nmsgs, 1);
    assert_int_equal(ids, 0);               /* it had a Message-ID */
    struct inject_msg *m = &b.msgs[0];
    assert_content_ok(m, true);
    assert_string_equal(m->sender, "");
    assert_int_equal(m->nrcpt, 2);
    assert_string_equal(m->rcpts[0], "a@x.example");
    assert_string_equal(m->rcpts[1], "e@x.example");
    assert_string_equal(m->content, "Date: " T_DATE "\r\nFrom: a@b.example\r\nSubject: s\r\n"
                                    "Message-ID: <m@b.example>\r\n\r\nbody { not a placeholder }\r\n");
    assert_int_equal(b.nfailed, 5);
    static const char *const who[] = { "bob@", "c@x.example", "", "", "d@x.example" };
    static const char *const why[] = { "invalid address", "recipient must be an object",
                                       "missing email", "email must be a string",
                                       "unknown field \"extra\"" };
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(b.failed[i].recipient, who[i]);
        assert_string_equal(b.failed[i].error, why[i]);
    }
    inject_batch_free(&b);

    /* every recipient refused: PT_OK, nothing to queue */
    assert_int_equal(kumo("{\"envelope_sender\":\"a@b.example\",\"content\":\"X: y\\n\\nz\","
                          "\"recipients\":[{\"email\":\"nope\"}]}", &b, &ids, err, sizeof err),
                     PT_OK);
    assert_int_equal(b.nmsgs, 0);
    assert_int_equal(b.nfailed, 1);
    inject_batch_free(&b);
}

static void test_kumo_normalization(void **state)
{
    struct inject_batch b;
    char err[256];
    int ids = 0;
    /* bare LF and bare CR become CRLF; a final CRLF is added; Date and Message-ID
     * go on top when missing; a long line is left alone */
    char json[3000];
    char longline[1201];
    memset(longline, 'L', 1200);
    longline[1200] = 0;
    snprintf(json, sizeof json,
             "{\"envelope_sender\":\"a@b.example\",\"content\":\"Subject: s\\nX-A: 1\\r"
             "\\nline\\r\\nmore\\r%s\",\"recipients\":[{\"email\":\"c@d.example\"}]}", longline);
    assert_int_equal(kumo(json, &b, &ids, err, sizeof err), PT_OK);
    assert_int_equal(b.nmsgs, 1);
    char want[3000];
    snprintf(want, sizeof want, "Date: " T_DATE "\r\nMessage-ID: <0000000000000001@" T_HOST ">"
             "\r\nSubject: s\r\nX-A: 1\r\n\r\nline\r\nmore\r\n%s\r\n", longline);
    assert_string_equal(b.msgs[0].content, want);
    assert_content_ok(&b.msgs[0], true);
    inject_batch_free(&b);

    /* Date present (any case): only Message-ID is added; content that does not start
     * with a header gets one and a blank line before the text */
    assert_int_equal(kumo("{\"envelope_sender\":\"a@b.example\",\"content\":\"DATE: d\\n\\nx\","
                          "\"recipients\":[{\"email\":\"c@d.example\"}]}", &b, &ids, err,
                          sizeof err), PT_OK);
    assert_string_equal(b.msgs[0].content,
                        "Message-ID: <0000000000000002@" T_HOST ">\r\nDATE: d\r\n\r\nx\r\n");
    inject_batch_free(&b);
    assert_int_equal(kumo("{\"envelope_sender\":\"a@b.example\",\"content\":\"just text\","
                          "\"recipients\":[{\"email\":\"c@d.example\"}]}", &b, &ids, err,
                          sizeof err), PT_OK);
    assert_string_equal(b.msgs[0].content, "Date: " T_DATE "\r\nMessage-ID: <0000000000000003@"
                        T_HOST ">\r\n\r\njust text\r\n");
    assert_content_ok(&b.msgs[0], true);
    inject_batch_free(&b);
    /* both present: byte for byte, CRLF already */
    assert_int_equal(kumo("{\"envelope_sender\":\"a@b.example\",\"content\":\"Date: d\\r\\n"
                          "Message-Id: <x@y>\\r\\n\\r\\nb\\r\\n\",\"recipients\":"
                          "[{\"email\":\"c@d.example\"}]}", &b, &ids, err, sizeof err), PT_OK);
    assert_string_equal(b.msgs[0].content, "Date: d\r\nMessage-Id: <x@y>\r\n\r\nb\r\n");
    inject_batch_free(&b);
    /* obs-syntax white space before the colon (RFC 5322 4.5.8) is still a field: no
     * second Message-ID, no blank line pushed in front of it (found by fuzz_inject) */
    assert_int_equal(kumo("{\"envelope_sender\":\"a@b.example\",\"content\":\"Message-ID\\t\\t"
                          ": <x@y>\\nDate : d\\n\\nb\",\"recipients\":"
                          "[{\"email\":\"c@d.example\"}]}", &b, &ids, err, sizeof err), PT_OK);
    assert_string_equal(b.msgs[0].content, "Message-ID\t\t: <x@y>\r\nDate : d\r\n\r\nb\r\n");
    inject_batch_free(&b);
    assert_int_equal(ids, 3);
}

static void test_kumo_refusals(void **state)
{
    static const struct {
        const char *json, *err;
    } cases[] = {
        { "nope", "invalid JSON" },
        { "{\"content\":\"x\",\"recipients\":[{\"email\":\"a@b.example\"}]}",
          "missing field \"envelope_sender\"" },
        { "{\"envelope_sender\":\"bad\",\"content\":\"x\",\"recipients\":[{\"email\":\"a@b.example\"}]}",
          "envelope_sender: invalid address \"bad\"" },
        { "{\"envelope_sender\":1,\"content\":\"x\",\"recipients\":[{\"email\":\"a@b.example\"}]}",
          "envelope_sender: expected a string" },
        { "{\"envelope_sender\":\"a@b.example\",\"recipients\":[{\"email\":\"a@b.example\"}]}",
          "missing field \"content\"" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":{\"subject\":\"s\"},"
          "\"recipients\":[{\"email\":\"a@b.example\"}]}", "content: expected a string" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"\",\"recipients\":[{\"email\":\"a@b.example\"}]}",
          "content: empty" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"x\"}", "missing field \"recipients\"" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"x\",\"recipients\":[]}",
          "recipients: empty" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"x\",\"recipients\":{}}",
          "recipients: expected an array" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"{{x}}\",\"recipients\":"
          "[{\"email\":\"a@b.example\"}],\"substitutions\":{\"x\":{\"y\":1}}}",
          "substitutions.x: must be a string, number, boolean or null" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"{{x}}\",\"recipients\":"
          "[{\"email\":\"a@b.example\"},{\"email\":\"c@b.example\",\"substitutions\":{\"x\":[1]}}]}",
          "recipients[1].substitutions.x: must be a string" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"{{x}}\",\"recipients\":"
          "[{\"email\":\"a@b.example\",\"substitutions\":\"x\"}]}",
          "recipients[0].substitutions: expected an object" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"x\",\"recipients\":"
          "[{\"email\":\"a@b.example\"}],\"template\":true}", "unknown field \"template\"" },
        { "{\"envelope_sender\":\"a@b.example\",\"content\":\"x\\u0000y\",\"recipients\":"
          "[{\"email\":\"a@b.example\"}]}", "invalid JSON" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct inject_batch b;
        char err[256] = "unset";
        int ids = 0;
        int rc = kumo(cases[i].json, &b, &ids, err, sizeof err);
        if (rc != PT_INVALID || !strstr(err, cases[i].err))
            fail_msg("case %zu: rc %d err \"%s\", want \"%s\"", i, rc, err, cases[i].err);
        assert_null(b.msgs);
        assert_null(b.failed);
        assert_int_equal(b.nmsgs + b.nfailed, 0);
    }
}

/* ---- generated inputs ---- */

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* Text built from awkward pieces: line ends of every kind, blanks at line ends,
 * '=', boundary look-alikes, placeholders, non-ASCII, long blank-free runs. */
static char *gen_text(size_t max_pieces)
{
    static const char *const pieces[] = {
        "a", "word ", " ", "  ", "\t", "\n", "\r", "\r\n", "=", "=?", "?=", "--=_petrel_alt_",
        "é", "日本", "😀", "\"", "\\", "<", ">", ",", ";", ":", "{{ name }}", "{{x}}", "{{",
        "}}", "From ", ".", "Subject: x\n", "\n\n", "X-H: v\r\n",
    };
    size_t n = rnd((uint32_t)max_pieces + 1), cap = n * 16 + 1200, len = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[rnd(sizeof pieces / sizeof pieces[0])];
        len += (size_t)sprintf(s + len, "%s", p);
    }
    if (rnd(8) == 0) {                      /* a long run, sometimes over 998 */
        size_t run = 70 + rnd(1100);
        memset(s + len, rnd(2) ? 'x' : '=', run);
        len += run;
    }
    s[len] = 0;
    return s;
}

static void test_generated(void **state)
{
    static const char *const addrs[] = { "a@b.example", "Name <n@b.example>",
                                         "\"Q, R\" <q@b.example>", "Zoë <z@b.example>",
                                         "\"x y\"@b.example", "u@[192.0.2.1]", "A@B.EXAMPLE" };
    size_t ok = 0;
    for (int round = 0; round < 400; round++) {
        char err[256];
        char *t = gen_text(40), *h = gen_text(30), *s = gen_text(12), *nm = gen_text(6);
        char *hv = gen_text(6);
        for (char *p = hv; *p; p++)
            if (*p == '\r' || *p == '\n')
                *p = ' ';
        for (char *p = nm; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
        json_t *to = json_array(), *att = json_array();
        for (uint32_t i = rnd(4); i > 0; i--)
            json_array_append_new(to, json_string(addrs[rnd(7)]));
        json_array_append_new(to, json_pack("{s:s, s:s%}", "email", "o@b.example", "name",
                                            nm, strlen(nm)));
        for (uint32_t i = rnd(3); i > 0; i--)
            json_array_append_new(att, json_pack("{s:s%, s:s}", "filename", nm, strlen(nm),
                                                 "content", "AAEC/w=="));
        json_t *req = json_pack("{s:s, s:o, s:[s], s:s%, s:{s:s%}, s:o}", "from", addrs[rnd(7)],
                                "to", to, "bcc", "a@b.example", "subject", s, strlen(s),
                                "headers", "X-Gen", hv, strlen(hv), "attachments", att);
        if (rnd(2))
            json_object_set_new(req, "text", json_string(t));
        if (rnd(2))
            json_object_set_new(req, "html", json_string(h));
        char *json = json_dumps(req, 0);
        struct inject_msg m;
        int rc = v1(json, &m, err, sizeof err);
        if (rc == PT_OK) {
            assert_content_ok(&m, false);
            assert_string_equal(strstr(m.content, "\r\n\r\n") ? "y" : "n", "y");
            for (size_t i = 0; i < m.content_len; i++)
                assert_true((unsigned char)m.content[i] < 0x80);   /* 7-bit clean */
            ok++;
        } else if (!strstr(err, "headers.X-Gen") && !strstr(err, "filename")) {
            fail_msg("v1 refused a generated request: %s\n%s", err, json);
        }
        inject_msg_free(&m);
        free(json);
        json_decref(req);

        /* kumo: the same text as a template, one to three recipients */
        json_t *rcpts = json_array();
        for (uint32_t i = rnd(3) + 1; i > 0; i--)
            json_array_append_new(rcpts, json_pack("{s:s, s:s, s:{s:s}}", "email",
                                                   addrs[rnd(7)], "name", nm, "substitutions",
                                                   "x", hv));
        req = json_pack("{s:s, s:s, s:o, s:{s:s}}", "envelope_sender", "a@b.example",
                        "content", *t ? t : "x", "recipients", rcpts, "substitutions",
                        "name", s);
        json = json_dumps(req, 0);
        struct inject_batch b;
        int ids = 0;
        if (kumo(json, &b, &ids, err, sizeof err) != PT_OK)
            fail_msg("kumo refused a generated request: %s\n%s", err, json);
        for (size_t i = 0; i < b.nmsgs; i++) {
            assert_content_ok(&b.msgs[i], true);
            assert_true(b.msgs[i].nrcpt > 0);
        }
        inject_batch_free(&b);
        free(json);
        json_decref(req);
        free(t);
        free(h);
        free(s);
        free(nm);
        free(hv);
    }
    assert_true(ok > 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_full),
        cmocka_unit_test(test_v1_python_parses),
        cmocka_unit_test(test_v1_refusals),
        cmocka_unit_test(test_v1_headers_encoded),
        cmocka_unit_test(test_v1_last_line_999),
        cmocka_unit_test(test_kumo_substitutions),
        cmocka_unit_test(test_kumo_shared_and_failed),
        cmocka_unit_test(test_kumo_normalization),
        cmocka_unit_test(test_kumo_refusals),
        cmocka_unit_test(test_generated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
