/* Configured regexes: a size check before regcomp (see regex.h).
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/regex.h"
#include "util/result.h"

#define REGEX_MAX_DEPTH 32

/* One open group as the check sees it so far. Its size counts the automaton's
 * nodes after glibc's copies. "Nullable": can match the empty string; glibc's
 * cost for repeating an expression that is already nullable ("(a?){n}", "(|a)+")
 * grows with the square of the copies and more near an anchor (the closures of
 * its empty transitions), so those copies have a budget of their own. */
struct level {
    double total, last;       /* the size of the group so far; of its last atom */
    bool last_null;           /* the last atom is nullable */
    bool last_anchor;         /* it is, or holds, an anchor (^ $ \b \B \< \> \` \') */
    bool last_rep;            /* it ends with a repetition operator */
    bool anchor;              /* the group holds an anchor */
    bool alt_null;            /* the current alternative is nullable so far */
    bool prev_null;           /* it was before the last atom */
    bool any_null;            /* an earlier alternative is */
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

/* "{m}", "{m,}", "{m,n}" or "{,n}" at p: the smallest and largest counts (-1:
 * unbounded) and the end. */
static const char *bound(const char *p, long *min, long *max)
{
    char *end = (char *)p + 1;
    long m = 0;
    if (p[1] != ',') {                    /* glibc reads "{,n}" as "{0,n}" */
        m = strtol(p + 1, &end, 10);
        if (end == p + 1)
            return NULL;
    }
    long n = m;
    if (*end == ',') {
        char *e2;
        n = strtol(end + 1, &e2, 10);
        if (e2 == end + 1)
            n = -1;
        end = e2;
    }
    if (*end != '}' || m < 0 || n < -1)
        return NULL;
    *min = m;
    *max = n;
    return end;
}

static void level_open(struct level *l)
{
    memset(l, 0, sizeof *l);
    l->alt_null = true;
}

/* Appends an atom of size nodes to l. */
static void atom(struct level *l, double size, bool nullable, bool anchor)
{
    l->prev_null = l->alt_null;
    l->alt_null = l->alt_null && nullable;
    l->last = size;
    l->total += size;
    l->last_null = nullable;
    l->last_anchor = anchor;
    l->last_rep = false;
    l->anchor = l->anchor || anchor;
}

/* Whether the escape \c is a zero-width assertion (or a back-reference, which can
 * match nothing: counted the same way). */
static bool escape_zero_width(char c)
{
    return strchr("bB<>`'", c) || (c >= '1' && c <= '9');
}

int regex_check(const char *pattern, char *err, size_t errlen)
{
    if (strlen(pattern) > REGEX_MAX_LEN) {
        snprintf(err, errlen, "longer than %d bytes", REGEX_MAX_LEN);
        return PT_INVALID;
    }
    struct level st[REGEX_MAX_DEPTH + 1];
    level_open(&st[0]);
    int d = 0;
    double nulls = 0;                 /* copies of repeated nullable expressions, in all */
    double opts = 0;                  /* optional copies ("a?", "a{0,9}"), in all */
    int nzw = 0;                      /* word boundaries and back-references */
    for (const char *p = pattern; *p; p++) {
        struct level *l = &st[d];
        double factor = 0, optional = 0;  /* copies made; those of them optional */
        bool makes_null = false;
        const char *op = p;
        switch (*p) {
        case '(':
            if (++d > REGEX_MAX_DEPTH) {
                snprintf(err, errlen, "groups nested deeper than %d", REGEX_MAX_DEPTH);
                return PT_INVALID;
            }
            level_open(&st[d]);
            continue;
        case ')':
            if (d == 0) {
                atom(l, 1, false, false);         /* a literal ')' in ERE */
                continue;
            }
            d--;
            atom(&st[d], l->total > 0 ? l->total : 1, l->any_null || l->alt_null, l->anchor);
            continue;
        case '|':
            l->any_null = l->any_null || l->alt_null;
            l->alt_null = true;
            l->last = 0;
            l->last_null = l->last_anchor = l->last_rep = false;
            continue;
        case '^': case '$':
            atom(l, 1, true, true);
            continue;
        case '*': case '?':
            makes_null = true;
            optional = 1;
            /* fall through */
        case '+':
            factor = 2;
            break;
        case '{': {
            long min, max;
            const char *e = bound(p, &min, &max);
            if (!e) {
                atom(l, 1, false, false);
                continue;
            }
            factor = (double)(max < 0 ? min : max) + 1;
            optional = max < 0 ? 1 : (double)(max - min);
            makes_null = min == 0;
            p = e;
            break;
        }
        case '[': {
            const char *e = bracket_end(p);
            if (!e)
                return PT_OK;                     /* regcomp says what is wrong */
            p = e;
            atom(l, 1, false, false);
            continue;
        }
        case '\\':
            if (p[1]) {
                p++;
                bool zw = escape_zero_width(*p);
                if (zw && ++nzw > REGEX_MAX_BOUNDARIES) {
                    snprintf(err, errlen, "more than %d word boundaries (\\b \\B \\< \\> "
                             "\\` \\') and back-references", REGEX_MAX_BOUNDARIES);
                    return PT_INVALID;
                }
                atom(l, 1, zw, zw);
                continue;
            }
            atom(l, 1, false, false);
            continue;
        default:
            atom(l, 1, false, false);
            continue;
        }
        /* a repetition operator (factor: the copies it makes, at most) */
        if (l->last == 0)
            continue;                             /* repeats nothing: regcomp decides */
        if (l->last_rep) {
            snprintf(err, errlen, "a repetition of a repetition at offset %d ('%.*s'): "
                     "undefined in POSIX regexes (they have no lazy '*?' or '+?': write "
                     "'*' or '+')", (int)(op - pattern), (int)(p - op + 1), op);
            return PT_INVALID;
        }
        if (l->last_anchor) {
            snprintf(err, errlen, "repeats an anchor (^ $ \\b \\B \\< \\> or a "
                     "back-reference) at offset %d", (int)(op - pattern));
            return PT_INVALID;
        }
        opts += l->last * optional;
        if (opts > REGEX_MAX_OPTIONAL) {
            snprintf(err, errlen, "too complex (its repetitions make more than %d optional "
                     "copies)", REGEX_MAX_OPTIONAL);
            return PT_INVALID;
        }
        l->total += l->last * (factor - 1);
        l->last *= factor;
        l->last_rep = true;
        if (l->last_null) {               /* repeats what can match nothing */
            nulls += l->last;
            if (nulls > REGEX_MAX_NULLABLE) {
                snprintf(err, errlen, "too complex (it repeats what can match nothing "
                         "into more than %d copies)", REGEX_MAX_NULLABLE);
                return PT_INVALID;
            }
        }
        if (makes_null && !l->last_null) {
            l->last_null = true;
            l->alt_null = l->prev_null;
        }
        if (l->total > REGEX_MAX_NODES) {
            snprintf(err, errlen, "too complex (its repetitions make more than %d copies)",
                     REGEX_MAX_NODES);
            return PT_INVALID;
        }
    }
    /* a word boundary multiplies the cost of the empty matches around it */
    if (nzw && (nulls > REGEX_MAX_NULLABLE / 4 || opts > REGEX_MAX_OPTIONAL / 4)) {
        snprintf(err, errlen, "too complex (with a word boundary or back-reference, at most "
                 "%d copies of what can match nothing and %d optional copies)",
                 REGEX_MAX_NULLABLE / 4, REGEX_MAX_OPTIONAL / 4);
        return PT_INVALID;
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
