/* UTF-8 validation for writers that must emit well-formed text (JSON log,
 * Prometheus labels). Pure; never reads past the terminating NUL.
 * SPDX-License-Identifier: Apache-2.0 */
#include "util/utf8.h"

/* Length (2..4) of the well-formed UTF-8 sequence starting with a non-ASCII byte at p, or
 * 0 when it is not one (stray continuation, overlong, surrogate, > U+10FFFF, truncated).
 * p is NUL-terminated, and NUL fails the continuation test, so reads stay in bounds. */
size_t utf8_seq_len(const unsigned char *p)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t n;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c == 0xe0)
        n = 3, lo = 0xa0;
    else if (c == 0xed)
        n = 3, hi = 0x9f;
    else if (c >= 0xe1 && c <= 0xef)
        n = 3;
    else if (c == 0xf0)
        n = 4, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3)
        n = 4;
    else if (c == 0xf4)
        n = 4, hi = 0x8f;
    else
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}
