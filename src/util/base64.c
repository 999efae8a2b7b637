/* Base64; see base64.h. Table-driven, one pass, no allocation.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "util/base64.h"
#include "util/result.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

size_t base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

/* Encodes up to 3 octets (n of them) into 4 characters. */
static void quantum(const unsigned char *p, size_t n, char out[4])
{
    uint32_t w = (uint32_t)p[0] << 16;
    if (n > 1)
        w |= (uint32_t)p[1] << 8;
    if (n > 2)
        w |= p[2];
    out[0] = alphabet[w >> 18 & 63];
    out[1] = alphabet[w >> 12 & 63];
    out[2] = n > 1 ? alphabet[w >> 6 & 63] : '=';
    out[3] = n > 2 ? alphabet[w & 63] : '=';
}

int base64_encode(const void *in, size_t len, char *out, size_t outlen)
{
    const unsigned char *p = in;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3 || outlen < base64_encoded_len(len) + 1)
        return PT_TOOLONG;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3, o += 4)
        quantum(p + i, len - i < 3 ? len - i : 3, out + o);
    out[o] = 0;
    return PT_OK;
}

void base64_put(struct bufw *w, const void *in, size_t n, size_t line)
{
    const unsigned char *p = in;
    char chunk[256];                 /* whole quanta, then maybe CRLF */
    size_t per = line ? line / 4 * 3 : 189;  /* input octets per line or per chunk */
    if (per == 0 || per > 189)
        per = 189;
    for (size_t i = 0; i < n && !w->rc; i += per) {
        size_t take = n - i < per ? n - i : per, k = 0;
        for (size_t j = 0; j < take; j += 3, k += 4)
            quantum(p + i + j, take - j < 3 ? take - j : 3, chunk + k);
        if (line) {
            chunk[k++] = '\r';
            chunk[k++] = '\n';
        }
        bufw_put(w, chunk, k);
    }
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int base64_decode(const char *in, size_t len, unsigned flags, unsigned char *out, size_t outcap,
                  size_t *outlen)
{
    *outlen = 0;
    int q[4];
    size_t nq = 0, n = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if ((flags & BASE64_SKIP_SPACE) && is_space(c))
            continue;
        if (pad && c != '=')
            return PT_INVALID;       /* data after padding */
        if (c == '=') {
            if (nq < 2)
                return PT_INVALID;   /* "=" in the first two places of a quantum */
            pad++;
            q[nq++] = 0;
        } else if ((q[nq++] = value((unsigned char)c)) < 0) {
            return PT_INVALID;
        }
        if (nq < 4)
            continue;
        uint32_t w = (uint32_t)q[0] << 18 | (uint32_t)q[1] << 12 | (uint32_t)q[2] << 6 |
                     (uint32_t)q[3];
        if ((flags & BASE64_CANONICAL) &&
            ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))))
            return PT_INVALID;
        size_t take = 3 - pad;
        if (n + take > outcap)
            return PT_TOOLONG;
        unsigned char b[3] = { (unsigned char)(w >> 16), (unsigned char)(w >> 8),
                               (unsigned char)w };
        memcpy(out + n, b, take);
        n += take;
        nq = 0;
    }
    if (nq != 0)
        return PT_INVALID;
    *outlen = n;
    return PT_OK;
}
