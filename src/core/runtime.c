/* Config generations (see runtime.h): building one from a config (TLS contexts
 * inbound per listener and outbound per CA bundle, the AUTH users table, the DKIM
 * signing keys, the per-thread Lua states), the reference counts, and the swap of
 * the current generation. The first generation is built before privileges are
 * dropped, so its keys need only be readable by root; later ones (reloads) read
 * the files as the running user.
 * Must never block a reader on the hot path: acquiring the current generation is
 * an atomic load and an atomic increment unless a reload happened since.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "core/authban.h"
#include "core/runtime.h"
#include "core/users.h"
#include "delivery/route.h"
#include "dkim/dkim.h"
#include "obs/log.h"
#include "policy/hooks.h"
#include "policy/hooks_delivery.h"
#include "tls/tls.h"
#include "util/result.h"

/* ---- building a generation ---------------------------------------------- */

static void gen_free(struct cfg_gen *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n_smtp_L; i++)
        if (g->smtp_L[i])
            lua_close(g->smtp_L[i]);
    free(g->smtp_L);
    for (int i = 0; i < g->n_http_L; i++)
        if (g->http_L[i])
            lua_close(g->http_L[i]);
    free(g->http_L);
    for (int i = 0; i < g->n_dlv; i++)
        hooks_delivery_free(g->dlv_hooks[i]);
    free(g->dlv_hooks);
    route_table_free(g->routes);
    for (int i = 0; i < CFG_MAX_LISTENERS; i++)
        tls_ctx_free(g->listener_tls[i]);
    for (int i = 0; i < g->n_client_ca; i++)
        tls_ctx_free(g->client_ca[i].ctx);
    tls_ctx_free(g->client_tls);
    users_free(g->users);
    for (int i = 0; i < g->n_dkim; i++)
        dkim_key_free(g->dkim[i]);
    free(g->dkim);
    config_free(g->cfg);
    free(g);
}

static int add_ca(struct cfg_gen *g, const char *ca_file, char *err, size_t errlen)
{
    if (!ca_file || runtime_gen_client_tls(g, ca_file) != g->client_tls)
        return PT_OK;
    if (g->n_client_ca == RT_MAX_CA) {
        snprintf(err, errlen, "too many distinct ca_file values (max %d)", RT_MAX_CA);
        return PT_ERROR;
    }
    const struct config *cfg = g->cfg;
    struct tls_ctx *ctx = tls_client_ctx_new(cfg->tls.min_tls_version, cfg->tls.ciphers, ca_file,
                                             err, errlen);
    if (!ctx)
        return PT_ERROR;
    g->client_ca[g->n_client_ca].ca_file = ca_file;
    g->client_ca[g->n_client_ca].ctx = ctx;
    g->n_client_ca++;
    return PT_OK;
}

/* One Lua state from the config file with the hooks engine installed. */
static struct lua_State *gen_lua(const struct config *cfg, char *err, size_t errlen)
{
    struct lua_State *L = config_lua_worker(cfg, err, errlen);
    if (L && hooks_install(L, cfg) != PT_OK) {
        lua_close(L);
        snprintf(err, errlen, "%s:0: out of memory", cfg->path);
        return NULL;
    }
    return L;
}

static int gen_lua_states(struct cfg_gen *g, int n_smtp, int n_http, int n_dlv, char *err,
                          size_t errlen)
{
    if ((n_smtp && !(g->smtp_L = calloc((size_t)n_smtp, sizeof *g->smtp_L))) ||
        (n_http && !(g->http_L = calloc((size_t)n_http, sizeof *g->http_L))) ||
        (n_dlv && !(g->dlv_hooks = calloc((size_t)n_dlv, sizeof *g->dlv_hooks)))) {
        snprintf(err, errlen, "%s:0: out of memory", g->cfg->path);
        return PT_NOMEM;
    }
    for (; g->n_smtp_L < n_smtp; g->n_smtp_L++)
        if (!(g->smtp_L[g->n_smtp_L] = gen_lua(g->cfg, err, errlen)))
            return PT_ERROR;
    for (; g->n_http_L < n_http; g->n_http_L++)
        if (!(g->http_L[g->n_http_L] = gen_lua(g->cfg, err, errlen)))
            return PT_ERROR;
    for (; g->n_dlv < n_dlv; g->n_dlv++) {
        char e[512];
        g->dlv_hooks[g->n_dlv] = hooks_delivery_new(g->cfg, e, sizeof e);
        if (!g->dlv_hooks[g->n_dlv] && e[0]) {
            snprintf(err, errlen, "%s:0: delivery hooks: %s", g->cfg->path, e);
            return PT_ERROR;
        }
        if (!g->dlv_hooks[g->n_dlv])
            break;              /* no smtp_delivery_result handler: none for any thread */
    }
    return PT_OK;
}

struct cfg_gen *runtime_gen_build(struct config *cfg, uint64_t id, int n_smtp, int n_http,
                                  int n_dlv, char *err, size_t errlen)
{
    struct cfg_gen *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "%s:0: out of memory", cfg->path);
        config_free(cfg);
        return NULL;
    }
    atomic_init(&g->refs, 1);
    g->id = id;
    g->cfg = cfg;
    char e[512];
    for (int i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        if (!l->tls)
            continue;
        const char *minv = l->tls->min_tls_version ? l->tls->min_tls_version
                                                   : cfg->tls.min_tls_version;
        g->listener_tls[i] = tls_server_ctx_new(l->tls->cert_file, l->tls->key_file, minv,
                                                cfg->tls.ciphers, cfg->tls.prefer_server_ciphers,
                                                e, sizeof e);
        if (!g->listener_tls[i]) {
            snprintf(err, errlen, "%s:%d: start_smtp_listener %s: tls: %s", cfg->path, l->line,
                     l->listen, e);
            goto fail;
        }
    }
    g->client_tls = tls_client_ctx_new(cfg->tls.min_tls_version, cfg->tls.ciphers, NULL, e,
                                       sizeof e);
    if (!g->client_tls) {
        snprintf(err, errlen, "%s:%d: configure_tls: %s", cfg->path, cfg->tls.line, e);
        goto fail;
    }
    if (add_ca(g, cfg->delivery.dflt.ca_file, e, sizeof e)) {
        snprintf(err, errlen, "%s:%d: configure_delivery: ca_file: %s", cfg->path,
                 cfg->delivery.dflt.line, e);
        goto fail;
    }
    for (int i = 0; i < cfg->n_routes; i++)
        if (add_ca(g, cfg->routes[i].ca_file, e, sizeof e)) {
            snprintf(err, errlen, "%s:%d: configure_transport '%s': ca_file: %s", cfg->path,
                     cfg->routes[i].line, cfg->routes[i].key, e);
            goto fail;
        }
    if (cfg->auth_users_file && !(g->users = users_load(cfg->auth_users_file, e, sizeof e))) {
        snprintf(err, errlen, "%s:%d: configure_auth: %s", cfg->path, cfg->auth_line, e);
        goto fail;
    }
    for (int i = 0; g->users && i < cfg->n_listeners && !users_has_cram(g->users); i++)
        for (int k = 0; k < cfg->listeners[i].n_auth_mechanisms; k++)
            if (strcmp(cfg->listeners[i].auth_mechanisms[k], "CRAM-MD5") == 0)
                log_warn("listener %s: CRAM-MD5 is not offered: %s has no {CRAM-MD5} "
                         "entry (crypt(3) hashes serve PLAIN and LOGIN only)",
                         cfg->listeners[i].name, cfg->auth_users_file);
    if (cfg->n_dkim && !(g->dkim = calloc((size_t)cfg->n_dkim, sizeof *g->dkim))) {
        snprintf(err, errlen, "%s:0: out of memory", cfg->path);
        goto fail;
    }
    for (int i = 0; i < cfg->n_dkim; i++) {
        const struct cfg_dkim_key *k = &cfg->dkim[i];
        g->dkim[i] = dkim_key_load(k->domain, k->selector, k->key_file, k->algorithm,
                                   (const char *const *)k->headers, k->n_headers, e, sizeof e);
        if (!g->dkim[i]) {
            snprintf(err, errlen, "%s:%d: configure_dkim_signing (domain %s, selector %s): %s",
                     cfg->path, k->line, k->domain, k->selector, e);
            goto fail;
        }
        g->n_dkim++;
    }
    if (!(g->routes = route_table_new(cfg))) {
        snprintf(err, errlen, "%s:0: out of memory", cfg->path);
        goto fail;
    }
    if (gen_lua_states(g, n_smtp, n_http, n_dlv, err, errlen) != PT_OK)
        goto fail;
    return g;
fail:
    gen_free(g);
    return NULL;
}

/* ---- references ------------------------------------------------------------ */

struct cfg_gen *runtime_gen_ref(struct cfg_gen *g)
{
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void runtime_gen_release(struct cfg_gen *g)
{
    if (g && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
        gen_free(g);
}

/* Each thread keeps one reference to the generation it used last, so that the
 * common case needs no lock: that generation cannot be freed under us. The key is
 * process-wide by nature (thread-local storage); what it points to is immutable. */
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void tl_destroy(void *p)
{
    runtime_gen_release(p);
}

static void tl_init(void)
{
    if (pthread_key_create(&tl_key, tl_destroy) != 0)
        abort(); /* startup only: no thread can run without it */
}

struct cfg_gen *runtime_gen_acquire(struct runtime *rt)
{
    pthread_once(&tl_once, tl_init);
    struct cfg_gen *g = pthread_getspecific(tl_key);
    uint64_t cur = atomic_load_explicit(&rt->gen_id, memory_order_acquire);
    if (!g || g->id != cur) {
        pthread_mutex_lock(&rt->gen_lock);
        struct cfg_gen *n = runtime_gen_ref(rt->gen);
        pthread_mutex_unlock(&rt->gen_lock);
        pthread_setspecific(tl_key, n);
        runtime_gen_release(g);
        g = n;
    }
    return runtime_gen_ref(g);
}

void runtime_gen_thread_done(void)
{
    pthread_once(&tl_once, tl_init);
    struct cfg_gen *g = pthread_getspecific(tl_key);
    pthread_setspecific(tl_key, NULL);
    runtime_gen_release(g);
}

void runtime_gen_swap(struct runtime *rt, struct cfg_gen *gen)
{
    pthread_mutex_lock(&rt->gen_lock);
    struct cfg_gen *old = rt->gen;
    rt->gen = gen;
    atomic_store_explicit(&rt->gen_id, gen->id, memory_order_release);
    pthread_mutex_unlock(&rt->gen_lock);
    runtime_gen_release(old);
}

int runtime_init(struct runtime *rt, struct cfg_gen *gen)
{
    pthread_once(&tl_once, tl_init);
    pthread_mutex_init(&rt->gen_lock, NULL);
    const struct config *cfg = gen->cfg;
    rt->ban = authban_new(cfg->auth_max_failures, cfg->auth_failure_window, cfg->auth_ban_time);
    if (!rt->ban) {
        runtime_gen_release(gen);
        return PT_NOMEM;
    }
    rt->boot = runtime_gen_ref(gen);
    rt->cfg = gen->cfg;
    rt->gen = gen;
    atomic_store(&rt->gen_id, gen->id);
    return PT_OK;
}

void runtime_free(struct runtime *rt)
{
    runtime_gen_thread_done();
    runtime_gen_release(rt->gen);
    runtime_gen_release(rt->boot);
    rt->gen = rt->boot = NULL;
    rt->cfg = NULL;
    authban_free(rt->ban);
    rt->ban = NULL;
    pthread_mutex_destroy(&rt->gen_lock);
}

/* ---- lookups ------------------------------------------------------------------ */

struct lua_State *runtime_gen_smtp_lua(const struct cfg_gen *g, int i)
{
    return i >= 0 && i < g->n_smtp_L ? g->smtp_L[i] : NULL;
}

struct lua_State *runtime_gen_http_lua(const struct cfg_gen *g, int i)
{
    return i >= 0 && i < g->n_http_L ? g->http_L[i] : NULL;
}

struct tls_ctx *runtime_gen_client_tls(const struct cfg_gen *g, const char *ca_file)
{
    if (ca_file)
        for (int i = 0; i < g->n_client_ca; i++)
            if (strcmp(g->client_ca[i].ca_file, ca_file) == 0)
                return g->client_ca[i].ctx;
    return g->client_tls;
}

struct hooks_delivery *runtime_gen_dlv_hooks(const struct cfg_gen *g, int i)
{
    return i >= 0 && i < g->n_dlv ? g->dlv_hooks[i] : NULL;
}
