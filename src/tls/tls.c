/* TLS engine over in-memory buffers (see tls.h): OpenSSL reads ciphertext from the
 * session's input buffer and writes into its output buffer through a small BIO.
 * Never does socket I/O, never blocks, never allows TLS < 1.2 or renegotiation.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tls/tls.h"
#include "util/result.h"

#define TLS_RECORD_PLAIN_MAX 16384 /* largest plaintext one TLS record carries */

struct tls_ctx {
    SSL_CTX *ssl_ctx; /* holds its own reference count: every SSL keeps it alive */
    bool server;
};

/*
 * Session states. Reads are allowed while the peer may still send (HANDSHAKE, OPEN,
 * SHUTDOWN); writes while we have not closed (OPEN, PEER_CLOSED; HANDSHAKE queues).
 */
#define TLS_STATES(X)                                                    \
    X(HANDSHAKE, "handshake")                                            \
    X(OPEN, "open")                                                      \
    X(PEER_CLOSED, "peer-closed") /* close_notify received */            \
    X(SHUTDOWN, "shutdown")       /* close_notify sent, none received */ \
    X(CLOSED, "closed")                                                  \
    X(FAILED, "failed")

enum tls_state {
#define X(id, name) TLS_STATE_##id,
    TLS_STATES(X)
#undef X
};

static const char *const tls_state_names[] = {
#define X(id, name) [TLS_STATE_##id] = name,
    TLS_STATES(X)
#undef X
};

struct tls_session {
    SSL *ssl;
    enum tls_state state;
    bool verify;       /* client: chain and host name are checked */
    bool nomem;        /* the BIO could not grow out: the failure is PT_NOMEM */
    size_t in_off;     /* bytes of in already handed to OpenSSL */
    struct buf in;     /* ciphertext fed, not yet consumed by OpenSSL */
    struct buf out;    /* ciphertext produced, not yet taken */
    struct buf pending; /* plaintext written before the handshake completed */
    char desc[64];
    char err[200];
};

/* State changes go through here so the transition is one place to trace. The TLS
 * module does not log by itself: the connection layer logs tls_state_name(). */
static void enter_state(struct tls_session *s, enum tls_state next)
{
    s->state = next;
}

/* ---------------------------------------------------------------- the BIO */

/* One BIO serves as both rbio and wbio: reads drain s->in, writes append to s->out.
 * Writes never ask to retry, so OpenSSL never reports WANT_WRITE. */
static int bio_read_ex(BIO *b, char *dst, size_t len, size_t *done)
{
    struct tls_session *s = BIO_get_data(b);
    size_t avail = s->in.len - s->in_off;

    BIO_clear_retry_flags(b);
    if (avail == 0) {
        BIO_set_retry_read(b);
        *done = 0;
        return 0;
    }
    size_t n = len < avail ? len : avail;
    memcpy(dst, s->in.data + s->in_off, n);
    s->in_off += n;
    *done = n;
    return 1;
}

static int bio_write_ex(BIO *b, const char *src, size_t len, size_t *done)
{
    struct tls_session *s = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    if (buf_append(&s->out, src, len) != PT_OK) {
        s->nomem = true;
        *done = 0;
        return 0;
    }
    *done = len;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct tls_session *s = BIO_get_data(b);

    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING:
        return (long)(s->in.len - s->in_off);
    default: /* WPENDING, EOF, kTLS queries...: nothing held back, no EOF, no kTLS */
        return 0;
    }
}

/* The method table is process-wide and immutable once built: building one per
 * context would burn a BIO type index (there are about a hundred) on every reload. */
static BIO_METHOD *bio_method;
static pthread_once_t bio_method_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOURCE_SINK | BIO_get_new_index(), "petrel tls");
    if (!m)
        return;
    if (!BIO_meth_set_read_ex(m, bio_read_ex) || !BIO_meth_set_write_ex(m, bio_write_ex)
        || !BIO_meth_set_ctrl(m, bio_ctrl)) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

/* ---------------------------------------------------------------- errors */

/* Formats "prefix: reason (detail)" from the earliest error on OpenSSL's queue (the
 * root cause; later entries are generic), then empties the queue. */
static void err_from_queue(char *dst, size_t n, const char *prefix)
{
    const char *data = NULL;
    int flags = 0;
    unsigned long e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags);
    char code[128];
    const char *reason = e ? ERR_reason_error_string(e) : "no details";

    if (e && ERR_SYSTEM_ERROR(e)) { /* errno from fopen and friends: the text says it all */
        reason = strerror_r(ERR_GET_REASON(e), code, sizeof code);
        data = NULL;
    } else if (!reason) {
        ERR_error_string_n(e, code, sizeof code);
        reason = code;
    }
    if (data && *data && (flags & ERR_TXT_STRING))
        snprintf(dst, n, "%s: %s (%s)", prefix, reason, data);
    else
        snprintf(dst, n, "%s: %s", prefix, reason);
    ERR_clear_error();
}

/* Records why the session died and makes every later call fail. No SSL_shutdown may
 * follow a fatal error, and none will: the state machine refuses it. */
static int fail(struct tls_session *s, int ssl_err, const char *prefix)
{
    long v = s->verify ? SSL_get_verify_result(s->ssl) : X509_V_OK;

    if (s->nomem) {
        snprintf(s->err, sizeof s->err, "%s: out of memory", prefix);
    } else if (v != X509_V_OK) {
        X509_VERIFY_PARAM *p = SSL_get0_param(s->ssl);
        const char *host = X509_VERIFY_PARAM_get0_host(p, 0);
        char *ip = host ? NULL : X509_VERIFY_PARAM_get1_ip_asc(p);
        const char *why = X509_verify_cert_error_string(v);

        if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
            snprintf(s->err, sizeof s->err, "certificate verify failed: %s (expected %s)",
                     why, host ? host : ip ? ip : "?");
        else
            snprintf(s->err, sizeof s->err, "certificate verify failed: %s", why);
        OPENSSL_free(ip);
    } else if (ssl_err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        snprintf(s->err, sizeof s->err, "%s: unexpected I/O failure", prefix);
    } else {
        err_from_queue(s->err, sizeof s->err, prefix);
    }
    ERR_clear_error();
    buf_free(&s->in); /* a dead session keeps only the alert waiting in out */
    s->in_off = 0;
    buf_free(&s->pending);
    enter_state(s, TLS_STATE_FAILED);
    return s->nomem ? PT_NOMEM : PT_ERROR;
}

/* ---------------------------------------------------------------- contexts */

static int parse_version(const char *v, const char *what, int *out, char *err, size_t errlen)
{
    if (!v || strcmp(v, "1.2") == 0) {
        *out = TLS1_2_VERSION;
        return PT_OK;
    }
    if (strcmp(v, "1.3") == 0) {
        *out = TLS1_3_VERSION;
        return PT_OK;
    }
    if (strcmp(v, "1.0") == 0 || strcmp(v, "1.1") == 0 || strcmp(v, "1") == 0)
        snprintf(err, errlen, "%s \"%s\" is not allowed: TLS 1.0 and 1.1 are never "
                 "negotiated (use \"1.2\" or \"1.3\")", what, v);
    else
        snprintf(err, errlen, "%s \"%s\" is not a TLS version (use \"1.2\" or \"1.3\")",
                 what, v);
    return PT_INVALID;
}

static bool is_tls13_suite(const char *tok)
{
    return strncmp(tok, "TLS_", 4) == 0;
}

/* Splits ciphers into the TLS <= 1.2 cipher string and the TLS 1.3 suite list, checks
 * every part on its own (OpenSSL silently skips unknown names inside a list) and
 * applies both. A list without TLS 1.3 names leaves the TLS 1.3 defaults, and the
 * reverse. */
static int apply_ciphers(SSL_CTX *c, const char *ciphers, char *err, size_t errlen)
{
    size_t n = strlen(ciphers);
    char *copy = malloc(n + 1), *old = malloc(n + 1), *new13 = malloc(n + 1);
    int rc = PT_NOMEM;

    if (!copy || !old || !new13)
        goto out;
    memcpy(copy, ciphers, n + 1);
    old[0] = new13[0] = '\0';
    rc = PT_INVALID;
    for (char *save = NULL, *tok = strtok_r(copy, ":, ", &save); tok;
         tok = strtok_r(NULL, ":, ", &save)) {
        char *list = is_tls13_suite(tok) ? new13 : old;
        bool alone = is_tls13_suite(tok) ? SSL_CTX_set_ciphersuites(c, tok) == 1
                   : strchr("!-+@", tok[0]) ? true /* modifiers select nothing alone */
                   : SSL_CTX_set_cipher_list(c, tok) == 1;
        if (!alone) {
            snprintf(err, errlen, "ciphers: \"%s\" matches no cipher (in \"%s\")", tok, ciphers);
            goto out;
        }
        if (list[0])
            strcat(list, ":");
        strcat(list, tok);
    }
    ERR_clear_error();
    SSL_CTX_set_ciphersuites(c, OSSL_default_ciphersuites());
    SSL_CTX_set_cipher_list(c, OSSL_default_cipher_list());
    if (old[0] && SSL_CTX_set_cipher_list(c, old) != 1) {
        snprintf(err, errlen, "ciphers: \"%s\" selects no TLS 1.2 cipher", old);
        goto out;
    }
    if (new13[0] && SSL_CTX_set_ciphersuites(c, new13) != 1) {
        snprintf(err, errlen, "ciphers: \"%s\" selects no TLS 1.3 suite", new13);
        goto out;
    }
    if (!old[0] && !new13[0]) {
        snprintf(err, errlen, "ciphers: \"%s\" names no cipher", ciphers);
        goto out;
    }
    rc = PT_OK;
out:
    if (rc == PT_NOMEM)
        snprintf(err, errlen, "ciphers: out of memory");
    ERR_clear_error();
    free(copy);
    free(old);
    free(new13);
    return rc;
}

static struct tls_ctx *ctx_new(bool server, const char *min_version, const char *ciphers,
                               char *err, size_t errlen)
{
    int min;
    struct tls_ctx *ctx = NULL;

    if (parse_version(min_version, "min_tls_version", &min, err, errlen) != PT_OK)
        return NULL;
    pthread_once(&bio_method_once, bio_method_init);
    if (!bio_method || !(ctx = calloc(1, sizeof *ctx))) {
        snprintf(err, errlen, "TLS: out of memory");
        return NULL;
    }
    ctx->server = server;
    ERR_clear_error();
    ctx->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx->ssl_ctx) {
        err_from_queue(err, errlen, "TLS: cannot create context");
        free(ctx);
        return NULL;
    }
    SSL_CTX *c = ctx->ssl_ctx;
    if (!SSL_CTX_set_min_proto_version(c, min)) {
        err_from_queue(err, errlen, "TLS: cannot set min_tls_version");
        goto fail;
    }
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION
                               | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1);
    /* Idle connections give back OpenSSL's 16 KB read and write buffers. */
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
    if (ciphers && apply_ciphers(c, ciphers, err, errlen) != PT_OK)
        goto fail;
    return ctx;
fail:
    SSL_CTX_free(c);
    free(ctx);
    return NULL;
}

struct tls_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file,
                                   const char *min_version, const char *ciphers,
                                   bool prefer_server_ciphers, char *err, size_t errlen)
{
    char prefix[512];

    if (!cert_file || !key_file) {
        snprintf(err, errlen, "TLS: cert_file and key_file are both required");
        return NULL;
    }
    struct tls_ctx *ctx = ctx_new(true, min_version, ciphers, err, errlen);
    if (!ctx)
        return NULL;
    SSL_CTX *c = ctx->ssl_ctx;
    if (prefer_server_ciphers)
        SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* No shared session cache (a lock across workers and memory per session);
     * resumption still works through stateless tickets, one per handshake. */
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(c, 1);
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(c, cert_file) != 1) {
        snprintf(prefix, sizeof prefix, "cert_file %s: cannot load certificate chain", cert_file);
        err_from_queue(err, errlen, prefix);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(c, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(prefix, sizeof prefix, "key_file %s: cannot load private key", key_file);
        err_from_queue(err, errlen, prefix);
        goto fail;
    }
    if (SSL_CTX_check_private_key(c) != 1) {
        snprintf(prefix, sizeof prefix, "key_file %s does not match cert_file %s",
                 key_file, cert_file);
        err_from_queue(err, errlen, prefix);
        goto fail;
    }
    return ctx;
fail:
    tls_ctx_free(ctx);
    return NULL;
}

struct tls_ctx *tls_client_ctx_new(const char *min_version, const char *ciphers,
                                   const char *ca_file, char *err, size_t errlen)
{
    char prefix[512];
    struct tls_ctx *ctx = ctx_new(false, min_version, ciphers, err, errlen);

    if (!ctx)
        return NULL;
    SSL_CTX *c = ctx->ssl_ctx;
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL); /* sessions that verify turn it on */
    /* DANE (RFC 7672) is per session (tls_session_new_dane); the context only
     * allows it. Sessions that do not enable it are unaffected. */
    if (SSL_CTX_dane_enable(c) <= 0) {
        err_from_queue(err, errlen, "TLS: cannot enable DANE");
        tls_ctx_free(ctx);
        return NULL;
    }
    ERR_clear_error();
    if (ca_file) {
        if (SSL_CTX_load_verify_file(c, ca_file) != 1) {
            snprintf(prefix, sizeof prefix, "ca_file %s: cannot load CA certificates", ca_file);
            err_from_queue(err, errlen, prefix);
            tls_ctx_free(ctx);
            return NULL;
        }
    } else if (SSL_CTX_set_default_verify_paths(c) != 1) {
        err_from_queue(err, errlen, "TLS: cannot load the system CA store");
        tls_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

int tls_client_ctx_set_max_version(struct tls_ctx *ctx, const char *max_version)
{
    char err[128];
    int max;

    if (!ctx || ctx->server || !max_version
        || parse_version(max_version, "max_tls_version", &max, err, sizeof err) != PT_OK)
        return PT_INVALID;
    return SSL_CTX_set_max_proto_version(ctx->ssl_ctx, max) == 1 ? PT_OK : PT_INVALID;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

/* ---------------------------------------------------------------- sessions */

static bool is_ip_literal(const char *host)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

/* Drained buffers that grew past TLS_IDLE_KEEP during a burst are given back, so an
 * idle connection holds small buffers only. */
static void trim(struct buf *b)
{
    if (b->len == 0 && b->cap > TLS_IDLE_KEEP)
        buf_free(b);
}

static void trim_in(struct tls_session *s)
{
    if (s->in_off == s->in.len) {
        s->in_off = 0;
        buf_reset(&s->in);
        trim(&s->in);
    }
}

static int write_all(struct tls_session *s, const void *plain, size_t len)
{
    size_t done;

    if (len == 0)
        return PT_OK;
    ERR_clear_error();
    /* Without SSL_MODE_ENABLE_PARTIAL_WRITE success means every byte was taken. */
    if (SSL_write_ex(s->ssl, plain, len, &done) == 1)
        return PT_OK;
    return fail(s, SSL_get_error(s->ssl, 0), "TLS write failed");
}

static int handshake_finished(struct tls_session *s)
{
    snprintf(s->desc, sizeof s->desc, "%s:%s", SSL_get_version(s->ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher(s->ssl)));
    enter_state(s, TLS_STATE_OPEN);
    int rc = write_all(s, s->pending.data, s->pending.len);
    buf_free(&s->pending);
    return rc;
}

static int drive_handshake(struct tls_session *s)
{
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1)
        return handshake_finished(s);
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return PT_OK;
    return fail(s, e, "TLS handshake failed");
}

/* A session in HANDSHAKE state with its SSL on our memory BIO; NULL when out of
 * memory (nothing left allocated). */
static struct tls_session *session_alloc(struct tls_ctx *ctx)
{
    struct tls_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    buf_init(&s->in, TLS_IN_MAX);
    buf_init(&s->out, 0);
    buf_init(&s->pending, TLS_PENDING_MAX);
    enter_state(s, TLS_STATE_HANDSHAKE);
    BIO *bio = NULL;
    if (!(s->ssl = SSL_new(ctx->ssl_ctx)) || !(bio = BIO_new(bio_method))) {
        ERR_clear_error();
        tls_session_free(s);
        return NULL;
    }
    BIO_set_data(bio, s);
    BIO_set_init(bio, 1);
    SSL_set_bio(s->ssl, bio, bio); /* one BIO as rbio and wbio: SSL takes the reference */
    return s;
}

struct tls_session *tls_session_new(struct tls_ctx *ctx, bool server, const char *sni,
                                    const char *verify_host)
{
    if (!ctx || server != ctx->server)
        return NULL;
    struct tls_session *s = session_alloc(ctx);
    if (!s)
        return NULL;
    if (server) {
        SSL_set_accept_state(s->ssl);
        return s;
    }

    SSL_set_connect_state(s->ssl);
    if (verify_host && *verify_host) {
        s->verify = true;
        SSL_set_verify(s->ssl, SSL_VERIFY_PEER, NULL);
        SSL_set_hostflags(s->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        int ok = is_ip_literal(verify_host)
                     ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), verify_host)
                     : SSL_set1_host(s->ssl, verify_host);
        if (ok != 1)
            goto fail;
    }
    const char *name = sni ? sni : verify_host;
    if (name && *name && !is_ip_literal(name) && SSL_set_tlsext_host_name(s->ssl, name) != 1)
        goto fail;
    drive_handshake(s); /* ClientHello into s->out; a failure shows at the first read */
    return s;
fail:
    ERR_clear_error();
    tls_session_free(s);
    return NULL;
}

struct tls_session *tls_session_new_dane(struct tls_ctx *ctx, const char *host,
                                         const struct tls_dane_rec *recs, int n)
{
    if (!ctx || ctx->server || !host || !*host || is_ip_literal(host) || n <= 0)
        return NULL;
    struct tls_session *s = session_alloc(ctx);
    if (!s)
        return NULL;
    SSL_set_connect_state(s->ssl);
    /* host is the reference name for DANE-TA(2) chains; DANE-EE(3) matches the key
     * alone, no name or validity checks (RFC 7672 §3.1.1) */
    if (SSL_dane_enable(s->ssl, host) <= 0)
        goto fail;
    SSL_dane_set_flags(s->ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    int usable = 0;
    for (int i = 0; i < n; i++)
        if (SSL_dane_tlsa_add(s->ssl, recs[i].usage, recs[i].selector, recs[i].mtype,
                              recs[i].data, recs[i].len) > 0)
            usable++;
    if (usable == 0)
        goto fail;
    s->verify = true;
    SSL_set_verify(s->ssl, SSL_VERIFY_PEER, NULL);
    if (SSL_set_tlsext_host_name(s->ssl, host) != 1)
        goto fail;
    drive_handshake(s);
    return s;
fail:
    ERR_clear_error();
    tls_session_free(s);
    return NULL;
}

void tls_session_free(struct tls_session *s)
{
    if (!s)
        return;
    SSL_free(s->ssl); /* frees the BIO too; it only points back at s */
    buf_free(&s->in);
    buf_free(&s->out);
    buf_free(&s->pending);
    free(s);
}

int tls_feed(struct tls_session *s, const void *cipher, size_t len)
{
    switch (s->state) {
    case TLS_STATE_FAILED:
        return PT_ERROR;
    case TLS_STATE_PEER_CLOSED:
    case TLS_STATE_CLOSED:
        return PT_OK; /* nothing may follow close_notify; ignore it */
    default:
        break;
    }
    if (s->in_off > 0) { /* move the partial record left over to the front */
        size_t rest = s->in.len - s->in_off;
        memmove(s->in.data, s->in.data + s->in_off, rest);
        s->in.len = rest;
        s->in.data[rest] = '\0';
        s->in_off = 0;
    }
    return buf_append(&s->in, cipher, len);
}

int tls_read(struct tls_session *s, struct buf *plain_out)
{
    int rc = PT_OK;

    switch (s->state) {
    case TLS_STATE_FAILED:
        return PT_ERROR;
    case TLS_STATE_PEER_CLOSED:
    case TLS_STATE_CLOSED:
        return PT_NOTFOUND;
    case TLS_STATE_HANDSHAKE:
        if ((rc = drive_handshake(s)) != PT_OK)
            return rc;
        if (s->state == TLS_STATE_HANDSHAKE) {
            trim_in(s);
            return PT_OK;
        }
        break; /* records right behind the handshake are decrypted below */
    default:
        break;
    }

    for (;;) {
        size_t room = TLS_RECORD_PLAIN_MAX, done;
        if (plain_out->max) {
            if (plain_out->len >= plain_out->max)
                break; /* full: the rest stays queued for the next call */
            if (plain_out->max - plain_out->len < room)
                room = plain_out->max - plain_out->len;
        }
        if ((rc = buf_reserve(plain_out, room)) != PT_OK)
            return rc;
        ERR_clear_error();
        if (SSL_read_ex(s->ssl, plain_out->data + plain_out->len, room, &done) == 1) {
            plain_out->len += done;
            plain_out->data[plain_out->len] = '\0';
            continue;
        }
        int e = SSL_get_error(s->ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            rc = PT_OK;
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            enter_state(s, s->state == TLS_STATE_SHUTDOWN ? TLS_STATE_CLOSED : TLS_STATE_PEER_CLOSED);
            s->in_off = s->in.len; /* nothing may follow close_notify: drop it */
            rc = PT_NOTFOUND;
            break;
        }
        return fail(s, e, "TLS read failed");
    }
    trim_in(s);
    return rc;
}

int tls_write(struct tls_session *s, const void *plain, size_t len)
{
    switch (s->state) {
    case TLS_STATE_HANDSHAKE:
        return buf_append(&s->pending, plain, len);
    case TLS_STATE_OPEN:
    case TLS_STATE_PEER_CLOSED:
        return write_all(s, plain, len);
    default:
        return PT_ERROR;
    }
}

int tls_take_output(struct tls_session *s, struct buf *cipher_out)
{
    if (s->out.len == 0)
        return PT_OK;
    if (cipher_out->len == 0 && (!cipher_out->max || s->out.len <= cipher_out->max)) {
        struct buf mine = s->out; /* swap storage, each side keeps its own bound */
        s->out.data = cipher_out->data;
        s->out.cap = cipher_out->cap;
        s->out.len = 0;
        cipher_out->data = mine.data;
        cipher_out->cap = mine.cap;
        cipher_out->len = mine.len;
    } else {
        int rc = buf_append(cipher_out, s->out.data, s->out.len);
        if (rc != PT_OK)
            return rc;
        buf_reset(&s->out);
    }
    trim(&s->out);
    return PT_OK;
}

int tls_shutdown(struct tls_session *s)
{
    switch (s->state) {
    case TLS_STATE_HANDSHAKE:
        enter_state(s, TLS_STATE_CLOSED);
        return PT_OK;
    case TLS_STATE_OPEN:
    case TLS_STATE_PEER_CLOSED:
        break;
    default: /* already closing, closed or failed: nothing (more) to send */
        return PT_OK;
    }
    ERR_clear_error();
    int r = SSL_shutdown(s->ssl); /* 0: sent ours, 1: both directions closed */
    if (r < 0)
        return fail(s, SSL_get_error(s->ssl, r), "TLS shutdown failed");
    enter_state(s, s->state == TLS_STATE_PEER_CLOSED ? TLS_STATE_CLOSED : TLS_STATE_SHUTDOWN);
    return PT_OK;
}

bool tls_handshake_done(const struct tls_session *s)
{
    return s->desc[0] != '\0';
}

bool tls_peer_closed(const struct tls_session *s)
{
    return s->state == TLS_STATE_PEER_CLOSED || (s->state == TLS_STATE_CLOSED && SSL_get_shutdown(s->ssl)
                                           & SSL_RECEIVED_SHUTDOWN);
}

bool tls_failed(const struct tls_session *s)
{
    return s->state == TLS_STATE_FAILED;
}

const char *tls_describe(const struct tls_session *s)
{
    return s->desc[0] ? s->desc : NULL;
}

const char *tls_error(const struct tls_session *s)
{
    return s->err;
}

const char *tls_state_name(const struct tls_session *s)
{
    return tls_state_names[s->state];
}
