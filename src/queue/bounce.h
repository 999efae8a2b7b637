/* Delivery status notifications of an entry: decides which recipients want one
 * (NOTIFY, RFC 3461 4.1) and queues it (through ingest) to the envelope sender.
 * Never for the null sender or for a DSN we generated.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_BOUNCE_H
#define PETREL_QUEUE_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "queue/dsn.h"

struct runtime;
struct config;
struct entry;
struct entry_rcpt;

/* Whether recipient r of e asks for a DSN with this action: never for the null
 * sender, a DSN we generated or NOTIFY=NEVER; failed and delayed when NOTIFY is
 * absent or names FAILURE / DELAY; delivered and relayed only for NOTIFY=SUCCESS. */
bool bounce_wanted(const struct entry *e, const struct entry_rcpt *r, enum dsn_action a);

/* Queues one DSN for rc[0..n) of e (expired: the "could not be delivered in time"
 * wording); the caller has filtered rc with bounce_wanted. Carries e's ENVID, honours
 * its RET (FULL: the whole message back on failure, else the header block) and,
 * for delayed recipients, Will-Retry-Until = arrival + max_retry_age. The original
 * is read from the spool, and the report built and queued, on loop's worker pool
 * (loop NULL: in the call); meanwhile the message's content is held (see
 * bounce_entry_defer), so the caller may remove the entry right after. cfg: the
 * generation's config (reporting MTA, max_retry_age). Everything is borrowed for
 * the call (copied); failures are logged (the DSN is lost, the entry is not). */
void bounce_send(struct runtime *rt, const struct config *cfg, uv_loop_t *loop,
                 const struct entry *e, const struct dsn_rcpt *rc, size_t n, bool expired);

/* Whoever removes an entry of message id asks this first: true when a DSN job
 * still reads id's content; the entry's removal (with the content, if it is then
 * the message's last entry) is left to the last reader, and the caller removes
 * nothing. false: remove the entry (and the content if last) as usual. Keeping the
 * entry until then is what keeps the content: a message split over several
 * domains can have DSN jobs of different entries in flight at different times.
 * Thread-safe. */
bool bounce_entry_defer(const char *id, const char *domain);

#endif
