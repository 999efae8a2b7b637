/* SMTP AUTH user table (see users.h): strict users_file parser, a hash index by
 * name, and password / CRAM-MD5 checks. Never keeps a clear-text password and
 * never compares a secret with memcmp or strcmp.
 * SPDX-License-Identifier: Apache-2.0 */
#define OPENSSL_SUPPRESS_DEPRECATED   /* MD5_CTX: the CRAM-MD5 scheme stores its state */

#include <crypt.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/md5.h>

#include "core/users.h"
#include "util/result.h"

enum users_kind { USERS_CRYPT, USERS_CRAM };

struct users_entry {
    char *name;                                  /* owned, NUL-terminated */
    enum users_kind kind;
    char *crypt_hash;                            /* USERS_CRYPT: owned */
    unsigned char cram[USERS_CRAM_CONTEXT_LEN];  /* USERS_CRAM: outer, inner state */
    int line;                                    /* for duplicate messages */
};

struct users {
    struct users_entry *entries;
    size_t n, cap;
    uint32_t *slots;          /* open addressing: entry index + 1, 0 = empty */
    size_t nslots;            /* power of two, > 2n */
    size_t n_cram;
    /* Unknown users are checked against this entry (the first crypt(3) one, so
     * a miss costs what a hit costs) or, without one, against a zero context. */
    const struct users_entry *decoy;
};

/* Crypt prefixes we accept: slow, salted, supported by libxcrypt everywhere. */
static const char *const users_crypt_prefixes[] = { "$y$", "$6$", "$5$", NULL };

/* ---- Hash index --------------------------------------------------------------- */

static uint32_t users_hash(const char *s)
{
    uint32_t h = 2166136261u;                    /* FNV-1a: keys come from the admin */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static const struct users_entry *users_find(const struct users *u, const char *name)
{
    if (!u || !u->nslots)
        return NULL;
    size_t mask = u->nslots - 1;
    for (size_t i = users_hash(name) & mask;; i = (i + 1) & mask) {
        uint32_t slot = u->slots[i];
        if (slot == 0)
            return NULL;
        if (strcmp(u->entries[slot - 1].name, name) == 0)
            return &u->entries[slot - 1];
    }
}

/* Builds the index; on a duplicate name returns the later entry's index + 1
 * and the earlier one in *first, 0 on success, -1 without memory. */
static long users_index(struct users *u, size_t *first)
{
    size_t nslots = 16;
    while (nslots < 2 * u->n + 1)
        nslots *= 2;
    if (!(u->slots = calloc(nslots, sizeof *u->slots)))
        return -1;
    u->nslots = nslots;
    for (size_t e = 0; e < u->n; e++) {
        size_t i = users_hash(u->entries[e].name) & (nslots - 1);
        for (; u->slots[i]; i = (i + 1) & (nslots - 1))
            if (strcmp(u->entries[u->slots[i] - 1].name, u->entries[e].name) == 0) {
                *first = u->slots[i] - 1;
                return (long)e + 1;
            }
        u->slots[i] = (uint32_t)(e + 1);
    }
    return 0;
}

/* ---- CRAM-MD5 contexts ------------------------------------------------------- */

static void users_put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t users_get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* MD5 chaining state after one 64-byte block. */
static void users_md5_state(const unsigned char block[64], unsigned char out[16])
{
    MD5_CTX c;
    MD5_Init(&c);
    MD5_Update(&c, block, 64);
    users_put_le32(out, c.A);
    users_put_le32(out + 4, c.B);
    users_put_le32(out + 8, c.C);
    users_put_le32(out + 12, c.D);
    OPENSSL_cleanse(&c, sizeof c);
}

/* MD5 of data continued from a saved state that has absorbed one block. */
static void users_md5_resume(const unsigned char state[16], const void *data, size_t len,
                             unsigned char out[16])
{
    MD5_CTX c;
    MD5_Init(&c);
    c.A = users_get_le32(state);
    c.B = users_get_le32(state + 4);
    c.C = users_get_le32(state + 8);
    c.D = users_get_le32(state + 12);
    c.Nl = 64 * 8;                               /* bit count of the absorbed block */
    c.Nh = 0;
    MD5_Update(&c, data, len);
    MD5_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
}

void users_cram_context(const char *pass, size_t len, unsigned char ctx[USERS_CRAM_CONTEXT_LEN])
{
    unsigned char key[64] = { 0 }, ipad[64], opad[64];
    if (len > sizeof key)
        MD5((const unsigned char *)pass, len, key);   /* RFC 2104: long keys are hashed */
    else
        memcpy(key, pass, len);
    for (size_t i = 0; i < sizeof key; i++) {
        ipad[i] = key[i] ^ 0x36;
        opad[i] = key[i] ^ 0x5c;
    }
    users_md5_state(opad, ctx);                  /* Dovecot's order: outer first */
    users_md5_state(ipad, ctx + 16);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(ipad, sizeof ipad);
    OPENSSL_cleanse(opad, sizeof opad);
}

int users_cram_hash(const char *pass, size_t len, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char ctx[USERS_CRAM_CONTEXT_LEN];
    if (outlen < USERS_CRAM_HASH_LEN + 1)
        return PT_TOOLONG;
    users_cram_context(pass, len, ctx);
    size_t n = sizeof USERS_CRAM_PREFIX - 1;
    memcpy(out, USERS_CRAM_PREFIX, n);
    for (size_t i = 0; i < sizeof ctx; i++) {
        out[n++] = hex[ctx[i] >> 4];
        out[n++] = hex[ctx[i] & 15];
    }
    out[n] = '\0';
    OPENSSL_cleanse(ctx, sizeof ctx);
    return PT_OK;
}

/* ---- crypt(3) ----------------------------------------------------------------- */

/* Hashes pass with setting into out; PT_OK, PT_NOMEM, PT_TOOLONG or PT_ERROR. */
static int users_crypt(const char *pass, const char *setting, char *out, size_t outlen)
{
    struct crypt_data *cd = calloc(1, sizeof *cd);   /* ~32 KiB: not on a worker stack */
    if (!cd)
        return PT_NOMEM;
    errno = 0;
    const char *h = crypt_rn(pass, setting, cd, (int)sizeof *cd);
    int rc = PT_OK;
    if (!h || h[0] == '*')
        rc = errno == ENOMEM ? PT_NOMEM : PT_ERROR;
    else if (strlen(h) >= outlen)
        rc = PT_TOOLONG;
    else
        memcpy(out, h, strlen(h) + 1);
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    return rc;
}

static int users_crypt_check(const char *pass, const char *hash)
{
    char out[USERS_HASH_MAX];
    int rc = users_crypt(pass, hash, out, sizeof out);
    if (rc == PT_OK) {
        size_t n = strlen(hash);
        rc = strlen(out) == n && CRYPTO_memcmp(out, hash, n) == 0 ? PT_OK : PT_ERROR;
    }
    OPENSSL_cleanse(out, sizeof out);
    return rc == PT_TOOLONG ? PT_ERROR : rc;
}

int users_crypt_hash(const char *pass, char *out, size_t outlen)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn("$y$", 0, NULL, 0, setting, (int)sizeof setting) &&
        !crypt_gensalt_rn("$6$", 0, NULL, 0, setting, (int)sizeof setting))
        return PT_ERROR;
    return users_crypt(pass, setting, out, outlen);
}

/* ---- Verification ------------------------------------------------------------- */

int users_verify_plain(const struct users *u, const char *user, const char *pass)
{
    if (!u || !user || !pass || strnlen(user, USERS_NAME_MAX + 1) > USERS_NAME_MAX ||
        strnlen(pass, USERS_PASS_MAX + 1) > USERS_PASS_MAX)
        return PT_ERROR;
    const struct users_entry *e = users_find(u, user);
    bool known = e != NULL;
    if (!e)
        e = u->decoy;
    int rc;
    if (e && e->kind == USERS_CRYPT) {
        rc = users_crypt_check(pass, e->crypt_hash);
    } else {
        static const unsigned char zero[USERS_CRAM_CONTEXT_LEN];
        unsigned char ctx[USERS_CRAM_CONTEXT_LEN];
        users_cram_context(pass, strlen(pass), ctx);
        rc = CRYPTO_memcmp(ctx, e ? e->cram : zero, sizeof ctx) == 0 ? PT_OK : PT_ERROR;
        OPENSSL_cleanse(ctx, sizeof ctx);
    }
    return known ? rc : rc == PT_NOMEM ? PT_NOMEM : PT_ERROR;
}

int users_verify_cram(const struct users *u, const char *user, const char *challenge,
                      size_t challenge_len, const unsigned char digest[USERS_CRAM_DIGEST_LEN])
{
    static const unsigned char zero[USERS_CRAM_CONTEXT_LEN];
    if (!u || !user || !challenge)
        return PT_ERROR;
    const struct users_entry *e = users_find(u, user);
    bool usable = e && e->kind == USERS_CRAM;
    const unsigned char *ctx = usable ? e->cram : zero;
    unsigned char inner[16], outer[16];
    users_md5_resume(ctx + 16, challenge, challenge_len, inner);
    users_md5_resume(ctx, inner, sizeof inner, outer);
    int same = CRYPTO_memcmp(outer, digest, sizeof outer) == 0;
    OPENSSL_cleanse(inner, sizeof inner);
    OPENSSL_cleanse(outer, sizeof outer);
    return usable && same ? PT_OK : PT_ERROR;
}

/* ---- Loading ------------------------------------------------------------------ */

static bool users_name_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || c == ':')
            return false;
    }
    return true;
}

static int users_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "$y$...", "$6$..." or "$5$...": the crypt alphabet, a salt and a hash part. */
static bool users_crypt_ok(const char *h, size_t n)
{
    if (n < 4 || n >= USERS_HASH_MAX)            /* h is not NUL-terminated */
        return false;
    int i = 0;
    while (users_crypt_prefixes[i] && memcmp(h, users_crypt_prefixes[i], 3) != 0)
        i++;
    if (!users_crypt_prefixes[i])
        return false;
    int dollars = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)h[k];
        if (c == '$')
            dollars++;
        else if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
                 !(c >= '0' && c <= '9') && c != '.' && c != '/' && c != '=')
            return false;
    }
    return dollars >= (h[1] == 'y' ? 4 : 3) && h[n - 1] != '$';
}

/* Parses one "user:HASH" line into a new entry; on error writes the message
 * (without FILE:LINE) into why and returns PT_INVALID. */
static int users_add(struct users *u, const char *s, size_t n, int line, char *why,
                     size_t whylen)
{
    const char *colon = memchr(s, ':', n);
    if (!colon) {
        snprintf(why, whylen, "expected user:HASH");
        return PT_INVALID;
    }
    size_t nl = (size_t)(colon - s), hl = n - nl - 1;
    const char *h = colon + 1;
    if (nl == 0) {
        snprintf(why, whylen, "empty user name");
        return PT_INVALID;
    }
    if (nl > USERS_NAME_MAX) {
        snprintf(why, whylen, "user name longer than %d bytes", USERS_NAME_MAX);
        return PT_INVALID;
    }
    if (!users_name_ok(s, nl)) {
        snprintf(why, whylen, "invalid user name '%.*s' (spaces, ':' and control characters "
                 "are not allowed)", (int)nl, s);
        return PT_INVALID;
    }
    if (memchr(h, ':', hl)) {
        snprintf(why, whylen, "user '%.*s': extra ':' field (expected user:HASH)", (int)nl, s);
        return PT_INVALID;
    }
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 64;
        struct users_entry *arr = cap < UINT32_MAX ? realloc(u->entries, cap * sizeof *arr) : NULL;
        if (!arr)
            return PT_NOMEM;
        u->entries = arr;
        u->cap = cap;
    }
    struct users_entry *e = &u->entries[u->n];
    memset(e, 0, sizeof *e);
    e->line = line;
    size_t pl = sizeof USERS_CRAM_PREFIX - 1;
    if (hl >= pl && memcmp(h, USERS_CRAM_PREFIX, pl) == 0) {
        if (hl != USERS_CRAM_HASH_LEN) {
            snprintf(why, whylen, "user '%.*s': invalid {CRAM-MD5} hash (expected 64 hex "
                     "digits)", (int)nl, s);
            return PT_INVALID;
        }
        for (size_t i = 0; i < USERS_CRAM_CONTEXT_LEN; i++) {
            int hi = users_hexval(h[pl + 2 * i]), lo = users_hexval(h[pl + 2 * i + 1]);
            if (hi < 0 || lo < 0) {
                snprintf(why, whylen, "user '%.*s': invalid {CRAM-MD5} hash (expected 64 hex "
                         "digits)", (int)nl, s);
                OPENSSL_cleanse(e->cram, sizeof e->cram);
                return PT_INVALID;
            }
            e->cram[i] = (unsigned char)(hi << 4 | lo);
        }
        e->kind = USERS_CRAM;
    } else if (users_crypt_ok(h, hl)) {
        e->kind = USERS_CRYPT;
        if (!(e->crypt_hash = strndup(h, hl)))
            return PT_NOMEM;
    } else {
        snprintf(why, whylen, "user '%.*s': unsupported password hash (expected a crypt(3) "
                 "hash starting $y$, $6$ or $5$, or {CRAM-MD5} and 64 hex digits; see "
                 "`petrelctl hash-password`)", (int)nl, s);
        return PT_INVALID;
    }
    if (!(e->name = strndup(s, nl))) {
        free(e->crypt_hash);
        return PT_NOMEM;
    }
    u->n++;
    if (e->kind == USERS_CRAM)
        u->n_cram++;
    return PT_OK;
}

struct users *users_parse(const char *name, const char *text, size_t len, char *err,
                          size_t errlen)
{
    char why[512];
    struct users *u = calloc(1, sizeof *u);
    if (!u)
        goto nomem;
    int line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *s = text + pos;
        const char *nlp = memchr(s, '\n', len - pos);
        size_t n = nlp ? (size_t)(nlp - s) : len - pos;
        pos += n + (nlp ? 1 : 0);
        line++;
        if (n > 0 && s[n - 1] == '\r')
            n--;
        if (n > USERS_LINE_MAX) {
            snprintf(err, errlen, "%s:%d: line longer than %d bytes", name, line,
                     USERS_LINE_MAX);
            goto fail;
        }
        if (memchr(s, '\0', n)) {
            snprintf(err, errlen, "%s:%d: NUL byte in line", name, line);
            goto fail;
        }
        size_t lead = 0;
        while (lead < n && (s[lead] == ' ' || s[lead] == '\t'))
            lead++;
        if (lead == n || s[lead] == '#')
            continue;
        int rc = users_add(u, s, n, line, why, sizeof why);
        if (rc == PT_NOMEM)
            goto nomem;
        if (rc != PT_OK) {
            snprintf(err, errlen, "%s:%d: %s", name, line, why);
            goto fail;
        }
    }
    size_t first = 0;
    long dup = users_index(u, &first);
    if (dup < 0)
        goto nomem;
    if (dup > 0) {
        const struct users_entry *e = &u->entries[dup - 1];
        snprintf(err, errlen, "%s:%d: duplicate user '%s' (first on line %d)", name, e->line,
                 e->name, u->entries[first].line);
        goto fail;
    }
    for (size_t i = 0; i < u->n && !u->decoy; i++)
        if (u->entries[i].kind == USERS_CRYPT)
            u->decoy = &u->entries[i];
    return u;
nomem:
    snprintf(err, errlen, "%s:0: out of memory", name);
fail:
    users_free(u);
    return NULL;
}

struct users *users_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s:0: cannot open users_file: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 64 * 1024, len = 0;
    char *text = malloc(cap);
    while (text) {
        if (len == cap) {
            char *t = cap < USERS_FILE_MAX + 1 ? realloc(text, cap * 2) : NULL;
            if (!t) {
                OPENSSL_cleanse(text, len);
                free(text);
                text = NULL;
                break;
            }
            text = t;
            cap *= 2;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0 || len > USERS_FILE_MAX)
            break;
    }
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    struct users *u = NULL;
    if (!text)
        snprintf(err, errlen, "%s:0: out of memory", path);
    else if (rerr)
        snprintf(err, errlen, "%s:0: cannot read users_file: %s", path, strerror(rerr));
    else if (len > USERS_FILE_MAX)
        snprintf(err, errlen, "%s:0: users_file larger than %u MiB", path, USERS_FILE_MAX >> 20);
    else
        u = users_parse(path, text, len, err, errlen);
    if (text) {
        OPENSSL_cleanse(text, len);
        free(text);
    }
    return u;
}

void users_free(struct users *u)
{
    if (!u)
        return;
    for (size_t i = 0; i < u->n; i++) {
        struct users_entry *e = &u->entries[i];
        free(e->name);
        if (e->crypt_hash) {
            OPENSSL_cleanse(e->crypt_hash, strlen(e->crypt_hash));
            free(e->crypt_hash);
        }
    }
    if (u->entries)
        OPENSSL_cleanse(u->entries, u->cap * sizeof *u->entries);
    free(u->entries);
    free(u->slots);
    free(u);
}

size_t users_count(const struct users *u)
{
    return u ? u->n : 0;
}

bool users_has_cram(const struct users *u)
{
    return u && u->n_cram > 0;
}
