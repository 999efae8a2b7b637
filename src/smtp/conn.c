/* Byte-stream connection over libuv TCP; see conn.h. Output is coalesced into one
 * uv_write per flush; input accumulates in c->in up to in_max, then reading stops.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtp/conn.h"
#include "tls/tls.h"
#include "util/result.h"

#define CONN_READ_CHUNK 65536

static void conn_on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->pending_handles == 0) {
        buf_free(&c->in);
        buf_free(&c->out);
        buf_free(&c->wbuf);
        buf_free(&c->raw);
        buf_free(&c->wire);
        tls_session_free(c->tls);
        c->tls = NULL;
        if (c->ops->on_closed)
            c->ops->on_closed(c);
    }
}

int conn_init(struct conn *c, uv_loop_t *loop, const struct conn_ops *ops, void *owner)
{
    memset(c, 0, sizeof *c);
    c->ops = ops;
    c->owner = owner;
    c->in_max = 1 << 20;
    buf_init(&c->in, 0);
    buf_init(&c->out, 0);
    buf_init(&c->wbuf, 0);
    buf_init(&c->raw, 0);
    buf_init(&c->wire, 0);
    if (uv_tcp_init(loop, &c->tcp))
        return PT_ERROR;
    c->tcp.data = c;
    c->pending_handles++;
    if (uv_timer_init(loop, &c->timer)) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, conn_on_handle_closed);
        return PT_ERROR;
    }
    c->timer.data = c;
    c->pending_handles++;
    return PT_OK;
}

static void conn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct conn *c = h->data;
    struct buf *dst = c->tls ? &c->raw : &c->in;
    if (buf_reserve(dst, CONN_READ_CHUNK) != PT_OK) {
        b->base = NULL;
        b->len = 0;
        return;
    }
    b->base = dst->data + dst->len;
    b->len = dst->cap - dst->len - 1;
}

/* Decrypts what was just read into c->in. Returns 0 to go on, 1 when the
 * connection ended (on_eof already called). */
static int conn_tls_input(struct conn *c)
{
    int rc = tls_feed(c->tls, c->raw.data, c->raw.len);
    buf_reset(&c->raw);
    if (rc == PT_OK)
        rc = tls_read(c->tls, &c->in);
    conn_flush(c); /* handshake records, alerts */
    if (!c->tls_done && tls_handshake_done(c->tls) && rc == PT_OK) {
        c->tls_done = true;
        if (c->ops->on_tls)
            c->ops->on_tls(c);
        if (c->closing)
            return 1;
    }
    if (rc == PT_NOTFOUND) {
        c->ops->on_eof(c, 0);
        return 1;
    }
    if (rc != PT_OK) {
        c->tls_failed = true;
        c->ops->on_eof(c, UV_EPROTO);
        return 1;
    }
    return 0;
}

static void conn_update_reading(struct conn *c);

static void conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (c->closing)
        return;
    if (n > 0) {
        if (c->tls) {
            c->raw.len += (size_t)n;
            size_t before = c->in.len;
            if (conn_tls_input(c))
                return;
            if (c->in.len == before) {
                conn_update_reading(c);
                return;
            }
        } else {
            c->in.len += (size_t)n;
            c->in.data[c->in.len] = 0;
        }
        if (!c->paused)
            c->ops->on_data(c);
        if (!c->closing)
            conn_update_reading(c);
        return;
    }
    if (n == 0)
        return;
    c->ops->on_eof(c, n == UV_EOF ? 0 : (int)n);
}

static void conn_update_reading(struct conn *c)
{
    /* A paused connection keeps reading into c->in (bounded by in_max): stopping
     * and restarting the read would cost two epoll_ctl calls per message, and a
     * client waiting for our reply sends nothing anyway. */
    bool want = !c->closing && c->in.len < c->in_max;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

int conn_accept_fd(struct conn *c, int fd)
{
    if (uv_tcp_open(&c->tcp, fd) == 0)
        return PT_OK;
    close(fd);
    return PT_ERROR;
}

static void conn_on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closing)
        return;
    c->ops->on_connect(c, status);
}

int conn_connect(struct conn *c, const struct sockaddr *sa)
{
    c->creq.data = c;
    return uv_tcp_connect(&c->creq, &c->tcp, sa, conn_on_connect) ? PT_ERROR : PT_OK;
}

int conn_start(struct conn *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    conn_update_reading(c);
    return c->reading ? PT_OK : PT_ERROR;
}

void conn_pause(struct conn *c, bool paused)
{
    if (c->closing)
        return;
    bool was = c->paused;
    c->paused = paused;
    conn_update_reading(c);
    if (was && !paused && c->in.len)
        c->ops->on_data(c);
}

int conn_send(struct conn *c, const void *p, size_t n)
{
    if (c->closing)
        return PT_ERROR;
    return buf_append(&c->out, p, n);
}

int conn_sendf(struct conn *c, const char *fmt, ...)
{
    if (c->closing)
        return PT_ERROR;
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vappendf(&c->out, fmt, ap);
    va_end(ap);
    return rc;
}

static void conn_really_close(struct conn *c);

static void conn_on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->writing = false;
    buf_reset(&c->wbuf);
    if (status < 0) {
        if (!c->closing)
            c->ops->on_eof(c, status);
        else if (c->close_after_write)
            conn_really_close(c);
        return;
    }
    if (c->out.len || c->wire.len) {
        conn_flush(c);
        return;
    }
    if (c->close_after_write)
        conn_really_close(c);
}

void conn_flush(struct conn *c)
{
    if (c->tls) {
        if (c->out.len) {
            if (tls_write(c->tls, c->out.data, c->out.len) != PT_OK)
                c->tls_failed = true;
            buf_reset(&c->out);
        }
        tls_take_output(c->tls, &c->wire);
    }
    struct buf *w = c->tls ? &c->wire : &c->out;
    if (c->writing || w->len == 0 || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    /* Try the cheap synchronous path first; queue the remainder. */
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n > 0)
        buf_consume(w, (size_t)n);
    if (w->len == 0) {
        if (c->close_after_write)
            conn_really_close(c);
        return;
    }
    struct buf tmp = c->wbuf;
    c->wbuf = *w;
    *w = tmp;
    buf_reset(w);
    b = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write)) {
        buf_reset(&c->wbuf);
        if (c->close_after_write)
            conn_really_close(c);
        return;
    }
    c->writing = true;
}

bool conn_write_pending(const struct conn *c)
{
    return c->writing || c->out.len || c->wire.len;
}

static int start_with(struct conn *c, struct tls_session *t);

int conn_start_tls(struct conn *c, struct tls_ctx *ctx, bool server, const char *sni,
                   const char *verify_host)
{
    if (c->tls || c->closing)
        return PT_ERROR;
    struct tls_session *t = tls_session_new(ctx, server, sni, verify_host);
    if (!t)
        return PT_NOMEM;
    return start_with(c, t);
}

int conn_start_tls_session(struct conn *c, struct tls_session *t)
{
    if (c->tls || c->closing) {
        tls_session_free(t);
        return PT_ERROR;
    }
    return start_with(c, t);
}

static int start_with(struct conn *c, struct tls_session *t)
{
    /* what is queued in clear (the "220 Ready" reply) goes out first, in clear */
    if (c->out.len) {
        buf_append(&c->wire, c->out.data, c->out.len);
        buf_reset(&c->out);
    }
    buf_reset(&c->in);
    c->tls = t;
    c->tls_done = false;
    conn_flush(c); /* client: the ClientHello */
    return PT_OK;
}

void conn_feed_raw(struct conn *c, const void *p, size_t n)
{
    if (c->closing || n == 0)
        return;
    if (!c->tls) {
        if (buf_append(&c->in, p, n) == PT_OK && !c->paused)
            c->ops->on_data(c);
        return;
    }
    if (buf_append(&c->raw, p, n) != PT_OK) {
        c->ops->on_eof(c, UV_ENOMEM);
        return;
    }
    size_t before = c->in.len;
    if (conn_tls_input(c))
        return;
    if (c->in.len != before && !c->paused)
        c->ops->on_data(c);
}

const char *conn_tls_describe(const struct conn *c)
{
    return c->tls && c->tls_done ? tls_describe(c->tls) : NULL;
}

const char *conn_tls_error(const struct conn *c)
{
    return c->tls ? tls_error(c->tls) : "";
}

static void conn_on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (!c->closing)
        c->ops->on_timeout(c);
}

void conn_set_timeout(struct conn *c, double secs)
{
    if (uv_is_closing((uv_handle_t *)&c->timer))
        return;
    uv_timer_stop(&c->timer);
    if (secs > 0)
        uv_timer_start(&c->timer, conn_on_timer, (uint64_t)(secs * 1000.0 + 0.5), 0);
}

static void conn_really_close(struct conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_close((uv_handle_t *)&c->timer, conn_on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_on_handle_closed);
}

static void conn_on_close_timer(uv_timer_t *t)
{
    conn_really_close(t->data);
}

void conn_close(struct conn *c, bool graceful)
{
    if (c->closing) {
        if (!graceful)
            conn_really_close(c);
        return;
    }
    c->closing = true;
    if (c->tls && !c->tls_done)
        graceful = false; /* nothing queued can pass an unfinished handshake */
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    uv_timer_stop(&c->timer);
    if (graceful && c->tls && !c->tls_failed) {
        /* an orderly close ends TLS with a close_notify after what is queued (RFC
         * 8446 6.1): without it the peer cannot tell our close from a truncation */
        if (c->out.len && tls_write(c->tls, c->out.data, c->out.len) != PT_OK)
            c->tls_failed = true;
        buf_reset(&c->out);
        if (!c->tls_failed && tls_shutdown(c->tls) == PT_OK)
            tls_take_output(c->tls, &c->wire);
    }
    if (graceful && conn_write_pending(c)) {
        c->close_after_write = true;
        /* bound the time a stuck peer can hold us */
        uv_timer_start(&c->timer, conn_on_close_timer, 5000, 0);
        conn_flush(c);
        return;
    }
    conn_really_close(c);
}

int conn_peer(const struct conn *c, struct sockaddr_storage *ss)
{
    int len = sizeof *ss;
    return uv_tcp_getpeername(&c->tcp, (struct sockaddr *)ss, &len) ? PT_ERROR : PT_OK;
}

int conn_local(const struct conn *c, struct sockaddr_storage *ss)
{
    int len = sizeof *ss;
    return uv_tcp_getsockname(&c->tcp, (struct sockaddr *)ss, &len) ? PT_ERROR : PT_OK;
}
