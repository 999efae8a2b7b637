/* Redis spool backend (spool.h, spool_redis.h): the queue shared by every node of
 * a cluster. Never acknowledges a commit before Redis has (AOF always or WAIT);
 * never blocks an event loop: writes go through the commit thread, claims and
 * renewals through the cluster thread.
 * SPDX-License-Identifier: Apache-2.0 */

/*
 * Key layout (P = key_prefix; a member M is "<id>/<domain>"):
 *
 *   P c:<id>       string  message content
 *   P m:<id>       hash    domain -> entry record (entry_encode); gone with its last entry
 *   P due          zset    M -> the time from which any node may take it: next_attempt
 *                          while waiting, lease expiry while a node holds it
 *   P own          hash    M -> node holding (or last holding) its lease
 *   P l:<node>     set     the Ms a node holds (renewed together; expires with the node)
 *   P d:<domain>   zset    M -> received_at (per-destination queue: counts, oldest)
 *   P doms         set     domains with entries
 *   P susp         hash    domain -> "<until> <reason>" (admin suspensions, all nodes)
 *
 * A lease is just a due score in the future plus an owner: a node that dies stops
 * renewing, the score passes, and the entry is due again for any node (the claim
 * script overwrites the owner). At-least-once: the only duplicate is an entry
 * delivered by a node whose lease had run out meanwhile (counted: lost_leases).
 *
 * Group commit: spool_commit_durable() queues the batch; the commit thread takes all
 * queued batches, pipelines each as MULTI ... EXEC (content SET, entry scripts),
 * adds one WAIT when wait_replicas > 0, and reads the replies. Redis with
 * appendfsync always fsyncs its AOF once per event loop turn before replying, so
 * one fsync covers the whole pipelined group. A batch is acknowledged (cb PT_OK)
 * only after its EXEC reply (and WAIT's) arrived; any error fails the batch
 * (451 to the client). No-sync batches (deletions, retry state) ride in the same
 * pipelines; when Redis is unreachable they wait (bounded) for the reconnection.
 *
 * Reads (content at delivery, admin lookups) use one connection per calling
 * thread, with a short timeout.
 */

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster/redis.h"
#include "obs/log.h"
#include "queue/entry.h"
#include "queue/spool.h"
#include "queue/spool_backend.h"
#include "queue/spool_redis.h"
#include "util/buf.h"
#include "util/result.h"
#include "util/timeutil.h"

/* Tunables, with their reasons. */
#define RS_CONNECT_TIMEOUT   1.0     /* s: an unreachable Redis is a quick 451, not a hang */
#define RS_CMD_TIMEOUT       5.0     /* s: a commit group (AOF fsync under load) */
#define RS_READ_TIMEOUT      2.0     /* s: a content read at delivery */
#define RS_RECONNECT_GAP     0.5     /* s: between connection attempts while Redis is down */
#define RS_NOSYNC_MAX        100000  /* no-sync batches kept while Redis is down */
#define RS_TICK              0.1     /* s: cluster thread: claim poll */
#define RS_POLL              0.5     /* s: suspensions, depth and memory guard */
#define RS_CLAIM_MAX         200     /* entries per claim script run */
#define RS_LOCAL_CAP         2000    /* entries held per node before it stops claiming */
#define RS_WAIT_TIMEOUT_MS   5000    /* WAIT N timeout: then 451 */
#define RS_PREFIX_MAX        64

enum rs_op_kind { RS_PUT_CONTENT, RS_PUT_ENTRY, RS_DEL_ENTRY, RS_DEL_CONTENT, RS_PUT_SUSP,
                  RS_DEL_SUSP };

struct rs_op {
    enum rs_op_kind kind;
    char id[ENTRY_ID_LEN + 1];
    char *domain;
    char *data;
    size_t len;
    double received_at, next_attempt;
};

struct rs_batch {
    struct rs_batch *next;
    struct rs_op *ops;
    size_t n, cap;
    bool durable;
    spool_done_cb cb;
    void *arg;
};

struct rs_spool {
    struct redis_url url;
    char prefix[RS_PREFIX_MAX + 1];
    char node[128];
    int wait_replicas;
    double lease;
    uint64_t max_queue_depth, max_redis_bytes;
    /* commit thread */
    pthread_t commit_tid;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct rs_batch *head, *tail;
    size_t nosync_queued;
    bool stopping;
    struct redis_conn *wconn;
    double last_connect_fail;
    /* cluster thread */
    pthread_t cluster_tid;
    pthread_mutex_t hook_lock;       /* held while a hook runs */
    struct spool_redis_hooks hooks;
    bool attached;
    atomic_bool cluster_stop;
    struct redis_conn *cconn;
    char (*susp_known)[256];         /* suspensions already passed to the hook */
    double *susp_until;
    size_t n_susp;
    /* readers */
    pthread_key_t rkey;
    _Atomic double read_fail_at;     /* monotonic time of the last failed reader connect */
    /* counters */
    _Atomic uint64_t durable_commits, groups, claimed, taken_over, lost_leases, depth,
        used_memory, maxmemory;
    atomic_int reachable, guard_ok;
};

/* ---- scripts ----------------------------------------------------------- */

/* Redis's own clock for leases (all nodes agree on it). */
#define LUA_NOW "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"

/* ARGV: prefix, id, domain, record, received_at, next_attempt, node, lease, mode.
 * mode "lease" (a durable commit: ingest, the node that received it delivers it
 * first) leases it to the writer; "release" (a no-sync commit: retry state after a
 * deferral) puts it back in the due index at next_attempt for any node. */
static const char LUA_PUT_ENTRY[] =
    LUA_NOW
    "local p, id, dom, node = ARGV[1], ARGV[2], ARGV[3], ARGV[7]\n"
    "local m = id .. '/' .. dom\n"
    "local na, lease = tonumber(ARGV[6]), tonumber(ARGV[8])\n"
    "redis.call('HSET', p .. 'm:' .. id, dom, ARGV[4])\n"
    "redis.call('ZADD', p .. 'd:' .. dom, 'NX', ARGV[5], m)\n"
    "redis.call('SADD', p .. 'doms', dom)\n"
    "if ARGV[9] == 'release' then\n"
    "  redis.call('ZADD', p .. 'due', na, m)\n"
    "  if redis.call('HGET', p .. 'own', m) == node then redis.call('HDEL', p .. 'own', m) end\n"
    "  redis.call('SREM', p .. 'l:' .. node, m)\n"
    "else\n"
    "  redis.call('ZADD', p .. 'due', now + lease, m)\n"
    "  redis.call('HSET', p .. 'own', m, node)\n"
    "  redis.call('SADD', p .. 'l:' .. node, m)\n"
    "end\n"
    "return 1\n";

/* ARGV: prefix, id, domain, node. Returns the owner before (lease check). */
static const char LUA_DEL_ENTRY[] =
    "local p, id, dom, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"
    "local m = id .. '/' .. dom\n"
    "local o = redis.call('HGET', p .. 'own', m)\n"
    "redis.call('HDEL', p .. 'm:' .. id, dom)\n"
    "if redis.call('EXISTS', p .. 'm:' .. id) == 0 then redis.call('DEL', p .. 'c:' .. id) end\n"
    "redis.call('ZREM', p .. 'due', m)\n"
    "redis.call('ZREM', p .. 'd:' .. dom, m)\n"
    "redis.call('HDEL', p .. 'own', m)\n"
    "redis.call('SREM', p .. 'l:' .. node, m)\n"
    "if redis.call('EXISTS', p .. 'd:' .. dom) == 0 then redis.call('SREM', p .. 'doms', dom) end\n"
    "return o or ''\n";

/* ARGV: prefix, node, lease, max. Takes up to max due entries of unsuspended
 * domains (a suspended one's entries move to the suspension's end). Returns
 * { M, record, previous owner or '' } per entry. */
static const char LUA_CLAIM[] =
    LUA_NOW
    "local p, node, lease, max = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local cand = redis.call('ZRANGEBYSCORE', p .. 'due', '-inf', now, 'LIMIT', 0, max * 4)\n"
    "local out, n = {}, 0\n"
    "for _, m in ipairs(cand) do\n"
    "  if n >= max then break end\n"
    "  local s = string.find(m, '/', 1, true)\n"
    "  local id, dom = string.sub(m, 1, s - 1), string.sub(m, s + 1)\n"
    "  local su = redis.call('HGET', p .. 'susp', dom)\n"
    "  local untl = su and tonumber(string.match(su, '^(%S+)'))\n"
    "  if untl and untl > now then\n"
    "    redis.call('ZADD', p .. 'due', untl, m)\n"
    "  else\n"
    "    local rec = redis.call('HGET', p .. 'm:' .. id, dom)\n"
    "    if not rec then\n"
    "      redis.call('ZREM', p .. 'due', m)\n"
    "    else\n"
    "      local prev = redis.call('HGET', p .. 'own', m) or ''\n"
    "      redis.call('ZADD', p .. 'due', now + lease, m)\n"
    "      redis.call('HSET', p .. 'own', m, node)\n"
    "      redis.call('SADD', p .. 'l:' .. node, m)\n"
    "      out[#out + 1] = m; out[#out + 1] = rec; out[#out + 1] = prev\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ARGV: prefix, node, lease. Extends every lease the node still holds. */
static const char LUA_RENEW[] =
    LUA_NOW
    "local p, node, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local k = p .. 'l:' .. node\n"
    "local n = 0\n"
    "for _, m in ipairs(redis.call('SMEMBERS', k)) do\n"
    "  if redis.call('HGET', p .. 'own', m) == node then\n"
    "    redis.call('ZADD', p .. 'due', 'XX', now + lease, m); n = n + 1\n"
    "  else redis.call('SREM', k, m) end\n"
    "end\n"
    "if n > 0 then redis.call('EXPIRE', k, math.max(60, math.ceil(lease * 3))) end\n"
    "return n\n";

/* ARGV: prefix, node. Gives back every lease of a node that stops. */
static const char LUA_RELEASE_ALL[] =
    LUA_NOW
    "local p, node = ARGV[1], ARGV[2]\n"
    "local k = p .. 'l:' .. node\n"
    "for _, m in ipairs(redis.call('SMEMBERS', k)) do\n"
    "  if redis.call('HGET', p .. 'own', m) == node then\n"
    "    redis.call('HDEL', p .. 'own', m)\n"
    "    redis.call('ZADD', p .. 'due', 'XX', now, m)\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', k)\n"
    "return 1\n";

/* ARGV: prefix. Per domain: { domain, count, oldest, next, suspended_until }. */
static const char LUA_QUEUES[] =
    LUA_NOW
    "local p = ARGV[1]\n"
    "local out = {}\n"
    "for _, dom in ipairs(redis.call('SMEMBERS', p .. 'doms')) do\n"
    "  local k = p .. 'd:' .. dom\n"
    "  local n = redis.call('ZCARD', k)\n"
    "  if n == 0 then redis.call('SREM', p .. 'doms', dom) else\n"
    "    local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')\n"
    "    local nxt = nil\n"
    "    for _, m in ipairs(redis.call('ZRANGE', k, 0, -1)) do\n"
    "      local s = tonumber(redis.call('ZSCORE', p .. 'due', m))\n"
    "      if s and (not nxt or s < nxt) then nxt = s end\n"
    "    end\n"
    "    local su = redis.call('HGET', p .. 'susp', dom)\n"
    "    local untl = su and tonumber(string.match(su, '^(%S+)')) or 0\n"
    "    if untl <= now then untl = 0 end\n"
    "    out[#out + 1] = dom; out[#out + 1] = tostring(n); out[#out + 1] = first[2]\n"
    "    out[#out + 1] = tostring(nxt or 0); out[#out + 1] = tostring(untl)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Shared by the admin scripts: the Ms of an id (ARGV[4]) or of a domain (ARGV[5],
 * '' = every entry), and whether a node is delivering M now. */
#define LUA_ADMIN_HEAD                                                                   \
    LUA_NOW                                                                              \
    "local p, node, lease, id, dom = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]\n" \
    "local ms = {}\n"                                                                    \
    "if id ~= '' then\n"                                                                 \
    "  for _, d in ipairs(redis.call('HKEYS', p .. 'm:' .. id)) do ms[#ms + 1] = id .. '/' .. d end\n" \
    "elseif dom ~= '' then ms = redis.call('ZRANGE', p .. 'd:' .. dom, 0, -1)\n"         \
    "else ms = redis.call('ZRANGE', p .. 'due', 0, -1) end\n"                            \
    "local function busy(m, score)\n"                                                    \
    "  return score and score > now and redis.call('HEXISTS', p .. 'own', m) == 1\n"     \
    "end\n"                                                                              \
    "local function rec(m)\n"                                                            \
    "  local s = string.find(m, '/', 1, true)\n"                                         \
    "  return redis.call('HGET', p .. 'm:' .. string.sub(m, 1, s - 1), string.sub(m, s + 1))\n" \
    "end\n"                                                                              \
    "local out = {}\n"

/* ARGV[6]: "take" (lease to node, return records), "due" (due now, return
 * records), "count" (return records). Entries a node delivers are skipped. */
static const char LUA_ADMIN[] =
    LUA_ADMIN_HEAD
    "for _, m in ipairs(ms) do\n"
    "  local score = tonumber(redis.call('ZSCORE', p .. 'due', m))\n"
    "  local r = rec(m)\n"
    "  if r and not busy(m, score) then\n"
    "    if ARGV[6] == 'take' then\n"
    "      redis.call('ZADD', p .. 'due', now + lease, m)\n"
    "      redis.call('HSET', p .. 'own', m, node)\n"
    "      redis.call('SADD', p .. 'l:' .. node, m)\n"
    "    elseif ARGV[6] == 'due' and score and score > now then\n"
    "      redis.call('ZADD', p .. 'due', now, m)\n"
    "    end\n"
    "    out[#out + 1] = r\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ---- batches ----------------------------------------------------------- */

static void *rs_batch_new(void)
{
    return calloc(1, sizeof(struct rs_batch));
}

static void rs_batch_free(void *p)
{
    struct rs_batch *b = p;
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++) {
        free(b->ops[i].domain);
        free(b->ops[i].data);
    }
    free(b->ops);
    free(b);
}

static struct rs_op *op_add(struct rs_batch *b, enum rs_op_kind kind, const char *id)
{
    if (id && strlen(id) != ENTRY_ID_LEN)
        return NULL;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4;
        struct rs_op *p = realloc(b->ops, cap * sizeof *p);
        if (!p)
            return NULL;
        b->ops = p;
        b->cap = cap;
    }
    struct rs_op *o = &b->ops[b->n++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    if (id)
        memcpy(o->id, id, ENTRY_ID_LEN + 1);
    return o;
}

static int rs_put_content(void *p, const char *id, const void *data, size_t len)
{
    struct rs_batch *b = p;
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return PT_NOMEM;
    struct rs_op *o = op_add(b, RS_PUT_CONTENT, id);
    if (!o) {
        free(copy);
        return strlen(id) != ENTRY_ID_LEN ? PT_INVALID : PT_NOMEM;
    }
    memcpy(copy, data, len);
    o->data = copy;
    o->len = len;
    return PT_OK;
}

static int rs_put_entry(void *p, const char *id, const char *domain, const void *rec, size_t len)
{
    struct rs_batch *b = p;
    struct entry *e;
    int rc = entry_decode(rec, len, &e);
    if (rc != PT_OK)
        return rc;
    double received_at = e->received_at, next_attempt = e->next_attempt;
    entry_free(e);
    char *copy = malloc(len ? len : 1), *dom = strdup(domain);
    struct rs_op *o = copy && dom ? op_add(b, RS_PUT_ENTRY, id) : NULL;
    if (!o) {
        free(copy);
        free(dom);
        return strlen(id) != ENTRY_ID_LEN ? PT_INVALID : PT_NOMEM;
    }
    memcpy(copy, rec, len);
    o->data = copy;
    o->len = len;
    o->domain = dom;
    o->received_at = received_at;
    o->next_attempt = next_attempt;
    return PT_OK;
}

static int rs_del_entry(void *p, const char *id, const char *domain)
{
    struct rs_batch *b = p;
    char *dom = strdup(domain);
    struct rs_op *o = dom ? op_add(b, RS_DEL_ENTRY, id) : NULL;
    if (!o) {
        free(dom);
        return PT_NOMEM;
    }
    o->domain = dom;
    return PT_OK;
}

static int rs_del_content(void *p, const char *id)
{
    return op_add(p, RS_DEL_CONTENT, id) ? PT_OK : PT_NOMEM;
}

/* Suspensions are shared: the cluster thread of every node applies them. */
static int rs_put_susp(void *p, const char *dest, double until)
{
    size_t n = dest ? strlen(dest) : 0;
    if (n == 0 || n > 255 || !isfinite(until))
        return n > 255 ? PT_TOOLONG : PT_INVALID;
    char *dom = strdup(dest);
    struct rs_op *o = dom ? op_add(p, RS_PUT_SUSP, NULL) : NULL;
    if (!o) {
        free(dom);
        return PT_NOMEM;
    }
    o->domain = dom;
    o->next_attempt = until;
    return PT_OK;
}

static int rs_del_susp(void *p, const char *dest)
{
    size_t n = dest ? strlen(dest) : 0;
    if (n == 0 || n > 255)
        return n > 255 ? PT_TOOLONG : PT_INVALID;
    char *dom = strdup(dest);
    struct rs_op *o = dom ? op_add(p, RS_DEL_SUSP, NULL) : NULL;
    if (!o) {
        free(dom);
        return PT_NOMEM;
    }
    o->domain = dom;
    return PT_OK;
}

/* ---- commit thread ----------------------------------------------------- */

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static redisReply *config_get(struct redis_conn *c, const char *name)
{
    redisReply *r = redis_cmdf(c, "CONFIG GET %s", name);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        return r;
    if (r)
        freeReplyObject(r);
    return NULL;
}

/* The durability check (at start and after every reconnection). PT_OK, or
 * PT_INVALID with "redis is not durable: ..." in err, or PT_ERROR (I/O). */
static int check_durable(struct rs_spool *s, struct redis_conn *c, char *why, size_t whylen,
                         bool log_choice)
{
    redisReply *ao = config_get(c, "appendonly");
    redisReply *af = ao ? config_get(c, "appendfsync") : NULL;
    if (redis_dead(c)) {
        if (ao)
            freeReplyObject(ao);
        snprintf(why, whylen, "%s", redis_error(c));
        return PT_ERROR;
    }
    bool aof_always = ao && af && strcmp(ao->element[1]->str, "yes") == 0 &&
                      strcmp(af->element[1]->str, "always") == 0;
    char seen[120];
    snprintf(seen, sizeof seen, "appendonly=%s appendfsync=%s",
             ao ? ao->element[1]->str : "(CONFIG GET refused)",
             af ? af->element[1]->str : "(unknown)");
    if (ao)
        freeReplyObject(ao);
    if (af)
        freeReplyObject(af);
    if (aof_always) {
        if (log_choice)
            log_info("redis queue durability: AOF with appendfsync always (one fsync per "
                     "pipelined group)%s",
                     s->wait_replicas > 0 ? ", and WAIT for replicas" : "");
        return PT_OK;
    }
    if (s->wait_replicas > 0) {
        if (log_choice)
            log_info("redis queue durability: WAIT %d replica(s) after each group (%s)",
                     s->wait_replicas, seen);
        return PT_OK;
    }
    snprintf(why, whylen,
             "redis is not durable: %s; set appendonly yes and appendfsync always on the "
             "Redis server, or configure_queue { wait_replicas = N }",
             seen);
    return PT_INVALID;
}

/* The commit connection, (re)connected when needed; NULL while Redis is down. */
static struct redis_conn *wconn_get(struct rs_spool *s)
{
    if (s->wconn && !redis_dead(s->wconn))
        return s->wconn;
    redis_close(s->wconn);
    s->wconn = NULL;
    if (mono() - s->last_connect_fail < RS_RECONNECT_GAP)
        return NULL;
    char err[300];
    struct redis_conn *c = redis_connect(&s->url, RS_CONNECT_TIMEOUT, err, sizeof err);
    if (c && check_durable(s, c, err, sizeof err, false) != PT_OK) {
        redis_close(c);
        c = NULL;
    }
    if (!c) {
        if (atomic_exchange(&s->reachable, 0))
            log_error("redis queue unreachable: %s; new mail gets 451 4.3.0", err);
        s->last_connect_fail = mono();
        return NULL;
    }
    if (!atomic_exchange(&s->reachable, 1))
        log_info("redis queue reachable again");
    redis_set_timeout(c, RS_CMD_TIMEOUT);
    s->wconn = c;
    return c;
}

static int append_op(struct rs_spool *s, struct redis_conn *c, const struct rs_op *o, bool durable)
{
    char key[RS_PREFIX_MAX + 32], lease[32], ra[32], na[32];
    switch (o->kind) {
    case RS_PUT_CONTENT:
        snprintf(key, sizeof key, "%sc:%s", s->prefix, o->id);
        return redis_appendf(c, "SET %s %b", key, o->data, o->len);
    case RS_PUT_ENTRY: {
        snprintf(lease, sizeof lease, "%.3f", s->lease);
        snprintf(ra, sizeof ra, "%.3f", o->received_at);
        snprintf(na, sizeof na, "%.3f", o->next_attempt);
        const char *argv[] = { "EVAL", LUA_PUT_ENTRY, "0", s->prefix, o->id, o->domain,
                               o->data, ra, na, s->node, lease, durable ? "lease" : "release" };
        size_t lens[12];
        for (int i = 0; i < 12; i++)
            lens[i] = strlen(argv[i]);
        lens[6] = o->len;
        return redis_append(c, 12, argv, lens);
    }
    case RS_DEL_ENTRY: {
        const char *argv[] = { "EVAL", LUA_DEL_ENTRY, "0", s->prefix, o->id, o->domain, s->node };
        return redis_append(c, 7, argv, NULL);
    }
    case RS_DEL_CONTENT:
        snprintf(key, sizeof key, "%sc:%s", s->prefix, o->id);
        return redis_appendf(c, "DEL %s", key);
    case RS_PUT_SUSP:
        snprintf(key, sizeof key, "%ssusp", s->prefix);
        snprintf(na, sizeof na, "%.3f", o->next_attempt);
        return redis_appendf(c, "HSET %s %s %s", key, o->domain, na);
    case RS_DEL_SUSP:
        snprintf(key, sizeof key, "%ssusp", s->prefix);
        return redis_appendf(c, "HDEL %s %s", key, o->domain);
    }
    return PT_INVALID;
}

/* Checks one EXEC reply; counts leases found taken over at deletion. */
static bool exec_ok(struct rs_spool *s, const struct rs_batch *b, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != b->n)
        return false;
    bool ok = true;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_ERROR) {
            log_error("redis queue: write refused: %s", e->str);
            ok = false;
        } else if (b->ops[i].kind == RS_DEL_ENTRY && e->type == REDIS_REPLY_STRING &&
                   e->len > 0 && strcmp(e->str, s->node) != 0) {
            atomic_fetch_add(&s->lost_leases, 1);
            log_warn("%s: delivered here after node %s had taken it over (lease expired): "
                     "a duplicate delivery is possible",
                     b->ops[i].id, e->str);
        }
    }
    return ok;
}

/* Writes one group; fills ok[i] per batch. Returns false on a connection failure
 * (then the not-yet-confirmed batches are unknown: ok[i] false). */
static bool write_group(struct rs_spool *s, struct redis_conn *c, struct rs_batch **v, size_t n,
                        bool *ok)
{
    bool any_durable = false;
    for (size_t i = 0; i < n; i++) {
        ok[i] = false;
        redis_appendf(c, "MULTI");
        for (size_t k = 0; k < v[i]->n; k++)
            append_op(s, c, &v[i]->ops[k], v[i]->durable);
        redis_appendf(c, "EXEC");
        any_durable |= v[i]->durable;
    }
    bool wait = any_durable && s->wait_replicas > 0;
    if (wait)
        redis_appendf(c, "WAIT %d %d", s->wait_replicas, RS_WAIT_TIMEOUT_MS);
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        bool good = true;
        for (size_t k = 0; k < v[i]->n + 1; k++) {   /* +OK for MULTI, QUEUED for each op */
            if (redis_read(c, &r) != PT_OK)
                return false;
            good &= r->type != REDIS_REPLY_ERROR;
            freeReplyObject(r);
        }
        if (redis_read(c, &r) != PT_OK)
            return false;
        ok[i] = good && exec_ok(s, v[i], r);
        freeReplyObject(r);
    }
    if (wait) {
        redisReply *r = NULL;
        if (redis_read(c, &r) != PT_OK)
            return false;
        bool enough = r->type == REDIS_REPLY_INTEGER && r->integer >= s->wait_replicas;
        if (!enough) {
            log_error("redis queue: WAIT %d timed out (%lld replica(s) acknowledged): 451",
                      s->wait_replicas, r->type == REDIS_REPLY_INTEGER ? r->integer : -1LL);
            for (size_t i = 0; i < n; i++)
                if (v[i]->durable)
                    ok[i] = false;
        }
        freeReplyObject(r);
    }
    atomic_fetch_add(&s->groups, 1);
    return true;
}

static void requeue_front(struct rs_spool *s, struct rs_batch *list, struct rs_batch *last)
{
    pthread_mutex_lock(&s->lock);
    last->next = s->head;
    s->head = list;
    if (!s->tail)
        s->tail = last;
    pthread_mutex_unlock(&s->lock);
}

static void run_group(struct rs_spool *s, struct rs_batch *list)
{
    size_t n = 0;
    for (struct rs_batch *b = list; b; b = b->next)
        n++;
    struct rs_batch **v = malloc(n * sizeof *v);
    bool *ok = malloc(n * sizeof *ok);
    struct redis_conn *c = v && ok ? wconn_get(s) : NULL;
    size_t i = 0;
    for (struct rs_batch *b = list; b; b = b->next)
        if (v)
            v[i++] = b;
    bool written = c && write_group(s, c, v, n, ok);
    if (c && !written) {
        log_error("redis queue: write failed: %s", redis_error(c));
        atomic_store(&s->reachable, 0);
    }
    /* durable ones: answer now; no-sync ones that did not get through: again later */
    struct rs_batch *keep = NULL, *keep_tail = NULL;
    size_t nkeep = 0;
    for (struct rs_batch *b = list, *next; b; b = next) {
        next = b->next;
        b->next = NULL;
        size_t k = 0;
        if (v)
            while (v[k] != b)
                k++;
        bool good = written && ok && ok[k];
        if (b->durable) {
            b->cb(b->arg, good ? PT_OK : PT_ERROR);
            rs_batch_free(b);
        } else if (good || !v || (!written && s->nosync_queued + nkeep >= RS_NOSYNC_MAX)) {
            if (!good)
                log_error("redis queue: a deletion or retry update was dropped (Redis down "
                          "too long): a duplicate delivery is possible");
            rs_batch_free(b);
        } else if (!written) {
            if (keep_tail)
                keep_tail->next = b;
            else
                keep = b;
            keep_tail = b;
            nkeep++;
        } else {
            rs_batch_free(b);   /* refused by Redis: retrying would not help */
        }
    }
    free(v);
    free(ok);
    if (keep) {
        pthread_mutex_lock(&s->lock);
        s->nosync_queued += nkeep;
        pthread_mutex_unlock(&s->lock);
        requeue_front(s, keep, keep_tail);
        if (!s->stopping)
            usleep((useconds_t)(RS_RECONNECT_GAP * 1e6));
    }
}

static void *commit_main(void *arg)
{
    struct rs_spool *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopping)
            pthread_cond_wait(&s->cond, &s->lock);
        if (!s->head)
            break;
        struct rs_batch *list = s->head;
        s->head = s->tail = NULL;
        size_t nosync = 0;
        for (struct rs_batch *b = list; b; b = b->next)
            nosync += !b->durable;
        s->nosync_queued -= nosync < s->nosync_queued ? nosync : s->nosync_queued;
        bool stopping = s->stopping;
        pthread_mutex_unlock(&s->lock);
        if (stopping && !wconn_get(s)) {
            /* stopping with Redis down: fail what is left rather than wait forever */
            for (struct rs_batch *b = list, *next; b; b = next) {
                next = b->next;
                if (b->durable)
                    b->cb(b->arg, PT_ERROR);
                rs_batch_free(b);
            }
        } else {
            run_group(s, list);
        }
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int enqueue(struct rs_spool *s, struct rs_batch *b)
{
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        rs_batch_free(b);
        return PT_ERROR;
    }
    if (s->tail)
        s->tail->next = b;
    else
        s->head = b;
    s->tail = b;
    if (!b->durable)
        s->nosync_queued++;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return PT_OK;
}

static int rs_commit_durable(void *sp, void *bp, spool_done_cb cb, void *arg)
{
    struct rs_spool *s = sp;
    struct rs_batch *b = bp;
    b->durable = true;
    b->cb = cb;
    b->arg = arg;
    atomic_fetch_add(&s->durable_commits, 1);
    return enqueue(s, b);
}

static int rs_commit_nosync(void *sp, void *bp)
{
    struct rs_batch *b = bp;
    if (b->n == 0) {
        rs_batch_free(b);
        return PT_OK;
    }
    return enqueue(sp, b);
}

/* Redis has no disk-full state of its own: its limits are spool_redis_full's. */
static int rs_writable(void *sp)
{
    (void)sp;
    return 1;
}

bool spool_redis_full(struct spool *sp)
{
    struct rs_spool *s = spool_impl(sp, &spool_redis_ops);
    return s && !atomic_load(&s->guard_ok);
}

/* ---- reads (any thread) ------------------------------------------------ */

static void reader_free(void *c)
{
    redis_close(c);
}

/* This thread's read connection; NULL if Redis is unreachable. */
static struct redis_conn *reader(struct rs_spool *s)
{
    struct redis_conn *c = pthread_getspecific(s->rkey);
    if (c && !redis_dead(c))
        return c;
    redis_close(c);
    pthread_setspecific(s->rkey, NULL);
    /* Redis down: fail fast instead of one connect timeout per read (reads come
     * from delivery loops too) */
    if (mono() - atomic_load(&s->read_fail_at) < RS_RECONNECT_GAP)
        return NULL;
    char err[300];
    c = redis_connect(&s->url, RS_CONNECT_TIMEOUT, err, sizeof err);
    if (!c) {
        atomic_store(&s->read_fail_at, mono());
        return NULL;
    }
    redis_set_timeout(c, RS_READ_TIMEOUT);
    pthread_setspecific(s->rkey, c);
    return c;
}

/* One read command with one retry on a fresh connection (Redis restarted). */
static redisReply *read_cmdv(struct rs_spool *s, int argc, const char **argv, const size_t *lens)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        struct redis_conn *c = reader(s);
        if (!c)
            return NULL;
        redisReply *r = redis_cmdv(c, argc, argv, lens);
        if (r)
            return r;
    }
    return NULL;
}

static int rs_get_content(void *sp, const char *id, struct buf *out)
{
    struct rs_spool *s = sp;
    char key[RS_PREFIX_MAX + 32];
    snprintf(key, sizeof key, "%sc:%s", s->prefix, id);
    const char *argv[] = { "GET", key };
    redisReply *r = read_cmdv(s, 2, argv, NULL);
    if (!r)
        return PT_ERROR;
    int rc = r->type == REDIS_REPLY_STRING ? buf_append(out, r->str, r->len)
             : r->type == REDIS_REPLY_NIL  ? PT_NOTFOUND
                                           : PT_ERROR;
    freeReplyObject(r);
    return rc;
}

static int rs_has_entries(void *sp, const char *id)
{
    struct rs_spool *s = sp;
    char key[RS_PREFIX_MAX + 32];
    snprintf(key, sizeof key, "%sm:%s", s->prefix, id);
    const char *argv[] = { "EXISTS", key };
    redisReply *r = read_cmdv(s, 2, argv, NULL);
    int has = !r || r->type != REDIS_REPLY_INTEGER || r->integer != 0; /* unsure: keep */
    if (r)
        freeReplyObject(r);
    return has;
}

/* Recovery at start: nothing to load, the cluster thread claims due entries. */
static int rs_scan_entries(void *sp, spool_scan_cb cb, void *arg)
{
    return PT_OK;
}

static bool id_valid(const char *id)
{
    if (strlen(id) != ENTRY_ID_LEN)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static int rs_scan_id(void *sp, const char *id, spool_scan_cb cb, void *arg)
{
    struct rs_spool *s = sp;
    if (!id_valid(id))
        return PT_INVALID;
    char key[RS_PREFIX_MAX + 32];
    snprintf(key, sizeof key, "%sm:%s", s->prefix, id);
    const char *argv[] = { "HGETALL", key };
    redisReply *r = read_cmdv(s, 2, argv, NULL);
    if (!r)
        return PT_ERROR;
    int rc = r->type == REDIS_REPLY_ARRAY ? PT_OK : PT_ERROR;
    for (size_t i = 0; rc == PT_OK && i + 1 < r->elements; i += 2)
        if (cb(arg, id, r->element[i]->str, r->element[i + 1]->str, r->element[i + 1]->len))
            break;
    freeReplyObject(r);
    return rc;
}

static int rs_scan_susp(void *sp, spool_suspension_cb cb, void *arg)
{
    struct rs_spool *s = sp;
    char key[RS_PREFIX_MAX + 16];
    snprintf(key, sizeof key, "%ssusp", s->prefix);
    const char *argv[] = { "HGETALL", key };
    redisReply *r = read_cmdv(s, 2, argv, NULL);
    if (!r)
        return PT_ERROR;
    int rc = r->type == REDIS_REPLY_ARRAY ? PT_OK : PT_ERROR;
    for (size_t i = 0; rc == PT_OK && i + 1 < r->elements; i += 2) {
        double until = strtod(r->element[i + 1]->str, NULL);
        if (isfinite(until) && (rc = cb(arg, r->element[i]->str, until)) != 0)
            break;
    }
    freeReplyObject(r);
    return rc;
}

static void rs_stats(void *sp, struct spool_stats *out)
{
    struct rs_spool *s = sp;
    out->durable_commits = atomic_load(&s->durable_commits);
    out->fsyncs = atomic_load(&s->groups);
    out->bytes = atomic_load(&s->used_memory);
    out->crc32c = "n/a (redis)";
}

/* ---- cluster thread ---------------------------------------------------- */

static struct redis_conn *cconn_get(struct rs_spool *s)
{
    if (s->cconn && !redis_dead(s->cconn))
        return s->cconn;
    redis_close(s->cconn);
    char err[300];
    s->cconn = redis_connect(&s->url, RS_CONNECT_TIMEOUT, err, sizeof err);
    return s->cconn;
}

static redisReply *eval(struct redis_conn *c, const char *script, int nargs, const char **args)
{
    const char *argv[12];
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "0";
    for (int i = 0; i < nargs && i < 9; i++)
        argv[3 + i] = args[i];
    redisReply *r = redis_cmdv(c, 3 + nargs, argv, NULL);
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_error("redis queue: script failed: %s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Claims due entries while this node has room; returns how many it got. */
static size_t claim(struct rs_spool *s, struct redis_conn *c)
{
    uint64_t held = s->hooks.local_depth(s->hooks.arg);
    if (held >= RS_LOCAL_CAP)
        return 0;
    uint64_t room = RS_LOCAL_CAP - held;
    char lease[32], max[16];
    snprintf(lease, sizeof lease, "%.3f", s->lease);
    snprintf(max, sizeof max, "%u", (unsigned)(room < RS_CLAIM_MAX ? room : RS_CLAIM_MAX));
    const char *args[] = { s->prefix, s->node, lease, max };
    redisReply *r = eval(c, LUA_CLAIM, 4, args);
    if (!r)
        return 0;
    size_t got = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 2 < r->elements; i += 3) {
        const redisReply *prev = r->element[i + 2];
        if (prev->type == REDIS_REPLY_STRING && prev->len > 0 && strcmp(prev->str, s->node) != 0) {
            atomic_fetch_add(&s->taken_over, 1);
            log_info("%s: lease of node %s expired: taken over", r->element[i]->str, prev->str);
        }
        s->hooks.claimed(s->hooks.arg, r->element[i + 1]->str, r->element[i + 1]->len);
        got++;
    }
    atomic_fetch_add(&s->claimed, got);
    freeReplyObject(r);
    return got;
}

static void renew(struct rs_spool *s, struct redis_conn *c)
{
    char lease[32];
    snprintf(lease, sizeof lease, "%.3f", s->lease);
    const char *args[] = { s->prefix, s->node, lease };
    redisReply *r = eval(c, LUA_RENEW, 3, args);
    if (r)
        freeReplyObject(r);
}

static void info_field(const char *info, const char *name, _Atomic uint64_t *out)
{
    const char *p = strstr(info, name);
    if (p && p[strlen(name)] == ':')
        atomic_store(out, strtoull(p + strlen(name) + 1, NULL, 10));
}

/* Depth, memory and suspensions. */
static void poll_state(struct rs_spool *s, struct redis_conn *c, bool attached)
{
    char key[RS_PREFIX_MAX + 16];
    snprintf(key, sizeof key, "%sdue", s->prefix);
    redisReply *r = redis_cmdf(c, "ZCARD %s", key);
    if (r && r->type == REDIS_REPLY_INTEGER)
        atomic_store(&s->depth, (uint64_t)r->integer);
    if (r)
        freeReplyObject(r);
    r = redis_cmdf(c, "INFO memory");
    if (r && r->type == REDIS_REPLY_STRING) {
        info_field(r->str, "used_memory", &s->used_memory);
        info_field(r->str, "maxmemory", &s->maxmemory);
    }
    if (r)
        freeReplyObject(r);
    uint64_t used = atomic_load(&s->used_memory), maxm = atomic_load(&s->maxmemory);
    uint64_t cap = s->max_redis_bytes ? s->max_redis_bytes : maxm ? maxm / 10 * 9 : 0;
    int ok = atomic_load(&s->depth) < s->max_queue_depth && (cap == 0 || used < cap);
    if (atomic_exchange(&s->guard_ok, ok) != ok) {
        if (ok)
            log_info("redis queue: below its limits again: accepting mail");
        else
            log_warn("redis queue full (%llu entries, max_queue_depth %llu; used_memory %llu, "
                     "limit %llu): new mail gets 452",
                     (unsigned long long)atomic_load(&s->depth),
                     (unsigned long long)s->max_queue_depth, (unsigned long long)used,
                     (unsigned long long)cap);
    }
    if (!attached || !s->hooks.suspension)
        return;
    snprintf(key, sizeof key, "%ssusp", s->prefix);
    r = redis_cmdf(c, "HGETALL %s", key);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return;
    }
    double now = time_now();
    /* new or changed suspensions */
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const char *dom = r->element[i]->str;
        char *end = NULL;
        double until = strtod(r->element[i + 1]->str, &end);
        const char *reason = end && *end == ' ' && end[1] ? end + 1 : NULL;
        if (until <= now || strlen(dom) >= 256)
            continue;
        size_t k = 0;
        while (k < s->n_susp && strcmp(s->susp_known[k], dom) != 0)
            k++;
        if (k < s->n_susp && fabs(s->susp_until[k] - until) < 0.001)
            continue;
        if (k == s->n_susp) {
            void *a = realloc(s->susp_known, (k + 1) * sizeof *s->susp_known);
            if (a)
                s->susp_known = a;
            void *b = realloc(s->susp_until, (k + 1) * sizeof *s->susp_until);
            if (b)
                s->susp_until = b;
            if (!a || !b)
                continue;
            snprintf(s->susp_known[k], sizeof s->susp_known[k], "%s", dom);
            s->n_susp++;
        }
        s->susp_until[k] = until;
        s->hooks.suspension(s->hooks.arg, dom, until, reason);
    }
    /* lifted ones */
    for (size_t k = 0; k < s->n_susp;) {
        bool still = false;
        for (size_t i = 0; i + 1 < r->elements && !still; i += 2)
            still = strcmp(r->element[i]->str, s->susp_known[k]) == 0 &&
                    strtod(r->element[i + 1]->str, NULL) > now;
        if (still) {
            k++;
            continue;
        }
        s->hooks.suspension(s->hooks.arg, s->susp_known[k], 0, NULL);
        s->n_susp--;
        memmove(s->susp_known[k], s->susp_known[k + 1], (s->n_susp - k) * sizeof *s->susp_known);
        memmove(&s->susp_until[k], &s->susp_until[k + 1], (s->n_susp - k) * sizeof *s->susp_until);
    }
    freeReplyObject(r);
}

static void *cluster_main(void *arg)
{
    struct rs_spool *s = arg;
    double last_renew = 0, last_poll = 0;
    while (!atomic_load(&s->cluster_stop)) {
        struct redis_conn *c = cconn_get(s);
        if (!c) {
            atomic_store(&s->reachable, 0);
            usleep((useconds_t)(RS_RECONNECT_GAP * 1e6));
            continue;
        }
        double now = mono();
        if (now - last_renew >= s->lease / 3) {
            renew(s, c);
            last_renew = now;
        }
        pthread_mutex_lock(&s->hook_lock);
        bool attached = s->attached;
        if (now - last_poll >= RS_POLL) {
            poll_state(s, c, attached);
            last_poll = now;
        }
        size_t got = attached ? claim(s, c) : 0;
        pthread_mutex_unlock(&s->hook_lock);
        if (got < RS_CLAIM_MAX)
            usleep((useconds_t)(RS_TICK * 1e6));
    }
    return NULL;
}

void spool_redis_attach(struct spool *sp, const struct spool_redis_hooks *h)
{
    struct rs_spool *s = spool_impl(sp, &spool_redis_ops);
    if (!s)
        return;
    pthread_mutex_lock(&s->hook_lock);
    s->attached = h != NULL;
    if (h)
        s->hooks = *h;
    pthread_mutex_unlock(&s->hook_lock);
}

/* ---- admin ------------------------------------------------------------- */

/* Runs fn with a connection of its own (admin calls come from HTTP threads). */
static redisReply *admin_eval(struct rs_spool *s, const char *script, int nargs, const char **args)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        struct redis_conn *c = reader(s);
        if (!c)
            return NULL;
        redisReply *r = eval(c, script, nargs, args);
        if (r || !redis_dead(c))
            return r;
    }
    return NULL;
}

int spool_redis_queues(struct spool *sp, struct spool_redis_queue **out, size_t *n,
                       uint64_t *total)
{
    struct rs_spool *s = spool_impl(sp, &spool_redis_ops);
    *out = NULL;
    *n = 0;
    *total = 0;
    const char *args[] = { s->prefix };
    redisReply *r = admin_eval(s, LUA_QUEUES, 1, args);
    if (!r)
        return PT_ERROR;
    size_t k = r->type == REDIS_REPLY_ARRAY ? r->elements / 5 : 0;
    struct spool_redis_queue *q = calloc(k ? k : 1, sizeof *q);
    if (!q) {
        freeReplyObject(r);
        return PT_NOMEM;
    }
    for (size_t i = 0; i < k; i++) {
        redisReply **e = &r->element[i * 5];
        snprintf(q[i].domain, sizeof q[i].domain, "%s", e[0]->str ? e[0]->str : "");
        q[i].count = strtoull(e[1]->str ? e[1]->str : "0", NULL, 10);
        q[i].oldest = strtod(e[2]->str ? e[2]->str : "0", NULL);
        q[i].next_attempt = strtod(e[3]->str ? e[3]->str : "0", NULL);
        q[i].suspended_until = strtod(e[4]->str ? e[4]->str : "0", NULL);
        *total += q[i].count;
    }
    freeReplyObject(r);
    *out = q;
    *n = k;
    return PT_OK;
}

static int admin_op(struct rs_spool *s, const char *mode, const char *id, const char *domain,
                    spool_redis_rec_cb cb, void *arg)
{
    char lease[32];
    snprintf(lease, sizeof lease, "%.3f", s->lease);
    const char *args[] = { s->prefix, s->node, lease, id ? id : "", domain ? domain : "", mode };
    redisReply *r = admin_eval(s, LUA_ADMIN, 6, args);
    if (!r)
        return PT_ERROR;
    for (size_t i = 0; cb && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        cb(arg, r->element[i]->str, r->element[i]->len);
    freeReplyObject(r);
    return PT_OK;
}

int spool_redis_suspend(struct spool *sp, const char *domain, double until, const char *reason,
                        spool_redis_rec_cb cb, void *arg)
{
    struct rs_spool *s = spool_impl(sp, &spool_redis_ops);
    char key[RS_PREFIX_MAX + 16], val[400];
    snprintf(key, sizeof key, "%ssusp", s->prefix);
    snprintf(val, sizeof val, "%.3f%s%s", until, reason ? " " : "", reason ? reason : "");
    const char *argv[] = { "HSET", key, domain, val };
    redisReply *r = read_cmdv(s, 4, argv, NULL);
    if (!r)
        return PT_ERROR;
    freeReplyObject(r);
    return admin_op(s, "count", NULL, domain, cb, arg);
}

int spool_redis_resume(struct spool *sp, const char *domain, spool_redis_rec_cb cb, void *arg)
{
    struct rs_spool *s = spool_impl(sp, &spool_redis_ops);
    char key[RS_PREFIX_MAX + 16];
    snprintf(key, sizeof key, "%ssusp", s->prefix);
    const char *argv[] = { "HDEL", key, domain };
    redisReply *r = read_cmdv(s, 3, argv, NULL);
    if (!r)
        return PT_ERROR;
    freeReplyObject(r);
    return admin_op(s, "due", NULL, domain, cb, arg);
}

int spool_redis_flush(struct spool *sp, const char *domain, spool_redis_rec_cb cb, void *arg)
{
    return admin_op(spool_impl(sp, &spool_redis_ops), "due", NULL, domain, cb, arg);
}

int spool_redis_take(struct spool *sp, const char *id, const char *domain, spool_redis_rec_cb cb,
                     void *arg)
{
    return admin_op(spool_impl(sp, &spool_redis_ops), "take", id, domain, cb, arg);
}

void spool_redis_stats(struct spool *sp, struct spool_redis_stats *out)
{
    struct rs_spool *s = spool_impl(sp, &spool_redis_ops);
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    out->claimed = atomic_load(&s->claimed);
    out->taken_over = atomic_load(&s->taken_over);
    out->lost_leases = atomic_load(&s->lost_leases);
    out->depth = atomic_load(&s->depth);
    out->used_memory = atomic_load(&s->used_memory);
    out->reachable = atomic_load(&s->reachable);
}

/* ---- open / close ------------------------------------------------------ */

static void rs_destroy(struct rs_spool *s)
{
    redis_close(s->wconn);
    redis_close(s->cconn);
    free(s->susp_known);
    free(s->susp_until);
    pthread_key_delete(s->rkey);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->hook_lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

static void rs_close(void *sp)
{
    struct rs_spool *s = sp;
    atomic_store(&s->cluster_stop, true);
    pthread_join(s->cluster_tid, NULL);
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->commit_tid, NULL);
    /* give back what this node still holds: the others take it at once */
    struct redis_conn *c = wconn_get(s);
    if (c) {
        const char *args[] = { s->prefix, s->node };
        redisReply *r = eval(c, LUA_RELEASE_ALL, 2, args);
        if (r)
            freeReplyObject(r);
    }
    struct redis_conn *rc = pthread_getspecific(s->rkey);
    pthread_setspecific(s->rkey, NULL);
    redis_close(rc);
    rs_destroy(s);
}

struct spool *spool_redis_open(const struct spool_redis_opts *o, char *err, size_t errlen)
{
    char why[400];
    struct rs_spool *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (redis_url_parse(o->url, &s->url, why, sizeof why) != PT_OK) {
        snprintf(err, errlen, "redis_url: %s", why);
        free(s);
        return NULL;
    }
    snprintf(s->prefix, sizeof s->prefix, "%s", o->key_prefix ? o->key_prefix : "petrel:");
    s->wait_replicas = o->wait_replicas;
    s->lease = o->lease > 0 ? o->lease : 60;
    s->max_queue_depth = o->max_queue_depth ? o->max_queue_depth : UINT64_MAX;
    s->max_redis_bytes = o->max_redis_bytes;
    char host[200];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "node");
    host[sizeof host - 1] = 0;
    unsigned rnd = (unsigned)(time_now() * 1e6) ^ ((unsigned)getpid() << 16);
    snprintf(s->node, sizeof s->node, "%.60s:%d:%08x", host, (int)getpid(), rnd);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->hook_lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_key_create(&s->rkey, reader_free);
    atomic_store(&s->guard_ok, 1);
    struct redis_conn *c = redis_connect(&s->url, RS_CONNECT_TIMEOUT, why, sizeof why);
    if (!c) {
        snprintf(err, errlen, "cannot reach redis: %s", why);
        rs_destroy(s);
        return NULL;
    }
    if (check_durable(s, c, why, sizeof why, true) != PT_OK) {
        snprintf(err, errlen, "%s", why);
        redis_close(c);
        rs_destroy(s);
        return NULL;
    }
    redis_set_timeout(c, RS_CMD_TIMEOUT);
    s->wconn = c;
    atomic_store(&s->reachable, 1);
    char text[600];
    redis_url_text(&s->url, text, sizeof text);
    log_info("redis queue %s, key prefix \"%s\", node %s, lease %.0f s", text, s->prefix, s->node,
             s->lease);
    if (pthread_create(&s->commit_tid, NULL, commit_main, s) != 0) {
        snprintf(err, errlen, "cannot start the redis commit thread");
        rs_destroy(s);
        return NULL;
    }
    pthread_setname_np(s->commit_tid, "petrel-redis");
    if (pthread_create(&s->cluster_tid, NULL, cluster_main, s) != 0) {
        snprintf(err, errlen, "cannot start the cluster thread");
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->commit_tid, NULL);
        rs_destroy(s);
        return NULL;
    }
    pthread_setname_np(s->cluster_tid, "petrel-cluster");
    struct spool *sp = spool_wrap(&spool_redis_ops, s);
    if (!sp)
        snprintf(err, errlen, "out of memory");
    return sp;
}

const struct spool_ops spool_redis_ops = {
    .name = "redis",
    .batch_new = rs_batch_new, .batch_free = rs_batch_free,
    .batch_put_content = rs_put_content, .batch_put_entry = rs_put_entry,
    .batch_del_entry = rs_del_entry, .batch_del_content = rs_del_content,
    .commit_durable = rs_commit_durable, .commit_nosync = rs_commit_nosync,
    .writable = rs_writable, .get_content = rs_get_content, .has_entries = rs_has_entries,
    .scan_entries = rs_scan_entries, .scan_id = rs_scan_id, .stats = rs_stats,
    .batch_put_suspension = rs_put_susp, .batch_del_suspension = rs_del_susp,
    .scan_suspensions = rs_scan_susp,
    .close = rs_close,
};
