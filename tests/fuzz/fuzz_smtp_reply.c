/* Fuzz target for the SMTP reply parser: arbitrary bytes fed whole and in random
 * pieces must give the same replies and the same error at the same offset, and
 * every reply must satisfy the header's bounds. Never trusts the input.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_reply.h"
#include "util/result.h"

#define FZ_MAX_REPLIES 2048

struct fz_print {
    int code, nlines;
    size_t len;
    char enhanced[16];
    uint64_t text_hash;
};

struct fz_run {
    int n;
    int rc;                    /* PT_AGAIN when the input ran out cleanly */
    size_t err_at;             /* input offset just past the byte that failed */
    struct fz_print p[FZ_MAX_REPLIES];
};

static struct fz_run fz_whole, fz_split;
static struct smtp_reply fz_reply;

#define FZ_CHECK(c) do { if (!(c)) abort(); } while (0)

static uint64_t fz_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static uint64_t fz_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void fz_check_reply(const struct smtp_reply *r)
{
    FZ_CHECK(r->code >= 200 && r->code <= 599);
    FZ_CHECK(r->nlines >= 1 && r->nlines <= SMTP_REPLY_LINES);
    FZ_CHECK(r->len < SMTP_REPLY_MAX && r->text[r->len] == 0 && strlen(r->text) == r->len);
    int nl = 0;
    for (size_t i = 0; i < r->len; i++) {
        unsigned char c = (unsigned char)r->text[i];
        FZ_CHECK(c >= 0x20 || c == '\t' || c == '\n');
        FZ_CHECK(c != 0x7f);
        nl += c == '\n';
    }
    FZ_CHECK(nl == r->nlines - 1);
    size_t el = strnlen(r->enhanced, sizeof r->enhanced);
    FZ_CHECK(el < sizeof r->enhanced);
    if (el) {
        FZ_CHECK(r->enhanced[0] == '0' + r->code / 100 && r->enhanced[1] == '.');
        FZ_CHECK(strspn(r->enhanced, "0123456789.") == el);
    }
    struct smtp_caps caps;
    smtp_caps_parse(r, &caps);
    size_t al = strnlen(caps.auth, sizeof caps.auth);
    FZ_CHECK(al < sizeof caps.auth);
    FZ_CHECK(al == 0 || (caps.auth[0] != ' ' && caps.auth[al - 1] != ' '));
    if (r->code != 250)
        FZ_CHECK(caps.flags == 0 && caps.size == 0 && al == 0);
}

static void fz_record(struct fz_run *run, const struct smtp_reply *r)
{
    fz_check_reply(r);
    if (run->n < FZ_MAX_REPLIES) {
        struct fz_print *p = &run->p[run->n];
        p->code = r->code;
        p->nlines = r->nlines;
        p->len = r->len;
        memcpy(p->enhanced, r->enhanced, sizeof p->enhanced);
        p->text_hash = fz_hash(r->text, r->len);
    }
    run->n++;
}

/* Feeds data in pieces; step_seed 0 = everything in one piece. */
static void fz_feed(const uint8_t *data, size_t size, uint64_t step_seed, struct fz_run *run)
{
    struct smtp_reply_parser p;
    smtp_reply_init(&p);
    run->n = 0;
    run->rc = PT_AGAIN;
    run->err_at = 0;
    size_t off = 0;
    while (off < size) {
        size_t piece = size - off;
        if (step_seed) {
            uint64_t r = fz_rand(&step_seed);
            size_t want = (r & 3) == 0 ? (size_t)(r >> 8) % 2048 + 1 : (size_t)(r >> 8) % 8 + 1;
            if (want < piece)
                piece = want;
        }
        size_t used = 0;
        while (used < piece) {
            size_t c = SIZE_MAX;
            int rc = smtp_reply_feed(&p, (const char *)data + off + used, piece - used, &c,
                                     &fz_reply);
            FZ_CHECK(c <= piece - used);
            used += c;
            if (rc == PT_OK) {
                FZ_CHECK(c > 0);
                fz_record(run, &fz_reply);
                continue;
            }
            if (rc == PT_AGAIN) {
                FZ_CHECK(used == piece);
                continue;
            }
            FZ_CHECK(rc == PT_INVALID || rc == PT_TOOLONG);
            FZ_CHECK(c > 0);
            run->rc = rc;
            run->err_at = off + used;
            /* sticky until re-init */
            FZ_CHECK(smtp_reply_feed(&p, "250 ok\r\n", 8, &c, &fz_reply) == rc && c == 0);
            return;
        }
        off += piece;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_feed(data, size, 0, &fz_whole);
    uint64_t seed = fz_hash(data, size) | 1;
    fz_feed(data, size, seed, &fz_split);
    FZ_CHECK(fz_whole.n == fz_split.n);
    FZ_CHECK(fz_whole.rc == fz_split.rc);
    FZ_CHECK(fz_whole.err_at == fz_split.err_at);
    int n = fz_whole.n < FZ_MAX_REPLIES ? fz_whole.n : FZ_MAX_REPLIES;
    for (int i = 0; i < n; i++) {
        const struct fz_print *a = &fz_whole.p[i], *b = &fz_split.p[i];
        FZ_CHECK(a->code == b->code && a->nlines == b->nlines && a->len == b->len);
        FZ_CHECK(strcmp(a->enhanced, b->enhanced) == 0 && a->text_hash == b->text_hash);
    }
    return 0;
}
