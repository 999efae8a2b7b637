/* TLS engine over in-memory buffers: the caller feeds ciphertext from the network and
 * sends the ciphertext it produces. Never touches a socket, never blocks, never
 * negotiates TLS 1.0/1.1, renegotiation or compression.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_TLS_TLS_H
#define PETREL_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

/*
 * Use from a connection layer, per loop turn:
 *
 *   on socket read:   tls_feed(s, bytes, n); rc = tls_read(s, &plain);
 *                     hand new plaintext to the protocol; then tls_take_output + send.
 *   to send:          tls_write(s, text, n); tls_take_output(s, &out); send out.
 *   to close:         tls_shutdown(s); tls_take_output(s, &out); send; close the socket.
 *
 * Every call that can produce ciphertext (tls_session_new for a client, tls_read,
 * tls_write, tls_shutdown) is to be followed by tls_take_output: handshake messages,
 * session tickets, key updates and alerts all leave through it. Even after an error
 * there may be an alert to send before closing.
 *
 * Results use util/result.h: PT_OK, PT_ERROR (fatal, see tls_error), PT_NOMEM,
 * PT_TOOLONG (a bound was hit), PT_NOTFOUND (peer sent close_notify, see tls_read).
 * PT_AGAIN is never returned: "need more input" is PT_OK with nothing new.
 *
 * Threads: a tls_ctx is immutable after creation and may be shared by every worker
 * thread; a tls_session belongs to one thread.
 */

#define TLS_IN_MAX (1024 * 1024)         /* ciphertext fed but not yet decrypted */
#define TLS_PENDING_MAX (8 * 1024 * 1024) /* plaintext written before the handshake ended */
#define TLS_IDLE_KEEP (32 * 1024)        /* drained buffers above this size are freed */

struct tls_ctx;

/* Server context: certificate chain (PEM, leaf first) and private key. min_version is
 * "1.2" or "1.3" (NULL = "1.2"); "1.0" and "1.1" are refused. ciphers (NULL = OpenSSL
 * defaults) is an OpenSSL cipher string for TLS <= 1.2, in which TLS 1.3 suite names
 * (TLS_AES_128_GCM_SHA256...) may be mixed: those configure TLS 1.3; each part that
 * matches nothing is an error naming it. On failure returns NULL and writes a message
 * naming the file or option into err (errlen bytes, always NUL-terminated). */
struct tls_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file,
                                   const char *min_version, const char *ciphers,
                                   bool prefer_server_ciphers, char *err, size_t errlen);

/* Client context. ca_file: PEM bundle trusted for verification (NULL = the system
 * store). Whether a session verifies is chosen per session (tls_session_new). */
struct tls_ctx *tls_client_ctx_new(const char *min_version, const char *ciphers,
                                   const char *ca_file, char *err, size_t errlen);

/* Caps the protocol version of a client context ("1.2" or "1.3"); for tests and
 * interoperability work-arounds. Call before creating sessions. PT_OK or PT_INVALID. */
int tls_client_ctx_set_max_version(struct tls_ctx *ctx, const char *max_version);

/* Frees ctx (NULL ok). Each session holds its own reference to the OpenSSL context,
 * so freeing ctx while sessions live (a config reload) is safe: the context goes away
 * with the last of them. */
void tls_ctx_free(struct tls_ctx *ctx);

struct tls_session;

/* A new session on ctx (borrowed; the session takes its own reference). server must
 * match the kind of ctx. Client only: sni is the name sent in the server_name
 * extension (NULL = verify_host; IP literals are never sent); verify_host non-NULL
 * requires a certificate chain trusted by the context and naming verify_host (a DNS
 * name, or an IP literal matched against IP SANs); NULL = no verification at all
 * (outbound policies "may" and "encrypt"). A client session has its ClientHello ready
 * for tls_take_output on return (a failure to start shows at the first tls_read).
 * NULL on allocation failure, an unusable host name or a mismatched ctx. */
struct tls_session *tls_session_new(struct tls_ctx *ctx, bool server, const char *sni,
                                    const char *verify_host);
void tls_session_free(struct tls_session *s); /* NULL ok; sends nothing */

/* One TLSA record (RFC 6698) for tls_session_new_dane; data borrowed for the call. */
struct tls_dane_rec {
    unsigned char usage, selector, mtype;
    const unsigned char *data;
    size_t len;
};
/* A client session authenticated by DANE (RFC 7672) instead of the CA store: the
 * peer must match one of recs[0..n) (copied); host (the MX name) is the SNI and the
 * name a DANE-TA(2) chain must carry; DANE-EE(3) matches the key alone. A failure
 * shows at tls_read as a verification error. NULL when no record is usable, on a
 * bad host name or out of memory. */
struct tls_session *tls_session_new_dane(struct tls_ctx *ctx, const char *host,
                                         const struct tls_dane_rec *recs, int n);

/* Queues ciphertext received from the network (copied). Nothing is decrypted until
 * tls_read. PT_TOOLONG if more than TLS_IN_MAX bytes would wait undecrypted (read
 * first), PT_ERROR after a fatal error, PT_NOMEM. Bytes after close_notify are dropped. */
int tls_feed(struct tls_session *s, const void *cipher, size_t len);

/* Advances the handshake and appends all plaintext that the fed records carry to
 * plain_out, as far as plain_out->max allows (the rest waits for the next call, so
 * call again after consuming). Returns
 *   PT_OK       progress made or more input needed (check tls_handshake_done);
 *   PT_NOTFOUND the peer closed the TLS stream cleanly (close_notify); plaintext that
 *               preceded it was appended; every later call returns PT_NOTFOUND too;
 *   PT_ERROR    fatal: handshake failure, bad record, certificate verification failure
 *               (tls_error says which); the session is dead, every call fails;
 *   PT_NOMEM    out of memory (also fatal). */
int tls_read(struct tls_session *s, struct buf *plain_out);

/* Encrypts len bytes of plain. Before the handshake completes the bytes are queued
 * (at most TLS_PENDING_MAX, else PT_TOOLONG) and sent as soon as it does. PT_ERROR
 * after a fatal error or tls_shutdown. */
int tls_write(struct tls_session *s, const void *plain, size_t len);

/* Appends the ciphertext waiting to be sent to cipher_out (the buffers may be swapped
 * instead of copied when cipher_out is empty). PT_OK, or PT_NOMEM / PT_TOOLONG when
 * cipher_out cannot take it all (nothing is lost: call again). */
int tls_take_output(struct tls_session *s, struct buf *cipher_out);

/* Queues close_notify (once). Before the handshake completes or after an error this
 * sends nothing and returns PT_OK: just close the socket. Later writes fail. */
int tls_shutdown(struct tls_session *s);

bool tls_handshake_done(const struct tls_session *s);
bool tls_peer_closed(const struct tls_session *s);    /* close_notify received */
bool tls_failed(const struct tls_session *s);         /* a fatal error happened */

/* "TLSv1.3:TLS_AES_256_GCM_SHA384" once the handshake is done, else NULL. Owned by s. */
const char *tls_describe(const struct tls_session *s);

/* The last fatal error as human text, e.g. "certificate verify failed: hostname
 * mismatch (expected mx.example)" or "TLS handshake failed: unsupported protocol";
 * "" when there was none. Owned by s. */
const char *tls_error(const struct tls_session *s);

/* Name of the session state ("handshake", "open", ...) for trace logs. */
const char *tls_state_name(const struct tls_session *s);

#endif
