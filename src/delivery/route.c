/* Routing; see route.h. One struct route per configure_transport key, two for the
 * configure_delivery defaults (MX, relayhost), and route_to literals made on first
 * use and kept until the table is freed (a handful per config).
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/route.h"
#include "obs/log.h"
#include "util/result.h"

struct literal_route {
    struct literal_route *next;
    struct route r;
    char *spec, *qkey;
    char host[256];
};

struct route_table {
    const struct config *cfg;
    struct route mx, relayhost;      /* relayhost.way MX when there is none */
    char *relayhost_qkey;
    struct route *keyed;             /* one per cfg->routes[i] */
    char **keyed_qkey;
    pthread_mutex_t lock;            /* literals are made on any thread */
    struct literal_route *literals;
};

static char *qkey_of(const char *name)
{
    size_t n = strlen(name);
    char *k = malloc(n + 2);
    if (k) {
        k[0] = '@';
        memcpy(k + 1, name, n + 1);
    }
    return k;
}

/* Fills r from a relay or discard cfg route: its own tls/ca_file/auth, else
 * configure_delivery's (auth only when the route names one: credentials never go
 * where they were not configured for). */
static void fill(struct route *r, const struct config *cfg, const struct cfg_route *c,
                 const char *name, const char *label)
{
    const struct cfg_route *d = &cfg->delivery.dflt;
    r->name = name;
    r->label = label;
    r->tls = c && c->tls ? c->tls : d->tls ? d->tls : "may";
    r->ca_file = c && c->ca_file ? c->ca_file : d->ca_file;
    r->port = cfg->delivery.smtp_port;
    if (c && c->kind == ROUTE_RELAY) {
        r->way = ROUTE_WAY_RELAY;
        r->relayhost = c->relayhost;
        r->relay_host = c->relay_host;
        r->port = c->relay_port;
        r->no_mx = c->relay_no_mx;
        r->auth = c->auth;
    } else if (c && c->kind == ROUTE_DISCARD) {
        r->way = ROUTE_WAY_DISCARD;
    } else {
        r->way = ROUTE_WAY_MX;   /* error routes never carry mail: MX if one got queued */
    }
}

struct route_table *route_table_new(const struct config *cfg)
{
    struct route_table *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->cfg = cfg;
    pthread_mutex_init(&rt->lock, NULL);
    fill(&rt->mx, cfg, NULL, ROUTE_NAME_MX, NULL);
    rt->mx.domain_queue = true;
    if (cfg->delivery.dflt.kind == ROUTE_RELAY) {
        fill(&rt->relayhost, cfg, &cfg->delivery.dflt, ROUTE_NAME_RELAYHOST,
             cfg->delivery.dflt.relayhost);
        if (!(rt->relayhost_qkey = qkey_of(ROUTE_NAME_RELAYHOST)))
            goto fail;
        rt->relayhost.qkey = rt->relayhost_qkey;
    } else {
        rt->relayhost = rt->mx;
    }
    if (cfg->n_routes > 0) {
        rt->keyed = calloc((size_t)cfg->n_routes, sizeof *rt->keyed);
        rt->keyed_qkey = calloc((size_t)cfg->n_routes, sizeof *rt->keyed_qkey);
        if (!rt->keyed || !rt->keyed_qkey)
            goto fail;
        for (int i = 0; i < cfg->n_routes; i++) {
            const struct cfg_route *c = &cfg->routes[i];
            fill(&rt->keyed[i], cfg, c, c->key, c->key);
            if (rt->keyed[i].way == ROUTE_WAY_RELAY) {
                if (!(rt->keyed_qkey[i] = qkey_of(c->key)))
                    goto fail;
                rt->keyed[i].qkey = rt->keyed_qkey[i];
            }
        }
    }
    return rt;
fail:
    route_table_free(rt);
    return NULL;
}

void route_table_free(struct route_table *rt)
{
    if (!rt)
        return;
    while (rt->literals) {
        struct literal_route *next = rt->literals->next;
        free(rt->literals->spec);
        free(rt->literals->qkey);
        free(rt->literals);
        rt->literals = next;
    }
    for (int i = 0; rt->keyed_qkey && i < rt->cfg->n_routes; i++)
        free(rt->keyed_qkey[i]);
    free(rt->keyed_qkey);
    free(rt->keyed);
    free(rt->relayhost_qkey);
    pthread_mutex_destroy(&rt->lock);
    free(rt);
}

static const struct route *of_cfg(struct route_table *rt, const struct cfg_route *c)
{
    const struct config *cfg = rt->cfg;
    if (c >= cfg->routes && c < cfg->routes + cfg->n_routes)
        return &rt->keyed[c - cfg->routes];
    return NULL;
}

/* The route of a route_to relay host spec; NULL if spec is not one (*nomem says
 * whether that was for want of memory). */
static const struct route *literal(struct route_table *rt, const char *spec, bool *nomem)
{
    struct cfg_route parsed;
    *nomem = false;
    if (config_parse_route_literal(spec, &parsed) != PT_OK)
        return NULL;
    pthread_mutex_lock(&rt->lock);
    struct literal_route *l = rt->literals;
    while (l && strcmp(l->spec, spec) != 0)
        l = l->next;
    if (!l && (l = calloc(1, sizeof *l)) != NULL) {
        l->spec = strdup(spec);
        l->qkey = l->spec ? qkey_of(l->spec) : NULL;
        if (!l->qkey) {
            free(l->spec);
            free(l);
            l = NULL;
        } else {
            snprintf(l->host, sizeof l->host, "%s", parsed.relay_host);
            /* a literal takes TLS from configure_delivery and never its credentials */
            fill(&l->r, rt->cfg, &parsed, l->spec, l->spec);
            l->r.relayhost = l->spec;
            l->r.relay_host = l->host;
            l->r.auth = NULL;
            l->r.qkey = l->qkey;
            l->next = rt->literals;
            rt->literals = l;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    *nomem = l == NULL;
    return l ? &l->r : NULL;
}

static const struct route *by_domain(struct route_table *rt, const char *domain)
{
    const struct route *r = of_cfg(rt, config_route_for(rt->cfg, domain));
    if (r && rt->cfg->routes[r - rt->keyed].kind != ROUTE_ERROR)
        return r;
    return &rt->relayhost;   /* the MX route when there is no relayhost */
}

/* The route a target names; NULL = none (or out of memory: *nomem). */
static const struct route *named(struct route_table *rt, const char *target, bool *nomem)
{
    *nomem = false;
    if (strcmp(target, ROUTE_NAME_MX) == 0)
        return &rt->mx;
    if (strcmp(target, ROUTE_NAME_RELAYHOST) == 0)
        return rt->relayhost.qkey ? &rt->relayhost : NULL;
    const struct route *r = of_cfg(rt, config_route_named(rt->cfg, target));
    if (r)
        return rt->cfg->routes[r - rt->keyed].kind == ROUTE_ERROR ? NULL : r;
    return literal(rt, target, nomem);
}

const struct route *route_resolve(struct route_table *rt, const char *domain, const char *target)
{
    bool nomem = false;
    const struct route *r = target ? named(rt, target, &nomem) : NULL;
    if (nomem)
        return NULL;
    return r ? r : by_domain(rt, domain);
}

const struct route *route_lookup(struct route_table *rt, const char *name, const char *domain,
                                 const char *id)
{
    if (!name)
        return by_domain(rt, domain);
    bool nomem = false;
    const struct route *r = named(rt, name, &nomem);
    if (nomem)
        return NULL;
    if (r)
        return r;
    r = by_domain(rt, domain);
    log_warn("%s: route '%s' of the queued entry for %s is no longer configured; it goes by "
             "route '%s' now", id ? id : "-", name, domain, r->name);
    return r;
}

const char *route_queue_key(const struct route *r, const char *domain,
                            char buf[ROUTE_QKEY_MAX])
{
    if (r->qkey)
        return r->qkey;
    if (r->domain_queue)
        return domain;
    snprintf(buf, ROUTE_QKEY_MAX, "@%s/%s", r->name, domain);
    return buf;
}

bool route_named(const struct route *r, const char *what)
{
    return strcmp(r->name, what) == 0 || (r->label && strcmp(r->label, what) == 0) ||
           (r->relayhost && strcmp(r->relayhost, what) == 0);
}
