/* Worker threads and their listening sockets (SO_REUSEPORT: the kernel spreads
 * connections over the workers), plus the shared front-door connection counters.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>

#include "core/runtime.h"
#include "core/worker.h"
#include "obs/log.h"
#include "policy/hooks.h"
#include "smtp/smtp_server.h"
#include "util/netsock.h"
#include "util/result.h"

/* ---- front door -------------------------------------------------------- */

#define FD_BUCKETS 4096

struct ip_count {
    struct ip_count *next;
    int listener;
    int count;
    char ip[64];
};

struct frontdoor {
    pthread_mutex_t lock;
    int per_listener[CFG_MAX_LISTENERS];
    struct ip_count *buckets[FD_BUCKETS];
};

struct frontdoor *frontdoor_new(void)
{
    struct frontdoor *fd = calloc(1, sizeof *fd);
    if (fd)
        pthread_mutex_init(&fd->lock, NULL);
    return fd;
}

void frontdoor_free(struct frontdoor *fd)
{
    if (!fd)
        return;
    for (int i = 0; i < FD_BUCKETS; i++) {
        struct ip_count *n = fd->buckets[i];
        while (n) {
            struct ip_count *next = n->next;
            free(n);
            n = next;
        }
    }
    pthread_mutex_destroy(&fd->lock);
    free(fd);
}

static unsigned fd_hash(const char *ip, int listener)
{
    unsigned h = 2166136261u ^ (unsigned)listener;
    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % FD_BUCKETS;
}

int frontdoor_enter(struct frontdoor *fd, int listener, const char *ip, int max_conn,
                    int max_per_ip, const char **which)
{
    unsigned h = fd_hash(ip, listener);
    pthread_mutex_lock(&fd->lock);
    struct ip_count *n = fd->buckets[h];
    while (n && (n->listener != listener || strcmp(n->ip, ip) != 0))
        n = n->next;
    int rc = 0;
    if (fd->per_listener[listener] >= max_conn) {
        *which = "max_connections";
        rc = -1;
    } else if (n && n->count >= max_per_ip) {
        *which = "max_connections_per_ip";
        rc = -1;
    } else {
        if (!n && (n = calloc(1, sizeof *n)) != NULL) {
            n->listener = listener;
            snprintf(n->ip, sizeof n->ip, "%s", ip);
            n->next = fd->buckets[h];
            fd->buckets[h] = n;
        }
        if (n)
            n->count++;
        fd->per_listener[listener]++;
    }
    pthread_mutex_unlock(&fd->lock);
    return rc;
}

void frontdoor_leave(struct frontdoor *fd, int listener, const char *ip)
{
    unsigned h = fd_hash(ip, listener);
    pthread_mutex_lock(&fd->lock);
    fd->per_listener[listener]--;
    struct ip_count **pp = &fd->buckets[h];
    while (*pp && ((*pp)->listener != listener || strcmp((*pp)->ip, ip) != 0))
        pp = &(*pp)->next;
    if (*pp && --(*pp)->count <= 0) {
        struct ip_count *dead = *pp;
        *pp = dead->next;
        free(dead);
    }
    pthread_mutex_unlock(&fd->lock);
}

/* ---- sockets ----------------------------------------------------------- */

int workers_bind(struct worker *w, int nworkers, const struct config *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < nworkers; i++) {
        w[i].nlisteners = cfg->n_listeners;
        for (int j = 0; j < cfg->n_listeners; j++) {
            const struct cfg_listener *l = &cfg->listeners[j];
            w[i].listen_fds[j] = netsock_listen(l->host, l->port, l->listen, "listener",
                                                NETSOCK_NONBLOCK | NETSOCK_REUSEPORT, 1024,
                                                err, errlen);
            if (w[i].listen_fds[j] < 0)
                return PT_ERROR;
        }
    }
    return PT_OK;
}

/* ---- the worker loop --------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status)
{
    struct worker *w = server->loop->data;
    if (status < 0 || w->stopping)
        return;
    smtp_server_accept(w, (int)(intptr_t)server->data, server);
}

#define DRAIN_TICK_MS 50
#define DRAIN_MAX_TICKS 100 /* 5 s: then remaining sessions are cut */

static void worker_on_drain(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (w->nsessions > 0) {
        if (++w->drain_ticks == DRAIN_MAX_TICKS) {
            log_warn("worker %d: %d sessions still open at shutdown; closing them", w->index,
                     w->nsessions);
            smtp_server_stop_all(w, true);
        }
        return;
    }
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    mbox_close(&w->mbox);
}

static void worker_on_msg(void *owner, struct mbox_msg *msg)
{
    struct worker *w = owner;
    switch (msg->kind) {
    case WMSG_SPOOLED:
        smtp_server_on_spooled(w, msg);
        break;
    case WMSG_STOP:
        if (!w->stopping) {
            w->stopping = true;
            for (int i = 0; i < w->nlisteners; i++)
                uv_close((uv_handle_t *)&w->listeners[i], NULL);
            smtp_server_stop_all(w, false);
            uv_timer_init(&w->loop, &w->drain);
            w->drain.data = w;
            uv_timer_start(&w->drain, worker_on_drain, DRAIN_TICK_MS, DRAIN_TICK_MS);
        }
        break;
    }
    free(msg);
}

static void worker_main(void *arg)
{
    struct worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

int worker_start(struct worker *w)
{
    char err[512];
    if (uv_loop_init(&w->loop))
        return PT_ERROR;
    w->loop.data = w;
    w->L = config_lua_worker(w->rt->cfg, err, sizeof err);
    if (!w->L || hooks_install(w->L, w->rt->cfg) != PT_OK) {
        log_error("worker %d: %s", w->index, w->L ? "out of memory" : err);
        return PT_ERROR;
    }
    /* Say so when the config hooks an event this build does not raise yet. */
    static const char *const not_run[] = {
        "smtp_delivery_result", "http_message_received", "http_request", NULL,
    };
    for (int i = 0; w->index == 0 && not_run[i]; i++)
        if (hooks_any(w->L, not_run[i]))
            log_warn("petrel.on: %s hooks are registered but this build does not run them yet",
                     not_run[i]);
    if (mbox_init(&w->mbox, &w->loop, worker_on_msg, w))
        return PT_ERROR;
    for (int i = 0; i < w->nlisteners; i++) {
        uv_tcp_init(&w->loop, &w->listeners[i]);
        w->listeners[i].data = (void *)(intptr_t)i;
        if (uv_tcp_open(&w->listeners[i], w->listen_fds[i]) ||
            uv_listen((uv_stream_t *)&w->listeners[i], 1024, on_connection)) {
            log_error("worker %d: cannot listen on %s", w->index, w->rt->cfg->listeners[i].listen);
            return PT_ERROR;
        }
    }
    return PT_OK;
}

int worker_run(struct worker *w)
{
    if (uv_thread_create(&w->tid, worker_main, w))
        return PT_ERROR;
    /* named before "petrel ready": "top -H" and /proc/PID/task/N/comm show it */
    char name[16];
    snprintf(name, sizeof name, "petrel-smtp-%d", w->index);
    pthread_setname_np(w->tid, name);
    return PT_OK;
}

void worker_request_stop(struct worker *w)
{
    mbox_send(&w->mbox, WMSG_STOP, NULL, 0, 0);
}

void worker_join(struct worker *w)
{
    uv_thread_join(&w->tid);
    uv_loop_close(&w->loop);
    if (w->L)
        lua_close(w->L);
}
