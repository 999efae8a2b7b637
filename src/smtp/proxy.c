/* PROXY protocol header parser (haproxy.org/download/2.8/doc/proxy-protocol.txt):
 * v1 "PROXY TCP4|TCP6|UNKNOWN ..." lines and v2 binary headers with TLVs skipped.
 * Pure: no allocation, no I/O; every length is checked before it is used.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "smtp/proxy.h"
#include "util/result.h"

static const uint8_t proxy_v2_sig[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};
static const char proxy_v1_sig[] = "PROXY ";

#define PROXY_V2_CMD_LOCAL 0x0
#define PROXY_V2_CMD_PROXY 0x1
#define PROXY_V2_AF_UNSPEC 0x0
#define PROXY_V2_AF_INET   0x1
#define PROXY_V2_AF_INET6  0x2
#define PROXY_V2_AF_UNIX   0x3
#define PROXY_V2_TP_STREAM 0x1

/* Does p[0..n) agree with the first n bytes of sig (n may be shorter)? */
static bool proxy_prefix_of(const uint8_t *p, size_t n, const uint8_t *sig, size_t siglen)
{
    size_t k = n < siglen ? n : siglen;
    return memcmp(p, sig, k) == 0;
}

/* ---- v1 ------------------------------------------------------------------ */

/* Next space-separated field of line[*at..end) into out (NUL-terminated, at most
 * cap-1 bytes); fields are separated by exactly one space. */
static int proxy_v1_field(const char *line, size_t end, size_t *at, char *out, size_t cap)
{
    size_t i = *at, k = 0;
    while (i < end && line[i] != ' ') {
        if (k + 1 >= cap)
            return PT_INVALID;
        out[k++] = line[i++];
    }
    out[k] = 0;
    if (k == 0)
        return PT_INVALID;
    *at = i < end ? i + 1 : i;  /* skip the one separator */
    return PT_OK;
}

static int proxy_v1_port(const char *s, uint16_t *port)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return PT_INVALID;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return PT_INVALID;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return PT_INVALID;
    *port = (uint16_t)v;
    return PT_OK;
}

static int proxy_v1_addr(int family, const char *ip, const char *port, struct sockaddr_storage *ss)
{
    uint16_t pt;
    if (proxy_v1_port(port, &pt) != PT_OK)
        return PT_INVALID;
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(pt);
        return inet_pton(AF_INET, ip, &sin->sin_addr) == 1 ? PT_OK : PT_INVALID;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(pt);
    return inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1 ? PT_OK : PT_INVALID;
}

static int proxy_parse_v1(const char *p, size_t n, struct proxy_header *out)
{
    size_t sig = sizeof proxy_v1_sig - 1;
    if (!proxy_prefix_of((const uint8_t *)p, n, (const uint8_t *)proxy_v1_sig, sig))
        return PT_INVALID;
    /* find CRLF within the bound (the CR at index PROXY_V1_MAX - 2 at the latest);
     * a bare LF or CR, or a NUL, is invalid */
    size_t end = 0;
    bool found = false, cr_last = false;
    for (size_t i = 0; i < n && i < PROXY_V1_MAX - 1; i++) {
        if (p[i] == '\r') {
            if (i + 1 == n) {
                cr_last = true;
                break;
            }
            if (p[i + 1] != '\n')
                return PT_INVALID;
            end = i;
            found = true;
            break;
        }
        if (p[i] == '\n' || p[i] == 0)
            return PT_INVALID;
    }
    if (!found)
        return cr_last || n < PROXY_V1_MAX - 1 ? PT_AGAIN : PT_TOOLONG;
    if (end < sig)
        return PT_INVALID;
    size_t at = sig;
    char proto[8], sip[48], dip[48], sport[8], dport[8];
    if (proxy_v1_field(p, end, &at, proto, sizeof proto) != PT_OK)
        return PT_INVALID;
    memset(out, 0, sizeof *out);
    out->version = 1;
    out->len = end + 2;
    if (strcmp(proto, "UNKNOWN") == 0) {
        out->local = true;   /* the rest of the line is to be ignored */
        return PT_OK;
    }
    int family;
    if (strcmp(proto, "TCP4") == 0)
        family = AF_INET;
    else if (strcmp(proto, "TCP6") == 0)
        family = AF_INET6;
    else
        return PT_INVALID;
    if (proxy_v1_field(p, end, &at, sip, sizeof sip) != PT_OK ||
        proxy_v1_field(p, end, &at, dip, sizeof dip) != PT_OK ||
        proxy_v1_field(p, end, &at, sport, sizeof sport) != PT_OK ||
        proxy_v1_field(p, end, &at, dport, sizeof dport) != PT_OK || at != end ||
        p[end - 1] == ' ')
        return PT_INVALID;
    if (proxy_v1_addr(family, sip, sport, &out->src) != PT_OK ||
        proxy_v1_addr(family, dip, dport, &out->dst) != PT_OK)
        return PT_INVALID;
    return PT_OK;
}

/* ---- v2 ------------------------------------------------------------------ */

static int proxy_parse_v2(const uint8_t *p, size_t n, struct proxy_header *out)
{
    if (!proxy_prefix_of(p, n, proxy_v2_sig, sizeof proxy_v2_sig))
        return PT_INVALID;
    if (n > 12 && (p[12] >> 4) != 0x2)
        return PT_INVALID;
    if (n > 12 && (p[12] & 0x0F) > PROXY_V2_CMD_PROXY)
        return PT_INVALID;
    if (n < 16)
        return PT_AGAIN;
    size_t plen = ((size_t)p[14] << 8) | p[15];
    if (plen > PROXY_V2_MAX_PAYLOAD)
        return PT_TOOLONG;
    int cmd = p[12] & 0x0F, af = p[13] >> 4, tp = p[13] & 0x0F;
    if (af > PROXY_V2_AF_UNIX || tp > 0x2)
        return PT_INVALID;
    if (af == PROXY_V2_AF_INET && plen < 12)
        return PT_INVALID;
    if (af == PROXY_V2_AF_INET6 && plen < 36)
        return PT_INVALID;
    if (af == PROXY_V2_AF_UNIX && plen < 216)
        return PT_INVALID;
    if (n < 16 + plen)
        return PT_AGAIN;
    memset(out, 0, sizeof *out);
    out->version = 2;
    out->len = 16 + plen;
    if (cmd == PROXY_V2_CMD_LOCAL || af == PROXY_V2_AF_UNSPEC) {
        out->local = true;  /* health checks; UNSPEC: "unknown", use the real peer */
        return PT_OK;
    }
    /* a relayed SMTP client is a TCP stream from an IP address, nothing else */
    if (tp != PROXY_V2_TP_STREAM || af == PROXY_V2_AF_UNIX)
        return PT_INVALID;
    const uint8_t *a = p + 16;
    if (af == PROXY_V2_AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&d->sin6_port, a + 34, 2);
    }
    /* TLVs (p + 16 + 12/36 .. out->len) carry nothing petrel uses: skipped */
    return PT_OK;
}

int proxy_parse(const void *data, size_t n, struct proxy_header *out)
{
    const uint8_t *p = data;
    if (n == 0)
        return PT_AGAIN;
    if (p[0] == 'P')
        return proxy_parse_v1(data, n, out);
    if (p[0] == 0x0D)
        return proxy_parse_v2(p, n, out);
    return PT_INVALID;
}

const char *proxy_strerror(int rc)
{
    switch (rc) {
    case PT_OK: return "ok";
    case PT_AGAIN: return "incomplete PROXY header";
    case PT_TOOLONG: return "PROXY header too long";
    default: return "malformed or missing PROXY header";
    }
}
