/* DKIM signer (see dkim.h): relaxed/relaxed canonicalization, rsa-sha256 and
 * ed25519-sha256 through OpenSSL. Never writes a line over DKIM_FOLD_AT octets nor
 * a bare CR or LF into the field it makes; never modifies the message.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "dkim/dkim.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/headers.h"
#include "util/result.h"

#define DKIM_HASH_STAGE 4096     /* canonical body octets gathered per SHA-256 update */

struct dkim_key {
    char domain[DKIM_DOMAIN_MAX + 1];     /* lowercased */
    char selector[DKIM_SELECTOR_MAX + 1];
    bool ed25519;                         /* else rsa-sha256 */
    EVP_PKEY *pkey;                       /* read only after load: shared by threads */
    int nnames;
    char names[DKIM_NAMES_MAX][DKIM_NAME_MAX + 1];  /* names[0] is From unless listed */
};

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* ---- key ---- */

__attribute__((format(printf, 3, 4)))
static void *fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

/* A host name as d= and s= take it (RFC 6376 3.5: sub-domain): labels of letters,
 * digits, '-' and '_' (selectors and some domains use it), no empty label. */
static bool host_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || (c == '.' && s[i + 1] != '.');
        if (!ok)
            return false;
    }
    return true;
}

/* A field name that can go into h=: ftext (RFC 5322 3.6.8) minus ';', which would
 * end the tag. */
static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DKIM_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 32 || s[i] >= 127 || s[i] == ':' || s[i] == ';')
            return false;
    return true;
}

static void add_name(struct dkim_key *k, const char *name)
{
    for (int i = 0; i < k->nnames; i++)
        if (strcasecmp(k->names[i], name) == 0)
            return;
    strcpy(k->names[k->nnames++], name);
}

/* Never prompt on a terminal for an encrypted key: refuse it. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

static EVP_PKEY *read_key(const char *path, char *err, size_t errlen)
{
    errno = 0;
    BIO *bio = BIO_new_file(path, "r");
    if (!bio) {
        int e = errno;
        ERR_clear_error();
        return fail(err, errlen, "key_file %s: cannot open: %s", path,
                    e ? strerror(e) : "unknown error");
    }
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!pkey)
        return fail(err, errlen, "key_file %s: not a PEM private key (or encrypted)", path);
    return pkey;
}

struct dkim_key *dkim_key_load(const char *domain, const char *selector, const char *key_file,
                               const char *algorithm, const char *const *headers, int nheaders,
                               char *err, size_t errlen)
{
    bool ed;
    if (!algorithm || strcmp(algorithm, "rsa-sha256") == 0)
        ed = false;
    else if (strcmp(algorithm, "ed25519-sha256") == 0)
        ed = true;
    else
        return fail(err, errlen, "algorithm %.64s: unknown (rsa-sha256 or ed25519-sha256)",
                    algorithm);
    if (!domain || !host_ok(domain, DKIM_DOMAIN_MAX))
        return fail(err, errlen, "domain %.80s: not a domain name of at most %d octets",
                    domain ? domain : "(none)", DKIM_DOMAIN_MAX);
    if (!selector || !host_ok(selector, DKIM_SELECTOR_MAX))
        return fail(err, errlen, "selector %.80s: not a selector of at most %d octets",
                    selector ? selector : "(none)", DKIM_SELECTOR_MAX);
    if (nheaders < 0 || nheaders >= DKIM_NAMES_MAX || (nheaders > 0 && !headers))
        return fail(err, errlen, "headers: at most %d names", DKIM_NAMES_MAX - 1);
    for (int i = 0; i < nheaders; i++)
        if (!headers[i] || !name_ok(headers[i]))
            return fail(err, errlen, "header %.80s: not a field name of at most %d octets",
                        headers[i] ? headers[i] : "(null)", DKIM_NAME_MAX);
    if (!key_file)
        return fail(err, errlen, "key_file: missing");

    EVP_PKEY *pkey = read_key(key_file, err, errlen);
    if (!pkey)
        return NULL;
    if (ed && !EVP_PKEY_is_a(pkey, "ED25519")) {
        EVP_PKEY_free(pkey);
        return fail(err, errlen, "key_file %s: not an Ed25519 key (algorithm ed25519-sha256)",
                    key_file);
    }
    if (!ed && !EVP_PKEY_is_a(pkey, "RSA")) {
        EVP_PKEY_free(pkey);
        return fail(err, errlen, "key_file %s: not an RSA key (algorithm rsa-sha256)", key_file);
    }
    if (!ed && EVP_PKEY_get_bits(pkey) < DKIM_RSA_MIN_BITS) {
        int bits = EVP_PKEY_get_bits(pkey);
        EVP_PKEY_free(pkey);
        return fail(err, errlen, "key_file %s: RSA key of %d bits, at least %d needed", key_file,
                    bits, DKIM_RSA_MIN_BITS);
    }

    struct dkim_key *k = calloc(1, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pkey);
        return fail(err, errlen, "key_file %s: out of memory", key_file);
    }
    for (size_t i = 0; domain[i]; i++)
        k->domain[i] = (char)(domain[i] >= 'A' && domain[i] <= 'Z' ? domain[i] + 32 : domain[i]);
    strcpy(k->selector, selector);
    k->ed25519 = ed;
    k->pkey = pkey;
    bool from = false;
    for (int i = 0; i < nheaders; i++)
        from = from || strcasecmp(headers[i], "From") == 0;
    if (!from)
        add_name(k, "From");
    for (int i = 0; i < nheaders; i++)
        add_name(k, headers[i]);
    return k;
}

void dkim_key_free(struct dkim_key *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

const char *dkim_key_domain(const struct dkim_key *k)
{
    return k->domain;
}

/* ---- canonicalization ---- */

int dkim_canon_header(const char *name, size_t name_len, const char *value, size_t value_len,
                      struct buf *out)
{
    int rc = buf_reserve(out, name_len + value_len + 3);
    if (rc)
        return rc;
    char *o = out->data + out->len;
    for (size_t i = 0; i < name_len; i++)
        *o++ = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    *o++ = ':';
    bool space = false, started = false;
    for (size_t i = 0; i < value_len; i++) {
        char c = value[i];
        if (c == '\r' || c == '\n')       /* unfolding: the WSP after it stays */
            continue;
        if (is_wsp(c)) {
            space = true;
            continue;
        }
        if (space && started)
            *o++ = ' ';
        space = false;
        started = true;
        *o++ = c;
    }
    *o++ = '\r';
    *o++ = '\n';
    out->len = (size_t)(o - out->data);
    out->data[out->len] = 0;
    return PT_OK;
}

/* Where the canonical body goes: a buffer (tests) or a SHA-256 context (signing). */
struct sink {
    int (*put)(struct sink *s, const char *p, size_t n);
    struct buf *buf;
    EVP_MD_CTX *md;
    size_t staged;
    char stage[DKIM_HASH_STAGE];
};

static int put_buf(struct sink *s, const char *p, size_t n)
{
    return buf_append(s->buf, p, n);
}

static int flush_md(struct sink *s)
{
    int ok = s->staged == 0 || EVP_DigestUpdate(s->md, s->stage, s->staged);
    s->staged = 0;
    return ok ? PT_OK : PT_ERROR;
}

static int put_md(struct sink *s, const char *p, size_t n)
{
    if (s->staged + n > sizeof s->stage) {
        int rc = flush_md(s);
        if (rc)
            return rc;
        if (n > sizeof s->stage)
            return EVP_DigestUpdate(s->md, p, n) ? PT_OK : PT_ERROR;
    }
    memcpy(s->stage + s->staged, p, n);
    s->staged += n;
    return PT_OK;
}

static int canon_body(const char *b, size_t len, struct sink *s)
{
    size_t blank = 0;                /* empty lines not yet written: dropped at the end */
    size_t i = 0;
    int rc = PT_OK;
    while (i < len && rc == PT_OK) {
        const char *crlf = memmem(b + i, len - i, "\r\n", 2);
        size_t end = crlf ? (size_t)(crlf - b) : len;
        size_t next = crlf ? end + 2 : len;
        size_t le = end;
        while (le > i && is_wsp(b[le - 1]))
            le--;
        if (le == i) {
            blank++;
            i = next;
            continue;
        }
        for (; blank > 0 && rc == PT_OK; blank--)
            rc = s->put(s, "\r\n", 2);
        for (size_t p = i; p < le && rc == PT_OK;) {
            size_t t = p;
            while (t < le && !is_wsp(b[t]))
                t++;
            if (t > p)
                rc = s->put(s, b + p, t - p);
            if (t < le && rc == PT_OK) {
                rc = s->put(s, " ", 1);
                while (t < le && is_wsp(b[t]))
                    t++;
            }
            p = t;
        }
        if (rc == PT_OK)
            rc = s->put(s, "\r\n", 2);
        i = next;
    }
    return rc;
}

int dkim_canon_body(const char *body, size_t len, struct buf *out)
{
    struct sink s = { .put = put_buf, .buf = out };
    return canon_body(body, len, &s);
}

/* ---- signing ---- */

/* The DKIM-Signature field being written, folded at DKIM_FOLD_AT. */
struct fold {
    struct bufw w;
    size_t col;                      /* octets on the current line */
};

static void fold_break(struct fold *f)
{
    bufw_put(&f->w, "\r\n ", 3);
    f->col = 1;
}

/* A piece that must stay on one line; sp: a space before it when it does not
 * start a line. Pieces are short enough for an empty line (checked at load). */
static void fold_word(struct fold *f, const char *s, size_t n, bool sp)
{
    if (f->col + (sp ? 1 : 0) + n > DKIM_FOLD_AT) {
        fold_break(f);
    } else if (sp) {
        bufw_put(&f->w, " ", 1);
        f->col++;
    }
    bufw_put(&f->w, s, n);
    f->col += n;
}

/* Base64 text, where FWS may go anywhere (RFC 6376 3.5, bh= and b=). */
static void fold_b64(struct fold *f, const char *s, size_t n)
{
    while (n > 0) {
        if (f->col >= DKIM_FOLD_AT)
            fold_break(f);
        size_t take = DKIM_FOLD_AT - f->col;
        if (take > n)
            take = n;
        bufw_put(&f->w, s, take);
        f->col += take;
        s += take;
        n -= take;
    }
}

static bool name_is(const struct hdr_field *f, const char *name)
{
    return f->name_len == strlen(name) && strncasecmp(f->name, name, f->name_len) == 0;
}

static int body_hash(const char *body, size_t len, unsigned char hash[32])
{
    struct sink *s = malloc(sizeof *s);
    if (!s)
        return PT_NOMEM;
    s->put = put_md;
    s->staged = 0;
    s->md = EVP_MD_CTX_new();
    int rc = PT_ERROR;
    unsigned int hl = 0;
    if (s->md && EVP_DigestInit_ex(s->md, EVP_sha256(), NULL)) {
        rc = canon_body(body, len, s);
        if (rc == PT_OK)
            rc = flush_md(s);
        if (rc == PT_OK && (!EVP_DigestFinal_ex(s->md, hash, &hl) || hl != 32))
            rc = PT_ERROR;
    }
    EVP_MD_CTX_free(s->md);
    free(s);
    return rc;
}

/* The signature over data[0..n): RSASSA-PKCS1-v1_5/SHA-256, or Ed25519 over the
 * SHA-256 of the data (RFC 8463 3). *sig is malloc'd. */
static int sign_data(const struct dkim_key *k, const unsigned char *data, size_t n,
                     unsigned char **sig, size_t *siglen)
{
    unsigned char hash[32];
    const unsigned char *in = data;
    size_t inlen = n;
    if (k->ed25519) {
        if (!EVP_Digest(data, n, hash, NULL, EVP_sha256(), NULL))
            return PT_ERROR;
        in = hash;
        inlen = sizeof hash;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return PT_NOMEM;
    int rc = PT_ERROR;
    *sig = NULL;
    if (EVP_DigestSignInit(ctx, NULL, k->ed25519 ? NULL : EVP_sha256(), NULL, k->pkey) == 1 &&
        EVP_DigestSign(ctx, NULL, siglen, in, inlen) == 1) {
        *sig = malloc(*siglen);
        if (!*sig)
            rc = PT_NOMEM;
        else if (EVP_DigestSign(ctx, *sig, siglen, in, inlen) == 1)
            rc = PT_OK;
    }
    EVP_MD_CTX_free(ctx);
    if (rc) {
        free(*sig);
        *sig = NULL;
    }
    return rc;
}

static char *b64(const unsigned char *p, size_t n)
{
    size_t len = base64_encoded_len(n) + 1;
    char *s = malloc(len);
    if (s)
        base64_encode(p, n, s, len);
    return s;
}

int dkim_sign(const struct dkim_key *k, const char *msg, size_t len, double now, struct buf *out)
{
    size_t nf = 0, capf = 0, pos = 0;
    struct hdr_field *fields = NULL, f;
    int rc = PT_OK;
    while (hdr_next(msg, len, &pos, &f)) {
        if (nf == capf) {
            size_t nc = capf ? capf * 2 : 32;
            struct hdr_field *nfl = realloc(fields, nc * sizeof *fields);
            if (!nfl) {
                free(fields);
                return PT_NOMEM;
            }
            fields = nfl;
            capf = nc;
        }
        fields[nf++] = f;
    }
    size_t body = len;
    if (pos < len) {
        if (len - pos >= 2 && msg[pos] == '\r' && msg[pos + 1] == '\n')
            body = pos + 2;
        else
            rc = PT_INVALID;         /* the header block ends in a line that is no field */
    }
    bool from = false;
    for (size_t i = 0; i < nf && !from; i++)
        from = name_is(&fields[i], "From");
    if (nf == 0 || !from)
        rc = PT_INVALID;
    if (rc) {
        free(fields);
        return rc;
    }

    unsigned char bh[32], *sig = NULL;
    size_t siglen = 0;
    char *bh64 = NULL, *sig64 = NULL;
    struct buf data, field;
    buf_init(&data, 0);
    buf_init(&field, 0);
    rc = body_hash(msg + body, len - body, bh);
    if (rc == PT_OK && !(bh64 = b64(bh, sizeof bh)))
        rc = PT_NOMEM;

    /* The signed fields, each name's instances bottom-up (RFC 6376 5.4.2). */
    struct fold fo = { .w = { .b = &field, .rc = rc }, .col = 0 };
    bufw_puts(&fo.w, "DKIM-Signature:");
    fo.col = 15;
    char piece[DKIM_DOMAIN_MAX + DKIM_NAME_MAX + 8];
    int pn;
    fold_word(&fo, "v=1;", 4, true);
    pn = snprintf(piece, sizeof piece, "a=%s;", k->ed25519 ? "ed25519-sha256" : "rsa-sha256");
    fold_word(&fo, piece, (size_t)pn, true);
    fold_word(&fo, "c=relaxed/relaxed;", 18, true);
    pn = snprintf(piece, sizeof piece, "d=%s;", k->domain);
    fold_word(&fo, piece, (size_t)pn, true);
    pn = snprintf(piece, sizeof piece, "s=%s;", k->selector);
    fold_word(&fo, piece, (size_t)pn, true);
    long long t = now >= 0 && now < 1e15 ? (long long)now : 0;
    pn = snprintf(piece, sizeof piece, "t=%lld;", t);
    fold_word(&fo, piece, (size_t)pn, true);

    size_t nh = 0;                   /* instances listed in h= so far */
    size_t total = 0;
    for (int i = 0; i < k->nnames; i++)
        for (size_t j = 0; j < nf; j++)
            total += name_is(&fields[j], k->names[i]);
    for (int i = 0; i < k->nnames && fo.w.rc == PT_OK; i++) {
        for (size_t j = nf; j-- > 0 && fo.w.rc == PT_OK;) {
            if (!name_is(&fields[j], k->names[i]))
                continue;
            fo.w.rc = dkim_canon_header(fields[j].name, fields[j].name_len, fields[j].value,
                                        fields[j].value_len, &data);
            nh++;
            pn = snprintf(piece, sizeof piece, "%s%s%s", nh == 1 ? "h=" : ":", k->names[i],
                          nh == total ? ";" : "");
            fold_word(&fo, piece, (size_t)pn, nh == 1);
        }
    }
    fold_word(&fo, "bh=", 3, true);
    if (bh64) {
        fold_b64(&fo, bh64, strlen(bh64));
        fold_b64(&fo, ";", 1);
    }
    fold_word(&fo, "b=", 2, true);
    rc = fo.w.rc;

    /* The field itself, b= empty, canonicalized without its CRLF (RFC 6376 3.7). */
    if (rc == PT_OK)
        rc = dkim_canon_header(field.data, 14, field.data + 15, field.len - 15, &data);
    if (rc == PT_OK) {
        data.len -= 2;
        rc = sign_data(k, (const unsigned char *)data.data, data.len, &sig, &siglen);
    }
    if (rc == PT_OK && !(sig64 = b64(sig, siglen)))
        rc = PT_NOMEM;
    if (rc == PT_OK) {
        fold_b64(&fo, sig64, strlen(sig64));
        bufw_put(&fo.w, "\r\n", 2);
        rc = fo.w.rc;
    }
    if (rc == PT_OK)
        rc = buf_append(out, field.data, field.len);
    ERR_clear_error();
    free(fields);
    free(bh64);
    free(sig);
    free(sig64);
    buf_free(&data);
    buf_free(&field);
    return rc;
}

/* ---- From domain ---- */

/* The From value with comments as a space, quoted strings and quoted pairs as 'q'
 * and line ends as spaces, so that '@', '<', ',' and ':' are only structure. */
static char *clean_value(const char *v, size_t n)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '(') {
            int depth = 0;
            for (; i < n; i++) {
                if (v[i] == '\\')
                    i++;
                else if (v[i] == '(')
                    depth++;
                else if (v[i] == ')' && --depth == 0)
                    break;
            }
            o[k++] = ' ';
        } else if (c == '"') {
            for (i++; i < n && v[i] != '"'; i++)
                if (v[i] == '\\')
                    i++;
            o[k++] = 'q';
        } else if (c == '\\') {
            i++;
            o[k++] = 'q';
        } else {
            o[k++] = c == '\r' || c == '\n' ? ' ' : c;
        }
    }
    o[k] = 0;
    return o;
}

/* The host name after '@' in s[0..n) into out, lowercased; CFWS only around dots. */
static bool take_domain(const char *s, size_t n, char out[256])
{
    size_t k = 0;
    bool gap = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_wsp((char)c)) {
            gap = k > 0;
            continue;
        }
        if (gap && c != '.' && out[k - 1] != '.')
            return false;                    /* "a@b.example junk" */
        gap = false;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.';
        if (!ok || k >= 255 || (c == '.' && (k == 0 || out[k - 1] == '.')))
            return false;
        out[k++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    if (k == 0 || out[k - 1] == '.')
        return false;
    out[k] = 0;
    return true;
}

static bool first_domain(const char *s, char out[256])
{
    size_t n = strlen(s), i = 0;
    while (i < n) {
        bool angle = false, lt = false, at = false, group = false;
        size_t j = i;
        for (; j < n; j++) {
            char c = s[j];
            if (!angle && c == ':' && !lt && !at) {
                group = true;                /* "group: a@b, c@d;" */
                break;
            }
            if (c == '<') {
                angle = lt = true;
            } else if (c == '>') {
                angle = false;
            } else if (c == '@') {
                at = true;
            } else if (!angle && (c == ',' || c == ';')) {
                break;
            }
        }
        if (group) {
            i = j + 1;
            continue;
        }
        const char *a = s + i;
        size_t an = j - i;
        if (lt) {
            const char *p = memchr(a, '<', an);
            an -= (size_t)(p + 1 - a);
            a = p + 1;
            const char *gt = memchr(a, '>', an);
            if (gt)
                an = (size_t)(gt - a);
            const char *route = memrchr(a, ':', an);   /* obs-route "@x,@y:" */
            if (route) {
                an -= (size_t)(route + 1 - a);
                a = route + 1;
            }
        }
        const char *atp = memrchr(a, '@', an);
        if (atp)
            return take_domain(atp + 1, an - (size_t)(atp + 1 - a), out);
        i = j + 1;
    }
    return false;
}

bool dkim_from_domain(const char *msg, size_t len, char out[256])
{
    size_t pos = 0;
    struct hdr_field f;
    while (hdr_next(msg, len, &pos, &f)) {
        if (!name_is(&f, "From"))
            continue;
        char *v = clean_value(f.value, f.value_len);
        bool ok = v && first_domain(v, out);
        free(v);
        if (!ok)
            out[0] = 0;
        return ok;
    }
    out[0] = 0;
    return false;
}

bool dkim_domain_covers(const char *domain, const char *from_domain)
{
    if (!domain || !from_domain)
        return false;
    size_t dl = strlen(domain), fl = strlen(from_domain);
    if (dl > 0 && domain[dl - 1] == '.')
        dl--;
    if (fl > 0 && from_domain[fl - 1] == '.')
        fl--;
    if (dl == 0 || fl == 0 || fl < dl)
        return false;
    if (strncasecmp(from_domain + fl - dl, domain, dl) != 0)
        return false;
    return fl == dl || from_domain[fl - dl - 1] == '.';
}
