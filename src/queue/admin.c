/* Admin calls on the delivery threads: the per-destination snapshot behind
 * GET /api/queue and the actions suspend, resume, flush, bounce and delete. Each
 * runs on every delivery thread's own loop (posted by message); the asking thread
 * waits with a deadline and never touches scheduler state itself.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/runtime.h"
#include "delivery/outcome.h"
#include "delivery/route.h"
#include "obs/log.h"
#include "cluster/limits.h"
#include "queue/entry.h"
#include "queue/sched.h"
#include "queue/sched_int.h"
#include "queue/shape.h"
#include "queue/spool.h"
#include "queue/spool_redis.h"
#include "queue/suspend.h"
#include "util/result.h"
#include "util/timeutil.h"

/* A call to every delivery thread (a snapshot or an admin action), shared by the
 * asking thread and the delivery threads; the last one out frees it (the asker may
 * give up waiting before a thread answers). */
struct thread_call {
    struct sched_call call;     /* first: what the delivery thread runs */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending;                /* threads that have not answered */
    int refs;                   /* pending + the asker */
    bool failed;
    struct sched_queue_info *q; /* snapshot: the answers */
    size_t n;
    struct sched_admin_req req; /* admin: the action (strings copied below) */
    char domain[300], id[ENTRY_ID_LEN + 1], reason[200];
    uint64_t affected;          /* admin: recipients, summed over the threads */
};

static void call_release(struct thread_call *sn)
{
    /* called with sn->lock held; unlocks */
    bool last = --sn->refs == 0;
    pthread_mutex_unlock(&sn->lock);
    if (last) {
        pthread_mutex_destroy(&sn->lock);
        pthread_cond_destroy(&sn->cond);
        free(sn->q);
        free(sn);
    }
}

static void min_time(double *slot, double t)
{
    if (t > 0 && (*slot == 0 || t < *slot))
        *slot = t;
}

/* ---- snapshot ------------------------------------------------------------ */

/* This thread's rows, one per (recipient domain, route), found by an
 * open-addressing index over the rows. */
struct rows {
    struct sched_queue_info *v;
    const struct route **via;       /* v[i]'s route */
    size_t n, cap;
    size_t *slot;                   /* 1 + row index, 0 = empty */
    size_t nslot;
    bool failed;
};

static uint64_t row_hash(const char *domain, const struct route *r)
{
    return sched_hash(domain) ^ ((uint64_t)(uintptr_t)r * 0x9e3779b97f4a7c15ull);
}

static bool rows_grow(struct rows *rs)
{
    size_t cap = rs->cap ? rs->cap * 2 : 16;
    struct sched_queue_info *v = realloc(rs->v, cap * sizeof *v);
    if (v)
        rs->v = v;
    const struct route **via = realloc(rs->via, cap * sizeof *via);
    if (via)
        rs->via = via;
    size_t *slot = calloc(cap * 2, sizeof *slot);
    if (!v || !via || !slot) {
        free(slot);
        return false;
    }
    free(rs->slot);
    rs->slot = slot;
    rs->nslot = cap * 2;
    rs->cap = cap;
    for (size_t i = 0; i < rs->n; i++) {
        size_t h = row_hash(rs->v[i].key, rs->via[i]) % rs->nslot;
        while (rs->slot[h])
            h = (h + 1) % rs->nslot;
        rs->slot[h] = i + 1;
    }
    return true;
}

/* The row of (domain, r) on thread t, made if new; NULL when out of memory. */
static struct sched_queue_info *row_of(struct rows *rs, struct dthread *t, const char *domain,
                                       const struct route *r, const struct dqueue *q)
{
    if (rs->failed)
        return NULL;
    if (rs->nslot) {
        size_t h = row_hash(domain, r) % rs->nslot;
        for (; rs->slot[h]; h = (h + 1) % rs->nslot) {
            size_t i = rs->slot[h] - 1;
            if (rs->via[i] == r && strcmp(rs->v[i].key, domain) == 0)
                return &rs->v[i];
        }
    }
    if (rs->n == rs->cap && !rows_grow(rs)) {
        rs->failed = true;
        return NULL;
    }
    struct sched_queue_info *qi = &rs->v[rs->n];
    memset(qi, 0, sizeof *qi);
    snprintf(qi->key, sizeof qi->key, "%s", domain);
    snprintf(qi->route, sizeof qi->route, "%s", r ? r->name : "");
    qi->connections = q ? q->pool.nconn : 0;
    qi->shaping_rate = -1;
    if (q)
        shape_info(q, qi);
    for (const struct suspension *su = t->suspended; su; su = su->next)
        if (strcmp(su->key, domain) == 0 || (r && route_named(r, su->key))) {
            qi->suspended = true;
            if (su->until > qi->suspended_until)
                qi->suspended_until = su->until;
        }
    rs->via[rs->n] = r;
    size_t h = row_hash(domain, r) % rs->nslot;
    while (rs->slot[h])
        h = (h + 1) % rs->nslot;
    rs->slot[h] = ++rs->n;
    return qi;
}

static void row_add(struct rows *rs, struct dthread *t, const struct entry *e,
                    const struct dqueue *q, double next)
{
    struct sched_queue_info *qi = row_of(rs, t, e->domain, e->via, q);
    if (!qi)
        return;
    qi->count++;
    min_time(&qi->oldest, e->received_at);
    min_time(&qi->next_attempt, next);
}

struct in_flight {
    struct rows *rs;
    struct dthread *t;
};

static void count_in_flight(void *arg, void *queue, const struct entry *e)
{
    struct in_flight *f = arg;
    const struct dqueue *q = queue;
    if (!q->route->qkey)
        return;                          /* counted with its MX queue */
    struct sched_queue_info *qi = row_of(f->rs, f->t, e->domain, e->via, q);
    if (qi) {
        qi->count++;
        min_time(&qi->oldest, e->received_at);
    }
}

/* Appends this thread's rows to the caller's snapshot, tells it this thread is
 * done, and frees the rows. */
static void rows_hand_over(struct thread_call *sn, struct rows *rs)
{
    pthread_mutex_lock(&sn->lock);
    bool failed = rs->failed;
    if (!failed && rs->n) {
        struct sched_queue_info *p = realloc(sn->q, (sn->n + rs->n) * sizeof *p);
        if (p) {
            memcpy(p + sn->n, rs->v, rs->n * sizeof *p);
            sn->q = p;
            sn->n += rs->n;
        } else {
            failed = true;
        }
    }
    sn->failed |= failed;
    sn->pending--;
    pthread_cond_signal(&sn->cond);
    call_release(sn);
    free(rs->v);
    free(rs->via);
    free(rs->slot);
}

/* An entry waiting (in the retry heap or held) to go at next (wall clock): counted
 * with its MX queue when it has one, else in a row of its own. */
static void waiting_row(struct rows *rs, struct dthread *t, const struct entry *e, double next)
{
    char kb[ROUTE_QKEY_MAX];
    const struct dqueue *q = sched_queue_find(t, sched_qkey(e, kb));
    if (q && !q->route->qkey) {
        struct sched_queue_info *qi = row_of(rs, t, e->domain, e->via, q);
        if (qi) {
            min_time(&qi->oldest, e->received_at);
            min_time(&qi->next_attempt, next);
        }
    } else {
        row_add(rs, t, e, q, next);
    }
}

/* On the delivery thread: this thread's queues into sn. Entries in flight are
 * counted but have no next attempt. */
static void snapshot_run(struct dthread *t, struct sched_call *call)
{
    struct thread_call *sn = (struct thread_call *)call;
    struct rows rs = { .failed = t->stopping };
    double now = time_now();
    for (int h = 0; h < SCHED_Q_BUCKETS && !rs.failed; h++)
        for (struct dqueue *q = t->buckets[h]; q && !rs.failed; q = q->hnext) {
            uint32_t waiting = 0;
            for (int p = 0; p < SCHED_PRIOS; p++)
                for (struct entry *e = q->ready[p]; e; e = e->next, waiting++)
                    row_add(&rs, t, e, q, now);
            if (!q->route->qkey && (q->pool.nconn || q->nentries)) {
                /* an MX queue is one domain: its row also shows what is in flight */
                struct sched_queue_info *qi = row_of(&rs, t, q->domain, q->route, q);
                if (qi)
                    qi->count += q->nentries - waiting;  /* heap/held ones are added below */
            }
        }
    struct in_flight f = { &rs, t };
    pool_for_each_entry(&t->pool, count_in_flight, &f);  /* relay queues' own count */
    for (uint32_t i = 0; i < t->nheap && !rs.failed; i++) {
        const struct entry *e = t->heap[i];
        /* when it will go, as the wall clock reads now (its timer is monotonic) */
        waiting_row(&rs, t, e, time_wall_at(time_tick_mono(e->due)));
    }
    for (const struct entry *e = t->held; e && !rs.failed; e = e->next) {
        const struct suspension *su = suspend_for(t, e);
        waiting_row(&rs, t, e, su ? su->until : e->next_attempt);
    }
    for (const struct entry *e = t->dead; e && !rs.failed; e = e->next) {
        struct sched_queue_info *qi = row_of(&rs, t, e->domain, e->via, NULL);
        if (qi)
            qi->dead++;
    }
    rows_hand_over(sn, &rs);
}

/* ---- by tenant -------------------------------------------------------- */

static void tenant_row(struct rows *rs, struct dthread *t, const struct entry *e, double next)
{
    const char *ten = entry_tenant(e);
    struct sched_queue_info *qi = row_of(rs, t, ten ? ten : "", NULL, NULL);
    if (!qi)
        return;
    qi->count++;
    min_time(&qi->oldest, e->received_at);
    if (next > 0)
        min_time(&qi->next_attempt, next);
}

static void tenant_in_flight(void *arg, void *queue, const struct entry *e)
{
    (void)queue;
    struct in_flight *f = arg;
    tenant_row(f->rs, f->t, e, 0);
}

/* On the delivery thread: every entry it holds, counted by tenant (key "" = none). */
static void tenants_run(struct dthread *t, struct sched_call *call)
{
    struct thread_call *sn = (struct thread_call *)call;
    struct rows rs = { .failed = t->stopping };
    double now = time_now();
    for (int h = 0; h < SCHED_Q_BUCKETS && !rs.failed; h++)
        for (struct dqueue *q = t->buckets[h]; q && !rs.failed; q = q->hnext)
            for (int p = 0; p < SCHED_PRIOS; p++)
                for (struct entry *e = q->ready[p]; e; e = e->next)
                    tenant_row(&rs, t, e, now);
    struct in_flight f = { &rs, t };
    pool_for_each_entry(&t->pool, tenant_in_flight, &f);
    for (uint32_t i = 0; i < t->nheap && !rs.failed; i++)
        tenant_row(&rs, t, t->heap[i], time_wall_at(time_tick_mono(t->heap[i]->due)));
    for (const struct entry *e = t->held; e && !rs.failed; e = e->next)
        tenant_row(&rs, t, e, e->next_attempt);
    rows_hand_over(sn, &rs);
}

static int info_cmp(const void *a, const void *b)
{
    const struct sched_queue_info *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : strcmp(x->route, y->route);
}

static struct thread_call *call_new(void (*run)(struct dthread *, struct sched_call *))
{
    struct thread_call *sn = calloc(1, sizeof *sn);
    if (!sn)
        return NULL;
    sn->call.run = run;
    pthread_mutex_init(&sn->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sn->cond, &ca);
    pthread_condattr_destroy(&ca);
    sn->refs = 1;
    return sn;
}

/* Posts sn to every delivery thread and waits up to timeout_s for their answers;
 * returns with sn->lock held (the caller reads the answers, then releases). */
static int call_threads(struct sched *s, struct thread_call *sn, double timeout_s)
{
    pthread_mutex_lock(&sn->lock);
    for (int i = 0; i < s->n; i++) {
        sn->pending++;
        sn->refs++;
        if (sched_post_call(s, i, &sn->call) != PT_OK) {
            sn->pending--;
            sn->refs--;
            sn->failed = true;
        }
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)timeout_s;
    dl.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    while (sn->pending > 0 && !sn->failed)
        if (pthread_cond_timedwait(&sn->cond, &sn->lock, &dl) != 0)
            break;
    return sn->pending > 0 || sn->failed ? PT_ERROR : PT_OK;
}

static int snapshot_local(struct sched *s, double timeout_s, struct sched_queue_info **out,
                          size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s->started)
        return PT_ERROR;
    struct thread_call *sn = call_new(snapshot_run);
    if (!sn)
        return PT_NOMEM;
    int rc = call_threads(s, sn, timeout_s);
    if (rc == PT_OK) {
        if (sn->n)
            qsort(sn->q, sn->n, sizeof *sn->q, info_cmp);
        *out = sn->q;
        *n = sn->n;
        sn->q = NULL;
    }
    call_release(sn);
    return rc;
}

int sched_snapshot_tenants(struct sched *s, double timeout_s, struct sched_queue_info **out,
                           size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s->started)
        return PT_ERROR;
    struct thread_call *sn = call_new(tenants_run);
    if (!sn)
        return PT_NOMEM;
    int rc = call_threads(s, sn, timeout_s);
    if (rc == PT_OK && sn->n) {
        qsort(sn->q, sn->n, sizeof *sn->q, info_cmp);
        size_t k = 0;            /* one row per tenant: the threads' rows summed */
        for (size_t i = 0; i < sn->n; i++) {
            if (k && strcmp(sn->q[k - 1].key, sn->q[i].key) == 0) {
                sn->q[k - 1].count += sn->q[i].count;
                min_time(&sn->q[k - 1].oldest, sn->q[i].oldest);
                min_time(&sn->q[k - 1].next_attempt, sn->q[i].next_attempt);
            } else {
                sn->q[k++] = sn->q[i];
            }
        }
        sn->n = k;
    }
    if (rc == PT_OK) {
        *out = sn->q;
        *n = sn->n;
        sn->q = NULL;
    }
    call_release(sn);
    return rc;
}

/* ---- admin actions ------------------------------------------------------ */

static bool admin_match(const struct entry *e, const struct sched_admin_req *rq)
{
    if (rq->id)
        return strcmp(e->id, rq->id) == 0;
    if (!rq->domain)
        return true;
    return strcmp(e->domain, rq->domain) == 0 || route_named(e->via, rq->domain);
}

/* One Admin record per pending recipient of e (DESIGN §6 keys; code null). */
static void admin_log(const struct entry *e, const char *what)
{
    for (uint32_t i = 0; i < e->nrcpt; i++)
        if (e->rcpts[i].state == RCPT_PENDING)
            outcome_log(e, LOG_ADMIN, e->rcpts[i].addr, -1, what, NULL);
}

enum { IN_HEAP = 1, IN_READY = 2, IN_HELD = 4, IN_ALL = 7 };

/* Waiting entries in the lists `where` that match rq: their pending recipients
 * counted into *n and given an Admin record saying what (unless NULL); with take
 * also unlinked and returned (by ->next). */
static struct entry *admin_scan(struct dthread *t, const struct sched_admin_req *rq, int where,
                                bool take, const char *what, uint64_t *n)
{
    struct entry *list = NULL;
    if (where & IN_HEAP) {
        uint32_t keep = 0;
        for (uint32_t i = 0; i < t->nheap; i++) {
            struct entry *e = t->heap[i];
            if (!admin_match(e, rq)) {
                t->heap[keep++] = e;
                continue;
            }
            *n += entry_pending(e);
            if (what)
                admin_log(e, what);
            if (take) {
                e->next = list;
                list = e;
            } else {
                t->heap[keep++] = e;
            }
        }
        if (keep != t->nheap) {
            t->nheap = keep;
            sched_heap_rebuild(t);
        }
    }
    if (where & IN_HELD)
        for (struct entry **pp = &t->held; *pp;) {
            struct entry *e = *pp;
            if (!admin_match(e, rq)) {
                pp = &e->next;
                continue;
            }
            *n += entry_pending(e);
            if (what)
                admin_log(e, what);
            if (take) {
                *pp = e->next;
                e->next = list;
                list = e;
            } else {
                pp = &e->next;
            }
        }
    for (int h = 0; h < SCHED_Q_BUCKETS && (where & IN_READY); h++)
        for (struct dqueue *q = t->buckets[h]; q; q = q->hnext)
            for (int p = 0; p < SCHED_PRIOS; p++) {
                struct entry **pp = &q->ready[p];
                q->ready_tail[p] = NULL;
                while (*pp) {
                    struct entry *e = *pp;
                    bool match = admin_match(e, rq);
                    if (match) {
                        *n += entry_pending(e);
                        if (what)
                            admin_log(e, what);
                    }
                    if (match && take) {
                        *pp = e->next;
                        q->nready--;
                        e->next = list;
                        list = e;
                    } else {
                        q->ready_tail[p] = e;
                        pp = &e->next;
                    }
                }
            }
    return list;
}

/* Bounces (with a DSN and Bounce records) or deletes one taken entry. */
static void admin_finish(struct dthread *t, struct entry *e, const struct sched_admin_req *rq)
{
    bool bounce = rq->op == SCHED_BOUNCE;
    char diag[300];
    snprintf(diag, sizeof diag, "550 5.0.0 %s by the administrator%s%s",
             bounce ? "bounced" : "deleted", rq->reason ? ": " : "", rq->reason ? rq->reason : "");
    if (!bounce)
        log_info("%s: %u recipient(s) for %s deleted by the administrator%s%s", e->id,
                 entry_pending(e), e->domain, rq->reason ? ": " : "",
                 rq->reason ? rq->reason : "");
    outcome_fail_pending(t->s->rt, t->gen->cfg, &t->loop, e, bounce ? LOG_BOUNCE : NULL, 550, "5.0.0", diag, NULL);
    sched_entry_remove(t, sched_queue_of(t, e), e);
}

/* The Admin records' response: what was done, by whom, until when and why. */
static void admin_what(const struct sched_admin_req *rq, char *out, size_t n)
{
    static const char *const verbs[] = {
        [SCHED_SUSPEND] = "suspended", [SCHED_RESUME] = "resumed", [SCHED_FLUSH] = "flushed",
        [SCHED_BOUNCE] = "bounced", [SCHED_DELETE] = "deleted",
    };
    char until[64] = "";
    if (rq->op == SCHED_SUSPEND) {
        char ts[48];
        time_rfc3339(rq->until, ts, sizeof ts);
        snprintf(until, sizeof until, " until %s", ts);
    }
    snprintf(out, n, "%s by the administrator%s%s%s", verbs[rq->op], until,
             rq->reason ? ": " : "", rq->reason ? rq->reason : "");
}

static uint64_t admin_run(struct dthread *t, const struct sched_admin_req *rq)
{
    uint64_t n = 0;
    struct entry *list = NULL;
    char what[400];
    admin_what(rq, what, sizeof what);
    switch (rq->op) {
    case SCHED_SUSPEND: {
        if (!suspend_set(t, rq->domain, rq->until)) {
            log_error("queue %s: out of memory suspending it", rq->domain);
            break;
        }
        admin_scan(t, rq, IN_HEAP | IN_HELD, false, what, &n);
        list = admin_scan(t, rq, IN_READY, true, what, &n);
        while (list) {               /* ready mail waits now */
            struct entry *e = list;
            list = e->next;
            e->next = t->held;
            t->held = e;
        }
        break;
    }
    case SCHED_RESUME:
        for (struct suspension **pp = &t->suspended; *pp; pp = &(*pp)->next)
            if (strcmp((*pp)->key, rq->domain) == 0) {
                struct suspension *su = *pp;
                *pp = su->next;
                free(su);
                break;
            }
        admin_scan(t, rq, IN_ALL, false, what, &n);
        sched_release_held(t);
        break;
    case SCHED_FLUSH: {
        double now = time_now();
        list = admin_scan(t, rq, IN_HEAP, true, what, &n);
        while (list) {
            struct entry *e = list;
            list = e->next;
            e->next_attempt = now;
            sched_due_set(e);
            struct dqueue *q = sched_queue_of(t, e);
            if (!q)
                sched_heap_push(t, e);
            else if (sched_make_ready(t, q, e))
                sched_dispatch(t, q);
        }
        break;
    }
    case SCHED_BOUNCE:
    case SCHED_DELETE:
        list = admin_scan(t, rq, IN_ALL, true, what, &n);
        while (list) {
            struct entry *e = list;
            list = e->next;
            admin_finish(t, e, rq);
        }
        /* dead letters: bounced already; delete removes them */
        for (struct entry **pp = &t->dead; rq->op == SCHED_DELETE && *pp;) {
            struct entry *e = *pp;
            if (!admin_match(e, rq)) {
                pp = &e->next;
                continue;
            }
            *pp = e->next;
            t->ndead--;
            n += e->nrcpt;
            log_info("%s: dead letter for %s deleted by the administrator%s%s", e->id,
                     e->domain, rq->reason ? ": " : "", rq->reason ? rq->reason : "");
            sched_dead_remove(t, e);
        }
        break;
    }
    sched_timer_arm(t);
    return n;
}

static void admin_answer(struct dthread *t, struct sched_call *call)
{
    struct thread_call *sn = (struct thread_call *)call;
    uint64_t n = t->stopping ? 0 : admin_run(t, &sn->req);
    pthread_mutex_lock(&sn->lock);
    sn->failed |= t->stopping;
    sn->affected += n;
    sn->pending--;
    pthread_cond_signal(&sn->cond);
    call_release(sn);
}

int sched_admin_local(struct sched *s, const struct sched_admin_req *req, double timeout_s,
                      uint64_t *affected)
{
    *affected = 0;
    if (!s->started)
        return PT_ERROR;
    struct thread_call *sn = call_new(admin_answer);
    if (!sn)
        return PT_NOMEM;
    sn->req = *req;
    if (req->domain) {
        snprintf(sn->domain, sizeof sn->domain, "%s", req->domain);
        sn->req.domain = sn->domain;
    }
    if (req->id) {
        snprintf(sn->id, sizeof sn->id, "%s", req->id);
        sn->req.id = sn->id;
    }
    if (req->reason) {
        snprintf(sn->reason, sizeof sn->reason, "%s", req->reason);
        sn->req.reason = sn->reason;
    }
    if (req->op == SCHED_SUSPEND || req->op == SCHED_RESUME)
        suspend_persist(s, sn->req.domain, req->until, req->op == SCHED_SUSPEND);
    int rc = call_threads(s, sn, timeout_s);
    *affected = sn->affected;
    call_release(sn);
    return rc;
}

/* ---- the shared queue (Redis backend) -------------------------------------
 * The queue's contents live in Redis, so answers come from there; this node's
 * delivery threads add what only they know (connections) and act on the entries
 * they hold. Entries another node holds (delivering, or waiting for a connection
 * there) are left to that node, as in-flight entries are locally. */

int sched_snapshot(struct sched *s, double timeout_s, struct sched_queue_info **out, size_t *n)
{
    if (!spool_shared(s->rt->spool))
        return snapshot_local(s, timeout_s, out, n);
    *out = NULL;
    *n = 0;
    struct sched_queue_info *loc = NULL;
    size_t nloc = 0;
    int rc = snapshot_local(s, timeout_s, &loc, &nloc);
    if (rc != PT_OK)
        return rc;
    struct spool_redis_queue *rq = NULL;
    size_t nrq = 0;
    uint64_t total = 0;
    rc = spool_redis_queues(s->rt->spool, &rq, &nrq, &total);
    if (rc != PT_OK) {
        free(loc);
        return rc;
    }
    struct sched_queue_info *q = calloc(nrq ? nrq : 1, sizeof *q);
    if (!q) {
        free(loc);
        free(rq);
        return PT_NOMEM;
    }
    for (size_t i = 0; i < nrq; i++) {
        snprintf(q[i].key, sizeof q[i].key, "%s", rq[i].domain);
        q[i].count = (uint32_t)rq[i].count;
        q[i].oldest = rq[i].oldest;
        q[i].next_attempt = rq[i].next_attempt;
        q[i].suspended = rq[i].suspended_until > 0;
        q[i].suspended_until = rq[i].suspended_until;
        for (size_t k = 0; k < nloc; k++)
            if (strcmp(loc[k].key, q[i].key) == 0)
                q[i].connections = loc[k].connections;
    }
    free(loc);
    free(rq);
    qsort(q, nrq, sizeof *q, info_cmp);
    *out = q;
    *n = nrq;
    return PT_OK;
}

struct shared_count {
    struct sched *s;
    uint64_t rcpts;
    bool enqueue;               /* hand the entries to this node's threads */
};

static void shared_rec(void *arg, const void *rec, size_t len)
{
    struct shared_count *sc = arg;
    struct entry *e;
    if (entry_decode(rec, len, &e) != PT_OK)
        return;
    if (!sc->enqueue) {
        sc->rcpts += entry_pending(e);
        entry_free(e);
        return;
    }
    e->next_attempt = time_now();
    sched_enqueue(sc->s, e);
}

int sched_admin(struct sched *s, const struct sched_admin_req *req, double timeout_s,
                uint64_t *affected)
{
    if (!spool_shared(s->rt->spool)) {
        if (req->op == SCHED_SUSPEND || req->op == SCHED_RESUME)
            cluster_limits_suspend(s->rt->climits, req->domain,
                                   req->op == SCHED_SUSPEND ? req->until : 0, req->reason);
        return sched_admin_local(s, req, timeout_s, affected);
    }
    *affected = 0;
    if (!s->started)
        return PT_ERROR;
    struct spool *sp = s->rt->spool;
    struct shared_count sc = { .s = s };
    int rc = PT_OK;
    switch (req->op) {
    case SCHED_SUSPEND:
        rc = spool_redis_suspend(sp, req->domain, req->until, req->reason, shared_rec, &sc);
        break;
    case SCHED_RESUME:
        rc = spool_redis_resume(sp, req->domain, shared_rec, &sc);
        break;
    case SCHED_FLUSH:
        rc = spool_redis_flush(sp, req->domain, shared_rec, &sc);
        break;
    case SCHED_BOUNCE:
    case SCHED_DELETE:
        /* leased to this node and queued here, then bounced or deleted by the
         * local action below (each delivery thread's mailbox keeps the order) */
        sc.enqueue = true;
        rc = spool_redis_take(sp, req->id, req->domain, shared_rec, &sc);
        break;
    }
    if (rc != PT_OK)
        return rc;
    uint64_t local = 0;
    rc = sched_admin_local(s, req, timeout_s, &local);
    *affected = sc.rcpts + local;
    return rc;
}
