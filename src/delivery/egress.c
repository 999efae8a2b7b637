/* Egress source choice: smooth weighted round robin (as nginx's upstream): every
 * pick adds each weight to its source's current value, takes the largest and
 * subtracts the total from it. The state of a pool lives as long as the process,
 * keyed by the pool's name and its sources, so a reload that keeps a pool keeps
 * its rotation.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "delivery/egress.h"
#include "queue/entry.h"
#include "util/result.h"

struct wrr {
    struct wrr *next;
    char name[CFG_EGRESS_NAME_MAX + 1];
    int n;
    char (*src)[CFG_EGRESS_NAME_MAX + 1];   /* the sources, to notice a changed pool */
    long long *cur;
};

static pthread_mutex_t wrr_lock = PTHREAD_MUTEX_INITIALIZER;
static struct wrr *wrrs;

static bool same_pool(const struct wrr *w, const struct config *cfg,
                      const struct cfg_egress_pool *p)
{
    if (w->n != p->n || strcmp(w->name, p->name) != 0)
        return false;
    for (int i = 0; i < p->n; i++)
        if (strcmp(w->src[i], cfg->egress_sources[p->src[i]].name) != 0)
            return false;
    return true;
}

static struct wrr *wrr_of(const struct config *cfg, const struct cfg_egress_pool *p)
{
    struct wrr **pp = &wrrs;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->name, p->name) == 0)
            break;
    if (*pp && same_pool(*pp, cfg, p))
        return *pp;
    if (*pp) {   /* the pool changed: start its rotation afresh */
        struct wrr *old = *pp;
        *pp = old->next;
        free(old->src);
        free(old->cur);
        free(old);
    }
    struct wrr *w = calloc(1, sizeof *w);
    if (!w || !(w->src = calloc((size_t)p->n, sizeof *w->src)) ||
        !(w->cur = calloc((size_t)p->n, sizeof *w->cur))) {
        if (w)
            free(w->src);
        free(w);
        return NULL;
    }
    snprintf(w->name, sizeof w->name, "%s", p->name);
    w->n = p->n;
    for (int i = 0; i < p->n; i++)
        snprintf(w->src[i], sizeof w->src[i], "%s", cfg->egress_sources[p->src[i]].name);
    w->next = wrrs;
    wrrs = w;
    return w;
}

const char *egress_pick(const struct config *cfg, int pool)
{
    if (pool < 0 || pool >= cfg->n_egress_pools)
        return NULL;
    const struct cfg_egress_pool *p = &cfg->egress_pools[pool];
    pthread_mutex_lock(&wrr_lock);
    struct wrr *w = wrr_of(cfg, p);
    int best = 0;
    if (w) {
        long long total = 0;
        for (int i = 0; i < p->n; i++) {
            w->cur[i] += p->weight[i];
            total += p->weight[i];
            if (w->cur[i] > w->cur[best])
                best = i;
        }
        w->cur[best] -= total;
    }
    pthread_mutex_unlock(&wrr_lock);
    return cfg->egress_sources[p->src[best]].name;
}

int egress_assign(const struct config *cfg, struct entry *e, const char *pool_name)
{
    int pool = -1;
    if (pool_name && *pool_name) {
        if ((pool = config_egress_pool_index(cfg, pool_name)) < 0)
            return PT_INVALID;
    }
    const struct cfg_tenant *t = config_tenant(cfg, entry_tenant(e));
    if (pool < 0 && t)
        pool = t->pool;
    if (t && t->max_message_rate > 0)
        e->flags |= ENTRY_F_TENANT_Q;
    else
        e->flags &= (uint8_t)~ENTRY_F_TENANT_Q;
    const char *src = pool >= 0 ? egress_pick(cfg, pool) : NULL;
    if (!src && !entry_source(e))
        return PT_OK;
    return entry_set_ident(e, entry_tenant(e), src);
}
