/* DSN submission; see bounce.h. The DSN is a new message (high priority,
 * flagged ENTRY_F_DSN so it never bounces itself) through the ordinary ingest.
 * The original's header block is read at once (the entry and its content may be
 * removed right after); building the report and queueing it run on libuv's worker
 * pool when a loop is given, from a copy of what they need.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "obs/log.h"
#include "queue/bounce.h"
#include "queue/entry.h"
#include "queue/ingest.h"
#include "queue/spool.h"
#include "util/result.h"
#include "util/timeutil.h"

struct bounce_job {
    uv_work_t work;
    struct runtime *rt;
    const char *reporting_mta;      /* in the strings */
    char id[ENTRY_ID_LEN + 1];
    const char *sender;
    double arrival;
    uint8_t protocol;
    bool expired, ret_full;
    const char *envid;              /* in the strings, or NULL */
    double retry_until;
    size_t n;
    struct dsn_rcpt *rc;            /* right after the struct, then the strings */
    const char *orig;               /* the original's header block, in the strings */
    size_t orig_len;
};

static void bounce_done(void *arg, int status)
{
    (void)arg;
    if (status != PT_OK)
        log_error("could not queue a delivery status notification");
}

static void build_and_queue(const struct bounce_job *j)
{
    struct runtime *rt = j->rt;
    struct buf out;
    buf_init(&out, 0);
    struct dsn_info info = {
        .reporting_mta = j->reporting_mta,
        .id = j->id, .sender = j->sender, .arrival = j->arrival, .expired = j->expired,
        .rcpts = j->rc, .nrcpt = j->n, .orig = j->orig, .orig_len = j->orig_len,
        .envid = j->envid, .ret_full = j->ret_full, .retry_until = j->retry_until,
    };
    if (dsn_build(&info, &out) == PT_OK) {
        struct ingest_msg m = {
            .sender = "", .rcpts = &j->sender, .nrcpt = 1,
            .content = out.data, .content_len = out.len, .protocol = j->protocol,
            .priority = PRIO_HIGH, .flags = ENTRY_F_DSN, .received_at = time_now(),
        };
        entry_new_id(m.id);
        if (ingest_submit(rt, &m, bounce_done, NULL) != PT_OK)
            log_error("%s: could not queue the DSN to <%s>", j->id, j->sender);
    } else {
        log_error("%s: could not build the DSN to <%s>", j->id, j->sender);
    }
    buf_free(&out);
}

static void work(uv_work_t *w)
{
    build_and_queue(w->data);
}

static void after_work(uv_work_t *w, int status)
{
    free(w->data);
}

static char *put(char **cursor, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = memcpy(*cursor, s, n);
    *cursor += n;
    return d;
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

/* RET=FULL on a failure report: the whole original goes back (dsn.c decides). */
static bool wants_full(const struct entry *e, const struct dsn_rcpt *rc, size_t n)
{
    if (entry_ret(e) != ENTRY_F_RET_FULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (rc[i].action == DSN_FAILED)
            return true;
    return false;
}

void bounce_send(struct runtime *rt, const struct config *cfg, uv_loop_t *loop,
                 const struct entry *e, const struct dsn_rcpt *rc, size_t n, bool expired)
{
    if (n == 0 || e->sender[0] == 0 || (e->flags & ENTRY_F_DSN))
        return;
    /* The original is read here, before the caller removes the entry (its content
     * may go with it); only its header block goes into the report, unless RET=FULL
     * asks for all of it. */
    struct buf orig;
    buf_init(&orig, 0);
    spool_get_content(rt->spool, e->id, &orig);
    bool full = wants_full(e, rc, n);
    size_t hlen = orig.len;
    for (size_t i = 0; !full && i + 3 < orig.len; i++)
        if (memcmp(orig.data + i, "\r\n\r\n", 4) == 0) {
            hlen = i + 4;
            break;
        }
    const char *mta = cfg->delivery.helo_name ? cfg->delivery.helo_name : rt->hostname;
    size_t bytes = strlen(mta) + 1 + strlen(e->sender) + 1 + hlen + 1 + (e->envid ? strlen(e->envid) + 1 : 0);
    for (size_t i = 0; i < n; i++) {
        const struct dsn_rcpt *r = &rc[i];
        bytes += (r->addr ? strlen(r->addr) + 1 : 0) + (r->status ? strlen(r->status) + 1 : 0) +
                 (r->diagnostic ? strlen(r->diagnostic) + 1 : 0) +
                 (r->remote_mta ? strlen(r->remote_mta) + 1 : 0) +
                 (r->orcpt ? strlen(r->orcpt) + 1 : 0);
    }
    size_t head = sizeof(struct bounce_job) + n * sizeof(struct dsn_rcpt);
    struct bounce_job *j = malloc(head + bytes);
    if (!j) {
        log_error("%s: out of memory building the bounce to <%s>", e->id, e->sender);
        buf_free(&orig);
        return;
    }
    memset(j, 0, sizeof *j);
    j->rt = rt;
    memcpy(j->id, e->id, sizeof j->id);
    j->arrival = e->received_at;
    j->protocol = e->protocol;
    j->expired = expired;
    j->ret_full = full;
    j->retry_until = e->received_at + cfg->queue.max_retry_age;
    j->n = n;
    j->rc = (struct dsn_rcpt *)((char *)j + sizeof *j);
    char *cur = (char *)j + head;
    j->reporting_mta = put(&cur, mta);
    j->sender = put(&cur, e->sender);
    j->envid = put(&cur, e->envid);
    if (hlen)
        memcpy(cur, orig.data, hlen);
    cur[hlen] = 0;
    j->orig = cur;
    j->orig_len = hlen;
    cur += hlen + 1;
    buf_free(&orig);
    for (size_t i = 0; i < n; i++)
        j->rc[i] = (struct dsn_rcpt){
            .addr = put(&cur, rc[i].addr), .status = put(&cur, rc[i].status),
            .diagnostic = put(&cur, rc[i].diagnostic), .remote_mta = put(&cur, rc[i].remote_mta),
            .action = rc[i].action, .local = rc[i].local, .orcpt = put(&cur, rc[i].orcpt) };
    j->work.data = j;
    if (loop && uv_queue_work(loop, &j->work, work, after_work) == 0)
        return;
    build_and_queue(j);   /* no loop (tests, tools): here and now */
    free(j);
}
