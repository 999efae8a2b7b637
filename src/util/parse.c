/* Config value parsers: durations, sizes, host:port. Strict: no whitespace, signs,
 * exponents or trailing garbage are accepted, and nothing ever overflows silently.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/parse.h"
#include "util/result.h"

/* About 317 years: keeps every duration convertible to integer milliseconds. */
#define PARSE_DURATION_MAX 1e10

static bool parse_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static char parse_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

int parse_duration(const char *s, double *secs)
{
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {
        {"", 1}, {"ms", 0.001}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400},
    };
    char num[64];
    size_t i = 0, n;
    double v;

    if (!s || !secs)
        return PT_INVALID;
    /* [0-9]+ ( "." [0-9]+ )? */
    while (parse_is_digit(s[i]))
        i++;
    if (i == 0)
        return PT_INVALID;
    if (s[i] == '.') {
        size_t f = ++i;
        while (parse_is_digit(s[i]))
            i++;
        if (i == f)
            return PT_INVALID;
    }
    if (i >= sizeof num)
        return PT_INVALID;
    memcpy(num, s, i);
    num[i] = 0;
    v = strtod(num, NULL);
    for (n = 0; n < sizeof units / sizeof units[0]; n++) {
        if (strcmp(s + i, units[n].suffix) == 0)
            break;
    }
    if (n == sizeof units / sizeof units[0])
        return PT_INVALID;
    v *= units[n].mult;
    if (!isfinite(v) || v > PARSE_DURATION_MAX)
        return PT_INVALID;
    *secs = v;
    return PT_OK;
}

int parse_size(const char *s, uint64_t *bytes)
{
    uint64_t v = 0, mult;
    size_t i = 0;
    const char *u;

    if (!s || !bytes)
        return PT_INVALID;
    while (parse_is_digit(s[i])) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return PT_INVALID;
        v = v * 10 + d;
        i++;
    }
    if (i == 0)
        return PT_INVALID;
    u = s + i;
    switch (parse_lower(u[0])) {
    case 0:
    case 'b': mult = 1; break;
    case 'k': mult = 1024; break;
    case 'm': mult = 1024ull * 1024; break;
    case 'g': mult = 1024ull * 1024 * 1024; break;
    default: return PT_INVALID;
    }
    /* "" / "B" / "K" / "KB" (and M, G): at most one letter then an optional B. */
    if (u[0] && u[1]) {
        if (mult == 1 || parse_lower(u[1]) != 'b' || u[2])
            return PT_INVALID;
    }
    if (v > UINT64_MAX / mult)
        return PT_INVALID;
    *bytes = v * mult;
    return PT_OK;
}

/* Hostname characters we accept in a host:port (LDH plus '_' seen in the wild). */
static bool parse_host_chars_ok(const char *h, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!(parse_is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

static int parse_port(const char *s, uint16_t *port)
{
    unsigned v = 0;
    size_t i;

    for (i = 0; parse_is_digit(s[i]); i++) {
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > 65535)
            return PT_INVALID;
    }
    if (i == 0 || s[i])
        return PT_INVALID;
    *port = (uint16_t)v;
    return PT_OK;
}

int parse_hostport(const char *s, char *host, uint16_t *port, int *bracketed,
                   uint16_t default_port)
{
    const char *h, *rest;
    size_t hlen;
    int br = 0;
    uint8_t tmp[16];

    if (!s || !host || !port)
        return PT_INVALID;
    host[0] = 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close)
            return PT_INVALID;
        h = s + 1;
        hlen = (size_t)(close - h);
        rest = close + 1;
        br = 1;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) {
            /* Several colons and no brackets: only a bare IPv6 address, no port. */
            h = s;
            hlen = strlen(s);
            rest = s + hlen;
            if (hlen >= 256 || inet_pton(AF_INET6, s, tmp) != 1)
                return PT_INVALID;
        } else {
            h = s;
            hlen = colon ? (size_t)(colon - s) : strlen(s);
            rest = s + hlen;
        }
    }
    if (hlen == 0 || hlen >= 256)
        return PT_INVALID;
    memcpy(host, h, hlen);
    host[hlen] = 0;
    if (!parse_host_chars_ok(host, hlen) && inet_pton(AF_INET6, host, tmp) != 1) {
        host[0] = 0;
        return PT_INVALID;
    }
    if (rest[0] == 0) {
        *port = default_port;
    } else if (rest[0] != ':' || parse_port(rest + 1, port) != PT_OK) {
        host[0] = 0;
        return PT_INVALID;
    }
    if (bracketed)
        *bracketed = br;
    return PT_OK;
}
