/* Content preparation; see prepare.h. Signing happens after the header edits of
 * hooks, so that the signature covers what is sent.
 * SPDX-License-Identifier: Apache-2.0 */
#include <string.h>
#include <strings.h>

#include "core/runtime.h"
#include "delivery/prepare.h"
#include "dkim/dkim.h"
#include "dkim/dkim_cache.h"
#include "obs/log.h"
#include "queue/entry.h"
#include "queue/spool.h"
#include "util/headers.h"
#include "util/mime.h"
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

/* DKIM with the configured keys: every key for the most specific domain that covers
 * the From: domain (two keys for one domain = dual signing), signatures appended to
 * sig. A failure is logged and the message goes out unsigned by that key rather than
 * not at all. */
static void dkim_config_keys(const struct cfg_gen *g, const struct entry *e,
                             const struct buf *content, double now, struct buf *sig)
{
    char from[256];
    if (g->n_dkim == 0 || !dkim_from_domain(content->data, content->len, from))
        return;
    size_t best = 0;
    for (int i = 0; i < g->n_dkim; i++) {
        const char *d = dkim_key_domain(g->dkim[i]);
        if (dkim_domain_covers(d, from) && strlen(d) > best)
            best = strlen(d);
    }
    for (int i = 0; best && i < g->n_dkim; i++) {
        const char *d = dkim_key_domain(g->dkim[i]);
        if (strlen(d) != best || !dkim_domain_covers(d, from))
            continue;
        int rc = dkim_sign(g->dkim[i], content->data, content->len, now, sig);
        if (rc != PT_OK)
            log_warn("%s: DKIM signing for %s failed (%d): sent unsigned by this key", e->id, d,
                     rc);
    }
}

/* DKIM with the keys a hook asked for (sign_dkim: e->dkim_sign lines
 * "domain\tselector\tkey_file\n"), through the process-wide key cache. Unlike the
 * configured keys, a key that cannot be loaded or used now is an error: the hook
 * asked for this signature, so the message is deferred, never sent unsigned. */
static int dkim_hook_keys(const struct entry *e, const struct buf *content, double now,
                          struct buf *sig)
{
    const char *p = e->dkim_sign;
    while (p && *p) {
        size_t n = strcspn(p, "\n");
        char line[1024], err[256];
        if (n >= sizeof line)
            return PT_INVALID;
        memcpy(line, p, n);
        line[n] = 0;
        p += n + (p[n] == '\n');
        char *sel = strchr(line, '\t'), *file = sel ? strchr(sel + 1, '\t') : NULL;
        if (!sel || !file)
            return PT_INVALID;
        *sel++ = 0;
        *file++ = 0;
        const struct dkim_key *k = dkim_key_cache_get(line, sel, file, err, sizeof err);
        if (!k) {
            log_warn("%s: sign_dkim (%s, selector %s): %s: delivery deferred", e->id, line, sel,
                     err);
            return PT_ERROR;
        }
        int rc = dkim_sign(k, content->data, content->len, now, sig);
        if (rc != PT_OK) {
            log_warn("%s: sign_dkim (%s, selector %s) failed (%d): delivery deferred", e->id,
                     line, sel, rc);
            return rc;
        }
    }
    return PT_OK;
}

/* Prepends the signatures of the configured keys and of the hooks' keys. */
static int dkim_apply(const struct cfg_gen *g, const struct entry *e, struct buf *content)
{
    struct buf sig;
    buf_init(&sig, 0);
    double now = time_now();
    dkim_config_keys(g, e, content, now, &sig);
    int rc = dkim_hook_keys(e, content, now, &sig);
    if (rc == PT_OK && sig.len) {
        rc = buf_append(&sig, content->data, content->len);
        if (rc == PT_OK) {
            buf_free(content);
            *content = sig;
            return PT_OK;
        }
    }
    buf_free(&sig);
    return rc;
}

/* Whether the header block of msg has a DKIM-Signature field. */
static bool has_dkim_signature(const char *msg, size_t len)
{
    size_t pos = 0;
    struct hdr_field f;
    while (hdr_next(msg, len, &pos, &f))
        if (f.name_len == 14 && strncasecmp(f.name, "DKIM-Signature", 14) == 0)
            return true;
    return false;
}

/* The 7-bit form of content into alt7 (see prepare.h), unsigned; empty when none. */
static void downgrade(const struct cfg_gen *g, const struct entry *e,
                      const struct buf *content, struct buf *alt7)
{
    if (!g->cfg->delivery.eight_bit_downgrade || (e->flags & ENTRY_F_BINARYMIME) ||
        !mime_has_8bit(content->data, content->len))
        return;   /* BINARYMIME content is never converted: a hop without it bounces it */
    if (has_dkim_signature(content->data, content->len)) {
        log_info("%s: 8-bit message already DKIM-signed: not converted to 7 bit (a hop "
                 "without 8BITMIME bounces it with 5.6.3)", e->id);
        return;
    }
    int rc = mime_downgrade_7bit(content->data, content->len, alt7);
    if (rc != PT_OK) {
        if (rc == PT_INVALID)
            log_info("%s: 8-bit message cannot be converted to 7 bit (8-bit header, binary "
                     "or message/* part): a hop without 8BITMIME bounces it with 5.6.3", e->id);
        buf_free(alt7);
        buf_init(alt7, 0);
    }
}

int prepare_content(const struct runtime *rt, const struct cfg_gen *g, const struct entry *e,
                    struct buf *out, struct buf *alt7)
{
    int rc = spool_get_content(rt->spool, e->id, out);
    if (rc == PT_OK && e->hdr_edits)
        rc = apply_hdr_edits(e, out);
    if (rc != PT_OK) {
        buf_free(out);
        buf_init(out, 0);
        return rc == PT_NOTFOUND ? PT_NOTFOUND : rc;
    }
    downgrade(g, e, out, alt7);
    rc = dkim_apply(g, e, out);
    if (rc == PT_OK && alt7->len)
        rc = dkim_apply(g, e, alt7);
    if (rc != PT_OK) {
        buf_free(out);
        buf_init(out, 0);
        buf_free(alt7);
        buf_init(alt7, 0);
        return rc == PT_NOTFOUND ? PT_ERROR : rc;
    }
    return PT_OK;
}
