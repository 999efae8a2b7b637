/* smtp_delivery_result on the delivery threads; see hooks_delivery.h. The state's
 * other actions keep hooks.c's behaviour (message actions raise "outside a message
 * hook"); only adjust_domain_rate is bound here, to the thread's callback.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "core/config.h"
#include "obs/log.h"
#include "policy/hooks.h"
#include "policy/hooks_delivery.h"
#include "policy/lua_api.h"
#include "util/result.h"

#define EVENT "smtp_delivery_result"
#define HD_CURRENT "petrel.delivery_current"   /* registry: the running hooks_delivery */

struct hooks_delivery {
    lua_State *L;
    hooks_rate_fn fn;
    void *arg;
};

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);   /* every further step fails too */
    luaL_error(L, "hook exceeded its budget of %d Lua instructions", HOOK_BUDGET);
}

/* adjust_domain_rate(domain, fraction) */
static int act_adjust(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, HD_CURRENT);
    struct hooks_delivery *hd = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!hd || !hd->fn)
        return luaL_error(L, "adjust_domain_rate can only be called inside a hook");
    const char *domain = luaL_checkstring(L, 1);
    double f = luaL_checknumber(L, 2);
    if (!(f >= -1.0 && f <= 1.0))
        return luaL_error(L, "adjust_domain_rate: fraction must be between -1 and 1 (-0.3 = "
                             "30%% slower), not %f", f);
    if (lua_gettop(L) > 2)
        return luaL_error(L, "adjust_domain_rate: expects (domain, fraction)");
    hd->fn(hd->arg, domain, f);
    return 0;
}

struct hooks_delivery *hooks_delivery_new(const struct config *cfg, char *err, size_t errlen)
{
    err[0] = 0;
    lua_State *L = config_lua_worker(cfg, err, errlen);
    if (!L)
        return NULL;
    if (hooks_install(L, cfg) != PT_OK) {
        snprintf(err, errlen, "out of memory");
        lua_close(L);
        return NULL;
    }
    if (!hooks_any(L, EVENT)) {
        lua_close(L);
        return NULL;                 /* err empty: nothing to run */
    }
    struct hooks_delivery *hd = calloc(1, sizeof *hd);
    if (!hd) {
        snprintf(err, errlen, "out of memory");
        lua_close(L);
        return NULL;
    }
    hd->L = L;
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_API_ACTIONS) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, LUA_API_ACTIONS);
    }
    lua_pushcfunction(L, act_adjust);
    lua_setfield(L, -2, "adjust_domain_rate");
    lua_pop(L, 1);
    return hd;
}

void hooks_delivery_free(struct hooks_delivery *hd)
{
    if (!hd)
        return;
    lua_close(hd->L);
    free(hd);
}

static void set_str(lua_State *L, const char *key, const char *v)
{
    if (!v)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

static int run_p(lua_State *L)
{
    const struct hooks_delivery_result *r = lua_touserdata(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_API_HANDLERS);
    lua_getfield(L, -1, EVENT);
    int handlers = lua_gettop(L);
    lua_newtable(L);
    int result = lua_gettop(L);
    lua_pushinteger(L, r->code);
    lua_setfield(L, result, "code");
    set_str(L, "enhanced", r->enhanced && *r->enhanced ? r->enhanced : NULL);
    set_str(L, "response", r->response);
    lua_newtable(L);
    int meta = lua_gettop(L);
    set_str(L, "domain", r->domain);
    set_str(L, "id", r->id);
    set_str(L, "site", r->site);
    set_str(L, "tenant", r->tenant && *r->tenant ? r->tenant : NULL);
    lua_pushinteger(L, r->attempts);
    lua_setfield(L, meta, "attempts");
    lua_Integer n = (lua_Integer)lua_rawlen(L, handlers);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, handlers, i);
        lua_pushvalue(L, result);
        lua_pushvalue(L, meta);
        lua_call(L, 2, 0);
    }
    return 0;
}

void hooks_delivery_run(struct hooks_delivery *hd, const struct hooks_delivery_result *r,
                        hooks_rate_fn fn, void *arg)
{
    lua_State *L = hd->L;
    hd->fn = fn;
    hd->arg = arg;
    lua_pushlightuserdata(L, hd);
    lua_setfield(L, LUA_REGISTRYINDEX, HD_CURRENT);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_BUDGET);
    lua_pushcfunction(L, run_p);
    lua_pushlightuserdata(L, (void *)r);
    int status = lua_pcall(L, 1, 0, 0);
    lua_sethook(L, NULL, 0, 0);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        log_error("%s: smtp_delivery_result hook failed: %s", r->id ? r->id : "-",
                  msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, HD_CURRENT);
    hd->fn = NULL;
    hd->arg = NULL;
    lua_gc(L, LUA_GCSTEP, 0);
}
