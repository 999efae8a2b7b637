/* Routing; see route.h. route_to literals ("[host]:port") become routes made on
 * first use and kept until the table is freed (a handful per config).
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/route.h"
#include "queue/entry.h"
#include "util/result.h"

struct literal_route {
    struct literal_route *next;
    struct cfg_route r;              /* relayhost = the spec; tls/auth from defaults */
};

struct route_table {
    const struct config *cfg;
    pthread_mutex_t lock;            /* literals are made on any delivery thread */
    struct literal_route *literals;
};

struct route_table *route_table_new(const struct config *cfg)
{
    struct route_table *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->cfg = cfg;
    pthread_mutex_init(&rt->lock, NULL);
    return rt;
}

void route_table_free(struct route_table *rt)
{
    if (!rt)
        return;
    while (rt->literals) {
        struct literal_route *next = rt->literals->next;
        free(rt->literals->r.relayhost);
        free(rt->literals);
        rt->literals = next;
    }
    pthread_mutex_destroy(&rt->lock);
    free(rt);
}

/* The route of a route_to relay host spec, NULL if spec is not one. */
static const struct cfg_route *literal_route(struct route_table *rt, const char *spec)
{
    struct cfg_route parsed;
    if (config_parse_route_literal(spec, &parsed) != PT_OK)
        return NULL;
    pthread_mutex_lock(&rt->lock);
    struct literal_route *l = rt->literals;
    while (l && strcmp(l->r.relayhost, spec) != 0)
        l = l->next;
    if (!l && (l = calloc(1, sizeof *l)) != NULL) {
        l->r = parsed;
        if (!(l->r.relayhost = strdup(spec))) {
            free(l);
            l = NULL;
        } else {
            l->next = rt->literals;
            rt->literals = l;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    return l ? &l->r : NULL;
}

const struct cfg_route *route_of(struct route_table *rt, const struct entry *e)
{
    const struct config *cfg = rt->cfg;
    const struct cfg_route *r = NULL;
    if (e->route && !(r = config_route_named(cfg, e->route)))
        r = literal_route(rt, e->route);
    if (!r || r->kind == ROUTE_ERROR)
        r = config_route_for(cfg, e->domain);
    if (!r && cfg->delivery.dflt.kind == ROUTE_RELAY)
        r = &cfg->delivery.dflt;
    return r;
}

const char *route_queue_key(const struct cfg_route *r, const struct entry *e)
{
    if (r && r->kind == ROUTE_RELAY)
        return r->relayhost;
    return e->domain;
}
