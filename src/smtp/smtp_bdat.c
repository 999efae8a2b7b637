/* BDAT chunk reader (RFC 3030): argument parsing and chunk octets into the message,
 * CRLF-normalized. Works in runs (memchr per line), never byte by byte, and never
 * takes an octet beyond the announced chunk size.
 * SPDX-License-Identifier: Apache-2.0 */
#include <string.h>
#include <strings.h>

#include "smtp/smtp_bdat.h"
#include "smtp/smtp_data.h"
#include "util/result.h"

#define SB_LINE_MAX (SMTP_TEXT_LINE_MAX - 2)

int smtp_bdat_args(const char *arg, size_t n, uint64_t *size, bool *last)
{
    size_t i = 0;
    uint64_t v = 0;

    *size = 0;
    *last = false;
    if (!arg || n == 0)
        return PT_INVALID;
    for (; i < n && arg[i] != ' '; i++) {
        unsigned d = (unsigned)(unsigned char)arg[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return PT_INVALID;
        v = v * 10 + d;
    }
    if (i == 0)
        return PT_INVALID;
    if (i < n) {
        /* exactly one space, then LAST and nothing else */
        if (n - i - 1 != 4 || strncasecmp(arg + i + 1, "LAST", 4) != 0)
            return PT_INVALID;
        *last = true;
    }
    *size = v;
    return PT_OK;
}

void smtp_bdat_init(struct smtp_bdat *b)
{
    memset(b, 0, sizeof *b);
}

void smtp_bdat_chunk(struct smtp_bdat *b, uint64_t size, bool last, bool discard)
{
    b->remaining = size;
    b->last = last;
    b->discard = discard;
    if (!discard)
        b->total += size;
}

static void sb_emit(struct smtp_bdat *b, struct buf *out, const char *p, size_t n)
{
    if (n == 0 || b->nomem)
        return;
    if (buf_append(out, p, n) != PT_OK)
        b->nomem = true;
}

static void sb_line_grow(struct smtp_bdat *b, size_t n)
{
    b->line_len += n;
    if (b->line_len > SB_LINE_MAX)
        b->line_too_long = true;
}

/* A line end was written: the next line starts. */
static void sb_eol(struct smtp_bdat *b, struct buf *out, bool bare)
{
    sb_emit(b, out, "\r\n", 2);
    b->line_len = 0;
    if (bare)
        b->bare_lf = true;
}

int smtp_bdat_feed(struct smtp_bdat *b, const char *in, size_t len, size_t *consumed,
                   struct buf *out)
{
    size_t take = len;
    const char *p = in, *end, *run;

    if ((uint64_t)take > b->remaining)
        take = (size_t)b->remaining;
    *consumed = take;
    b->remaining -= take;
    if (take && memchr(in, 0, take))
        b->has_nul = true;
    if (b->discard || take == 0)
        return b->remaining ? PT_AGAIN : PT_OK;
    if (b->raw) {
        sb_emit(b, out, in, take);
        return b->remaining ? PT_AGAIN : PT_OK;
    }
    end = in + take;
    if (b->cr) {
        /* a CR ended the previous octets: CRLF if a LF follows, else a bare CR */
        b->cr = false;
        if (*p == '\n') {
            sb_eol(b, out, false);
            p++;
        } else {
            sb_eol(b, out, true);
        }
    }
    run = p;
    /* [run, p) is content still to be appended verbatim */
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        const char *stop = lf ? lf : end;
        const char *cr = memchr(p, '\r', (size_t)(stop - p));
        if (cr && cr + 1 < stop) {
            sb_line_grow(b, (size_t)(cr - p));
            sb_emit(b, out, run, (size_t)(cr - run));
            sb_eol(b, out, true);
            run = p = cr + 1;
        } else if (lf && cr) {
            /* the common case, CRLF: stays in the verbatim run */
            sb_line_grow(b, (size_t)(cr - p));
            b->line_len = 0;
            p = lf + 1;
        } else if (lf) {
            sb_line_grow(b, (size_t)(lf - p));
            sb_emit(b, out, run, (size_t)(lf - run));
            sb_eol(b, out, true);
            run = p = lf + 1;
        } else if (cr) {
            /* the octets end with CR: bare or not is decided by the next octet */
            sb_line_grow(b, (size_t)(cr - p));
            sb_emit(b, out, run, (size_t)(cr - run));
            b->cr = true;
            run = p = end;
        } else {
            sb_line_grow(b, (size_t)(end - p));
            p = end;
        }
    }
    sb_emit(b, out, run, (size_t)(p - run));
    return b->remaining ? PT_AGAIN : PT_OK;
}

void smtp_bdat_finish(struct smtp_bdat *b, struct buf *out)
{
    if (b->raw)
        return;
    if (b->cr) {
        b->cr = false;
        sb_eol(b, out, true);
    } else if (b->line_len > 0) {
        sb_eol(b, out, false);
    }
}
