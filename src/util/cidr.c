/* CIDR ranges: parse "addr[/prefix]" and match socket addresses against them.
 * Never allocates and never consults DNS: only numeric addresses (inet_pton).
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "util/cidr.h"
#include "util/result.h"

static const uint8_t cidr_v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Clears the bits after the first prefix bits of addr (len bytes). */
static void cidr_mask(uint8_t *addr, int len, int prefix)
{
    for (int i = 0; i < len; i++) {
        int bits = prefix - i * 8;
        if (bits >= 8)
            continue;
        addr[i] &= bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
    }
}

/* The prefix is 1-3 decimal digits, nothing else (no sign, no spaces). */
static int cidr_parse_prefix(const char *s, int max)
{
    int v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 3)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

int cidr_parse(const char *s, struct cidr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash;
    size_t hlen;

    if (!s || !out)
        return PT_INVALID;
    slash = strchr(s, '/');
    hlen = slash ? (size_t)(slash - s) : strlen(s);
    if (hlen == 0 || hlen >= sizeof host)
        return PT_INVALID;
    memcpy(host, s, hlen);
    host[hlen] = 0;

    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        out->prefix = 128;
    } else {
        return PT_INVALID;
    }
    if (slash) {
        int p = cidr_parse_prefix(slash + 1, out->prefix);
        if (p < 0)
            return PT_INVALID;
        out->prefix = p;
    }
    cidr_mask(out->addr, out->family == AF_INET ? 4 : 16, out->prefix);
    return PT_OK;
}

/* Extracts the client address in the family of the range: an IPv4-mapped IPv6
 * client is seen as IPv4, and an IPv4 client as ::ffff:a.b.c.d against IPv6
 * ranges, so a dual-stack listener behaves like two single-stack ones. */
static bool cidr_client_bytes(const struct sockaddr *sa, int family, uint8_t *out)
{
    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        if (family == AF_INET) {
            memcpy(out, &sin->sin_addr, 4);
        } else {
            memcpy(out, cidr_v4mapped_prefix, 12);
            memcpy(out + 12, &sin->sin_addr, 4);
        }
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a = sin6->sin6_addr.s6_addr;
        if (family == AF_INET6) {
            memcpy(out, a, 16);
            return true;
        }
        if (memcmp(a, cidr_v4mapped_prefix, 12) != 0)
            return false;
        memcpy(out, a + 12, 4);
        return true;
    }
    return false;
}

bool cidr_match(const struct cidr *c, const struct sockaddr *sa)
{
    uint8_t a[16];
    int whole, rest;

    if (!c || !cidr_client_bytes(sa, c->family, a))
        return false;
    whole = c->prefix / 8;
    rest = c->prefix % 8;
    if (memcmp(a, c->addr, (size_t)whole) != 0)
        return false;
    if (rest) {
        uint8_t m = (uint8_t)(0xff << (8 - rest));
        if ((a[whole] & m) != c->addr[whole])
            return false;
    }
    return true;
}

bool cidr_match_any(const struct cidr *list, int n, const struct sockaddr *sa)
{
    for (int i = 0; i < n; i++)
        if (cidr_match(&list[i], sa))
            return true;
    return false;
}

void cidr_addr_str(const struct sockaddr *sa, char *out, size_t outlen)
{
    char tmp[INET6_ADDRSTRLEN];
    const char *r = NULL;

    if (!out || outlen == 0)
        return;
    if (sa && sa->sa_family == AF_INET) {
        r = inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, tmp, sizeof tmp);
    } else if (sa && sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, cidr_v4mapped_prefix, 12) == 0)
            r = inet_ntop(AF_INET, a + 12, tmp, sizeof tmp);
        else
            r = inet_ntop(AF_INET6, a, tmp, sizeof tmp);
    }
    snprintf(out, outlen, "%s", r ? r : "unknown");
}
