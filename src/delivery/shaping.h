/* Shaping: whether a destination may send one more message now, and when it may
 * next. Today a local token bucket per destination (max_message_rate); the
 * scheduler only calls this interface so a shared backend (Redis GCRA) can replace
 * the bucket without touching it. Never blocks, never allocates.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_SHAPING_H
#define PETREL_DELIVERY_SHAPING_H

#include <stdbool.h>
#include <stdint.h>

/* One destination's budget; zeroed = full (a quiet destination may burst). Owned
 * by the destination queue, used on its delivery thread only. */
struct shaping_slot {
    double tokens, refilled_at;
};

/* Messages per second for max_message_rate (per minute); 0 = unlimited. */
double shaping_rate_per_s(int max_message_rate_per_min);
/* Refills the bucket to now and says how many whole messages may go now (at most
 * UINT32_MAX; UINT32_MAX when unlimited). Takes nothing. */
uint32_t shaping_available(struct shaping_slot *s, double per_s, double now);
/* Takes one message's token if there is one (refilling first): true = send now,
 * false = wait until shaping_next_time. Always true when per_s <= 0. */
bool shaping_acquire(struct shaping_slot *s, double per_s, double now);
/* Wall-clock time when a whole token is available again (after shaping_available
 * or shaping_acquire refilled the slot); 0 when unlimited. */
double shaping_next_time(const struct shaping_slot *s, double per_s);

#endif
