/* The hooks engine: runs the petrel.on() handlers of a worker's Lua state for an
 * event and collects what their actions asked for (header edits, queue priority,
 * tenant). Runs on the thread that owns the state; every run has an instruction
 * budget, so a runaway handler raises an error instead of stalling the loop.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_POLICY_HOOKS_H
#define PETREL_POLICY_HOOKS_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "util/buf.h"

#define HOOK_TENANT_MAX 128
/* Lua VM instructions a single event may run (all its handlers together). */
#define HOOK_BUDGET 50000000

/* What the actions of a run asked for. Runs accumulate into the same effects: the
 * effects of smtp_server_greeting are the starting point of each message of the
 * session. */
struct hook_effects {
    struct buf edits;                /* util/headers.h edit text */
    struct buf dkim;                 /* sign_dkim: lines "domain\tselector\tkey_file\n"
                                        (entry.h dkim_sign), keys checked loadable */
    struct buf limits;               /* limit_sending: lines of policy/limits.h */
    struct buf dkim_load;            /* sign_dkim keys not (or not freshly) in the cache:
                                        lines "where\tdomain\tselector\tkey_file\n" to
                                        load (hooks_load_dkim_keys) before the message is
                                        accepted; empty = nothing to load */
    int priority;                    /* PRIO_* (queue/entry.h), -1 = not set */
    char route[256];                 /* route_to target ("" = by domain) */
    char tenant[HOOK_TENANT_MAX];    /* meta.tenant after the run ("" = none) */
    bool tenant_set;                 /* set_tenant was called: tenant wins over meta.tenant */
    char egress_pool[128];           /* set_egress_pool ("" = the tenant's or none) */
};

void hook_effects_init(struct hook_effects *fx);
void hook_effects_free(struct hook_effects *fx);
/* dst (initialized) becomes a copy of src. PT_OK or PT_NOMEM. */
int hook_effects_copy(struct hook_effects *dst, const struct hook_effects *src);

/* Loads the keys of fx->dkim_load text (lines, see struct hook_effects) with
 * dkim_key_cache_get: reads key files, so never on an event loop (a worker pool
 * job, or a thread of its own). PT_OK when all loaded; else PT_INVALID with
 * "WHERE sign_dkim(domain, selector): reason" (the error a hook's sign_dkim gave
 * before keys were loaded lazily) in err. */
int hooks_load_dkim_keys(const char *lines, char *err, size_t errlen);

/* What the handlers see in meta (strings borrowed for the call; NULL = nil). */
struct hook_meta {
    const char *client_ip, *listener, *tenant, *auth_user, *id, *sender;
    const char *const *rcpts;        /* meta.recipients; NULL = none */
    size_t nrcpt;
    const char *content;             /* message: meta.headers is built from its header */
    size_t content_len;
};

/* Installs the action functions (add_header, remove_header, set_queue_priority,
 * route_to, sign_dkim, limit_sending, log_*, and errors for the actions this build
 * does not do) in L, a
 * worker state whose config chunk has run; route_to checks its target against cfg
 * (borrowed for the life of L). PT_OK or PT_NOMEM. */
struct config;
int hooks_install(lua_State *L, const struct config *cfg);

/* Applies the effects that belong to a queue entry (header edits, priority,
 * route, sign_dkim requests, tenant) to e. PT_OK, PT_NOMEM or PT_TOOLONG. */
struct entry;
int hook_effects_apply(const struct hook_effects *fx, struct entry *e);

/* Whether any handler is registered for event. */
bool hooks_any(lua_State *L, const char *event);

/* Runs every handler of event in order, as handler(arg1, meta). Effects accumulate
 * into fx; fx->tenant is meta.tenant as the handlers left it. A handler must return
 * nothing (nil). PT_OK, or PT_ERROR with the handler's error ("FILE:LINE: message")
 * in err: the caller answers 4xx and queues nothing. */
int hooks_run(lua_State *L, const char *event, const char *arg1, const struct hook_meta *m,
              struct hook_effects *fx, char *err, size_t errlen);

/* One HTTP request header, as http_request's request.headers sees it (borrowed). */
struct hook_kv { const char *name, *value; };

/* Runs every http_request handler in order as handler(request) with
 * request.method, path, client_ip and headers (a table name -> value whose lookup
 * ignores case). The first handler that returns a table {status=, body=} answers
 * instead: *status (100..599) and body (appended). *status = 0 when no handler
 * answered. Message actions raise an error here. PT_OK, or PT_ERROR with
 * "FILE:LINE: message" in err (a handler raised, returned something other than
 * nil or such a table, or ran over budget): the caller answers 500. */
int hooks_run_request(lua_State *L, const char *method, const char *path, const char *client_ip,
                      const struct hook_kv *headers, size_t nheaders, int *status,
                      struct buf *body, char *err, size_t errlen);

/* The tenant rule of DESIGN §4: the listener's tenant, else the X-Tenant header of
 * content, else the AUTH user; "" when none. */
void hooks_default_tenant(const char *listener_tenant, const char *content, size_t len,
                          const char *auth_user, char out[HOOK_TENANT_MAX]);

#endif
