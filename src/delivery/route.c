/* Routing; see route.h. One struct route per configure_transport key, two for the
 * configure_delivery defaults (MX, relayhost), and route_to literals made on first
 * use and kept until the table is freed (a handful per config). Every route a table
 * hands out is interned: one process-wide copy per distinct definition, never
 * freed before route_intern_free_all, so an entry queued under one config
 * generation keeps a valid route after a reload freed that generation's table.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/route.h"
#include "obs/log.h"
#include "util/result.h"

/* ---- interning ------------------------------------------------------------ */

struct iroute {
    struct iroute *next;
    struct route r;
    struct cfg_auth_client auth;
};

/* Process-wide by nature: routes outlive the generation that defined them. The
 * list holds one node per distinct definition seen (a handful per reload). */
static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;
static struct iroute *interned;

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool auth_eq(const struct cfg_auth_client *a, const struct cfg_auth_client *b)
{
    if (!a || !b)
        return a == b;
    return str_eq(a->username, b->username) && str_eq(a->password, b->password) &&
           str_eq(a->password_file, b->password_file);
}

bool route_same(const struct route *a, const struct route *b)
{
    return a == b ||
           (str_eq(a->name, b->name) && str_eq(a->label, b->label) && str_eq(a->qkey, b->qkey) &&
            a->domain_queue == b->domain_queue && a->way == b->way &&
            str_eq(a->relayhost, b->relayhost) && str_eq(a->relay_host, b->relay_host) &&
            a->port == b->port && a->no_mx == b->no_mx && str_eq(a->tls, b->tls) &&
            str_eq(a->ca_file, b->ca_file) && auth_eq(a->auth, b->auth));
}

static void iroute_free(struct iroute *n)
{
    free((char *)n->r.name);
    free((char *)n->r.label);
    free((char *)n->r.qkey);
    free((char *)n->r.relayhost);
    free((char *)n->r.relay_host);
    free((char *)n->r.tls);
    free((char *)n->r.ca_file);
    free(n->auth.username);
    free(n->auth.password);
    free(n->auth.password_file);
    free(n);
}

static bool dup_ok(const char *src, const char **dst)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

static bool dup_ok_m(const char *src, char **dst)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

/* The interned copy of r (equal in every field); NULL when out of memory. */
static const struct route *intern(const struct route *r)
{
    pthread_mutex_lock(&intern_lock);
    struct iroute *n = interned;
    while (n && !route_same(&n->r, r))
        n = n->next;
    if (!n && (n = calloc(1, sizeof *n)) != NULL) {
        n->r = *r;
        bool ok = dup_ok(r->name, &n->r.name) & dup_ok(r->label, &n->r.label) &
                  dup_ok(r->qkey, &n->r.qkey) & dup_ok(r->relayhost, &n->r.relayhost) &
                  dup_ok(r->relay_host, &n->r.relay_host) & dup_ok(r->tls, &n->r.tls) &
                  dup_ok(r->ca_file, &n->r.ca_file);
        n->r.auth = NULL;
        if (r->auth) {
            ok &= dup_ok_m(r->auth->username, &n->auth.username) &
                  dup_ok_m(r->auth->password, &n->auth.password) &
                  dup_ok_m(r->auth->password_file, &n->auth.password_file);
            n->r.auth = &n->auth;
        }
        if (!ok) {
            iroute_free(n);
            n = NULL;
        } else {
            n->next = interned;
            interned = n;
        }
    }
    pthread_mutex_unlock(&intern_lock);
    return n ? &n->r : NULL;
}

void route_intern_free_all(void)
{
    pthread_mutex_lock(&intern_lock);
    while (interned) {
        struct iroute *next = interned->next;
        iroute_free(interned);
        interned = next;
    }
    pthread_mutex_unlock(&intern_lock);
}

/* ---- the table ------------------------------------------------------------ */

struct literal_route {
    struct literal_route *next;
    char *spec;
    const struct route *r;
};

struct route_table {
    const struct config *cfg;
    const struct route *mx, *relayhost;  /* relayhost == mx when there is none */
    const struct route **keyed;          /* one per cfg->routes[i] */
    pthread_mutex_t lock;                /* literals are made on any thread */
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

/* Interns r with the queue key "@" + name when it relays (with_qkey). */
static const struct route *intern_with_qkey(struct route *r, bool with_qkey)
{
    char *qkey = NULL;
    if (with_qkey && !(qkey = qkey_of(r->name)))
        return NULL;
    r->qkey = qkey;
    const struct route *i = intern(r);
    free(qkey);
    return i;
}

struct route_table *route_table_new(const struct config *cfg)
{
    struct route_table *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->cfg = cfg;
    pthread_mutex_init(&rt->lock, NULL);
    struct route r = { 0 };
    fill(&r, cfg, NULL, ROUTE_NAME_MX, NULL);
    r.domain_queue = true;
    if (!(rt->mx = intern(&r)))
        goto fail;
    if (cfg->delivery.dflt.kind == ROUTE_RELAY) {
        r = (struct route){ 0 };
        fill(&r, cfg, &cfg->delivery.dflt, ROUTE_NAME_RELAYHOST, cfg->delivery.dflt.relayhost);
        if (!(rt->relayhost = intern_with_qkey(&r, true)))
            goto fail;
    } else {
        rt->relayhost = rt->mx;
    }
    if (cfg->n_routes > 0) {
        if (!(rt->keyed = calloc((size_t)cfg->n_routes, sizeof *rt->keyed)))
            goto fail;
        for (int i = 0; i < cfg->n_routes; i++) {
            const struct cfg_route *c = &cfg->routes[i];
            r = (struct route){ 0 };
            fill(&r, cfg, c, c->key, c->key);
            if (!(rt->keyed[i] = intern_with_qkey(&r, r.way == ROUTE_WAY_RELAY)))
                goto fail;
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
        free(rt->literals);
        rt->literals = next;
    }
    free(rt->keyed);
    pthread_mutex_destroy(&rt->lock);
    free(rt);
}

/* The index of cfg route c in the table, or -1. */
static int of_cfg(const struct route_table *rt, const struct cfg_route *c)
{
    const struct config *cfg = rt->cfg;
    if (c && c >= cfg->routes && c < cfg->routes + cfg->n_routes)
        return (int)(c - cfg->routes);
    return -1;
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
        char host[256];
        snprintf(host, sizeof host, "%s", parsed.relay_host);
        /* a literal takes TLS from configure_delivery and never its credentials */
        struct route r = { 0 };
        fill(&r, rt->cfg, &parsed, spec, spec);
        r.relayhost = spec;
        r.relay_host = host;
        r.auth = NULL;
        if (!(l->spec = strdup(spec)) || !(l->r = intern_with_qkey(&r, true))) {
            free(l->spec);
            free(l);
            l = NULL;
        } else {
            l->next = rt->literals;
            rt->literals = l;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    *nomem = l == NULL;
    return l ? l->r : NULL;
}

static const struct route *by_domain(struct route_table *rt, const char *domain)
{
    int i = of_cfg(rt, config_route_for(rt->cfg, domain));
    if (i >= 0 && rt->cfg->routes[i].kind != ROUTE_ERROR)
        return rt->keyed[i];
    return rt->relayhost;   /* the MX route when there is no relayhost */
}

/* The route a target names; NULL = none (or out of memory: *nomem). */
static const struct route *named(struct route_table *rt, const char *target, bool *nomem)
{
    *nomem = false;
    if (strcmp(target, ROUTE_NAME_MX) == 0)
        return rt->mx;
    if (strcmp(target, ROUTE_NAME_RELAYHOST) == 0)
        return rt->relayhost->qkey ? rt->relayhost : NULL;
    int i = of_cfg(rt, config_route_named(rt->cfg, target));
    if (i >= 0)
        return rt->cfg->routes[i].kind == ROUTE_ERROR ? NULL : rt->keyed[i];
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

const struct route *route_current(struct route_table *rt, const struct route *r)
{
    bool nomem = false;
    const struct route *n = named(rt, r->name, &nomem);
    if (!n)
        return r;                /* gone from the config (or no memory): as it was */
    char a[ROUTE_QKEY_MAX], b[ROUTE_QKEY_MAX];
    /* the same queue key: the entries' queue stays theirs */
    if (strcmp(route_queue_key(n, "x", a), route_queue_key(r, "x", b)) != 0)
        return r;
    return n;
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
