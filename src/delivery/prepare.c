/* Content preparation; see prepare.h. Signing happens after the header edits of
 * hooks, so that the signature covers what is sent.
 * SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "core/runtime.h"
#include "delivery/prepare.h"
#include "dkim/dkim.h"
#include "obs/log.h"
#include "queue/entry.h"
#include "queue/spool.h"
#include "util/headers.h"
#include "util/result.h"
#include "util/timeutil.h"

/* content becomes itself with the entry's header edits applied. */
static int apply_hdr_edits(const struct entry *e, struct buf *content)
{
    struct buf out;
    buf_init(&out, 0);
    int rc = hdr_apply(content->data, content->len, e->hdr_edits, strlen(e->hdr_edits), &out);
    if (rc != PT_OK) {
        buf_free(&out);
        return rc;
    }
    buf_free(content);
    *content = out;
    return PT_OK;
}

/* DKIM: signs content with every configured key for the most specific domain that
 * covers the From: domain (two keys for one domain = dual signing). A failure is
 * logged and the message goes out unsigned by that key rather than not at all. */
static void dkim_apply(const struct runtime *rt, const struct entry *e, struct buf *content)
{
    char from[256];
    if (rt->n_dkim == 0 || !dkim_from_domain(content->data, content->len, from))
        return;
    size_t best = 0;
    for (int i = 0; i < rt->n_dkim; i++) {
        const char *d = dkim_key_domain(rt->dkim[i]);
        if (dkim_domain_covers(d, from) && strlen(d) > best)
            best = strlen(d);
    }
    if (best == 0)
        return;
    struct buf sig;
    buf_init(&sig, 0);
    double now = time_now();
    for (int i = 0; i < rt->n_dkim; i++) {
        const char *d = dkim_key_domain(rt->dkim[i]);
        if (strlen(d) != best || !dkim_domain_covers(d, from))
            continue;
        int rc = dkim_sign(rt->dkim[i], content->data, content->len, now, &sig);
        if (rc != PT_OK)
            log_warn("%s: DKIM signing for %s failed (%d): sent unsigned by this key", e->id, d,
                     rc);
    }
    if (sig.len && buf_append(&sig, content->data, content->len) == PT_OK) {
        buf_free(content);
        *content = sig;
        return;
    }
    buf_free(&sig);
}

int prepare_content(const struct runtime *rt, const struct entry *e, struct buf *out)
{
    int rc = spool_get_content(rt->spool, e->id, out);
    if (rc == PT_OK && e->hdr_edits)
        rc = apply_hdr_edits(e, out);
    if (rc != PT_OK) {
        buf_free(out);
        buf_init(out, 0);
        return rc == PT_NOTFOUND ? PT_NOTFOUND : rc;
    }
    dkim_apply(rt, e, out);
    return PT_OK;
}
