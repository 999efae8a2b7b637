/* Cluster-wide limits; see limits.h. Callers on the loops touch only the key
 * table under cl->lock and put work on a list; the limits thread pipelines that
 * work to Redis as Lua scripts (EVALSHA, reloaded on NOSCRIPT), polls the shared
 * bans, limit_sending keys and suspensions, and keeps the heartbeat. Keys (under
 * the prefix): lim:rate:K (GCRA tat, µs of Redis TIME), lim:conn:K (zset token ->
 * expiry), lim:send (zset "PERIOD|KEY" -> tat), lim:ban (zset ip -> until, wall),
 * lim:nodes (zset node -> last beat, wall), susp (hash, as the redis queue).
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/limits.h"
#include "cluster/redis.h"
#include "core/authban.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "policy/limits.h"
#include "util/result.h"
#include "util/timeutil.h"

#define CL_BUCKETS      1024
#define CL_MAX_KEYS     65536      /* beyond: a key is limited locally only */
#define CL_MAX_CHARGES  4096       /* limit_sending takes not yet charged */
#define CL_MAX_BANS     1024
#define CL_MAX_SUSP     256
#define CL_TIMEOUT      1.0        /* s: a slower Redis counts as unreachable */
#define CL_CONNECT_WAIT 1.0        /* s between connection attempts */
#define CL_ASK_WAIT     0.005      /* s: look again while a request is on its way */
#define CL_FULL_WAIT    0.05       /* s: look again when the cluster's slots are full */
#define CL_TOKEN_LIFE   1.0        /* s: an unused rate allowance is dropped after it */
#define CL_BATCH_S      0.05       /* an allowance batch: this many seconds' worth */
#define CL_NODE_LIVE    5.0        /* s: a node not seen this long is gone */

enum { SC_RATE, SC_CONN, SC_HOLD, SC_SEND, SC_SEND_POLL, SC__N };

/* KEYS[1] tat; ARGV: T (µs per message), tau (burst allowance, µs), want.
 * Grants up to want messages: { granted, µs until the next one when 0 }. */
static const char *const scripts[SC__N] = {
    [SC_RATE] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T, tau, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tat < now then tat = now end\n"
    "local n = math.floor((now + tau - tat) / T) + 1\n"
    "if n > want then n = want end\n"
    "if n < 1 then return {0, math.floor(tat - tau - now) + 1} end\n"
    "tat = tat + n * T\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',\n"
    "           math.floor((tat - now) / 1000) + 1000)\n"
    "return {n, 0}\n",
    /* KEYS[1] zset; ARGV: max, token, ttl µs. A counting semaphore: 1 = held. */
    [SC_CONN] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end\n"
    "redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[2])\n"
    "redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[3]) / 500))\n"
    "return 1\n",
    /* KEYS[1] zset; ARGV: ttl µs, tokens...: renews (or re-registers) held slots */
    [SC_HOLD] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local exp = string.format('%.0f', now + tonumber(ARGV[1]))\n"
    "for i = 2, #ARGV do redis.call('ZADD', KEYS[1], exp, ARGV[i]) end\n"
    "redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[1]) / 500))\n"
    "return #ARGV - 1\n",
    /* KEYS[1] zset; ARGV: member, T µs, count: charges takes already made */
    [SC_SEND] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local tat = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')\n"
    "if tat < now then tat = now end\n"
    "tat = tat + tonumber(ARGV[2]) * tonumber(ARGV[3])\n"
    "redis.call('ZADD', KEYS[1], string.format('%.0f', tat), ARGV[1])\n"
    "return 1\n",
    /* KEYS[1] zset: { now, member, tat, ... } of the keys still ahead of now */
    [SC_SEND_POLL] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "local r = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES',\n"
    "                     'LIMIT', 0, 4096)\n"
    "table.insert(r, 1, string.format('%.0f', now))\n"
    "return r\n",
};

struct ckey {
    struct ckey *hnext, *wnext;
    bool queued;                 /* on cl->work */
    /* rate */
    double per_s;
    uint32_t tokens;             /* allowance granted, unused */
    double tokens_until;         /* mono: the allowance lapses */
    double retry_at;             /* mono: Redis said no message before */
    bool rate_want;
    /* connections */
    int max, in_use;
    bool conn_want;
    double conn_retry_at;
    uint64_t *slots;             /* tokens held in Redis */
    int nslots, capslots;
    char name[];
};

struct charge { char member[LIMITS_KEY_MAX + 32]; double t; uint32_t count; };
struct ban { char ip[64]; double until; };
struct susp { char domain[256]; double until; char reason[200]; };

struct cluster_limits {
    pthread_mutex_t lock;
    pthread_mutex_t hook_lock;       /* held while the suspension hook runs */
    pthread_cond_t polled;           /* a suspension poll is done (under lock) */
    uint64_t susp_polls;
    bool poll_now;                   /* under lock: poll at once */
    cluster_limits_suspension_fn suspension;
    void *suspension_arg;
    pthread_cond_t cond;
    pthread_t tid;
    bool stop;
    struct cluster_limits_opts o;
    char prefix[80];
    char node[128];
    struct redis_url url;
    struct ckey *buckets[CL_BUCKETS];
    size_t nkeys;
    struct ckey *work;
    struct charge *charges; size_t ncharges;
    struct ban *bans; size_t nbans;
    struct susp *susp; size_t nsusp;          /* to publish */
    atomic_int degraded;
    int live_nodes;
    uint64_t seq;
    /* limits thread only */
    struct redis_conn *rc;
    char sha[SC__N][41];
    struct susp *known; size_t nknown;        /* suspensions seen in Redis */
    double next_beat, next_poll;
};

/* ---- key table (under lock) ------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct ckey *key_get(struct cluster_limits *cl, const char *name)
{
    uint64_t b = hash_str(name) % CL_BUCKETS;
    for (struct ckey *k = cl->buckets[b]; k; k = k->hnext)
        if (strcmp(k->name, name) == 0)
            return k;
    if (cl->nkeys >= CL_MAX_KEYS)
        return NULL;
    size_t n = strlen(name);
    struct ckey *k = calloc(1, sizeof *k + n + 1);
    if (!k)
        return NULL;
    memcpy(k->name, name, n + 1);
    k->hnext = cl->buckets[b];
    cl->buckets[b] = k;
    cl->nkeys++;
    return k;
}

static void key_queue(struct cluster_limits *cl, struct ckey *k)
{
    if (k->queued)
        return;
    k->queued = true;
    k->wnext = cl->work;
    cl->work = k;
    pthread_cond_signal(&cl->cond);
}

/* ---- the loops' side -------------------------------------------------- */

int cluster_limits_degraded(const struct cluster_limits *cl)
{
    return cl ? atomic_load(&cl->degraded) : 0;
}

static uint32_t batch_of(double per_s)
{
    double burst = per_s > 1.0 ? floor(per_s) : 1.0;
    double b = ceil(per_s * CL_BATCH_S);
    if (b > burst)
        b = burst;
    return b < 1 ? 1 : (uint32_t)b;
}

uint32_t cluster_limits_rate_avail(struct cluster_limits *cl, const char *key, double per_s,
                                   double now, double *retry_at)
{
    *retry_at = now + CL_ASK_WAIT;
    if (!cl || per_s <= 0)
        return UINT32_MAX;
    pthread_mutex_lock(&cl->lock);
    struct ckey *k = key_get(cl, key);
    if (!k) {
        pthread_mutex_unlock(&cl->lock);
        return UINT32_MAX;           /* out of keys: the local bucket alone */
    }
    k->per_s = per_s;
    if (k->tokens && now > k->tokens_until)
        k->tokens = 0;
    uint32_t have = k->tokens;
    if (!k->rate_want && now >= k->retry_at && have * 2 <= batch_of(per_s)) {
        k->rate_want = true;         /* prefetch while the last ones are used */
        key_queue(cl, k);
    }
    if (!have && !k->rate_want)
        *retry_at = k->retry_at;
    pthread_mutex_unlock(&cl->lock);
    return have;
}

void cluster_limits_rate_take(struct cluster_limits *cl, const char *key)
{
    if (!cl)
        return;
    pthread_mutex_lock(&cl->lock);
    struct ckey *k = key_get(cl, key);
    if (k && k->tokens)
        k->tokens--;
    pthread_mutex_unlock(&cl->lock);
}

bool cluster_limits_conn_acquire(struct cluster_limits *cl, const char *key, int max, double now,
                                 double *retry_at)
{
    *retry_at = now + CL_ASK_WAIT;
    if (!cl || max <= 0)
        return true;
    pthread_mutex_lock(&cl->lock);
    struct ckey *k = key_get(cl, key);
    bool ok = false;
    int n = atomic_load(&cl->degraded);
    if (!k) {
        ok = true;
    } else if (n > 0) {
        int share = max / n;
        ok = k->in_use < (share < 1 ? 1 : share);
        if (!ok)
            *retry_at = now + CL_FULL_WAIT;
    } else if (k->nslots > k->in_use) {
        ok = true;                   /* a slot held and not in use (being given back) */
    } else if (k->in_use >= max) {
        *retry_at = now + CL_FULL_WAIT;
    } else if (!k->conn_want && now >= k->conn_retry_at) {
        k->max = max;
        k->conn_want = true;
        key_queue(cl, k);
    } else if (!k->conn_want) {
        *retry_at = k->conn_retry_at;
    }
    if (ok && k)
        k->in_use++;
    pthread_mutex_unlock(&cl->lock);
    return ok;
}

void cluster_limits_conn_release(struct cluster_limits *cl, const char *key)
{
    if (!cl)
        return;
    pthread_mutex_lock(&cl->lock);
    struct ckey *k = key_get(cl, key);
    if (k && k->in_use > 0) {
        k->in_use--;
        if (k->nslots > k->in_use)
            key_queue(cl, k);        /* give the slot back */
    }
    pthread_mutex_unlock(&cl->lock);
}

void cluster_limits_suspend(struct cluster_limits *cl, const char *domain, double until,
                            const char *reason)
{
    if (!cl || !cl->o.share_suspensions || !domain)
        return;
    pthread_mutex_lock(&cl->lock);
    if (cl->nsusp < CL_MAX_SUSP) {
        struct susp *s = &cl->susp[cl->nsusp++];
        snprintf(s->domain, sizeof s->domain, "%s", domain);
        snprintf(s->reason, sizeof s->reason, "%s", reason ? reason : "");
        s->until = until;
        pthread_cond_signal(&cl->cond);
    }
    pthread_mutex_unlock(&cl->lock);
}

/* limit_sending observer (policy/limits.h): a take to charge in Redis. */
static void on_send_taken(void *arg, const char *member, double t)
{
    struct cluster_limits *cl = arg;
    pthread_mutex_lock(&cl->lock);
    size_t i = 0;
    while (i < cl->ncharges && strcmp(cl->charges[i].member, member) != 0)
        i++;
    if (i == cl->ncharges && i < CL_MAX_CHARGES) {
        snprintf(cl->charges[i].member, sizeof cl->charges[i].member, "%s", member);
        cl->charges[i].count = 0;
        cl->ncharges++;
    }
    if (i < cl->ncharges) {
        cl->charges[i].t = t;
        cl->charges[i].count++;
        pthread_cond_signal(&cl->cond);
    }
    pthread_mutex_unlock(&cl->lock);
}

/* AUTH ban observer (core/authban.h): a ban started here, to share. */
static void on_banned(void *arg, const char *ip, double until)
{
    struct cluster_limits *cl = arg;
    pthread_mutex_lock(&cl->lock);
    if (cl->nbans < CL_MAX_BANS) {
        snprintf(cl->bans[cl->nbans].ip, sizeof cl->bans[0].ip, "%s", ip);
        cl->bans[cl->nbans++].until = until;
        pthread_cond_signal(&cl->cond);
    }
    pthread_mutex_unlock(&cl->lock);
}

/* ---- the limits thread ------------------------------------------------ */

static void set_degraded(struct cluster_limits *cl, const char *why)
{
    if (atomic_load(&cl->degraded) > 0)
        return;
    int n = cl->live_nodes > 0 ? cl->live_nodes : 1;
    atomic_store(&cl->degraded, n);
    if (cl->o.sending)
        limits_set_share(cl->o.sending, n);
    metrics_set(M_CLUSTER_LIMITS_DEGRADED, NULL, NULL, 1);
    log_warn("cluster limits: redis unreachable (%s); degraded: each node applies 1/%d of every "
             "shared limit locally until it is back", why, n);
}

static void drop_conn(struct cluster_limits *cl, const char *why)
{
    char text[256];
    snprintf(text, sizeof text, "%s", why);   /* why may be the connection's own */
    redis_close(cl->rc);
    cl->rc = NULL;
    set_degraded(cl, text);
}

static void key_name(const struct cluster_limits *cl, const char *kind, const char *name,
                     char *out, size_t outlen)
{
    snprintf(out, outlen, "%slim:%s%s%s", cl->prefix, kind, name[0] ? ":" : "", name);
}

static int load_scripts(struct cluster_limits *cl)
{
    for (int i = 0; i < SC__N; i++) {
        redisReply *r = redis_cmdf(cl->rc, "SCRIPT LOAD %s", scripts[i]);
        if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
            if (r)
                log_error("cluster limits: SCRIPT LOAD refused: %s",
                          r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
            freeReplyObject(r);
            return PT_ERROR;
        }
        memcpy(cl->sha[i], r->str, 40);
        cl->sha[i][40] = 0;
        freeReplyObject(r);
    }
    return PT_OK;
}

/* Appends EVALSHA of script sc with one key and argc args. */
static int eval_append(struct cluster_limits *cl, int sc, const char *key, int argc,
                       const char **args)
{
    const char *argv[64];
    if (argc > 60)
        return PT_INVALID;
    argv[0] = "EVALSHA";
    argv[1] = cl->sha[sc];
    argv[2] = "1";
    argv[3] = key;
    for (int i = 0; i < argc; i++)
        argv[4 + i] = args[i];
    return redis_append(cl->rc, 4 + argc, argv, NULL);
}

static bool is_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Renews (or re-registers) every held connection slot; with fix, first mints
 * slots for connections opened while degraded. */
static int hold_all(struct cluster_limits *cl, bool fix)
{
    struct hold { char key[600]; int n; char (*tok)[48]; } *hs = NULL;
    size_t nh = 0, cap = 0;
    pthread_mutex_lock(&cl->lock);
    for (int b = 0; b < CL_BUCKETS; b++)
        for (struct ckey *k = cl->buckets[b]; k; k = k->hnext) {
            if (fix)
                while (k->nslots < k->in_use) {
                    if (k->nslots == k->capslots) {
                        int c = k->capslots ? k->capslots * 2 : 4;
                        uint64_t *p = realloc(k->slots, (size_t)c * sizeof *p);
                        if (!p)
                            break;
                        k->slots = p;
                        k->capslots = c;
                    }
                    k->slots[k->nslots++] = ++cl->seq;
                }
            if (!k->nslots)
                continue;
            if (nh == cap) {
                size_t c = cap ? cap * 2 : 16;
                void *p = realloc(hs, c * sizeof *hs);
                if (!p)
                    continue;
                hs = p;
                cap = c;
            }
            struct hold *h = &hs[nh];
            h->n = k->nslots < 58 ? k->nslots : 58;
            h->tok = calloc((size_t)h->n, sizeof *h->tok);
            if (!h->tok)
                continue;
            key_name(cl, "conn", k->name, h->key, sizeof h->key);
            for (int i = 0; i < h->n; i++)
                snprintf(h->tok[i], sizeof h->tok[i], "%s:%llu", cl->node,
                         (unsigned long long)k->slots[i]);
            nh++;
        }
    pthread_mutex_unlock(&cl->lock);
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%.0f", CLUSTER_LIMITS_SLOT_TTL * 1e6);
    for (size_t i = 0; i < nh; i++) {
        const char *args[60];
        args[0] = ttl;
        for (int j = 0; j < hs[i].n; j++)
            args[1 + j] = hs[i].tok[j];
        eval_append(cl, SC_HOLD, hs[i].key, 1 + hs[i].n, args);
    }
    int rc = PT_OK;
    for (size_t i = 0; i < nh; i++) {
        redisReply *r = NULL;       /* every reply is read, past a NOSCRIPT too */
        if (rc != PT_ERROR && redis_read(cl->rc, &r) != PT_OK)
            rc = PT_ERROR;
        if (rc != PT_ERROR && is_noscript(r))
            rc = PT_AGAIN;
        freeReplyObject(r);
        free(hs[i].tok);
    }
    free(hs);
    return rc;
}

static void try_connect(struct cluster_limits *cl)
{
    char err[300];
    cl->rc = redis_connect(&cl->url, CL_TIMEOUT * 2, err, sizeof err);
    if (!cl->rc) {
        set_degraded(cl, err);
        return;
    }
    redis_set_timeout(cl->rc, CL_TIMEOUT);
    if (load_scripts(cl) != PT_OK || hold_all(cl, true) != PT_OK) {
        drop_conn(cl, redis_dead(cl->rc) ? redis_error(cl->rc) : "scripts refused");
        return;
    }
    cl->next_beat = cl->next_poll = 0;
    if (atomic_load(&cl->degraded) > 0) {
        atomic_store(&cl->degraded, 0);
        if (cl->o.sending)
            limits_set_share(cl->o.sending, 1);
        metrics_set(M_CLUSTER_LIMITS_DEGRADED, NULL, NULL, 0);
        log_info("cluster limits: redis reachable again; shared limits resume");
    }
}

struct req {
    struct ckey *k;
    enum { RQ_RATE, RQ_CONN, RQ_FREE, RQ_OTHER } kind;
    uint32_t want;
    uint64_t token;
    double per_s;                /* copies made under the lock */
    int max;
};

/* One round of the callers' work, pipelined. */
static int do_work(struct cluster_limits *cl)
{
    pthread_mutex_lock(&cl->lock);
    struct ckey *list = cl->work;
    cl->work = NULL;
    size_t nch = cl->ncharges, nb = cl->nbans, ns = cl->nsusp;
    struct charge *ch = nch ? malloc(nch * sizeof *ch) : NULL;
    struct ban *bans = nb ? malloc(nb * sizeof *bans) : NULL;
    struct susp *su = ns ? malloc(ns * sizeof *su) : NULL;
    if (ch)
        memcpy(ch, cl->charges, nch * sizeof *ch);
    if (bans)
        memcpy(bans, cl->bans, nb * sizeof *bans);
    if (su)
        memcpy(su, cl->susp, ns * sizeof *su);
    cl->ncharges = cl->nbans = cl->nsusp = 0;
    if (!ch) nch = 0;
    if (!bans) nb = 0;
    if (!su) ns = 0;
    size_t n = 0;
    for (struct ckey *k = list; k; k = k->wnext)
        n += 2 + (size_t)(k->nslots > k->in_use ? k->nslots - k->in_use : 0);
    struct req *rq = calloc(n + nch + nb + ns + 1, sizeof *rq);
    size_t nr = 0;
    for (struct ckey *k = list, *next; k; k = next) {
        next = k->wnext;
        k->queued = false;
        k->wnext = NULL;
        if (!rq)
            continue;
        if (k->rate_want)
            rq[nr++] = (struct req){ .k = k, .kind = RQ_RATE, .want = batch_of(k->per_s),
                                     .per_s = k->per_s };
        while (k->nslots > k->in_use)
            rq[nr++] = (struct req){ .k = k, .kind = RQ_FREE, .token = k->slots[--k->nslots] };
        if (k->conn_want)
            rq[nr++] = (struct req){ .k = k, .kind = RQ_CONN, .token = ++cl->seq,
                                     .max = k->max };
    }
    char names[3][600];
    pthread_mutex_unlock(&cl->lock);
    if (!rq) {
        free(ch); free(bans); free(su);
        return PT_NOMEM;
    }
    /* the requests read only the key names (immutable) and copies of numbers */
    for (size_t i = 0; i < nr; i++) {
        char a[3][48];
        const char *args[3] = { a[0], a[1], a[2] };
        struct ckey *k = rq[i].k;
        if (rq[i].kind == RQ_RATE) {
            double per_s = rq[i].per_s > 0 ? rq[i].per_s : 1;
            double T = 1e6 / per_s, burst = per_s > 1.0 ? floor(per_s) : 1.0;
            snprintf(a[0], sizeof a[0], "%.0f", ceil(T));
            snprintf(a[1], sizeof a[1], "%.0f", (burst - 1) * T);
            snprintf(a[2], sizeof a[2], "%u", rq[i].want);
            key_name(cl, "rate", k->name, names[0], sizeof names[0]);
            eval_append(cl, SC_RATE, names[0], 3, args);
        } else if (rq[i].kind == RQ_CONN) {
            snprintf(a[0], sizeof a[0], "%d", rq[i].max);
            snprintf(a[1], sizeof a[1], "%s:%llu", cl->node, (unsigned long long)rq[i].token);
            snprintf(a[2], sizeof a[2], "%.0f", CLUSTER_LIMITS_SLOT_TTL * 1e6);
            key_name(cl, "conn", k->name, names[0], sizeof names[0]);
            eval_append(cl, SC_CONN, names[0], 3, args);
        } else {
            char tok[200];
            snprintf(tok, sizeof tok, "%s:%llu", cl->node, (unsigned long long)rq[i].token);
            key_name(cl, "conn", k->name, names[0], sizeof names[0]);
            const char *argv[3] = { "ZREM", names[0], tok };
            redis_append(cl->rc, 3, argv, NULL);
        }
    }
    key_name(cl, "send", "", names[1], sizeof names[1]);
    key_name(cl, "ban", "", names[2], sizeof names[2]);
    for (size_t i = 0; i < nch; i++) {
        char a[2][48];
        snprintf(a[0], sizeof a[0], "%.0f", ch[i].t * 1e6);
        snprintf(a[1], sizeof a[1], "%u", ch[i].count);
        const char *args[3] = { ch[i].member, a[0], a[1] };
        eval_append(cl, SC_SEND, names[1], 3, args);
    }
    for (size_t i = 0; i < nb; i++) {
        char sc[48];
        snprintf(sc, sizeof sc, "%.3f", bans[i].until);
        const char *argv[4] = { "ZADD", names[2], sc, bans[i].ip };
        redis_append(cl->rc, 4, argv, NULL);
    }
    char sk[200];
    snprintf(sk, sizeof sk, "%ssusp", cl->prefix);
    for (size_t i = 0; i < ns; i++) {
        if (su[i].until > 0) {
            char v[260];
            snprintf(v, sizeof v, "%.3f %s", su[i].until, su[i].reason);
            const char *argv[4] = { "HSET", sk, su[i].domain, v };
            redis_append(cl->rc, 4, argv, NULL);
        } else {
            const char *argv[3] = { "HDEL", sk, su[i].domain };
            redis_append(cl->rc, 3, argv, NULL);
        }
    }
    /* replies, in order */
    int rc = PT_OK;
    bool noscript = false;
    double now = time_mono();
    for (size_t i = 0; i < nr + nch + nb + ns; i++) {
        redisReply *r = NULL;
        if (rc == PT_OK && redis_read(cl->rc, &r) != PT_OK)
            rc = PT_ERROR;
        if (is_noscript(r))
            noscript = true;
        if (i >= nr) {
            if (i < nr + nch && (rc != PT_OK || is_noscript(r)))
                on_send_taken(cl, ch[i - nr].member, ch[i - nr].t); /* approx.: charge later */
            freeReplyObject(r);
            continue;
        }
        struct ckey *k = rq[i].k;
        pthread_mutex_lock(&cl->lock);
        bool again = rc != PT_OK || is_noscript(r);
        if (rq[i].kind == RQ_RATE) {
            if (!again && r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
                long long got = r->element[0]->integer, wait = r->element[1]->integer;
                if (got > 0) {
                    k->tokens += (uint32_t)got;
                    k->tokens_until = now + CL_TOKEN_LIFE;
                } else {
                    k->retry_at = now + (double)wait / 1e6;
                }
            } else if (!again) {
                k->retry_at = now + CL_FULL_WAIT;
            }
            k->rate_want = false;
        } else if (rq[i].kind == RQ_CONN) {
            if (!again && r && r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
                if (k->nslots == k->capslots) {
                    int c = k->capslots ? k->capslots * 2 : 4;
                    uint64_t *p = realloc(k->slots, (size_t)c * sizeof *p);
                    if (p) {
                        k->slots = p;
                        k->capslots = c;
                    }
                }
                if (k->nslots < k->capslots)
                    k->slots[k->nslots++] = rq[i].token;
            } else {
                k->conn_retry_at = now + CL_FULL_WAIT;
            }
            k->conn_want = false;
        }
        pthread_mutex_unlock(&cl->lock);
        freeReplyObject(r);
    }
    free(rq); free(ch); free(bans); free(su);
    if (rc == PT_OK && noscript)
        rc = load_scripts(cl);
    return rc;
}

static void poll_sending(struct cluster_limits *cl, redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !r->element[0]->str)
        return;
    double rnow = strtod(r->element[0]->str, NULL), now = time_mono();
    for (size_t i = 1; i + 1 < r->elements; i += 2) {
        const char *m = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!m || !v)
            continue;
        limits_merge(cl->o.sending, m, now + (strtod(v, NULL) - rnow) / 1e6);
    }
}

static void poll_bans(struct cluster_limits *cl, redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->str && r->element[i + 1]->str)
            authban_ban(cl->o.bans, r->element[i]->str, strtod(r->element[i + 1]->str, NULL));
}

void cluster_limits_set_suspension_hook(struct cluster_limits *cl, cluster_limits_suspension_fn fn,
                                        void *arg)
{
    if (!cl)
        return;
    pthread_mutex_lock(&cl->hook_lock);
    cl->suspension = fn;
    cl->suspension_arg = arg;
    cl->nknown = 0;                  /* a new hook learns every suspension afresh */
    pthread_mutex_unlock(&cl->hook_lock);
    if (!fn || !cl->o.share_suspensions)
        return;
    /* the cluster's suspensions apply before this node says it is ready: wait
     * (at most 2 s, e.g. while Redis is unreachable) for one poll */
    pthread_mutex_lock(&cl->lock);
    uint64_t seen = cl->susp_polls;
    cl->poll_now = true;
    pthread_cond_signal(&cl->cond);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += 2;
    while (cl->susp_polls == seen && !cl->stop)
        if (pthread_cond_timedwait(&cl->polled, &cl->lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&cl->lock);
}

/* Under hook_lock. */
static void poll_susp_locked(struct cluster_limits *cl, redisReply *r);

static void poll_susp(struct cluster_limits *cl, redisReply *r)
{
    pthread_mutex_lock(&cl->hook_lock);
    if (cl->suspension)
        poll_susp_locked(cl, r);
    pthread_mutex_unlock(&cl->hook_lock);
}

static void poll_susp_locked(struct cluster_limits *cl, redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    double wnow = time_now();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *dom = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!dom || !v)
            continue;
        char *end;
        double until = strtod(v, &end);
        const char *reason = *end == ' ' ? end + 1 : "";
        if (until <= wnow)
            continue;
        size_t k = 0;
        while (k < cl->nknown && strcmp(cl->known[k].domain, dom) != 0)
            k++;
        if (k < cl->nknown && fabs(cl->known[k].until - until) < 0.001)
            continue;
        if (k == cl->nknown && k >= CL_MAX_SUSP)
            continue;
        if (!cl->suspension(cl->suspension_arg, dom, until, *reason ? reason : NULL))
            continue;                /* not applied: asked again at the next poll */
        if (k == cl->nknown) {
            cl->nknown++;
            snprintf(cl->known[k].domain, sizeof cl->known[k].domain, "%s", dom);
        }
        cl->known[k].until = until;
    }
    for (size_t k = 0; k < cl->nknown;) {
        bool still = false;
        for (size_t i = 0; i + 1 < r->elements && !still; i += 2)
            still = r->element[i]->str && strcmp(r->element[i]->str, cl->known[k].domain) == 0;
        if (still && cl->known[k].until > wnow) {
            k++;
            continue;
        }
        if ((still || cl->known[k].until > wnow) &&   /* lifted early */
            !cl->suspension(cl->suspension_arg, cl->known[k].domain, 0, NULL)) {
            k++;                     /* asked again at the next poll */
            continue;
        }
        cl->known[k] = cl->known[--cl->nknown];
    }
}

/* Polls what other nodes share; the heartbeat when it is due. */
static int do_periodic(struct cluster_limits *cl, double now)
{
    int n = 0;
    char k1[200], k2[200], k3[200], k4[200], wn[48], wl[48];
    double wnow = time_now();
    snprintf(wn, sizeof wn, "%.3f", wnow);
    if (now >= cl->next_poll) {
        cl->next_poll = now + CLUSTER_LIMITS_POLL;
        if (cl->o.sending) {
            key_name(cl, "send", "", k1, sizeof k1);
            eval_append(cl, SC_SEND_POLL, k1, 0, NULL);
            n |= 1;
        }
        if (cl->o.bans) {
            key_name(cl, "ban", "", k2, sizeof k2);
            char lo[50];
            snprintf(lo, sizeof lo, "(%s", wn);
            const char *argv[6] = { "ZRANGEBYSCORE", k2, lo, "+inf", "WITHSCORES" };
            redis_append(cl->rc, 5, argv, NULL);
            const char *del[4] = { "ZREMRANGEBYSCORE", k2, "-inf", wn };
            redis_append(cl->rc, 4, del, NULL);
            n |= 2;
        }
        if (cl->o.share_suspensions) {
            snprintf(k3, sizeof k3, "%ssusp", cl->prefix);
            const char *argv[2] = { "HGETALL", k3 };
            redis_append(cl->rc, 2, argv, NULL);
            n |= 4;
        }
    }
    bool beat = now >= cl->next_beat;
    if (beat) {
        cl->next_beat = now + CLUSTER_LIMITS_BEAT;
        key_name(cl, "nodes", "", k4, sizeof k4);
        snprintf(wl, sizeof wl, "%.3f", wnow - CL_NODE_LIVE);
        const char *a1[4] = { "ZADD", k4, wn, cl->node };
        const char *a2[4] = { "ZREMRANGEBYSCORE", k4, "-inf", wl };
        const char *a3[2] = { "ZCARD", k4 };
        redis_append(cl->rc, 4, a1, NULL);
        redis_append(cl->rc, 4, a2, NULL);
        redis_append(cl->rc, 2, a3, NULL);
    }
    int rc = PT_OK;
    bool noscript = false;       /* scripts are loaded after the last reply of the
                                    pipeline is read, never between its replies */
    redisReply *r = NULL;
#define READ() (rc == PT_OK && redis_read(cl->rc, &r) == PT_OK ? r : (rc = PT_ERROR, r = NULL))
    if (n & 1) {
        READ();
        if (is_noscript(r))
            noscript = true;
        else
            poll_sending(cl, r);
        freeReplyObject(r);
    }
    if (n & 2) {
        poll_bans(cl, READ());
        freeReplyObject(r);
        freeReplyObject(READ());
    }
    if (n & 4) {
        poll_susp(cl, READ());
        freeReplyObject(r);
        pthread_mutex_lock(&cl->lock);
        cl->susp_polls++;
        pthread_cond_broadcast(&cl->polled);
        pthread_mutex_unlock(&cl->lock);
    }
    if (beat) {
        freeReplyObject(READ());
        freeReplyObject(READ());
        READ();
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
            cl->live_nodes = (int)r->integer;
        freeReplyObject(r);
        if (rc == PT_OK)
            rc = hold_all(cl, false);
        if (rc == PT_AGAIN) {
            noscript = true;
            rc = PT_OK;
        }
    }
#undef READ
    if (rc == PT_OK && noscript)
        rc = load_scripts(cl) == PT_OK ? PT_OK : PT_ERROR;
    return rc;
}

static void *limits_thread(void *arg)
{
    struct cluster_limits *cl = arg;
    double next_connect = 0;
    pthread_mutex_lock(&cl->lock);
    while (!cl->stop) {
        double now = time_mono();
        if (cl->poll_now) {
            cl->poll_now = false;
            cl->next_poll = 0;
        }
        if (!cl->rc) {
            if (now >= next_connect) {
                pthread_mutex_unlock(&cl->lock);
                try_connect(cl);
                pthread_mutex_lock(&cl->lock);
                next_connect = time_mono() + CL_CONNECT_WAIT;
                continue;
            }
            /* degraded: nothing to ask; drop the work asked for meanwhile */
            for (struct ckey *k = cl->work, *next; k; k = next) {
                next = k->wnext;
                k->queued = k->rate_want = k->conn_want = false;
                k->wnext = NULL;
            }
            cl->work = NULL;
            cl->ncharges = cl->nbans = cl->nsusp = 0;
        } else if (cl->work || cl->ncharges || cl->nbans || cl->nsusp ||
                   now >= cl->next_poll || now >= cl->next_beat) {
            pthread_mutex_unlock(&cl->lock);
            int rc = do_work(cl);
            if (rc == PT_OK)
                rc = do_periodic(cl, now);
            if (rc != PT_OK && rc != PT_NOMEM)
                drop_conn(cl, redis_dead(cl->rc) ? redis_error(cl->rc) : "redis error");
            pthread_mutex_lock(&cl->lock);
            continue;
        }
        double until = cl->rc ? (cl->next_poll < cl->next_beat ? cl->next_poll : cl->next_beat)
                              : next_connect;
        double wait = until - time_mono();
        if (wait > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + wait;
            ts.tv_sec = (time_t)t;
            ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
            pthread_cond_timedwait(&cl->cond, &cl->lock, &ts);
        }
    }
    pthread_mutex_unlock(&cl->lock);
    /* give back the connection slots */
    if (cl->rc) {
        char key[600];
        int pending = 0;
        for (int b = 0; b < CL_BUCKETS; b++)
            for (struct ckey *k = cl->buckets[b]; k; k = k->hnext)
                for (int i = 0; i < k->nslots; i++) {
                    char tok[200];
                    snprintf(tok, sizeof tok, "%s:%llu", cl->node,
                             (unsigned long long)k->slots[i]);
                    key_name(cl, "conn", k->name, key, sizeof key);
                    const char *argv[3] = { "ZREM", key, tok };
                    redis_append(cl->rc, 3, argv, NULL);
                    pending++;
                }
        char nk[200];
        key_name(cl, "nodes", "", nk, sizeof nk);
        const char *argv[3] = { "ZREM", nk, cl->node };
        redis_append(cl->rc, 3, argv, NULL);
        pending++;
        for (int i = 0; i < pending; i++) {
            redisReply *r = NULL;
            if (redis_read(cl->rc, &r) != PT_OK)
                break;
            freeReplyObject(r);
        }
    }
    return NULL;
}

struct cluster_limits *cluster_limits_start(const struct cluster_limits_opts *o, char *err,
                                            size_t errlen)
{
    struct cluster_limits *cl = calloc(1, sizeof *cl);
    if (!cl || !(cl->charges = calloc(CL_MAX_CHARGES, sizeof *cl->charges)) ||
        !(cl->bans = calloc(CL_MAX_BANS, sizeof *cl->bans)) ||
        !(cl->susp = calloc(CL_MAX_SUSP, sizeof *cl->susp)) ||
        !(cl->known = calloc(CL_MAX_SUSP, sizeof *cl->known))) {
        snprintf(err, errlen, "out of memory");
        goto bad;
    }
    cl->o = *o;
    char why[200];
    if (redis_url_parse(o->url, &cl->url, why, sizeof why) != PT_OK) {
        snprintf(err, errlen, "url: %s", why);
        goto bad;
    }
    snprintf(cl->prefix, sizeof cl->prefix, "%s", o->key_prefix ? o->key_prefix : "petrel:");
    cl->o.url = NULL;
    cl->o.key_prefix = NULL;
    char host[100];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "node");
    host[sizeof host - 1] = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(cl->node, sizeof cl->node, "%s:%ld:%lx", host, (long)getpid(),
             (unsigned long)ts.tv_nsec);
    cl->live_nodes = 1;
    pthread_mutex_init(&cl->lock, NULL);
    pthread_mutex_init(&cl->hook_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cl->cond, &ca);
    pthread_cond_init(&cl->polled, &ca);
    pthread_condattr_destroy(&ca);
    metrics_set(M_CLUSTER_LIMITS_DEGRADED, NULL, NULL, 0);
    try_connect(cl);
    if (cl->rc) {
        char u[400];
        redis_url_text(&cl->url, u, sizeof u);
        log_info("cluster limits: shared through %s (prefix %s)", u, cl->prefix);
        do_periodic(cl, time_mono());
    }
    if (o->sending)
        limits_set_observer(o->sending, on_send_taken, cl);
    if (o->bans)
        authban_set_observer(o->bans, on_banned, cl);
    if (pthread_create(&cl->tid, NULL, limits_thread, cl) != 0) {
        snprintf(err, errlen, "cannot start the cluster limits thread");
        if (o->sending)
            limits_set_observer(o->sending, NULL, NULL);
        if (o->bans)
            authban_set_observer(o->bans, NULL, NULL);
        redis_close(cl->rc);
        goto bad;
    }
    return cl;
bad:
    if (cl) {
        free(cl->charges);
        free(cl->bans);
        free(cl->susp);
        free(cl->known);
    }
    free(cl);
    return NULL;
}

void cluster_limits_stop(struct cluster_limits *cl)
{
    if (!cl)
        return;
    pthread_mutex_lock(&cl->lock);
    cl->stop = true;
    pthread_cond_signal(&cl->cond);
    pthread_mutex_unlock(&cl->lock);
    pthread_join(cl->tid, NULL);
    if (cl->o.sending)
        limits_set_observer(cl->o.sending, NULL, NULL);
    if (cl->o.bans)
        authban_set_observer(cl->o.bans, NULL, NULL);
    redis_close(cl->rc);
    for (int b = 0; b < CL_BUCKETS; b++)
        for (struct ckey *k = cl->buckets[b], *next; k; k = next) {
            next = k->hnext;
            free(k->slots);
            free(k);
        }
    pthread_mutex_destroy(&cl->lock);
    pthread_mutex_destroy(&cl->hook_lock);
    pthread_cond_destroy(&cl->cond);
    pthread_cond_destroy(&cl->polled);
    free(cl->charges);
    free(cl->bans);
    free(cl->susp);
    free(cl->known);
    free(cl);
}
