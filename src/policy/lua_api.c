/* The petrel/kumo Lua API surface: the `petrel` table, hook registry, action
 * stubs and the config runner with "FILE:LINE: message" errors. Never interprets
 * config options (config.c does) and never runs a hook (the hooks engine does).
 * SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "policy/lua_api.h"
#include "util/result.h"

#define LUA_API_CTX "petrel.ctx"
#define LUA_API_MSG_MAX 1024

const char *const lua_api_events[] = {
    "smtp_server_greeting", "smtp_message_received", "http_message_received",
    "smtp_delivery_result", "http_request", NULL,
};

/* DESIGN §4 actions; they only make sense while a hook handles a message. */
static const char *const action_names[] = {
    "add_header", "remove_header", "set_queue_priority", "sign_dkim", "route_to",
    "limit_sending", "adjust_domain_rate", "log_info", "log_warn", "log_error", "set_tenant",
    "set_egress_pool", NULL,
};

/* Also plain globals, as the seeds call them. */
static const char *const global_actions[] = {
    "adjust_domain_rate", "log_info", "log_warn", "log_error", NULL,
};

struct lua_api_ctx *lua_api_ctx(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static bool is_our_chunk(const struct lua_api_ctx *ctx, const char *source)
{
    return source && source[0] == '@' && strcmp(source + 1, ctx->path) == 0;
}

/* "FILE:LINE: " of the innermost Lua code on the stack above the running
 * function (level 0), with FILE as given for the config chunk itself. */
static void where(lua_State *L, const struct lua_api_ctx *ctx, char *out, size_t outlen)
{
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
            continue;
        snprintf(out, outlen, "%s:%d: ",
                 is_our_chunk(ctx, ar.source) ? ctx->path : ar.short_src, ar.currentline);
        return;
    }
    snprintf(out, outlen, "%s:0: ", ctx->path);
}

int lua_api_line(lua_State *L)
{
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++)
        if (lua_getinfo(L, "l", &ar) && ar.currentline > 0)
            return ar.currentline;
    return 0;
}

int lua_api_error(lua_State *L, const char *fmt, ...)
{
    char msg[LUA_API_MSG_MAX];
    where(L, lua_api_ctx(L), msg, sizeof msg);
    size_t n = strlen(msg);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - n, fmt, ap);
    va_end(ap);
    lua_pushstring(L, msg);
    lua_error(L);
    abort();  /* lua_error longjmps to the pcall of the config run */
}

/* Length of "PREFIX:DIGITS:" at the start of msg, or 0. */
static size_t location_len(const char *msg, const char *prefix, size_t plen)
{
    if (strncmp(msg, prefix, plen) != 0 || msg[plen] != ':')
        return 0;
    size_t i = plen + 1;
    if (!isdigit((unsigned char)msg[i]))
        return 0;
    while (isdigit((unsigned char)msg[i]))
        i++;
    return msg[i] == ':' ? i + 1 : 0;
}

/* Whether msg starts with some "SOURCE:LINE:" (an error located elsewhere, e.g.
 * in a file the config loaded with dofile). */
static bool has_location(const char *msg)
{
    for (const char *c = msg; *c && *c != '\n'; c++)
        if (*c == ':' && c > msg && location_len(msg, msg, (size_t)(c - msg)) > 0)
            return true;
    return false;
}

/* Rewrites msg into "FILE:LINE: message" with FILE as given. fallback is the
 * "FILE:LINE: " to prepend when msg names no location. */
static void normalize(const struct lua_api_ctx *ctx, const char *msg, const char *fallback,
                      char *out, size_t outlen)
{
    size_t n;
    if (location_len(msg, ctx->path, strlen(ctx->path)) > 0)
        snprintf(out, outlen, "%s", msg);
    else if ((n = strlen(ctx->shortsrc)) > 0 && location_len(msg, ctx->shortsrc, n) > 0)
        snprintf(out, outlen, "%s%s", ctx->path, msg + n);
    else if (has_location(msg))
        snprintf(out, outlen, "%s", msg);
    else
        snprintf(out, outlen, "%s%s", fallback, msg);
}

/* Message handler of the config run: the stack of the error is still there, so
 * an error without a location ("error('x', 0)", error objects) gets one. */
static int api_msgh(lua_State *L)
{
    const struct lua_api_ctx *ctx = lua_api_ctx(L);
    const char *msg;
    if (lua_type(L, 1) == LUA_TSTRING)
        msg = lua_tostring(L, 1);
    else if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
        msg = lua_tostring(L, -1);
    else
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    char fallback[LUA_API_MSG_MAX], out[LUA_API_MSG_MAX];
    where(L, ctx, fallback, sizeof fallback);
    normalize(ctx, msg, fallback, out, sizeof out);
    lua_pushstring(L, out);
    return 1;
}

/* petrel.on(event, fn): appends fn to registry[LUA_API_HANDLERS][event]. */
static int api_on(lua_State *L)
{
    struct lua_api_ctx *ctx = lua_api_ctx(L);
    if (lua_type(L, 1) != LUA_TSTRING)
        return lua_api_error(L, "on: the event name must be a string");
    const char *event = lua_tostring(L, 1);
    int i;
    for (i = 0; lua_api_events[i]; i++)
        if (strcmp(lua_api_events[i], event) == 0)
            break;
    if (!lua_api_events[i])
        return lua_api_error(L, "on: unknown event '%s' (known: smtp_server_greeting, "
                             "smtp_message_received, http_message_received, "
                             "smtp_delivery_result, http_request)", event);
    if (lua_type(L, 2) != LUA_TFUNCTION)
        return lua_api_error(L, "on: the handler for '%s' must be a function", event);
    if (lua_gettop(L) > 2)
        return lua_api_error(L, "on: expects (event, function)");
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_API_HANDLERS);
    lua_getfield(L, -1, event);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    ctx->n_hooks++;
    return 0;
}

/* configure_* / start_* in worker mode: the config was validated at load. */
static int api_accept(lua_State *L)
{
    return 0;
}

/* An action: forwards to registry[LUA_API_ACTIONS][name] when the hooks engine
 * installed one; otherwise we are outside any hook. */
static int api_action(lua_State *L)
{
    struct lua_api_ctx *ctx = lua_api_ctx(L);
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    int nargs = lua_gettop(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_API_ACTIONS) == LUA_TTABLE &&
        lua_getfield(L, -1, name) == LUA_TFUNCTION) {
        lua_remove(L, -2);
        lua_insert(L, 1);
        lua_call(L, nargs, LUA_MULTRET);
        return lua_gettop(L);
    }
    lua_settop(L, nargs);
    if (strncmp(name, "log_", 4) != 0)
        return lua_api_error(L, "%s can only be called inside a hook", name);
    /* At worker start the config chunk runs again: config_load already printed. */
    if (ctx->mode == LUA_API_WORKER && ctx->running)
        return 0;
    char loc[LUA_API_MSG_MAX];
    where(L, ctx, loc, sizeof loc);
    const char *msg = luaL_tolstring(L, 1, NULL);
    fprintf(stderr, "%s%s: %s\n", loc, name + 4, msg);
    return 0;
}

struct open_args {
    enum lua_api_mode mode;
    const char *path;
    const luaL_Reg *fns;
    void *user;
};

/* Builds everything inside a protected call, so running out of memory is an
 * error return rather than a Lua panic. */
static int api_open_p(lua_State *L)
{
    const struct open_args *a = lua_touserdata(L, 1);
    size_t plen = strlen(a->path);
    struct lua_api_ctx *ctx = lua_newuserdatauv(L, sizeof *ctx + plen + 1, 0);
    memset(ctx, 0, sizeof *ctx);
    ctx->mode = a->mode;
    ctx->user = a->user;
    memcpy(ctx->path, a->path, plen + 1);
    int ictx = lua_gettop(L);
    lua_pushvalue(L, ictx);
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_API_CTX);

    /* How Lua itself names this chunk in messages (shortened when long). */
    const char *chunkname = lua_pushfstring(L, "@%s", a->path);
    if (luaL_loadbufferx(L, "", 0, chunkname, "t") == LUA_OK) {
        lua_Debug ar;
        lua_getinfo(L, ">S", &ar);
        snprintf(ctx->shortsrc, sizeof ctx->shortsrc, "%s", ar.short_src);
    }
    lua_settop(L, ictx);

    lua_newtable(L);
    for (int i = 0; lua_api_events[i]; i++) {
        lua_newtable(L);
        lua_setfield(L, -2, lua_api_events[i]);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_API_HANDLERS);

    lua_newtable(L);
    int api = lua_gettop(L);
    for (const luaL_Reg *f = a->fns; f && f->name; f++) {
        lua_pushvalue(L, ictx);
        lua_pushcclosure(L, a->mode == LUA_API_WORKER ? api_accept : f->func, 1);
        lua_setfield(L, api, f->name);
    }
    lua_pushvalue(L, ictx);
    lua_pushcclosure(L, api_on, 1);
    lua_setfield(L, api, "on");
    for (int i = 0; action_names[i]; i++) {
        lua_pushvalue(L, ictx);
        lua_pushstring(L, action_names[i]);
        lua_pushcclosure(L, api_action, 2);
        lua_setfield(L, api, action_names[i]);
    }
    for (int i = 0; global_actions[i]; i++) {
        lua_getfield(L, api, global_actions[i]);
        lua_setglobal(L, global_actions[i]);
    }
    lua_pushvalue(L, api);
    lua_setglobal(L, "petrel");
    lua_pushvalue(L, api);
    lua_setglobal(L, "kumo");
    lua_pushvalue(L, ictx);
    return 1;
}

struct lua_api_ctx *lua_api_open(lua_State *L, enum lua_api_mode mode, const char *path,
                                 const luaL_Reg *fns, void *user)
{
    struct open_args a = { mode, path, fns, user };
    lua_pushcfunction(L, api_open_p);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lua_pop(L, 1);
        return NULL;
    }
    struct lua_api_ctx *ctx = lua_touserdata(L, -1);
    lua_pop(L, 1);  /* still referenced from the registry */
    return ctx;
}

int lua_api_run(lua_State *L, struct lua_api_ctx *ctx, char *err, size_t errlen)
{
    char fallback[LUA_API_MSG_MAX];
    snprintf(fallback, sizeof fallback, "%s:0: ", ctx->path);
    FILE *f = fopen(ctx->path, "r");
    if (!f) {
        snprintf(err, errlen, "%scannot open config file: %s", fallback, strerror(errno));
        return PT_INVALID;
    }
    fclose(f);

    int top = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_API_CTX);
    lua_pushcclosure(L, api_msgh, 1);
    int status = luaL_loadfilex(L, ctx->path, "t");
    if (status == LUA_OK) {
        ctx->running = true;
        status = lua_pcall(L, 0, 0, top + 1);
        ctx->running = false;
    }
    int rc = PT_OK;
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (status == LUA_ERRMEM || !msg) {
            snprintf(err, errlen, "%sout of memory", fallback);
            rc = PT_NOMEM;
        } else {
            normalize(ctx, msg, fallback, err, errlen);
            rc = PT_INVALID;
        }
    }
    lua_settop(L, top);
    return rc;
}

int lua_api_handlers(lua_State *L, const char *event)
{
    int n = PT_NOTFOUND, top = lua_gettop(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_API_HANDLERS) == LUA_TTABLE &&
        lua_getfield(L, -1, event) == LUA_TTABLE)
        n = (int)lua_rawlen(L, -1);
    lua_settop(L, top);
    return n;
}
