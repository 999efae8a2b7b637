/* SMTP AUTH server side (see smtp_auth.h): mechanism table, one state machine per
 * exchange, strict base64. Never keeps a decoded password past the call that
 * checks it, and never answers differently for unknown users and wrong passwords.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "core/users.h"
#include "obs/log.h"
#include "smtp/smtp_auth.h"
#include "util/base64.h"
#include "util/result.h"

#define SASL_DECODED_MAX (SASL_LINE_MAX / 4 * 3)

#define SASL_STATES(X) \
    X(SASL_IDLE) X(SASL_PLAIN_RESPONSE) X(SASL_LOGIN_USER) X(SASL_LOGIN_PASS) \
    X(SASL_CRAM_RESPONSE) X(SASL_DONE) X(SASL_CANCELLED)
#define SASL_AS_ENUM(s) s,
#define SASL_AS_NAME(s) #s,
enum sasl_state { SASL_STATES(SASL_AS_ENUM) SASL__COUNT };
static const char *const sasl_state_names[] = { SASL_STATES(SASL_AS_NAME) };

/* The LOGIN prompts everyone sends: base64 of "Username:" and "Password:". */
#define SASL_LOGIN_USER_PROMPT "VXNlcm5hbWU6"
#define SASL_LOGIN_PASS_PROMPT "UGFzc3dvcmQ6"

static void sasl_enter_state(struct sasl *s, enum sasl_state st)
{
    if (s->state != (int)st)
        log_debug("sasl: %s -> %s", sasl_state_names[s->state], sasl_state_names[st]);
    s->state = (int)st;
}

static void sasl_wipe(struct sasl *s)
{
    OPENSSL_cleanse(s->user, sizeof s->user);
    OPENSSL_cleanse(s->challenge, sizeof s->challenge);
    s->challenge_len = 0;
}

/* Ends the exchange with rc: PT_OK keeps the user, anything else forgets it;
 * PT_AGAIN (the exchange goes on) passes through. */
static int sasl_finish(struct sasl *s, int rc)
{
    if (rc == PT_AGAIN)
        return rc;
    if (rc == PT_OK) {
        OPENSSL_cleanse(s->challenge, sizeof s->challenge);
        s->challenge_len = 0;
        sasl_enter_state(s, SASL_DONE);
    } else {
        sasl_wipe(s);
        sasl_enter_state(s, SASL_IDLE);
    }
    return rc;
}

static int sasl_send(char *out, size_t outlen, const char *text)
{
    size_t n = strlen(text);
    if (n >= outlen)
        return PT_ERROR;
    memcpy(out, text, n + 1);
    return PT_AGAIN;
}

/* ---- Mechanisms ------------------------------------------------------------------
 * A start handler gets the decoded initial response (has_ir false when there
 * was none); a step handler gets one decoded client line. Both return a result
 * of smtp_auth.h and leave s in the next state. */

/* Checks user (len bytes, no NUL) and pass (NUL-terminated) and records the user. */
static int sasl_check_plain(struct sasl *s, const unsigned char *user, size_t ulen,
                            const char *pass)
{
    char name[USERS_NAME_MAX + 1];
    memcpy(name, user, ulen);
    name[ulen] = '\0';
    int rc = users_verify_plain(s->users, name, pass);
    if (rc == PT_OK)
        memcpy(s->user, name, ulen + 1);
    OPENSSL_cleanse(name, sizeof name);
    return rc;
}

/* RFC 4616: [authzid] NUL authcid NUL passwd, no other NUL. */
static int sasl_plain_message(struct sasl *s, const unsigned char *m, size_t n)
{
    const unsigned char *z1 = memchr(m, '\0', n);
    const unsigned char *z2 = z1 ? memchr(z1 + 1, '\0', n - (size_t)(z1 + 1 - m)) : NULL;
    if (!z2 || memchr(z2 + 1, '\0', n - (size_t)(z2 + 1 - m)))
        return PT_INVALID;
    size_t zlen = (size_t)(z1 - m), clen = (size_t)(z2 - z1 - 1);
    size_t plen = n - (size_t)(z2 + 1 - m);
    if (zlen > USERS_NAME_MAX || clen > USERS_NAME_MAX || plen > USERS_PASS_MAX)
        return PT_INVALID;
    if (clen == 0 || plen == 0)
        return PT_ERROR;
    if (zlen > 0 && (zlen != clen || memcmp(m, z1 + 1, clen) != 0))
        return PT_ERROR;                         /* no proxy authorization */
    char pass[USERS_PASS_MAX + 1];
    memcpy(pass, z2 + 1, plen);
    pass[plen] = '\0';
    int rc = sasl_check_plain(s, z1 + 1, clen, pass);
    OPENSSL_cleanse(pass, sizeof pass);
    return rc;
}

static int sasl_plain_start(struct sasl *s, const unsigned char *ir, size_t n, bool has_ir,
                            char *out, size_t outlen)
{
    if (has_ir)
        return sasl_plain_message(s, ir, n);
    sasl_enter_state(s, SASL_PLAIN_RESPONSE);
    return sasl_send(out, outlen, "");
}

static int sasl_plain_step(struct sasl *s, const unsigned char *m, size_t n, char *out,
                           size_t outlen)
{
    return sasl_plain_message(s, m, n);
}

static int sasl_login_user(struct sasl *s, const unsigned char *m, size_t n, char *out,
                           size_t outlen)
{
    if (n > USERS_NAME_MAX || memchr(m, '\0', n))
        return PT_INVALID;
    if (n == 0)
        return PT_ERROR;
    memcpy(s->user, m, n);
    s->user[n] = '\0';
    sasl_enter_state(s, SASL_LOGIN_PASS);
    return sasl_send(out, outlen, SASL_LOGIN_PASS_PROMPT);
}

static int sasl_login_pass(struct sasl *s, const unsigned char *m, size_t n, char *out,
                           size_t outlen)
{
    if (n > USERS_PASS_MAX || memchr(m, '\0', n))
        return PT_INVALID;
    if (n == 0)
        return PT_ERROR;
    char pass[USERS_PASS_MAX + 1];
    memcpy(pass, m, n);
    pass[n] = '\0';
    int rc = users_verify_plain(s->users, s->user, pass);
    OPENSSL_cleanse(pass, sizeof pass);
    return rc;                                   /* s->user already names the user */
}

static int sasl_login_start(struct sasl *s, const unsigned char *ir, size_t n, bool has_ir,
                            char *out, size_t outlen)
{
    if (has_ir)                                  /* "AUTH LOGIN <base64 user>" */
        return sasl_login_user(s, ir, n, out, outlen);
    sasl_enter_state(s, SASL_LOGIN_USER);
    return sasl_send(out, outlen, SASL_LOGIN_USER_PROMPT);
}

/* Challenge "<random.timestamp@hostname>" (RFC 2195), unique per exchange. */
static int sasl_cram_start(struct sasl *s, const unsigned char *ir, size_t n, bool has_ir,
                           char *out, size_t outlen)
{
    if (has_ir)
        return PT_INVALID;                       /* server speaks first (RFC 4954 §4) */
    uint64_t r;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
        return PT_NOMEM;
    int len = snprintf(s->challenge, sizeof s->challenge, "<%llu.%lld@%s>",
                       (unsigned long long)r, (long long)time(NULL), s->hostname);
    if (len < 0 || (size_t)len >= sizeof s->challenge)
        return PT_ERROR;
    s->challenge_len = (size_t)len;
    if (base64_encode(s->challenge, s->challenge_len, out, outlen) != PT_OK)
        return PT_ERROR;
    sasl_enter_state(s, SASL_CRAM_RESPONSE);
    return PT_AGAIN;
}

/* "user SP digest", digest 32 hex digits (RFC 2195 says lowercase; any case). */
static int sasl_cram_step(struct sasl *s, const unsigned char *m, size_t n, char *out,
                          size_t outlen)
{
    if (n < 33 || m[n - 33] != ' ' || memchr(m, '\0', n))
        return PT_INVALID;
    unsigned char digest[USERS_CRAM_DIGEST_LEN];
    for (size_t i = 0; i < sizeof digest; i++) {
        int v[2];
        for (int k = 0; k < 2; k++) {
            unsigned char c = m[n - 32 + 2 * i + (size_t)k];
            v[k] = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
                   c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (v[k] < 0)
                return PT_INVALID;
        }
        digest[i] = (unsigned char)(v[0] << 4 | v[1]);
    }
    size_t ulen = n - 33;
    if (ulen > USERS_NAME_MAX)
        return PT_INVALID;
    if (ulen == 0)
        return PT_ERROR;
    memcpy(s->user, m, ulen);
    s->user[ulen] = '\0';
    return users_verify_cram(s->users, s->user, s->challenge, s->challenge_len, digest);
}

typedef int sasl_start_fn(struct sasl *, const unsigned char *, size_t, bool, char *, size_t);
typedef int sasl_step_fn(struct sasl *, const unsigned char *, size_t, char *, size_t);

static const struct sasl_mech {
    const char *name;
    sasl_start_fn *start;
} sasl_mechs[] = {
    { "PLAIN", sasl_plain_start },
    { "LOGIN", sasl_login_start },
    { "CRAM-MD5", sasl_cram_start },
};

/* The states that wait for a client line, and who reads it. */
static sasl_step_fn *const sasl_steps[SASL__COUNT] = {
    [SASL_PLAIN_RESPONSE] = sasl_plain_step,
    [SASL_LOGIN_USER] = sasl_login_user,
    [SASL_LOGIN_PASS] = sasl_login_pass,
    [SASL_CRAM_RESPONSE] = sasl_cram_step,
};

/* ---- API ------------------------------------------------------------------------ */

void sasl_init(struct sasl *s, const struct users *users, const char *hostname)
{
    memset(s, 0, sizeof *s);
    s->users = users;
    s->mech = -1;
    s->state = SASL_IDLE;
    size_t n = 0;
    for (const char *h = hostname ? hostname : ""; *h && n < sizeof s->hostname - 1; h++) {
        unsigned char c = (unsigned char)*h;
        if (c > 0x20 && c < 0x7f && c != '<' && c != '>')
            s->hostname[n++] = (char)c;          /* keep the challenge one clean token */
    }
    if (n == 0)
        memcpy(s->hostname, "localhost", sizeof "localhost");
}

void sasl_reset(struct sasl *s)
{
    sasl_wipe(s);
    s->mech = -1;
    sasl_enter_state(s, SASL_IDLE);
}

/* Is name (len bytes) in the space-separated list allowed (NULL = all)? */
static bool sasl_allowed(const char *allowed, const char *name)
{
    if (!allowed)
        return true;
    size_t n = strlen(name);
    for (const char *p = allowed; *p;) {
        p += strspn(p, " ");
        size_t w = strcspn(p, " ");
        if (w == n && strncasecmp(p, name, n) == 0)
            return true;
        p += w;
    }
    return false;
}

int sasl_start(struct sasl *s, const char *mech, const char *initial, const char *allowed,
               char *out, size_t outlen)
{
    if (outlen)
        out[0] = '\0';
    sasl_reset(s);
    const struct sasl_mech *m = NULL;
    for (size_t i = 0; mech && i < sizeof sasl_mechs / sizeof sasl_mechs[0]; i++)
        if (strcasecmp(mech, sasl_mechs[i].name) == 0)
            m = &sasl_mechs[i];
    if (!m || !s->users || !sasl_allowed(allowed, m->name))
        return PT_NOTFOUND;
    s->mech = (int)(m - sasl_mechs);
    bool has_ir = initial && initial[0];
    size_t irlen = has_ir ? strlen(initial) : 0;
    if (irlen > SASL_LINE_MAX)
        return sasl_finish(s, PT_INVALID);
    unsigned char ir[SASL_DECODED_MAX];
    size_t n = 0;
    if (has_ir && strcmp(initial, "=") != 0 &&
        base64_decode(initial, irlen, BASE64_CANONICAL, ir, sizeof ir, &n) != PT_OK)
        return sasl_finish(s, PT_INVALID);
    int rc = sasl_finish(s, m->start(s, ir, n, has_ir, out, outlen));
    OPENSSL_cleanse(ir, n);
    return rc;
}

int sasl_step(struct sasl *s, const char *line, size_t len, char *out, size_t outlen)
{
    if (outlen)
        out[0] = '\0';
    sasl_step_fn *step = s->state >= 0 && s->state < SASL__COUNT ? sasl_steps[s->state] : NULL;
    if (!step)
        return PT_INVALID;                       /* no exchange waits for a line */
    if (len == 1 && line[0] == '*') {
        sasl_wipe(s);
        sasl_enter_state(s, SASL_CANCELLED);
        return PT_INVALID;
    }
    if (len > SASL_LINE_MAX)
        return sasl_finish(s, PT_INVALID);
    unsigned char m[SASL_DECODED_MAX];
    size_t n = 0;
    if (base64_decode(line, len, BASE64_CANONICAL, m, sizeof m, &n) != PT_OK)
        return sasl_finish(s, PT_INVALID);
    int rc = sasl_finish(s, step(s, m, n, out, outlen));
    OPENSSL_cleanse(m, n);
    return rc;
}

bool sasl_in_progress(const struct sasl *s)
{
    return s->state >= 0 && s->state < SASL__COUNT && sasl_steps[s->state] != NULL;
}

bool sasl_was_cancelled(const struct sasl *s)
{
    return s->state == SASL_CANCELLED;
}

const char *sasl_user(const struct sasl *s)
{
    return s->state == SASL_DONE ? s->user : NULL;
}

const char *sasl_tried_user(const struct sasl *s)
{
    return s->user[0] ? s->user : NULL;
}
