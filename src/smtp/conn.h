/* A byte-stream connection on a libuv loop: buffered input for the protocol code,
 * coalesced output (one write per loop turn), deadline timer, deferred close. The
 * SMTP server and client sessions talk only to this interface, so TLS can slot in
 * underneath without touching protocol code. Never frees itself inside a callback
 * before the owner's close callback has run.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_CONN_H
#define PETREL_SMTP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "util/buf.h"

struct conn;
struct conn_ops {
    void (*on_data)(struct conn *c);           /* new bytes appended to c->in */
    void (*on_eof)(struct conn *c, int err);   /* peer closed (err 0) or I/O error (uv code) */
    void (*on_timeout)(struct conn *c);        /* deadline passed */
    void (*on_closed)(struct conn *c);         /* handles closed: the owner may free now */
    void (*on_connect)(struct conn *c, int status); /* client side: connect result */
    void (*on_tls)(struct conn *c);            /* optional: TLS handshake completed */
};

struct tls_ctx;
struct tls_session;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_write_t wreq;
    struct buf in;             /* unread input; the owner consumes with buf_consume */
    struct buf out;            /* queued output, flushed by conn_flush */
    struct buf wbuf;           /* output currently being written */
    struct tls_session *tls;   /* NULL = plain; else in/out are plaintext */
    struct buf raw;            /* TLS: ciphertext just read */
    struct buf wire;           /* TLS: ciphertext (and pre-TLS plaintext) waiting to be written */
    bool tls_done;             /* handshake completed */
    bool tls_failed;           /* handshake or record error: see conn_tls_error */
    const struct conn_ops *ops;
    void *owner;
    size_t in_max;             /* stop reading when in.len reaches this (back-pressure) */
    bool reading, writing, closing, close_after_write, paused;
    int pending_handles;
};

/* Initializes c on loop (tcp + timer handles). The caller owns c's memory and
 * must keep it until ops->on_closed. */
int conn_init(struct conn *c, uv_loop_t *loop, const struct conn_ops *ops, void *owner);
/* Takes fd, a connection accepted by the caller (non-blocking): c owns it from
 * here, also on PT_ERROR (then closed). */
int conn_accept_fd(struct conn *c, int fd);
int conn_connect(struct conn *c, const struct sockaddr *sa);
int conn_start(struct conn *c);               /* start reading */
void conn_pause(struct conn *c, bool paused);  /* stop/resume handing input to on_data */
int conn_send(struct conn *c, const void *p, size_t n);  /* queue; see conn_flush */
int conn_sendf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conn_flush(struct conn *c);               /* start writing queued output */
bool conn_write_pending(const struct conn *c);
void conn_set_timeout(struct conn *c, double secs); /* 0 = none; replaces the current deadline */
/* Flushes pending output (if graceful) and closes; on_closed runs later. Idempotent. */
void conn_close(struct conn *c, bool graceful);
/* Starts TLS on this connection from now on: output already queued goes out in
 * clear first; input not yet consumed is discarded (nothing pipelined before the
 * handshake may be taken as if it came over TLS). Server or client side; on the
 * client, verify_host != NULL checks the chain and that name. */
int conn_start_tls(struct conn *c, struct tls_ctx *ctx, bool server, const char *sni,
                   const char *verify_host);
/* The same with a client session made by the caller (e.g. tls_session_new_dane);
 * t is taken (freed on failure too). */
int conn_start_tls_session(struct conn *c, struct tls_session *t);
/* Hands back bytes read before conn_start_tls as if just read from the socket
 * (implicit TLS behind a PROXY header: the ClientHello may arrive with the
 * header). p is copied. May call ops->on_eof, like a read. */
void conn_feed_raw(struct conn *c, const void *p, size_t n);
const char *conn_tls_describe(const struct conn *c); /* "TLSv1.3:CIPHER" or NULL */
const char *conn_tls_error(const struct conn *c);    /* "" if none */
int conn_peer(const struct conn *c, struct sockaddr_storage *ss);
int conn_local(const struct conn *c, struct sockaddr_storage *ss);

#endif
