/* The shared queue in Redis (configure_queue { backend = "redis" }): the spool.h
 * backend plus what only a shared queue has: leases, work sharing between nodes,
 * admin state (suspensions) every node sees, and the memory guard.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_SPOOL_REDIS_H
#define PETREL_QUEUE_SPOOL_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool;

struct spool_redis_opts {
    const char *url;             /* redis:// or rediss:// (cluster/redis.h) */
    const char *key_prefix;      /* "petrel:" */
    int wait_replicas;           /* >0: WAIT for that many replicas after each group */
    double lease;                /* seconds a node's claim on an entry lasts unrenewed */
    uint64_t max_queue_depth;    /* cluster-wide entries; above it spool_writable = 0 */
    uint64_t max_redis_bytes;    /* used_memory cap; 0 = 90% of Redis's maxmemory if set */
};

/* Connects, checks that Redis is durable (AOF with appendfsync always, or
 * wait_replicas > 0; else err says "redis is not durable: ..."), logs the choice
 * and starts the commit and cluster threads. NULL with the reason in err. */
struct spool *spool_redis_open(const struct spool_redis_opts *o, char *err, size_t errlen);

/* What the cluster thread hands to the scheduler. Every callback runs on the
 * cluster thread, may block briefly, never on an event loop. */
struct spool_redis_hooks {
    void *arg;
    /* Entries this node holds now (claims stop above a cap). */
    uint64_t (*local_depth)(void *arg);
    /* An entry leased to this node: rec (borrowed for the call) is its record. */
    void (*claimed)(void *arg, const void *rec, size_t len);
    /* A suspension set (until > 0, reason may be NULL) or lifted (until = 0)
     * through any node. */
    void (*suspension)(void *arg, const char *domain, double until, const char *reason);
};
/* Starts claiming due entries for this node with h (copied); NULL stops it and
 * returns once no callback runs any more (call before the scheduler stops). */
void spool_redis_attach(struct spool *s, const struct spool_redis_hooks *h);

/* One destination in the shared queue (GET /api/queue from any node). */
struct spool_redis_queue {
    char domain[256];
    uint64_t count;              /* entries */
    double oldest;               /* earliest received_at; 0 = none */
    double next_attempt;         /* earliest time an entry may go; 0 = none */
    double suspended_until;      /* 0 = not suspended */
};
/* The shared queue by destination (malloc'd array, caller frees) and the total
 * entry count. PT_OK, PT_ERROR (Redis unreachable), PT_NOMEM. Blocking: not on a
 * loop. */
int spool_redis_queues(struct spool *s, struct spool_redis_queue **out, size_t *n,
                       uint64_t *total);

/* Admin actions on the shared queue. cb (may be NULL) gets the record of every
 * entry concerned that no node is delivering (borrowed for the call).
 * suspend: stored in Redis (every node stops; reason may be NULL); resume: lifted
 * and the domain's entries due now; flush: entries of domain (NULL = all) due now;
 * take: entries of id or of domain leased to this node and handed to cb (for a
 * bounce or a delete by this node). PT_OK, PT_ERROR. Blocking: not on a loop. */
typedef void (*spool_redis_rec_cb)(void *arg, const void *rec, size_t len);
int spool_redis_suspend(struct spool *s, const char *domain, double until, const char *reason,
                        spool_redis_rec_cb cb, void *arg);
int spool_redis_resume(struct spool *s, const char *domain, spool_redis_rec_cb cb, void *arg);
int spool_redis_flush(struct spool *s, const char *domain, spool_redis_rec_cb cb, void *arg);
int spool_redis_take(struct spool *s, const char *id, const char *domain, spool_redis_rec_cb cb,
                     void *arg);

/* true while the shared queue holds max_queue_depth entries or more, or Redis's
 * used_memory is at the max_redis_bytes guard (both as of the last poll, every
 * half second): new mail gets 452 4.3.1 then. Thread-safe, lock-free. */
bool spool_redis_full(struct spool *s);

/* Cluster counters for /metrics and tests. */
struct spool_redis_stats {
    uint64_t claimed;            /* entries this node leased from the shared queue */
    uint64_t taken_over;         /* ... of which another node's lease had expired */
    uint64_t lost_leases;        /* finished here after another node took them over */
    uint64_t depth;              /* cluster-wide entries at the last poll */
    uint64_t used_memory;        /* Redis used_memory at the last poll */
    int reachable;               /* 1 if the last poll reached Redis */
};
void spool_redis_stats(struct spool *s, struct spool_redis_stats *out);

#endif
