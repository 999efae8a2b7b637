/* Shaping: whether a destination may send one more message (or open one more
 * connection) now, and when it may next. A local token bucket per destination
 * (max_message_rate) with an optional cap set by adjust_domain_rate that recovers
 * over time; a slot bound to the cluster limits (cluster/limits.h) also needs the
 * cluster's allowance and connection slots, or takes 1/N locally while Redis is
 * unreachable. The scheduler only calls this interface. Never blocks (the
 * cluster side takes a mutex, allocates once per destination and hands the Redis
 * work to its own thread).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_SHAPING_H
#define PETREL_DELIVERY_SHAPING_H

#include <stdbool.h>
#include <stdint.h>

struct cluster_limits;

#define SHAPING_RECOVER_S 60.0      /* an adjusted rate doubles back every minute */
#define SHAPING_MIN_RATE (1.0 / 60) /* adjust_domain_rate never goes below 1/min */

/* One destination's budget; zeroed = full (a quiet destination may burst), no cap.
 * Owned by the destination queue, used on its delivery thread only. */
struct shaping_slot {
    double tokens, refilled_at;
    double cap, capped_at, cap_lift; /* adjust_domain_rate: messages/s at capped_at,
                                        doubling every SHAPING_RECOVER_S; lifted at
                                        cap_lift (0 = no cap) */
    double win_start, seen_rate;     /* observed sending rate (1 s windows) */
    uint32_t win_count;
    struct cluster_limits *cl;       /* shaping_bind: counted across the cluster */
    const char *key;                 /* the destination's name there (borrowed) */
    double cl_retry;                 /* the cluster said: not before this (mono) */
};

/* Counts the slot's rate and connections across the cluster (cl NULL = local
 * only): key names the destination alike on every node and must outlive s. */
void shaping_bind(struct shaping_slot *s, struct cluster_limits *cl, const char *key);
/* One more connection (of at most max, counted cluster-wide when bound): true =
 * open it and call shaping_conn_give when it is gone; false = wait until
 * shaping_next_time. Always true when not bound. */
bool shaping_conn_take(struct shaping_slot *s, int max, double now);
void shaping_conn_give(struct shaping_slot *s);

/* Messages per second for max_message_rate (per minute); 0 = unlimited. */
double shaping_rate_per_s(int max_message_rate_per_min);
/* Refills the bucket to now and says how many whole messages may go now (at most
 * UINT32_MAX; UINT32_MAX when unlimited). Takes nothing. per_s: the configured
 * rate (0 = unlimited); a cap applies on top. */
uint32_t shaping_available(struct shaping_slot *s, double per_s, double now);
/* Takes one message's token if there is one (refilling first): true = send now,
 * false = wait until shaping_next_time. Always true when nothing limits. */
bool shaping_acquire(struct shaping_slot *s, double per_s, double now);
/* Wall-clock time when a whole token is available again (after shaping_available
 * or shaping_acquire refilled the slot); 0 when unlimited. */
double shaping_next_time(const struct shaping_slot *s, double per_s);
/* adjust_domain_rate: the destination's rate becomes (1 + fraction) times what it
 * is now (the configured rate, the current cap, or the rate it was seen sending,
 * whichever is lowest; 1/s when nothing was seen), never below SHAPING_MIN_RATE;
 * it then doubles back every SHAPING_RECOVER_S until it reaches the rate it had
 * before the first adjustment. fraction in [-1, 1]. */
void shaping_adjust(struct shaping_slot *s, double per_s, double fraction, double now);
/* The rate in force now (messages/s; 0 = unlimited), for /api/queue and tests. */
double shaping_rate_now(struct shaping_slot *s, double per_s, double now);

#endif
