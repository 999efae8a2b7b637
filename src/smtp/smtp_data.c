/* The DATA phase byte parser (end marker, dot-unstuffing, CRLF normalization,
 * limits) and dot-stuffing. Only the exact bytes <CRLF>.<CRLF> end the data; never
 * works byte by byte (hot path): memchr per line, unchanged bytes appended in runs.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_data.h"
#include "util/result.h"

/* Every "." at the start of a line is withheld until the next byte tells whether
 * it is stuffing (dropped), a content line "." or the end marker. */
enum sd_state {
    SD_BOL = 0,     /* at a line start after CRLF, or at the very start of DATA */
    SD_BOL_BARE,    /* at a line start after a bare LF or bare CR */
    SD_DOT,         /* "." at SD_BOL */
    SD_DOT_BARE,    /* "." at SD_BOL_BARE: never the end marker */
    SD_DOT_CR,      /* ".\r" at SD_BOL: a LF now ends the data */
    SD_DOT_CR_BARE, /* ".\r" at SD_BOL_BARE: a content line "." */
    SD_TEXT,        /* inside a line */
    SD_CR,          /* inside a line; a CR ended the previous input and is withheld */
    SD_DONE,        /* the end marker was consumed */
};

/* Sticky flag or'ed into d->state: an append failed, store nothing more. */
#define SD_F_NOOUT 0x100

#define SD_LINE_MAX (SMTP_TEXT_LINE_MAX - 2)

void smtp_data_init(struct smtp_data *d, uint64_t max_size)
{
    memset(d, 0, sizeof *d);
    d->state = SD_BOL;
    d->max_size = max_size;
}

/* Appends n content bytes, honouring max_size and out->max (the output is always
 * a prefix of the content); size counts every byte. Keeps the first error in *rc. */
static void sd_emit(struct smtp_data *d, struct buf *out, const char *p, size_t n, int *rc)
{
    uint64_t max = d->max_size ? d->max_size : UINT64_MAX;
    uint64_t room = d->size < max ? max - d->size : 0;
    bool was_big = d->too_big;
    size_t keep = n;
    int r;

    if (n == 0)
        return;
    d->size += n;
    if (d->size > max)
        d->too_big = true;
    if (was_big || (d->state & SD_F_NOOUT))
        return;
    if (keep > room)
        keep = (size_t)room;
    if (out->max) {
        size_t oroom = out->max > out->len ? out->max - out->len : 0;
        if (keep > oroom) {
            keep = oroom;
            d->too_big = true;
        }
    }
    if (keep == 0)
        return;
    r = buf_append(out, p, keep);
    if (r == PT_TOOLONG) {
        d->too_big = true;
    } else if (r != PT_OK) {
        d->state |= SD_F_NOOUT;
        if (*rc == PT_OK)
            *rc = r;
    }
}

static void sd_line_grow(struct smtp_data *d, size_t n)
{
    d->line_len += n;
    if (d->line_len > SD_LINE_MAX)
        d->line_too_long = true;
}

int smtp_data_feed(struct smtp_data *d, const char *in, size_t len, size_t *consumed,
                   struct buf *out)
{
    const char *p = in, *end = in + len, *run = in;
    int st = d->state & ~SD_F_NOOUT;
    int rc = PT_OK;
    bool done = false;

    *consumed = 0;
    if (st == SD_DONE)
        return PT_OK;
    if (len == 0)
        return PT_AGAIN;
    /* [run, p) is content still to be appended verbatim. */
    while (p < end && rc == PT_OK && !done) {
        switch (st) {
        case SD_BOL:
        case SD_BOL_BARE:
            if (*p == '.') {
                sd_emit(d, out, run, (size_t)(p - run), &rc);
                run = ++p;
                st = st == SD_BOL ? SD_DOT : SD_DOT_BARE;
            } else {
                st = SD_TEXT;
            }
            break;
        case SD_DOT:
        case SD_DOT_BARE:
            if (*p == '\r') {
                run = ++p;
                st = st == SD_DOT ? SD_DOT_CR : SD_DOT_CR_BARE;
            } else if (*p == '\n') {
                /* "." ended by a bare LF: content, kept as "." (re-stuffed on relay). */
                d->line_len = 0;
                sd_emit(d, out, ".\r\n", 3, &rc);
                d->bare_lf = true;
                run = ++p;
                st = SD_BOL_BARE;
            } else {
                st = SD_TEXT; /* stuffing: the dot stays dropped, the line goes on */
            }
            break;
        case SD_DOT_CR:
            if (*p == '\n') {
                run = ++p;
                done = true;
                st = SD_DONE;
            } else {
                st = SD_DOT_CR_BARE; /* "." ended by a bare CR: content, as below */
            }
            break;
        case SD_DOT_CR_BARE:
            d->line_len = 0;
            sd_emit(d, out, ".\r\n", 3, &rc);
            if (*p == '\n') {
                run = ++p;
                st = SD_BOL;
            } else {
                d->bare_lf = true;
                run = p;
                st = SD_BOL_BARE;
            }
            break;
        case SD_CR:
            d->line_len = 0;
            sd_emit(d, out, "\r\n", 2, &rc);
            if (*p == '\n') {
                run = ++p;
                st = SD_BOL;
            } else {
                d->bare_lf = true;
                run = p;
                st = SD_BOL_BARE;
            }
            break;
        case SD_TEXT: {
            const char *lf = memchr(p, '\n', (size_t)(end - p));
            const char *stop = lf ? lf : end;
            const char *cr = memchr(p, '\r', (size_t)(stop - p));
            if (cr && cr + 1 < stop) {
                /* a bare CR: the line ends there, normalized to CRLF */
                sd_line_grow(d, (size_t)(cr - p));
                sd_emit(d, out, run, (size_t)(cr - run), &rc);
                sd_emit(d, out, "\r\n", 2, &rc);
                d->bare_lf = true;
                d->line_len = 0;
                run = p = cr + 1;
                st = SD_BOL_BARE;
            } else if (lf && cr) {
                /* the common case, CRLF: stays in the verbatim run */
                sd_line_grow(d, (size_t)(cr - p));
                d->line_len = 0;
                p = lf + 1;
                st = SD_BOL;
            } else if (lf) {
                sd_line_grow(d, (size_t)(lf - p));
                sd_emit(d, out, run, (size_t)(lf - run), &rc);
                sd_emit(d, out, "\r\n", 2, &rc);
                d->bare_lf = true;
                d->line_len = 0;
                run = p = lf + 1;
                st = SD_BOL_BARE;
            } else if (cr) {
                /* the input ends with CR: whether it is bare is decided next time */
                sd_line_grow(d, (size_t)(cr - p));
                sd_emit(d, out, run, (size_t)(cr - run), &rc);
                run = p = end;
                st = SD_CR;
            } else {
                sd_line_grow(d, (size_t)(end - p));
                p = end;
            }
            break;
        }
        default:
            abort(); /* corrupted private state: a broken invariant */
        }
    }
    sd_emit(d, out, run, (size_t)(p - run), &rc);
    d->state = st | (d->state & SD_F_NOOUT);
    if (memchr(in, 0, (size_t)(p - in)))
        d->has_nul = true;
    *consumed = (size_t)(p - in);
    if (rc != PT_OK)
        return rc;
    return done ? PT_OK : PT_AGAIN;
}

/* Appends [p, p+n) to out; keeps the first error. */
static void sd_put(struct buf *out, const char *p, size_t n, int *rc)
{
    if (n && *rc == PT_OK)
        *rc = buf_append(out, p, n);
}

int smtp_dot_stuff(const char *content, size_t len, struct buf *out)
{
    const char *p = len ? content : "", *end = p + len, *run = p;
    int rc = buf_reserve(out, len + 3);

    while (p < end && rc == PT_OK) {
        const char *lf, *stop, *cr;
        if (*p == '.') {
            /* the extra dot; the line's own dot stays in the run */
            sd_put(out, run, (size_t)(p - run), &rc);
            sd_put(out, ".", 1, &rc);
            run = p;
        }
        lf = memchr(p, '\n', (size_t)(end - p));
        stop = lf ? lf : end;
        cr = memchr(p, '\r', (size_t)(stop - p));
        if (cr && cr + 1 < stop) {
            /* bare CR: a line break for some receivers, so make it a real one */
            sd_put(out, run, (size_t)(cr + 1 - run), &rc);
            sd_put(out, "\n", 1, &rc);
            run = p = cr + 1;
        } else if (lf && cr) {
            p = lf + 1;
        } else if (lf) {
            sd_put(out, run, (size_t)(lf - run), &rc);
            sd_put(out, "\r\n", 2, &rc);
            run = p = lf + 1;
        } else {
            /* last line without LF (possibly ending in CR): terminate it */
            sd_put(out, run, (size_t)(end - run), &rc);
            sd_put(out, cr ? "\n" : "\r\n", cr ? 1 : 2, &rc);
            run = p = end;
        }
    }
    sd_put(out, run, (size_t)(p - run), &rc);
    sd_put(out, ".\r\n", 3, &rc);
    return rc;
}
