/* The scheduler's side of traffic shaping (configure_shaping, DESIGN §9): binds a
 * destination queue to the rule that governs it (domain, then site once its MX
 * hosts are known, then default) and to that rule's budget, and applies the
 * automation rules to delivery results. A site's budget is shared by the queues
 * of all its domains on every delivery thread (one lock each); a domain or
 * default rule's budget is the queue's own. The token arithmetic is shaping.h's.
 * Every time here is monotonic (time_mono()); wall-clock only for display/logs.
 * Functions run on the thread owning the queue; never block beyond a budget lock.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_SHAPE_H
#define PETREL_QUEUE_SHAPE_H

#include <stdbool.h>
#include <stdint.h>

#include "delivery/shaping.h"

struct client_result;
struct dqueue;
struct dthread;
struct entry;
struct outcome_where;
struct sched;
struct sched_queue_info;
struct shape_budget;
struct shaping_rule;

enum shape_state { SHAPE_UNBOUND = 0, SHAPE_RESOLVING, SHAPE_BOUND };

/* Per queue; embedded in struct dqueue, zeroed at creation. */
struct shape_q {
    enum shape_state state;
    struct shape_budget *b;          /* the budget in force once bound (own or a site's) */
    struct shape_budget *own;        /* the queue's own budget (freed with the queue) */
    uint64_t epoch;                  /* the rules' epoch it was bound under */
    double pace_rate;                /* the queue's own pace on top (messages/s; 0 =
                                        none): a paced tenant's max_message_rate */
    struct shaping_slot pace;
    int *warmup, nwarmup;            /* its egress source's warm-up schedule (a copy;
                                        delivery/warmup.h), NULL = none */
};

/* Whether q knows its rule and budget. When not, starts what is needed (a site
 * lookup: the MX hosts of the domain) and returns false; the queue is dispatched
 * again when the answer comes. */
bool shape_bind(struct dthread *t, struct dqueue *q);
/* After a reload that changed the shaping rules: whether q may open connections
 * now. A bound queue is rebound to the new rules (its budget's values change,
 * its counts and automation state stay) once its connections under the old
 * binding have closed (they close after their current transaction); meanwhile it
 * opens none. */
bool shape_rebind(struct dthread *t, struct dqueue *q);
/* Whether q is bound under rules a reload has since changed. */
bool shape_rebind_due(const struct dthread *t, const struct dqueue *q);
/* Messages q may send now (0 while suspended; UINT32_MAX when unlimited). */
uint32_t shape_available(struct dqueue *q, double now);
/* Takes one message's token (after shape_available said yes). */
void shape_take(struct dqueue *q, double now);
/* Counts one more connection of q against its budget if the connection limit and
 * max_connection_rate allow it now: true = open it (shape_conn_closed when it is
 * gone), false = not now. */
bool shape_conn_open(struct dqueue *q, double now);
void shape_conn_closed(struct dqueue *q);
/* Whether another queue of q's site waits for a connection slot (was refused one
 * lately and has not had one since): then q's connections should not idle on their
 * slots, all of them while that queue has none, else q's beyond its first. */
bool shape_contended(struct dqueue *q, double now);
/* When (monotonic) q should be looked at again while throttled: its next token,
 * the end of its suspension (or a check of its mail's age meanwhile), or a short
 * poll while another queue of its site holds every connection. */
double shape_next_time(struct dqueue *q, double now);
/* The wall time a suspension of q's budget ends, 0 when not suspended: a retry of
 * its mail need not wait beyond it. */
double shape_suspended_until(struct dqueue *q, double now);
/* While a suspension holds q: its ready mail past max_retry_age expires now
 * (Expiration records, a DSN) and leaves the queue. q must not be freed by it
 * (the caller keeps it on the throttled list meanwhile). */
void shape_expire(struct dthread *t, struct dqueue *q);
/* Applies the automation rules to one attempt's replies (res[0..nres), the
 * recipients' results) for entry e of q: a `bounce` match turns that result into
 * a permanent one in place (5xx); other actions change q's budget for their
 * duration. Each trigger writes a Shaping record and counts in the metric. */
void shape_result(struct dthread *t, struct dqueue *q, const struct entry *e,
                  struct client_result *res, uint32_t nres, const struct outcome_where *where);
/* The same for one synthetic reply (DNS failure...): *code may become 5xx. */
void shape_result_one(struct dthread *t, struct dqueue *q, const struct entry *e, int *code,
                      char *enhanced, const char *text);
/* adjust_domain_rate on q's budget. */
void shape_adjust(struct dqueue *q, double fraction, double now);
/* Fills the site and shaping fields of an /api/queue row. */
void shape_info(const struct dqueue *q, struct sched_queue_info *qi);
/* Frees q's own budget (the queue is going). */
void shape_q_free(struct dqueue *q);
/* Frees the site budgets of s (at sched_free). */
void shape_sites_free(struct sched *s);

#endif
