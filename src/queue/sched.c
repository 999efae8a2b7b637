/* Scheduler: delivery threads, each owning the per-destination queues whose key
 * hashes to it (domain, or relayhost for smarthost routes), a retry min-heap with
 * one timer, connection limits per destination and the SMTP clients. In RAM only
 * compact entries; content is read from the spool when a delivery starts.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "delivery/dns.h"
#include "dkim/dkim.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "queue/dsn.h"
#include "queue/entry.h"
#include "queue/ingest.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "smtp/smtp_client.h"
#include "tls/tls.h"
#include "util/headers.h"
#include "util/mbox.h"
#include "util/result.h"
#include "util/timeutil.h"

#define Q_BUCKETS 4096
#define SCHED_PRIOS 3
#define PRIO_FAIRNESS 8   /* every 8th pick goes to a lower class that waits */
#define IDLE_KEEP_S 2.0   /* an idle outbound connection waits this long for more mail */

enum { TMSG_ENTRY = 1, TMSG_STOP = 2, TMSG_SNAPSHOT = 3, TMSG_ADMIN = 4 };

struct dqueue {
    struct dqueue *hnext;
    char *key;
    const struct cfg_route *route;  /* relay route (borrowed from cfg) or NULL = MX */
    struct entry *ready[SCHED_PRIOS], *ready_tail[SCHED_PRIOS];
    uint32_t nready;
    uint32_t nentries;              /* all entries of this queue owned by the thread */
    int nconn;                      /* connections, including those resolving DNS */
    uint32_t nresolving;            /* connections that will pop a ready entry soon */
    struct dconn *idle;             /* connected, waiting for an entry (LIFO) */
    uint32_t picks;
    /* max_message_rate: a token bucket per destination queue */
    double tokens, refilled_at;
    bool throttled;                 /* on the thread's throttled list */
    struct dqueue *tnext;
    size_t snap;                    /* during a snapshot: 1 + its index in the answer */
};

struct dthread {
    struct sched *s;
    int index;
    uv_loop_t loop;
    uv_thread_t tid;
    struct mbox mbox;
    struct dns *dns;
    uv_timer_t timer;
    struct dqueue *buckets[Q_BUCKETS];
    struct entry **heap;
    uint32_t nheap, heap_cap;
    struct dconn *conns;            /* live connections (for shutdown) */
    bool stopping;
    struct spool_batch *deletes;    /* nosync deletions, written once per loop turn */
    uv_check_t flush;
    struct dqueue *throttled;       /* queues waiting for a max_message_rate token */
    struct suspension *suspended;   /* admin suspensions (every thread keeps them all) */
};

/* POST /api/queue/suspend: no new delivery for a destination until `until`. */
struct suspension {
    struct suspension *next;
    char key[300];
    double until;
};

/* One outbound connection slot: resolving, then an SMTP client. */
struct dconn {
    struct dconn *prev, *next;
    struct dconn *idle_next;
    bool idle;
    struct dthread *t;
    struct dqueue *q;
    struct smtp_client *client;
};

/* A route_to target given as a relay host rather than a transport key: made on
 * first use, kept until sched_free (a handful per config). */
struct literal_route {
    struct literal_route *next;
    struct cfg_route r;              /* relayhost = the spec; tls/auth from defaults */
};

struct sched {
    struct runtime *rt;
    int n;
    struct dthread *t;
    bool started;
    _Atomic uint64_t depth;
    pthread_mutex_t literal_lock;    /* entry_key runs on several threads */
    struct literal_route *literals;
};

static const struct smtp_client_ops client_ops;

double sched_backoff(double retry_interval, double max_retry_interval, uint32_t attempts)
{
    if (attempts == 0)
        attempts = 1;
    double d = retry_interval * ldexp(1.0, (int)(attempts > 60 ? 60 : attempts - 1));
    return d > max_retry_interval ? max_retry_interval : d;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The route of a route_to relay host spec, NULL if spec is not one. */
static const struct cfg_route *literal_route(struct sched *s, const char *spec)
{
    struct cfg_route parsed;
    if (config_parse_route_literal(spec, &parsed) != PT_OK)
        return NULL;
    pthread_mutex_lock(&s->literal_lock);
    struct literal_route *l = s->literals;
    while (l && strcmp(l->r.relayhost, spec) != 0)
        l = l->next;
    if (!l && (l = calloc(1, sizeof *l)) != NULL) {
        l->r = parsed;
        if (!(l->r.relayhost = strdup(spec))) {
            free(l);
            l = NULL;
        } else {
            l->next = s->literals;
            s->literals = l;
        }
    }
    pthread_mutex_unlock(&s->literal_lock);
    return l ? &l->r : NULL;
}

/* Route of an entry: its route_to target (a transport key, else a relay host),
 * else the transport route of its domain, else the configure_delivery relayhost;
 * NULL = MX delivery. A target the config no longer has falls back to the domain. */
static const struct cfg_route *entry_route(struct sched *s, const struct entry *e)
{
    const struct config *cfg = s->rt->cfg;
    const struct cfg_route *r = NULL;
    if (e->route && !(r = config_route_named(cfg, e->route)))
        r = literal_route(s, e->route);
    if (!r || r->kind == ROUTE_ERROR)
        r = config_route_for(cfg, e->domain);
    if (!r && cfg->delivery.dflt.kind == ROUTE_RELAY)
        r = &cfg->delivery.dflt;
    return r;
}

/* Destination key and route of an entry. */
static const char *entry_key(struct sched *s, const struct entry *e,
                             const struct cfg_route **route)
{
    const struct cfg_route *r = entry_route(s, e);
    *route = r;
    if (r && r->kind == ROUTE_RELAY)
        return r->relayhost;
    return e->domain;
}

/* ---- retry heap -------------------------------------------------------- */

static void heap_swap(struct dthread *t, uint32_t a, uint32_t b)
{
    struct entry *x = t->heap[a];
    t->heap[a] = t->heap[b];
    t->heap[b] = x;
    t->heap[a]->heap_idx = a;
    t->heap[b]->heap_idx = b;
}

static void heap_push(struct dthread *t, struct entry *e)
{
    if (t->nheap == t->heap_cap) {
        uint32_t cap = t->heap_cap ? t->heap_cap * 2 : 1024;
        struct entry **p = realloc(t->heap, cap * sizeof *p);
        if (!p)
            abort(); /* cannot keep an accepted message: broken invariant */
        t->heap = p;
        t->heap_cap = cap;
    }
    uint32_t i = t->nheap++;
    t->heap[i] = e;
    e->heap_idx = i;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (t->heap[p]->next_attempt <= t->heap[i]->next_attempt)
            break;
        heap_swap(t, i, p);
        i = p;
    }
}

static void heap_sift_down(struct dthread *t, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->nheap && t->heap[l]->next_attempt < t->heap[m]->next_attempt)
            m = l;
        if (r < t->nheap && t->heap[r]->next_attempt < t->heap[m]->next_attempt)
            m = r;
        if (m == i)
            break;
        heap_swap(t, i, m);
        i = m;
    }
}

static struct entry *heap_pop(struct dthread *t)
{
    if (t->nheap == 0)
        return NULL;
    struct entry *top = t->heap[0];
    t->nheap--;
    if (t->nheap) {
        t->heap[0] = t->heap[t->nheap];
        t->heap[0]->heap_idx = 0;
        heap_sift_down(t, 0);
    }
    return top;
}

/* Restores the heap order after entries were dropped or their times changed. */
static void heap_rebuild(struct dthread *t)
{
    for (uint32_t i = 0; i < t->nheap; i++)
        t->heap[i]->heap_idx = i;
    for (uint32_t i = t->nheap / 2; i-- > 0;)
        heap_sift_down(t, i);
}

static void on_timer(uv_timer_t *timer);

static double rate_next_token(const struct dthread *t, const struct dqueue *q);

static void timer_arm(struct dthread *t)
{
    if (t->stopping || !t->s->started)
        return;
    double when = t->nheap ? t->heap[0]->next_attempt : INFINITY;
    for (const struct suspension *su = t->suspended; su; su = su->next)
        if (su->until < when)
            when = su->until;
    for (const struct dqueue *q = t->throttled; q; q = q->tnext) {
        double w = rate_next_token(t, q);
        if (w < when)
            when = w;
    }
    if (when == INFINITY) {
        uv_timer_stop(&t->timer);
        return;
    }
    double wait = when - time_now();
    uint64_t ms = wait <= 0 ? 0 : (uint64_t)(wait * 1000.0) + 1;
    uv_timer_start(&t->timer, on_timer, ms, 0);
}

/* ---- max_message_rate -------------------------------------------------- */

/* Messages per second allowed to one destination queue, 0 = unlimited. The bucket
 * holds one second's worth (at least one message), so a quiet queue may send a
 * short burst, then goes at the configured pace. */
static double rate_per_s(const struct dthread *t)
{
    return t->s->rt->cfg->delivery.max_message_rate / 60.0;
}

static double rate_burst(double per_s)
{
    return per_s > 1.0 ? floor(per_s) : 1.0;
}

static void rate_refill(const struct dthread *t, struct dqueue *q, double now)
{
    double per_s = rate_per_s(t);
    if (q->refilled_at == 0) {
        q->tokens = rate_burst(per_s);
    } else {
        q->tokens += (now - q->refilled_at) * per_s;
        if (q->tokens > rate_burst(per_s))
            q->tokens = rate_burst(per_s);
    }
    q->refilled_at = now;
}

/* When the queue will have a whole token again. */
static double rate_next_token(const struct dthread *t, const struct dqueue *q)
{
    return q->refilled_at + (1.0 - q->tokens) / rate_per_s(t);
}

/* Whether q may send one more message now; if not, it waits on the throttled list
 * and the thread's timer dispatches it when a token is due. */
static bool rate_ok(struct dthread *t, struct dqueue *q)
{
    if (rate_per_s(t) <= 0)
        return true;
    rate_refill(t, q, time_now());
    if (q->tokens >= 1.0)
        return true;
    if (!q->throttled) {
        q->throttled = true;
        q->tnext = t->throttled;
        t->throttled = q;
        timer_arm(t);
    }
    return false;
}

/* ---- queues ------------------------------------------------------------ */

static struct dqueue *queue_get(struct dthread *t, const char *key, const struct cfg_route *r)
{
    uint64_t h = hash_str(key) % Q_BUCKETS;
    for (struct dqueue *q = t->buckets[h]; q; q = q->hnext)
        if (strcmp(q->key, key) == 0)
            return q;
    struct dqueue *q = calloc(1, sizeof *q);
    if (!q || !(q->key = strdup(key)))
        abort();
    q->route = r && r->kind == ROUTE_RELAY ? r : NULL;
    q->hnext = t->buckets[h];
    t->buckets[h] = q;
    return q;
}

static void queue_maybe_free(struct dthread *t, struct dqueue *q)
{
    if (q->nentries || q->nconn || q->throttled || t->stopping)
        return;
    struct dqueue **pp = &t->buckets[hash_str(q->key) % Q_BUCKETS];
    while (*pp && *pp != q)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = q->hnext;
    free(q->key);
    free(q);
}

static void ready_push(struct dqueue *q, struct entry *e)
{
    int p = e->priority < SCHED_PRIOS ? e->priority : PRIO_NORMAL;
    e->next = NULL;
    if (q->ready_tail[p])
        q->ready_tail[p]->next = e;
    else
        q->ready[p] = e;
    q->ready_tail[p] = e;
    q->nready++;
}

static struct entry *ready_pop(struct dqueue *q)
{
    if (q->nready == 0)
        return NULL;
    int first = 0;
    /* fairness: now and then serve a lower class first, so bulk never starves */
    if (++q->picks % PRIO_FAIRNESS == 0)
        first = (int)((q->picks / PRIO_FAIRNESS) % SCHED_PRIOS);
    for (int k = 0; k < SCHED_PRIOS; k++) {
        int p = (first + k) % SCHED_PRIOS;
        struct entry *e = q->ready[p];
        if (!e)
            continue;
        q->ready[p] = e->next;
        if (!q->ready[p])
            q->ready_tail[p] = NULL;
        e->next = NULL;
        q->nready--;
        return e;
    }
    return NULL;
}

static struct dqueue *entry_queue(struct dthread *t, struct entry *e)
{
    const struct cfg_route *r;
    const char *key = entry_key(t->s, e, &r);
    return queue_get(t, key, r);
}

/* ---- results ----------------------------------------------------------- */

static const char *proto_name(const struct entry *e)
{
    return e->protocol == PROTO_HTTP ? "http" : "smtp";
}

static void log_result(const struct entry *e, const char *type, const char *rcpt, int code,
                       const char *response, const char *site, const char *peer,
                       const char *tls)
{
    double now = time_now();
    struct log_record r = {
        .type = type, .id = e->id, .timestamp = now, .sender = e->sender, .recipient = rcpt,
        .queue = e->domain, .site = site, .peer_address = peer, .code = code,
        .response = response, .size = (int64_t)e->size, .delay = now - e->received_at,
        .attempts = (int)e->attempts, .tls = tls, .protocol = proto_name(e),
    };
    log_event(&r);
}

static void bounce_done(void *arg, int status)
{
    (void)arg;
    if (status != PT_OK)
        log_error("could not queue a delivery status notification");
}

/* Queues a DSN to the sender for the given recipients (never for <> or a DSN). */
static void send_dsn(struct dthread *t, const struct entry *e, const struct dsn_rcpt *rc,
                     size_t n, bool expired)
{
    struct runtime *rt = t->s->rt;
    if (n == 0 || e->sender[0] == 0 || (e->flags & ENTRY_F_DSN))
        return;
    struct buf orig, out;
    buf_init(&orig, 0);
    buf_init(&out, 0);
    spool_get_content(rt->spool, e->id, &orig);
    struct dsn_info info = {
        .reporting_mta = rt->cfg->delivery.helo_name ? rt->cfg->delivery.helo_name : rt->hostname,
        .id = e->id, .sender = e->sender, .arrival = e->received_at, .expired = expired,
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
            log_error("%s: could not queue the bounce to <%s>", e->id, e->sender);
    }
    buf_free(&orig);
    buf_free(&out);
}

/* Writes the pending deletions (one RocksDB write, no fsync: losing them only
 * means a duplicate delivery after a crash, which at-least-once allows). */
static void flush_deletes(struct dthread *t)
{
    if (t->deletes) {
        spool_commit_nosync(t->s->rt->spool, t->deletes);
        t->deletes = NULL;
    }
}

static void on_check(uv_check_t *h)
{
    flush_deletes(h->data);
}

static void entry_remove(struct dthread *t, struct dqueue *q, struct entry *e)
{
    struct spool *sp = t->s->rt->spool;
    if (e->ndomains <= 1) {
        /* the common case: batched with this loop turn's other deletions */
        if (!t->deletes)
            t->deletes = spool_batch_new();
        if (t->deletes) {
            spool_batch_del_entry(t->deletes, e->id, e->domain);
            spool_batch_del_content(t->deletes, e->id);
        }
    } else {
        flush_deletes(t);
        struct spool_batch *b = spool_batch_new();
        if (b) {
            spool_batch_del_entry(b, e->id, e->domain);
            spool_commit_nosync(sp, b);
            if (!spool_has_entries(sp, e->id) && (b = spool_batch_new()) != NULL) {
                spool_batch_del_content(b, e->id);
                spool_commit_nosync(sp, b);
            }
        }
    }
    q->nentries--;
    metrics_add(M_QUEUE_DEPTH, e->domain, NULL, -1);
    atomic_fetch_sub(&t->s->depth, 1);
    entry_free(e);
    queue_maybe_free(t, q);
}

static void entry_persist(struct dthread *t, const struct entry *e)
{
    struct buf rec;
    buf_init(&rec, 0);
    struct spool_batch *b = spool_batch_new();
    if (b && entry_encode(e, &rec) == PT_OK &&
        spool_batch_put_entry(b, e->id, e->domain, rec.data, rec.len) == PT_OK) {
        spool_commit_nosync(t->s->rt->spool, b);
        b = NULL;
    }
    spool_batch_free(b);
    buf_free(&rec);
}

/* Ends every pending recipient of e and removes it. type LOG_EXPIRATION or LOG_BOUNCE:
 * a record each (code, diag, the last site) and one DSN with status (Bounce records
 * also count in petrel_messages_bounced_total); type NULL: silently (admin delete). */
static void fail_pending(struct dthread *t, struct dqueue *q, struct entry *e, const char *type,
                         int code, const char *status, const char *diag, const char *site,
                         const char *host, const char *peer, const char *tls)
{
    uint32_t np = entry_pending(e);
    struct dsn_rcpt *rc = type ? calloc(np ? np : 1, sizeof *rc) : NULL;
    size_t nb = 0;
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        struct entry_rcpt *r = &e->rcpts[i];
        if (r->state != RCPT_PENDING)
            continue;
        r->state = RCPT_BOUNCED;
        if (!type)
            continue;
        if (strcmp(type, LOG_BOUNCE) == 0)
            metrics_inc(M_BOUNCED, e->domain, NULL, 1);
        log_result(e, type, r->addr, code, diag, site, peer, tls);
        if (rc)
            rc[nb++] = (struct dsn_rcpt){ r->addr, status, diag, site ? host : NULL };
    }
    if (type)
        send_dsn(t, e, rc, nb, strcmp(type, LOG_EXPIRATION) == 0);
    free(rc);
    entry_remove(t, q, e);
}

/* Applies one attempt's per-recipient results; then the entry is finished,
 * expired, or scheduled for retry. */
static void apply_results(struct dthread *t, struct dqueue *q, struct entry *e,
                          const struct client_result *res, uint32_t nres, const char *site,
                          const char *peer, const char *tls)
{
    const struct config *cfg = t->s->rt->cfg;
    if (nres > 0 && res[0].code == -1) {
        ready_push(q, e); /* not attempted: the cached connection had gone stale */
        return;
    }
    e->attempts++;
    struct dsn_rcpt *bounced = calloc(nres ? nres : 1, sizeof *bounced);
    size_t nb = 0;
    const char *last_defer = NULL;
    uint32_t k = 0;
    char host[300] = "";
    if (site) {
        snprintf(host, sizeof host, "%s", site);
        char *colon = strrchr(host, ':');
        if (colon)
            *colon = 0;
    }
    for (uint32_t i = 0; i < e->nrcpt && k < nres; i++) {
        struct entry_rcpt *r = &e->rcpts[i];
        if (r->state != RCPT_PENDING)
            continue;
        const struct client_result *cr = &res[k++];
        const char *cls = metrics_code_class(cr->code);
        if (cls)
            metrics_inc(M_SMTP_ERRORS, METRICS_OUTBOUND, cls, 1);
        if (cr->code / 100 == 2) {
            r->state = RCPT_DELIVERED;
            metrics_inc(M_DELIVERED, e->domain, NULL, 1);
            metrics_observe(M_LATENCY, time_now() - e->received_at);
            log_result(e, LOG_DELIVERY, r->addr, cr->code, cr->text, site, peer, tls);
        } else if (cr->code / 100 == 5) {
            r->state = RCPT_BOUNCED;
            metrics_inc(M_BOUNCED, e->domain, NULL, 1);
            log_result(e, LOG_BOUNCE, r->addr, cr->code, cr->text, site, peer, tls);
            if (bounced)
                bounced[nb++] = (struct dsn_rcpt){ r->addr, cr->enhanced, cr->text, site ? host : NULL };
        } else {
            metrics_inc(M_DEFERRED, e->domain, NULL, 1);
            log_result(e, LOG_TRANSIENT, r->addr, cr->code ? cr->code : -1, cr->text, site, peer, tls);
            last_defer = cr->text;
        }
    }
    if (nb)
        send_dsn(t, e, bounced, nb, false);
    free(bounced);
    if (entry_pending(e) == 0) {
        entry_remove(t, q, e);
        return;
    }
    if (last_defer)
        entry_set_last_response(e, last_defer);
    double now = time_now();
    double deadline = e->received_at + cfg->queue.max_retry_age;
    if (now >= deadline) {
        fail_pending(t, q, e, LOG_EXPIRATION, -1, "4.4.7",
                     e->last_response ? e->last_response : "delivery time expired", site, host,
                     peer, tls);
        return;
    }
    double next = now + sched_backoff(cfg->queue.retry_interval, cfg->queue.max_retry_interval,
                                      e->attempts);
    e->next_attempt = next < deadline ? next : deadline;
    entry_persist(t, e);
    heap_push(t, e);
    timer_arm(t);
}

/* Gives every pending recipient the same synthetic result (DNS failures etc.). */
static void apply_uniform(struct dthread *t, struct dqueue *q, struct entry *e, int code,
                          const char *enh, const char *text)
{
    uint32_t n = entry_pending(e);
    struct client_result *res = calloc(n ? n : 1, sizeof *res);
    if (!res)
        abort();
    for (uint32_t i = 0; i < n; i++) {
        res[i].code = code;
        snprintf(res[i].enhanced, sizeof res[i].enhanced, "%s", enh);
        res[i].text = (char *)text;
    }
    apply_results(t, q, e, res, n, NULL, NULL, NULL);
    free(res);
}

/* ---- connections ------------------------------------------------------- */

static void dispatch(struct dthread *t, struct dqueue *q);

static struct suspension *suspension_of(const struct dthread *t, const char *key)
{
    for (struct suspension *su = t->suspended; su; su = su->next)
        if (strcmp(su->key, key) == 0)
            return su;
    return NULL;
}

static void idle_remove(struct dqueue *q, struct dconn *dc)
{
    if (!dc->idle)
        return;
    struct dconn **pp = &q->idle;
    while (*pp && *pp != dc)
        pp = &(*pp)->idle_next;
    if (*pp)
        *pp = dc->idle_next;
    dc->idle = false;
    dc->idle_next = NULL;
}

static void dconn_free(struct dconn *dc)
{
    struct dthread *t = dc->t;
    idle_remove(dc->q, dc);
    if (dc->prev)
        dc->prev->next = dc->next;
    else
        t->conns = dc->next;
    if (dc->next)
        dc->next->prev = dc->prev;
    dc->q->nconn--;
    metrics_add(M_CONNECTIONS, METRICS_OUTBOUND, dc->q->key, -1);
    struct dqueue *q = dc->q;
    free(dc);
    if (!t->stopping)
        dispatch(t, q);
    queue_maybe_free(t, q);
}

/* content becomes itself with the entry's header edits applied. */
static int apply_hdr_edits(const struct entry *e, struct buf *content)
{
    struct buf out;
    buf_init(&out, 0);
    int rc = hdr_apply(content->data, content->len, e->hdr_edits, strlen(e->hdr_edits), &out);
    if (rc != PT_OK) {
        buf_free(&out);
        return rc;
    }
    buf_free(content);
    *content = out;
    return PT_OK;
}

/* DKIM: signs content with every configured key for the most specific domain that
 * covers the From: domain (two keys for one domain = dual signing). Signing happens
 * here, after the header edits of hooks, so that the signature covers what is sent.
 * A failure is logged and the message goes out unsigned rather than not at all. */
static void dkim_apply(struct dthread *t, const struct entry *e, struct buf *content)
{
    const struct runtime *rt = t->s->rt;
    char from[256];
    if (rt->n_dkim == 0 || !dkim_from_domain(content->data, content->len, from))
        return;
    size_t best = 0;
    for (int i = 0; i < rt->n_dkim; i++) {
        const char *d = dkim_key_domain(rt->dkim[i]);
        if (dkim_domain_covers(d, from) && strlen(d) > best)
            best = strlen(d);
    }
    if (best == 0)
        return;
    struct buf sig;
    buf_init(&sig, 0);
    double now = time_now();
    for (int i = 0; i < rt->n_dkim; i++) {
        const char *d = dkim_key_domain(rt->dkim[i]);
        if (strlen(d) != best || !dkim_domain_covers(d, from))
            continue;
        int rc = dkim_sign(rt->dkim[i], content->data, content->len, now, &sig);
        if (rc != PT_OK)
            log_warn("%s: DKIM signing for %s failed (%d): sent unsigned by this key", e->id, d,
                     rc);
    }
    if (sig.len && buf_append(&sig, content->data, content->len) == PT_OK) {
        buf_free(content);
        *content = sig;
        return;
    }
    buf_free(&sig);
}

/* Pops the next ready entry of q with its content; entries whose content is gone
 * are dropped (logged). */
static struct entry *next_with_content(struct dthread *t, struct dqueue *q, struct buf *content)
{
    struct entry *e;
    while (q->nready && rate_ok(t, q) && (e = ready_pop(q)) != NULL) {
        if (rate_per_s(t) > 0)
            q->tokens -= 1.0;
        buf_init(content, 0);
        if (spool_get_content(t->s->rt->spool, e->id, content) == PT_OK) {
            if (!e->hdr_edits || apply_hdr_edits(e, content) == PT_OK) {
                dkim_apply(t, e, content);
                return e;
            }
            buf_free(content);  /* out of memory: try again later */
            e->next_attempt = time_now() + t->s->rt->cfg->queue.retry_interval;
            heap_push(t, e);
            timer_arm(t);
            continue;
        }
        buf_free(content);
        log_error("%s: content missing from the spool; dropping the entry for %s", e->id, e->domain);
        entry_remove(t, q, e);
    }
    return NULL;
}

/* First line of a password_file (the file may change while we run). */
static void read_secret(const char *path, char *out, size_t n)
{
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        log_error("cannot read password_file %s: %m", path);
        return;
    }
    if (fgets(out, (int)n, f))
        out[strcspn(out, "\r\n")] = 0;
    fclose(f);
}

static void on_dns(void *arg, const struct dns_result *res)
{
    struct dconn *dc = arg;
    struct dthread *t = dc->t;
    struct dqueue *q = dc->q;
    const struct config *cfg = t->s->rt->cfg;
    q->nresolving--;
    if (t->stopping) {
        dconn_free(dc);
        return;
    }
    if (res->status != DNS_OK) {
        struct entry *e;
        char text[300];
        while ((e = ready_pop(q)) != NULL) {
            switch (res->status) {
            case DNS_NULLMX:
                snprintf(text, sizeof text, "556 5.1.10 domain %s does not accept mail (null MX)", e->domain);
                apply_uniform(t, q, e, 556, "5.1.10", text);
                break;
            case DNS_NOTFOUND:
                snprintf(text, sizeof text, "550 5.1.2 Host or domain name not found: %s", res->error);
                apply_uniform(t, q, e, 550, "5.1.2", text);
                break;
            default:
                snprintf(text, sizeof text, "451 4.4.3 DNS lookup failed: %s", res->error);
                apply_uniform(t, q, e, 451, "4.4.3", text);
                break;
            }
        }
        dconn_free(dc);
        return;
    }
    struct buf content;
    struct entry *e = next_with_content(t, q, &content);
    if (!e) {
        dconn_free(dc);
        return;
    }
    const struct cfg_route *r = q->route;
    const struct cfg_route *d = &cfg->delivery.dflt;
    const char *level = r && r->tls ? r->tls : d->tls ? d->tls : "may";
    const char *ca = r && r->ca_file ? r->ca_file : d->ca_file;
    const struct cfg_auth_client *auth = r ? r->auth : NULL; /* credentials go to relays only */
    char pass[512] = "";
    if (auth && auth->password)
        snprintf(pass, sizeof pass, "%s", auth->password);
    else if (auth && auth->password_file)
        read_secret(auth->password_file, pass, sizeof pass);
    struct smtp_client_params p = {
        .hosts = res,
        .tls = strcmp(level, "verify") == 0 ? CTLS_VERIFY
             : strcmp(level, "encrypt") == 0 ? CTLS_ENCRYPT : CTLS_MAY,
        .tls_ctx = runtime_client_tls(t->s->rt, ca),
        .auth_user = auth ? auth->username : NULL,
        .auth_pass = auth ? pass : NULL,
        .port = r ? r->relay_port : cfg->delivery.smtp_port,
        .helo = cfg->delivery.helo_name ? cfg->delivery.helo_name : t->s->rt->hostname,
        .connect_timeout = cfg->delivery.connect_timeout,
        .command_timeout = cfg->delivery.connect_timeout * 5 > 600 ? 600 : cfg->delivery.connect_timeout * 5,
    };
    dc->client = smtp_client_start(&t->loop, &p, &client_ops, dc, e, &content);
    explicit_bzero(pass, sizeof pass);
    if (!dc->client) {
        buf_free(&content);
        apply_uniform(t, q, e, 451, "4.3.0", "451 4.3.0 out of memory starting a delivery");
        dconn_free(dc);
    }
}

static void start_conn(struct dthread *t, struct dqueue *q)
{
    struct dconn *dc = calloc(1, sizeof *dc);
    if (!dc)
        return;
    dc->t = t;
    dc->q = q;
    dc->next = t->conns;
    if (t->conns)
        t->conns->prev = dc;
    t->conns = dc;
    q->nconn++;
    metrics_add(M_CONNECTIONS, METRICS_OUTBOUND, q->key, 1);
    q->nresolving++;
    const struct cfg_route *r = q->route;
    if (r && r->relay_no_mx)
        dns_resolve_host(t->dns, r->relay_host, on_dns, dc);
    else
        dns_resolve_mx(t->dns, r ? r->relay_host : q->key, on_dns, dc);
}

static void dispatch(struct dthread *t, struct dqueue *q)
{
    int max = t->s->rt->cfg->delivery.max_connections_per_domain;
    if (q->nready == 0 || suspension_of(t, q->key) || !rate_ok(t, q))
        return;                     /* a throttled or suspended queue: the timer */
    while (!t->stopping && q->idle && q->nready > q->nresolving && rate_ok(t, q)) {
        struct dconn *dc = q->idle;
        idle_remove(q, dc);
        struct buf content;
        struct entry *e = next_with_content(t, q, &content);
        if (!e) {
            smtp_client_quit(dc->client);
            continue;
        }
        smtp_client_deliver(dc->client, e, &content);
    }
    /* a new connection only for ready entries that no resolving connection will
     * take: don't open 10 connections for 2 messages */
    while (!t->stopping && q->nready > q->nresolving && q->nconn < max &&
           (rate_per_s(t) <= 0 || q->nresolving < (uint32_t)q->tokens))
        start_conn(t, q);
}

static void client_on_done(void *owner, struct smtp_client *c, struct entry *e,
                           const struct client_result *res, uint32_t nres, bool usable,
                           const char *site, const char *peer, const char *tls)
{
    struct dconn *dc = owner;
    struct dthread *t = dc->t;
    const struct config *cfg = t->s->rt->cfg;
    apply_results(t, dc->q, e, res, nres, site, peer, tls);
    if (!usable)
        return;
    if (!t->stopping &&
        smtp_client_deliveries(c) < (uint32_t)cfg->delivery.max_deliveries_per_connection) {
        struct buf content;
        struct entry *next = next_with_content(t, dc->q, &content);
        if (next) {
            smtp_client_deliver(c, next, &content);
            return;
        }
        /* nothing ready now: keep the connection warm for the next message */
        dc->idle = true;
        dc->idle_next = dc->q->idle;
        dc->q->idle = dc;
        smtp_client_idle(c, IDLE_KEEP_S);
        return;
    }
    smtp_client_quit(c);
}

static void client_on_closed(void *owner, struct smtp_client *c)
{
    dconn_free(owner);
}

static void client_on_tls_failure(void *owner, const char *site, const char *why)
{
    log_warn("smtp-out %s: TLS policy failure: %s", site, why);
    metrics_inc(M_TLS_FAILURES, METRICS_OUTBOUND, NULL, 1);
}

static const struct smtp_client_ops client_ops = {
    .on_done = client_on_done, .on_closed = client_on_closed,
    .on_tls_failure = client_on_tls_failure,
};

/* ---- entry intake ------------------------------------------------------ */

static void thread_insert(struct dthread *t, struct entry *e, bool run)
{
    struct dqueue *q = entry_queue(t, e);
    q->nentries++;
    metrics_add(M_QUEUE_DEPTH, e->domain, NULL, 1);
    const struct cfg_route *r = entry_route(t->s, e);
    if (r && r->kind == ROUTE_DISCARD) {
        e->attempts++;
        for (uint32_t i = 0; i < e->nrcpt; i++) {
            if (e->rcpts[i].state != RCPT_PENDING)
                continue;
            e->rcpts[i].state = RCPT_DELIVERED;
            log_result(e, LOG_DELIVERY, e->rcpts[i].addr, 250, "250 2.0.0 discarded by transport route", NULL, NULL, NULL);
        }
        entry_remove(t, q, e);
        return;
    }
    if (e->next_attempt <= time_now()) {
        ready_push(q, e);
        if (run)
            dispatch(t, q);
    } else {
        heap_push(t, e);
        if (run)
            timer_arm(t);
    }
}

static void on_timer(uv_timer_t *timer)
{
    struct dthread *t = timer->data;
    double now = time_now();
    for (struct suspension **pp = &t->suspended; *pp;) {
        struct suspension *su = *pp;
        if (su->until > now) {
            pp = &su->next;
            continue;
        }
        *pp = su->next;
        log_info("queue %s: suspension ended", su->key);
        for (struct dqueue *q = t->buckets[hash_str(su->key) % Q_BUCKETS]; q; q = q->hnext)
            if (strcmp(q->key, su->key) == 0)
                dispatch(t, q);
        free(su);
    }
    while (t->nheap && t->heap[0]->next_attempt <= now) {
        struct entry *e = heap_pop(t);
        struct dqueue *q = entry_queue(t, e);
        ready_push(q, e);
        dispatch(t, q);
    }
    /* queues whose next max_message_rate token is due (dispatch may throttle
     * them again, onto the fresh list) */
    struct dqueue *q = t->throttled;
    t->throttled = NULL;
    while (q) {
        struct dqueue *next = q->tnext;
        q->throttled = false;
        q->tnext = NULL;
        if (rate_next_token(t, q) <= now)
            dispatch(t, q);
        else
            rate_ok(t, q);          /* not yet: back on the list */
        queue_maybe_free(t, q);
        q = next;
    }
    timer_arm(t);
}

/* ---- calls to every delivery thread (admin snapshot and actions) ---------- */

/* A call to every delivery thread (a snapshot or an admin action), shared by the
 * asking thread and the delivery threads; the last one out frees it (the asker may
 * give up waiting before a thread answers). */
struct thread_call {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending;                /* threads that have not answered */
    int refs;                   /* pending + the asker */
    bool failed;
    struct sched_queue_info *q; /* TMSG_SNAPSHOT: the answers */
    size_t n;
    struct sched_admin_req req; /* TMSG_ADMIN: the action (strings copied below) */
    char domain[300], id[ENTRY_ID_LEN + 1], reason[200];
    uint64_t affected;          /* TMSG_ADMIN: recipients, summed over the threads */
};

static void call_release(struct thread_call *sn)
{
    /* called with sn->lock held; unlocks */
    bool last = --sn->refs == 0;
    pthread_mutex_unlock(&sn->lock);
    if (last) {
        pthread_mutex_destroy(&sn->lock);
        pthread_cond_destroy(&sn->cond);
        free(sn->q);
        free(sn);
    }
}

static void min_time(double *slot, double t)
{
    if (t > 0 && (*slot == 0 || t < *slot))
        *slot = t;
}

/* On the delivery thread: this thread's queues into sn. */
static void snapshot_answer(struct dthread *t, struct thread_call *sn)
{
    struct sched_queue_info *loc = NULL;
    size_t n = 0, cap = 0;
    bool failed = t->stopping;
    double now = time_now();
    for (int h = 0; h < Q_BUCKETS && !failed; h++)
        for (struct dqueue *q = t->buckets[h]; q && !failed; q = q->hnext) {
            q->snap = 0;
            if (!q->nentries && !q->nconn)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct sched_queue_info *p = realloc(loc, ncap * sizeof *p);
                if (!p) {
                    failed = true;
                    break;
                }
                loc = p;
                cap = ncap;
            }
            struct sched_queue_info *qi = &loc[n++];
            memset(qi, 0, sizeof *qi);
            snprintf(qi->key, sizeof qi->key, "%s", q->key);
            qi->count = q->nentries;
            qi->connections = q->nconn;
            const struct suspension *su = suspension_of(t, q->key);
            qi->suspended = su != NULL;
            qi->suspended_until = su ? su->until : 0;
            q->snap = n;
            for (int p = 0; p < SCHED_PRIOS; p++)
                for (struct entry *e = q->ready[p]; e; e = e->next) {
                    min_time(&qi->oldest, e->received_at);
                    min_time(&qi->next_attempt, now);
                }
        }
    for (uint32_t i = 0; i < t->nheap && !failed; i++) {  /* waiting for a retry */
        const struct entry *e = t->heap[i];
        const struct cfg_route *r;
        const char *key = entry_key(t->s, e, &r);
        for (struct dqueue *q = t->buckets[hash_str(key) % Q_BUCKETS]; q; q = q->hnext)
            if (q->snap && strcmp(q->key, key) == 0) {
                min_time(&loc[q->snap - 1].oldest, e->received_at);
                min_time(&loc[q->snap - 1].next_attempt, e->next_attempt);
                break;
            }
    }
    pthread_mutex_lock(&sn->lock);
    if (!failed && n) {
        struct sched_queue_info *p = realloc(sn->q, (sn->n + n) * sizeof *p);
        if (p) {
            memcpy(p + sn->n, loc, n * sizeof *p);
            sn->q = p;
            sn->n += n;
        } else {
            failed = true;
        }
    }
    sn->failed |= failed;
    sn->pending--;
    pthread_cond_signal(&sn->cond);
    call_release(sn);
    free(loc);
}

static int info_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sched_queue_info *)a)->key,
                  ((const struct sched_queue_info *)b)->key);
}

static struct thread_call *call_new(void)
{
    struct thread_call *sn = calloc(1, sizeof *sn);
    if (!sn)
        return NULL;
    pthread_mutex_init(&sn->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sn->cond, &ca);
    pthread_condattr_destroy(&ca);
    sn->refs = 1;
    return sn;
}

/* Posts kind to every delivery thread and waits up to timeout_s for their answers;
 * returns with sn->lock held (the caller reads the answers, then releases). */
static int call_threads(struct sched *s, int kind, struct thread_call *sn, double timeout_s)
{
    pthread_mutex_lock(&sn->lock);
    for (int i = 0; i < s->n; i++) {
        sn->pending++;
        sn->refs++;
        if (mbox_send(&s->t[i].mbox, kind, sn, 0, 0) != PT_OK) {
            sn->pending--;
            sn->refs--;
            sn->failed = true;
        }
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)timeout_s;
    dl.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    while (sn->pending > 0 && !sn->failed)
        if (pthread_cond_timedwait(&sn->cond, &sn->lock, &dl) != 0)
            break;
    return sn->pending > 0 || sn->failed ? PT_ERROR : PT_OK;
}

int sched_snapshot(struct sched *s, double timeout_s, struct sched_queue_info **out,
                   size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s->started)
        return PT_ERROR;
    struct thread_call *sn = call_new();
    if (!sn)
        return PT_NOMEM;
    int rc = call_threads(s, TMSG_SNAPSHOT, sn, timeout_s);
    if (rc == PT_OK) {
        qsort(sn->q, sn->n, sizeof *sn->q, info_cmp);
        *out = sn->q;
        *n = sn->n;
        sn->q = NULL;
    }
    call_release(sn);
    return rc;
}

/* ---- admin actions ---------------------------------------------------------- */

static bool admin_match(struct dthread *t, const struct entry *e,
                        const struct sched_admin_req *rq)
{
    if (rq->id)
        return strcmp(e->id, rq->id) == 0;
    if (!rq->domain)
        return true;
    const struct cfg_route *r;
    return strcmp(e->domain, rq->domain) == 0 || strcmp(entry_key(t->s, e, &r), rq->domain) == 0;
}

/* Waiting entries (retry heap, and unless heap_only the ready lists) that match:
 * counted into *pending_rcpts, and with take also unlinked and returned (by ->next). */
static struct entry *admin_scan(struct dthread *t, const struct sched_admin_req *rq,
                                bool heap_only, bool take, uint64_t *pending_rcpts)
{
    struct entry *list = NULL;
    uint32_t keep = 0;
    for (uint32_t i = 0; i < t->nheap; i++) {
        struct entry *e = t->heap[i];
        if (!admin_match(t, e, rq)) {
            t->heap[keep++] = e;
            continue;
        }
        *pending_rcpts += entry_pending(e);
        if (take) {
            e->next = list;
            list = e;
        } else {
            t->heap[keep++] = e;
        }
    }
    if (keep != t->nheap) {
        t->nheap = keep;
        heap_rebuild(t);
    }
    for (int h = 0; h < Q_BUCKETS && !heap_only; h++)
        for (struct dqueue *q = t->buckets[h]; q; q = q->hnext)
            for (int p = 0; p < SCHED_PRIOS; p++) {
                struct entry **pp = &q->ready[p];
                q->ready_tail[p] = NULL;
                while (*pp) {
                    struct entry *e = *pp;
                    bool match = admin_match(t, e, rq);
                    if (match)
                        *pending_rcpts += entry_pending(e);
                    if (match && take) {
                        *pp = e->next;
                        q->nready--;
                        e->next = list;
                        list = e;
                    } else {
                        q->ready_tail[p] = e;
                        pp = &e->next;
                    }
                }
            }
    return list;
}

/* Bounces (with a DSN and Bounce records) or deletes one taken entry. */
static void admin_finish(struct dthread *t, struct entry *e, const struct sched_admin_req *rq)
{
    bool bounce = rq->op == SCHED_BOUNCE;
    char diag[300];
    snprintf(diag, sizeof diag, "550 5.0.0 %s by the administrator%s%s",
             bounce ? "bounced" : "deleted", rq->reason ? ": " : "", rq->reason ? rq->reason : "");
    if (!bounce)
        log_info("%s: %u recipient(s) for %s deleted by the administrator%s%s", e->id,
                 entry_pending(e), e->domain, rq->reason ? ": " : "",
                 rq->reason ? rq->reason : "");
    fail_pending(t, entry_queue(t, e), e, bounce ? LOG_BOUNCE : NULL, 550, "5.0.0", diag, NULL,
                 NULL, NULL, NULL);
}

static uint64_t admin_run(struct dthread *t, const struct sched_admin_req *rq)
{
    uint64_t n = 0;
    struct entry *list = NULL;
    switch (rq->op) {
    case SCHED_SUSPEND: {
        struct suspension *su = suspension_of(t, rq->domain);
        if (!su && (su = calloc(1, sizeof *su)) != NULL) {
            snprintf(su->key, sizeof su->key, "%s", rq->domain);
            su->next = t->suspended;
            t->suspended = su;
        }
        if (su)
            su->until = rq->until;
        admin_scan(t, rq, false, false, &n);
        break;
    }
    case SCHED_RESUME:
        for (struct suspension **pp = &t->suspended; *pp; pp = &(*pp)->next)
            if (strcmp((*pp)->key, rq->domain) == 0) {
                struct suspension *su = *pp;
                *pp = su->next;
                free(su);
                break;
            }
        admin_scan(t, rq, false, false, &n);
        for (struct dqueue *q = t->buckets[hash_str(rq->domain) % Q_BUCKETS]; q; q = q->hnext)
            if (strcmp(q->key, rq->domain) == 0)
                dispatch(t, q);
        break;
    case SCHED_FLUSH: {
        double now = time_now();
        list = admin_scan(t, rq, true, true, &n);
        while (list) {
            struct entry *e = list;
            list = e->next;
            e->next_attempt = now;
            struct dqueue *q = entry_queue(t, e);
            ready_push(q, e);
            dispatch(t, q);
        }
        break;
    }
    case SCHED_BOUNCE:
    case SCHED_DELETE:
        list = admin_scan(t, rq, false, true, &n);
        while (list) {
            struct entry *e = list;
            list = e->next;
            admin_finish(t, e, rq);
        }
        break;
    }
    timer_arm(t);
    return n;
}

static void admin_answer(struct dthread *t, struct thread_call *sn)
{
    uint64_t n = t->stopping ? 0 : admin_run(t, &sn->req);
    pthread_mutex_lock(&sn->lock);
    sn->failed |= t->stopping;
    sn->affected += n;
    sn->pending--;
    pthread_cond_signal(&sn->cond);
    call_release(sn);
}

int sched_admin(struct sched *s, const struct sched_admin_req *req, double timeout_s,
                uint64_t *affected)
{
    *affected = 0;
    if (!s->started)
        return PT_ERROR;
    struct thread_call *sn = call_new();
    if (!sn)
        return PT_NOMEM;
    sn->req = *req;
    if (req->domain) {
        snprintf(sn->domain, sizeof sn->domain, "%s", req->domain);
        sn->req.domain = sn->domain;
    }
    if (req->id) {
        snprintf(sn->id, sizeof sn->id, "%s", req->id);
        sn->req.id = sn->id;
    }
    if (req->reason) {
        snprintf(sn->reason, sizeof sn->reason, "%s", req->reason);
        sn->req.reason = sn->reason;
    }
    int rc = call_threads(s, TMSG_ADMIN, sn, timeout_s);
    *affected = sn->affected;
    call_release(sn);
    return rc;
}

static void on_msg(void *owner, struct mbox_msg *msg)
{
    struct dthread *t = owner;
    if (msg->kind == TMSG_ENTRY) {
        if (t->stopping)
            entry_free(msg->ptr); /* durable already: picked up again at restart */
        else
            thread_insert(t, msg->ptr, true);
    } else if (msg->kind == TMSG_SNAPSHOT) {
        snapshot_answer(t, msg->ptr);
    } else if (msg->kind == TMSG_ADMIN) {
        admin_answer(t, msg->ptr);
    } else if (msg->kind == TMSG_STOP && !t->stopping) {
        t->stopping = true;
        uv_timer_stop(&t->timer);
        uv_close((uv_handle_t *)&t->timer, NULL);
        flush_deletes(t);
        uv_check_stop(&t->flush);
        uv_close((uv_handle_t *)&t->flush, NULL);
        for (struct dconn *dc = t->conns; dc; dc = dc->next)
            if (dc->client)
                smtp_client_abort(dc->client);
        dns_free(t->dns);
        t->dns = NULL;
        mbox_close(&t->mbox);
    }
    free(msg);
}

static void thread_main(void *arg)
{
    struct dthread *t = arg;
    /* entries recovered before the start */
    for (int h = 0; h < Q_BUCKETS; h++)
        for (struct dqueue *q = t->buckets[h]; q; q = q->hnext)
            dispatch(t, q);
    timer_arm(t);
    uv_run(&t->loop, UV_RUN_DEFAULT);
}

/* ---- API --------------------------------------------------------------- */

struct sched *sched_new(struct runtime *rt, char *err, size_t errlen)
{
    struct sched *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->rt = rt;
    pthread_mutex_init(&s->literal_lock, NULL);
    s->n = rt->cfg->delivery.threads > 0 ? rt->cfg->delivery.threads : 1;
    s->t = calloc((size_t)s->n, sizeof *s->t);
    if (!s->t) {
        free(s);
        return NULL;
    }
    const struct config *cfg = rt->cfg;
    for (int i = 0; i < s->n; i++) {
        struct dthread *t = &s->t[i];
        t->s = s;
        t->index = i;
        if (uv_loop_init(&t->loop) || mbox_init(&t->mbox, &t->loop, on_msg, t) ||
            uv_timer_init(&t->loop, &t->timer)) {
            snprintf(err, errlen, "cannot initialize delivery thread %d", i);
            return NULL;
        }
        t->timer.data = t;
        uv_check_init(&t->loop, &t->flush);
        t->flush.data = t;
        uv_check_start(&t->flush, on_check);
        uv_unref((uv_handle_t *)&t->flush);
        t->dns = dns_new(&t->loop, (const char *const *)cfg->dns_resolvers, cfg->n_dns_resolvers,
                         err, errlen);
        if (!t->dns)
            return NULL;
    }
    return s;
}

void sched_enqueue(struct sched *s, struct entry *e)
{
    const struct cfg_route *r;
    const char *key = entry_key(s, e, &r);
    struct dthread *t = &s->t[hash_str(key) % (uint64_t)s->n];
    atomic_fetch_add(&s->depth, 1);
    if (!s->started) {
        thread_insert(t, e, false);
        return;
    }
    if (mbox_send(&t->mbox, TMSG_ENTRY, e, 0, 0) != PT_OK) {
        atomic_fetch_sub(&s->depth, 1);
        entry_free(e); /* durable: delivered after a restart */
    }
}

int sched_start(struct sched *s)
{
    s->started = true;
    for (int i = 0; i < s->n; i++) {
        if (uv_thread_create(&s->t[i].tid, thread_main, &s->t[i]))
            return PT_ERROR;
        char name[16];  /* named before "petrel ready" */
        snprintf(name, sizeof name, "petrel-dlv-%d", i);
        pthread_setname_np(s->t[i].tid, name);
    }
    return PT_OK;
}

void sched_stop(struct sched *s)
{
    if (!s->started)
        return;
    for (int i = 0; i < s->n; i++)
        mbox_send(&s->t[i].mbox, TMSG_STOP, NULL, 0, 0);
    for (int i = 0; i < s->n; i++)
        uv_thread_join(&s->t[i].tid);
    s->started = false;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++) {
        struct dthread *t = &s->t[i];
        for (uint32_t k = 0; k < t->nheap; k++)
            entry_free(t->heap[k]);
        free(t->heap);
        while (t->suspended) {
            struct suspension *su = t->suspended;
            t->suspended = su->next;
            free(su);
        }
        for (int h = 0; h < Q_BUCKETS; h++) {
            struct dqueue *q = t->buckets[h];
            while (q) {
                struct dqueue *next = q->hnext;
                for (int p = 0; p < SCHED_PRIOS; p++) {
                    struct entry *e = q->ready[p];
                    while (e) {
                        struct entry *n = e->next;
                        entry_free(e);
                        e = n;
                    }
                }
                free(q->key);
                free(q);
                q = next;
            }
        }
        flush_deletes(t);
        if (t->dns)
            dns_free(t->dns);
        uv_walk(&t->loop, close_walk, NULL);
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
    }
    free(s->t);
    while (s->literals) {
        struct literal_route *next = s->literals->next;
        free(s->literals->r.relayhost);
        free(s->literals);
        s->literals = next;
    }
    pthread_mutex_destroy(&s->literal_lock);
    free(s);
}

uint64_t sched_depth(const struct sched *s)
{
    return atomic_load(&((struct sched *)s)->depth);
}
