/* MTA-STS record, policy and cache-file parsers and the MX matcher; see mtasts.h.
 * Never reads past the given length, never allocates.
 * SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "delivery/mtasts.h"
#include "util/result.h"

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_wsp(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

const char *mtasts_mode_name(enum mtasts_mode m)
{
    switch (m) {
    case MTASTS_TESTING: return "testing";
    case MTASTS_ENFORCE: return "enforce";
    default: return "none";
    }
}

/* ---- TXT record (§3.1) --------------------------------------------------------- */

int mtasts_parse_txt(const char *txt, size_t len, char id[MTASTS_ID_MAX + 1])
{
    static const char ver[] = "v=STSv1";
    id[0] = '\0';
    if (len < sizeof ver - 1 || memcmp(txt, ver, sizeof ver - 1) != 0)
        return PT_NOTFOUND;
    size_t i = sizeof ver - 1;
    bool have_id = false, any_field = false;
    while (i < len) {
        /* sts-field-delim = *WSP ";" *WSP */
        while (i < len && is_wsp((unsigned char)txt[i]))
            i++;
        if (i >= len)
            break;
        if (txt[i] != ';')
            return PT_INVALID;
        i++;
        while (i < len && is_wsp((unsigned char)txt[i]))
            i++;
        if (i >= len)
            break;                      /* a trailing delimiter is allowed */
        size_t ns = i;
        while (i < len && (is_alnum((unsigned char)txt[i]) || txt[i] == '_' || txt[i] == '-' ||
                           txt[i] == '.'))
            i++;
        size_t nlen = i - ns;
        if (nlen == 0 || nlen > 32 || !is_alnum((unsigned char)txt[ns]) || i >= len ||
            txt[i] != '=')
            return PT_INVALID;
        i++;
        size_t vs = i;
        while (i < len) {
            unsigned char c = (unsigned char)txt[i];
            if (c < 0x21 || c > 0x7e || c == ';' || c == '=')
                break;
            i++;
        }
        size_t vlen = i - vs;
        if (vlen == 0)
            return PT_INVALID;
        any_field = true;
        if (nlen == 2 && memcmp(txt + ns, "id", 2) == 0) {
            if (have_id)
                return PT_INVALID;
            if (vlen > MTASTS_ID_MAX)
                return PT_INVALID;
            for (size_t k = 0; k < vlen; k++)
                if (!is_alnum((unsigned char)txt[vs + k]))
                    return PT_INVALID;
            memcpy(id, txt + vs, vlen);
            id[vlen] = '\0';
            have_id = true;
        }
    }
    if (!any_field || !have_id) {
        id[0] = '\0';
        return PT_INVALID;
    }
    return PT_OK;
}

/* ---- policy (§3.2) ------------------------------------------------------------- */

static int bad(char *why, size_t whylen, const char *msg, int line)
{
    if (whylen)
        snprintf(why, whylen, "line %d: %s", line, msg);
    return PT_INVALID;
}

/* A domain name (labels of letters, digits, '-', '_'; at most 253 chars), optionally
 * led by "*.", lowercased into out; false when malformed. */
static bool mx_pattern(const char *v, size_t len, char out[256])
{
    if (len > 0 && v[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    size_t i = 0;
    if (len >= 2 && v[0] == '*' && v[1] == '.')
        i = 2;
    size_t label = 0;
    for (size_t k = i; k < len; k++) {
        unsigned char c = (unsigned char)v[k];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!is_alnum(c) && c != '-' && c != '_')
            return false;
        if (++label > 63)
            return false;
    }
    if (label == 0)
        return false;
    for (size_t k = 0; k < len; k++)
        out[k] = lower(v[k]);
    out[len] = '\0';
    return true;
}

int mtasts_parse_policy(const char *body, size_t len, struct mtasts_policy *out, char *why,
                        size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (whylen)
        why[0] = '\0';
    if (len > MTASTS_POLICY_MAX) {
        if (whylen)
            snprintf(why, whylen, "policy larger than %d bytes", MTASTS_POLICY_MAX);
        return PT_TOOLONG;
    }
    bool have_version = false, have_mode = false, have_age = false;
    int line = 0;
    size_t i = 0;
    while (i < len) {
        size_t ls = i;
        while (i < len && body[i] != '\n')
            i++;
        size_t le = i;
        if (i < len)
            i++;                       /* the LF */
        line++;
        if (le > ls && body[le - 1] == '\r')
            le--;
        while (le > ls && is_wsp((unsigned char)body[le - 1]))
            le--;
        if (le == ls)
            continue;                  /* blank line (a trailing newline) */
        size_t ks = ls;
        size_t k = ks;
        while (k < le && body[k] != ':')
            k++;
        if (k == le)
            return bad(why, whylen, "not a \"key: value\" line", line);
        size_t klen = k - ks;
        if (klen == 0 || klen > 32)
            return bad(why, whylen, "bad key", line);
        for (size_t j = ks; j < k; j++) {
            unsigned char c = (unsigned char)body[j];
            if (!is_alnum(c) && c != '_' && c != '-' && c != '.')
                return bad(why, whylen, "bad key", line);
        }
        size_t vs = k + 1;
        while (vs < le && is_wsp((unsigned char)body[vs]))
            vs++;
        const char *v = body + vs;
        size_t vlen = le - vs;
        for (size_t j = 0; j < vlen; j++) {
            unsigned char c = (unsigned char)v[j];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return bad(why, whylen, "control character in a value", line);
        }
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(body + ks, s, klen) == 0)
#define VAL(s) (vlen == sizeof(s) - 1 && memcmp(v, s, vlen) == 0)
        if (KEY("version")) {
            if (have_version)
                continue;
            if (!VAL("STSv1"))
                return bad(why, whylen, "version is not STSv1", line);
            have_version = true;
        } else if (KEY("mode")) {
            if (have_mode)
                continue;
            if (VAL("enforce"))
                out->mode = MTASTS_ENFORCE;
            else if (VAL("testing"))
                out->mode = MTASTS_TESTING;
            else if (VAL("none"))
                out->mode = MTASTS_NONE;
            else
                return bad(why, whylen, "mode is not enforce, testing or none", line);
            have_mode = true;
        } else if (KEY("max_age")) {
            if (have_age)
                continue;
            if (vlen == 0 || vlen > 10)
                return bad(why, whylen, "max_age is not 1 to 10 digits", line);
            uint64_t n = 0;
            for (size_t j = 0; j < vlen; j++) {
                if (v[j] < '0' || v[j] > '9')
                    return bad(why, whylen, "max_age is not a number", line);
                n = n * 10 + (uint64_t)(v[j] - '0');
            }
            if (n > MTASTS_MAX_AGE_MAX)
                return bad(why, whylen, "max_age above 31557600", line);
            out->max_age = (uint32_t)n;
            have_age = true;
        } else if (KEY("mx")) {
            if (out->nmx >= MTASTS_MAX_MX)
                return bad(why, whylen, "too many mx lines", line);
            if (!mx_pattern(v, vlen, out->mx[out->nmx]))
                return bad(why, whylen, "mx is not a host name or *.pattern", line);
            out->nmx++;
        }
        /* other keys: extensions, ignored (§3.2) */
#undef KEY
#undef VAL
    }
    if (!have_version)
        return bad(why, whylen, "no version", line);
    if (!have_mode)
        return bad(why, whylen, "no mode", line);
    if (!have_age)
        return bad(why, whylen, "no max_age", line);
    if (out->mode != MTASTS_NONE && out->nmx == 0)
        return bad(why, whylen, "no mx", line);
    return PT_OK;
}

/* ---- MX matching (§4.1) -------------------------------------------------------- */

static bool ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

bool mtasts_pattern_match(const char *pattern, const char *host)
{
    size_t plen = strlen(pattern), hlen = strlen(host);
    if (plen > 0 && pattern[plen - 1] == '.')
        plen--;
    if (hlen > 0 && host[hlen - 1] == '.')
        hlen--;
    if (plen == 0 || hlen == 0)
        return false;
    if (plen >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.com": exactly one non-empty label, then ".example.com" */
        const char *dot = memchr(host, '.', hlen);
        if (!dot || dot == host)
            return false;
        size_t rest = hlen - (size_t)(dot - host);
        return ieq(dot, rest, pattern + 1, plen - 1);
    }
    return ieq(pattern, plen, host, hlen);
}

bool mtasts_mx_match(const struct mtasts_policy *p, const char *host)
{
    for (int i = 0; i < p->nmx; i++)
        if (mtasts_pattern_match(p->mx[i], host))
            return true;
    return false;
}

/* ---- cache file and decision ---------------------------------------------------- */

#define CACHE_MAGIC "petrel-mta-sts id="

int mtasts_cache_header(const char *id, int64_t fetched, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, CACHE_MAGIC "%s fetched=%" PRId64 "\n", id, fetched);
    return n < 0 || (size_t)n >= outlen ? PT_TOOLONG : PT_OK;
}

int mtasts_cache_parse(const char *file, size_t len, char id[MTASTS_ID_MAX + 1],
                       int64_t *fetched, struct mtasts_policy *out)
{
    id[0] = '\0';
    *fetched = 0;
    const char *nl = memchr(file, '\n', len);
    size_t ml = sizeof CACHE_MAGIC - 1;
    if (!nl || (size_t)(nl - file) < ml || memcmp(file, CACHE_MAGIC, ml) != 0)
        return PT_INVALID;
    size_t i = ml, n = 0;
    while (file + i < nl && is_alnum((unsigned char)file[i]) && n < MTASTS_ID_MAX)
        id[n++] = file[i++];
    id[n] = '\0';
    static const char fk[] = " fetched=";
    if (n == 0 || (size_t)(nl - file) - i < sizeof fk - 1 ||
        memcmp(file + i, fk, sizeof fk - 1) != 0) {
        id[0] = '\0';
        return PT_INVALID;
    }
    i += sizeof fk - 1;
    int64_t t = 0;
    size_t digits = 0;
    while (file + i < nl && file[i] >= '0' && file[i] <= '9' && digits < 18) {
        t = t * 10 + (file[i++] - '0');
        digits++;
    }
    if (digits == 0 || file + i != nl) {
        id[0] = '\0';
        return PT_INVALID;
    }
    char why[8];
    size_t off = (size_t)(nl - file) + 1;
    if (mtasts_parse_policy(file + off, len - off, out, why, sizeof why) != PT_OK) {
        id[0] = '\0';
        return PT_INVALID;
    }
    *fetched = t;
    return PT_OK;
}

enum mtasts_action mtasts_decide(const char *txt_id, const char *cached_id)
{
    if (txt_id)
        return cached_id && strcmp(txt_id, cached_id) == 0 ? MTASTS_USE_CACHED : MTASTS_FETCH;
    return cached_id ? MTASTS_USE_CACHED : MTASTS_NO_POLICY;
}
