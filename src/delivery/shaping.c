/* Shaping backend "local": a token bucket per destination holding one second's
 * worth (at least one message), so a quiet destination may send a short burst,
 * then goes at the configured pace; adjust_domain_rate caps that pace for a while.
 * Pure arithmetic; must never block.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>

#include "cluster/limits.h"
#include "delivery/shaping.h"

double shaping_rate_per_s(int max_message_rate_per_min)
{
    return max_message_rate_per_min > 0 ? max_message_rate_per_min / 60.0 : 0;
}

/* The cap at now (recovered), 0 = none. */
static double cap_at(const struct shaping_slot *s, double now)
{
    if (s->cap <= 0)
        return 0;
    double c = s->cap * exp2((now - s->capped_at) / SHAPING_RECOVER_S);
    return c >= s->cap_lift ? 0 : c;
}

/* The rate in force: the configured one, lowered by a cap; 0 = unlimited. */
static double effective(struct shaping_slot *s, double per_s, double now)
{
    if (s->cap <= 0)
        return per_s;
    double c = cap_at(s, now);
    if (c <= 0) {
        s->cap = 0;                  /* recovered: the cap is lifted */
        return per_s;
    }
    return per_s > 0 && per_s < c ? per_s : c;
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

static void observe(struct shaping_slot *s, double now)
{
    double span = now - s->win_start;
    if (span >= 1.0) {
        s->seen_rate = s->win_start > 0 ? s->win_count / span : 0;
        s->win_start = now;
        s->win_count = 0;
    }
    s->win_count++;
}

/* The cluster's share of this node while Redis is unreachable (1/N), else 1. */
static double share_of(const struct shaping_slot *s)
{
    int n = s->cl ? cluster_limits_degraded(s->cl) : 0;
    return n > 1 ? 1.0 / n : 1.0;
}

/* Whole messages the cluster allows now (bound and reachable), else UINT32_MAX. */
static uint32_t cluster_avail(struct shaping_slot *s, double r, double now)
{
    if (!s->cl || r <= 0 || cluster_limits_degraded(s->cl))
        return UINT32_MAX;
    double at;
    uint32_t n = cluster_limits_rate_avail(s->cl, s->key, r, now, &at);
    if (n == 0)
        s->cl_retry = at;
    return n;
}

uint32_t shaping_available(struct shaping_slot *s, double per_s, double now)
{
    double r = effective(s, per_s, now) * share_of(s);
    if (r <= 0)
        return UINT32_MAX;
    refill(s, r, now);
    uint32_t local = s->tokens < 1.0 ? 0 : s->tokens >= 4294967295.0 ? UINT32_MAX
                                                                        : (uint32_t)s->tokens;
    if (local == 0)
        return 0;
    uint32_t shared = cluster_avail(s, r / share_of(s), now);
    return shared < local ? shared : local;
}

bool shaping_acquire(struct shaping_slot *s, double per_s, double now)
{
    observe(s, now);
    double r = effective(s, per_s, now) * share_of(s);
    if (r <= 0)
        return true;
    refill(s, r, now);
    if (s->tokens < 1.0 || cluster_avail(s, r / share_of(s), now) == 0) {
        s->win_count--;              /* not sent */
        return false;
    }
    s->tokens -= 1.0;
    if (s->cl && !cluster_limits_degraded(s->cl))
        cluster_limits_rate_take(s->cl, s->key);
    return true;
}

double shaping_next_time(const struct shaping_slot *s, double per_s)
{
    double c = cap_at(s, s->refilled_at);
    double r = (c > 0 && (per_s <= 0 || c < per_s) ? c : per_s) * share_of(s);
    double local = r <= 0 ? 0 : s->refilled_at + (1.0 - s->tokens) / r;
    return s->cl && s->cl_retry > local ? s->cl_retry : local;
}

void shaping_bind(struct shaping_slot *s, struct cluster_limits *cl, const char *key)
{
    s->cl = cl;
    s->key = key;
}

bool shaping_conn_take(struct shaping_slot *s, int max, double now)
{
    double at;
    if (!s->cl)
        return true;
    if (cluster_limits_conn_acquire(s->cl, s->key, max, now, &at))
        return true;
    s->cl_retry = at;
    return false;
}

void shaping_conn_give(struct shaping_slot *s)
{
    if (s->cl)
        cluster_limits_conn_release(s->cl, s->key);
}

void shaping_adjust(struct shaping_slot *s, double per_s, double fraction, double now)
{
    if (!(fraction >= -1.0 && fraction <= 1.0))
        return;
    double cur = effective(s, per_s, now);
    /* the rate it was seen sending: the current window once it is long enough to
     * say (a fifth of a second), else the last whole window */
    double span = now - s->win_start, seen = 0;
    if (s->win_start > 0 && span >= 0.2 && s->win_count > 1)
        seen = s->win_count / span;
    else if (s->win_start > 0 && span < 10.0)
        seen = s->seen_rate;
    double from = cur;
    if (seen > 0 && (from <= 0 || seen < from))
        from = seen;
    if (from <= 0)
        from = 1.0;
    double lift = s->cap > 0 ? s->cap_lift : per_s > 0 ? per_s : from;
    double c = from * (1.0 + fraction);
    if (c < SHAPING_MIN_RATE)
        c = SHAPING_MIN_RATE;
    if (c >= lift) {
        s->cap = 0;
        return;
    }
    s->cap = c;
    s->capped_at = now;
    s->cap_lift = lift;
    if (s->refilled_at > 0) {
        refill(s, c, now);           /* no burst beyond the new pace */
    } else {
        s->tokens = burst(c);
        s->refilled_at = now;
    }
}

double shaping_rate_now(struct shaping_slot *s, double per_s, double now)
{
    return effective(s, per_s, now);
}
