/* Delivery outcomes; see outcome.h. A 2xx delivers, a 5xx bounces (DSN), anything
 * else defers with exponential backoff until max_retry_age, then expires (DSN with
 * status 4.4.7 and the last response). DSNs follow each recipient's NOTIFY (RFC
 * 3461): failures, one delay warning after delay_warning_after, and for
 * NOTIFY=SUCCESS a "relayed" DSN when the next hop did not take DSN duties.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "delivery/outcome.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "queue/bounce.h"
#include "queue/entry.h"
#include "queue/sched.h"
#include "smtp/smtp_client.h"
#include "util/result.h"
#include "util/timeutil.h"

void outcome_log(const struct entry *e, const char *type, const char *rcpt, int code,
                 const char *response, const struct outcome_where *where)
{
    double now = time_now();
    struct log_record r = {
        .type = type, .id = e->id, .timestamp = now, .sender = e->sender, .recipient = rcpt,
        .queue = e->domain, .site = where ? where->site : NULL,
        .peer_address = where ? where->peer : NULL, .code = code, .response = response,
        .size = (int64_t)e->size, .delay = now - e->received_at, .attempts = (int)e->attempts,
        .tls = where ? where->tls : NULL, .protocol = e->protocol == PROTO_HTTP ? "http" : "smtp",
        .tenant = entry_tenant(e), .egress_source = entry_source(e),
    };
    log_event(&r);
}

/* The host part of site ("mx.example:25" -> "mx.example") for the DSN. */
static const char *site_host(const struct outcome_where *where, char *host, size_t n)
{
    if (!where || !where->site)
        return NULL;
    snprintf(host, n, "%s", where->site);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = 0;
    return host;
}

void outcome_fail_pending(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e, const char *type, int code,
                          const char *status, const char *diag, const struct outcome_where *where)
{
    uint32_t np = entry_pending(e);
    struct dsn_rcpt *rc = type ? calloc(np ? np : 1, sizeof *rc) : NULL;
    size_t nb = 0;
    char host[300];
    const char *remote = site_host(where, host, sizeof host);
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        struct entry_rcpt *r = &e->rcpts[i];
        if (r->state != RCPT_PENDING)
            continue;
        r->state = RCPT_BOUNCED;
        if (!type)
            continue;
        if (strcmp(type, LOG_BOUNCE) == 0)
            metrics_inc(M_BOUNCED, e->domain, NULL, 1);
        outcome_log(e, type, r->addr, code, diag, where);
        if (rc && bounce_wanted(e, r, DSN_FAILED))
            rc[nb++] = (struct dsn_rcpt){ .addr = r->addr, .status = status, .diagnostic = diag,
                                          .remote_mta = remote, .action = DSN_FAILED,
                                          .local = true, .orcpt = entry_rcpt_orcpt(r) };
    }
    if (type)
        bounce_send(rt, cfg, loop, e, rc, nb, strcmp(type, LOG_EXPIRATION) == 0);
    free(rc);
}

/* The enhanced status of a deferral reply ("451 4.7.1 ..." -> "4.7.1"), else 4.0.0. */
static void defer_status(const char *text, char out[16])
{
    snprintf(out, 16, "4.0.0");
    if (!text || strlen(text) < 9 || text[3] != ' ' || text[4] != '4' || text[5] != '.')
        return;
    size_t n = 4;
    while (text[n] && text[n] != ' ' && n < 4 + 15)
        n++;
    snprintf(out, 16, "%.*s", (int)(n - 4), text + 4);
}

/* RFC 3461 4.1 DELAY: once the entry has waited delay_warning_after, one "delayed"
 * DSN for its pending recipients that want it, each marked so it never gets a
 * second (the mark is persisted with the entry: OUTCOME_RETRY). */
static void delay_warning(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e,
                          const char *last_defer,
                          bool remote_defer, const struct outcome_where *where, double now)
{
    double after = cfg->queue.delay_warning_after;
    if (after <= 0 || now - e->received_at < after || e->sender[0] == 0 ||
        (e->flags & ENTRY_F_DSN))
        return;
    struct dsn_rcpt *rc = calloc(e->nrcpt ? e->nrcpt : 1, sizeof *rc);
    if (!rc)
        return;                    /* out of memory: the next deferral tries again */
    char status[16], host[300];
    defer_status(remote_defer ? last_defer : NULL, status);
    const char *remote = site_host(where, host, sizeof host);
    size_t n = 0;
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        struct entry_rcpt *r = &e->rcpts[i];
        if (r->state != RCPT_PENDING || (r->dflags & ENTRY_R_DELAY_SENT))
            continue;
        r->dflags |= ENTRY_R_DELAY_SENT;
        if (!bounce_wanted(e, r, DSN_DELAYED))
            continue;
        rc[n++] = (struct dsn_rcpt){ .addr = r->addr, .status = status,
                                     .diagnostic = last_defer, .remote_mta = remote,
                                     .action = DSN_DELAYED, .local = !remote_defer,
                                     .orcpt = entry_rcpt_orcpt(r) };
    }
    if (n) {
        log_info("%s: delayed for %.0f s; delay DSN for %zu recipient(s) to <%s>", e->id,
                 now - e->received_at, n, e->sender);
        bounce_send(rt, cfg, loop, e, rc, n, false);
    }
    free(rc);
}

/* After the recipients' results: finished, expired, or the next retry time. */
static enum outcome_next settle(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e,
                                const char *last_defer, bool remote_defer,
                                const struct outcome_where *where)
{
    if (entry_pending(e) == 0)
        return OUTCOME_DONE;
    if (last_defer)
        entry_set_last_response(e, last_defer);
    double now = time_now();
    double deadline = e->received_at + cfg->queue.max_retry_age;
    if (now >= deadline) {
        outcome_fail_pending(rt, cfg, loop, e, LOG_EXPIRATION, -1, "4.4.7",
                             e->last_response ? e->last_response : "delivery time expired",
                             where);
        if (cfg->queue.dead_letter_after <= 0)
            return OUTCOME_DONE;
        e->flags |= ENTRY_F_DEAD;
        e->next_attempt = now;
        return OUTCOME_DEAD;
    }
    delay_warning(rt, cfg, loop, e, last_defer, remote_defer, where, now);
    double next = now + sched_backoff(cfg->queue.retry_interval, cfg->queue.max_retry_interval,
                                      e->attempts);
    e->next_attempt = next < deadline ? next : deadline;
    return OUTCOME_RETRY;
}

/* DSNs of one attempt: failed recipients, and delivered ones that asked for
 * NOTIFY=SUCCESS (reported "relayed" when the next hop took no DSN duties). */
struct dsn_lists {
    struct dsn_rcpt *failed, *ok;  /* room for every pending recipient each */
    size_t nfailed, nok;
    const char *last_defer;        /* the last deferral's reply, or NULL */
    bool remote_defer;             /* ... and it came from the next hop */
};

/* One recipient's result: state, log record, metrics, and its DSN entry if any. */
static void one_result(const struct config *cfg, struct entry *e, struct entry_rcpt *r,
                       const struct client_result *cr,
                       const struct outcome_where *where, const char *remote,
                       struct dsn_lists *d)
{
    int code = cr->code;
    const char *text = cr->text;
    const char *cls = metrics_code_class(code);
    if (cls)
        metrics_inc(M_SMTP_ERRORS, METRICS_OUTBOUND, cls, 1);
    if (code / 100 == 2) {
        r->state = RCPT_DELIVERED;
        metrics_inc(M_DELIVERED, e->domain, NULL, 1);
        if (entry_tenant(e) && config_tenant(cfg, entry_tenant(e)))  /* bounded: configured */
            metrics_inc(M_TENANT_DELIVERED, entry_tenant(e), NULL, 1);
        metrics_observe(M_LATENCY, time_now() - e->received_at);
        outcome_log(e, LOG_DELIVERY, r->addr, code, text, where);
        /* RFC 3461 5.2: a hop that offers DSN got NOTIFY and reports from here on;
         * to one that does not, the mail is "relayed" and we say so */
        if (!cr->hop_dsn && d->ok && bounce_wanted(e, r, DSN_RELAYED))
            d->ok[d->nok++] = (struct dsn_rcpt){
                .addr = r->addr, .status = cr->enhanced, .diagnostic = text,
                .remote_mta = remote, .action = DSN_RELAYED, .local = !cr->remote,
                .orcpt = entry_rcpt_orcpt(r) };
    } else if (code / 100 == 5) {
        r->state = RCPT_BOUNCED;
        metrics_inc(M_BOUNCED, e->domain, NULL, 1);
        outcome_log(e, LOG_BOUNCE, r->addr, code, text, where);
        if (d->failed && bounce_wanted(e, r, DSN_FAILED))
            d->failed[d->nfailed++] = (struct dsn_rcpt){
                .addr = r->addr, .status = cr->enhanced, .diagnostic = text,
                .remote_mta = remote, .action = DSN_FAILED, .local = !cr->remote,
                .orcpt = entry_rcpt_orcpt(r) };
    } else {
        metrics_inc(M_DEFERRED, e->domain, NULL, 1);
        outcome_log(e, LOG_TRANSIENT, r->addr, code ? code : -1, text, where);
        d->last_defer = text;
        d->remote_defer = cr->remote;
    }
}

static int dsn_lists_init(struct dsn_lists *d, uint32_t n)
{
    memset(d, 0, sizeof *d);
    d->failed = calloc(n ? n : 1, sizeof *d->failed);
    d->ok = calloc(n ? n : 1, sizeof *d->ok);
    return d->failed && d->ok ? PT_OK : PT_NOMEM;   /* NULL lists just send no DSN */
}

static void dsn_lists_send(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e,
                           struct dsn_lists *d)
{
    if (d->nfailed)
        bounce_send(rt, cfg, loop, e, d->failed, d->nfailed, false);
    if (d->nok)
        bounce_send(rt, cfg, loop, e, d->ok, d->nok, false);
    free(d->failed);
    free(d->ok);
}

enum outcome_next outcome_apply(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e,
                                const struct client_result *res, uint32_t nres,
                                const struct outcome_where *where)
{
    if (nres > 0 && res[0].code == -1)
        return OUTCOME_AGAIN;
    e->attempts++;
    struct dsn_lists d;
    dsn_lists_init(&d, nres);
    char host[300];
    const char *remote = site_host(where, host, sizeof host);
    uint32_t k = 0;
    for (uint32_t i = 0; i < e->nrcpt && k < nres; i++) {
        struct entry_rcpt *r = &e->rcpts[i];
        if (r->state != RCPT_PENDING)
            continue;
        one_result(cfg, e, r, &res[k++], where, remote, &d);
    }
    const char *last_defer = d.last_defer;
    bool remote_defer = d.remote_defer;
    dsn_lists_send(rt, cfg, loop, e, &d);
    if (last_defer)  /* one diagnostic line per deferred attempt, naming where it went */
        log_info("%s: deferred for %s at %s[%s]%s%s: %s", e->id, e->domain,
                 where && where->site ? where->site : "-", where && where->peer ? where->peer : "-",
                 where && where->tls ? " over " : "", where && where->tls ? where->tls : "",
                 last_defer);
    return settle(rt, cfg, loop, e, last_defer, remote_defer, where);
}

enum outcome_next outcome_uniform(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e, int code,
                                  const char *enhanced, const char *text)
{
    e->attempts++;
    struct dsn_lists d;
    dsn_lists_init(&d, entry_pending(e));
    /* our own words (DNS failure, out of memory): never "smtp;" in a DSN */
    struct client_result cr = { .code = code, .text = (char *)text };
    snprintf(cr.enhanced, sizeof cr.enhanced, "%s", enhanced ? enhanced : "");
    for (uint32_t i = 0; i < e->nrcpt; i++)
        if (e->rcpts[i].state == RCPT_PENDING)
            one_result(cfg, e, &e->rcpts[i], &cr, NULL, NULL, &d);
    const char *last_defer = d.last_defer;
    dsn_lists_send(rt, cfg, loop, e, &d);
    return settle(rt, cfg, loop, e, last_defer, false, NULL);
}
