/* Worker threads and their listening sockets (SO_REUSEPORT: the kernel spreads
 * connections over the workers; each worker accepts its own, pausing on EMFILE),
 * the listener slots that reloads add and close, plus the shared front-door
 * connection counters.
 * Never binds or reads a file on a worker loop: sockets are bound by the caller of
 * workers_prepare (main thread or reload) and handed over by message.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "core/runtime.h"
#include "core/worker.h"
#include "obs/log.h"
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
    int per_listener[WORKER_MAX_SLOTS];
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

/* ---- listener slots and sockets ---------------------------------------- */

static int slot_of(const struct worker_group *g, const char *host, uint16_t port)
{
    for (int i = 0; i < WORKER_MAX_SLOTS; i++)
        if (g->slot[i].used && g->slot[i].port == port && strcmp(g->slot[i].host, host) == 0)
            return i;
    return -1;
}

int workers_prepare(struct worker_group *g, const struct config *cfg,
                    struct worker_listen_plan *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < WORKER_MAX_SLOTS; i++)
        if (g->slot[i].used && config_listener_index(cfg, g->slot[i].host, g->slot[i].port) < 0) {
            p->drop[i] = true;
            p->n_drop++;
        }
    int n_new = 0;
    for (int j = 0; j < cfg->n_listeners; j++)
        if (slot_of(g, cfg->listeners[j].host, cfg->listeners[j].port) < 0)
            n_new++;
    if (n_new == 0)
        return PT_OK;
    if (!(p->fds = malloc((size_t)n_new * (size_t)g->n * sizeof *p->fds))) {
        snprintf(err, errlen, "%s:0: out of memory", cfg->path);
        return PT_NOMEM;
    }
    /* free slots, never one this plan drops (its sessions still count) */
    bool taken[WORKER_MAX_SLOTS] = { false };
    for (int j = 0; j < cfg->n_listeners; j++) {
        const struct cfg_listener *l = &cfg->listeners[j];
        if (slot_of(g, l->host, l->port) >= 0)
            continue;
        int slot = -1;
        for (int k = 0; k < WORKER_MAX_SLOTS && slot < 0; k++) {
            int c = (g->next_slot + k) % WORKER_MAX_SLOTS;
            if (!g->slot[c].used && !taken[c])
                slot = c;
        }
        if (slot < 0) {
            snprintf(err, errlen, "%s:%d: start_smtp_listener: no free listener slot (reload less "
                     "often or restart)", cfg->path, l->line);
            workers_abort(g, p);
            return PT_ERROR;
        }
        taken[slot] = true;
        int *row = p->fds + (size_t)p->n_add * (size_t)g->n;
        for (int i = 0; i < g->n; i++) {
            char e[400];
            row[i] = netsock_listen(l->host, l->port, l->listen, "listener",
                                    NETSOCK_NONBLOCK | NETSOCK_REUSEPORT, 1024, e, sizeof e);
            if (row[i] < 0) {
                snprintf(err, errlen, "%s:%d: start_smtp_listener: %s", cfg->path, l->line, e);
                for (int k = 0; k < i; k++)
                    close(row[k]);
                workers_abort(g, p);
                return PT_ERROR;
            }
        }
        p->add_slot[p->n_add++] = slot;
        g->slot[slot].port = l->port;   /* reserved: used is set by commit */
        snprintf(g->slot[slot].host, sizeof g->slot[slot].host, "%s", l->host);
        snprintf(g->slot[slot].listen, sizeof g->slot[slot].listen, "%s", l->listen);
    }
    return PT_OK;
}

void workers_abort(struct worker_group *g, struct worker_listen_plan *p)
{
    for (int a = 0; a < p->n_add; a++)
        for (int i = 0; i < g->n; i++)
            close(p->fds[(size_t)a * (size_t)g->n + (size_t)i]);
    free(p->fds);
    memset(p, 0, sizeof *p);
}

static void on_readable(uv_poll_t *h, int status, int events);

static void listener_closed(uv_handle_t *h)
{
    struct worker_listener *wl = h->data;
    if (--wl->handles == 0)
        free(wl);
}

/* Stops watching and closes wl's socket now (pending connections are reset); wl
 * is freed once its handles have closed. */
static void listener_close(struct worker_listener *wl)
{
    uv_close((uv_handle_t *)&wl->h, listener_closed);
    uv_close((uv_handle_t *)&wl->pause, listener_closed);
    close(wl->fd);
}

/* On the worker's loop (or before its thread runs). */
static void worker_listen(struct worker *w, int slot, int fd, const struct worker_group *g)
{
    struct worker_listener *wl = calloc(1, sizeof *wl);
    if (!wl || w->stopping || w->ls[slot]) {
        log_error("worker %d: cannot listen on %s%s", w->index, g->slot[slot].listen,
                  wl ? "" : ": out of memory");
        free(wl);
        close(fd);
        return;
    }
    wl->w = w;
    wl->slot = slot;
    snprintf(wl->host, sizeof wl->host, "%s", g->slot[slot].host);
    wl->port = g->slot[slot].port;
    wl->fd = fd;
    if (uv_poll_init_socket(&w->loop, &wl->h, fd) != 0) {
        log_error("worker %d: cannot listen on %s", w->index, g->slot[slot].listen);
        free(wl);
        close(fd);
        return;
    }
    wl->h.data = wl;
    wl->handles = 2;
    uv_timer_init(&w->loop, &wl->pause);
    wl->pause.data = wl;
    if (uv_poll_start(&wl->h, UV_READABLE, on_readable) != 0) {
        log_error("worker %d: cannot listen on %s", w->index, g->slot[slot].listen);
        listener_close(wl);
        return;
    }
    w->ls[slot] = wl;
}

static void worker_unlisten(struct worker *w, int slot)
{
    if (!w->ls[slot])
        return;
    listener_close(w->ls[slot]);  /* the fd closes now */
    w->ls[slot] = NULL;
}

struct listen_msg {
    const struct worker_group *g;
    int slot, fd;
};

/* Waits until every worker has handled the messages posted before it. */
struct sync_point {
    pthread_mutex_t lock;
    pthread_cond_t done;
    int remaining;
};

void workers_commit(struct worker_group *g, struct worker_listen_plan *p)
{
    struct sync_point sp = { .remaining = g->n };
    pthread_mutex_init(&sp.lock, NULL);
    pthread_cond_init(&sp.done, NULL);
    for (int a = 0; a < p->n_add; a++)
        g->slot[p->add_slot[a]].used = true;
    for (int i = 0; i < g->n; i++) {
        struct worker *w = &g->w[i];
        for (int a = 0; a < p->n_add; a++) {
            int slot = p->add_slot[a], fd = p->fds[(size_t)a * (size_t)g->n + (size_t)i];
            struct listen_msg *m = g->running ? malloc(sizeof *m) : NULL;
            if (!g->running) {
                worker_listen(w, slot, fd, g);
            } else if (!m || mbox_send(&w->mbox, WMSG_LISTEN, m, 0, 0) != PT_OK) {
                log_error("worker %d: cannot listen on %s: out of memory", i, g->slot[slot].listen);
                free(m);
                close(fd);
            } else {
                *m = (struct listen_msg){ g, slot, fd };
            }
        }
        for (int k = 0; k < WORKER_MAX_SLOTS; k++) {
            if (!p->drop[k])
                continue;
            if (!g->running)
                worker_unlisten(w, k);
            else
                mbox_send(&w->mbox, WMSG_UNLISTEN, NULL, (uint64_t)k, 0);
        }
        if (!g->running || mbox_send(&w->mbox, WMSG_SYNC, &sp, 0, 0) != PT_OK) {
            pthread_mutex_lock(&sp.lock);
            sp.remaining--;
            pthread_mutex_unlock(&sp.lock);
        }
    }
    for (int k = 0; k < WORKER_MAX_SLOTS; k++)
        if (p->drop[k]) {
            g->slot[k].used = false;
            g->next_slot = (k + 1) % WORKER_MAX_SLOTS;
        }
    for (int a = 0; a < p->n_add; a++)
        if (g->next_slot <= p->add_slot[a])
            g->next_slot = (p->add_slot[a] + 1) % WORKER_MAX_SLOTS;
    pthread_mutex_lock(&sp.lock);
    while (sp.remaining > 0)
        pthread_cond_wait(&sp.done, &sp.lock);
    pthread_mutex_unlock(&sp.lock);
    pthread_cond_destroy(&sp.done);
    pthread_mutex_destroy(&sp.lock);
    free(p->fds);
    memset(p, 0, sizeof *p);
}

/* ---- the worker loop --------------------------------------------------- */

#define ACCEPT_BATCH 64        /* connections accepted per wakeup (then others' turn) */
#define EMFILE_PAUSE_MS 250    /* out of descriptors: accepting waits this long */
#define EMFILE_WARN_MS 10000   /* one warning per listener per 10 s */

static void on_resume(uv_timer_t *t)
{
    struct worker_listener *wl = t->data;
    if (!wl->w->stopping)
        uv_poll_start(&wl->h, UV_READABLE, on_readable);
}

/* Out of descriptors (EMFILE, ENFILE) or kernel memory: the connection stays in the
 * kernel's backlog and accepting pauses, so that this loop goes on serving (and
 * closing) its sessions, which gives descriptors back. libuv's own accept loop
 * would spin on accept() here for as long as the backlog is not empty. */
static void listener_pause(struct worker_listener *wl, int err)
{
    uv_poll_stop(&wl->h);
    uv_timer_start(&wl->pause, on_resume, EMFILE_PAUSE_MS, 0);
    uint64_t now = uv_now(&wl->w->loop);
    if (wl->warned == 0 || now - wl->warned >= EMFILE_WARN_MS) {
        wl->warned = now;
        log_warn("listener %s:%u: cannot accept: %s; accepting again in %d ms "
                 "(raise ulimit -n or lower max_connections)", wl->host, wl->port,
                 strerror(err), EMFILE_PAUSE_MS);
    }
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct worker_listener *wl = h->data;
    struct worker *w = wl->w;
    if (status < 0 || w->stopping)
        return;
    for (int n = 0; n < ACCEPT_BATCH; n++) {
        struct cfg_gen *gen = runtime_gen_acquire(w->rt);
        int li = config_listener_index(gen->cfg, wl->host, wl->port);
        if (li < 0) {
            /* removed by a reload whose close message is on its way: left unaccepted,
             * the connection is reset when the socket closes */
            runtime_gen_release(gen);
            uv_poll_stop(&wl->h);
            return;
        }
        int fd = accept4(wl->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            runtime_gen_release(gen);
            if (err == EINTR || err == ECONNABORTED)
                continue;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM)
                listener_pause(wl, err);
            return;                     /* EAGAIN: all taken */
        }
        smtp_server_accept(w, gen, li, wl->slot, fd);
        if (w->stopping)
            return;
    }
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
    case WMSG_LISTEN: {
        struct listen_msg *m = msg->ptr;
        worker_listen(w, m->slot, m->fd, m->g);
        free(m);
        break;
    }
    case WMSG_UNLISTEN:
        worker_unlisten(w, (int)msg->id);
        break;
    case WMSG_SYNC: {
        /* a reload happened: drop this thread's cached old generation now */
        if (!w->stopping)
            runtime_gen_release(runtime_gen_acquire(w->rt));
        struct sync_point *sp = msg->ptr;
        pthread_mutex_lock(&sp->lock);
        if (--sp->remaining == 0)
            pthread_cond_signal(&sp->done);
        pthread_mutex_unlock(&sp->lock);
        break;
    }
    case WMSG_STOP:
        if (!w->stopping) {
            w->stopping = true;
            for (int i = 0; i < WORKER_MAX_SLOTS; i++)
                worker_unlisten(w, i);
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
    runtime_gen_thread_done();
}

int worker_start(struct worker *w)
{
    if (uv_loop_init(&w->loop))
        return PT_ERROR;
    w->loop.data = w;
    if (mbox_init(&w->mbox, &w->loop, worker_on_msg, w))
        return PT_ERROR;
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
}
