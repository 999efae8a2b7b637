/* Connection pool; see pool.h. A connection first resolves (MX or relay host),
 * then starts the SMTP client with its first entry; after each transaction it
 * takes the next ready entry of its queue, or waits IDLE_KEEP_S for one.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "delivery/dns.h"
#include "delivery/outcome.h"
#include "delivery/pool.h"
#include "delivery/route.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "queue/entry.h"
#include "smtp/smtp_client.h"
#include "tls/tls.h"

#define IDLE_KEEP_S 2.0   /* an idle outbound connection waits this long for more mail */

/* One outbound connection slot: resolving, then an SMTP client. */
struct pool_conn {
    struct pool_conn *prev, *next;  /* the thread's live connections */
    struct pool_conn *idle_next;
    bool idle;
    struct pool_thread *pt;
    struct pool *p;
    void *queue;
    const struct route *route;
    const char *domain, *label;
    struct smtp_client *client;
};

static const struct smtp_client_ops client_ops;

static void idle_remove(struct pool_conn *c)
{
    if (!c->idle)
        return;
    struct pool_conn **pp = &c->p->idle;
    while (*pp && *pp != c)
        pp = &(*pp)->idle_next;
    if (*pp)
        *pp = c->idle_next;
    c->idle = false;
    c->idle_next = NULL;
}

static void conn_free(struct pool_conn *c)
{
    struct pool_thread *pt = c->pt;
    idle_remove(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        pt->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->p->nconn--;
    metrics_add(M_CONNECTIONS, METRICS_OUTBOUND, c->label, -1);
    void *queue = c->queue;
    free(c);
    pt->ops->closed(pt->owner, queue);
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
    struct pool_conn *c = arg;
    struct pool_thread *pt = c->pt;
    const struct config *cfg = pt->rt->cfg;
    c->p->nresolving--;
    if (pt->stopping) {
        conn_free(c);
        return;
    }
    if (res->status != DNS_OK) {
        char text[300];
        switch (res->status) {
        case DNS_NULLMX:
            snprintf(text, sizeof text, "556 5.1.10 domain %s does not accept mail (null MX)",
                     c->domain);
            pt->ops->fail(pt->owner, c->queue, NULL, 556, "5.1.10", text);
            break;
        case DNS_NOTFOUND:
            snprintf(text, sizeof text, "550 5.1.2 Host or domain name not found: %s", res->error);
            pt->ops->fail(pt->owner, c->queue, NULL, 550, "5.1.2", text);
            break;
        default:
            snprintf(text, sizeof text, "451 4.4.3 DNS lookup failed: %s", res->error);
            pt->ops->fail(pt->owner, c->queue, NULL, 451, "4.4.3", text);
            break;
        }
        conn_free(c);
        return;
    }
    struct buf content;
    struct entry *e = pt->ops->take(pt->owner, c->queue, &content);
    if (!e) {
        conn_free(c);
        return;
    }
    const struct route *r = c->route;
    const struct cfg_auth_client *auth = r->auth;
    char pass[512] = "";
    if (auth && auth->password)
        snprintf(pass, sizeof pass, "%s", auth->password);
    else if (auth && auth->password_file)
        read_secret(auth->password_file, pass, sizeof pass);
    struct smtp_client_params p = {
        .hosts = res,
        .tls = strcmp(r->tls, "verify") == 0 ? CTLS_VERIFY
             : strcmp(r->tls, "encrypt") == 0 ? CTLS_ENCRYPT : CTLS_MAY,
        .tls_ctx = runtime_client_tls(pt->rt, r->ca_file),
        .auth_user = auth ? auth->username : NULL,
        .auth_pass = auth ? pass : NULL,
        .port = r->port,
        .helo = cfg->delivery.helo_name ? cfg->delivery.helo_name : pt->rt->hostname,
        .connect_timeout = cfg->delivery.connect_timeout,
        .command_timeout = cfg->delivery.connect_timeout * 5 > 600 ? 600 : cfg->delivery.connect_timeout * 5,
    };
    c->client = smtp_client_start(pt->loop, &p, &client_ops, c, e, &content);
    explicit_bzero(pass, sizeof pass);
    if (!c->client) {
        buf_free(&content);
        pt->ops->fail(pt->owner, c->queue, e, 451, "4.3.0",
                      "451 4.3.0 out of memory starting a delivery");
        conn_free(c);
    }
}

void pool_open(struct pool_thread *pt, struct pool *p, void *queue, const struct route *route,
               const char *domain, const char *label)
{
    struct pool_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;                     /* out of memory: the retry timer tries again */
    c->pt = pt;
    c->p = p;
    c->queue = queue;
    c->route = route;
    c->domain = domain;
    c->label = label;
    c->next = pt->conns;
    if (pt->conns)
        pt->conns->prev = c;
    pt->conns = c;
    p->nconn++;
    metrics_add(M_CONNECTIONS, METRICS_OUTBOUND, label, 1);
    p->nresolving++;
    if (route->way == ROUTE_WAY_RELAY && route->no_mx)
        dns_resolve_host(pt->dns, route->relay_host, on_dns, c);
    else
        dns_resolve_mx(pt->dns, route->way == ROUTE_WAY_RELAY ? route->relay_host : domain,
                       on_dns, c);
}

struct pool_conn *pool_idle_pop(struct pool *p)
{
    struct pool_conn *c = p->idle;
    if (c)
        idle_remove(c);
    return c;
}

void pool_deliver(struct pool_conn *c, struct entry *e, struct buf *content)
{
    smtp_client_deliver(c->client, e, content);
}

void pool_quit(struct pool_conn *c)
{
    smtp_client_quit(c->client);
}

void pool_abort_all(struct pool_thread *pt)
{
    for (struct pool_conn *c = pt->conns; c; c = c->next)
        if (c->client)
            smtp_client_abort(c->client);
}

static void client_on_done(void *owner, struct smtp_client *client, struct entry *e,
                           const struct client_result *res, uint32_t nres, bool usable,
                           const char *site, const char *peer, const char *tls)
{
    struct pool_conn *c = owner;
    struct pool_thread *pt = c->pt;
    const struct config *cfg = pt->rt->cfg;
    struct outcome_where where = { site, peer, tls };
    pt->ops->done(pt->owner, c->queue, e, res, nres, &where);
    if (!usable)
        return;
    if (!pt->stopping &&
        smtp_client_deliveries(client) < (uint32_t)cfg->delivery.max_deliveries_per_connection) {
        struct buf content;
        struct entry *next = pt->ops->take(pt->owner, c->queue, &content);
        if (next) {
            smtp_client_deliver(client, next, &content);
            return;
        }
        /* nothing ready now: keep the connection warm for the next message */
        c->idle = true;
        c->idle_next = c->p->idle;
        c->p->idle = c;
        smtp_client_idle(client, IDLE_KEEP_S);
        return;
    }
    smtp_client_quit(client);
}

static void client_on_closed(void *owner, struct smtp_client *client)
{
    conn_free(owner);
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
