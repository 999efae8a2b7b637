/* This node in a cluster; see node.h. Claimed entries enter the scheduler due now
 * (Redis decided they are due; their record may still carry an older retry time).
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "cluster/limits.h"
#include "cluster/node.h"
#include "core/config.h"
#include "core/runtime.h"
#include "obs/log.h"
#include "policy/limits.h"
#include "queue/entry.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "queue/spool_redis.h"
#include "util/result.h"
#include "util/timeutil.h"

#define NODE_ADMIN_TIMEOUT_S 5.0

struct spool *cluster_node_open_spool(const struct config *cfg, char *err, size_t errlen)
{
    char why[512];
    struct spool *s;
    if (strcmp(cfg->queue.backend, "redis") != 0) {
        s = spool_open(cfg->queue.spool_dir, why, sizeof why);
        if (!s)
            snprintf(err, errlen, "spool %s: %s", cfg->queue.spool_dir, why);
        return s;
    }
    struct spool_redis_opts o = {
        .url = cfg->queue.redis_url, .key_prefix = cfg->queue.key_prefix,
        .wait_replicas = cfg->queue.wait_replicas, .lease = cfg->queue.lease,
        .max_queue_depth = cfg->queue.max_queue_depth,
        .max_redis_bytes = cfg->queue.max_redis_bytes,
    };
    s = spool_redis_open(&o, why, sizeof why);
    if (!s)
        snprintf(err, errlen, "queue backend redis: %s", why);
    return s;
}

static uint64_t hook_depth(void *arg)
{
    struct runtime *rt = arg;
    return sched_depth(rt->sched);
}

static void hook_claimed(void *arg, const void *rec, size_t len)
{
    struct runtime *rt = arg;
    struct entry *e;
    if (entry_decode(rec, len, &e) != PT_OK) {
        log_error("redis queue: undecodable entry record (%zu bytes) left for inspection", len);
        return;
    }
    double now = time_now();
    if (e->next_attempt > now)
        e->next_attempt = now;
    sched_enqueue(rt->sched, e);
}

static void hook_suspension(void *arg, const char *domain, double until, const char *reason)
{
    struct runtime *rt = arg;
    struct sched_admin_req rq = {
        .op = until > 0 ? SCHED_SUSPEND : SCHED_RESUME, .domain = domain, .until = until,
        .reason = reason,
    };
    uint64_t n;
    if (sched_admin_local(rt->sched, &rq, NODE_ADMIN_TIMEOUT_S, &n) != PT_OK)
        log_warn("queue %s: cannot apply the cluster's %s here yet", domain,
                 until > 0 ? "suspension" : "resumption");
}

/* A suspension made through another node's API (local spool + configure_redis). */
static bool limits_suspension(void *arg, const char *domain, double until, const char *reason)
{
    struct runtime *rt = arg;
    struct sched_admin_req rq = {
        .op = until > 0 ? SCHED_SUSPEND : SCHED_RESUME, .domain = domain, .until = until,
        .reason = reason,
    };
    uint64_t n;
    if (sched_admin_local(rt->sched, &rq, NODE_ADMIN_TIMEOUT_S, &n) != PT_OK) {
        log_warn("queue %s: cannot apply the cluster's %s here yet", domain,
                 until > 0 ? "suspension" : "resumption");
        return false;
    }
    log_info("queue %s: %s through the cluster", domain, until > 0 ? "suspended" : "resumed");
    return true;
}

int cluster_node_limits_start(struct runtime *rt, char *err, size_t errlen)
{
    const struct config *cfg = rt->cfg;
    bool shared_queue = strcmp(cfg->queue.backend, "redis") == 0;
    const char *url = cfg->redis.url ? cfg->redis.url : shared_queue ? cfg->queue.redis_url : NULL;
    if (!url)
        return PT_OK;
    const char *prefix = cfg->redis.url && cfg->redis.key_prefix ? cfg->redis.key_prefix
                                                                   : cfg->queue.key_prefix;
    struct cluster_limits_opts o = {
        .url = url, .key_prefix = prefix, .share_suspensions = !shared_queue,
        .sending = limits_shared(), .bans = rt->ban,
    };
    rt->climits = cluster_limits_start(&o, err, errlen);
    return rt->climits ? PT_OK : PT_ERROR;
}

void cluster_node_limits_stop(struct runtime *rt)
{
    cluster_limits_stop(rt->climits);
    rt->climits = NULL;
}

void cluster_node_attach(struct runtime *rt)
{
    if (rt->climits && !spool_shared(rt->spool))
        cluster_limits_set_suspension_hook(rt->climits, limits_suspension, rt);
    if (!spool_shared(rt->spool))
        return;
    struct spool_redis_hooks h = {
        .arg = rt, .local_depth = hook_depth, .claimed = hook_claimed,
        .suspension = hook_suspension,
    };
    spool_redis_attach(rt->spool, &h);
}

void cluster_node_detach(struct runtime *rt)
{
    cluster_limits_set_suspension_hook(rt->climits, NULL, NULL);
    if (spool_shared(rt->spool))
        spool_redis_attach(rt->spool, NULL);
}
