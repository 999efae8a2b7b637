/* SMTP client session (outbound): tries the next hop's hosts in order, EHLO
 * (HELO fallback), then one transaction per entry — MAIL, RCPT for every pending
 * recipient, DATA (BDAT when CHUNKING is offered) — pipelined when offered, reusing
 * the connection for the next entry the scheduler hands over. Never sends 8-bit
 * content to a hop without 8BITMIME (its prepared 7-bit form goes instead, when it
 * has one) or a UTF-8 envelope to one without SMTPUTF8 (those recipients fail with
 * 5.6.3 / 5.6.7). Passes DSN parameters (RFC 3461) to a
 * hop that offers DSN. A REQUIRETLS entry (RFC 8689) goes only over TLS with a
 * verified certificate to a hop offering REQUIRETLS (else it fails with 5.7.30); a
 * "TLS-Required: No" entry may go in clear. Reports per-recipient results;
 * never decides retry or bounce policy itself.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_CLIENT_H
#define PETREL_SMTP_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "delivery/dane.h"
#include "delivery/dns.h"
#include "util/buf.h"

struct entry;
struct smtp_client;

struct client_result {
    int code;                 /* SMTP code; 0 = no reply (network error); -1 = not
                                 attempted (a reused connection was stale): retry at once */
    char enhanced[16];        /* "5.1.1"; derived from code when the server gave none */
    char *text;               /* reply text incl. code, e.g. "550 5.1.1 no such user" */
    bool remote;              /* text is the next hop's reply (else our own words) */
    bool hop_dsn;             /* the next hop offered DSN (RFC 3461) and was given the
                                 recipient's NOTIFY/ORCPT: after a 2xx, further DSNs
                                 are its job (RFC 3461 5.2) */
};

enum client_tls_policy { CTLS_NONE = 0, CTLS_MAY, CTLS_ENCRYPT, CTLS_VERIFY };
struct tls_ctx;

struct smtp_client_params {
    const struct dns_result *hosts; /* copied */
    enum client_tls_policy tls;     /* may: STARTTLS when offered, clear if the handshake fails */
    struct tls_ctx *tls_ctx;        /* borrowed; lives as long as the process */
    const char *auth_user, *auth_pass; /* copied; NULL = no AUTH. Sent only over TLS. */
    uint16_t port;
    const char *helo;               /* copied */
    const struct sockaddr_storage *source; /* copied; NULL = the host's choice: bound
                                       (port 0) before each connect to an address of
                                       its family (DESIGN §9 egress source) */
    double connect_timeout;         /* connect + greeting */
    double command_timeout;         /* each later reply */
    bool no_chunking;               /* false (the default): BDAT when the hop offers
                                       CHUNKING; true: always DATA */
    /* Per host of hosts (TLS policies, delivery/tlspol.h): the least TLS policy that
     * host needs (CTLS_NONE = tls above), and its DANE TLSA records (NULL = none;
     * borrowed for the call, copied): with records the host is authenticated by
     * them, not by the CA store. */
    enum client_tls_policy host_tls[DNS_MAX_HOSTS];
    const struct dane_host *dane[DNS_MAX_HOSTS];
};

struct smtp_client_ops {
    /* One entry's transaction is over. res[i] belongs to the i-th PENDING recipient
     * of e at the time of smtp_client_deliver (same order); res and its strings are
     * borrowed for the call. usable = false: the connection is gone and on_closed
     * follows; don't hand it another entry. site/peer: "host:port" and IP tried
     * last (NULL if nothing was reached); tls: "TLSv1.3:CIPHER" or NULL. */
    void (*on_done)(void *owner, struct smtp_client *c, struct entry *e,
                    const struct client_result *res, uint32_t nres, bool usable,
                    const char *site, const char *peer, const char *tls);
    /* optional: a TLS policy failure (not offered, handshake, verification) on the
     * session from local_ip to peer_ip (either NULL when unknown) */
    void (*on_tls_failure)(void *owner, const char *site, const char *local_ip,
                           const char *peer_ip, const char *why);
    /* The connection is closed; c is freed after this returns. */
    void (*on_closed)(void *owner, struct smtp_client *c);
};

/* Starts a connection and the first transaction for e with its content and the
 * content's 7-bit form (both taken; content7 empty = none), which is sent instead
 * of 8-bit content to a hop without 8BITMIME. */
struct smtp_client *smtp_client_start(uv_loop_t *loop, const struct smtp_client_params *p,
                                      const struct smtp_client_ops *ops, void *owner,
                                      struct entry *e, struct buf *content,
                                      struct buf *content7);
/* Next transaction on an idle (after on_done with usable) connection. */
void smtp_client_deliver(struct smtp_client *c, struct entry *e, struct buf *content,
                         struct buf *content7);
/* Keeps an idle connection open for secs, then QUITs (on_closed follows). */
void smtp_client_idle(struct smtp_client *c, double secs);
/* Politely ends an idle connection (QUIT). on_closed follows. */
void smtp_client_quit(struct smtp_client *c);
/* Aborts: an entry in flight gets on_done with a network error, then on_closed. */
void smtp_client_abort(struct smtp_client *c);
uint32_t smtp_client_deliveries(const struct smtp_client *c);

#endif
