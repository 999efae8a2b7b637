/* The petrel/kumo Lua API surface: builds the `petrel` table (alias `kumo`), the
 * hook handler registry, the action stubs, and runs a config file with errors
 * reported as "FILE:LINE: message". Never interprets config options: config.c does.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_POLICY_LUA_API_H
#define PETREL_POLICY_LUA_API_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>

/* Registry layout shared with the hooks engine (see also config.h):
 *   registry[LUA_API_HANDLERS]         = { [event] = { fn1, fn2, ... } }
 *       one sequence per known event (always present, possibly empty), in the
 *       order petrel.on() registered them;
 *   registry[LUA_API_ACTIONS]          = { [name] = fn }  (absent until set)
 *       implementations of the action functions (add_header, log_warn, ...).
 *       The stubs in the petrel table and the globals forward every call to
 *       the function found here; with none, an action raises "NAME can only be
 *       called inside a hook" and log_* print to stderr. */
#define LUA_API_HANDLERS "petrel.handlers"
#define LUA_API_ACTIONS "petrel.actions"

enum lua_api_mode {
    LUA_API_LOAD,    /* config functions validate and fill a snapshot */
    LUA_API_WORKER,  /* config functions accept anything (already validated) */
};

/* Per-state context: the first upvalue of every API function. Lives in a Lua
 * userdata, so lua_close() frees it. */
struct lua_api_ctx {
    enum lua_api_mode mode;
    bool running;                    /* the config chunk itself is executing */
    void *user;                      /* LOAD: the struct config being built */
    int n_hooks;                     /* petrel.on() registrations */
    char shortsrc[LUA_IDSIZE];       /* how Lua names the chunk in messages */
    char path[];                     /* config file as given */
};

/* The known hook events, NULL-terminated. */
extern const char *const lua_api_events[];

/* Installs the API in L (standard libraries must be open): globals petrel, kumo,
 * adjust_domain_rate, log_info, log_warn, log_error and the registry tables above.
 * fns are the configure_* / start_* functions; in LUA_API_WORKER mode their names
 * are installed but bound to a no-op. user is stored in ctx->user (borrowed).
 * Returns the context, or NULL when out of memory. */
struct lua_api_ctx *lua_api_open(lua_State *L, enum lua_api_mode mode, const char *path,
                                 const luaL_Reg *fns, void *user);

/* Loads ctx->path and runs it. On failure writes "FILE:LINE: message" into err
 * (FILE as given to lua_api_open) and returns PT_INVALID (PT_NOMEM when Lua ran
 * out of memory). */
int lua_api_run(lua_State *L, struct lua_api_ctx *ctx, char *err, size_t errlen);

/* The context of the running API function (its first upvalue). */
struct lua_api_ctx *lua_api_ctx(lua_State *L);

/* Raises a Lua error "FILE:LINE: message" where FILE:LINE is the Lua code that
 * called the running API function. Never returns (the int is for `return`). */
int lua_api_error(lua_State *L, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Line of the Lua code calling the running API function (0 when unknown). */
int lua_api_line(lua_State *L);

/* Number of handlers registered for event; PT_NOTFOUND for an unknown event. */
int lua_api_handlers(lua_State *L, const char *event);

#endif
