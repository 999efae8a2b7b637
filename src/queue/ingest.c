/* Message ingestion; see ingest.h. Recipients are grouped by lowercased domain in
 * first-seen order; each group becomes one entry sharing the message's content.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/runtime.h"
#include "delivery/route.h"
#include "obs/log.h"
#include "queue/ingest.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "smtp/smtp_parse.h"
#include "util/result.h"

struct ingest_job {
    struct runtime *rt;
    ingest_cb cb;
    void *arg;
    char *peer, *tls;
    bool log_reception;
    size_t nentries;
    struct entry *entries[];
};

static void log_receptions(const struct ingest_job *job)
{
    char resp[64];
    snprintf(resp, sizeof resp, "250 2.0.0 Ok: queued as %s", job->entries[0]->id);
    for (size_t i = 0; i < job->nentries; i++) {
        const struct entry *e = job->entries[i];
        for (uint32_t k = 0; k < e->nrcpt; k++) {
            struct log_record r = {
                .type = LOG_RECEPTION, .id = e->id, .timestamp = e->received_at,
                .sender = e->sender, .recipient = e->rcpts[k].addr, .queue = e->domain,
                .peer_address = job->peer, .code = 250, .response = resp,
                .size = (int64_t)e->size, .delay = 0, .attempts = 0, .tls = job->tls,
                .protocol = e->protocol == PROTO_HTTP ? "http" : "smtp",
        .tenant = entry_tenant(e), .egress_source = entry_source(e),
            };
            log_event(&r);
        }
    }
}

static void ingest_on_durable(void *arg, int status)
{
    struct ingest_job *job = arg;
    if (status == PT_OK && job->log_reception && job->nentries)
        log_receptions(job);
    for (size_t i = 0; i < job->nentries; i++) {
        if (status == PT_OK)
            sched_enqueue(job->rt->sched, job->entries[i]);
        else
            entry_free(job->entries[i]);
    }
    job->cb(job->arg, status);
    free(job->peer);
    free(job->tls);
    free(job);
}

int ingest_submit(struct runtime *rt, const struct ingest_msg *m, ingest_cb cb, void *arg)
{
    if (m->nrcpt == 0)
        return PT_INVALID;
    /* Group recipients by domain: dom[i] = lowercased domain of rcpt i,
     * group[i] = index of the first recipient with that domain. */
    size_t n = m->nrcpt;
    char (*dom)[SMTP_DOMAIN_MAX + 1] = malloc(n * sizeof *dom);
    size_t *group = malloc(n * sizeof *group);
    const char **members = malloc(n * sizeof *members);
    const char **orcpts = malloc(n * sizeof *orcpts);
    uint8_t *notify = malloc(n);
    struct ingest_job *job = calloc(1, sizeof *job + n * sizeof(struct entry *));
    struct spool_batch *b = spool_batch_new();
    struct buf rec;
    buf_init(&rec, 0);
    struct cfg_gen *g = NULL;
    int rc = PT_NOMEM;
    if (!dom || !group || !members || !orcpts || !notify || !job || !b)
        goto fail;
    size_t ngroups = 0;
    for (size_t i = 0; i < n; i++) {
        const char *d = smtp_addr_domain(m->rcpts[i]);
        smtp_domain_lower(d ? d : "", dom[i], sizeof dom[i]);
        group[i] = i;
        for (size_t j = 0; j < i; j++) {
            if (group[j] == j && strcmp(dom[j], dom[i]) == 0) {
                group[i] = j;
                break;
            }
        }
        if (group[i] == i)
            ngroups++;
    }
    rc = spool_batch_put_content(b, m->id, m->content, m->content_len);
    if (rc)
        goto fail;
    /* routes of the current config; the routes are interned and outlive it */
    g = runtime_gen_acquire(rt);
    for (size_t i = 0; i < n; i++) {
        if (group[i] != i)
            continue;
        size_t k = 0;
        for (size_t j = i; j < n; j++) {
            if (group[j] != i)
                continue;
            notify[k] = m->notify ? m->notify[j] : 0;
            orcpts[k] = m->orcpt ? m->orcpt[j] : NULL;
            members[k++] = m->rcpts[j];
        }
        struct entry_dsn dsn = { .envid = m->envid, .notify = notify, .orcpt = orcpts };
        struct entry *e = entry_new_dsn(m->id, dom[i], m->sender, members, (uint32_t)k, &dsn);
        if (!e) {
            rc = PT_NOMEM;
            goto fail;
        }
        job->entries[job->nentries++] = e;
        e->ndomains = (uint16_t)(ngroups > 65535 ? 65535 : ngroups);
        e->protocol = m->protocol;
        e->priority = m->priority;
        e->flags = m->flags;
        e->received_at = m->received_at;
        e->next_attempt = m->received_at;
        e->size = m->content_len;
        if (m->policy && (rc = m->policy(m->policy_arg, e)) != PT_OK)
            goto fail;
        /* the route is decided here, once, and stored with the entry */
        const struct route *r = route_resolve(g->routes, e->domain, e->route);
        if (!r) {
            rc = PT_NOMEM;
            goto fail;
        }
        entry_set_route_static(e, r->name);
        e->via = r;
        buf_reset(&rec);
        if ((rc = entry_encode(e, &rec)) != PT_OK)
            goto fail;
        if ((rc = spool_batch_put_entry(b, m->id, dom[i], rec.data, rec.len)) != PT_OK)
            goto fail;
    }
    runtime_gen_release(g);
    free(dom);
    free(group);
    free(members);
    free(orcpts);
    free(notify);
    buf_free(&rec);
    job->rt = rt;
    job->cb = cb;
    job->arg = arg;
    job->log_reception = m->log_reception;
    job->peer = m->peer_address ? strdup(m->peer_address) : NULL;
    job->tls = m->tls ? strdup(m->tls) : NULL;
    rc = spool_commit_durable(rt->spool, b, ingest_on_durable, job);
    if (rc != PT_OK) {
        for (size_t i = 0; i < job->nentries; i++)
            entry_free(job->entries[i]);
        free(job->peer);
        free(job->tls);
        free(job);
    }
    return rc;
fail:
    if (job)
        for (size_t i = 0; i < job->nentries; i++)
            entry_free(job->entries[i]);
    free(job);
    runtime_gen_release(g);
    free(dom);
    free(group);
    free(members);
    free(orcpts);
    free(notify);
    spool_batch_free(b);
    buf_free(&rec);
    return rc;
}
