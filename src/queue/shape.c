/* The scheduler's side of traffic shaping: rule binding (with the site lookup),
 * budgets, the in-process automation (TSA) and the expiry of suspended mail. See
 * shape.h. Must never block a delivery loop: the only waits are budget locks held
 * for a few arithmetic steps.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "core/config.h"
#include "delivery/dns.h"
#include "delivery/outcome.h"
#include "delivery/route.h"
#include "delivery/shaping.h"
#include "delivery/shaping_rules.h"
#include "delivery/site.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "queue/entry.h"
#include "queue/sched.h"
#include "queue/sched_int.h"
#include "delivery/warmup.h"
#include "queue/shape.h"
#include "smtp/smtp_client.h"
#include "util/timeutil.h"

#define SHAPE_CONN_POLL_S 0.05   /* a queue whose site's connections are all taken by
                                    another thread's queue looks again this often */
#define SHAPE_SUSPEND_POLL_S 0.5 /* a suspended queue checks its mail's age this often,
                                    so that none waits past max_retry_age */
#define SHAPE_CONTENDED_S 0.5  /* a refused slot makes the site's idle connections
                                   close for this long (its domains take turns) */
#define SHAPE_REPLY_MAX 1024     /* a reply as automation matches it */
#define SHAPE_TURN_GRACE_S 0.1   /* a site's next token stays reserved for the first
                                    waiting queue this long after it is due */
#define SHAPE_TURNS 16           /* queues a site's budget keeps in turn (more race) */

/* One rule's budget: a site's (shared, in the scheduler's list) or a queue's own. */
struct shape_budget {
    pthread_mutex_t lock;
    struct shape_budget *next;           /* the scheduler's site budgets */
    char name[SITE_NAME_MAX + 8];        /* the site glob or the domain: `queue` in
                                            Shaping records */
    char source[CFG_EGRESS_NAME_MAX + 1];/* a site's budget is per egress source ("" =
                                            the default address) */
    char ckey[SITE_NAME_MAX + CFG_EGRESS_NAME_MAX + 10]; /* cluster key: name|source */
    bool site;
    double rate, conn_rate;              /* configured, per second (0 = unlimited) */
    int conn_limit;
    uint64_t epoch;                      /* of the rules those values come from */
    struct shaping_slot msgs, conns;     /* message and connection budgets */
    int nconn;                           /* connections counted against conn_limit */
    double contended_until;              /* a queue was refused a slot: until then (or
                                            until it has one), connections close rather
                                            than idle: all of them while that queue has
                                            none, else a queue's second and later ones */
    const struct dqueue *contender;      /* that queue */
    bool contender_starved;              /* it had no connection */
    const struct dqueue *turns[SHAPE_TURNS]; /* a site's queues refused a token, in
                                            order: the next token is turns[0]'s (the
                                            domains of a site take turns, whichever
                                            thread wakes first) */
    int nturns;
    double turn_until;                   /* turns[0]'s hold ends (monotonic) */
    const struct dqueue *last;           /* the queue that took the last token: it
                                            does not queue for the next one */
    /* automation: each in force while its until (monotonic) is ahead */
    double rate_until, rate_set;
    double climit_until;
    int climit;
    double susp_until, susp_wall;
    double reason_until;                 /* the latest until of any action */
    char reason[SHAPE_REPLY_MAX];        /* the reply that triggered the latest action */
};

/* The rules of the thread's config generation. */
static const struct shaping_rules *rules_of(const struct dthread *t)
{
    return t->gen->cfg->shaping;
}

/* The rule's values into b (locked, or not yet shared). */
static void budget_set(struct shape_budget *b, const struct shaping_rules *sr,
                       const struct shaping_rule *r)
{
    b->rate = shaping_rule_rate(sr, r);
    b->conn_rate = shaping_rule_conn_rate(sr, r);
    b->conn_limit = shaping_rule_conn_limit(sr, r);
    b->epoch = sr->epoch;
}

static void budget_init(struct shape_budget *b, const struct shaping_rules *sr,
                        const struct shaping_rule *r, const char *name, bool site)
{
    pthread_mutex_init(&b->lock, NULL);
    snprintf(b->name, sizeof b->name, "%s", name);
    b->site = site;
    budget_set(b, sr, r);
}

/* A reload changed the rules: b takes the values of r as they now read. Site
 * budgets are shared by the threads, which take a new generation each in its
 * own time: only a newer epoch than the budget's writes. */
static void budget_update(struct shape_budget *b, const struct shaping_rules *sr,
                          const struct shaping_rule *r)
{
    pthread_mutex_lock(&b->lock);
    if (sr->epoch > b->epoch)
        budget_set(b, sr, r);
    pthread_mutex_unlock(&b->lock);
}

/* The message rate in force (locked). */
static double rate_now(const struct shape_budget *b, double now)
{
    return b->rate_until > now ? b->rate_set : b->rate;
}

static int climit_now(const struct shape_budget *b, double now)
{
    return b->climit_until > now ? b->climit : b->conn_limit;
}

/* The shared budget of site rule r for egress source src (NULL = none), made on
 * first use: each (source, site) pair has its own limits (DESIGN §9), as receivers
 * judge each sending address. NULL when out of memory. */
static struct shape_budget *site_budget(struct dthread *t, const struct shaping_rule *r,
                                        const char *src)
{
    struct sched *s = t->s;
    if (!src)
        src = "";
    pthread_mutex_lock(&s->sites_lock);
    struct shape_budget *b = s->sites;
    while (b && (strcmp(b->name, r->glob) != 0 || strcmp(b->source, src) != 0))
        b = b->next;
    if (!b && (b = calloc(1, sizeof *b))) {
        budget_init(b, rules_of(t), r, r->glob, true);
        snprintf(b->source, sizeof b->source, "%s", src);
        snprintf(b->ckey, sizeof b->ckey, "%s%s%s", b->name, *src ? "|" : "", src);
        shaping_bind(&b->msgs, s->rt->climits, b->ckey);  /* the site, cluster-wide */
        b->next = s->sites;
        s->sites = b;
    } else if (b) {
        budget_update(b, rules_of(t), r);
    }
    pthread_mutex_unlock(&s->sites_lock);
    return b;
}

/* Binds q to rule r (NULL = default): its own budget, or the site's. */
static void bind_rule(struct dthread *t, struct dqueue *q, const struct shaping_rule *r)
{
    const struct shaping_rules *sr = rules_of(t);
    q->shape.epoch = sr->epoch;
    q->shape.b = r && r->glob ? site_budget(t, r, q->source) : NULL;
    if (!q->shape.b) {
        const struct shaping_rule *own = r && !r->glob ? r : NULL;
        if (q->shape.own) {
            budget_update(q->shape.own, sr, own);
        } else if ((q->shape.own = calloc(1, sizeof *q->shape.own))) {
            budget_init(q->shape.own, sr, own, q->domain, false);
            /* counted cluster-wide under the queue's name (the same on every node) */
            shaping_bind(&q->shape.own->msgs, t->s->rt->climits, q->key);
        }
        q->shape.b = q->shape.own;
    }
    q->pool.max_deliveries = shaping_rule_max_deliveries(sr, r);
    q->pool.connect_timeout = shaping_rule_connect_timeout(sr, r);
    q->pool.tls = shaping_rule_tls(sr, r);  /* pool.c applies it to MX routes only */
    q->shape.state = q->shape.b ? SHAPE_BOUND : SHAPE_UNBOUND;
    if (q->shape.b && r && r->glob)
        log_debug("queue %s: site %s", q->key, r->glob);
}

/* The answer to a site lookup finds its queue by key (it may be gone). */
struct site_lookup {
    struct dthread *t;
    char key[];
};

static void on_site_dns(void *arg, const struct dns_result *res)
{
    struct site_lookup *sl = arg;
    struct dthread *t = sl->t;
    struct dqueue *q = t->stopping ? NULL : sched_queue_find(t, sl->key);
    if (q && q->shape.state == SHAPE_RESOLVING) {
        const struct shaping_rule *r = NULL;
        if (res->status == DNS_OK)
            r = shaping_rules_site(rules_of(t), res->hosts[0].name, sizeof res->hosts[0],
                                   res->nhosts);
        /* a domain whose DNS fails keeps its own budget (default rule): its own
         * delivery attempt reports the failure, other queues are not held */
        bind_rule(t, q, r);
        if (q->shape.state == SHAPE_BOUND)
            sched_dispatch(t, q);
    }
    free(sl);
}

bool shape_bind(struct dthread *t, struct dqueue *q)
{
    if (q->shape.state == SHAPE_BOUND)
        return true;
    if (q->shape.state == SHAPE_RESOLVING)
        return false;
    const struct shaping_rules *sr = rules_of(t);
    const struct shaping_rule *r = shaping_rules_domain(sr, q->domain);
    if (r || !sr->has_sites || q->route->way != ROUTE_WAY_MX || !t->dns) {
        bind_rule(t, q, r);
        return q->shape.state == SHAPE_BOUND;
    }
    size_t klen = strlen(q->key) + 1;
    struct site_lookup *sl = malloc(sizeof *sl + klen);
    if (!sl) {
        bind_rule(t, q, NULL);
        return q->shape.state == SHAPE_BOUND;
    }
    sl->t = t;
    memcpy(sl->key, q->key, klen);
    q->shape.state = SHAPE_RESOLVING;
    dns_resolve_mx(t->dns, q->domain, on_site_dns, sl);  /* cached for the connection */
    return false;
}

bool shape_rebind_due(const struct dthread *t, const struct dqueue *q)
{
    return q->shape.state == SHAPE_BOUND && q->shape.epoch != rules_of(t)->epoch;
}

bool shape_rebind(struct dthread *t, struct dqueue *q)
{
    if (!shape_rebind_due(t, q))
        return true;
    if (q->pool.nconn > 0)
        return false;           /* its connections close after their transaction */
    log_info("queue %s: shaping rules changed by a reload: rebinding", q->key);
    q->shape.state = SHAPE_UNBOUND;
    return shape_bind(t, q);
}

/* The first queue in line of b (locked) holds the next token from now. */
static void turn_hold(struct shape_budget *b, double now)
{
    double due = shaping_next_time(&b->msgs, rate_now(b, now));
    b->turn_until = (due > now ? due : now) + SHAPE_TURN_GRACE_S;
}

/* Removes turns[i] of b (locked). */
static void turn_drop(struct shape_budget *b, int i, double now)
{
    memmove(&b->turns[i], &b->turns[i + 1], (size_t)(b->nturns - i - 1) * sizeof b->turns[0]);
    b->nturns--;
    if (i == 0 && b->nturns)
        turn_hold(b, now);
}

/* The tokens n of site budget b (locked) that q, with mail ready, may use now.
 * A queue refused a token queues for one (unless it took the last); the first in
 * line is given the next token, and the others are refused until it takes it or
 * SHAPE_TURN_GRACE_S after it was due (then it loses its place). Else the queue
 * that just sent (its connection idle first, its thread's timer first) would win
 * the next token too, and a domain of the site could starve. */
static uint32_t site_turn(struct shape_budget *b, const struct dqueue *q, uint32_t n,
                          double now)
{
    if (b->nturns && b->turn_until <= now)
        turn_drop(b, 0, now);
    if (n && b->nturns && b->turns[0] != q)
        n = 0;
    if (n || b->last == q || b->susp_until > now || b->nturns == SHAPE_TURNS)
        return n;
    for (int i = 0; i < b->nturns; i++)
        if (b->turns[i] == q)
            return 0;
    b->turns[b->nturns++] = q;
    if (b->nturns == 1)                /* first in line: its hold starts */
        turn_hold(b, now);
    return 0;
}

uint32_t shape_available(struct dqueue *q, double now)
{
    struct shape_budget *b = q->shape.b;
    if (!b)
        return 0;
    pthread_mutex_lock(&b->lock);
    uint32_t n = b->susp_until > now ? 0 : shaping_available(&b->msgs, rate_now(b, now), now);
    if (b->site && q->nready)
        n = site_turn(b, q, n, now);
    pthread_mutex_unlock(&b->lock);
    if (n && q->shape.pace_rate > 0) {
        uint32_t p = shaping_available(&q->shape.pace, q->shape.pace_rate, now);
        n = p < n ? p : n;
    }
    if (n && q->shape.nwarmup) {   /* the source's warm-up cap for this site today */
        uint32_t w = warmup_remaining(q->source, q->shape.warmup, q->shape.nwarmup, b->name,
                                      time_now());
        n = w < n ? w : n;
    }
    return n;
}

void shape_take(struct dqueue *q, double now)
{
    struct shape_budget *b = q->shape.b;
    pthread_mutex_lock(&b->lock);
    shaping_acquire(&b->msgs, rate_now(b, now), now);
    if (b->site && b->nturns && b->turns[0] == q)
        turn_drop(b, 0, now);
    b->last = q;
    pthread_mutex_unlock(&b->lock);
    if (q->shape.pace_rate > 0)
        shaping_acquire(&q->shape.pace, q->shape.pace_rate, now);
    if (q->shape.nwarmup)
        warmup_take(q->source, b->name, time_now());
}

bool shape_conn_open(struct dqueue *q, double now)
{
    struct shape_budget *b = q->shape.b;
    pthread_mutex_lock(&b->lock);
    int limit = climit_now(b, now);
    bool ok = b->nconn < limit;
    if (!ok && b->site && (b->contended_until <= now || !b->contender_starved)) {
        b->contended_until = now + SHAPE_CONTENDED_S;   /* a starved queue's claim stays */
        b->contender = q;
        b->contender_starved = q->pool.nconn == 0;
    }
    /* the cluster's slots (cluster/limits.h; always yes when not bound) */
    ok = ok && shaping_conn_take(&b->msgs, limit, now);
    if (ok && b->conn_rate > 0 && !shaping_acquire(&b->conns, b->conn_rate, now)) {
        shaping_conn_give(&b->msgs);
        ok = false;
    }
    if (ok) {
        b->nconn++;
        if (b->contender == q) {     /* it has its slot: the others need not give way */
            b->contender = NULL;
            b->contended_until = 0;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

bool shape_contended(struct dqueue *q, double now)
{
    struct shape_budget *b = q->shape.b;
    if (!b || !b->site)
        return false;
    pthread_mutex_lock(&b->lock);
    bool c = b->contended_until > now && b->contender != q &&
             (b->contender_starved || q->pool.nconn > 1);
    pthread_mutex_unlock(&b->lock);
    return c;
}

void shape_conn_closed(struct dqueue *q)
{
    struct shape_budget *b = q->shape.b;
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    if (b->nconn > 0) {
        b->nconn--;
        shaping_conn_give(&b->msgs);
    }
    pthread_mutex_unlock(&b->lock);
}

double shape_next_time(struct dqueue *q, double now)
{
    struct shape_budget *b = q->shape.b;
    if (!b)
        return now + SHAPE_CONN_POLL_S;
    pthread_mutex_lock(&b->lock);
    double when;
    if (b->susp_until > now) {
        when = b->susp_until < now + SHAPE_SUSPEND_POLL_S ? b->susp_until
                                                          : now + SHAPE_SUSPEND_POLL_S;
    } else {
        double r = rate_now(b, now);
        shaping_available(&b->msgs, r, now);          /* refill to now */
        when = shaping_next_time(&b->msgs, r);
        if (when <= now) {                            /* a token: wait for a connection */
            when = now + SHAPE_CONN_POLL_S;
            if (b->conn_rate > 0) {
                shaping_available(&b->conns, b->conn_rate, now);
                double c = shaping_next_time(&b->conns, b->conn_rate);
                if (c > when)
                    when = c;
            }
        }
        /* an action ending restores the rule: look again then */
        if (b->rate_until > now && b->rate_until < when)
            when = b->rate_until;
    }
    pthread_mutex_unlock(&b->lock);
    /* the queue's own pace: no sooner than its next token */
    if (q->shape.pace_rate > 0 && shaping_available(&q->shape.pace, q->shape.pace_rate, now) == 0) {
        double p = shaping_next_time(&q->shape.pace, q->shape.pace_rate);
        if (p > when)
            when = p;
    }
    if (q->shape.nwarmup && b) {   /* capped for today: wait for the next UTC day */
        double wall = time_now();
        if (warmup_remaining(q->source, q->shape.warmup, q->shape.nwarmup, b->name, wall) == 0 &&
            now + warmup_until_next_day(wall) > when)
            when = now + warmup_until_next_day(wall);
    }
    return when;
}

double shape_suspended_until(struct dqueue *q, double now)
{
    struct shape_budget *b = q->shape.b;
    if (!b)
        return 0;
    pthread_mutex_lock(&b->lock);
    double w = b->susp_until > now ? b->susp_wall : 0;
    pthread_mutex_unlock(&b->lock);
    return w;
}

/* While a shaping suspension holds q, its mail still expires at max_retry_age
 * (an Expiration record and a DSN), on time. */
void shape_expire(struct dthread *t, struct dqueue *q)
{
    const struct config *cfg = t->gen->cfg;
    double now = time_now(), age = cfg->queue.max_retry_age;
    for (int p = 0; p < SCHED_PRIOS; p++) {
        struct entry **pp = &q->ready[p], *last = NULL;
        while (*pp) {
            struct entry *e = *pp;
            if (e->received_at + age > now) {
                last = e;
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            e->next = NULL;
            q->nready--;
            outcome_fail_pending(t->s->rt, cfg, &t->loop, e, LOG_EXPIRATION, -1, "4.4.7",
                                 e->last_response ? e->last_response : "delivery time expired",
                                 NULL);
            if (cfg->queue.dead_letter_after > 0) {  /* kept for inspection */
                e->flags |= ENTRY_F_DEAD;
                e->next_attempt = now;
                sched_settle(t, q, e, OUTCOME_DEAD);
            } else {
                sched_entry_remove(t, q, e);
            }
        }
        q->ready_tail[p] = last;
    }
}

/* ---- automation -------------------------------------------------------- */

/* Applies action a, triggered by reply at now; returns the wall time it lasts
 * until (0 for bounce). A match while the action is in force extends it from
 * now, never compounding (the reduced rate stays the rule's rate times factor). */
static double apply(struct shape_budget *b, const struct shaping_auto *a, const char *reply,
                    double now)
{
    if (a->action == SHAPING_BOUNCE)
        return 0;
    double until = now + a->duration;
    pthread_mutex_lock(&b->lock);
    switch (a->action) {
    case SHAPING_SUSPEND:
        if (until > b->susp_until) {
            b->susp_until = until;
            b->susp_wall = time_wall_at(until);
        }
        break;
    case SHAPING_SET_RATE:
        b->rate_set = a->value;
        b->rate_until = until;
        break;
    case SHAPING_REDUCE_RATE: {
        double base = b->rate;
        if (base <= 0)   /* unlimited: from what it was seen sending, else 1/s */
            base = b->msgs.seen_rate > 0 ? b->msgs.seen_rate : 1.0;
        b->rate_set = base * a->factor;
        if (b->rate_set < SHAPING_MIN_RATE)
            b->rate_set = SHAPING_MIN_RATE;
        b->rate_until = until;
        /* no burst beyond the new pace */
        if (b->msgs.tokens > 1.0)
            b->msgs.tokens = 1.0;
        break;
    }
    case SHAPING_SET_CONN_LIMIT:
        b->climit = (int)a->value;
        b->climit_until = until;
        break;
    default:
        break;
    }
    if (until >= b->reason_until) {
        b->reason_until = until;
        snprintf(b->reason, sizeof b->reason, "%s: %s", shaping_action_name(a->action), reply);
    }
    pthread_mutex_unlock(&b->lock);
    return time_wall_at(until);
}

static void shaping_record(struct shape_budget *b, const struct entry *e, const char *action,
                           int code, const char *reply, double until,
                           const struct outcome_where *where)
{
    struct log_record r = {
        .type = LOG_SHAPING, .id = e->id, .sender = e->sender, .queue = b->name,
        .site = where ? where->site : NULL, .peer_address = where ? where->peer : NULL,
        .code = code > 0 ? code : -1, .response = reply, .size = -1, .delay = -1,
        .attempts = (int)e->attempts, .tls = where ? where->tls : NULL,
        .protocol = e->protocol == PROTO_HTTP ? "http" : "smtp", .action = action, .until = until,
        .tenant = entry_tenant(e), .egress_source = entry_source(e),
    };
    log_event(&r);
    metrics_inc(M_SHAPING_ACTIONS, action, NULL, 1);
}

/* Runs every automation rule on one reply; true when a `bounce` rule matched. */
static bool automate(struct dthread *t, struct dqueue *q, const struct entry *e, int code,
                     const char *text, const struct outcome_where *where)
{
    const struct shaping_rules *sr = rules_of(t);
    struct shape_budget *b = q->shape.b;
    if (!sr->n_autos || !b || !text || code / 100 == 2)
        return false;                  /* a success never triggers an action */
    char reply[SHAPE_REPLY_MAX];
    shaping_reply_flatten(text, reply, sizeof reply);
    bool bounce = false;
    double now = time_mono();
    for (int i = 0; i < sr->n_autos; i++) {
        const struct shaping_auto *a = &sr->autos[i];
        if (regexec(&a->re, reply, 0, NULL, 0) != 0)
            continue;
        double until = apply(b, a, reply, now);
        bounce |= a->action == SHAPING_BOUNCE;
        shaping_record(b, e, shaping_action_name(a->action), code, reply, until, where);
        if (a->action != SHAPING_BOUNCE)
            log_info("queue %s: shaping %s for %.0f s: %s", b->name,
                     shaping_action_name(a->action), a->duration, reply);
    }
    return bounce;
}

/* A transient or any reply made permanent by a `bounce` rule: 4xx -> 5xx. */
static void make_permanent(int *code, char *enhanced)
{
    if (*code / 100 != 5)
        *code = 500 + (*code > 0 ? *code % 100 : 54);
    if (enhanced && enhanced[0] && enhanced[0] != '5')
        enhanced[0] = '5';
}

void shape_result(struct dthread *t, struct dqueue *q, const struct entry *e,
                  struct client_result *res, uint32_t nres, const struct outcome_where *where)
{
    const char *prev = NULL;
    bool prev_bounce = false;
    for (uint32_t k = 0; k < nres; k++) {
        if (res[k].code < 0)
            continue;
        /* one trigger per distinct reply of the attempt (a 421 for every recipient
         * of the transaction is one reply) */
        bool bounce = prev && res[k].text && strcmp(prev, res[k].text) == 0
                      ? prev_bounce : automate(t, q, e, res[k].code, res[k].text, where);
        prev = res[k].text;
        prev_bounce = bounce;
        if (bounce)
            make_permanent(&res[k].code, res[k].enhanced);
    }
}

void shape_result_one(struct dthread *t, struct dqueue *q, const struct entry *e, int *code,
                      char *enhanced, const char *text)
{
    if (automate(t, q, e, *code, text, NULL))
        make_permanent(code, enhanced);
}

void shape_adjust(struct dqueue *q, double fraction, double now)
{
    struct shape_budget *b = q->shape.b;
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    double r0 = rate_now(b, now);
    shaping_adjust(&b->msgs, r0, fraction, now);
    double r = shaping_rate_now(&b->msgs, r0, now);
    pthread_mutex_unlock(&b->lock);
    if (r > 0)
        log_info("queue %s: rate %+.0f%% by a hook: %.3g messages/s, recovering", b->name,
                 fraction * 100, r);
}

void shape_info(const struct dqueue *q, struct sched_queue_info *qi)
{
    struct shape_budget *b = q->shape.b;
    qi->site[0] = 0;
    qi->shaping_rate = -1;
    qi->shaping_conn_limit = 0;
    qi->shaping_suspended_until = 0;
    qi->shaping_reason[0] = 0;
    static const char *const levels[] = { NULL, "may", "encrypt", "verify" };
    qi->shaping_tls = b && q->route && q->route->way == ROUTE_WAY_MX && q->pool.tls > 0 &&
                      q->pool.tls <= 3 ? levels[q->pool.tls] : NULL;
    if (!b)
        return;
    if (b->site)
        snprintf(qi->site, sizeof qi->site, "%s", b->name);
    double now = time_mono();
    pthread_mutex_lock(&b->lock);
    qi->shaping_rate = shaping_rate_now(&b->msgs, rate_now(b, now), now);
    qi->shaping_conn_limit = climit_now(b, now);
    qi->shaping_suspended_until = b->susp_until > now ? b->susp_wall : 0;
    if (b->reason_until > now)
        snprintf(qi->shaping_reason, sizeof qi->shaping_reason, "%s", b->reason);
    pthread_mutex_unlock(&b->lock);
}

void shape_q_free(struct dqueue *q)
{
    struct shape_budget *b = q->shape.b;
    if (b && b->site) {
        pthread_mutex_lock(&b->lock);
        for (int i = b->nturns - 1; i >= 0; i--)
            if (b->turns[i] == q)
                turn_drop(b, i, time_mono());
        if (b->last == q)
            b->last = NULL;
        if (b->contender == q) {
            b->contender = NULL;
            b->contended_until = 0;
        }
        pthread_mutex_unlock(&b->lock);
    }
    free(q->shape.warmup);
    if (q->shape.own) {
        pthread_mutex_destroy(&q->shape.own->lock);
        free(q->shape.own);
    }
    memset(&q->shape, 0, sizeof q->shape);
}

void shape_sites_free(struct sched *s)
{
    while (s->sites) {
        struct shape_budget *b = s->sites;
        s->sites = b->next;
        pthread_mutex_destroy(&b->lock);
        free(b);
    }
}
