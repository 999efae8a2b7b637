/* Bounce builder (RFC 3464 multipart/report, RFC 3462): pure text assembly. Never
 * lets a remote reply or an original header inject a header, a MIME boundary or a
 * line over 998 octets into the notification.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "queue/dsn.h"
#include "util/mime.h"
#include "util/result.h"
#include "util/timeutil.h"

#define DSN_LINE_SOFT 78           /* fold here when whitespace allows (RFC 5322 2.1.1) */
#define DSN_LINE_HARD 998          /* never longer, whatever the input */
#define DSN_VALUE_MAX 4096         /* one field value (a diagnostic); longer is cut */
#define DSN_ORIG_MAX (64 * 1024)   /* original header block included */
#define DSN_BOUNDARY_TRIES 100

/* Copies s into dst as one line's worth of text: control bytes (CR, LF, TAB,
 * NUL...) become spaces, leading and trailing blanks go, at most DSN_VALUE_MAX
 * bytes (cut on a UTF-8 boundary). */
static size_t clean_value(char dst[DSN_VALUE_MAX + 1], const char *s)
{
    size_t n = 0;
    if (!s)
        s = "";
    while (*s == ' ' || (*s > 0 && *s < 0x20) || *s == 0x7f)
        s++;
    for (; *s && n < DSN_VALUE_MAX; s++) {
        unsigned char c = (unsigned char)*s;
        dst[n++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    if (*s)
        while (n > 0 && ((unsigned char)dst[n - 1] & 0xc0) == 0x80)
            n--;                           /* drop a cut UTF-8 tail */
    if (*s && n > 0 && (unsigned char)dst[n - 1] >= 0xc0)
        n--;
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = 0;
    return n;
}

/* Keeps only characters safe inside a msg-id, a domain or a MIME boundary. */
static void clean_atom(char *dst, size_t cap, const char *s, const char *dflt)
{
    size_t n = 0;
    for (; s && *s && n + 1 < cap; s++) {
        char c = *s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '-' || c == '_')
            dst[n++] = c;
    }
    dst[n] = 0;
    if (n == 0)
        snprintf(dst, cap, "%s", dflt);
}

/* Writes "first<value>suffix" folded at blanks near DSN_LINE_SOFT columns, each
 * further line starting with cont (for header fields a single space: folding
 * whitespace); a blank-free run is broken hard so no line exceeds DSN_LINE_HARD.
 * CRLF after. */
static void put_wrapped(struct bufw *w, const char *first, const char *cont, const char *value,
                        const char *suffix)
{
    char v[DSN_VALUE_MAX + 1];
    size_t n = clean_value(v, value);
    const char *p = v, *end = v + n;
    const char *prefix = first;
    do {
        size_t col = strlen(prefix);
        size_t rest = (size_t)(end - p), take = rest, skip = 0;
        size_t soft = col < DSN_LINE_SOFT ? DSN_LINE_SOFT - col : 1;
        size_t hard = DSN_LINE_HARD - col - strlen(suffix);
        if (rest > soft) {
            size_t k = soft;
            while (k > 0 && p[k] != ' ')
                k--;
            if (k == 0) {                  /* no blank in reach: next one, if close enough */
                k = soft;
                while (k < rest && k < hard && p[k] != ' ')
                    k++;
            }
            take = k < rest ? k : rest;
            if (take > hard)
                take = hard;
            if (take == hard && take < rest && p[take] != ' ')
                while (take > 1 && ((unsigned char)p[take] & 0xc0) == 0x80)
                    take--;                /* don't split a UTF-8 sequence */
            while (take + skip < rest && p[take + skip] == ' ')
                skip++;
        }
        bufw_puts(w, prefix);
        bufw_put(w, p, take);
        p += take + skip;
        if (p >= end)
            bufw_puts(w, suffix);
        bufw_puts(w, "\r\n");
        prefix = cont;
    } while (p < end);
}

static bool valid_status(const char *s)
{
    /* class "." subject "." detail, RFC 3463 */
    if (!s || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    s += 2;
    for (int part = 0; part < 2; part++) {
        int d = 0;
        while (*s >= '0' && *s <= '9' && d < 4) {
            s++;
            d++;
        }
        if (d == 0 || d > 3 || *s != (part == 0 ? '.' : '\0'))
            return false;
        s += part == 0;
    }
    return true;
}

/* The recipient's status if well-formed, else the generic one for the case. */
static const char *rcpt_status(const struct dsn_info *info, const struct dsn_rcpt *r)
{
    if (valid_status(r->status))
        return r->status;
    return info->expired ? "4.4.7" : "5.0.0";
}

/* Length of the original's header block: up to (not including) the first empty
 * line, cut at a line end so it stays under DSN_ORIG_MAX. */
static size_t orig_headers_len(const char *p, size_t n)
{
    size_t i = 0, last_eol = 0;
    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t le = nl ? (size_t)(nl - p) : n;
        if (le == i || (le == i + 1 && p[i] == '\r'))
            return i;
        if (le + 1 > DSN_ORIG_MAX)
            return last_eol ? last_eol : (n < DSN_ORIG_MAX ? n : DSN_ORIG_MAX);
        i = nl ? le + 1 : n;
        last_eol = i;
    }
    return n;
}

/* The original headers, CRLF-normalized; NUL and stray CR become spaces; a line
 * over the limit is folded hard (CRLF SP), which keeps it a valid header. */
static void put_orig_headers(struct bufw *w, const char *p, size_t n)
{
    char line[DSN_LINE_HARD + 1];
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\n' || (c == '\r' && i + 1 < n && p[i + 1] == '\n')) {
            if (c == '\r')
                i++;
            bufw_put(w, line, col);
            bufw_puts(w, "\r\n");
            col = 0;
            continue;
        }
        if (c == '\0' || c == '\r')
            c = ' ';
        if (col == DSN_LINE_HARD) {
            bufw_put(w, line, col);
            bufw_puts(w, "\r\n");
            line[0] = ' ';
            col = 1;
        }
        line[col++] = c;
    }
    if (col) {
        bufw_put(w, line, col);
        bufw_puts(w, "\r\n");
    }
}

static void put_human(struct bufw *w, const struct dsn_info *info, const char *mta)
{
    bufw_printf(w, "This is the mail delivery system at %s.\r\n\r\n", mta);
    if (info->expired) {
        bufw_puts(w, "Your message could not be delivered in time to the recipients\r\n"
                  "listed below. The receiving side kept refusing it temporarily\r\n"
                  "until it reached its maximum time in the queue, so delivery has\r\n"
                  "been abandoned.\r\n");
    } else {
        bufw_puts(w, "Your message could not be delivered to the recipients listed\r\n"
                  "below. The receiving side refused it permanently, so it will not\r\n"
                  "be retried.\r\n");
    }
    bufw_puts(w, "\r\n");
    for (size_t i = 0; i < info->nrcpt; i++) {
        const struct dsn_rcpt *r = &info->rcpts[i];
        put_wrapped(w, "<", " ", r->addr, ">:");
        bufw_printf(w, "    Status: %s\r\n", rcpt_status(info, r));
        if (r->remote_mta && *r->remote_mta)
            put_wrapped(w, "    Remote server: ", "      ", r->remote_mta, "");
        if (r->diagnostic && *r->diagnostic)
            put_wrapped(w, "    Reply: ", "      ", r->diagnostic, "");
        bufw_puts(w, "\r\n");
    }
    bufw_puts(w, "The headers of your message are attached.\r\n");
}

static void put_status(struct bufw *w, const struct dsn_info *info, const char *mta,
                       const char *now)
{
    char date[64];
    bufw_printf(w, "Reporting-MTA: dns; %s\r\n", mta);
    put_wrapped(w, "X-Petrel-Id: ", " ", info->id, "");
    if (info->arrival > 0) {
        time_rfc5322(info->arrival, date, sizeof date);
        bufw_printf(w, "Arrival-Date: %s\r\n", date);
    }
    for (size_t i = 0; i < info->nrcpt; i++) {
        const struct dsn_rcpt *r = &info->rcpts[i];
        bufw_puts(w, "\r\n");
        put_wrapped(w, "Final-Recipient: rfc822; ", " ", r->addr, "");
        bufw_puts(w, "Action: failed\r\n");
        bufw_printf(w, "Status: %s\r\n", rcpt_status(info, r));
        if (r->remote_mta && *r->remote_mta)
            put_wrapped(w, "Remote-MTA: dns; ", " ", r->remote_mta, "");
        if (r->diagnostic && *r->diagnostic)
            put_wrapped(w, "Diagnostic-Code: smtp; ", " ", r->diagnostic, "");
        bufw_printf(w, "Last-Attempt-Date: %s\r\n", now);
    }
}

static bool has_8bit(const struct buf *b)
{
    for (size_t i = 0; i < b->len; i++)
        if ((unsigned char)b->data[i] >= 0x80)
            return true;
    return false;
}

int dsn_build(const struct dsn_info *info, struct buf *out)
{
    if (!info->sender || !*info->sender || info->nrcpt == 0 || !info->rcpts)
        return PT_INVALID;                 /* never a bounce to <>; nothing to report */

    char mta[256], idtok[64], now[64], boundary[96];
    clean_atom(mta, sizeof mta, info->reporting_mta, "localhost");
    clean_atom(idtok, sizeof idtok, info->id, "unknown");
    time_rfc5322(time_now(), now, sizeof now);

    struct buf parts[3];
    for (int i = 0; i < 3; i++)
        buf_init(&parts[i], 0);
    struct bufw pw = { &parts[0], 0 };
    put_human(&pw, info, mta);
    pw.b = &parts[1];
    put_status(&pw, info, mta, now);
    pw.b = &parts[2];
    if (info->orig && info->orig_len)
        put_orig_headers(&pw, info->orig, orig_headers_len(info->orig, info->orig_len));
    int rc = pw.rc;

    /* The id makes the boundary unique per message; an original header that
     * happens to contain it (the id is guessable) only moves us to the next one. */
    int tries = 0;
    do
        snprintf(boundary, sizeof boundary, "=_petrel-dsn-%.32s-%d", idtok, tries);
    while (!rc && mime_boundary_clashes(boundary, parts, 3) && ++tries < DSN_BOUNDARY_TRIES);
    if (!rc && tries == DSN_BOUNDARY_TRIES)
        rc = PT_INVALID;

    size_t start = out->len;
    struct bufw w = { out, rc };
    bufw_puts(&w, "From: Mail Delivery System <MAILER-DAEMON@");
    bufw_puts(&w, mta);
    bufw_puts(&w, ">\r\n");
    put_wrapped(&w, "To: <", " ", info->sender, ">");
    bufw_printf(&w, "Subject: %s\r\n", info->expired
             ? "Delivery Status Notification (Failure): message expired"
             : "Undelivered Mail Returned to Sender");
    bufw_printf(&w, "Date: %s\r\n", now);
    bufw_printf(&w, "Message-ID: <%s.dsn@%s>\r\n", idtok, mta);
    bufw_puts(&w, "Auto-Submitted: auto-replied\r\n"
               "MIME-Version: 1.0\r\n");
    mime_multipart_begin(&w, "report", "report-type=delivery-status", boundary,
                         "This is a MIME-encapsulated delivery status notification.");
    bufw_puts(&w, "Content-Description: Notification\r\n");
    if (has_8bit(&parts[0]))
        bufw_puts(&w, "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: 8bit\r\n");
    else
        bufw_puts(&w, "Content-Type: text/plain; charset=us-ascii\r\n");
    bufw_puts(&w, "\r\n");
    bufw_put(&w, parts[0].data, parts[0].len);

    bufw_puts(&w, "\r\n");
    mime_multipart_next(&w, boundary);
    bufw_puts(&w, "Content-Description: Delivery report\r\n"
               "Content-Type: message/delivery-status\r\n\r\n");
    bufw_put(&w, parts[1].data, parts[1].len);

    bufw_puts(&w, "\r\n");
    mime_multipart_next(&w, boundary);
    bufw_puts(&w, "Content-Description: Undelivered Message Headers\r\n"
               "Content-Type: text/rfc822-headers\r\n\r\n");
    bufw_put(&w, parts[2].data, parts[2].len);
    bufw_puts(&w, "\r\n");
    mime_multipart_end(&w, boundary);

    for (int i = 0; i < 3; i++)
        buf_free(&parts[i]);
    if (w.rc) {
        out->len = start;
        if (out->data)
            out->data[start] = 0;
    }
    return w.rc;
}
