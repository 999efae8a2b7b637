/* Bounce submission: builds the delivery status notification for failed
 * recipients of an entry and queues it (through ingest) to the envelope sender.
 * Never for the null sender or for a DSN we generated.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_BOUNCE_H
#define PETREL_QUEUE_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "queue/dsn.h"

struct runtime;
struct entry;

/* Queues one DSN for rc[0..n) of e (expired: the "could not be delivered in time"
 * wording). The original's headers are read from the spool in the call; the report
 * is built and queued on loop's worker pool (loop NULL: in the call). Everything is borrowed for the call
 * (copied); failures are logged (the DSN is lost, the entry is not). */
void bounce_send(struct runtime *rt, uv_loop_t *loop, const struct entry *e,
                 const struct dsn_rcpt *rc, size_t n, bool expired);

#endif
