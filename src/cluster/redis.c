/* Blocking Redis connection; see redis.h. hiredis gives the RESP encoder and
 * reader; the socket (and OpenSSL for rediss://, which Debian's hiredis 0.14 lacks)
 * is ours, non-blocking with poll() deadlines so no call waits past its timeout.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cluster/redis.h"
#include "util/result.h"

#define REDIS_DEFAULT_PORT 6379
#define REDIS_READ_CHUNK   (64u << 10)
#define REDIS_DB_MAX       1000000

struct redis_conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    redisReader *reader;
    char *out;                 /* buffered commands */
    size_t outlen, outcap;
    double timeout;
    bool dead;
    char err[256];
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- URL --------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Copies [s, s+n) into out (cap bytes), decoding %XX. PT_INVALID on a bad escape,
 * a NUL or an overflow. */
static int unescape(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return PT_INVALID;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return PT_INVALID;
            c = h * 16 + l;
            i += 2;
        }
        if (c == 0 || k + 1 >= cap)
            return PT_INVALID;
        out[k++] = (char)c;
    }
    out[k] = 0;
    return PT_OK;
}

int redis_url_parse(const char *url, struct redis_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = REDIS_DEFAULT_PORT;
    const char *p;
    if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncmp(url, "rediss://", 9) == 0) {
        p = url + 9;
        out->tls = true;
    } else {
        snprintf(err, errlen, "must start with redis:// or rediss://");
        return PT_INVALID;
    }
    size_t total = strlen(p);
    const char *end = p + total;
    const char *q = memchr(p, '?', total);
    const char *auth_end = NULL;
    /* the last '@' before the path or query ends the credentials (a password may
     * hold '@' only escaped, but be lenient about the ones before) */
    const char *stop = q ? q : end;
    for (const char *s = p; s < stop; s++)
        if (*s == '@')
            auth_end = s;
    if (auth_end) {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        if (!colon) {
            snprintf(err, errlen, "credentials must be user:password@ or :password@");
            return PT_INVALID;
        }
        if (unescape(p, (size_t)(colon - p), out->user, sizeof out->user) != PT_OK ||
            unescape(colon + 1, (size_t)(auth_end - colon - 1), out->password,
                     sizeof out->password) != PT_OK) {
            snprintf(err, errlen, "bad user or password (too long or bad %%-escape)");
            return PT_INVALID;
        }
        p = auth_end + 1;
    }
    size_t rest = stop > p ? (size_t)(stop - p) : 0;
    const char *slash = rest ? memchr(p, '/', rest) : NULL;
    const char *hp_end = slash ? slash : stop;
    const char *port_colon = NULL;
    if (p < hp_end && *p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hp_end - p));
        if (!rb || rb == p + 1 || (size_t)(rb - p - 1) > REDIS_HOST_MAX) {
            snprintf(err, errlen, "bad bracketed host");
            return PT_INVALID;
        }
        memcpy(out->host, p + 1, (size_t)(rb - p - 1));
        if (rb + 1 < hp_end) {
            if (rb[1] != ':') {
                snprintf(err, errlen, "junk after ']'");
                return PT_INVALID;
            }
            port_colon = rb + 1;
        }
    } else {
        port_colon = memchr(p, ':', (size_t)(hp_end - p));
        const char *he = port_colon ? port_colon : hp_end;
        if (he == p || (size_t)(he - p) > REDIS_HOST_MAX) {
            snprintf(err, errlen, "missing or too long host");
            return PT_INVALID;
        }
        memcpy(out->host, p, (size_t)(he - p));
        for (const char *s = out->host; *s; s++)
            if (*s == '@' || *s == ' ' || *s == '[' || *s == ']') {
                snprintf(err, errlen, "bad character in host");
                return PT_INVALID;
            }
    }
    if (port_colon) {
        long v = 0;
        const char *s = port_colon + 1;
        if (s == hp_end) {
            snprintf(err, errlen, "empty port");
            return PT_INVALID;
        }
        for (; s < hp_end; s++) {
            if (*s < '0' || *s > '9' || (v = v * 10 + (*s - '0')) > 65535) {
                snprintf(err, errlen, "bad port");
                return PT_INVALID;
            }
        }
        if (v == 0) {
            snprintf(err, errlen, "bad port");
            return PT_INVALID;
        }
        out->port = (uint16_t)v;
    }
    if (slash && slash + 1 < stop) {
        long v = 0;
        for (const char *s = slash + 1; s < stop; s++) {
            if (*s < '0' || *s > '9' || (v = v * 10 + (*s - '0')) > REDIS_DB_MAX) {
                snprintf(err, errlen, "the path must be a database number");
                return PT_INVALID;
            }
        }
        out->db = (int)v;
    }
    if (q) {
        const char *s = q + 1;
        if (strncmp(s, "ca_file=", 8) != 0 || !s[8]) {
            snprintf(err, errlen, "the only query parameter is ca_file=PATH");
            return PT_INVALID;
        }
        if (unescape(s + 8, strlen(s + 8), out->ca_file, sizeof out->ca_file) != PT_OK) {
            snprintf(err, errlen, "bad ca_file");
            return PT_INVALID;
        }
        if (!out->tls) {
            snprintf(err, errlen, "ca_file needs rediss://");
            return PT_INVALID;
        }
    }
    return PT_OK;
}

void redis_url_text(const struct redis_url *u, char *out, size_t outlen)
{
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(out, outlen, "%s://%s%s%s%s%s%s:%u/%d", u->tls ? "rediss" : "redis", u->user,
             u->password[0] ? ":***" : "", u->user[0] || u->password[0] ? "@" : "",
             v6 ? "[" : "", u->host, v6 ? "]" : "", (unsigned)u->port, u->db);
}

/* ---- socket I/O -------------------------------------------------------- */

static void fail(struct redis_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!c->dead)
        vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    c->dead = true;
}

/* Waits until fd is readable (want_read) or writable before deadline. */
static int wait_fd(struct redis_conn *c, bool want_read, double deadline)
{
    for (;;) {
        double left = deadline - mono_now();
        if (left <= 0) {
            fail(c, "timed out");
            return PT_ERROR;
        }
        struct pollfd pfd = { .fd = c->fd, .events = want_read ? POLLIN : POLLOUT };
        int r = poll(&pfd, 1, (int)(left * 1000.0) + 1);
        if (r > 0)
            return PT_OK;
        if (r < 0 && errno != EINTR) {
            fail(c, "poll: %s", strerror(errno));
            return PT_ERROR;
        }
    }
}

static int io_write_all(struct redis_conn *c, const char *p, size_t n, double deadline)
{
    while (n > 0) {
        ssize_t w;
        bool want_read = false;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, n > (1u << 30) ? (1 << 30) : (int)n);
            if (r > 0) {
                w = r;
            } else {
                int e = SSL_get_error(c->ssl, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                    fail(c, "TLS write failed");
                    return PT_ERROR;
                }
                want_read = e == SSL_ERROR_WANT_READ;
                w = -1;
                errno = EAGAIN;
            }
        } else {
            w = send(c->fd, p, n, MSG_NOSIGNAL);
        }
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            fail(c, "write: %s", strerror(errno));
            return PT_ERROR;
        }
        if (wait_fd(c, want_read, deadline) != PT_OK)
            return PT_ERROR;
    }
    return PT_OK;
}

/* Reads some bytes into the reader. */
static int io_read_some(struct redis_conn *c, double deadline)
{
    char buf[REDIS_READ_CHUNK];
    for (;;) {
        ssize_t r;
        bool want_read = true;
        if (c->ssl) {
            ERR_clear_error();
            int k = SSL_read(c->ssl, buf, sizeof buf);
            if (k > 0) {
                r = k;
            } else {
                int e = SSL_get_error(c->ssl, k);
                if (e == SSL_ERROR_ZERO_RETURN) {
                    fail(c, "connection closed by redis");
                    return PT_ERROR;
                }
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                    fail(c, "TLS read failed");
                    return PT_ERROR;
                }
                want_read = e == SSL_ERROR_WANT_READ;
                r = -1;
                errno = EAGAIN;
            }
        } else {
            r = recv(c->fd, buf, sizeof buf, 0);
        }
        if (r > 0) {
            if (redisReaderFeed(c->reader, buf, (size_t)r) != REDIS_OK) {
                fail(c, "protocol error");
                return PT_ERROR;
            }
            return PT_OK;
        }
        if (r == 0) {
            fail(c, "connection closed by redis");
            return PT_ERROR;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            fail(c, "read: %s", strerror(errno));
            return PT_ERROR;
        }
        if (wait_fd(c, want_read, deadline) != PT_OK)
            return PT_ERROR;
    }
}

int redis_flush(struct redis_conn *c)
{
    if (c->dead)
        return PT_ERROR;
    if (c->outlen == 0)
        return PT_OK;
    int rc = io_write_all(c, c->out, c->outlen, mono_now() + c->timeout);
    c->outlen = 0;
    return rc;
}

int redis_read(struct redis_conn *c, redisReply **out)
{
    *out = NULL;
    if (redis_flush(c) != PT_OK)
        return PT_ERROR;
    double deadline = mono_now() + c->timeout;
    for (;;) {
        void *r = NULL;
        if (redisReaderGetReply(c->reader, &r) != REDIS_OK) {
            fail(c, "protocol error");
            return PT_ERROR;
        }
        if (r) {
            *out = r;
            return PT_OK;
        }
        if (io_read_some(c, deadline) != PT_OK)
            return PT_ERROR;
    }
}

static int out_add(struct redis_conn *c, const char *cmd, size_t len)
{
    if (c->outlen + len > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 4096;
        while (cap < c->outlen + len)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p)
            return PT_NOMEM;
        c->out = p;
        c->outcap = cap;
    }
    memcpy(c->out + c->outlen, cmd, len);
    c->outlen += len;
    return PT_OK;
}

int redis_append(struct redis_conn *c, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return PT_NOMEM;
    int rc = out_add(c, cmd, (size_t)len);
    free(cmd);
    return rc;
}

int redis_appendf(struct redis_conn *c, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0)
        return PT_NOMEM;
    int rc = out_add(c, cmd, (size_t)len);
    free(cmd);
    return rc;
}

redisReply *redis_cmdf(struct redis_conn *c, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0)
        return NULL;
    int rc = out_add(c, cmd, (size_t)len);
    free(cmd);
    redisReply *r = NULL;
    if (rc != PT_OK || redis_read(c, &r) != PT_OK)
        return NULL;
    return r;
}

redisReply *redis_cmdv(struct redis_conn *c, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = NULL;
    if (redis_append(c, argc, argv, lens) != PT_OK || redis_read(c, &r) != PT_OK)
        return NULL;
    return r;
}

void redis_set_timeout(struct redis_conn *c, double timeout_s)
{
    c->timeout = timeout_s;
}

bool redis_dead(const struct redis_conn *c)
{
    return c->dead;
}

const char *redis_error(const struct redis_conn *c)
{
    return c->err[0] ? c->err : "no error";
}

/* ---- connect ----------------------------------------------------------- */

static int tcp_connect(struct redis_conn *c, const struct redis_url *u, double deadline)
{
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)u->port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int g = getaddrinfo(u->host, port, &hints, &res);
    if (g != 0) {
        fail(c, "cannot resolve %s: %s", u->host, gai_strerror(g));
        return PT_ERROR;
    }
    int rc = PT_ERROR;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            snprintf(c->err, sizeof c->err, "connect: %s", strerror(errno));
            close(fd);
            continue;
        }
        c->fd = fd;
        c->dead = false;
        if (wait_fd(c, false, deadline) != PT_OK) {
            close(fd);
            c->fd = -1;
            continue;
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            snprintf(c->err, sizeof c->err, "connect: %s", strerror(soerr));
            close(fd);
            c->fd = -1;
            continue;
        }
        rc = PT_OK;
        break;
    }
    freeaddrinfo(res);
    if (rc != PT_OK)
        c->dead = true;
    return rc;
}

static int tls_start(struct redis_conn *c, const struct redis_url *u, double deadline)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx) {
        fail(c, "TLS: out of memory");
        return PT_ERROR;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    int ok = u->ca_file[0] ? SSL_CTX_load_verify_locations(c->ctx, u->ca_file, NULL)
                           : SSL_CTX_set_default_verify_paths(c->ctx);
    if (ok != 1) {
        fail(c, "TLS: cannot load CA %s", u->ca_file[0] ? u->ca_file : "(system store)");
        return PT_ERROR;
    }
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl) {
        fail(c, "TLS: out of memory");
        return PT_ERROR;
    }
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, u->host);
    SSL_set1_host(c->ssl, u->host);
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return PT_OK;
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            long v = SSL_get_verify_result(c->ssl);
            if (v != X509_V_OK)
                fail(c, "TLS: certificate verification failed: %s",
                     X509_verify_cert_error_string(v));
            else
                fail(c, "TLS handshake failed");
            return PT_ERROR;
        }
        if (wait_fd(c, e == SSL_ERROR_WANT_READ, deadline) != PT_OK)
            return PT_ERROR;
    }
}

/* Runs a setup command; PT_OK on a non-error reply. */
static int setup_cmd(struct redis_conn *c, redisReply *r, const char *what)
{
    if (!r) {
        fail(c, "%s: %s", what, c->err);
        return PT_ERROR;
    }
    int rc = PT_OK;
    if (r->type == REDIS_REPLY_ERROR) {
        char e[200];
        snprintf(e, sizeof e, "%s refused: %s", what, r->str);
        c->dead = false;
        fail(c, "%s", e);
        rc = PT_ERROR;
    }
    freeReplyObject(r);
    return rc;
}

struct redis_conn *redis_connect(const struct redis_url *u, double timeout_s, char *err,
                                 size_t errlen)
{
    struct redis_conn *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->timeout = timeout_s;
    c->reader = redisReaderCreate();
    double deadline = mono_now() + timeout_s;
    if (!c->reader) {
        fail(c, "out of memory");
        goto bad;
    }
    if (tcp_connect(c, u, deadline) != PT_OK)
        goto bad;
    if (u->tls && tls_start(c, u, deadline) != PT_OK)
        goto bad;
    if (u->password[0]) {
        redisReply *r = u->user[0] ? redis_cmdf(c, "AUTH %s %s", u->user, u->password)
                                   : redis_cmdf(c, "AUTH %s", u->password);
        if (setup_cmd(c, r, "AUTH") != PT_OK)
            goto bad;
    }
    if (u->db != 0 && setup_cmd(c, redis_cmdf(c, "SELECT %d", u->db), "SELECT") != PT_OK)
        goto bad;
    return c;
bad:
    snprintf(err, errlen, "%s:%u: %s", u->host, (unsigned)u->port, c->err);
    redis_close(c);
    return NULL;
}

void redis_close(struct redis_conn *c)
{
    if (!c)
        return;
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader)
        redisReaderFree(c->reader);
    free(c->out);
    free(c);
}
