/* DSN submission; see bounce.h. The DSN is a new message (high priority,
 * flagged ENTRY_F_DSN so it never bounces itself) through the ordinary ingest.
 * With a loop, reading the original from the spool, building the report and
 * queueing it all run on libuv's worker pool, from a copy of the envelope; the
 * message's content is held meanwhile (the scheduler may remove the entry right
 * after the call: that removal then happens when the last read is done).
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdatomic.h>
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
    struct buf orig;                /* the original as read from the spool */
};

/* ---- content holds --------------------------------------------------------
 * Process-wide by nature: the entries of one message live on several delivery
 * threads, and any of them may be removed while another thread's DSN job still
 * reads the content. A removal asked for meanwhile is left to the last reader, entry
 * and all: an entry stays in the spool until then, so the spool's own rule ("the
 * content goes with the last entry") can never drop content that a later DSN job,
 * holding the same id, is still to read. A handful of records at a time. */
struct hold {
    struct hold *next;
    char id[ENTRY_ID_LEN + 1];
    int refs;                       /* DSN jobs still to read the content */
    char **domains;                 /* entries whose removal waits for the last read */
    size_t ndomains;
};
static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hold *holds;
static atomic_int nholds;           /* records in holds: the lock-free "none" answer */

static struct hold **hold_find(const char *id)
{
    struct hold **pp = &holds;
    while (*pp && strcmp((*pp)->id, id) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* One more reader of id's content; false when out of memory (read in the call). */
static bool hold_take(const char *id)
{
    pthread_mutex_lock(&hold_lock);
    struct hold **pp = hold_find(id), *h = *pp;
    if (!h && (h = calloc(1, sizeof *h)) != NULL) {
        memcpy(h->id, id, sizeof h->id);
        h->next = holds;
        holds = h;
        atomic_fetch_add(&nholds, 1);
    }
    if (h)
        h->refs++;
    pthread_mutex_unlock(&hold_lock);
    return h != NULL;
}

/* The read of id's content is done: the last one removes the entries left to it
 * (each with the content when it is the message's last, as spool_remove_entry does). */
static void hold_release(struct runtime *rt, const char *id)
{
    pthread_mutex_lock(&hold_lock);
    struct hold **pp = hold_find(id), *h = *pp;
    if (h && --h->refs == 0) {
        *pp = h->next;
        atomic_fetch_sub(&nholds, 1);
    } else {
        h = NULL;
    }
    pthread_mutex_unlock(&hold_lock);
    if (!h)
        return;
    for (size_t i = 0; i < h->ndomains; i++) {
        spool_remove_entry(rt->spool, h->id, h->domains[i]);
        free(h->domains[i]);
    }
    free(h->domains);
    free(h);
}

bool bounce_entry_defer(const char *id, const char *domain)
{
    if (atomic_load(&nholds) == 0)
        return false;               /* the common case: no DSN is being built */
    pthread_mutex_lock(&hold_lock);
    struct hold *h = *hold_find(id);
    bool held = false;
    if (h) {
        char **d = realloc(h->domains, (h->ndomains + 1) * sizeof *d);
        if (d) {
            h->domains = d;
            if ((d[h->ndomains] = strdup(domain)) != NULL) {
                h->ndomains++;
                held = true;
            }
        }
    }
    pthread_mutex_unlock(&hold_lock);
    return held;                    /* false without memory: the caller removes it now */
}

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
    /* only the header block goes into the report, unless RET=FULL asks for all */
    size_t hlen = j->orig.len;
    for (size_t i = 0; !j->ret_full && i + 3 < j->orig.len; i++)
        if (memcmp(j->orig.data + i, "\r\n\r\n", 4) == 0) {
            hlen = i + 4;
            break;
        }
    struct dsn_info info = {
        .reporting_mta = j->reporting_mta,
        .id = j->id, .sender = j->sender, .arrival = j->arrival, .expired = j->expired,
        .rcpts = j->rc, .nrcpt = j->n, .orig = hlen ? (const char *)j->orig.data : "",
        .orig_len = hlen, .envid = j->envid, .ret_full = j->ret_full,
        .retry_until = j->retry_until,
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

static void job_free(struct bounce_job *j)
{
    buf_free(&j->orig);
    free(j);
}

/* Worker pool: the spool read, then the report. */
static void work(uv_work_t *w)
{
    struct bounce_job *j = w->data;
    spool_get_content(j->rt->spool, j->id, &j->orig);
    hold_release(j->rt, j->id);
    build_and_queue(j);
}

static void after_work(uv_work_t *w, int status)
{
    struct bounce_job *j = w->data;
    if (status != 0)                /* cancelled (cannot happen: we never cancel) */
        hold_release(j->rt, j->id);
    job_free(j);
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

/* RET=FULL on a failure report: the whole original goes back (dsn.c decides).
 * BINARYMIME content never does: the report goes out as text (DATA or BDAT without
 * BINARYMIME), so it returns the header block only (RFC 3461 §4.3 allows that). */
static bool wants_full(const struct entry *e, const struct dsn_rcpt *rc, size_t n)
{
    if (entry_ret(e) != ENTRY_F_RET_FULL || (e->flags & ENTRY_F_BINARYMIME))
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
    const char *mta = cfg->delivery.helo_name ? cfg->delivery.helo_name : rt->hostname;
    size_t bytes = strlen(mta) + 1 + strlen(e->sender) + 1 + (e->envid ? strlen(e->envid) + 1 : 0);
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
        return;
    }
    memset(j, 0, sizeof *j);
    j->rt = rt;
    memcpy(j->id, e->id, sizeof j->id);
    j->arrival = e->received_at;
    j->protocol = e->protocol;
    j->expired = expired;
    j->ret_full = wants_full(e, rc, n);
    j->retry_until = e->received_at + cfg->queue.max_retry_age;
    j->n = n;
    j->rc = (struct dsn_rcpt *)((char *)j + sizeof *j);
    buf_init(&j->orig, 0);
    char *cur = (char *)j + head;
    j->reporting_mta = put(&cur, mta);
    j->sender = put(&cur, e->sender);
    j->envid = put(&cur, e->envid);
    for (size_t i = 0; i < n; i++)
        j->rc[i] = (struct dsn_rcpt){
            .addr = put(&cur, rc[i].addr), .status = put(&cur, rc[i].status),
            .diagnostic = put(&cur, rc[i].diagnostic), .remote_mta = put(&cur, rc[i].remote_mta),
            .action = rc[i].action, .local = rc[i].local, .orcpt = put(&cur, rc[i].orcpt) };
    j->work.data = j;
    /* off the loop: the content is held until the worker has read it */
    if (loop && hold_take(j->id)) {
        if (uv_queue_work(loop, &j->work, work, after_work) == 0)
            return;
        hold_release(rt, j->id);
    }
    /* no loop (tests, tools) or no memory for the hold: here and now */
    spool_get_content(rt->spool, j->id, &j->orig);
    build_and_queue(j);
    job_free(j);
}
