/* Fuzz target for smtp_data_feed and smtp_dot_stuff: checks the parser against a
 * slow line-by-line model, the same result whatever the input split, the end found
 * only at the first <CRLF>.<CRLF>, the limits, and that stuffing round-trips.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_data.h"
#include "util/buf.h"
#include "util/result.h"

#define FD_CHECK(cond) \
    do {               \
        if (!(cond))   \
            abort();   \
    } while (0)

struct fd_result {
    int rc;
    size_t consumed;
    struct buf out;
    uint64_t size;
    bool too_big, line_too_long, bare_lf, has_nul;
};

static uint32_t fd_rand(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void fd_append(struct buf *b, const void *p, size_t n)
{
    FD_CHECK(buf_append(b, p, n) == PT_OK);
}

/* The model: split into lines first, then apply the rules of smtp_data.h. The
 * content is built whole (no limits); the caller derives what should be stored. */
static void fd_model(const char *in, size_t len, struct fd_result *r)
{
    size_t pos = 0;
    bool after_crlf = true;

    buf_init(&r->out, 0);
    r->line_too_long = r->bare_lf = false;
    for (;;) {
        size_t i = pos, next, n;
        const char *line = in + pos;
        int term; /* 0 CRLF, 1 bare LF, 2 bare CR */
        while (i < len && in[i] != '\n' && in[i] != '\r')
            i++;
        if (i == len || (in[i] == '\r' && i + 1 == len)) {
            /* unterminated last line: what has been released so far */
            n = i - pos;
            if (n && line[0] == '.') {
                line++;
                n--;
            }
            fd_append(&r->out, line, n);
            if (n > 998)
                r->line_too_long = true;
            r->rc = PT_AGAIN;
            r->consumed = len;
            break;
        }
        if (in[i] == '\n') {
            term = 1;
            next = i + 1;
        } else if (in[i + 1] == '\n') {
            term = 0;
            next = i + 2;
        } else {
            term = 2;
            next = i + 1;
        }
        n = i - pos;
        if (n == 1 && line[0] == '.' && term == 0 && after_crlf) {
            r->rc = PT_OK;
            r->consumed = next;
            break;
        }
        if (n > 1 && line[0] == '.') {
            line++;
            n--;
        }
        if (n > 998)
            r->line_too_long = true;
        fd_append(&r->out, line, n);
        fd_append(&r->out, "\r\n", 2);
        if (term)
            r->bare_lf = true;
        after_crlf = term == 0;
        pos = next;
    }
    r->size = r->out.len;
    r->has_nul = memchr(in, 0, r->consumed) != NULL;
}

/* Feeds in[0..len) in pieces; piece sizes from seed (0 = all at once). */
static void fd_feed(const char *in, size_t len, uint64_t max_size, size_t out_max,
                    uint32_t seed, struct fd_result *r)
{
    struct smtp_data d;
    size_t off = 0;

    smtp_data_init(&d, max_size);
    buf_init(&r->out, out_max);
    r->rc = PT_AGAIN;
    r->consumed = 0;
    for (;;) {
        size_t piece = len - off, used = 0;
        if (seed) {
            uint32_t k = fd_rand(&seed);
            size_t lim = (k & 3) == 0 ? 1 : (k & 3) == 1 ? 4 : (k & 3) == 2 ? 64 : 4096;
            size_t want = (k >> 2) % (lim + 1);
            if (want < piece)
                piece = want;
        }
        r->rc = smtp_data_feed(&d, in + off, piece, &used, &r->out);
        FD_CHECK(used <= piece);
        if (r->rc == PT_OK) {
            off += used;
            break;
        }
        FD_CHECK(r->rc == PT_AGAIN);
        FD_CHECK(used == piece);
        off += used;
        if (off == len)
            break;
    }
    r->consumed = off;
    r->size = d.size;
    r->too_big = d.too_big;
    r->line_too_long = d.line_too_long;
    r->bare_lf = d.bare_lf;
    r->has_nul = d.has_nul;
    if (r->rc == PT_OK) {
        size_t again = 1;
        FD_CHECK(smtp_data_feed(&d, "x", 1, &again, &r->out) == PT_OK && again == 0);
    }
}

static void fd_same(const struct fd_result *a, const struct fd_result *b)
{
    FD_CHECK(a->rc == b->rc);
    FD_CHECK(a->consumed == b->consumed);
    FD_CHECK(a->out.len == b->out.len);
    FD_CHECK(a->out.len == 0 || memcmp(a->out.data, b->out.data, a->out.len) == 0);
    FD_CHECK(a->size == b->size);
    FD_CHECK(a->too_big == b->too_big);
    FD_CHECK(a->line_too_long == b->line_too_long);
    FD_CHECK(a->bare_lf == b->bare_lf);
    FD_CHECK(a->has_nul == b->has_nul);
}

/* The end is the first CRLF.CRLF, the start of DATA counting as a CRLF. */
static size_t fd_first_end(const char *in, size_t len)
{
    if (len >= 3 && memcmp(in, ".\r\n", 3) == 0)
        return 3;
    const char *m = len >= 5 ? memmem(in, len, "\r\n.\r\n", 5) : NULL;
    return m ? (size_t)(m - in) + 5 : 0;
}

/* CRLF-normalizes s as smtp_dot_stuff does, terminating a last partial line. */
static void fd_normalize(const char *s, size_t n, struct buf *out)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] == '\r' || s[i] == '\n') {
            fd_append(out, "\r\n", 2);
            i += (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') ? 2 : 1;
        } else {
            fd_append(out, s + i, 1);
            i++;
        }
    }
    if (n && s[n - 1] != '\n' && s[n - 1] != '\r')
        fd_append(out, "\r\n", 2);
}

/* smtp_dot_stuff(content) fed back must give content CRLF-normalized. */
static void fd_round_trip(const char *content, size_t n)
{
    struct buf stuffed, expect;
    struct fd_result r;

    buf_init(&stuffed, 0);
    buf_init(&expect, 0);
    FD_CHECK(smtp_dot_stuff(content, n, &stuffed) == PT_OK);
    fd_normalize(content, n, &expect);
    fd_feed(stuffed.data, stuffed.len, 0, 0, (uint32_t)n | 1u, &r);
    FD_CHECK(r.rc == PT_OK);
    FD_CHECK(r.consumed == stuffed.len);
    FD_CHECK(!r.bare_lf && !r.too_big);
    FD_CHECK(r.out.len == expect.len);
    FD_CHECK(expect.len == 0 || memcmp(r.out.data, expect.data, expect.len) == 0);
    buf_free(&r.out);
    buf_free(&stuffed);
    buf_free(&expect);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fd_result model, whole, split;
    uint64_t max_size;
    size_t out_max, stored_cap, end;
    uint32_t seed;
    const char *in;
    size_t len;

    if (size < 4)
        return 0;
    max_size = data[0] < 128 ? 0 : (uint64_t)(data[0] - 128) * 3;
    out_max = data[1] < 240 ? 0 : (size_t)(data[1] - 240) * 5 + 1;
    seed = ((uint32_t)data[2] << 8 | data[3]) | 1u;
    in = (const char *)data + 4;
    len = size - 4;

    fd_model(in, len, &model);
    fd_feed(in, len, max_size, out_max, 0, &whole);
    fd_feed(in, len, max_size, out_max, seed, &split);

    /* limits: what is stored is the prefix of the model's content */
    stored_cap = model.out.len;
    if (max_size && stored_cap > max_size)
        stored_cap = (size_t)max_size;
    if (out_max && stored_cap > out_max)
        stored_cap = out_max;
    FD_CHECK(whole.rc == model.rc && whole.consumed == model.consumed);
    FD_CHECK(whole.size == model.size);
    FD_CHECK(whole.out.len == stored_cap);
    FD_CHECK(stored_cap == 0 || memcmp(whole.out.data, model.out.data, stored_cap) == 0);
    FD_CHECK(whole.too_big == (model.out.len > stored_cap));
    FD_CHECK(whole.line_too_long == model.line_too_long);
    FD_CHECK(whole.bare_lf == model.bare_lf);
    FD_CHECK(whole.has_nul == model.has_nul);
    fd_same(&whole, &split);

    end = fd_first_end(in, len);
    FD_CHECK(whole.rc == (end ? PT_OK : PT_AGAIN));
    if (end)
        FD_CHECK(whole.consumed == end);

    /* the parser's own output is already normalized: stuffing must round-trip it */
    fd_round_trip(model.out.data ? model.out.data : "", model.out.len);
    /* and arbitrary bytes (bare CR/LF, dots, NULs) too */
    fd_round_trip(in, len);

    buf_free(&model.out);
    buf_free(&whole.out);
    buf_free(&split.out);
    return 0;
}
