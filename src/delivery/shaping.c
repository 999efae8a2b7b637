/* Shaping backend "local": a token bucket per destination holding one second's
 * worth (at least one message), so a quiet destination may send a short burst,
 * then goes at the configured pace. Pure arithmetic; must never block.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>

#include "delivery/shaping.h"

double shaping_rate_per_s(int max_message_rate_per_min)
{
    return max_message_rate_per_min > 0 ? max_message_rate_per_min / 60.0 : 0;
}

static double burst(double per_s)
{
    return per_s > 1.0 ? floor(per_s) : 1.0;
}

static void refill(struct shaping_slot *s, double per_s, double now)
{
    if (s->refilled_at == 0) {
        s->tokens = burst(per_s);
    } else {
        s->tokens += (now - s->refilled_at) * per_s;
        if (s->tokens > burst(per_s))
            s->tokens = burst(per_s);
    }
    s->refilled_at = now;
}

uint32_t shaping_available(struct shaping_slot *s, double per_s, double now)
{
    if (per_s <= 0)
        return UINT32_MAX;
    refill(s, per_s, now);
    return s->tokens < 1.0 ? 0 : s->tokens >= 4294967295.0 ? UINT32_MAX : (uint32_t)s->tokens;
}

bool shaping_acquire(struct shaping_slot *s, double per_s, double now)
{
    if (per_s <= 0)
        return true;
    refill(s, per_s, now);
    if (s->tokens < 1.0)
        return false;
    s->tokens -= 1.0;
    return true;
}

double shaping_next_time(const struct shaping_slot *s, double per_s)
{
    if (per_s <= 0)
        return 0;
    return s->refilled_at + (1.0 - s->tokens) / per_s;
}
