/* Connection pool: the outbound connections of each destination queue (resolve,
 * connect, reuse while idle, close), with the SMTP parameters of its route. Knows
 * nothing of queues or retries: entries come from and results go to its owner
 * through pool_ops. Runs on one delivery loop; never blocks it.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_POOL_H
#define PETREL_DELIVERY_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "util/buf.h"

struct client_result;
struct dns;
struct entry;
struct outcome_where;
struct pool_conn;
struct route;
struct runtime;

/* The connections of one destination queue; embedded in the queue, zeroed at
 * creation. A queue with nconn > 0 must not be freed. */
struct pool {
    int nconn;                  /* open or opening, resolving included */
    uint32_t nresolving;        /* opening: each will take a ready entry soon */
    struct pool_conn *idle;     /* connected, waiting for an entry (LIFO) */
};

/* Calls back to the owner (the scheduler) on the loop thread; queue is the pointer
 * given to pool_open. */
struct pool_ops {
    /* The next entry of queue that may go now, its content prepared into content
     * (uninitialized on entry); NULL = none. Both are taken by the pool. */
    struct entry *(*take)(void *owner, void *queue, struct buf *content);
    /* One entry's attempt is over (res as smtp_client_ops.on_done; borrowed). */
    void (*done)(void *owner, void *queue, struct entry *e, const struct client_result *res,
                 uint32_t nres, const struct outcome_where *where);
    /* No attempt possible: the same synthetic result (code, enhanced, whole reply)
     * for e, or for every ready entry of queue when e is NULL (DNS failure). */
    void (*fail)(void *owner, void *queue, struct entry *e, int code, const char *enhanced,
                 const char *text);
    /* A connection of queue is gone (after its last done). */
    void (*closed)(void *owner, void *queue);
};

/* Per delivery thread. */
struct pool_thread {
    uv_loop_t *loop;
    struct dns *dns;
    struct runtime *rt;
    const struct pool_ops *ops;
    void *owner;
    struct pool_conn *conns;    /* every live connection (for shutdown) */
    bool stopping;
};

/* Opens one more connection for queue (pool p): resolves the route's relay host
 * (or, for an MX route, the MX of domain), then takes an entry; TLS policy, CA
 * and credentials are the route's. label names the queue in
 * the connections gauge. route, domain and label are borrowed and must live as
 * long as the queue. */
void pool_open(struct pool_thread *pt, struct pool *p, void *queue, const struct route *route,
               const char *domain, const char *label);
/* An idle connection of p, taken off the idle list; NULL if none. Hand it an entry
 * with pool_deliver, or close it with pool_quit. */
struct pool_conn *pool_idle_pop(struct pool *p);
/* Next transaction: e and content are taken. */
void pool_deliver(struct pool_conn *c, struct entry *e, struct buf *content);
void pool_quit(struct pool_conn *c);
/* Shutdown: aborts every connection (entries in flight get done with a network
 * error, then closed). */
void pool_abort_all(struct pool_thread *pt);

#endif
