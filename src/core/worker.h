/* Worker threads: one libuv loop each, accepting SMTP connections on
 * SO_REUSEPORT sockets of every listener. Per-worker state lives here and is
 * passed down; nothing is shared between workers but the runtime (its current
 * config generation), the front-door counters and the listener slot table.
 * Listeners are identified by a slot (one per address, stable across reloads);
 * a connection finds its listener's options in the generation it acquires.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_WORKER_H
#define PETREL_CORE_WORKER_H

#include <stdbool.h>
#include <uv.h>

#include "core/config.h"
#include "util/mbox.h"

struct runtime;
struct smtp_session;
struct frontdoor;
struct worker;

/* Listener slots: more than CFG_MAX_LISTENERS so that a slot freed by a reload is
 * not reused at once (its sessions may still be counted in the front door). */
#define WORKER_MAX_SLOTS (4 * CFG_MAX_LISTENERS)

struct worker_listener {        /* one listening socket of one worker */
    uv_poll_t h;                /* readable: connections to accept (worker.c accepts
                                   them itself, so that it can pause on EMFILE) */
    uv_timer_t pause;           /* out of descriptors: accepting resumes when it fires */
    int fd;                     /* the listening socket, owned */
    int handles;                /* open libuv handles; freed when both have closed */
    uint64_t warned;            /* uv_now of the last EMFILE warning */
    struct worker *w;
    int slot;
    char host[256];
    uint16_t port;
};

struct worker {
    int index;
    uv_loop_t loop;
    uv_thread_t tid;
    struct runtime *rt;
    struct frontdoor *fd;               /* shared connection counters */
    struct mbox mbox;                   /* spool completions, listeners, stop requests */
    struct worker_listener *ls[WORKER_MAX_SLOTS]; /* NULL = not listening on that slot */
    struct smtp_session *sessions;      /* live sessions (doubly linked) */
    int nsessions;
    bool stopping;
    uv_timer_t drain;                   /* while stopping: waits for sessions to finish */
    int drain_ticks;
};

enum worker_msg { WMSG_SPOOLED = 1, WMSG_STOP, WMSG_LISTEN, WMSG_UNLISTEN, WMSG_SYNC };

/* The workers and the addresses they listen on. Changed only by workers_commit,
 * which the caller serializes (startup, then reloads under one lock). */
struct worker_group {
    struct worker *w;
    int n;
    struct {
        bool used;
        char host[256];
        uint16_t port;
        char listen[300];               /* as written, for messages */
    } slot[WORKER_MAX_SLOTS];
    int next_slot;                      /* where the search for a free slot starts */
    bool running;                       /* threads started: changes go through mailboxes */
};

/* What workers_prepare bound and what it will close, applied by workers_commit
 * or undone by workers_abort. */
struct worker_listen_plan {
    int n_add;
    int add_slot[CFG_MAX_LISTENERS];
    int *fds;                           /* n_add x group->n sockets, row per added slot */
    bool drop[WORKER_MAX_SLOTS];        /* slots whose address is gone */
    int n_drop;
};

/* Binds one SO_REUSEPORT socket per worker for every listener of cfg whose
 * address is not yet listened on, and notes the addresses cfg no longer has.
 * Nothing changes for the workers yet. On failure closes what it bound and
 * writes "FILE:LINE: start_smtp_listener: ..." into err. */
int workers_prepare(struct worker_group *g, const struct config *cfg,
                    struct worker_listen_plan *p, char *err, size_t errlen);
/* Applies p: workers listen on the new sockets and close the dropped ones.
 * Before the threads run this is done directly; afterwards through each worker's
 * mailbox, and it returns once every worker has done it. */
void workers_commit(struct worker_group *g, struct worker_listen_plan *p);
/* Closes the sockets p bound (the reload failed after workers_prepare). */
void workers_abort(struct worker_group *g, struct worker_listen_plan *p);

/* Prepares the loop and the mailbox (before privileges are dropped);
 * worker_run starts the thread. */
int worker_start(struct worker *w);
int worker_run(struct worker *w);
/* Asks the worker to stop accepting, finish in-flight transactions and exit its loop. */
void worker_request_stop(struct worker *w);
void worker_join(struct worker *w);

/* Front door: connection counts per listener slot and per client IP, shared by workers. */
struct frontdoor *frontdoor_new(void);
void frontdoor_free(struct frontdoor *fd);
/* Returns 0 if the connection may proceed (and counts it), else -1 (limit hit:
 * *which = "max_connections" or "max_connections_per_ip"). slot < WORKER_MAX_SLOTS. */
int frontdoor_enter(struct frontdoor *fd, int slot, const char *ip, int max_conn,
                    int max_per_ip, const char **which);
void frontdoor_leave(struct frontdoor *fd, int slot, const char *ip);

#endif
