/* Cluster-wide limits through Redis (configure_redis, or implied by the redis
 * queue): message rates (GCRA script), connection slots (counting semaphore
 * script with expiring holder tokens), limit_sending keys, AUTH bans and admin
 * suspensions shared by every node. One thread of its own does all Redis I/O;
 * the delivery and SMTP loops only read and update local allowances under a
 * mutex, so no loop ever waits for Redis. Redis unreachable = "degraded": each
 * node applies 1/N of every limit locally (N = live nodes last seen).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CLUSTER_LIMITS_H
#define PETREL_CLUSTER_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct authban;
struct limits;
struct cluster_limits;

#define CLUSTER_LIMITS_SLOT_TTL 10.0  /* s: a connection slot of a dead node frees itself */
#define CLUSTER_LIMITS_BEAT     1.0   /* s: heartbeat (nodes, slot renewal) */
#define CLUSTER_LIMITS_POLL     0.2   /* s: shared bans, limit_sending keys, suspensions */

struct cluster_limits_opts {
    const char *url;              /* redis:// or rediss:// (already validated) */
    const char *key_prefix;       /* "petrel:" */
    bool share_suspensions;       /* local spool: mirror admin suspensions */
    struct limits *sending;       /* limit_sending table to share; NULL = none */
    struct authban *bans;         /* AUTH ban tracker to share; NULL = none */
};

/* A suspension set (until > 0, wall clock) or lifted (until = 0) somewhere in the
 * cluster; called on the limits thread (it may block briefly). false = not
 * applied (asked again at the next poll). */
typedef bool (*cluster_limits_suspension_fn)(void *arg, const char *domain, double until,
                                             const char *reason);

/* Starts the limits thread; tries Redis once (within 2 s) before returning, and
 * starts degraded if it cannot reach it. NULL only when out of memory or the
 * thread cannot start (err says why). Strings of o are copied. */
struct cluster_limits *cluster_limits_start(const struct cluster_limits_opts *o, char *err,
                                            size_t errlen);
/* Stops the thread and frees everything (held connection slots are released
 * in Redis when it is reachable). NULL ok. */
void cluster_limits_stop(struct cluster_limits *cl);

/* 0 while the shared limits apply; N >= 1 while degraded: apply 1/N locally. */
int cluster_limits_degraded(const struct cluster_limits *cl);

/* Messages of destination key the cluster lets this node send now (its local
 * allowance, fetched from Redis in small batches at per_s messages/s with a
 * burst of one second's worth). 0 = none yet: more is asked for and *retry_at
 * (monotonic) says when to look again. Never blocks. */
uint32_t cluster_limits_rate_avail(struct cluster_limits *cl, const char *key, double per_s,
                                   double now, double *retry_at);
/* Uses one message of the allowance (after rate_avail said there was one). */
void cluster_limits_rate_take(struct cluster_limits *cl, const char *key);
/* One more connection of key with at most max across the cluster: true = a slot
 * is held for it (give it back with conn_release); false = asked for, look again
 * at *retry_at. Never blocks. */
bool cluster_limits_conn_acquire(struct cluster_limits *cl, const char *key, int max, double now,
                                 double *retry_at);
void cluster_limits_conn_release(struct cluster_limits *cl, const char *key);
/* Installs the suspension hook (NULL = none, after a call in progress has
 * returned). Suspensions are shared only while one is installed. */
void cluster_limits_set_suspension_hook(struct cluster_limits *cl, cluster_limits_suspension_fn fn,
                                        void *arg);
/* Publishes an admin suspension (until > 0) or its end (until = 0) to the other
 * nodes. Never blocks. */
void cluster_limits_suspend(struct cluster_limits *cl, const char *domain, double until,
                            const char *reason);

#endif
