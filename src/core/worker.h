/* Worker threads: one libuv loop each, accepting SMTP connections on
 * SO_REUSEPORT sockets of every listener, with the worker's own Lua state.
 * Per-worker state lives here and is passed down; nothing is shared between
 * workers but the runtime (read-only) and the front-door counters.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_WORKER_H
#define PETREL_CORE_WORKER_H

#include <stdbool.h>
#include <uv.h>

#include "core/config.h"
#include "util/mbox.h"

struct runtime;
struct lua_State;
struct smtp_session;
struct frontdoor;

struct worker {
    int index;
    uv_loop_t loop;
    uv_thread_t tid;
    struct runtime *rt;
    struct frontdoor *fd;               /* shared connection counters */
    struct mbox mbox;                   /* spool completions, stop requests */
    uv_tcp_t listeners[CFG_MAX_LISTENERS];
    int listen_fds[CFG_MAX_LISTENERS];
    int nlisteners;
    struct lua_State *L;
    struct smtp_session *sessions;      /* live sessions (doubly linked) */
    int nsessions;
    bool stopping;
    uv_timer_t drain;                   /* while stopping: waits for sessions to finish */
    int drain_ticks;
};

enum worker_msg { WMSG_SPOOLED = 1, WMSG_STOP = 2 };

/* Creates the listening sockets for every configured listener, one set per worker
 * (SO_REUSEPORT). On failure writes a message naming the listen address. */
int workers_bind(struct worker *w, int nworkers, const struct config *cfg, char *err, size_t errlen);
/* Prepares the loop, the Lua state and the listeners (before privileges are
 * dropped: the config file is read again here); worker_run starts the thread. */
int worker_start(struct worker *w);
int worker_run(struct worker *w);
/* Asks the worker to stop accepting, finish in-flight transactions and exit its loop. */
void worker_request_stop(struct worker *w);
void worker_join(struct worker *w);

/* Front door: connection counts per listener and per client IP, shared by workers. */
struct frontdoor *frontdoor_new(void);
void frontdoor_free(struct frontdoor *fd);
/* Returns 0 if the connection may proceed (and counts it), else -1 (limit hit:
 * *which = "max_connections" or "max_connections_per_ip"). */
int frontdoor_enter(struct frontdoor *fd, int listener, const char *ip, int max_conn,
                    int max_per_ip, const char **which);
void frontdoor_leave(struct frontdoor *fd, int listener, const char *ip);

#endif
