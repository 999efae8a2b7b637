/* Connection pool; see pool.h. A connection first resolves (MX or relay host),
 * then takes an entry, has its content prepared on libuv's worker pool (spool
 * read, header edits, DKIM signature, and the route's password file for the first
 * one) and starts the SMTP client with it; after each transaction it takes the
 * next ready entry of its queue the same way, or waits IDLE_KEEP_S for one.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/runtime.h"
#include "delivery/dns.h"
#include "delivery/outcome.h"
#include "delivery/pool.h"
#include "delivery/prepare.h"
#include "delivery/route.h"
#include "delivery/tlspol.h"
#include "delivery/tlsrpt_agg.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "queue/entry.h"
#include "smtp/smtp_client.h"
#include "tls/tls.h"
#include "util/result.h"

#define IDLE_KEEP_S 2.0   /* an idle outbound connection waits this long for more mail */
#define PREP_HOLD_S 60.0  /* a connection waiting for its next entry's content: held
                             open this long at most (the preparation takes ms) */

/* What the TLS policies (tlspol) require of each host, kept from the check to the
 * client's start. */
struct conn_policy {
    enum client_tls_policy host_tls[DNS_MAX_HOSTS];
    struct dane_host *dane[DNS_MAX_HOSTS];
};

static void policy_free(struct conn_policy *cp)
{
    if (!cp)
        return;
    for (int i = 0; i < DNS_MAX_HOSTS; i++)
        free(cp->dane[i]);
    free(cp);
}

/* One outbound connection slot: resolving, preparing its next entry, then an SMTP
 * client. While a preparation runs (working) the slot is not freed: a client that
 * closes meanwhile only clears `client`, and the job's end frees the slot. */
struct pool_conn {
    struct pool_conn *prev, *next;  /* the thread's live connections */
    struct pool_conn *idle_next;
    bool idle;
    struct pool_thread *pt;
    struct pool *p;
    void *queue;
    const struct route *route;
    struct cfg_gen *gen;            /* the generation it was opened under (a reference) */
    struct cfg_gen *job_gen;        /* the preparation's generation (a reference) */
    const char *domain, *label;
    struct smtp_client *client;
    struct entry *sending;          /* the entry the client has (until its done) */
    /* the preparation in flight (at most one): */
    uv_work_t work;
    bool working;
    struct entry *job;              /* taken from the queue; content goes with it */
    struct buf content;
    struct buf content7;            /* its 7-bit form, or empty (prepare.h) */
    int job_rc;
    struct dns_result *hosts;       /* first entry only: where the client will go */
    struct conn_policy *policy;     /* first entry only: TLS each host needs (MTA-STS,
                                       DANE); NULL = the route's alone */
    char pass[512];                 /* first entry only: the route's password */
    const char *rpt_type;           /* TLS-RPT policy type of the destination ("sts",
                                       "tlsa") or NULL: sessions are not counted */
    bool rpt_counted;               /* this client's successful session is counted */
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
    runtime_gen_release(c->gen);
    free(c->hosts);
    policy_free(c->policy);
    explicit_bzero(c->pass, sizeof c->pass);
    free(c);
    pt->ops->closed(pt->owner, queue);
}

/* First line of a password_file (the file may change while we run). Worker pool. */
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

/* ---- preparation on the worker pool -------------------------------------- */

static void prepare_work(uv_work_t *w)
{
    struct pool_conn *c = w->data;
    buf_init(&c->content, 0);
    buf_init(&c->content7, 0);
    c->job_rc = prepare_content(c->pt->rt, c->job_gen, c->job, &c->content, &c->content7);
    const struct cfg_auth_client *auth = c->route->auth;
    if (c->hosts && auth && !auth->password && auth->password_file)
        read_secret(auth->password_file, c->pass, sizeof c->pass);
}

static void prepare_done(uv_work_t *w, int status);

/* Takes the next entry of c's queue and prepares it; false = nothing to send. */
static bool feed(struct pool_conn *c)
{
    struct pool_thread *pt = c->pt;
    struct entry *e = pt->ops->take(pt->owner, c->queue);
    if (!e)
        return false;
    c->job = e;
    c->job_gen = runtime_gen_ref(pt->gen);   /* this attempt's DKIM keys */
    c->working = true;
    if (c->client)                   /* no idle timeout while the content is prepared */
        smtp_client_idle(c->client, PREP_HOLD_S);
    c->work.data = c;
    int rc = uv_queue_work(pt->loop, &c->work, prepare_work, prepare_done);
    if (rc != 0) {                   /* cannot happen with a live loop; be safe */
        c->working = false;
        c->job = NULL;
        runtime_gen_release(c->job_gen);
        c->job_gen = NULL;
        pt->ops->giveback(pt->owner, c->queue, e);
        return false;
    }
    return true;
}

/* The connection has nothing (more) to send: idle it, close it, or free it. */
static void nothing_to_send(struct pool_conn *c)
{
    if (!c->client) {
        conn_free(c);
    } else if (!c->pt->stopping && !c->p->close_idle) {
        c->idle = true;  /* keep the connection warm for the next message */
        c->idle_next = c->p->idle;
        c->p->idle = c;
        smtp_client_idle(c->client, IDLE_KEEP_S);
    } else {
        smtp_client_quit(c->client);
    }
}

static void start_client(struct pool_conn *c, struct entry *e)
{
    struct pool_thread *pt = c->pt;
    const struct config *cfg = c->gen->cfg;
    const struct route *r = c->route;
    const struct cfg_auth_client *auth = r->auth;
    double ctimeout = c->p->connect_timeout > 0 ? c->p->connect_timeout
                                                : cfg->delivery.connect_timeout;
    /* DESIGN §9: an MX delivery takes its shaping rule's tls in place of the route's;
     * MTA-STS/DANE (host_tls below) and REQUIRETLS raise it in the client as ever */
    enum client_tls_policy level = strcmp(r->tls, "verify") == 0 ? CTLS_VERIFY
                                 : strcmp(r->tls, "encrypt") == 0 ? CTLS_ENCRYPT : CTLS_MAY;
    if (r->way == ROUTE_WAY_MX && c->p->tls >= CTLS_MAY && c->p->tls <= CTLS_VERIFY)
        level = (enum client_tls_policy)c->p->tls;
    if (auth && auth->password)
        snprintf(c->pass, sizeof c->pass, "%s", auth->password);
    /* DESIGN §9: the entry's egress source (every entry of the queue has it) */
    const struct cfg_egress_source *src = config_egress_source(cfg, entry_source(e));
    if (entry_source(e) && !src)
        log_warn("%s: egress source '%s' is no longer configured; sending from the "
                 "default address", e->id, entry_source(e));
    struct smtp_client_params p = {
        .hosts = c->hosts,
        .tls = level,
        .tls_ctx = runtime_gen_client_tls(c->gen, r->ca_file),
        .auth_user = auth ? auth->username : NULL,
        .auth_pass = auth ? c->pass : NULL,
        .port = r->port,
        .helo = src && src->ehlo_domain ? src->ehlo_domain
              : cfg->delivery.helo_name ? cfg->delivery.helo_name : pt->rt->hostname,
        .source = src ? &src->addr : NULL,
        .connect_timeout = ctimeout,
        .command_timeout = ctimeout * 5 > 600 ? 600 : ctimeout * 5,
        .no_chunking = !cfg->delivery.chunking,
    };
    for (int i = 0; c->policy && i < DNS_MAX_HOSTS; i++) {
        p.host_tls[i] = c->policy->host_tls[i];
        p.dane[i] = c->policy->dane[i];
    }
    /* a source reaches only next hops of its own family (smtp_client skips the others):
     * none at all is a deferral, said here */
    bool reachable = !src;
    for (int i = 0; !reachable && i < c->hosts->nhosts; i++)
        for (int k = 0; !reachable && k < c->hosts->hosts[i].naddr; k++)
            reachable = c->hosts->hosts[i].addrs[k].ss_family == src->addr.ss_family;
    char why[400] = "451 4.3.0 out of memory starting a delivery";
    if (!reachable)
        snprintf(why, sizeof why, "451 4.4.1 %s: no address of the egress source's family "
                 "(%s)", c->hosts->nhosts ? c->hosts->hosts[0].name : e->domain,
                 src->addr.ss_family == AF_INET6 ? "IPv6" : "IPv4");
    c->client = reachable ? smtp_client_start(pt->loop, &p, &client_ops, c, e, &c->content,
                                              &c->content7)
                          : NULL;
    policy_free(c->policy);
    c->policy = NULL;
    explicit_bzero(c->pass, sizeof c->pass);
    free(c->hosts);
    c->hosts = NULL;
    if (!c->client) {
        c->sending = NULL;
        buf_free(&c->content);
        buf_free(&c->content7);
        pt->ops->fail(pt->owner, c->queue, e, 451, reachable ? "4.3.0" : "4.4.1", why);
        conn_free(c);
    }
}

static void prepare_done(uv_work_t *w, int status)
{
    struct pool_conn *c = w->data;
    struct pool_thread *pt = c->pt;
    struct entry *e = c->job;
    c->job = NULL;
    c->working = false;
    runtime_gen_release(c->job_gen);
    c->job_gen = NULL;
    bool gone = pt->stopping || status != 0 || (!c->client && !c->hosts);
    if (gone || c->job_rc != PT_OK) {
        buf_free(&c->content);
        buf_free(&c->content7);
        if (gone)
            pt->ops->giveback(pt->owner, c->queue, e);  /* not attempted */
        else
            pt->ops->unprepared(pt->owner, c->queue, e, c->job_rc);
        if (gone || !feed(c))
            nothing_to_send(c);
        return;
    }
    c->sending = e;
    if (c->client)
        smtp_client_deliver(c->client, e, &c->content, &c->content7);
    else
        start_client(c, e);
}

/* ---- connections ------------------------------------------------------- */

/* TLS-RPT: the destination's policy (its lines as RFC 8460 §4.2 policy-string)
 * goes to the counters; the connection's sessions are counted under its type. */
static void rpt_policy(struct pool_conn *c, const struct tlspol_result *res)
{
    struct tlsrpt_agg *agg = c->pt->rt->tlsrpt;
    c->rpt_type = agg ? res->rpt_type : NULL;
    if (!agg)
        return;
    enum { MAXL = 16 };
    char buf[MAXL][300];
    const char *lines[MAXL], *mx[MAXL];
    int n = 0, nmx = 0;
    if (strcmp(res->rpt_type, "tlsa") == 0) {
        const struct dane_host *d = NULL;
        for (int i = 0; !d && i < res->hosts->nhosts; i++)
            d = res->dane[i];
        for (int i = 0; d && i < d->n && n < MAXL; i++) {
            const struct dane_tlsa *t = &d->tlsa[i];
            int o = snprintf(buf[n], sizeof buf[n], "%u %u %u ", t->usage, t->selector,
                             t->mtype);
            for (int k = 0; k < t->len && o + 3 < (int)sizeof buf[n]; k++)
                o += snprintf(buf[n] + o, sizeof buf[n] - (size_t)o, "%02x", t->data[k]);
            lines[n] = buf[n];
            n++;
        }
    } else if (res->sts) {
        const struct mtasts_policy *p = res->sts;
        snprintf(buf[n++], sizeof buf[0], "version: STSv1");
        snprintf(buf[n++], sizeof buf[0], "mode: %s", mtasts_mode_name(p->mode));
        for (int i = 0; i < p->nmx && n < MAXL - 1; i++) {
            snprintf(buf[n++], sizeof buf[0], "mx: %s", p->mx[i]);
            mx[nmx++] = p->mx[i];
        }
        snprintf(buf[n++], sizeof buf[0], "max_age: %u", (unsigned)p->max_age);
        for (int i = 0; i < n; i++)
            lines[i] = buf[i];
    }
    tlsrpt_agg_policy(agg, c->domain, res->rpt_type, lines, n, mx, nmx);
}

/* The MX destination's TLS policy (MTA-STS, DANE) is known: keep the hosts it allows
 * and the TLS it needs, or defer the queue's ready entries with its reply. */
static void on_policy(void *arg, const struct tlspol_result *res)
{
    struct pool_conn *c = arg;
    struct pool_thread *pt = c->pt;
    c->p->nresolving--;
    if (pt->stopping) {
        conn_free(c);
        return;
    }
    if (res->rpt_type)
        rpt_policy(c, res);
    if (res->rpt_note && pt->rt->tlsrpt && res->code == 0) {
        tlsrpt_agg_failure(pt->rt->tlsrpt, c->domain, res->rpt_type, res->rpt_note, NULL,
                           NULL, NULL, NULL);
        c->rpt_type = NULL;            /* the session itself has no policy to report */
    }
    if (res->code != 0) {
        if (res->rpt_type && pt->rt->tlsrpt)
            tlsrpt_agg_failure(pt->rt->tlsrpt, c->domain, res->rpt_type,
                               res->rpt_failure ? res->rpt_failure : "validation-failure",
                               NULL, NULL, NULL, res->text);
        log_warn("smtp-out %s: %s", c->domain, res->text);
        pt->ops->fail(pt->owner, c->queue, NULL, res->code, res->enhanced, res->text);
        conn_free(c);
        return;
    }
    *c->hosts = *res->hosts;
    bool any = false;
    for (int i = 0; i < res->hosts->nhosts; i++)
        any |= res->need[i] != TLSPOL_ANY;
    if (any && !(c->policy = calloc(1, sizeof *c->policy))) {
        pt->ops->fail(pt->owner, c->queue, NULL, 451, "4.3.0",
                      "451 4.3.0 out of memory starting a delivery");
        conn_free(c);
        return;
    }
    for (int i = 0; any && i < res->hosts->nhosts; i++) {
        switch (res->need[i]) {
        case TLSPOL_ENCRYPT: c->policy->host_tls[i] = CTLS_ENCRYPT; break;
        case TLSPOL_VERIFY: c->policy->host_tls[i] = CTLS_VERIFY; break;
        case TLSPOL_DANE:
            /* authenticated by TLSA, never in clear; a copy the client copies again */
            c->policy->host_tls[i] = CTLS_VERIFY;
            if (res->dane[i] && (c->policy->dane[i] = malloc(sizeof *c->policy->dane[i])))
                *c->policy->dane[i] = *res->dane[i];
            break;
        default: c->policy->host_tls[i] = CTLS_NONE; break;
        }
    }
    if (!feed(c))
        conn_free(c);
}

/* Starts the policy check of c's MX hosts; false = none to make (go on at once). */
static bool check_policy(struct pool_conn *c)
{
    struct pool_thread *pt = c->pt;
    if (!pt->tlspol && !pt->stopping)
        pt->tlspol = tlspol_new(pt->loop, pt->dns, pt->rt->cfg);
    if (!pt->tlspol)
        return false;
    c->p->nresolving++;               /* still opening: it takes an entry soon */
    tlspol_check(pt->tlspol, c->domain, c->hosts, on_policy, c);
    return true;
}

static void on_dns(void *arg, const struct dns_result *res)
{
    struct pool_conn *c = arg;
    struct pool_thread *pt = c->pt;
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
    if (!(c->hosts = malloc(sizeof *c->hosts))) {
        pt->ops->fail(pt->owner, c->queue, NULL, 451, "4.3.0",
                      "451 4.3.0 out of memory starting a delivery");  /* a deferral */
        conn_free(c);
        return;
    }
    *c->hosts = *res;
    if (c->route->way == ROUTE_WAY_MX && tlspol_enabled(pt->rt->cfg) && check_policy(c))
        return;
    if (!feed(c))
        conn_free(c);
}

bool pool_open(struct pool_thread *pt, struct pool *p, void *queue, const struct route *route,
               const char *domain, const char *label)
{
    struct pool_conn *c = calloc(1, sizeof *c);
    if (!c)
        return false;
    c->pt = pt;
    c->p = p;
    c->queue = queue;
    c->route = route;
    c->gen = runtime_gen_ref(pt->gen);
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
    return true;
}

/* Whether c may take more entries: opened on its queue's route as it is now and
 * under the current generation. */
static bool conn_current(const struct pool_conn *c)
{
    return c->route == c->p->route && c->gen == c->pt->gen;
}

bool pool_reuse(struct pool_thread *pt, struct pool *p)
{
    struct pool_conn *c;
    while ((c = p->idle) != NULL) {
        idle_remove(c);
        if (conn_current(c) && c->pt == pt)
            break;
        smtp_client_quit(c->client);   /* a reload changed its settings: a new one */
    }
    if (!c)
        return false;
    if (feed(c))
        return true;
    smtp_client_quit(c->client);
    return false;
}

void pool_for_each_entry(struct pool_thread *pt,
                         void (*fn)(void *arg, void *queue, const struct entry *e), void *arg)
{
    for (struct pool_conn *c = pt->conns; c; c = c->next) {
        if (c->job)
            fn(arg, c->queue, c->job);
        if (c->sending)
            fn(arg, c->queue, c->sending);
    }
}

void pool_abort_all(struct pool_thread *pt)
{
    tlspol_free(pt->tlspol);          /* before dns_free: its lookups complete then */
    pt->tlspol = NULL;
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
    const struct config *cfg = c->gen->cfg;
    struct outcome_where where = { site, peer, tls };
    c->sending = NULL;
    if (c->rpt_type && tls && !c->rpt_counted && pt->rt->tlsrpt) {
        c->rpt_counted = true;       /* one session, however many transactions */
        tlsrpt_agg_success(pt->rt->tlsrpt, c->domain, c->rpt_type);
    }
    pt->ops->done(pt->owner, c->queue, e, res, nres, &where);
    if (!usable)
        return;
    if (!pt->stopping && conn_current(c) &&
        smtp_client_deliveries(client) < (uint32_t)(c->p->max_deliveries > 0
                                                    ? c->p->max_deliveries
                                                    : cfg->delivery.max_deliveries_per_connection)) {
        if (!feed(c))
            nothing_to_send(c);
        return;
    }
    smtp_client_quit(client);
}

static void client_on_closed(void *owner, struct smtp_client *client)
{
    struct pool_conn *c = owner;
    c->client = NULL;
    if (!c->working)
        conn_free(c);               /* else prepare_done gives its entry back and frees */
}

static void client_on_tls_failure(void *owner, const char *site, const char *local_ip,
                                  const char *peer_ip, const char *why)
{
    struct pool_conn *c = owner;
    struct tlsrpt_agg *agg = c->pt->rt->tlsrpt;
    if (c->rpt_type && agg) {
        char host[300];
        snprintf(host, sizeof host, "%s", site ? site : "");
        char *colon = strrchr(host, ':');
        if (colon && host[0] != '[')
            *colon = '\0';
        tlsrpt_agg_failure(agg, c->domain, c->rpt_type,
                           tlsrpt_agg_result_type(why, strcmp(c->rpt_type, "tlsa") == 0),
                           host[0] ? host : NULL, local_ip, peer_ip, why);
    }
    log_warn("smtp-out %s: TLS policy failure: %s", site, why);
    metrics_inc(M_TLS_FAILURES, METRICS_OUTBOUND, NULL, 1);
}

static const struct smtp_client_ops client_ops = {
    .on_done = client_on_done, .on_closed = client_on_closed,
    .on_tls_failure = client_on_tls_failure,
};
