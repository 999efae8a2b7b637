/* Admin suspensions: the per-thread list of suspended destinations (a recipient
 * domain or a name of a route), which mail they hold, and their copy in the spool
 * so that they survive a restart. Never touches queues or connections: the
 * scheduler holds and releases the mail.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/runtime.h"
#include "delivery/route.h"
#include "obs/log.h"
#include "queue/entry.h"
#include "queue/sched_int.h"
#include "queue/spool.h"
#include "queue/suspend.h"
#include "util/result.h"
#include "util/timeutil.h"

struct suspension *suspend_of(const struct dthread *t, const char *key)
{
    for (struct suspension *su = t->suspended; su; su = su->next)
        if (strcmp(su->key, key) == 0)
            return su;
    return NULL;
}

struct suspension *suspend_for(const struct dthread *t, const struct entry *e)
{
    for (struct suspension *su = t->suspended; su; su = su->next)
        if (strcmp(su->key, e->domain) == 0 || route_named(e->via, su->key))
            return su;
    return NULL;
}

bool suspend_set(struct dthread *t, const char *key, double until)
{
    struct suspension *su = suspend_of(t, key);
    if (!su && (su = calloc(1, sizeof *su)) != NULL) {
        snprintf(su->key, sizeof su->key, "%s", key);
        su->next = t->suspended;
        t->suspended = su;
    }
    if (su) {
        su->until = until;
        su->until_mono = time_mono_at(until);
    }
    return su != NULL;
}

struct restore_ctx {
    struct sched *s;
    struct spool_batch *expired;
    double now;
};

static int restore_one(void *arg, const char *dest, double until)
{
    struct restore_ctx *rc = arg;
    if (until <= rc->now) {
        if (!rc->expired)
            rc->expired = spool_batch_new();
        if (rc->expired)
            spool_batch_del_suspension(rc->expired, dest);
        return 0;
    }
    char ts[48];
    time_rfc3339(until, ts, sizeof ts);
    log_info("queue %s: suspended until %s (kept from before the restart)", dest, ts);
    for (int i = 0; i < rc->s->n; i++)
        if (!suspend_set(&rc->s->t[i], dest, until))
            log_error("queue %s: out of memory restoring its suspension", dest);
    return 0;
}

void suspend_restore(struct sched *s)
{
    struct restore_ctx rc = { .s = s, .now = time_now() };
    if (spool_scan_suspensions(s->rt->spool, restore_one, &rc) != PT_OK)
        log_error("spool: could not read the stored queue suspensions");
    if (rc.expired)
        spool_commit_nosync(s->rt->spool, rc.expired);
}

void suspend_persist(struct sched *s, const char *dest, double until, bool on)
{
    struct spool_batch *b = spool_batch_new();
    int rc = b ? (on ? spool_batch_put_suspension(b, dest, until)
                     : spool_batch_del_suspension(b, dest)) : PT_NOMEM;
    if (rc == PT_OK) {
        rc = spool_commit_nosync(s->rt->spool, b);
        b = NULL;
    }
    spool_batch_free(b);
    if (rc != PT_OK)
        log_error("queue %s: could not %s the suspension in the spool (%d): it holds until a "
                  "restart only", dest, on ? "keep" : "remove", rc);
}

