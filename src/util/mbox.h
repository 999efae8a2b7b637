/* Mailbox: a thread-safe FIFO of messages delivered to one libuv loop through
 * uv_async. Any thread may post; the handler runs on the owning loop's thread.
 * Never blocks the poster beyond a short mutex hold.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_MBOX_H
#define PETREL_UTIL_MBOX_H

#include <pthread.h>
#include <uv.h>

struct mbox_msg {
    struct mbox_msg *next;
    int kind;      /* meaning defined by the owner */
    void *ptr;     /* ownership passes to the handler */
    uint64_t id;
    int status;
};

typedef void (*mbox_handler)(void *owner, struct mbox_msg *msg); /* handler frees msg */

struct mbox {
    uv_async_t async;
    pthread_mutex_t lock;
    struct mbox_msg *head, *tail;
    mbox_handler handler;
    void *owner;
};

int mbox_init(struct mbox *m, uv_loop_t *loop, mbox_handler h, void *owner);
/* Posts msg (taken). Safe from any thread. */
void mbox_post(struct mbox *m, struct mbox_msg *msg);
/* Allocates and posts a message; returns PT_NOMEM on failure. */
int mbox_send(struct mbox *m, int kind, void *ptr, uint64_t id, int status);
/* Closes the async handle (call on the owning loop). Undelivered messages are
 * passed to the handler one last time before close. */
void mbox_close(struct mbox *m);

#endif
