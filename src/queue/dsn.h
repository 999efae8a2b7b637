/* Delivery status notifications (RFC 3464): builds the bounce message sent from
 * the null sender to the original envelope sender. Pure: no I/O.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_DSN_H
#define PETREL_QUEUE_DSN_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

/* Action of RFC 3464 2.3.3. */
enum dsn_action { DSN_FAILED = 0, DSN_DELAYED, DSN_DELIVERED, DSN_RELAYED };

struct dsn_rcpt {
    const char *addr;          /* final recipient */
    const char *status;        /* "5.1.1", "4.4.7" */
    const char *diagnostic;    /* reply text incl. code, e.g. "550 5.1.1 no such user"; may be NULL */
    const char *remote_mta;    /* MX / relay host name, may be NULL */
    enum dsn_action action;    /* 0 = failed */
    bool local;                /* diagnostic is ours, not the next hop's reply:
                                  "Diagnostic-Code: X-Petrel; ..." instead of "smtp; ..." */
    const char *orcpt;         /* ORCPT "addr-type;address" (Original-Recipient), or NULL */
};

struct dsn_info {
    const char *reporting_mta; /* our host name */
    const char *id;            /* message id (goes into X-Petrel-Id / Message-ID) */
    const char *sender;        /* original envelope sender = the DSN's To: */
    double arrival;            /* when we received the original */
    bool expired;              /* true: "could not be delivered in time" wording */
    const char *envid;         /* ENVID (Original-Envelope-Id), or NULL */
    bool ret_full;             /* RET=FULL: a failure DSN returns the whole message
                                  (message/rfc822); otherwise its header block only */
    double retry_until;        /* > 0: Will-Retry-Until of delayed recipients */
    const struct dsn_rcpt *rcpts;
    size_t nrcpt;
    const char *orig;          /* original content; only its header block is included */
    size_t orig_len;
};

/* Appends a complete RFC 5322 message (headers + multipart/report body with
 * report-type=delivery-status: a human-readable part, a message/delivery-status
 * part with Original-Envelope-Id (when given), Reporting-MTA, Arrival-Date and per
 * recipient Original-Recipient (when given), Final-Recipient, Action (failed,
 * delayed, delivered, relayed), Status, Remote-MTA, Diagnostic-Code ("smtp; " for a
 * remote reply, "X-Petrel; " for our own), Last-Attempt-Date and for delayed ones
 * Will-Retry-Until; then the original: message/rfc822 with the whole message when
 * ret_full and some recipient failed, else text/rfc822-headers), CRLF line endings, no
 * line over 998 octets (long values are folded; control bytes in values become
 * spaces). Appends nothing on failure: PT_NOMEM (or PT_TOOLONG from a capped
 * out), PT_INVALID when sender is empty (never a DSN to <>) or nrcpt is 0. */
int dsn_build(const struct dsn_info *info, struct buf *out);

#endif
