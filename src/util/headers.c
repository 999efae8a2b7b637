/* Header block helpers; see headers.h.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/headers.h"
#include "util/result.h"

#define HDR_NAME_MAX 76

static bool is_ftext(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* Offset just past the line starting at p (past its LF, or end). */
static size_t line_end(const char *msg, size_t len, size_t p)
{
    const char *lf = memchr(msg + p, '\n', len - p);
    return lf ? (size_t)(lf - msg) + 1 : len;
}

bool hdr_next(const char *msg, size_t len, size_t *pos, struct hdr_field *f)
{
    size_t p = *pos;
    if (p >= len || msg[p] == '\r' || msg[p] == '\n' || is_wsp(msg[p]))
        return false;
    size_t n = p;
    while (n < len && is_ftext((unsigned char)msg[n]))
        n++;
    /* obs-syntax allows white space before the colon (RFC 5322 4.5.8) */
    size_t colon = n;
    while (colon < len && is_wsp(msg[colon]))
        colon++;
    if (n == p || colon >= len || msg[colon] != ':')
        return false;
    size_t end = line_end(msg, len, colon);
    while (end < len && is_wsp(msg[end]))
        end = line_end(msg, len, end);
    size_t vend = end;
    if (vend > colon + 1 && msg[vend - 1] == '\n')
        vend--;
    if (vend > colon + 1 && msg[vend - 1] == '\r')
        vend--;
    f->name = msg + p;
    f->name_len = n - p;
    f->value = msg + colon + 1;
    f->value_len = vend - (colon + 1);
    f->raw_len = end - p;
    *pos = end;
    return true;
}

int hdr_unfold(const char *v, size_t n, struct buf *out)
{
    size_t i = 0;
    while (i < n && (is_wsp(v[i]) || v[i] == '\r' || v[i] == '\n'))
        i++;
    while (n > i && (is_wsp(v[n - 1]) || v[n - 1] == '\r' || v[n - 1] == '\n'))
        n--;
    int rc = buf_reserve(out, n - i);
    if (rc)
        return rc;
    for (; i < n; i++)
        if (v[i] != '\r' && v[i] != '\n')
            out->data[out->len++] = v[i];
    out->data[out->len] = 0;
    return PT_OK;
}

static bool valid_name(const char *name, size_t n)
{
    if (n == 0 || n > HDR_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_ftext((unsigned char)name[i]))
            return false;
    return true;
}

int hdr_edit_add(struct buf *edits, const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value);
    if (!valid_name(name, n) || strpbrk(value, "\r\n") || n + 2 + v > HDR_LINE_MAX)
        return PT_INVALID;
    return buf_appendf(edits, "+%s: %s\n", name, value);
}

int hdr_edit_remove(struct buf *edits, const char *name)
{
    size_t n = strlen(name);
    if (!valid_name(name, n))
        return PT_INVALID;
    return buf_appendf(edits, "-%s\n", name);
}

struct edit_op {
    bool add;
    const char *name;        /* + line: "Name: value", - line: "Name" */
    size_t name_len, line_len;
};

/* Splits edits into ops; returns the count (ops has room for every line). */
static size_t parse_edits(const char *e, size_t n, struct edit_op *ops)
{
    size_t k = 0, p = 0;
    while (p < n) {
        const char *lf = memchr(e + p, '\n', n - p);
        size_t end = lf ? (size_t)(lf - e) : n;
        const char *line = e + p + 1;
        size_t ll = end > p ? end - p - 1 : 0;
        if (end > p && (e[p] == '+' || e[p] == '-')) {
            size_t nl = 0;
            while (nl < ll && is_ftext((unsigned char)line[nl]))
                nl++;
            bool ok = e[p] == '+' ? nl > 0 && nl < ll && line[nl] == ':' : nl > 0 && nl == ll;
            if (ok && !memchr(line, '\r', ll))
                ops[k++] = (struct edit_op){ e[p] == '+', line, nl, ll };
        }
        p = end + 1;
    }
    return k;
}

static bool removed_after(const struct edit_op *ops, size_t from, size_t n,
                          const char *name, size_t name_len)
{
    for (size_t j = from; j < n; j++)
        if (!ops[j].add && ops[j].name_len == name_len &&
            strncasecmp(ops[j].name, name, name_len) == 0)
            return true;
    return false;
}

int hdr_apply(const char *msg, size_t len, const char *edits, size_t edits_len, struct buf *out)
{
    size_t nlines = 1;
    for (size_t i = 0; i < edits_len; i++)
        nlines += edits[i] == '\n';
    struct edit_op *ops = malloc(nlines * sizeof *ops);
    if (!ops)
        return PT_NOMEM;
    size_t nops = parse_edits(edits, edits_len, ops);
    int rc = buf_reserve(out, len + edits_len + nops);
    for (size_t i = 0; rc == PT_OK && i < nops; i++) {
        if (!ops[i].add || removed_after(ops, i + 1, nops, ops[i].name, ops[i].name_len))
            continue;
        if (!(rc = buf_append(out, ops[i].name, ops[i].line_len)))
            rc = buf_append(out, "\r\n", 2);
    }
    size_t pos = 0;
    struct hdr_field f;
    while (rc == PT_OK && hdr_next(msg, len, &pos, &f)) {
        if (removed_after(ops, 0, nops, f.name, f.name_len))
            continue;
        rc = buf_append(out, msg + pos - f.raw_len, f.raw_len);
    }
    if (rc == PT_OK)
        rc = buf_append(out, msg + pos, len - pos);
    free(ops);
    return rc;
}
