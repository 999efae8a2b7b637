/* Client-side SMTP reply parser (RFC 5321 §4.2, RFC 3463 enhanced codes) and the
 * EHLO capability reader. Pure and resumable: never allocates, never reads past
 * its input, and never lets a server push it past its fixed bounds.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "smtp/smtp_reply.h"
#include "util/result.h"

/* Longest accepted reply line without its line ending: RFC 5321 text lines are at
 * most 1000 octets including CRLF. Servers are allowed bare LF. */
#define REPLY_LINE_MAX 998

enum reply_state {
    RS_LINE = 0,      /* reading a line (the only state that accepts input) */
    RS_INVALID,       /* sticky: the caller must re-init */
    RS_TOOLONG,
};

_Static_assert(sizeof(((struct smtp_reply_parser *)0)->line) > REPLY_LINE_MAX + 1,
               "line buffer must hold a full line and its CR");

static void reply_reset(struct smtp_reply_parser *p)
{
    p->line_len = 0;
    p->cur.code = 0;
    p->cur.enhanced[0] = 0;
    p->cur.nlines = 0;
    p->cur.len = 0;
    p->cur.text[0] = 0;
}

void smtp_reply_init(struct smtp_reply_parser *p)
{
    p->state = RS_LINE;
    reply_reset(p);
}

static int reply_fail(struct smtp_reply_parser *p, int rc)
{
    p->state = rc == PT_TOOLONG ? RS_TOOLONG : RS_INVALID;
    return rc;
}

/* Length of an RFC 3463 code "c.sss.ddd" of class cls at s[0..n), followed by the
 * end of the line or a space; 0 when there is none. */
static size_t enhanced_len(const char *s, size_t n, char cls)
{
    if (n < 5 || s[0] != cls || s[1] != '.')
        return 0;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (i < n && i - start < 4 && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start || i - start > 3)
            return 0;
        if (part == 0) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
    }
    if (i < n && s[i] != ' ')
        return 0;
    return i;
}

/* Checks one byte of the line being read, as early as possible, so garbage from
 * a non-SMTP peer fails at its first bytes rather than after a full line. */
static int take_byte(struct smtp_reply_parser *p, unsigned char c)
{
    size_t n = p->line_len;
    if (n > 0 && p->line[n - 1] == '\r')
        return PT_INVALID;                 /* CR not followed by LF */
    if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
        return PT_INVALID;
    switch (n) {
    case 0:
        if (c < '2' || c > '5')
            return PT_INVALID;
        break;
    case 1:
    case 2:
        if (c < '0' || c > '9')
            return PT_INVALID;
        break;
    case 3:
        if (c != ' ' && c != '-' && c != '\r')
            return PT_INVALID;
        break;
    default:
        break;
    }
    if (c != '\r' && n >= REPLY_LINE_MAX)
        return PT_TOOLONG;
    p->line[p->line_len++] = (char)c;
    return PT_OK;
}

/* A complete line is in p->line. PT_AGAIN: the reply continues; PT_OK: it ended. */
static int end_line(struct smtp_reply_parser *p)
{
    size_t n = p->line_len;
    if (n > 0 && p->line[n - 1] == '\r')
        n--;
    if (n < 3)
        return PT_INVALID;
    struct smtp_reply *r = &p->cur;
    int code = (p->line[0] - '0') * 100 + (p->line[1] - '0') * 10 + (p->line[2] - '0');
    if (r->nlines > 0 && code != r->code)
        return PT_INVALID;
    if (r->nlines >= SMTP_REPLY_LINES)
        return PT_TOOLONG;
    bool last = n == 3 || p->line[3] == ' ';

    const char *t = n > 4 ? p->line + 4 : p->line + n;
    size_t tlen = n > 4 ? n - 4 : 0;
    size_t el = 0;
    if (r->nlines == 0) {
        el = enhanced_len(t, tlen, p->line[0]);
        if (el) {
            memcpy(r->enhanced, t, el);
            r->enhanced[el] = 0;
        }
    } else if (r->enhanced[0]) {
        size_t el2 = strlen(r->enhanced);
        if (tlen >= el2 && memcmp(t, r->enhanced, el2) == 0 && (tlen == el2 || t[el2] == ' '))
            el = el2;
    }
    if (el) {
        t += el;
        tlen -= el;
        while (tlen > 0 && *t == ' ') {
            t++;
            tlen--;
        }
    }

    size_t sep = r->nlines > 0 ? 1 : 0;
    if (r->len + sep + tlen >= SMTP_REPLY_MAX)
        return PT_TOOLONG;
    if (sep)
        r->text[r->len++] = '\n';
    memcpy(r->text + r->len, t, tlen);
    r->len += tlen;
    r->text[r->len] = 0;
    r->code = code;
    r->nlines++;
    p->line_len = 0;
    return last ? PT_OK : PT_AGAIN;
}

int smtp_reply_feed(struct smtp_reply_parser *p, const char *in, size_t len,
                    size_t *consumed, struct smtp_reply *out)
{
    if (p->state != RS_LINE) {
        *consumed = 0;
        return p->state == RS_TOOLONG ? PT_TOOLONG : PT_INVALID;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        int rc;
        if (c != '\n') {
            if ((rc = take_byte(p, c)) == PT_OK)
                continue;
        } else if ((rc = end_line(p)) == PT_AGAIN) {
            continue;
        }
        *consumed = i + 1;
        if (rc != PT_OK)
            return reply_fail(p, rc);
        if (out != &p->cur) {
            out->code = p->cur.code;
            memcpy(out->enhanced, p->cur.enhanced, sizeof out->enhanced);
            out->nlines = p->cur.nlines;
            out->len = p->cur.len;
            memcpy(out->text, p->cur.text, p->cur.len + 1);
        }
        reply_reset(p);
        return PT_OK;
    }
    *consumed = len;
    return PT_AGAIN;
}

/* ---- EHLO capabilities (RFC 5321 §4.1.1.1 and the extension RFCs) ---- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool word_is(const char *w, size_t n, const char *kw)
{
    return strlen(kw) == n && strncasecmp(w, kw, n) == 0;
}

/* Appends one mechanism (uppercased) unless present or out of room. */
static void caps_add_auth(struct smtp_caps *caps, const char *m, size_t n)
{
    char up[sizeof caps->auth];
    if (n == 0 || n >= sizeof up)
        return;
    for (size_t i = 0; i < n; i++)
        up[i] = (m[i] >= 'a' && m[i] <= 'z') ? (char)(m[i] - 'a' + 'A') : m[i];
    up[n] = 0;
    size_t have = strlen(caps->auth);
    for (const char *s = caps->auth; *s;) {
        size_t l = strcspn(s, " ");
        if (l == n && memcmp(s, up, n) == 0)
            return;
        s += l;
        s += *s == ' ';
    }
    size_t sep = have ? 1 : 0;
    if (have + sep + n + 1 > sizeof caps->auth)
        return;
    if (sep)
        caps->auth[have++] = ' ';
    memcpy(caps->auth + have, up, n + 1);
}

static void caps_line(struct smtp_caps *caps, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && is_blank(s[i]))
        i++;
    size_t kw = i;
    while (i < n && !is_blank(s[i]) && s[i] != '=')
        i++;
    const char *k = s + kw;
    size_t klen = i - kw;
    bool eq = i < n && s[i] == '=';
    if (eq && !word_is(k, klen, "AUTH"))
        return;                            /* only the old "AUTH=..." form has '=' */
    i += eq;

    if (word_is(k, klen, "PIPELINING")) {
        caps->flags |= SMTP_CAP_PIPELINING;
    } else if (word_is(k, klen, "SIZE")) {
        caps->flags |= SMTP_CAP_SIZE;
        while (i < n && is_blank(s[i]))
            i++;
        uint64_t v = 0;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            unsigned d = (unsigned)(s[i] - '0');
            v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
        }
        caps->size = v;
    } else if (word_is(k, klen, "8BITMIME")) {
        caps->flags |= SMTP_CAP_8BITMIME;
    } else if (word_is(k, klen, "BINARYMIME")) {
        caps->flags |= SMTP_CAP_BINARYMIME;
    } else if (word_is(k, klen, "STARTTLS")) {
        caps->flags |= SMTP_CAP_STARTTLS;
    } else if (word_is(k, klen, "AUTH")) {
        caps->flags |= SMTP_CAP_AUTH;
        while (i < n) {
            while (i < n && is_blank(s[i]))
                i++;
            size_t m = i;
            while (i < n && !is_blank(s[i]))
                i++;
            caps_add_auth(caps, s + m, i - m);
        }
    } else if (word_is(k, klen, "SMTPUTF8")) {
        caps->flags |= SMTP_CAP_SMTPUTF8;
    } else if (word_is(k, klen, "ENHANCEDSTATUSCODES")) {
        caps->flags |= SMTP_CAP_ENHANCEDSTATUSCODES;
    } else if (word_is(k, klen, "CHUNKING")) {
        caps->flags |= SMTP_CAP_CHUNKING;
    } else if (word_is(k, klen, "DSN")) {
        caps->flags |= SMTP_CAP_DSN;
    } else if (word_is(k, klen, "REQUIRETLS")) {
        caps->flags |= SMTP_CAP_REQUIRETLS;
    }
}

void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps)
{
    memset(caps, 0, sizeof *caps);
    if (r->code != 250)
        return;
    size_t len = strnlen(r->text, sizeof r->text);
    if (r->len < len)
        len = r->len;
    const char *s = r->text, *end = r->text + len;
    const char *nl = memchr(s, '\n', len);
    if (!nl)
        return;                            /* greeting line only: plain SMTP */
    for (s = nl + 1; s < end;) {
        nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end;
        caps_line(caps, s, (size_t)(le - s));
        s = le + 1;
    }
}
