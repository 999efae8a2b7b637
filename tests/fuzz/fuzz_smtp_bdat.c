/* Fuzz target for the BDAT reader: smtp_bdat_args on arbitrary argument text, and
 * smtp_bdat_feed over chunks and reads cut at arbitrary points, checked against a
 * slow model (CRLF normalization, line-length and bare-line-end flags), never
 * taking an octet past the announced chunk, discarded chunks storing nothing; in raw
 * mode (BODY=BINARYMIME) the kept octets come out unchanged.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp/smtp_bdat.h"
#include "util/buf.h"
#include "util/result.h"

#define FB_CHECK(cond) \
    do {               \
        if (!(cond))   \
            abort();   \
    } while (0)

static uint32_t fb_rand(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void fb_append(struct buf *b, const void *p, size_t n)
{
    FB_CHECK(buf_append(b, p, n) == PT_OK);
}

/* The model: every CRLF, bare LF or bare CR is one CRLF; an unterminated last
 * line gets one; flags as documented. */
static void fb_model(const char *s, size_t n, struct buf *out, bool *too_long, bool *bare)
{
    size_t i = 0, line = 0;
    *too_long = *bare = false;
    while (i < n) {
        if (s[i] == '\r' || s[i] == '\n') {
            bool crlf = s[i] == '\r' && i + 1 < n && s[i + 1] == '\n';
            fb_append(out, "\r\n", 2);
            if (!crlf)
                *bare = true;
            i += crlf ? 2 : 1;
            line = 0;
        } else {
            fb_append(out, s + i, 1);
            if (++line > 998)
                *too_long = true;
            i++;
        }
    }
    if (line > 0)
        fb_append(out, "\r\n", 2);
}

/* Argument syntax: PT_OK only for 1*DIGIT [" LAST"] within 64 bits. */
static void fb_args(const char *a, size_t n)
{
    uint64_t size;
    bool last;
    int rc = smtp_bdat_args(a, n, &size, &last);
    size_t digits = 0;
    while (digits < n && a[digits] >= '0' && a[digits] <= '9')
        digits++;
    bool syntax = digits > 0 && (digits == n || (n - digits == 5 && a[digits] == ' ' &&
                                                 strncasecmp(a + digits + 1, "LAST", 4) == 0));
    if (rc == PT_OK) {
        FB_CHECK(syntax);
        FB_CHECK(last == (digits < n));
        if (digits < 20)
            FB_CHECK(size < 10000000000000000000ull);
    } else {
        FB_CHECK(rc == PT_INVALID);
        FB_CHECK(!syntax || digits >= 20);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf model, out;
    struct smtp_bdat b;
    bool too_long, bare;
    uint32_t seed;
    const char *in;
    size_t len, off = 0;

    if (size < 3)
        return 0;
    seed = ((uint32_t)data[0] << 8 | data[1]) | 1u;
    bool discard_some = data[2] & 1;
    bool raw = data[2] & 2;   /* BODY=BINARYMIME: kept octets stored exactly */
    in = (const char *)data + 3;
    len = size - 3;
    fb_args(in, len < 64 ? len : 64);

    buf_init(&model, 0);
    buf_init(&out, 0);
    smtp_bdat_init(&b);
    b.raw = raw;
    /* split the input into chunks; optionally insert discarded chunks of junk */
    struct buf kept;
    buf_init(&kept, 0);
    while (off < len) {
        uint32_t k = fb_rand(&seed);
        size_t chunk = (k & 3) == 0 ? 0 : (k >> 2) % (len - off + 1);
        bool discard = discard_some && (k & 0x30) == 0x30;
        bool last = off + chunk >= len && !discard;
        smtp_bdat_chunk(&b, chunk, last, discard);
        /* the chunk followed by 3 octets of the next command */
        size_t avail = chunk + (off + chunk + 3 <= len ? 3 : len - off - chunk), got = 0;
        while (got < chunk || chunk == 0) {
            uint32_t r = fb_rand(&seed);
            size_t piece = (r & 1) ? 1 + (r >> 1) % 7 : avail - got;
            size_t used = 0;
            if (piece > avail - got)
                piece = avail - got;
            int rc = smtp_bdat_feed(&b, in + off + got, piece, &used, &out);
            FB_CHECK(used <= piece);
            FB_CHECK(got + used <= chunk);
            got += used;
            if (rc == PT_OK) {
                FB_CHECK(got == chunk && b.remaining == 0);
                break;
            }
            FB_CHECK(rc == PT_AGAIN && used == piece && got < chunk);
        }
        if (!discard)
            fb_append(&kept, in + off, chunk);
        off += chunk;
        if (last)
            break;
    }
    smtp_bdat_finish(&b, &out);
    if (raw) {
        too_long = bare = false;
        if (kept.len)
            fb_append(&model, kept.data, kept.len);
    } else {
        fb_model(kept.data ? kept.data : "", kept.len, &model, &too_long, &bare);
    }
    FB_CHECK(!b.nomem);
    FB_CHECK(b.total == kept.len);
    FB_CHECK(out.len == model.len);
    FB_CHECK(model.len == 0 || memcmp(out.data, model.data, model.len) == 0);
    FB_CHECK(b.line_too_long == too_long);
    FB_CHECK(b.bare_lf == bare);
    buf_free(&kept);
    buf_free(&model);
    buf_free(&out);
    return 0;
}
