/* Raw DNS answer records; see dnsrec.h. Framing checks mirror dns.c's: every
 * length is checked against the buffer before it is used.
 * SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "delivery/dnsrec.h"
#include "util/result.h"

int dnsrec_skip_name(const unsigned char *b, int len, int *off)
{
    int p = *off;
    while (p < len) {
        unsigned c = b[p];
        if (c == 0) {
            *off = p + 1;
            return PT_OK;
        }
        if ((c & 0xc0) == 0xc0) {
            if (p + 2 > len)
                return PT_INVALID;
            *off = p + 2;
            return PT_OK;
        }
        if (c & 0xc0)
            return PT_INVALID;
        p += 1 + (int)c;
    }
    return PT_INVALID;
}

unsigned dnsrec_get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

int dnsrec_parse(const unsigned char *b, int len, unsigned type, struct dnsrec_set *out)
{
    memset(out, 0, sizeof *out);
    if (!b || len < 12 || len > 65535 || !(b[2] & 0x80))
        return PT_INVALID;
    out->rcode = b[3] & 0x0f;
    out->ad = (b[3] & 0x20) != 0;
    unsigned qd = dnsrec_get16(b + 4), an = dnsrec_get16(b + 6);
    int off = 12;
    for (unsigned i = 0; i < qd; i++) {
        if (dnsrec_skip_name(b, len, &off) != PT_OK || off + 4 > len)
            return PT_INVALID;
        off += 4;
    }
    for (unsigned i = 0; i < an; i++) {
        if (dnsrec_skip_name(b, len, &off) != PT_OK || off + 10 > len)
            return PT_INVALID;
        unsigned rtype = dnsrec_get16(b + off), rclass = dnsrec_get16(b + off + 2);
        unsigned rdlen = dnsrec_get16(b + off + 8);
        off += 10;
        if (rdlen > (unsigned)(len - off))
            return PT_INVALID;
        if (rtype == type && rclass == 1 && out->n < DNSREC_MAX) {
            out->rr[out->n].off = (uint16_t)off;
            out->rr[out->n].len = (uint16_t)rdlen;
            out->n++;
        }
        off += (int)rdlen;
    }
    return PT_OK;
}

int dnsrec_txt_join(const unsigned char *rdata, size_t len, char *out, size_t outlen,
                    size_t *outn)
{
    size_t n = 0, i = 0;
    if (outlen == 0)
        return PT_TOOLONG;
    out[0] = '\0';
    *outn = 0;
    while (i < len) {
        size_t sl = rdata[i++];
        if (sl > len - i)
            return PT_INVALID;
        if (n + sl >= outlen)
            return PT_TOOLONG;
        memcpy(out + n, rdata + i, sl);
        n += sl;
        i += sl;
    }
    out[n] = '\0';
    *outn = n;
    return PT_OK;
}
