/* Admin calls on the delivery threads: the per-destination snapshot behind
 * GET /api/queue and the actions suspend, resume, flush, bounce and delete. Each
 * runs on every delivery thread's own loop (posted by message); the asking thread
 * waits with a deadline and never touches scheduler state itself.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/runtime.h"
#include "delivery/outcome.h"
#include "delivery/route.h"
#include "obs/log.h"
#include "queue/entry.h"
#include "queue/sched.h"
#include "queue/sched_int.h"
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

/* On the delivery thread: this thread's queues into sn. */
static void snapshot_run(struct dthread *t, struct sched_call *call)
{
    struct thread_call *sn = (struct thread_call *)call;
    struct sched_queue_info *loc = NULL;
    size_t n = 0, cap = 0;
    bool failed = t->stopping;
    double now = time_now();
    for (int h = 0; h < SCHED_Q_BUCKETS && !failed; h++)
        for (struct dqueue *q = t->buckets[h]; q && !failed; q = q->hnext) {
            q->snap = 0;
            if (!q->nentries && !q->pool.nconn)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct sched_queue_info *p = realloc(loc, ncap * sizeof *p);
                if (!p) {
                    failed = true;
                    break;
                }
                loc = p;
                cap = ncap;
            }
            struct sched_queue_info *qi = &loc[n++];
            memset(qi, 0, sizeof *qi);
            snprintf(qi->key, sizeof qi->key, "%s", q->key);
            qi->count = q->nentries;
            qi->connections = q->pool.nconn;
            const struct suspension *su = sched_suspension_of(t, q->key);
            qi->suspended = su != NULL;
            qi->suspended_until = su ? su->until : 0;
            q->snap = n;
            for (int p = 0; p < SCHED_PRIOS; p++)
                for (struct entry *e = q->ready[p]; e; e = e->next) {
                    min_time(&qi->oldest, e->received_at);
                    min_time(&qi->next_attempt, now);
                }
        }
    for (uint32_t i = 0; i < t->nheap && !failed; i++) {  /* waiting for a retry */
        const struct entry *e = t->heap[i];
        const char *key = route_queue_key(route_of(t->s->routes, e), e);
        struct dqueue *q = sched_queue_find(t, key);
        if (q && q->snap) {
            min_time(&loc[q->snap - 1].oldest, e->received_at);
            min_time(&loc[q->snap - 1].next_attempt, e->next_attempt);
        }
    }
    pthread_mutex_lock(&sn->lock);
    if (!failed && n) {
        struct sched_queue_info *p = realloc(sn->q, (sn->n + n) * sizeof *p);
        if (p) {
            memcpy(p + sn->n, loc, n * sizeof *p);
            sn->q = p;
            sn->n += n;
        } else {
            failed = true;
        }
    }
    sn->failed |= failed;
    sn->pending--;
    pthread_cond_signal(&sn->cond);
    call_release(sn);
    free(loc);
}

static int info_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sched_queue_info *)a)->key,
                  ((const struct sched_queue_info *)b)->key);
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

int sched_snapshot(struct sched *s, double timeout_s, struct sched_queue_info **out,
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
        qsort(sn->q, sn->n, sizeof *sn->q, info_cmp);
        *out = sn->q;
        *n = sn->n;
        sn->q = NULL;
    }
    call_release(sn);
    return rc;
}

/* ---- admin actions ------------------------------------------------------ */

static bool admin_match(struct dthread *t, const struct entry *e,
                        const struct sched_admin_req *rq)
{
    if (rq->id)
        return strcmp(e->id, rq->id) == 0;
    if (!rq->domain)
        return true;
    return strcmp(e->domain, rq->domain) == 0 ||
           strcmp(route_queue_key(route_of(t->s->routes, e), e), rq->domain) == 0;
}

/* Waiting entries (retry heap, and unless heap_only the ready lists) that match:
 * counted into *pending_rcpts, and with take also unlinked and returned (by ->next). */
static struct entry *admin_scan(struct dthread *t, const struct sched_admin_req *rq,
                                bool heap_only, bool take, uint64_t *pending_rcpts)
{
    struct entry *list = NULL;
    uint32_t keep = 0;
    for (uint32_t i = 0; i < t->nheap; i++) {
        struct entry *e = t->heap[i];
        if (!admin_match(t, e, rq)) {
            t->heap[keep++] = e;
            continue;
        }
        *pending_rcpts += entry_pending(e);
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
    for (int h = 0; h < SCHED_Q_BUCKETS && !heap_only; h++)
        for (struct dqueue *q = t->buckets[h]; q; q = q->hnext)
            for (int p = 0; p < SCHED_PRIOS; p++) {
                struct entry **pp = &q->ready[p];
                q->ready_tail[p] = NULL;
                while (*pp) {
                    struct entry *e = *pp;
                    bool match = admin_match(t, e, rq);
                    if (match)
                        *pending_rcpts += entry_pending(e);
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
    outcome_fail_pending(t->s->rt, e, bounce ? LOG_BOUNCE : NULL, 550, "5.0.0", diag, NULL);
    sched_entry_remove(t, sched_queue_of(t, e), e);
}

static uint64_t admin_run(struct dthread *t, const struct sched_admin_req *rq)
{
    uint64_t n = 0;
    struct entry *list = NULL;
    switch (rq->op) {
    case SCHED_SUSPEND: {
        struct suspension *su = sched_suspension_of(t, rq->domain);
        if (!su && (su = calloc(1, sizeof *su)) != NULL) {
            snprintf(su->key, sizeof su->key, "%s", rq->domain);
            su->next = t->suspended;
            t->suspended = su;
        }
        if (su)
            su->until = rq->until;
        admin_scan(t, rq, false, false, &n);
        break;
    }
    case SCHED_RESUME: {
        for (struct suspension **pp = &t->suspended; *pp; pp = &(*pp)->next)
            if (strcmp((*pp)->key, rq->domain) == 0) {
                struct suspension *su = *pp;
                *pp = su->next;
                free(su);
                break;
            }
        admin_scan(t, rq, false, false, &n);
        struct dqueue *q = sched_queue_find(t, rq->domain);
        if (q)
            sched_dispatch(t, q);
        break;
    }
    case SCHED_FLUSH: {
        double now = time_now();
        list = admin_scan(t, rq, true, true, &n);
        while (list) {
            struct entry *e = list;
            list = e->next;
            e->next_attempt = now;
            struct dqueue *q = sched_queue_of(t, e);
            sched_ready_push(q, e);
            sched_dispatch(t, q);
        }
        break;
    }
    case SCHED_BOUNCE:
    case SCHED_DELETE:
        list = admin_scan(t, rq, false, true, &n);
        while (list) {
            struct entry *e = list;
            list = e->next;
            admin_finish(t, e, rq);
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

int sched_admin(struct sched *s, const struct sched_admin_req *req, double timeout_s,
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
    int rc = call_threads(s, sn, timeout_s);
    *affected = sn->affected;
    call_release(sn);
    return rc;
}
