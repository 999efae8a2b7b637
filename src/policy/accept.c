/* Acceptance rules of both doors; see accept.h.
 * SPDX-License-Identifier: Apache-2.0 */
#include "core/config.h"
#include "policy/accept.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "queue/spool_redis.h"
#include "smtp/smtp_parse.h"
#include "util/result.h"

int accept_queue_state(const struct config *cfg, const struct sched *sched, struct spool *spool)
{
    if (!spool_writable(spool))
        return PT_ERROR;
    if (spool_shared(spool))   /* the cluster's depth and Redis memory (spool_redis.h) */
        return spool_redis_full(spool) ? PT_TOOLONG : PT_OK;
    return sched_depth(sched) >= cfg->queue.max_queue_depth ? PT_TOOLONG : PT_OK;
}

int accept_recipient(const struct config *cfg, const char *rcpt, const char **reply, int *code)
{
    const char *dom = smtp_addr_domain(rcpt);
    if (!dom || !*dom) {
        *reply = "550 5.1.1 Recipient address must include a domain: this relay has no local "
                 "mailboxes";
        *code = 550;
        return PT_NOTFOUND;
    }
    char ldom[SMTP_DOMAIN_MAX + 1];
    smtp_domain_lower(dom, ldom, sizeof ldom);
    const struct cfg_route *r = config_route_for(cfg, ldom);
    if (r && r->kind == ROUTE_ERROR) {
        *reply = r->error_text;
        *code = r->error_code;
        return PT_INVALID;
    }
    return PT_OK;
}
