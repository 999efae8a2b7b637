/* Scheduler core: delivery threads, each owning the destination queues whose key
 * hashes to it, a retry min-heap with one timer, and the mailbox that brings new
 * entries and calls. It decides what is due and hands it to the connection pool;
 * routing, shaping, content, outcomes and admin calls live in their own files.
 * In RAM only compact entries. Never blocks its loop; never aborts on OOM.
 * Due-ness and every timer run on the monotonic clock (entry.due, suspension
 * until_mono, the shaping buckets): a wall-clock time (next_attempt, a
 * suspension's until) is converted once when it is set, so a jump of the wall
 * clock neither fires every retry at once nor freezes the queue.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "delivery/dns.h"
#include "delivery/outcome.h"
#include "delivery/route.h"
#include "delivery/shaping_rules.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "policy/hooks_delivery.h"
#include "queue/bounce.h"
#include "queue/entry.h"
#include "queue/sched.h"
#include "queue/sched_int.h"
#include "queue/shape.h"
#include "queue/spool.h"
#include "queue/suspend.h"
#include "smtp/smtp_client.h"
#include "util/result.h"
#include "util/timeutil.h"

#define PRIO_FAIRNESS 8   /* of every 8 picks, one serves bulk first and one normal
                             first when they wait: bulk keeps at least 1/8 of the
                             sends of a busy (rate-limited) queue (DESIGN §9) */

enum { TMSG_ENTRY = 1, TMSG_STOP = 2, TMSG_CALL = 3, TMSG_RELOADED = 4 };

double sched_backoff(double retry_interval, double max_retry_interval, uint32_t attempts)
{
    if (attempts == 0)
        attempts = 1;
    double d = retry_interval * ldexp(1.0, (int)(attempts > 60 ? 60 : attempts - 1));
    return d > max_retry_interval ? max_retry_interval : d;
}

void sched_due_set(struct entry *e)
{
    double now = time_mono(), at = now + (e->next_attempt - time_now());
    /* a time already past is due now (rounded down); a future one is rounded up,
     * so that a retry never comes early */
    if (at <= now)
        e->due = at > 0 ? (uint32_t)(at / TIME_TICK_S) : 0;
    else
        e->due = time_tick(at);
}

/* e waits secs from now (an out-of-memory or read-error deferral). */
static void retry_in(struct entry *e, double secs)
{
    e->next_attempt = time_now() + secs;
    e->due = time_tick(time_mono() + secs);
}

uint64_t sched_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* ---- retry heap -------------------------------------------------------- */

static void queue_maybe_free(struct dthread *t, struct dqueue *q);

static void heap_swap(struct dthread *t, uint32_t a, uint32_t b)
{
    struct entry *x = t->heap[a];
    t->heap[a] = t->heap[b];
    t->heap[b] = x;
    t->heap[a]->heap_idx = a;
    t->heap[b]->heap_idx = b;
}

static bool heap_reserve(struct dthread *t)
{
    if (t->nheap < t->heap_cap)
        return true;
    uint32_t cap = t->heap_cap ? t->heap_cap * 2 : 1024;
    struct entry **p = realloc(t->heap, cap * sizeof *p);
    if (!p)
        return false;
    t->heap = p;
    t->heap_cap = cap;
    return true;
}

void sched_heap_push(struct dthread *t, struct entry *e)
{
    if (!heap_reserve(t)) {
        /* out of memory: the entry stays in the spool and is delivered after a
         * restart; better than aborting every delivery in flight */
        log_error("%s: out of memory in the retry heap; delivery resumes after a restart",
                  e->id);
        char kb[ROUTE_QKEY_MAX];
        struct dqueue *q = sched_queue_find(t, sched_qkey(e, kb));
        if (q) {
            q->nentries--;
            metrics_add(M_QUEUE_DEPTH, e->domain, NULL, -1);
        }
        atomic_fetch_sub(&t->s->depth, 1);
        entry_free(e);
        if (q)
            queue_maybe_free(t, q);
        return;
    }
    uint32_t i = t->nheap++;
    t->heap[i] = e;
    e->heap_idx = i;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (t->heap[p]->due <= t->heap[i]->due)
            break;
        heap_swap(t, i, p);
        i = p;
    }
}

static void heap_sift_down(struct dthread *t, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->nheap && t->heap[l]->due < t->heap[m]->due)
            m = l;
        if (r < t->nheap && t->heap[r]->due < t->heap[m]->due)
            m = r;
        if (m == i)
            break;
        heap_swap(t, i, m);
        i = m;
    }
}

static struct entry *heap_pop(struct dthread *t)
{
    if (t->nheap == 0)
        return NULL;
    struct entry *top = t->heap[0];
    t->nheap--;
    if (t->nheap) {
        t->heap[0] = t->heap[t->nheap];
        t->heap[0]->heap_idx = 0;
        heap_sift_down(t, 0);
    }
    return top;
}

void sched_heap_rebuild(struct dthread *t)
{
    for (uint32_t i = 0; i < t->nheap; i++)
        t->heap[i]->heap_idx = i;
    for (uint32_t i = t->nheap / 2; i-- > 0;)
        heap_sift_down(t, i);
}

/* ---- timer and shaping ------------------------------------------------- */

static void on_timer(uv_timer_t *timer);

void sched_gen_refresh(struct dthread *t)
{
    struct runtime *rt = t->s->rt;
    if (t->gen && t->gen->id == atomic_load_explicit(&rt->gen_id, memory_order_acquire))
        return;
    struct cfg_gen *old = t->gen;
    t->gen = runtime_gen_acquire(rt);
    t->pool.gen = t->gen;
    if (old) {
        log_info("delivery thread %d: config generation %llu for new deliveries", t->index,
                 (unsigned long long)t->gen->id);
        /* throttled queues look at the new settings (rates, warm-up caps) now,
         * not when their old next time comes */
        if (t->throttled && !t->stopping && t->s->started)
            uv_timer_start(&t->timer, on_timer, 0, 0);
    }
    runtime_gen_release(old);   /* connections and attempts hold their own */
}

static int queue_egress_set(struct dqueue *q, const struct config *cfg);

/* q's route and egress settings as the thread's generation defines them (a reload
 * may have changed them). */
static void queue_route_refresh(struct dthread *t, struct dqueue *q)
{
    if (q->gen_id == t->gen->id)
        return;
    const struct route *r = route_current(t->gen->routes, q->route);
    if (r != q->route)
        log_info("queue %s: route '%s' as the reloaded config defines it", q->key, r->name);
    q->route = r;
    q->pool.route = r;
    if (queue_egress_set(q, t->gen->cfg) != PT_OK)   /* else as the last generation had it */
        log_warn("queue %s: out of memory taking the reloaded egress settings", q->key);
    q->gen_id = t->gen->id;
}

void sched_timer_arm(struct dthread *t)
{
    if (t->stopping || !t->s->started)
        return;
    /* all on the monotonic clock */
    double when = t->nheap ? time_tick_mono(t->heap[0]->due) : INFINITY;
    for (const struct suspension *su = t->suspended; su; su = su->next)
        if (su->until_mono < when)
            when = su->until_mono;
    double now = time_mono();
    for (struct dqueue *q = t->throttled; q; q = q->tnext) {
        double w = shape_next_time(q, now);
        if (w < when)
            when = w;
    }
    if (when == INFINITY) {
        uv_timer_stop(&t->timer);
        return;
    }
    double wait = when - now;
    uint64_t ms = wait <= 0 ? 0 : (uint64_t)(wait * 1000.0) + 1;
    uv_timer_start(&t->timer, on_timer, ms, 0);
}

/* q waits on the throttled list: the timer dispatches it when its shaping allows
 * (queue/shape.h: a token, the end of a suspension, a free connection). */
static void throttle(struct dthread *t, struct dqueue *q)
{
    if (!q->throttled) {         /* at the end: the one waiting longest looks first */
        q->throttled = true;
        q->tnext = NULL;
        if (!t->throttled)
            t->throttled_tail = &t->throttled;
        *t->throttled_tail = q;
        t->throttled_tail = &q->tnext;
        sched_timer_arm(t);
    }
}

/* Whether q may send one more message now; if not, it is throttled. */
static bool rate_ok(struct dthread *t, struct dqueue *q)
{
    if (shape_available(q, time_mono()) > 0)
        return true;
    throttle(t, q);
    return false;
}

/* ---- queues ------------------------------------------------------------ */

struct dqueue *sched_queue_find(struct dthread *t, const char *key)
{
    for (struct dqueue *q = t->buckets[sched_hash(key) % SCHED_Q_BUCKETS]; q; q = q->hnext)
        if (strcmp(q->key, key) == 0)
            return q;
    return NULL;
}

/* q's egress settings as cfg defines them (DESIGN §9): its source's warm-up
 * schedule and its tenant's pace. PT_NOMEM leaves q as it was. */
static int queue_egress_set(struct dqueue *q, const struct config *cfg)
{
    const struct cfg_egress_source *src = config_egress_source(cfg, q->source);
    int *warmup = NULL, n = src ? src->n_warmup : 0;
    if (n > 0) {
        if (!(warmup = malloc((size_t)n * sizeof *warmup)))
            return PT_NOMEM;
        memcpy(warmup, src->warmup, (size_t)n * sizeof *warmup);
    }
    free(q->shape.warmup);
    q->shape.warmup = warmup;
    q->shape.nwarmup = n;
    const struct cfg_tenant *ten = q->tenant ? config_tenant(cfg, q->tenant) : NULL;
    q->shape.pace_rate = ten ? ten->max_message_rate : 0;
    return PT_OK;
}

static struct dqueue *queue_get(struct dthread *t, const char *key, const struct route *r)
{
    struct dqueue *q = sched_queue_find(t, key);
    if (q)
        return q;
    uint64_t h = sched_hash(key) % SCHED_Q_BUCKETS;
    size_t klen = strlen(key);
    q = calloc(1, sizeof *q);
    if (!q || !(q->key = malloc(2 * klen + 2))) {
        free(q);
        return NULL;
    }
    memcpy(q->key, key, klen + 1);
    char *base = q->key + klen + 1;            /* the key without "|SOURCE" */
    memcpy(base, key, klen + 1);
    /* base: "domain\0source\0tenant" cut at the '|' (source) and '#' (tenant) */
    char *hash = strchr(base, '#');
    if (hash) {
        *hash = 0;
        q->tenant = hash + 1;
    }
    char *bar = strchr(base, '|');
    if (bar) {
        *bar = 0;
        q->source = bar + 1;
    }
    /* recovery queues entries before the thread has a generation: the startup one */
    if (queue_egress_set(q, t->gen ? t->gen->cfg : t->s->rt->cfg) != PT_OK) {
        free(q->key);   /* not sent uncapped: out of memory like any queue */
        free(q);
        return NULL;
    }
    q->route = r;
    q->pool.route = r;
    const char *slash = base[0] == '@' ? strrchr(base, '/') : NULL;
    q->domain = slash ? slash + 1 : base;      /* "@name/domain": an MX-way route */
    q->hnext = t->buckets[h];
    t->buckets[h] = q;
    return q;
}

const char *sched_qkey(const struct entry *e, char *kb)
{
    const char *k = route_queue_key(e->via, e->domain, kb);
    const char *src = entry_source(e);
    const char *ten = e->flags & ENTRY_F_TENANT_Q ? entry_tenant(e) : NULL;
    if (!src && !ten)
        return k;
    char tmp[ROUTE_QKEY_MAX];
    snprintf(tmp, sizeof tmp, "%s%s%s%s%s", k, src ? "|" : "", src ? src : "", ten ? "#" : "",
             ten ? ten : "");
    memcpy(kb, tmp, sizeof tmp);
    return kb;
}

struct dqueue *sched_queue_of(struct dthread *t, const struct entry *e)
{
    char kb[ROUTE_QKEY_MAX];
    return queue_get(t, sched_qkey(e, kb), e->via);
}

static void queue_maybe_free(struct dthread *t, struct dqueue *q)
{
    if (q->nentries || q->pool.nconn || q->throttled || t->stopping)
        return;
    struct dqueue **pp = &t->buckets[sched_hash(q->key) % SCHED_Q_BUCKETS];
    while (*pp && *pp != q)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = q->hnext;
    shape_q_free(q);
    free(q->key);
    free(q);
}

void sched_ready_push(struct dqueue *q, struct entry *e)
{
    int p = e->priority < SCHED_PRIOS ? e->priority : PRIO_NORMAL;
    e->next = NULL;
    if (q->ready_tail[p])
        q->ready_tail[p]->next = e;
    else
        q->ready[p] = e;
    q->ready_tail[p] = e;
    q->nready++;
}

static struct entry *ready_pop(struct dqueue *q)
{
    if (q->nready == 0)
        return NULL;
    /* high before normal before bulk, except that one pick in PRIO_FAIRNESS serves
     * bulk first and another normal first, so that neither starves */
    static const int orders[3][SCHED_PRIOS] = {
        { PRIO_HIGH, PRIO_NORMAL, PRIO_BULK },
        { PRIO_BULK, PRIO_NORMAL, PRIO_HIGH },
        { PRIO_NORMAL, PRIO_BULK, PRIO_HIGH },
    };
    uint32_t slot = ++q->picks % PRIO_FAIRNESS;
    const int *order = orders[slot == 0 ? 1 : slot == PRIO_FAIRNESS / 2 ? 2 : 0];
    for (int k = 0; k < SCHED_PRIOS; k++) {
        int p = order[k];
        struct entry *e = q->ready[p];
        if (!e)
            continue;
        q->ready[p] = e->next;
        if (!q->ready[p])
            q->ready_tail[p] = NULL;
        e->next = NULL;
        q->nready--;
        return e;
    }
    return NULL;
}

bool sched_make_ready(struct dthread *t, struct dqueue *q, struct entry *e)
{
    if (t->suspended && suspend_for(t, e)) {
        e->next = t->held;
        t->held = e;
        return false;
    }
    sched_ready_push(q, e);
    return true;
}

void sched_release_held(struct dthread *t)
{
    struct entry *list = t->held;
    t->held = NULL;
    double now = time_mono();
    while (list) {
        struct entry *e = list;
        list = e->next;
        struct dqueue *q = sched_queue_of(t, e);
        if (time_tick_mono(e->due) > now || !q) {
            sched_heap_push(t, e);
        } else if (sched_make_ready(t, q, e)) {
            sched_dispatch(t, q);
        }
    }
    sched_timer_arm(t);
}

/* ---- spool bookkeeping ------------------------------------------------- */

/* Writes the pending deletions (one RocksDB write, no fsync: losing them only
 * means a duplicate delivery after a crash, which at-least-once allows). */
static void flush_deletes(struct dthread *t)
{
    if (t->deletes) {
        spool_commit_nosync(t->s->rt->spool, t->deletes);
        t->deletes = NULL;
    }
}

static void on_check(uv_check_t *h)
{
    flush_deletes(h->data);
}

/* Deletes e's entry (and, when it is the message's last, its content) from the spool. */
static void spool_forget(struct dthread *t, const struct entry *e)
{
    struct spool *sp = t->s->rt->spool;
    if (bounce_entry_defer(e->id, e->domain))
        return;     /* a DSN job still reads the content: the entry goes after that read */
    if (e->ndomains <= 1) {
        /* the common case: batched with this loop turn's other deletions */
        if (!t->deletes)
            t->deletes = spool_batch_new();
        if (t->deletes) {
            spool_batch_del_entry(t->deletes, e->id, e->domain);
            spool_batch_del_content(t->deletes, e->id);
        }
    } else {
        flush_deletes(t);
        spool_remove_entry(sp, e->id, e->domain);
    }
}

void sched_entry_remove(struct dthread *t, struct dqueue *q, struct entry *e)
{
    spool_forget(t, e);
    q->nentries--;
    metrics_add(M_QUEUE_DEPTH, e->domain, NULL, -1);
    atomic_fetch_sub(&t->s->depth, 1);
    entry_free(e);
    queue_maybe_free(t, q);
}

static void entry_persist(struct dthread *t, const struct entry *e)
{
    struct buf rec;
    buf_init(&rec, 0);
    struct spool_batch *b = spool_batch_new();
    if (b && entry_encode(e, &rec) == PT_OK &&
        spool_batch_put_entry(b, e->id, e->domain, rec.data, rec.len) == PT_OK) {
        spool_commit_nosync(t->s->rt->spool, b);
        b = NULL;
    }
    spool_batch_free(b);
    buf_free(&rec);
}

/* Puts e (waiting for a retry at e->next_attempt) back in the queue: the local
 * retry heap, or with a shared queue (Redis) the shared due index, which any node
 * takes it from when it is due (this node forgets it). */
static void entry_wait(struct dthread *t, struct dqueue *q, struct entry *e)
{
    sched_due_set(e);
    entry_persist(t, e);
    if (!spool_shared(t->s->rt->spool)) {
        sched_heap_push(t, e);
        sched_timer_arm(t);
        return;
    }
    q->nentries--;
    metrics_add(M_QUEUE_DEPTH, e->domain, NULL, -1);
    atomic_fetch_sub(&t->s->depth, 1);
    entry_free(e);
    queue_maybe_free(t, q);
}

/* ---- dead letters ------------------------------------------------------ */

static void on_purge(uv_timer_t *timer);

/* How often the dead letters are checked: a tenth of dead_letter_after, within
 * [0.5 s, 60 s] (a purge comes at most that late). */
static uint64_t purge_every_ms(const struct dthread *t)
{
    double d = t->gen ? t->gen->cfg->queue.dead_letter_after / 10 : 1;
    d = d < 0.5 ? 0.5 : d > 60 ? 60 : d;
    return (uint64_t)(d * 1000);
}

static void purge_arm(struct dthread *t)
{
    if (t->stopping || !t->ndead || uv_is_active((uv_handle_t *)&t->purge))
        return;
    uint64_t ms = purge_every_ms(t);
    uv_timer_start(&t->purge, on_purge, ms, ms);
}

/* e (expired, flagged dead) joins the dead letters; it no longer counts as queued. */
static void dead_add(struct dthread *t, struct entry *e)
{
    e->next = t->dead;
    t->dead = e;
    t->ndead++;
    purge_arm(t);
}

void sched_dead_remove(struct dthread *t, struct entry *e)
{
    spool_forget(t, e);
    entry_free(e);
}

/* Dead letters older than dead_letter_after go (all of them when the reloaded
 * config no longer keeps any). Wall clock: the age survives restarts. */
static void on_purge(uv_timer_t *timer)
{
    struct dthread *t = timer->data;
    sched_gen_refresh(t);
    double keep = t->gen->cfg->queue.dead_letter_after, now = time_now();
    uint32_t n = 0;
    for (struct entry **pp = &t->dead; *pp;) {
        struct entry *e = *pp;
        if (keep > 0 && now - e->next_attempt < keep) {
            pp = &e->next;
            continue;
        }
        *pp = e->next;
        t->ndead--;
        n++;
        log_info("%s: dead letter for %s purged", e->id, e->domain);
        sched_dead_remove(t, e);
    }
    flush_deletes(t);               /* a timer turn: the check phase may be far off */
    if (!t->ndead)
        uv_timer_stop(&t->purge);
    else if (n == 0 && timer->repeat != purge_every_ms(t))
        uv_timer_set_repeat(&t->purge, purge_every_ms(t));
}

/* ---- outcomes ---------------------------------------------------------- */

/* Acts on an outcome verdict for e (taken back from the pool). */
void sched_settle(struct dthread *t, struct dqueue *q, struct entry *e, enum outcome_next next)
{
    switch (next) {
    case OUTCOME_DONE:
        sched_entry_remove(t, q, e);
        break;
    case OUTCOME_AGAIN:
        sched_make_ready(t, q, e);
        break;
    case OUTCOME_RETRY: {
        /* a shaping suspension holds the queue until its end, exactly: a retry
         * never waits longer because of the backoff */
        double until = shape_suspended_until(q, time_mono());
        if (until > 0 && e->next_attempt > until)
            e->next_attempt = until;
        entry_wait(t, q, e);
        break;
    }
    case OUTCOME_DEAD:
        entry_persist(t, e);           /* with its flag: dead after a restart too */
        log_info("%s: expired; kept as a dead letter for %.0f s", e->id,
                 t->gen->cfg->queue.dead_letter_after);
        q->nentries--;
        metrics_add(M_QUEUE_DEPTH, e->domain, NULL, -1);
        atomic_fetch_sub(&t->s->depth, 1);
        dead_add(t, e);
        queue_maybe_free(t, q);
        break;
    }
}

/* ---- dispatch: what the connection pool asks of us --------------------- */

/* Pops the next ready entry of q that may go now (taking its shaping token). */
static struct entry *pool_take(void *owner, void *queue)
{
    struct dthread *t = owner;
    struct dqueue *q = queue;
    if (!q->nready || !rate_ok(t, q)) {
        /* the domains of a site take turns on its connection slots */
        q->pool.close_idle = shape_contended(q, time_mono());
        return NULL;
    }
    struct entry *e = ready_pop(q);
    if (e)
        shape_take(q, time_mono());
    return e;
}

static void pool_unprepared(void *owner, void *queue, struct entry *e, int rc)
{
    struct dthread *t = owner;
    if (rc == PT_NOTFOUND) {
        log_error("%s: content missing from the spool; dropping the entry for %s", e->id,
                  e->domain);
        sched_entry_remove(t, queue, e);
        return;
    }
    /* out of memory or a read error (Redis unreachable): try again later */
    log_warn("%s: could not prepare the content (%d); trying again later", e->id, rc);
    retry_in(e, t->gen->cfg->queue.retry_interval);
    entry_wait(t, queue, e);
}

static void pool_giveback(void *owner, void *queue, struct entry *e)
{
    sched_make_ready(owner, queue, e);
}

static void on_adjust(void *arg, const char *domain, double fraction);

/* smtp_delivery_result: the handlers see one result per attempt, the first that
 * is not a success if there is one. */
static void run_hook(struct dthread *t, struct dqueue *q, const struct entry *e, int code,
                     const char *enhanced, const char *text, const char *site)
{
    struct hooks_delivery_result r = {
        .code = code, .enhanced = enhanced, .response = text, .domain = e->domain,
        .id = e->id, .site = site, .attempts = e->attempts, .tenant = entry_tenant(e),
    };
    t->hook_q = q;
    t->hook_e = e;
    hooks_delivery_run(runtime_gen_dlv_hooks(t->gen, t->index), &r, on_adjust, t);
    t->hook_q = NULL;
    t->hook_e = NULL;
}

/* adjust_domain_rate(domain, fraction) from a handler on this thread: the queue of
 * the attempt's entry when domain is its domain, else the domain's MX queue. */
static void on_adjust(void *arg, const char *domain, double fraction)
{
    struct dthread *t = arg;
    struct dqueue *q = t->hook_e && strcmp(t->hook_e->domain, domain) == 0
                       ? t->hook_q : sched_queue_find(t, domain);
    if (!q) {
        log_debug("adjust_domain_rate: no queue for %s on this thread", domain);
        return;
    }
    shape_adjust(q, fraction, time_mono());
}

static void pool_done(void *owner, void *queue, struct entry *e, const struct client_result *res,
                      uint32_t nres, const struct outcome_where *where)
{
    struct dthread *t = owner;
    struct client_result *mine = NULL;
    bool failed = false;             /* automation looks at failures only */
    for (uint32_t k = 0; k < nres && !failed; k++)
        failed = res[k].code / 100 != 2;
    if (failed && t->gen->cfg->shaping->n_autos &&
        (mine = malloc(nres * sizeof *mine)) != NULL) {
        /* automation sees every reply first: a `bounce` rule makes one permanent */
        memcpy(mine, res, nres * sizeof *mine);
        shape_result(t, queue, e, mine, nres, where);
        res = mine;
    }
    enum outcome_next next = outcome_apply(t->s->rt, t->gen->cfg, &t->loop, e, res, nres, where);
    if (runtime_gen_dlv_hooks(t->gen, t->index) && next != OUTCOME_AGAIN && nres > 0) {
        uint32_t k = 0;
        while (k + 1 < nres && res[k].code / 100 == 2)
            k++;
        run_hook(t, queue, e, res[k].code, res[k].enhanced, res[k].text, where->site);
    }
    free(mine);
    sched_settle(t, queue, e, next);
}

static void pool_fail(void *owner, void *queue, struct entry *e, int code, const char *enhanced,
                      const char *text)
{
    struct dthread *t = owner;
    struct dqueue *q = queue;
    bool all = e == NULL;
    char enh[16];
    snprintf(enh, sizeof enh, "%s", enhanced ? enhanced : "");
    int c = code;
    bool shaped = false;
    while (all ? (e = ready_pop(q)) != NULL : e != NULL) {
        if (!shaped) {              /* one reply for all: one automation trigger */
            shape_result_one(t, q, e, &c, enh, text);
            shaped = true;
        }
        enum outcome_next next = outcome_uniform(t->s->rt, t->gen->cfg, &t->loop, e, c, enh,
                                                 text);
        if (runtime_gen_dlv_hooks(t->gen, t->index))
            run_hook(t, q, e, c, enh, text, NULL);
        sched_settle(t, q, e, next);
        if (!all)
            break;
    }
}

static void pool_closed(void *owner, void *queue)
{
    struct dthread *t = owner;
    shape_conn_closed(queue);
    if (!t->stopping) {
        sched_gen_refresh(t);
        sched_dispatch(t, queue);
    }
    queue_maybe_free(t, queue);
}

static const struct pool_ops pool_ops = {
    .take = pool_take, .unprepared = pool_unprepared, .giveback = pool_giveback,
    .done = pool_done, .fail = pool_fail, .closed = pool_closed,
};

void sched_dispatch(struct dthread *t, struct dqueue *q)
{
    if (q->nready == 0)
        return;
    queue_route_refresh(t, q);
    if (!shape_rebind(t, q) || !shape_bind(t, q) || !rate_ok(t, q))
        return;                     /* a site lookup, or a throttled queue: the timer;
                                       or connections under old rules still closing */
    while (!t->stopping && q->pool.idle && q->nready > q->pool.nresolving && rate_ok(t, q) &&
           pool_reuse(&t->pool, &q->pool))
        ;
    /* a new connection only for ready entries that no resolving connection will
     * take: don't open 10 connections for 2 messages */
    double now = time_mono();
    while (!t->stopping && q->nready > q->pool.nresolving &&
           q->pool.nresolving < shape_available(q, now)) {
        if (!shape_conn_open(q, now)) {
            /* the connection limit (maybe taken by another queue of the site, whose
             * closing would not wake this one) or max_connection_rate: look again */
            if (q->pool.nconn == 0)
                throttle(t, q);
            break;
        }
        if (!pool_open(&t->pool, &q->pool, q, q->route, q->domain,
                       q->route->label && q->route->qkey ? q->route->label : q->domain)) {
            shape_conn_closed(q);
            if (q->pool.nconn == 0)   /* out of memory and nobody to take them: defer */
                pool_fail(t, q, NULL, 451, "4.3.0", "451 4.3.0 out of memory opening a connection");
            break;
        }
    }
}

/* ---- entry intake ------------------------------------------------------ */

static void thread_insert(struct dthread *t, struct entry *e, bool run)
{
    if (e->flags & ENTRY_F_DEAD) {      /* a dead letter recovered from the spool */
        atomic_fetch_sub(&t->s->depth, 1);
        dead_add(t, e);
        return;
    }
    struct dqueue *q = sched_queue_of(t, e);
    if (!q) {
        log_error("%s: out of memory queueing the entry; delivery resumes after a restart", e->id);
        atomic_fetch_sub(&t->s->depth, 1);
        entry_free(e);
        return;
    }
    q->nentries++;
    metrics_add(M_QUEUE_DEPTH, e->domain, NULL, 1);
    if (e->via->way == ROUTE_WAY_DISCARD) {
        e->attempts++;
        for (uint32_t i = 0; i < e->nrcpt; i++) {
            if (e->rcpts[i].state != RCPT_PENDING)
                continue;
            e->rcpts[i].state = RCPT_DELIVERED;
            outcome_log(e, LOG_DELIVERY, e->rcpts[i].addr, 250,
                        "250 2.0.0 discarded by transport route", NULL);
        }
        sched_entry_remove(t, q, e);
        return;
    }
    if (time_tick_mono(e->due) <= time_mono()) {
        if (sched_make_ready(t, q, e) && run)
            sched_dispatch(t, q);
    } else {
        sched_heap_push(t, e);
        if (run)
            sched_timer_arm(t);
    }
}

static void on_timer(uv_timer_t *timer)
{
    struct dthread *t = timer->data;
    sched_gen_refresh(t);
    double now = time_mono();
    bool ended = false;
    for (struct suspension **pp = &t->suspended; *pp;) {
        struct suspension *su = *pp;
        if (su->until_mono > now) {
            pp = &su->next;
            continue;
        }
        *pp = su->next;
        if (t->index == 0)
            log_info("queue %s: suspension ended", su->key);
        free(su);
        ended = true;
    }
    if (ended)
        sched_release_held(t);
    while (t->nheap && time_tick_mono(t->heap[0]->due) <= now) {
        struct entry *e = heap_pop(t);
        struct dqueue *q = sched_queue_of(t, e);
        if (!q) {
            retry_in(e, t->gen->cfg->queue.retry_interval);
            sched_heap_push(t, e);   /* out of memory: later */
            break;
        }
        if (sched_make_ready(t, q, e))
            sched_dispatch(t, q);
    }
    /* queues whose next max_message_rate token is due (dispatch may throttle
     * them again, onto the fresh list) */
    struct dqueue *q = t->throttled;
    t->throttled = NULL;
    now = time_mono();
    while (q) {
        struct dqueue *next = q->tnext;
        if (shape_suspended_until(q, now) > 0)
            shape_expire(t, q);      /* q stays (throttled) while this runs */
        q->throttled = false;
        q->tnext = NULL;
        queue_route_refresh(t, q);   /* a reload may have changed its pace or cap */
        if (shape_rebind_due(t, q) || shape_available(q, now) > 0)
            sched_dispatch(t, q);    /* a token (a connection may still be wanting) */
        else
            throttle(t, q);          /* not yet: back on the list */
        queue_maybe_free(t, q);
        q = next;
    }
    sched_timer_arm(t);
}

/* ---- the thread -------------------------------------------------------- */

void sched_reloaded(struct sched *s)
{
    for (int i = 0; s && i < s->n; i++)
        mbox_send(&s->t[i].mbox, TMSG_RELOADED, NULL, 0, 0);
}

int sched_post_call(struct sched *s, int i, struct sched_call *call)
{
    return mbox_send(&s->t[i].mbox, TMSG_CALL, call, 0, 0);
}

static void on_msg(void *owner, struct mbox_msg *msg)
{
    struct dthread *t = owner;
    if (!t->stopping)
        sched_gen_refresh(t);
    if (msg->kind == TMSG_ENTRY) {
        if (t->stopping) {
            atomic_fetch_sub(&t->s->depth, 1);
            entry_free(msg->ptr); /* durable already: picked up again at restart */
        } else {
            thread_insert(t, msg->ptr, true);
        }
    } else if (msg->kind == TMSG_RELOADED) {
        /* sched_gen_refresh above took the new generation */
    } else if (msg->kind == TMSG_CALL) {
        struct sched_call *call = msg->ptr;
        call->run(t, call);
    } else if (msg->kind == TMSG_STOP && !t->stopping) {
        t->stopping = true;
        t->pool.stopping = true;
        uv_timer_stop(&t->timer);
        uv_close((uv_handle_t *)&t->timer, NULL);
        uv_timer_stop(&t->purge);
        uv_close((uv_handle_t *)&t->purge, NULL);
        flush_deletes(t);
        uv_check_stop(&t->flush);
        uv_close((uv_handle_t *)&t->flush, NULL);
        pool_abort_all(&t->pool);
        dns_free(t->dns);
        t->dns = NULL;
        mbox_close(&t->mbox);
    }
    free(msg);
}

static void thread_main(void *arg)
{
    struct dthread *t = arg;
    sched_gen_refresh(t);
    if (t->ndead) {                 /* recovered dead letters: this config's pace */
        uv_timer_stop(&t->purge);
        purge_arm(t);
    }
    /* entries recovered before the start */
    for (int h = 0; h < SCHED_Q_BUCKETS; h++)
        for (struct dqueue *q = t->buckets[h]; q; q = q->hnext)
            sched_dispatch(t, q);
    sched_timer_arm(t);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    runtime_gen_thread_done();
}

/* ---- API --------------------------------------------------------------- */

struct sched *sched_new(struct runtime *rt, char *err, size_t errlen)
{
    struct sched *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->rt = rt;
    pthread_mutex_init(&s->sites_lock, NULL);
    s->n = rt->cfg->delivery.threads > 0 ? rt->cfg->delivery.threads : 1;
    s->t = calloc((size_t)s->n, sizeof *s->t);
    if (!s->t) {
        free(s);
        return NULL;
    }
    const struct config *cfg = rt->cfg;
    for (int i = 0; i < s->n; i++) {
        struct dthread *t = &s->t[i];
        t->s = s;
        t->index = i;
        if (uv_loop_init(&t->loop) || mbox_init(&t->mbox, &t->loop, on_msg, t) ||
            uv_timer_init(&t->loop, &t->timer) || uv_timer_init(&t->loop, &t->purge)) {
            snprintf(err, errlen, "cannot initialize delivery thread %d", i);
            return NULL;
        }
        t->timer.data = t;
        t->purge.data = t;
        uv_check_init(&t->loop, &t->flush);
        t->flush.data = t;
        uv_check_start(&t->flush, on_check);
        uv_unref((uv_handle_t *)&t->flush);
        t->dns = dns_new(&t->loop, (const char *const *)cfg->dns_resolvers, cfg->n_dns_resolvers,
                         err, errlen);
        if (!t->dns)
            return NULL;
        t->pool = (struct pool_thread){
            .loop = &t->loop, .dns = t->dns, .rt = rt, .ops = &pool_ops, .owner = t,
        };
    }
    suspend_restore(s);
    return s;
}

void sched_enqueue(struct sched *s, struct entry *e)
{
    if (!e->via) {  /* from the spool: the stored route name back to its route */
        struct cfg_gen *g = runtime_gen_acquire(s->rt);
        const struct route *r = route_lookup(g->routes, e->route, e->domain, e->id);
        runtime_gen_release(g);
        if (!r) {
            log_error("%s: out of memory routing the entry; delivery resumes after a restart",
                      e->id);
            entry_free(e);
            return;
        }
        entry_set_route_static(e, r->name);
        e->via = r;
    }
    sched_due_set(e);          /* new, recovered or claimed: from its stored time */
    char kb[ROUTE_QKEY_MAX];
    const char *key = sched_qkey(e, kb);
    struct dthread *t = &s->t[sched_hash(key) % (uint64_t)s->n];
    atomic_fetch_add(&s->depth, 1);
    if (!s->started) {
        thread_insert(t, e, false);
        return;
    }
    if (mbox_send(&t->mbox, TMSG_ENTRY, e, 0, 0) != PT_OK) {
        atomic_fetch_sub(&s->depth, 1);
        entry_free(e); /* durable: delivered after a restart */
    }
}

int sched_start(struct sched *s)
{
    s->started = true;
    for (int i = 0; i < s->n; i++) {
        if (uv_thread_create(&s->t[i].tid, thread_main, &s->t[i]))
            return PT_ERROR;
        char name[16];  /* named before "petrel ready" */
        snprintf(name, sizeof name, "petrel-dlv-%d", i);
        pthread_setname_np(s->t[i].tid, name);
    }
    return PT_OK;
}

void sched_stop(struct sched *s)
{
    if (!s->started)
        return;
    for (int i = 0; i < s->n; i++)
        mbox_send(&s->t[i].mbox, TMSG_STOP, NULL, 0, 0);
    for (int i = 0; i < s->n; i++)
        uv_thread_join(&s->t[i].tid);
    s->started = false;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++) {
        struct dthread *t = &s->t[i];
        for (uint32_t k = 0; k < t->nheap; k++)
            entry_free(t->heap[k]);
        free(t->heap);
        while (t->held) {
            struct entry *e = t->held;
            t->held = e->next;
            entry_free(e);
        }
        while (t->dead) {
            struct entry *e = t->dead;
            t->dead = e->next;
            entry_free(e);
        }
        while (t->suspended) {
            struct suspension *su = t->suspended;
            t->suspended = su->next;
            free(su);
        }
        for (int h = 0; h < SCHED_Q_BUCKETS; h++) {
            struct dqueue *q = t->buckets[h];
            while (q) {
                struct dqueue *next = q->hnext;
                for (int p = 0; p < SCHED_PRIOS; p++) {
                    struct entry *e = q->ready[p];
                    while (e) {
                        struct entry *n = e->next;
                        entry_free(e);
                        e = n;
                    }
                }
                shape_q_free(q);
                free(q->key);
                free(q);
                q = next;
            }
        }
        flush_deletes(t);
        if (t->dns)
            dns_free(t->dns);
        runtime_gen_release(t->gen);
        t->gen = t->pool.gen = NULL;
        uv_walk(&t->loop, close_walk, NULL);
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
    }
    free(s->t);
    shape_sites_free(s);
    pthread_mutex_destroy(&s->sites_lock);
    free(s);
}

uint64_t sched_depth(const struct sched *s)
{
    return atomic_load(&((struct sched *)s)->depth);
}
