/* Runtime services built once at start from the config: TLS contexts (inbound per
 * listener, outbound per CA bundle), the AUTH users table and failure tracker, the
 * DKIM signing keys.
 * Loaded before privileges are dropped, so keys need only be readable by root.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/authban.h"
#include "core/runtime.h"
#include "core/users.h"
#include "dkim/dkim.h"
#include "obs/log.h"
#include "tls/tls.h"
#include "util/result.h"

static int add_ca(struct runtime *rt, const char *ca_file, char *err, size_t errlen)
{
    if (!ca_file || runtime_client_tls(rt, ca_file) != rt->client_tls)
        return PT_OK;
    if (rt->n_client_ca == RT_MAX_CA) {
        snprintf(err, errlen, "too many distinct ca_file values (max %d)", RT_MAX_CA);
        return PT_ERROR;
    }
    const struct config *cfg = rt->cfg;
    struct tls_ctx *ctx = tls_client_ctx_new(cfg->tls.min_tls_version, cfg->tls.ciphers, ca_file,
                                             err, errlen);
    if (!ctx)
        return PT_ERROR;
    rt->client_ca[rt->n_client_ca].ca_file = ca_file;
    rt->client_ca[rt->n_client_ca].ctx = ctx;
    rt->n_client_ca++;
    return PT_OK;
}

int runtime_tls_init(struct runtime *rt, char *err, size_t errlen)
{
    const struct config *cfg = rt->cfg;
    for (int i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        if (!l->tls)
            continue;
        const char *minv = l->tls->min_tls_version ? l->tls->min_tls_version : cfg->tls.min_tls_version;
        char e[512];
        rt->listener_tls[i] = tls_server_ctx_new(l->tls->cert_file, l->tls->key_file, minv,
                                                 cfg->tls.ciphers, cfg->tls.prefer_server_ciphers,
                                                 e, sizeof e);
        if (!rt->listener_tls[i]) {
            snprintf(err, errlen, "listener %s: tls: %s", l->listen, e);
            return PT_ERROR;
        }
    }
    rt->client_tls = tls_client_ctx_new(cfg->tls.min_tls_version, cfg->tls.ciphers, NULL, err, errlen);
    if (!rt->client_tls)
        return PT_ERROR;
    if (add_ca(rt, cfg->delivery.dflt.ca_file, err, errlen))
        return PT_ERROR;
    for (int i = 0; i < cfg->n_routes; i++)
        if (add_ca(rt, cfg->routes[i].ca_file, err, errlen))
            return PT_ERROR;
    if (cfg->auth_users_file) {
        rt->users = users_load(cfg->auth_users_file, err, errlen);
        if (!rt->users)
            return PT_ERROR;
        for (int i = 0; i < cfg->n_listeners && !users_has_cram(rt->users); i++)
            for (int k = 0; k < cfg->listeners[i].n_auth_mechanisms; k++)
                if (strcmp(cfg->listeners[i].auth_mechanisms[k], "CRAM-MD5") == 0)
                    log_warn("listener %s: CRAM-MD5 is not offered: %s has no {CRAM-MD5} "
                             "entry (crypt(3) hashes serve PLAIN and LOGIN only)",
                             cfg->listeners[i].name, cfg->auth_users_file);
    }
    if (cfg->n_dkim && !(rt->dkim = calloc((size_t)cfg->n_dkim, sizeof *rt->dkim))) {
        snprintf(err, errlen, "out of memory");
        return PT_ERROR;
    }
    for (int i = 0; i < cfg->n_dkim; i++) {
        const struct cfg_dkim_key *k = &cfg->dkim[i];
        char e[512];
        rt->dkim[i] = dkim_key_load(k->domain, k->selector, k->key_file, k->algorithm,
                                    (const char *const *)k->headers, k->n_headers, e, sizeof e);
        if (!rt->dkim[i]) {
            snprintf(err, errlen, "configure_dkim_signing (domain %s, selector %s): %s",
                     k->domain, k->selector, e);
            return PT_ERROR;
        }
        rt->n_dkim++;
    }
    rt->ban = authban_new(cfg->auth_max_failures, cfg->auth_failure_window, cfg->auth_ban_time);
    if (!rt->ban) {
        snprintf(err, errlen, "out of memory");
        return PT_ERROR;
    }
    return PT_OK;
}

struct tls_ctx *runtime_client_tls(const struct runtime *rt, const char *ca_file)
{
    if (ca_file)
        for (int i = 0; i < rt->n_client_ca; i++)
            if (strcmp(rt->client_ca[i].ca_file, ca_file) == 0)
                return rt->client_ca[i].ctx;
    return rt->client_tls;
}

void runtime_tls_free(struct runtime *rt)
{
    for (int i = 0; i < CFG_MAX_LISTENERS; i++)
        tls_ctx_free(rt->listener_tls[i]);
    for (int i = 0; i < rt->n_client_ca; i++)
        tls_ctx_free(rt->client_ca[i].ctx);
    tls_ctx_free(rt->client_tls);
    users_free(rt->users);
    authban_free(rt->ban);
    for (int i = 0; i < rt->n_dkim; i++)
        dkim_key_free(rt->dkim[i]);
    free(rt->dkim);
}
