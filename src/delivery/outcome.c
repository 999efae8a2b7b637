/* Delivery outcomes; see outcome.h. A 2xx delivers, a 5xx bounces (DSN), anything
 * else defers with exponential backoff until max_retry_age, then expires (DSN with
 * status 4.4.7 and the last response).
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

void outcome_fail_pending(struct runtime *rt, uv_loop_t *loop, struct entry *e, const char *type, int code,
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
        if (rc)
            rc[nb++] = (struct dsn_rcpt){ r->addr, status, diag, remote };
    }
    if (type)
        bounce_send(rt, loop, e, rc, nb, strcmp(type, LOG_EXPIRATION) == 0);
    free(rc);
}

/* After the recipients' results: finished, expired, or the next retry time. */
static enum outcome_next settle(struct runtime *rt, uv_loop_t *loop, struct entry *e, const char *last_defer,
                                const struct outcome_where *where)
{
    const struct config *cfg = rt->cfg;
    if (entry_pending(e) == 0)
        return OUTCOME_DONE;
    if (last_defer)
        entry_set_last_response(e, last_defer);
    double now = time_now();
    double deadline = e->received_at + cfg->queue.max_retry_age;
    if (now >= deadline) {
        outcome_fail_pending(rt, loop, e, LOG_EXPIRATION, -1, "4.4.7",
                             e->last_response ? e->last_response : "delivery time expired",
                             where);
        return OUTCOME_DONE;
    }
    double next = now + sched_backoff(cfg->queue.retry_interval, cfg->queue.max_retry_interval,
                                      e->attempts);
    e->next_attempt = next < deadline ? next : deadline;
    return OUTCOME_RETRY;
}

/* One recipient's result; a bounce is added to bounced[*nb] when there is room. */
static void one_result(struct entry *e, struct entry_rcpt *r, int code, const char *enhanced,
                       const char *text, const struct outcome_where *where, const char *remote,
                       struct dsn_rcpt *bounced, size_t *nb, const char **last_defer)
{
    const char *cls = metrics_code_class(code);
    if (cls)
        metrics_inc(M_SMTP_ERRORS, METRICS_OUTBOUND, cls, 1);
    if (code / 100 == 2) {
        r->state = RCPT_DELIVERED;
        metrics_inc(M_DELIVERED, e->domain, NULL, 1);
        metrics_observe(M_LATENCY, time_now() - e->received_at);
        outcome_log(e, LOG_DELIVERY, r->addr, code, text, where);
    } else if (code / 100 == 5) {
        r->state = RCPT_BOUNCED;
        metrics_inc(M_BOUNCED, e->domain, NULL, 1);
        outcome_log(e, LOG_BOUNCE, r->addr, code, text, where);
        if (bounced)
            bounced[(*nb)++] = (struct dsn_rcpt){ r->addr, enhanced, text, remote };
    } else {
        metrics_inc(M_DEFERRED, e->domain, NULL, 1);
        outcome_log(e, LOG_TRANSIENT, r->addr, code ? code : -1, text, where);
        *last_defer = text;
    }
}

enum outcome_next outcome_apply(struct runtime *rt, uv_loop_t *loop, struct entry *e,
                                const struct client_result *res, uint32_t nres,
                                const struct outcome_where *where)
{
    if (nres > 0 && res[0].code == -1)
        return OUTCOME_AGAIN;
    e->attempts++;
    struct dsn_rcpt *bounced = calloc(nres ? nres : 1, sizeof *bounced);
    size_t nb = 0;
    const char *last_defer = NULL;
    char host[300];
    const char *remote = site_host(where, host, sizeof host);
    uint32_t k = 0;
    for (uint32_t i = 0; i < e->nrcpt && k < nres; i++) {
        struct entry_rcpt *r = &e->rcpts[i];
        if (r->state != RCPT_PENDING)
            continue;
        const struct client_result *cr = &res[k++];
        one_result(e, r, cr->code, cr->enhanced, cr->text, where, remote, bounced, &nb,
                   &last_defer);
    }
    if (nb)
        bounce_send(rt, loop, e, bounced, nb, false);
    free(bounced);
    if (last_defer)  /* one diagnostic line per deferred attempt, naming where it went */
        log_info("%s: deferred for %s at %s[%s]%s%s: %s", e->id, e->domain,
                 where && where->site ? where->site : "-", where && where->peer ? where->peer : "-",
                 where && where->tls ? " over " : "", where && where->tls ? where->tls : "",
                 last_defer);
    return settle(rt, loop, e, last_defer, where);
}

enum outcome_next outcome_uniform(struct runtime *rt, uv_loop_t *loop, struct entry *e, int code,
                                  const char *enhanced, const char *text)
{
    e->attempts++;
    uint32_t np = entry_pending(e);
    struct dsn_rcpt *bounced = calloc(np ? np : 1, sizeof *bounced);
    size_t nb = 0;
    const char *last_defer = NULL;
    for (uint32_t i = 0; i < e->nrcpt; i++)
        if (e->rcpts[i].state == RCPT_PENDING)
            one_result(e, &e->rcpts[i], code, enhanced, text, NULL, NULL, bounced, &nb,
                       &last_defer);
    if (nb)
        bounce_send(rt, loop, e, bounced, nb, false);
    free(bounced);
    return settle(rt, loop, e, last_defer, NULL);
}
