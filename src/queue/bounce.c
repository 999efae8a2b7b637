/* DSN submission; see bounce.h. The DSN is a new message (high priority,
 * flagged ENTRY_F_DSN so it never bounces itself) through the ordinary ingest.
 * SPDX-License-Identifier: Apache-2.0 */
#include "core/runtime.h"
#include "obs/log.h"
#include "queue/bounce.h"
#include "queue/entry.h"
#include "queue/ingest.h"
#include "queue/spool.h"
#include "util/result.h"
#include "util/timeutil.h"

static void bounce_done(void *arg, int status)
{
    (void)arg;
    if (status != PT_OK)
        log_error("could not queue a delivery status notification");
}

bool bounce_wanted(const struct entry *e, const struct entry_rcpt *r, enum dsn_action a)
{
    if (e->sender[0] == 0 || (e->flags & ENTRY_F_DSN) || (r->notify & ENTRY_N_NEVER))
        return false;
    switch (a) {
    case DSN_FAILED:
        return !r->notify || (r->notify & ENTRY_N_FAILURE);
    case DSN_DELAYED:
        return !r->notify || (r->notify & ENTRY_N_DELAY);
    default:
        return (r->notify & ENTRY_N_SUCCESS) != 0;
    }
}

void bounce_send(struct runtime *rt, const struct entry *e, const struct dsn_rcpt *rc, size_t n,
                 bool expired)
{
    if (n == 0 || e->sender[0] == 0 || (e->flags & ENTRY_F_DSN))
        return;
    struct buf orig, out;
    buf_init(&orig, 0);
    buf_init(&out, 0);
    spool_get_content(rt->spool, e->id, &orig);
    struct dsn_info info = {
        .reporting_mta = rt->cfg->delivery.helo_name ? rt->cfg->delivery.helo_name : rt->hostname,
        .id = e->id, .sender = e->sender, .arrival = e->received_at, .expired = expired,
        .envid = e->envid, .ret_full = entry_ret(e) == ENTRY_F_RET_FULL,
        .retry_until = e->received_at + rt->cfg->queue.max_retry_age,
        .rcpts = rc, .nrcpt = n, .orig = orig.data, .orig_len = orig.len,
    };
    if (dsn_build(&info, &out) == PT_OK) {
        struct ingest_msg m = {
            .sender = "", .rcpts = (const char *const *)&e->sender, .nrcpt = 1,
            .content = out.data, .content_len = out.len, .protocol = e->protocol,
            .priority = PRIO_HIGH, .flags = ENTRY_F_DSN, .received_at = time_now(),
        };
        entry_new_id(m.id);
        if (ingest_submit(rt, &m, bounce_done, NULL) != PT_OK)
            log_error("%s: could not queue the DSN to <%s>", e->id, e->sender);
    } else {
        log_error("%s: could not build the DSN to <%s>", e->id, e->sender);
    }
    buf_free(&orig);
    buf_free(&out);
}
