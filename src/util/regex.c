/* Configured regexes: a size check before regcomp (see regex.h).
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/regex.h"
#include "util/result.h"

#define REGEX_MAX_DEPTH 32

/* One open group: the size of what it holds so far and of its last atom. */
struct level {
    double total, last;
};

/* The end of the bracket expression starting at p ('['), or NULL. */
static const char *bracket_end(const char *p)
{
    p++;
    if (*p == '^')
        p++;
    if (*p == ']')
        p++;                              /* a leading ']' is a member */
    for (; *p; p++) {
        if (*p == '[' && (p[1] == ':' || p[1] == '=' || p[1] == '.')) {
            char close = p[1];
            const char *q = p + 2;
            while (*q && !(q[0] == close && q[1] == ']'))
                q++;
            if (!*q)
                return NULL;
            p = q + 1;
        } else if (*p == ']') {
            return p;
        }
    }
    return NULL;
}

/* "{m}", "{m,}" or "{m,n}" at p: the largest count (m when unbounded) and the end. */
static const char *bound(const char *p, double *count)
{
    char *end;
    long m = strtol(p + 1, &end, 10), n = m;
    if (end == p + 1)
        return NULL;
    if (*end == ',') {
        char *e2;
        n = strtol(end + 1, &e2, 10);
        if (e2 == end + 1)
            n = m;
        end = e2;
    }
    if (*end != '}' || m < 0 || n < 0)
        return NULL;
    *count = (double)(n > m ? n : m);
    return end;
}

int regex_check(const char *pattern, char *err, size_t errlen)
{
    if (strlen(pattern) > REGEX_MAX_LEN) {
        snprintf(err, errlen, "longer than %d bytes", REGEX_MAX_LEN);
        return PT_INVALID;
    }
    struct level st[REGEX_MAX_DEPTH + 1] = { { 0, 0 } };
    int d = 0;
    for (const char *p = pattern; *p; p++) {
        struct level *l = &st[d];
        double factor = 0;
        switch (*p) {
        case '(':
            if (++d > REGEX_MAX_DEPTH) {
                snprintf(err, errlen, "groups nested deeper than %d", REGEX_MAX_DEPTH);
                return PT_INVALID;
            }
            st[d].total = st[d].last = 0;
            continue;
        case ')':
            if (d == 0) {
                l->last = 1;                      /* a literal ')' in ERE */
                l->total += 1;
                break;
            }
            d--;
            st[d].last = l->total > 0 ? l->total : 1;
            st[d].total += st[d].last;
            break;
        case '|':
            l->last = 0;
            continue;
        case '*': case '+': case '?':
            factor = 2;
            break;
        case '{': {
            double n;
            const char *e = bound(p, &n);
            if (e) {
                factor = n + 1;
                p = e;
            } else {
                l->last = 1;
                l->total += 1;
            }
            break;
        }
        case '[': {
            const char *e = bracket_end(p);
            if (!e)
                return PT_OK;                     /* regcomp says what is wrong */
            p = e;
            l->last = 1;
            l->total += 1;
            break;
        }
        case '\\':
            if (p[1])
                p++;
            /* fall through */
        default:
            l->last = 1;
            l->total += 1;
            break;
        }
        l = &st[d];                               /* the parent after a ')' */
        if (factor > 0) {                         /* the last atom, repeated */
            l->total += l->last * (factor - 1);
            l->last *= factor;
        }
        if (l->total > REGEX_MAX_NODES) {
            snprintf(err, errlen, "too complex (its repetitions make more than %d copies)",
                     REGEX_MAX_NODES);
            return PT_INVALID;
        }
    }
    return PT_OK;
}

int regex_compile(regex_t *re, const char *pattern, int flags, char *err, size_t errlen)
{
    char why[160];
    int rc = regex_check(pattern, why, sizeof why);
    if (rc == PT_OK) {
        int rrc = regcomp(re, pattern, flags);
        if (rrc == 0)
            return PT_OK;
        regerror(rrc, re, why, sizeof why);
        rc = rrc == REG_ESPACE ? PT_NOMEM : PT_INVALID;
    }
    snprintf(err, errlen, "invalid regex '%.200s': %s", pattern, why);
    return rc;
}
