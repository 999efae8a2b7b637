/* Connection pool: the outbound connections of each destination queue (resolve,
 * prepare the next entry's content off the loop, connect, reuse while idle,
 * close), with the SMTP parameters of its route. Knows nothing of queues or
 * retries: entries come from and results go to its owner through pool_ops. Runs on
 * one delivery loop and never blocks it: content, DKIM and password files are
 * read on libuv's worker pool.
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
struct tlspol;
struct runtime;
struct cfg_gen;

/* The connections of one destination queue; embedded in the queue, zeroed at
 * creation. A queue with nconn > 0 must not be freed. */
struct pool {
    int nconn;                  /* open or opening, resolving included */
    uint32_t nresolving;        /* opening: each will take a ready entry soon */
    struct pool_conn *idle;     /* connected, waiting for an entry (LIFO) */
    int max_deliveries;         /* per connection; 0 = configure_delivery's */
    double connect_timeout;     /* 0 = configure_delivery's */
    int tls;                    /* the shaping rule's TLS level (enum client_tls_policy);
                                   0 = the route's. MX routes only; TLS policies
                                   (MTA-STS, DANE) and REQUIRETLS still apply on top */
    bool close_idle;            /* set by the owner: a connection with nothing to send
                                   closes instead of idling (others wait for its slot) */
    const struct route *route;  /* the queue's route now (set by the owner): a
                                   connection opened on another one (a reload changed
                                   it) takes no more entries */
};

/* Calls back to the owner (the scheduler) on the loop thread; queue is the pointer
 * given to pool_open. */
struct pool_ops {
    /* The next entry of queue that may go now (shaping allowing), taken by the
     * pool; NULL = none. Its content is then prepared on the worker pool. */
    struct entry *(*take)(void *owner, void *queue);
    /* e (taken back) could not be prepared: rc PT_NOTFOUND = its content is gone
     * from the spool; anything else = try again later. */
    void (*unprepared)(void *owner, void *queue, struct entry *e, int rc);
    /* e (taken back) was not attempted: its connection went away or we stop. */
    void (*giveback)(void *owner, void *queue, struct entry *e);
    /* One entry's attempt is over (res as smtp_client_ops.on_done; borrowed; e
     * taken back). */
    void (*done)(void *owner, void *queue, struct entry *e, const struct client_result *res,
                 uint32_t nres, const struct outcome_where *where);
    /* No attempt possible: the same synthetic result (code, enhanced, whole reply)
     * for e (taken back), or for every ready entry of queue when e is NULL (DNS
     * failure). */
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
    /* The owner's current config generation (the owner holds its reference and
     * updates it between callbacks): each new connection and each attempt takes a
     * reference of its own, so they keep the generation they started with; an
     * idle connection of an older one is closed rather than reused. */
    struct cfg_gen *gen;
    const struct pool_ops *ops;
    void *owner;
    struct pool_conn *conns;    /* every live connection (for shutdown) */
    bool stopping;
    struct tlspol *tlspol;      /* MTA-STS/DANE agent, made on first use; freed by
                                   pool_abort_all (which must precede dns_free) */
};

/* Opens one more connection for queue (pool p) under pt->gen (helo name,
 * timeouts, client TLS context): resolves the route's relay host (or, for an MX
 * route, the MX of domain), then takes an entry; TLS policy, CA and credentials
 * are the route's. false = out of memory (nothing started). label names the queue in
 * the connections gauge. route, domain and label are borrowed and must live as
 * long as the queue. */
bool pool_open(struct pool_thread *pt, struct pool *p, void *queue, const struct route *route,
               const char *domain, const char *label);
/* Hands the next entry of the queue to an idle connection of p, if there is one
 * of p->route and pt->gen (others are closed): true = one more entry on its way;
 * false = no such idle connection, or nothing to take (then it is closed). */
bool pool_reuse(struct pool_thread *pt, struct pool *p);
/* Calls fn for every entry the pool holds (being prepared or in a transaction),
 * with its queue; for a snapshot. fn must not call back into the pool. */
void pool_for_each_entry(struct pool_thread *pt,
                         void (*fn)(void *arg, void *queue, const struct entry *e), void *arg);
/* Shutdown: aborts every connection (entries in flight get done with a network
 * error, then closed). */
void pool_abort_all(struct pool_thread *pt);

#endif
