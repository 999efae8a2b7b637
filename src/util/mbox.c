/* Mailbox between threads and a libuv loop; see mbox.h. The async handler drains
 * the whole list per wakeup, so many posts coalesce into one loop iteration.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>

#include "util/mbox.h"
#include "util/result.h"

static void mbox_drain(struct mbox *m)
{
    pthread_mutex_lock(&m->lock);
    struct mbox_msg *msg = m->head;
    m->head = m->tail = NULL;
    pthread_mutex_unlock(&m->lock);
    while (msg) {
        struct mbox_msg *next = msg->next;
        msg->next = NULL;
        m->handler(m->owner, msg);
        msg = next;
    }
}

static void mbox_on_async(uv_async_t *h)
{
    mbox_drain(h->data);
}

int mbox_init(struct mbox *m, uv_loop_t *loop, mbox_handler h, void *owner)
{
    m->head = m->tail = NULL;
    m->handler = h;
    m->owner = owner;
    if (pthread_mutex_init(&m->lock, NULL))
        return PT_ERROR;
    m->async.data = m;
    if (uv_async_init(loop, &m->async, mbox_on_async))
        return PT_ERROR;
    return PT_OK;
}

void mbox_post(struct mbox *m, struct mbox_msg *msg)
{
    msg->next = NULL;
    pthread_mutex_lock(&m->lock);
    if (m->tail)
        m->tail->next = msg;
    else
        m->head = msg;
    m->tail = msg;
    pthread_mutex_unlock(&m->lock);
    uv_async_send(&m->async);
}

int mbox_send(struct mbox *m, int kind, void *ptr, uint64_t id, int status)
{
    struct mbox_msg *msg = malloc(sizeof *msg);
    if (!msg)
        return PT_NOMEM;
    msg->kind = kind;
    msg->ptr = ptr;
    msg->id = id;
    msg->status = status;
    mbox_post(m, msg);
    return PT_OK;
}

void mbox_close(struct mbox *m)
{
    mbox_drain(m);
    uv_close((uv_handle_t *)&m->async, NULL);
}
