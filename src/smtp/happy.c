/* Happy Eyeballs; see happy.h. Each attempt is a uv_tcp_t; the winner's socket is
 * dup()ed out of its handle so that every handle closes the same way. The struct
 * lives until the last handle's close callback.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtp/happy.h"

struct attempt {
    uv_tcp_t tcp;
    uv_connect_t req;
    struct happy *h;
    int index;
    bool open, done;          /* open: the handle is initialized and not yet closed */
};

struct happy {
    uv_loop_t *loop;
    uv_timer_t timer;
    bool timer_open;
    struct sockaddr_storage addrs[HAPPY_MAX];
    struct attempt att[HAPPY_MAX];
    int n, next, failed, handles;
    uint64_t delay_ms;
    int last_err;
    struct sockaddr_storage source; /* bound before each connect, if has_source */
    bool has_source;
    bool over;                /* the callback ran, or the race was cancelled */
    happy_cb cb;
    void *arg;
};

static void on_handle_closed(uv_handle_t *hd)
{
    struct happy *h = hd->data;
    if (--h->handles == 0)
        free(h);
}

static void close_all(struct happy *h)
{
    for (int i = 0; i < h->next; i++)
        if (h->att[i].open) {
            h->att[i].open = false;
            uv_close((uv_handle_t *)&h->att[i].tcp, on_handle_closed);
        }
    if (h->timer_open) {
        h->timer_open = false;
        uv_timer_stop(&h->timer);
        uv_close((uv_handle_t *)&h->timer, on_handle_closed);
    }
}

static void finish(struct happy *h, int fd, int index)
{
    h->over = true;
    close_all(h);
    h->cb(h->arg, fd, index, h->last_err);
}

static void start_next(struct happy *h);

static void on_connect(uv_connect_t *req, int status)
{
    struct attempt *a = req->data;
    struct happy *h = a->h;
    a->done = true;
    if (h->over || status == UV_ECANCELED)
        return;
    if (status == 0) {
        uv_os_fd_t fd;
        int dup_fd = uv_fileno((uv_handle_t *)&a->tcp, &fd) == 0 ? dup(fd) : -1;
        if (dup_fd >= 0) {
            finish(h, dup_fd, a->index);
            return;
        }
        status = UV_EMFILE;
    }
    h->last_err = status;
    h->failed++;
    if (a->open) {
        a->open = false;
        uv_close((uv_handle_t *)&a->tcp, on_handle_closed);
    }
    if (h->failed == h->n)
        finish(h, -1, -1);
    else if (h->next < h->n)
        start_next(h);          /* a failure starts the next one at once (§5) */
}

static void on_timer(uv_timer_t *t)
{
    struct happy *h = t->data;
    if (!h->over && h->next < h->n)
        start_next(h);
}

static void start_next(struct happy *h)
{
    while (h->next < h->n) {
        struct attempt *a = &h->att[h->next];
        a->h = h;
        a->index = h->next++;
        a->req.data = a;
        if (uv_tcp_init(h->loop, &a->tcp) != 0) {
            h->last_err = UV_ENOMEM;
            h->failed++;
            continue;
        }
        a->tcp.data = h;
        a->open = true;
        h->handles++;
        int rc = 0;
        if (h->has_source && h->source.ss_family == h->addrs[a->index].ss_family)
            rc = uv_tcp_bind(&a->tcp, (const struct sockaddr *)&h->source, 0);
        if (rc == 0)
            rc = uv_tcp_connect(&a->req, &a->tcp, (struct sockaddr *)&h->addrs[a->index],
                                on_connect);
        if (rc != 0) {
            h->last_err = rc;
            h->failed++;
            a->open = false;
            uv_close((uv_handle_t *)&a->tcp, on_handle_closed);
            continue;
        }
        if (h->next < h->n && h->timer_open)
            uv_timer_start(&h->timer, on_timer, h->delay_ms, 0);
        return;
    }
    if (h->failed == h->n && !h->over)
        finish(h, -1, -1);
}

static void on_first(uv_timer_t *t)
{
    struct happy *h = t->data;
    if (!h->over)
        start_next(h);
}

struct happy *happy_start(uv_loop_t *loop, const struct sockaddr_storage *addrs, int n,
                          uint64_t delay_ms, const struct sockaddr_storage *source,
                          happy_cb cb, void *arg)
{
    if (n < 1)
        return NULL;
    struct happy *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loop = loop;
    h->n = n < HAPPY_MAX ? n : HAPPY_MAX;
    memcpy(h->addrs, addrs, (size_t)h->n * sizeof *addrs);
    h->delay_ms = delay_ms;
    if (source) {
        h->source = *source;
        h->has_source = true;
    }
    h->cb = cb;
    h->arg = arg;
    h->last_err = UV_ECONNREFUSED;
    if (uv_timer_init(loop, &h->timer) != 0) {
        free(h);
        return NULL;
    }
    h->timer.data = h;
    h->timer_open = true;
    h->handles = 1;
    /* the first attempt from the loop too: the callback never runs inside here */
    uv_timer_start(&h->timer, on_first, 0, 0);
    return h;
}

void happy_cancel(struct happy *h)
{
    if (!h || h->over)
        return;
    h->over = true;
    close_all(h);
}
