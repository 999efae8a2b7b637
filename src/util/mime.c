/* MIME multipart framing; see mime.h.
 * SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util/base64.h"
#include "util/headers.h"
#include "util/mime.h"
#include "util/result.h"

void mime_multipart_begin(struct bufw *w, const char *subtype, const char *params,
                          const char *boundary, const char *preamble)
{
    if (params)
        bufw_printf(w, "Content-Type: multipart/%s; %s;\r\n\tboundary=\"%s\"\r\n", subtype, params,
                    boundary);
    else
        bufw_printf(w, "Content-Type: multipart/%s; boundary=\"%s\"\r\n", subtype, boundary);
    if (preamble)
        bufw_printf(w, "\r\n%s\r\n", preamble);
    bufw_printf(w, "\r\n--%s\r\n", boundary);
}

void mime_multipart_next(struct bufw *w, const char *boundary)
{
    bufw_printf(w, "--%s\r\n", boundary);
}

void mime_multipart_end(struct bufw *w, const char *boundary)
{
    bufw_printf(w, "--%s--\r\n", boundary);
}

bool mime_boundary_clashes(const char *boundary, const struct buf *texts, size_t n)
{
    char delim[MIME_BOUNDARY_MAX + 3];
    int dl = snprintf(delim, sizeof delim, "--%s", boundary);
    if (dl < 0 || (size_t)dl >= sizeof delim)
        return true;             /* too long to be a boundary at all */
    for (size_t i = 0; i < n; i++)
        if (texts[i].data && memmem(texts[i].data, texts[i].len, delim, (size_t)dl))
            return true;
    return false;
}

/* ---- 8-bit to 7-bit downgrade (RFC 6152 §3) ------------------------------------ */

bool mime_has_8bit(const char *p, size_t n)
{
    uint64_t acc = 0, w;
    size_t i = 0;
    for (; n - i >= 8; i += 8) {    /* eight at a time: this runs once per delivery */
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= (unsigned char)p[i];
    return (acc & 0x8080808080808080ull) != 0;
}

static bool utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
                 : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (k == 9 || (k == 1 && c < 0xc2) || i + k >= n + (k ? 0 : 1))
            return false;
        for (size_t j = 1; j <= k; j++)
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

/* One entity's header facts: type/subtype (lowercase), its boundary, its CTE. */
struct ent_info {
    char type[64], subtype[64], cte[32], boundary[MIME_BOUNDARY_MAX + 1];
    bool has_ct, has_cte, has_mime_version, boundary_ok;
    size_t body;                 /* offset of the body in the entity */
};

static bool name_is(const struct hdr_field *f, const char *name)
{
    return f->name_len == strlen(name) && strncasecmp(f->name, name, f->name_len) == 0;
}

static void lower_token(const char *s, size_t n, char *out, size_t outlen)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < outlen; i++)
        out[k++] = (char)tolower((unsigned char)s[i]);
    out[k] = '\0';
}

static void parse_ct(const char *v, struct ent_info *in)
{
    const char *p = v;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t t = strcspn(p, "/; \t");
    lower_token(p, t, in->type, sizeof in->type);
    p += t;
    if (*p == '/') {
        p++;
        size_t st = strcspn(p, "; \t");
        lower_token(p, st, in->subtype, sizeof in->subtype);
        p += st;
    }
    /* boundary parameter: quoted or a token */
    for (const char *q = p; (q = strcasestr(q, "boundary")) != NULL; q += 8) {
        const char *e = q + 8;
        if (q > v && q[-1] != ';' && q[-1] != ' ' && q[-1] != '\t')
            continue;
        while (*e == ' ' || *e == '\t')
            e++;
        if (*e != '=')
            continue;
        e++;
        while (*e == ' ' || *e == '\t')
            e++;
        size_t bl;
        if (*e == '"') {
            e++;
            bl = strcspn(e, "\"");
            if (e[bl] != '"')
                return;
        } else {
            bl = strcspn(e, "; \t");
        }
        if (bl == 0 || bl > MIME_BOUNDARY_MAX)
            return;
        memcpy(in->boundary, e, bl);
        in->boundary[bl] = '\0';
        in->boundary_ok = true;
        return;
    }
}

/* Reads the header block of ent[0..len). false: 8-bit octets in it (or no memory). */
static bool read_headers(const char *ent, size_t len, const char *dflt_type,
                         struct ent_info *in, int *rc)
{
    memset(in, 0, sizeof *in);
    snprintf(in->type, sizeof in->type, "%s", dflt_type);
    snprintf(in->subtype, sizeof in->subtype, "%s",
             strcmp(dflt_type, "message") == 0 ? "rfc822" : "plain");
    size_t pos = 0;
    struct hdr_field f;
    struct buf v;
    buf_init(&v, 0);
    while (hdr_next(ent, len, &pos, &f)) {
        if (mime_has_8bit(f.name, f.raw_len)) {
            *rc = PT_INVALID;
            buf_free(&v);
            return false;
        }
        bool ct = name_is(&f, "Content-Type"), cte = name_is(&f, "Content-Transfer-Encoding");
        if (name_is(&f, "MIME-Version"))
            in->has_mime_version = true;
        if (!ct && !cte)
            continue;
        buf_reset(&v);
        if (hdr_unfold(f.value, f.value_len, &v) != PT_OK) {
            *rc = PT_NOMEM;
            buf_free(&v);
            return false;
        }
        const char *s = v.data ? v.data : "";
        if (ct && !in->has_ct) {
            in->has_ct = true;
            parse_ct(s, in);
        } else if (cte && !in->has_cte) {
            in->has_cte = true;
            lower_token(s, strcspn(s, " \t;("), in->cte, sizeof in->cte);
        }
    }
    buf_free(&v);
    if (pos + 1 < len && ent[pos] == '\r' && ent[pos + 1] == '\n')
        pos += 2;
    else if (pos < len && ent[pos] == '\n')
        pos += 1;
    in->body = pos;
    return true;
}

/* The header block of ent with Content-Transfer-Encoding replaced by cte (and, when
 * top, MIME-Version / Content-Type added when missing), then the blank line. */
static void write_headers(struct bufw *w, const char *ent, size_t len,
                          const struct ent_info *in, const char *cte, bool top,
                          const char *ct_add)
{
    size_t pos = 0, start;
    struct hdr_field f;
    for (start = pos; hdr_next(ent, len, &pos, &f); start = pos)
        if (!name_is(&f, "Content-Transfer-Encoding"))
            bufw_put(w, ent + start, pos - start);
    if (top && !in->has_mime_version)
        bufw_puts(w, "MIME-Version: 1.0\r\n");
    if (ct_add)
        bufw_printf(w, "Content-Type: %s\r\n", ct_add);
    bufw_printf(w, "Content-Transfer-Encoding: %s\r\n\r\n", cte);
}

/* Quoted-printable (RFC 2045 6.7) of p[0..n): CRLF stay hard line breaks, lines
 * soft-broken at 76 characters, trailing white space and every control, '=' and
 * octet >= 0x80 encoded. */
static void qp_put(struct bufw *w, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    char line[80];
    size_t ll = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r' && i + 1 < n && p[i + 1] == '\n') {
            bufw_put(w, line, ll);
            bufw_puts(w, "\r\n");
            ll = 0;
            i++;
            continue;
        }
        bool eol = i + 1 == n || (p[i + 1] == '\r' && i + 2 < n && p[i + 2] == '\n');
        bool lit = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !eol);
        size_t need = lit ? 1 : 3;
        if (ll + need > 75) {            /* 75 + the '=' of the soft break = 76 */
            bufw_put(w, line, ll);
            bufw_puts(w, "=\r\n");
            ll = 0;
        }
        if (lit) {
            line[ll++] = (char)c;
        } else {
            line[ll++] = '=';
            line[ll++] = hex[c >> 4];
            line[ll++] = hex[c & 15];
        }
    }
    bufw_put(w, line, ll);
}

static int downgrade_entity(const char *ent, size_t len, const char *dflt_type, bool top,
                            int depth, struct bufw *w);

/* A delimiter line "--B" or "--B--" (then only white space) at line start s. */
static int delim_kind(const char *s, size_t n, const char *b, size_t bl)
{
    if (n < bl + 2 || s[0] != '-' || s[1] != '-' || memcmp(s + 2, b, bl) != 0)
        return 0;
    size_t i = bl + 2;
    int kind = 1;
    if (n >= i + 2 && s[i] == '-' && s[i + 1] == '-') {
        kind = 2;
        i += 2;
    }
    for (; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return kind;
}

static int downgrade_multipart(const char *body, size_t len, const struct ent_info *in,
                               int depth, struct bufw *w)
{
    const char *b = in->boundary;
    size_t bl = strlen(b);
    const char *child = strcmp(in->subtype, "digest") == 0 ? "message" : "text";
    size_t pos = 0, part = 0;
    bool in_part = false;
    while (pos < len) {
        const char *nl = memchr(body + pos, '\n', len - pos);
        size_t le = nl ? (size_t)(nl - body) : len;          /* index of LF or len */
        size_t ce = le > pos && body[le - 1] == '\r' ? le - 1 : le;  /* content end */
        size_t next = nl ? le + 1 : len;
        int k = delim_kind(body + pos, ce - pos, b, bl);
        if (k) {
            /* the CRLF before the delimiter belongs to it (RFC 2046 5.1.1) */
            size_t end = pos;
            if (end >= part + 2 && body[end - 2] == '\r' && body[end - 1] == '\n')
                end -= 2;
            else if (end > part && body[end - 1] == '\n')
                end -= 1;
            if (!in_part) {
                if (mime_has_8bit(body, pos))
                    return PT_INVALID;          /* 8-bit preamble: no place for it */
                bufw_put(w, body, pos);
            } else {
                int rc = downgrade_entity(body + part, end - part, child, false, depth + 1, w);
                if (rc != PT_OK)
                    return rc;
                bufw_put(w, body + end, pos - end);
            }
            bufw_put(w, body + pos, next - pos);
            if (k == 2) {
                if (mime_has_8bit(body + next, len - next))
                    return PT_INVALID;          /* 8-bit epilogue */
                bufw_put(w, body + next, len - next);
                return w->rc;
            }
            in_part = true;
            part = next;
        }
        pos = next;
    }
    return PT_INVALID;                          /* no close delimiter */
}

static int downgrade_entity(const char *ent, size_t len, const char *dflt_type, bool top,
                            int depth, struct bufw *w)
{
    if (!mime_has_8bit(ent, len)) {
        bufw_put(w, ent, len);
        return w->rc;
    }
    if (depth > MIME_MAX_DEPTH)
        return PT_INVALID;
    struct ent_info in;
    int rc = PT_OK;
    if (!read_headers(ent, len, dflt_type, &in, &rc))
        return rc;
    const char *body = ent + in.body;
    size_t blen = len - in.body;
    bool cte_plain = !in.has_cte || !strcmp(in.cte, "7bit") || !strcmp(in.cte, "8bit");
    if (strcmp(in.type, "multipart") == 0) {
        if (!in.boundary_ok || !(cte_plain || !strcmp(in.cte, "binary")))
            return PT_INVALID;
        if (in.has_cte)
            write_headers(w, ent, in.body, &in, "7bit", top, NULL);
        else
            bufw_put(w, ent, in.body);
        rc = downgrade_multipart(body, blen, &in, depth, w);
        return rc != PT_OK ? rc : w->rc;
    }
    if (strcmp(in.type, "message") == 0 || !cte_plain)
        return PT_INVALID;      /* message/any must stay 7bit/8bit/binary as is; encoded
                                   or binary bodies with raw 8-bit are not ours to fix */
    bool text = strcmp(in.type, "text") == 0;
    const char *ct_add = NULL;
    if (top && !in.has_ct)
        ct_add = utf8_valid((const unsigned char *)body, blen) ? "text/plain; charset=utf-8"
                                                                : "text/plain; charset=unknown-8bit";
    write_headers(w, ent, in.body, &in, text ? "quoted-printable" : "base64", top, ct_add);
    if (text)
        qp_put(w, body, blen);
    else
        base64_put(w, body, blen, 76);
    return w->rc;
}

int mime_downgrade_7bit(const char *msg, size_t len, struct buf *out)
{
    struct bufw w = { out, PT_OK };
    int rc = downgrade_entity(msg, len, "text", true, 0, &w);
    return rc != PT_OK ? rc : w.rc;
}
