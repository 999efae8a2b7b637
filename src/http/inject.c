/* HTTP injection bodies to messages (see inject.h). Everything the client sends is
 * checked before it reaches a header: no header injection, no MIME boundary inside
 * a part, no line over 998 octets of our making, nothing 8-bit in /v1/message output.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "http/inject.h"
#include "smtp/smtp_parse.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/headers.h"
#include "util/mime.h"
#include "util/result.h"
#include "util/timeutil.h"

#define INJECT_FOLD_AT 78          /* fold header lines here when blanks allow (RFC 5322 2.1.1) */
#define INJECT_LINE_MAX 998        /* never longer (RFC 5322 2.1.1), CRLF excluded */
#define INJECT_B64_LINE 76         /* base64 body line; also the QP line limit (RFC 2045 6.7/6.8) */
#define INJECT_EW_RAW 45           /* octets per encoded-word: 12 + 60 chars <= 75 (RFC 2047 2) */
#define INJECT_WORD_MAX 76         /* header text with a longer blank-free run is encoded */
#define INJECT_QUOTED_MAX 60       /* a display name needing quotes but longer is encoded */
#define INJECT_FILENAME_QUOTED_MAX 200 /* longer or non-ASCII file names use RFC 2231 */
#define INJECT_RFC2231_CHUNK 60    /* encoded characters per RFC 2231 continuation */
#define INJECT_CTYPE_MAX 200       /* attachment content_type */
#define INJECT_ERR_QUOTE 64        /* characters of client text quoted in an error */

/* ---- errors ---- */

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return PT_INVALID;
}

/* Client text made safe to quote in a one-line error: '"' and '\' escaped, control
 * bytes as '?', cut at INJECT_ERR_QUOTE characters on a UTF-8 boundary. */
struct quoted {
    char s[INJECT_ERR_QUOTE * 2 + 4];
};

static const char *q(struct quoted *b, const char *s)
{
    size_t n = 0, i = 0;
    for (; s[i] && i < INJECT_ERR_QUOTE; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            b->s[n++] = '\\';
        b->s[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (s[i]) {
        while (n > 0 && ((unsigned char)b->s[n - 1] & 0xc0) == 0x80)
            n--;
        if (n > 0 && (unsigned char)b->s[n - 1] >= 0xc0)
            n--;
        memcpy(b->s + n, "...", 3);
        n += 3;
    }
    b->s[n] = 0;
    return b->s;
}

/* jansson's message may quote raw (even non-UTF-8) input: keep printable ASCII. */
static int fail_json(const json_error_t *je, char *err, size_t errlen)
{
    char text[JSON_ERROR_TEXT_LENGTH];
    size_t i = 0;
    for (; je->text[i] && i + 1 < sizeof text; i++) {
        unsigned char c = (unsigned char)je->text[i];
        text[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    text[i] = 0;
    return fail(err, errlen, "invalid JSON: %s (line %d, column %d)", text, je->line,
                je->column);
}

static bool ends_crlf(const struct buf *b)
{
    return b->len >= 2 && b->data[b->len - 2] == '\r' && b->data[b->len - 1] == '\n';
}

/* ---- JSON helpers ---- */

/* The string value of v (borrowed) and its length, or NULL when v is not a string
 * or holds a NUL (jansson refuses \u0000 unless asked, this is belt and braces). */
static const char *jstr(const json_t *v, size_t *n)
{
    if (!json_is_string(v))
        return NULL;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (memchr(s, 0, len))
        return NULL;
    if (n)
        *n = len;
    return s;
}

/* PT_INVALID naming the first member of obj not in allowed (NULL-terminated).
 * where is the object's path ("" for the top level). */
static int check_fields(const json_t *obj, const char *const *allowed, const char *where,
                        char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], k) != 0)
            i++;
        if (!allowed[i]) {
            struct quoted qk;
            return fail(err, errlen, "%s%sunknown field \"%s\"", where, *where ? ": " : "",
                        q(&qk, k));
        }
    }
    return PT_OK;
}

static json_t *load(const char *body, size_t len, char *err, size_t errlen, int *rc)
{
    json_error_t je;
    json_t *root = json_loadb(body ? body : "", body ? len : 0, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        *rc = json_error_code(&je) == json_error_out_of_memory ? PT_NOMEM
                                                                : fail_json(&je, err, errlen);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *rc = fail(err, errlen, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

/* ---- addresses ---- */

static bool is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_atext(unsigned char c)
{
    return is_alnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

/* An envelope address we accept: ASCII, 1..INJECT_ADDR_MAX octets, RFC 5321 syntax. */
static bool addr_spec_ok(const char *a, size_t n)
{
    if (n == 0 || n > INJECT_ADDR_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)a[i] >= 0x80 || is_ctl((unsigned char)a[i]))
            return false;
    return smtp_mailbox_valid(a, n);
}

struct addr {
    char spec[INJECT_ADDR_MAX + 1];
    char *name;                    /* display name, UTF-8 and unquoted, or NULL; owned */
};

static void addrs_free(struct addr *a, size_t n)
{
    for (size_t i = 0; a && i < n; i++)
        free(a[i].name);
    free(a);
}

/* Sets a->name from s[0..n) (NULL if empty); control characters are refused. */
static int addr_set_name(struct addr *a, const char *s, size_t n, const char *field,
                         char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (is_ctl((unsigned char)s[i]))
            return fail(err, errlen, "%s: control character in display name", field);
    if (n == 0)
        return PT_OK;
    a->name = strndup(s, n);
    return a->name ? PT_OK : PT_NOMEM;
}

/* "user@example.com" or "Display Name <user@example.com>" (name bare or quoted). */
static int addr_from_string(const char *s, size_t len, struct addr *a, const char *field,
                            char *err, size_t errlen)
{
    const char *p = s, *e = s + len, *spec, *name = NULL;
    size_t sn, nn = 0;
    struct quoted qs;

    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    spec = p;
    sn = (size_t)(e - p);
    if (sn > 0 && e[-1] == '>') {
        const char *lt = memrchr(p, '<', sn);
        if (!lt)
            return fail(err, errlen, "%s: invalid address \"%s\"", field, q(&qs, s));
        spec = lt + 1;
        sn = (size_t)(e - 1 - spec);
        name = p;
        nn = (size_t)(lt - p);
        while (nn > 0 && (name[nn - 1] == ' ' || name[nn - 1] == '\t'))
            nn--;
    }
    if (!addr_spec_ok(spec, sn))
        return fail(err, errlen, "%s: invalid address \"%s\"", field, q(&qs, s));
    memcpy(a->spec, spec, sn);
    a->spec[sn] = 0;
    if (nn >= 2 && name[0] == '"' && name[nn - 1] == '"') {
        char *un = malloc(nn);
        size_t k = 0;
        if (!un)
            return PT_NOMEM;
        for (size_t i = 1; i + 1 < nn; i++) {
            if (name[i] == '\\' && i + 2 < nn)
                i++;
            un[k++] = name[i];
        }
        int rc = addr_set_name(a, un, k, field, err, errlen);
        free(un);
        return rc;
    }
    return addr_set_name(a, name, nn, field, err, errlen);
}

/* A string as above, or {"email": ..., "name"?: ...}. */
static int addr_parse(const json_t *v, struct addr *a, const char *field, char *err,
                      size_t errlen)
{
    static const char *const fields[] = { "email", "name", NULL };
    const char *s;
    size_t n;
    struct quoted qs;
    int rc;

    a->name = NULL;
    if ((s = jstr(v, &n)))
        return addr_from_string(s, n, a, field, err, errlen);
    if (!json_is_object(v))
        return fail(err, errlen, "%s: expected an address (string or object)", field);
    if ((rc = check_fields(v, fields, field, err, errlen)))
        return rc;
    json_t *email = json_object_get(v, "email"), *name = json_object_get(v, "name");
    if (!email)
        return fail(err, errlen, "%s.email: missing", field);
    if (!(s = jstr(email, &n)))
        return fail(err, errlen, "%s.email: expected a string", field);
    if (!addr_spec_ok(s, n))
        return fail(err, errlen, "%s.email: invalid address \"%s\"", field, q(&qs, s));
    memcpy(a->spec, s, n);
    a->spec[n] = 0;
    if (!name)
        return PT_OK;
    if (!(s = jstr(name, &n)))
        return fail(err, errlen, "%s.name: expected a string", field);
    return addr_set_name(a, s, n, field, err, errlen);
}

/* An optional array of addresses under key; *out is malloc'd (NULL when empty). */
static int addr_list(const json_t *root, const char *key, bool required, struct addr **out,
                     size_t *n, char *err, size_t errlen)
{
    json_t *arr = json_object_get(root, key);
    *out = NULL;
    *n = 0;
    if (!arr)
        return required ? fail(err, errlen, "missing field \"%s\"", key) : PT_OK;
    if (!json_is_array(arr))
        return fail(err, errlen, "%s: expected an array", key);
    size_t count = json_array_size(arr);
    if (count == 0)
        return PT_OK;
    if (count > INJECT_RCPT_MAX)
        return fail(err, errlen, "%s: more than %d recipients", key, INJECT_RCPT_MAX);
    *out = calloc(count, sizeof **out);
    if (!*out)
        return PT_NOMEM;
    for (size_t i = 0; i < count; i++) {
        char field[48];
        snprintf(field, sizeof field, "%s[%zu]", key, i);
        int rc = addr_parse(json_array_get(arr, i), &(*out)[i], field, err, errlen);
        *n = i + 1;                         /* so a partly set entry is freed */
        if (rc)
            return rc;
    }
    return PT_OK;
}

/* ---- header text ---- */

/* Base64 of p[0..n); with wrap, lines of INJECT_B64_LINE each ending in CRLF. */
static void put_b64(struct bufw *w, const unsigned char *p, size_t n, bool wrap)
{
    base64_put(w, p, n, wrap ? INJECT_B64_LINE : 0);
}

/* RFC 2047 B encoded-words for UTF-8 text, blank-separated, never splitting a
 * character (RFC 2047 5). */
static void put_encoded_words(struct bufw *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t take = n - i < INJECT_EW_RAW ? n - i : INJECT_EW_RAW;
        size_t cut = take;
        while (i + cut < n && cut > 0 && ((unsigned char)s[i + cut] & 0xc0) == 0x80)
            cut--;
        if (cut > 0)
            take = cut;
        if (i)
            bufw_puts(w, " ");
        bufw_puts(w, "=?UTF-8?B?");
        put_b64(w, (const unsigned char *)s + i, take, false);
        bufw_puts(w, "?=");
        i += take;
    }
}

/* Longest run of non-blank octets in s[0..n). */
static size_t longest_word(const char *s, size_t n)
{
    size_t best = 0, run = 0;
    for (size_t i = 0; i < n; i++) {
        run = s[i] == ' ' ? 0 : run + 1;
        if (run > best)
            best = run;
    }
    return best;
}

/* Unstructured text (Subject, non-ASCII user header values) that must be encoded:
 * 8-bit or control octets, something that reads as an encoded-word, or a word too
 * long to fold. */
static bool text_needs_encoding(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 || is_ctl(c))
            return true;
    }
    return memmem(s, n, "=?", 2) || longest_word(s, n) > INJECT_WORD_MAX;
}

static void put_text(struct bufw *w, const char *s, size_t n)
{
    if (text_needs_encoding(s, n))
        put_encoded_words(w, s, n);
    else
        bufw_put(w, s, n);
}

/* A display name as a phrase: atoms as they are, else a quoted-string, else (8-bit,
 * long, or encoded-word look-alike) encoded-words. */
static void put_phrase(struct bufw *w, const char *s)
{
    size_t n = strlen(s);
    bool atoms = true, encode = memmem(s, n, "=?", 2) || longest_word(s, n) > INJECT_WORD_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80)
            encode = true;
        else if (c == ' ')
            atoms = atoms && i > 0 && i + 1 < n && s[i - 1] != ' ';
        else if (!is_atext(c))
            atoms = false;
    }
    if (!encode && !atoms && n > INJECT_QUOTED_MAX)
        encode = true;
    if (encode) {
        put_encoded_words(w, s, n);
    } else if (atoms) {
        bufw_put(w, s, n);
    } else {
        bufw_puts(w, "\"");
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '"' || s[i] == '\\')
                bufw_puts(w, "\\");
            bufw_put(w, s + i, 1);
        }
        bufw_puts(w, "\"");
    }
}

static void put_mailbox(struct bufw *w, const struct addr *a)
{
    if (a->name) {
        put_phrase(w, a->name);
        bufw_printf(w, " <%s>", a->spec);
    } else {
        bufw_puts(w, a->spec);
    }
}

/* Writes "Name: value" CRLF, folded before a blank that is followed by a non-blank
 * when the line would pass INJECT_FOLD_AT. In structured values blanks inside
 * quoted-strings and <...> are not fold points. Returns the longest line written. */
static size_t put_field(struct bufw *w, const char *name, const char *v, size_t n, bool structured)
{
    size_t col = strlen(name) + 1, longest = 0, start = 0;
    bool quoted = false;
    bool angle = false;

    bufw_puts(w, name);
    bufw_puts(w, ":");
    if (n > 0) {
        bufw_puts(w, " ");
        col++;
    }
    for (size_t i = 0; i <= n; i++) {
        bool cut = i == n;
        if (!cut && structured) {
            if (quoted) {
                if (v[i] == '\\' && i + 1 < n)
                    i++;
                else if (v[i] == '"')
                    quoted = false;
                continue;
            }
            if (v[i] == '"')
                quoted = true;
            else if (v[i] == '<')
                angle = true;
            else if (v[i] == '>')
                angle = false;
            if (quoted || angle)
                continue;
        }
        if (!cut)
            cut = v[i] == ' ' && i > start && i + 1 < n && v[i + 1] != ' ';
        if (!cut)
            continue;
        size_t seg = i - start;
        if (start > 0 && col + seg > INJECT_FOLD_AT) {
            bufw_puts(w, "\r\n");
            col = 0;
        }
        bufw_put(w, v + start, seg);
        col += seg;
        if (col > longest)
            longest = col;
        start = i;
    }
    bufw_puts(w, "\r\n");
    return longest;
}

/* ---- bodies ---- */

/* s[0..n) with every line end (CRLF, lone CR, lone LF) written as CRLF. */
static void put_crlf(struct bufw *w, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n')
            j++;
        bufw_put(w, s + i, j - i);
        if (j == n)
            break;
        bufw_puts(w, "\r\n");
        j += (s[j] == '\r' && j + 1 < n && s[j + 1] == '\n') ? 2 : 1;
        i = j;
    }
}

/* 7bit is fine for CRLF text that is ASCII without NUL, has no line over 998
 * octets and nothing a boundary line could start with. */
static bool text_is_7bit(const char *s, size_t n)
{
    size_t line = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0 || c >= 0x80)
            return false;
        line = c == '\n' ? 0 : line + 1;
        if (line > INJECT_LINE_MAX + 1)     /* + its CR */
            return false;
    }
    if (line > INJECT_LINE_MAX)             /* the last line has no CR */
        return false;
    return !memmem(s, n, "--=_", 4);
}

/* Quoted-printable (RFC 2045 6.7) of CRLF text: lines of at most 76 characters
 * with soft breaks, '=' and line-final blanks encoded. A hard line end is written
 * where the text has one, so a final line without one ends without CRLF. */
static void put_qp(struct bufw *w, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const char *crlf = memmem(s + i, n - i, "\r\n", 2);
        size_t e = crlf ? (size_t)(crlf - s) : n, col = 0;
        for (size_t k = i; k < e; k++) {
            unsigned char c = (unsigned char)s[k];
            char tok[4];
            size_t tl = 1;
            if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && k + 1 < e))
                tok[0] = (char)c;
            else
                tl = (size_t)snprintf(tok, sizeof tok, "=%02X", c);
            if (col + tl > (k + 1 == e ? INJECT_B64_LINE : INJECT_B64_LINE - 1)) {
                bufw_puts(w, "=\r\n");
                col = 0;
            }
            bufw_put(w, tok, tl);
            col += tl;
        }
        if (crlf)
            bufw_puts(w, "\r\n");
        i = crlf ? e + 2 : n;
    }
}

/* A text/plain or text/html leaf: headers, blank line, body. In a multipart a CRLF
 * follows for the delimiter (RFC 2046 5.1.1: the CRLF before "--boundary" is part of
 * it), so a final line end of the text survives; alone, the content gets a final
 * CRLF if the text has none. */
static void put_text_part(struct bufw *w, const char *subtype, const char *s, size_t n,
                          bool nested)
{
    struct buf norm;
    struct bufw nw = { &norm, 0 };
    buf_init(&norm, INJECT_CONTENT_MAX);
    put_crlf(&nw, s, n);
    if (nw.rc) {
        if (!w->rc)
            w->rc = nw.rc;
        buf_free(&norm);
        return;
    }
    bool seven = text_is_7bit(norm.data ? norm.data : "", norm.len);
    bufw_printf(w, "Content-Type: text/%s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n",
             subtype, seven ? "7bit" : "quoted-printable");
    if (seven)
        bufw_put(w, norm.data ? norm.data : "", norm.len);
    else
        put_qp(w, norm.data, norm.len);
    if (!w->rc && (nested || (norm.len > 0 && !ends_crlf(w->b))))
        bufw_puts(w, "\r\n");
    buf_free(&norm);
}

/* Base64 (RFC 4648 4, padding required) with blanks and line ends ignored. */
static int b64_decode(const char *s, size_t n, struct buf *out)
{
    size_t chars = 0, got = 0;
    for (size_t i = 0; i < n; i++)
        chars += s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n';
    int rc = chars ? buf_reserve(out, chars / 4 * 3) : PT_OK;   /* TOOLONG: over out->max */
    if (rc == PT_OK && chars) {
        rc = base64_decode(s, n, BASE64_SKIP_SPACE, (unsigned char *)out->data + out->len,
                           out->cap - out->len - 1, &got);
        if (rc == PT_TOOLONG)
            rc = PT_INVALID;   /* the decoder never needs more than chars / 4 * 3 */
    }
    if (rc == PT_OK && out->data) {
        out->len += got;
        out->data[out->len] = 0;
    }
    return rc;
}

static bool is_tspecial(unsigned char c)
{
    return c && strchr("()<>@,;:\\\"/[]?=", c);
}

static bool is_token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !is_tspecial(c);
}

/* "type/subtype" optionally followed by "; parameters" in printable ASCII. */
static bool media_type_ok(const char *s, size_t n)
{
    size_t i = 0;
    if (n > INJECT_CTYPE_MAX)
        return false;
    for (size_t part = 0; part < 2; part++) {
        size_t t = i;
        while (i < n && is_token_char((unsigned char)s[i]))
            i++;
        if (i == t || (part == 0 && (i >= n || s[i++] != '/')))
            return false;
    }
    size_t j = i;
    while (j < n && s[j] == ' ')
        j++;
    if (j < n && s[j] != ';')
        return false;
    for (; i < n; i++)
        if (s[i] < 0x20 || s[i] >= 0x7f)
            return false;
    return s[n - 1] != ' ' && s[n - 1] != ';';
}

/* The file name parameter, on a line of its own: a quoted-string when short and
 * printable ASCII, else RFC 2231 UTF-8 percent-encoding in continuations. */
static void put_file_param(struct bufw *w, const char *param, const char *fn, size_t n)
{
    bool plain = n <= INJECT_FILENAME_QUOTED_MAX;
    for (size_t i = 0; plain && i < n; i++)
        plain = fn[i] >= 0x20 && fn[i] < 0x7f;
    if (plain) {
        bufw_printf(w, " %s=\"", param);
        for (size_t i = 0; i < n; i++) {
            if (fn[i] == '"' || fn[i] == '\\')
                bufw_puts(w, "\\");
            bufw_put(w, fn + i, 1);
        }
        bufw_puts(w, "\"");
        return;
    }
    size_t i = 0, part = 0;
    while (i < n) {
        char chunk[INJECT_RFC2231_CHUNK + 4];
        size_t k = 0;
        while (i < n && k + 3 <= INJECT_RFC2231_CHUNK) {
            unsigned char c = (unsigned char)fn[i++];
            if (is_alnum(c) || strchr("!#$&+-.^_`|~", c))
                chunk[k++] = (char)c;
            else
                k += (size_t)snprintf(chunk + k, 4, "%%%02X", c);
        }
        chunk[k] = 0;
        bufw_printf(w, "%s %s*%zu*=%s%s", part ? ";\r\n" : "", param, part,
                 part ? "" : "UTF-8''", chunk);
        part++;
    }
}

/* ---- /v1/message ---- */

struct attachment {
    const char *filename, *ctype;
    size_t filename_len;
    struct buf data;               /* decoded */
};

struct v1 {
    struct addr from, reply_to;
    bool has_reply_to;
    struct addr *to, *cc, *bcc;
    size_t nto, ncc, nbcc;
    const char *subject, *text, *html;
    size_t subject_len, text_len, html_len;
    const json_t *headers;
    struct attachment *att;
    size_t natt;
};

static void v1_free(struct v1 *m)
{
    free(m->from.name);
    free(m->reply_to.name);
    addrs_free(m->to, m->nto);
    addrs_free(m->cc, m->ncc);
    addrs_free(m->bcc, m->nbcc);
    for (size_t i = 0; m->att && i < m->natt; i++)
        buf_free(&m->att[i].data);
    free(m->att);
}

/* Header fields petrel writes itself; users may not add another. */
static bool header_reserved(const char *name)
{
    static const char *const names[] = { "Date", "From", "To", "Cc", "Bcc", "Reply-To",
                                         "Subject", "Message-ID", "MIME-Version", NULL };
    for (size_t i = 0; names[i]; i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return strncasecmp(name, "Content-", 8) == 0;
}

static int v1_headers(const json_t *h, char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    struct quoted qk;

    if (!json_is_object(h))
        return fail(err, errlen, "headers: expected an object");
    json_object_foreach((json_t *)h, k, v) {
        size_t kn = strlen(k), vn;
        const char *s;
        bool name_ok = kn > 0 && kn <= 76;
        for (size_t i = 0; name_ok && i < kn; i++)
            name_ok = k[i] > 32 && k[i] < 127 && k[i] != ':';
        if (!name_ok)
            return fail(err, errlen, "headers: invalid header name \"%s\"", q(&qk, k));
        if (header_reserved(k))
            return fail(err, errlen, "headers.%s: set by petrel, not allowed here", k);
        if (!(s = jstr(v, &vn)))
            return fail(err, errlen, "headers.%s: expected a string", k);
        if (memchr(s, '\r', vn) || memchr(s, '\n', vn))
            return fail(err, errlen, "headers.%s: value contains CR or LF", k);
        for (size_t i = 0; i < vn; i++)
            if (is_ctl((unsigned char)s[i]) && s[i] != '\t')
                return fail(err, errlen, "headers.%s: control character in value", k);
    }
    return PT_OK;
}

static int v1_attachments(const json_t *arr, struct v1 *m, char *err, size_t errlen)
{
    static const char *const fields[] = { "filename", "content_type", "content", NULL };
    if (!json_is_array(arr))
        return fail(err, errlen, "attachments: expected an array");
    size_t n = json_array_size(arr);
    if (n == 0)
        return PT_OK;
    m->att = calloc(n, sizeof *m->att);
    if (!m->att)
        return PT_NOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(arr, i), *v;
        struct attachment *at = &m->att[i];
        char field[48];
        size_t len;
        const char *s;
        int rc;

        buf_init(&at->data, INJECT_CONTENT_MAX);
        m->natt = i + 1;
        snprintf(field, sizeof field, "attachments[%zu]", i);
        if (!json_is_object(a))
            return fail(err, errlen, "%s: expected an object", field);
        if ((rc = check_fields(a, fields, field, err, errlen)))
            return rc;
        if (!(v = json_object_get(a, "filename")))
            return fail(err, errlen, "%s.filename: missing", field);
        if (!(at->filename = jstr(v, &at->filename_len)))
            return fail(err, errlen, "%s.filename: expected a string", field);
        if (at->filename_len == 0)
            return fail(err, errlen, "%s.filename: empty", field);
        at->ctype = "application/octet-stream";
        if ((v = json_object_get(a, "content_type"))) {
            if (!(at->ctype = jstr(v, &len)))
                return fail(err, errlen, "%s.content_type: expected a string", field);
            if (!media_type_ok(at->ctype, len)) {
                struct quoted qs;
                return fail(err, errlen, "%s.content_type: invalid media type \"%s\"", field,
                            q(&qs, at->ctype));
            }
        }
        if (!(v = json_object_get(a, "content")))
            return fail(err, errlen, "%s.content: missing", field);
        if (!(s = jstr(v, &len)))
            return fail(err, errlen, "%s.content: expected a string (base64)", field);
        rc = b64_decode(s, len, &at->data);
        if (rc == PT_INVALID)
            return fail(err, errlen, "%s.content: invalid base64", field);
        if (rc == PT_TOOLONG)
            return fail(err, errlen, "%s.content: larger than %u octets", field,
                        INJECT_CONTENT_MAX);
        if (rc)
            return rc;
    }
    return PT_OK;
}

static int v1_parse(const json_t *root, struct v1 *m, char *err, size_t errlen)
{
    static const char *const fields[] = { "from", "to", "cc", "bcc", "reply_to", "subject",
                                          "headers", "text", "html", "attachments", NULL };
    json_t *v;
    int rc;

    if ((rc = check_fields(root, fields, "", err, errlen)))
        return rc;
    if (!(v = json_object_get(root, "from")))
        return fail(err, errlen, "missing field \"from\"");
    if ((rc = addr_parse(v, &m->from, "from", err, errlen)))
        return rc;
    if ((rc = addr_list(root, "to", true, &m->to, &m->nto, err, errlen)) ||
        (rc = addr_list(root, "cc", false, &m->cc, &m->ncc, err, errlen)) ||
        (rc = addr_list(root, "bcc", false, &m->bcc, &m->nbcc, err, errlen)))
        return rc;
    if (m->nto + m->ncc + m->nbcc == 0)
        return fail(err, errlen, "no recipients: to, cc and bcc are all empty");
    if (m->nto + m->ncc + m->nbcc > INJECT_RCPT_MAX)
        return fail(err, errlen, "more than %d recipients in to, cc and bcc", INJECT_RCPT_MAX);
    if ((v = json_object_get(root, "reply_to"))) {
        if ((rc = addr_parse(v, &m->reply_to, "reply_to", err, errlen)))
            return rc;
        m->has_reply_to = true;
    }
    if (!(v = json_object_get(root, "subject")))
        return fail(err, errlen, "missing field \"subject\"");
    if (!(m->subject = jstr(v, &m->subject_len)))
        return fail(err, errlen, "subject: expected a string");
    if ((v = json_object_get(root, "headers"))) {
        if ((rc = v1_headers(v, err, errlen)))
            return rc;
        m->headers = v;
    }
    if ((v = json_object_get(root, "text")) && !(m->text = jstr(v, &m->text_len)))
        return fail(err, errlen, "text: expected a string");
    if ((v = json_object_get(root, "html")) && !(m->html = jstr(v, &m->html_len)))
        return fail(err, errlen, "html: expected a string");
    if ((v = json_object_get(root, "attachments")))
        return v1_attachments(v, m, err, errlen);
    return PT_OK;
}

/* Adds a to the recipients unless already there (case-insensitive). */
static int rcpt_add(struct inject_msg *msg, size_t *cap, const char *a)
{
    for (size_t i = 0; i < msg->nrcpt; i++)
        if (strcasecmp(msg->rcpts[i], a) == 0)
            return PT_OK;
    if (msg->nrcpt == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        char **r = realloc(msg->rcpts, ncap * sizeof *r);
        if (!r)
            return PT_NOMEM;
        msg->rcpts = r;
        *cap = ncap;
    }
    if (!(msg->rcpts[msg->nrcpt] = strdup(a)))
        return PT_NOMEM;
    msg->nrcpt++;
    return PT_OK;
}

static int v1_envelope(const struct v1 *m, struct inject_msg *out)
{
    const struct addr *lists[] = { m->to, m->cc, m->bcc };
    const size_t counts[] = { m->nto, m->ncc, m->nbcc };
    size_t cap = 0;
    int rc = PT_OK;

    if (!(out->sender = strdup(m->from.spec)))
        return PT_NOMEM;
    for (size_t l = 0; l < 3; l++)
        for (size_t i = 0; rc == PT_OK && i < counts[l]; i++)
            rc = rcpt_add(out, &cap, lists[l][i].spec);
    return rc;
}

/* One address-list field: From, To, Cc, Reply-To. */
static void put_addr_field(struct bufw *w, struct buf *tmp, const char *name,
                           const struct addr *a, size_t n)
{
    struct bufw tw = { tmp, 0 };
    buf_reset(tmp);
    for (size_t i = 0; i < n; i++) {
        if (i)
            bufw_puts(&tw, ", ");
        put_mailbox(&tw, &a[i]);
    }
    if (tw.rc && !w->rc)
        w->rc = tw.rc;
    put_field(w, name, tmp->data ? tmp->data : "", tmp->len, true);
}

static int v1_user_headers(struct bufw *w, struct buf *tmp, const json_t *h, char *err,
                           size_t errlen)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)h, k, v) {
        size_t n = 0;
        const char *s = jstr(v, &n);
        bool ascii = true;
        for (size_t i = 0; i < n; i++)
            ascii = ascii && (unsigned char)s[i] < 0x80;
        if (ascii) {
            if (put_field(w, k, s, n, false) > INJECT_LINE_MAX)
                return fail(err, errlen, "headers.%s: a word too long to fold", k);
            continue;
        }
        struct bufw tw = { tmp, 0 };
        buf_reset(tmp);
        put_encoded_words(&tw, s, n);
        if (tw.rc)
            return tw.rc;
        put_field(w, k, tmp->data, tmp->len, false);
    }
    return PT_OK;
}

static void v1_attachment_part(struct bufw *w, const struct attachment *a)
{
    bufw_printf(w, "Content-Type: %s;\r\n", a->ctype);
    put_file_param(w, "name", a->filename, a->filename_len);
    bufw_puts(w, "\r\nContent-Disposition: attachment;\r\n");
    put_file_param(w, "filename", a->filename, a->filename_len);
    bufw_puts(w, "\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    put_b64(w, (const unsigned char *)a->data.data, a->data.len, true);
    if (a->data.len == 0)
        bufw_puts(w, "\r\n");
}

/* text, html, or both as multipart/alternative (text first). */
static void v1_main_part(struct bufw *w, const struct v1 *m, const char *alt, bool nested)
{
    if (m->text && m->html) {
        mime_multipart_begin(w, "alternative", NULL, alt, NULL);
        put_text_part(w, "plain", m->text, m->text_len, true);
        mime_multipart_next(w, alt);
        put_text_part(w, "html", m->html, m->html_len, true);
        mime_multipart_end(w, alt);
    } else if (m->html) {
        put_text_part(w, "html", m->html, m->html_len, nested);
    } else {
        put_text_part(w, "plain", m->text ? m->text : "", m->text_len, nested);
    }
}

static int v1_content(const struct v1 *m, const char *hostname, const char *id, double now,
                      struct buf *c, char *err, size_t errlen)
{
    struct bufw w = { c, 0 };
    struct buf tmp;
    char date[40], mixed[64], alt[64];
    int rc;

    buf_init(&tmp, INJECT_CONTENT_MAX);
    time_rfc5322(now, date, sizeof date);
    snprintf(mixed, sizeof mixed, "=_petrel_mixed_%s", id);
    snprintf(alt, sizeof alt, "=_petrel_alt_%s", id);

    bufw_printf(&w, "Date: %s\r\n", date);
    put_addr_field(&w, &tmp, "From", &m->from, 1);
    if (m->nto)
        put_addr_field(&w, &tmp, "To", m->to, m->nto);
    if (m->ncc)
        put_addr_field(&w, &tmp, "Cc", m->cc, m->ncc);
    if (m->has_reply_to)
        put_addr_field(&w, &tmp, "Reply-To", &m->reply_to, 1);
    buf_reset(&tmp);
    struct bufw tw = { &tmp, 0 };
    put_text(&tw, m->subject, m->subject_len);
    if (tw.rc && !w.rc)
        w.rc = tw.rc;
    put_field(&w, "Subject", tmp.data ? tmp.data : "", tmp.len, false);
    bufw_printf(&w, "Message-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n", id, hostname);
    if (m->headers && !w.rc && (rc = v1_user_headers(&w, &tmp, m->headers, err, errlen))) {
        buf_free(&tmp);
        return rc;
    }
    buf_free(&tmp);

    if (m->natt == 0) {
        v1_main_part(&w, m, alt, false);
    } else {
        mime_multipart_begin(&w, "mixed", NULL, mixed, NULL);
        v1_main_part(&w, m, alt, true);
        for (size_t i = 0; i < m->natt; i++) {
            mime_multipart_next(&w, mixed);
            v1_attachment_part(&w, &m->att[i]);
        }
        mime_multipart_end(&w, mixed);
    }
    if (w.rc == PT_TOOLONG)
        return fail(err, errlen, "message larger than %u octets", INJECT_CONTENT_MAX);
    return w.rc;
}

int inject_v1_message(const char *body, size_t len, const char *hostname, const char *id,
                      double now, struct inject_msg *out, char *err, size_t errlen)
{
    struct v1 m;
    struct buf c;
    int rc = PT_OK;

    memset(out, 0, sizeof *out);
    memset(&m, 0, sizeof m);
    if (err && errlen)
        err[0] = 0;
    json_t *root = load(body, len, err, errlen, &rc);
    if (!root)
        return rc;
    buf_init(&c, INJECT_CONTENT_MAX);
    if (!(rc = v1_parse(root, &m, err, errlen)) &&
        !(rc = v1_content(&m, hostname, id, now, &c, err, errlen)))
        rc = v1_envelope(&m, out);
    if (rc == PT_OK) {
        out->content = buf_steal(&c, &out->content_len);
    } else {
        inject_msg_free(out);
        buf_free(&c);
    }
    v1_free(&m);
    json_decref(root);
    return rc;
}

void inject_msg_free(struct inject_msg *m)
{
    if (!m)
        return;
    free(m->sender);
    for (size_t i = 0; m->rcpts && i < m->nrcpt; i++)
        free(m->rcpts[i]);
    free(m->rcpts);
    free(m->content);
    memset(m, 0, sizeof *m);
}

/* ---- /api/inject/v1 ---- */

void inject_batch_free(struct inject_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; b->msgs && i < b->nmsgs; i++)
        inject_msg_free(&b->msgs[i]);
    free(b->msgs);
    for (size_t i = 0; b->failed && i < b->nfailed; i++) {
        free(b->failed[i].recipient);
        free(b->failed[i].error);
    }
    free(b->failed);
    memset(b, 0, sizeof *b);
}

/* Substitution values are scalars; PT_INVALID names the first that is not. */
static int subs_check(const json_t *subs, const char *where, char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    if (!json_is_object(subs))
        return fail(err, errlen, "%s: expected an object", where);
    json_object_foreach((json_t *)subs, k, v) {
        struct quoted qk;
        if (json_is_object(v) || json_is_array(v))
            return fail(err, errlen, "%s.%s: must be a string, number, boolean or null", where,
                        q(&qk, k));
        if (json_is_string(v) && !jstr(v, NULL))
            return fail(err, errlen, "%s.%s: contains NUL", where, q(&qk, k));
    }
    return PT_OK;
}

/* A number's text: integers as such, reals in the shortest form that reads back. */
static void put_number(struct bufw *w, const json_t *v)
{
    if (json_is_integer(v)) {
        bufw_printf(w, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    }
    double d = json_real_value(v);
    char s[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, d);
        if (strtod(s, NULL) == d)
            break;
    }
    bufw_puts(w, s);
}

static bool is_key_char(char c)
{
    return is_alnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

/* content with every {{ key }} replaced: recipient substitution, else top-level,
 * else the recipient's name for "name", else nothing. Anything else stays literal. */
static void expand(struct bufw *w, const char *s, size_t n, const json_t *rsubs,
                   const json_t *gsubs, const char *name)
{
    size_t i = 0;
    while (i < n) {
        const char *o = memmem(s + i, n - i, "{{", 2);
        if (!o) {
            bufw_put(w, s + i, n - i);
            return;
        }
        size_t p = (size_t)(o - s), k = p + 2, key;
        bufw_put(w, s + i, p - i);
        while (k < n && (s[k] == ' ' || s[k] == '\t'))
            k++;
        key = k;
        while (k < n && is_key_char(s[k]))
            k++;
        size_t keylen = k - key;
        while (k < n && (s[k] == ' ' || s[k] == '\t'))
            k++;
        if (keylen == 0 || k + 1 >= n || s[k] != '}' || s[k + 1] != '}') {
            bufw_puts(w, "{");                 /* not a placeholder: "{{{x}}" is "{" + x */
            i = p + 1;
            continue;
        }
        const json_t *v = rsubs ? json_object_getn(rsubs, s + key, keylen) : NULL;
        if (!v && gsubs)
            v = json_object_getn(gsubs, s + key, keylen);
        if (json_is_string(v))
            bufw_put(w, json_string_value(v), json_string_length(v));
        else if (json_is_number(v))
            put_number(w, v);
        else if (json_is_boolean(v))
            bufw_puts(w, json_is_true(v) ? "true" : "false");
        else if (!v && name && keylen == 4 && memcmp(s + key, "name", 4) == 0)
            bufw_puts(w, name);
        i = k + 2;
    }
}

/* out = s normalized: CRLF line ends, a final CRLF, Date and Message-ID added at the
 * top when the header has none, and a blank line after the header when the text
 * after it is not one (so a first line that is not a field becomes body). */
static void kumo_finish(struct bufw *w, const char *s, size_t n, const char *hostname,
                        double now, void (*new_id)(void *, char[17]), void *arg)
{
    struct buf norm;
    struct bufw nw = { &norm, 0 };
    buf_init(&norm, INJECT_CONTENT_MAX);
    put_crlf(&nw, s, n);
    if (norm.len > 0 && !ends_crlf(&norm))
        bufw_puts(&nw, "\r\n");
    if (nw.rc) {
        if (!w->rc)
            w->rc = nw.rc;
        buf_free(&norm);
        return;
    }
    const char *c = norm.data ? norm.data : "";
    size_t pos = 0;
    bool has_date = false, has_mid = false;
    struct hdr_field f;
    while (hdr_next(c, norm.len, &pos, &f)) {
        has_date = has_date || (f.name_len == 4 && strncasecmp(f.name, "Date", 4) == 0);
        has_mid = has_mid || (f.name_len == 10 && strncasecmp(f.name, "Message-ID", 10) == 0);
    }
    if (!has_date) {
        char date[40];
        time_rfc5322(now, date, sizeof date);
        bufw_printf(w, "Date: %s\r\n", date);
    }
    if (!has_mid) {
        char id[17] = "0000000000000000";
        if (new_id)
            new_id(arg, id);
        id[16] = 0;
        bufw_printf(w, "Message-ID: <%s@%s>\r\n", id, hostname);
    }
    bufw_put(w, c, pos);
    if (pos < norm.len && c[pos] != '\r')
        bufw_puts(w, "\r\n");
    bufw_put(w, c + pos, norm.len - pos);
    buf_free(&norm);
}

struct kumo {
    const char *sender, *content;
    size_t content_len;
    const json_t *recipients, *subs;
    size_t size;                    /* octets of content produced so far */
};

static int push_failure(struct inject_batch *b, size_t *cap, const char *rcpt,
                        const char *error)
{
    if (b->nfailed == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        struct inject_failure *f = realloc(b->failed, ncap * sizeof *f);
        if (!f)
            return PT_NOMEM;
        b->failed = f;
        *cap = ncap;
    }
    struct inject_failure *f = &b->failed[b->nfailed];
    f->recipient = strdup(rcpt);
    f->error = strdup(error);
    if (!f->recipient || !f->error) {
        free(f->recipient);
        free(f->error);
        return PT_NOMEM;
    }
    b->nfailed++;
    return PT_OK;
}

/* Why recipient r cannot be queued (static text), or NULL; *email is its address
 * text when it has one. */
static const char *kumo_refusal(const json_t *r, const char **email, char *why, size_t whylen)
{
    static const char *const fields[] = { "email", "name", "substitutions", NULL };
    const json_t *e, *name;
    size_t n;

    *email = "";
    if (!json_is_object(r)) {
        if (jstr(r, NULL))
            *email = json_string_value(r);
        return "recipient must be an object";
    }
    e = json_object_get(r, "email");
    if (!e)
        return "missing email";
    if (!jstr(e, &n))
        return "email must be a string";
    *email = json_string_value(e);
    if (!addr_spec_ok(*email, n))
        return "invalid address";
    name = json_object_get(r, "name");
    if (name && !jstr(name, NULL))
        return "name must be a string";
    if (check_fields(r, fields, "", why, whylen))
        return why;
    return NULL;
}

static int kumo_parse(const json_t *root, struct kumo *k, char *err, size_t errlen)
{
    static const char *const fields[] = { "envelope_sender", "content", "recipients",
                                          "substitutions", NULL };
    const json_t *v;
    size_t n;
    struct quoted qs;
    int rc;

    if ((rc = check_fields(root, fields, "", err, errlen)))
        return rc;
    if (!(v = json_object_get(root, "envelope_sender")))
        return fail(err, errlen, "missing field \"envelope_sender\"");
    if (!(k->sender = jstr(v, &n)))
        return fail(err, errlen, "envelope_sender: expected a string");
    if (n > 0 && !addr_spec_ok(k->sender, n))
        return fail(err, errlen, "envelope_sender: invalid address \"%s\"", q(&qs, k->sender));
    if (!(v = json_object_get(root, "content")))
        return fail(err, errlen, "missing field \"content\"");
    if (!json_is_string(v))
        return fail(err, errlen, "content: expected a string");
    if (!(k->content = jstr(v, &k->content_len)))
        return fail(err, errlen, "content: contains NUL");
    if (k->content_len == 0)
        return fail(err, errlen, "content: empty");
    if (!(v = json_object_get(root, "recipients")))
        return fail(err, errlen, "missing field \"recipients\"");
    if (!json_is_array(v))
        return fail(err, errlen, "recipients: expected an array");
    if (json_array_size(v) == 0)
        return fail(err, errlen, "recipients: empty");
    if (json_array_size(v) > INJECT_KUMO_RCPT_MAX)
        return fail(err, errlen, "recipients: more than %d", INJECT_KUMO_RCPT_MAX);
    k->recipients = v;
    if ((v = json_object_get(root, "substitutions"))) {
        if ((rc = subs_check(v, "substitutions", err, errlen)))
            return rc;
        k->subs = v;
    }
    for (size_t i = 0; i < json_array_size(k->recipients); i++) {
        const json_t *s = json_object_get(json_array_get(k->recipients, i), "substitutions");
        char where[64];
        snprintf(where, sizeof where, "recipients[%zu].substitutions", i);
        if (s && (rc = subs_check(s, where, err, errlen)))
            return rc;
    }
    return PT_OK;
}

/* Builds one message's content into m from the template for recipient r (NULL:
 * the shared message, no expansion). */
static int kumo_message(struct kumo *k, const json_t *r, const char *hostname, double now,
                        void (*new_id)(void *, char[17]), void *arg, struct inject_msg *m,
                        char *err, size_t errlen)
{
    struct buf c, ex;
    struct bufw w = { &c, 0 }, xw = { &ex, 0 };
    const char *s = k->content;
    size_t n = k->content_len;

    buf_init(&c, INJECT_CONTENT_MAX);
    buf_init(&ex, INJECT_CONTENT_MAX);
    if (r) {
        expand(&xw, s, n, json_object_get(r, "substitutions"), k->subs,
               json_string_value(json_object_get(r, "name")));
        s = ex.data ? ex.data : "";
        n = ex.len;
        w.rc = xw.rc;
    }
    if (!w.rc)
        kumo_finish(&w, s, n, hostname, now, new_id, arg);
    buf_free(&ex);
    if (!w.rc && c.len > INJECT_BATCH_MAX - k->size)
        w.rc = PT_TOOLONG;
    if (w.rc) {
        buf_free(&c);
        if (w.rc == PT_TOOLONG)
            return fail(err, errlen, "content: too large after substitution (limits: %u "
                        "octets a message, %u a request)", INJECT_CONTENT_MAX, INJECT_BATCH_MAX);
        return w.rc;
    }
    k->size += c.len;
    m->content = buf_steal(&c, &m->content_len);
    return PT_OK;
}

static int kumo_build(struct kumo *k, const char *hostname, double now,
                      void (*new_id)(void *, char[17]), void *arg, struct inject_batch *out,
                      char *err, size_t errlen)
{
    bool shared = !memmem(k->content, k->content_len, "{{", 2);
    size_t n = json_array_size(k->recipients), fcap = 0, rcap = 0;
    int rc;

    out->msgs = calloc(shared ? 1 : n, sizeof *out->msgs);
    if (!out->msgs)
        return PT_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(k->recipients, i);
        const char *email, *why;
        char whybuf[128];
        if ((why = kumo_refusal(r, &email, whybuf, sizeof whybuf))) {
            if ((rc = push_failure(out, &fcap, email, why)))
                return rc;
            continue;
        }
        struct inject_msg *m = &out->msgs[shared ? 0 : out->nmsgs];
        if (!shared || m->sender == NULL) {
            if (!shared || out->nmsgs == 0)
                out->nmsgs++;
            if (!(m->sender = strdup(k->sender)))
                return PT_NOMEM;
            if ((rc = kumo_message(k, shared ? NULL : r, hostname, now, new_id, arg, m, err,
                                   errlen)))
                return rc;
            rcap = 0;
        }
        if (m->nrcpt == rcap) {
            size_t ncap = rcap ? rcap * 2 : 1;
            char **v = realloc(m->rcpts, ncap * sizeof *v);
            if (!v)
                return PT_NOMEM;
            m->rcpts = v;
            rcap = ncap;
        }
        if (!(m->rcpts[m->nrcpt] = strdup(email)))
            return PT_NOMEM;
        m->nrcpt++;
    }
    return PT_OK;
}

int inject_kumo(const char *body, size_t len, const char *hostname, double now,
                void (*new_id)(void *arg, char out[17]), void *arg,
                struct inject_batch *out, char *err, size_t errlen)
{
    struct kumo k;
    int rc = PT_OK;

    memset(out, 0, sizeof *out);
    memset(&k, 0, sizeof k);
    if (err && errlen)
        err[0] = 0;
    json_t *root = load(body, len, err, errlen, &rc);
    if (!root)
        return rc;
    if (!(rc = kumo_parse(root, &k, err, errlen)))
        rc = kumo_build(&k, hostname, now, new_id, arg, out, err, errlen);
    if (rc)
        inject_batch_free(out);
    json_decref(root);
    return rc;
}
