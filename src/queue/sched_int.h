/* Scheduler internals shared by the files of the delivery wing's queue side
 * (sched.c: threads, heap, queues, dispatch; admin.c: snapshot and admin actions;
 * suspend.c: suspensions).
 * Not an API: everything here runs on the owning delivery thread.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_SCHED_INT_H
#define PETREL_QUEUE_SCHED_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "delivery/outcome.h"
#include "delivery/pool.h"
#include "delivery/shaping.h"
#include "queue/shape.h"
#include "util/mbox.h"

#define SCHED_Q_BUCKETS 4096
#define SCHED_PRIOS 3

struct entry;
struct cfg_gen;
struct route;
struct route_table;
struct runtime;
struct spool_batch;
struct suspension;

/* One destination queue: ready entries by priority, its connections and budget. */
struct dqueue {
    struct dqueue *hnext;
    char *key;                      /* sched_qkey; one allocation with domain */
    const char *domain;             /* MX routes: the domain to look up (after key) */
    const char *source;             /* egress source name (in key), NULL = default */
    const char *tenant;             /* a paced tenant's own queue (in key), else NULL */
    const struct route *route;      /* every entry of the queue goes by it; for an MX
                                       route the queue is one domain (key). Interned;
                                       after a reload the new config's definition of
                                       the same name (route_current) */
    uint64_t gen_id;                /* the generation route was last checked against */
    struct entry *ready[SCHED_PRIOS], *ready_tail[SCHED_PRIOS];
    uint32_t nready;
    uint32_t nentries;              /* all entries of this queue owned by the thread */
    uint32_t picks;
    struct pool pool;
    struct shape_q shape;           /* its shaping rule and budget (queue/shape.h) */
    bool throttled;                 /* on the thread's throttled list */
    struct dqueue *tnext;
    size_t snap;                    /* during a snapshot: 1 + its index in the answer */
};

struct dthread {
    struct sched *s;
    int index;
    uv_loop_t loop;
    uv_thread_t tid;
    struct mbox mbox;
    struct dns *dns;
    uv_timer_t timer;
    struct dqueue *buckets[SCHED_Q_BUCKETS];
    struct entry **heap;
    uint32_t nheap, heap_cap;
    struct pool_thread pool;
    bool stopping;
    struct spool_batch *deletes;    /* nosync deletions, written once per loop turn */
    uv_check_t flush;
    struct dqueue *throttled;       /* queues waiting for a max_message_rate token, */
    struct dqueue **throttled_tail; /* in the order they were throttled */
    struct suspension *suspended;   /* admin suspensions (every thread keeps them all) */
    struct entry *held;             /* due, but held by a suspension (linked by next) */
    struct entry *dead;             /* dead letters (ENTRY_F_DEAD, linked by next): kept
                                       for inspection, purged dead_letter_after later */
    uint32_t ndead;
    uv_timer_t purge;               /* runs while there are dead letters */
    struct cfg_gen *gen;            /* the config generation of new work (a reference),
                                       refreshed at each event the loop handles */
    struct dqueue *hook_q;          /* during a hook run: the attempt's queue ... */
    const struct entry *hook_e;     /* ... and entry */
};

struct sched {
    struct runtime *rt;
    int n;
    struct dthread *t;
    atomic_bool started;           /* written by sched_start/stop, read by the spool thread */
    _Atomic uint64_t depth;
    pthread_mutex_t sites_lock;    /* the site budgets (queue/shape.c) */
    struct shape_budget *sites;
};

/* Takes the current config generation for new work if a reload made one (a
 * lock-free check when not). Called where an event enters the thread, never in
 * the middle of a callback chain, so what a callback borrows from t->gen stays. */
void sched_gen_refresh(struct dthread *t);

/* A function run on a delivery thread by message (admin.c's calls). The struct is
 * the first member of the caller's own; run owns it from then on. */
struct sched_call {
    void (*run)(struct dthread *t, struct sched_call *call);
};
/* Posts call to thread i. PT_OK, or PT_NOMEM / PT_ERROR (the thread is stopping):
 * then run will not be called. */
int sched_post_call(struct sched *s, int i, struct sched_call *call);

uint64_t sched_hash(const char *key);
/* The queue key of e: its route's (route_queue_key), then "|SOURCE" when it goes
 * out by an egress source (DESIGN §9: each (source, destination) is its own queue),
 * then "#TENANT" when its tenant has its own pace (ENTRY_F_TENANT_Q). Returns kb
 * or a string of the route. */
const char *sched_qkey(const struct entry *e, char *kb);
/* The existing queue named key, or NULL. */
struct dqueue *sched_queue_find(struct dthread *t, const char *key);
/* The queue of e (created if needed; NULL only when out of memory). */
struct dqueue *sched_queue_of(struct dthread *t, const struct entry *e);
void sched_ready_push(struct dqueue *q, struct entry *e);
/* Sets e->due (monotonic) from e->next_attempt (wall), as the wall clock reads
 * now: call whenever next_attempt is set. A past time is due at once. */
void sched_due_set(struct entry *e);
void sched_heap_push(struct dthread *t, struct entry *e);
/* Restores the heap order after entries were dropped or their times changed. */
void sched_heap_rebuild(struct dthread *t);
void sched_dispatch(struct dthread *t, struct dqueue *q);
void sched_timer_arm(struct dthread *t);
/* Removes e (finished) from q and the spool, and frees it. */
void sched_entry_remove(struct dthread *t, struct dqueue *q, struct entry *e);
/* Acts on an outcome verdict for e (outcome.h), taken back from the pool or the
 * ready list: removed, ready again, waiting for its retry, or kept dead. */
void sched_settle(struct dthread *t, struct dqueue *q, struct entry *e, enum outcome_next next);
/* Removes dead letter e (already unlinked from t->dead, ndead counted down) from
 * the spool and frees it. */
void sched_dead_remove(struct dthread *t, struct entry *e);
/* e is due: onto q's ready list (true), or onto the held list while a suspension
 * covers it (false). The caller dispatches q when true. */
bool sched_make_ready(struct dthread *t, struct dqueue *q, struct entry *e);
/* After a suspension ended or was lifted: held entries no longer covered go back
 * to their queue (or to the heap if their retry time is still ahead). */
void sched_release_held(struct dthread *t);

#endif
