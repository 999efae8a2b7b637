/* The scheduler: delivery threads, each owning a shard of the delivery queues (by
 * queue key hash: the domain, or the relay route), with the retry heap, the held
 * (suspended) mail and the thread's policy state; connections, content, shaping,
 * routes and outcomes are in delivery/. Entries enter with sched_enqueue from any
 * thread once durable. Admin calls (queue/admin.c) run on every thread's loop.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_SCHED_H
#define PETREL_QUEUE_SCHED_H

#include <stdbool.h>
#include <stdint.h>

struct runtime;
struct entry;
struct sched;

struct sched *sched_new(struct runtime *rt, char *err, size_t errlen);
/* Takes e (durable already). e->via is its route (set by ingest), or NULL: then
 * its stored route name is looked up (recovery). Before sched_start, inserts
 * directly (recovery); afterwards posts to the owning delivery thread.
 * Thread-safe. */
void sched_enqueue(struct sched *s, struct entry *e);
int sched_start(struct sched *s);
/* A reload swapped the config generation: each delivery thread takes it now (its
 * throttled queues look at the new rates and caps) rather than at its next event.
 * Thread-safe. */
void sched_reloaded(struct sched *s);
/* Stops dispatching, closes connections, joins the threads, frees entries. */
void sched_stop(struct sched *s);
void sched_free(struct sched *s);
/* Entries in the queue (all threads); cheap, approximate under concurrency. */
uint64_t sched_depth(const struct sched *s);

/* One destination queue in an admin snapshot (GET /api/queue): the mail for one
 * recipient domain on one route. The queue is named by the domain, as in the log
 * (`queue`) and the metrics; mail of several domains on one relay route shares
 * that route's connections. */
struct sched_queue_info {
    char key[300];           /* the recipient domain */
    char route[300];         /* the route's name (delivery/route.h): "@mx", a
                                transport key, "@relayhost" or a "[host]:port" */
    uint32_t count;          /* entries (messages) for it, including those in flight */
    uint32_t dead;           /* dead letters (expired, kept: dead_letter_after), not in count */
    double oldest;           /* earliest received_at of its waiting entries; 0 = none */
    double next_attempt;     /* earliest next attempt of its waiting entries; 0 = none */
    int connections;         /* outbound connections, open or opening */
    bool suspended;          /* by the admin API, until suspended_until */
    double suspended_until;
    char site[264];          /* the site glob governing it ("" = none: its own domain) */
    double shaping_rate;     /* messages/s in force (0 = unlimited, <0 = not known yet) */
    int shaping_conn_limit;  /* connection limit in force */
    double shaping_suspended_until; /* wall clock; 0 = not suspended by automation */
    char shaping_reason[300];/* the action and reply in force ("" = none) */
    const char *shaping_tls; /* the rule's TLS level ("may", "encrypt", "verify"; static),
                                NULL = the route's */
};
/* Asks every delivery thread for its queues (each answers from its own loop) and
 * waits at most timeout_s for all of them. PT_OK with a malloc'd array (caller
 * frees) sorted by key; PT_ERROR if a thread did not answer (stopping), PT_NOMEM.
 * Thread-safe; call from outside the delivery threads. */
int sched_snapshot(struct sched *s, double timeout_s, struct sched_queue_info **out,
                   size_t *n);
/* The same grouped by tenant (DESIGN §9): one row per tenant (key = the tenant, ""
 * = none; count = its entries, oldest, next_attempt; the other fields empty),
 * sorted. This node's entries only (with a shared spool: what this node holds). */
int sched_snapshot_tenants(struct sched *s, double timeout_s, struct sched_queue_info **out,
                           size_t *n);

/* Admin actions on waiting mail (entries in flight finish their attempt first and
 * are not counted). A destination (`domain`) matches mail whose recipient domain
 * it is, and mail whose route it names: the route's name (a transport key such as
 * "*" or ".corp.example", "@mx", "@relayhost"), its relay host as written
 * ("[smtp.example.com]:587"). Each affected recipient gets an Admin log record. */
enum sched_admin_op {
    SCHED_SUSPEND,   /* no new delivery to domain until `until` (wall clock); held
                        mail stays held across restarts (kept in the spool) */
    SCHED_RESUME,    /* end domain's suspension, deliver what is ready */
    SCHED_FLUSH,     /* retry now what waits for a retry (domain, or NULL = all) */
    SCHED_BOUNCE,    /* message id, or all of domain: Bounce records and a DSN */
    SCHED_DELETE,    /* the same without telling anyone (diagnostic log only); also
                        removes dead letters (expired, kept by dead_letter_after) */
};
struct sched_admin_req {
    enum sched_admin_op op;
    const char *domain;      /* lowercased; NULL = every destination (flush only) */
    const char *id;          /* bounce/delete: one message; NULL = by domain */
    double until;            /* suspend */
    const char *reason;      /* logged with bounce/delete, and in the DSN; may be NULL */
};
/* Runs req on every delivery thread (each on its own loop), waiting up to timeout_s.
 * *affected = recipients of the waiting mail concerned. PT_OK, PT_ERROR (a thread
 * did not answer: stopping), PT_NOMEM. Thread-safe; not from a delivery thread. */
int sched_admin(struct sched *s, const struct sched_admin_req *req, double timeout_s,
                uint64_t *affected);
/* The same on this node's delivery threads only (with a shared queue, sched_admin
 * also acts on the entries in Redis; the cluster thread applies other nodes'
 * suspensions here with this one). */
int sched_admin_local(struct sched *s, const struct sched_admin_req *req, double timeout_s,
                      uint64_t *affected);



/* Pure: delay before retry number `attempts` (1 = after the first failure):
 * retry_interval * 2^(attempts-1), capped at max_retry_interval. */
double sched_backoff(double retry_interval, double max_retry_interval, uint32_t attempts);
#endif
