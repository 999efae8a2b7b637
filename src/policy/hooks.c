/* The hooks engine; see hooks.h. Everything that touches Lua runs inside one
 * protected call per run, so an allocation failure or a handler's error comes
 * back as an error return, never as a panic.
 * SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "core/config.h"
#include "dkim/dkim_cache.h"
#include "obs/log.h"
#include "policy/hooks.h"
#include "policy/limits.h"
#include "policy/lua_api.h"
#include "queue/entry.h"
#include "util/headers.h"
#include "util/result.h"

#define HOOK_CURRENT "petrel.current"     /* registry: lightuserdata, the running fx */
#define HOOK_HDRMETA "petrel.hdrmeta"     /* registry: metatable of meta.headers */
#define HOOK_CFG "petrel.cfg"             /* registry: lightuserdata, the config */

void hook_effects_init(struct hook_effects *fx)
{
    buf_init(&fx->edits, 0);
    buf_init(&fx->dkim, 0);
    buf_init(&fx->limits, 0);
    buf_init(&fx->dkim_load, 0);
    fx->priority = -1;
    fx->route[0] = 0;
    fx->tenant[0] = 0;
    fx->tenant_set = false;
    fx->egress_pool[0] = 0;
}

void hook_effects_free(struct hook_effects *fx)
{
    buf_free(&fx->edits);
    buf_free(&fx->dkim);
    buf_free(&fx->limits);
    buf_free(&fx->dkim_load);
    hook_effects_init(fx);
}

int hook_effects_copy(struct hook_effects *dst, const struct hook_effects *src)
{
    buf_reset(&dst->edits);
    buf_reset(&dst->dkim);
    buf_reset(&dst->limits);
    buf_reset(&dst->dkim_load);
    dst->priority = src->priority;
    memcpy(dst->route, src->route, sizeof dst->route);
    memcpy(dst->tenant, src->tenant, sizeof dst->tenant);
    dst->tenant_set = src->tenant_set;
    memcpy(dst->egress_pool, src->egress_pool, sizeof dst->egress_pool);
    int rc = PT_OK;
    if (src->edits.len)
        rc = buf_append(&dst->edits, src->edits.data, src->edits.len);
    if (rc == PT_OK && src->dkim.len)
        rc = buf_append(&dst->dkim, src->dkim.data, src->dkim.len);
    if (rc == PT_OK && src->limits.len)
        rc = buf_append(&dst->limits, src->limits.data, src->limits.len);
    if (rc == PT_OK && src->dkim_load.len)
        rc = buf_append(&dst->dkim_load, src->dkim_load.data, src->dkim_load.len);
    return rc;
}

int hook_effects_apply(const struct hook_effects *fx, struct entry *e)
{
    int rc = PT_OK;
    if (fx->edits.len)
        rc = entry_set_hdr_edits(e, fx->edits.data);
    if (rc == PT_OK && fx->priority >= 0)
        e->priority = (uint8_t)fx->priority;
    if (rc == PT_OK && fx->route[0])
        rc = entry_set_route(e, fx->route);
    if (rc == PT_OK && fx->dkim.len)
        rc = entry_set_dkim_sign(e, fx->dkim.data);
    if (rc == PT_OK)
        rc = entry_set_ident(e, fx->tenant, entry_source(e));
    return rc;
}

/* "SOURCE:LINE: " of the Lua code that called the running action. */
static void caller_where(lua_State *L, char *out, size_t n)
{
    lua_Debug ar;
    out[0] = 0;
    for (int level = 1; lua_getstack(L, level, &ar); level++)
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(out, n, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
}

static int hook_error(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int hook_error(lua_State *L, const char *fmt, ...)
{
    char where[LUA_IDSIZE + 32];
    caller_where(L, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    const char *msg = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return luaL_error(L, "%s%s", where, msg);
}

static struct hook_effects *current(lua_State *L, const char *action)
{
    lua_getfield(L, LUA_REGISTRYINDEX, HOOK_CURRENT);
    struct hook_effects *fx = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!fx)
        hook_error(L, "%s can only be called inside a hook that handles a message "
                   "(smtp_server_greeting, smtp_message_received, http_message_received)",
                   action);
    return fx;
}

static int act_add_header(lua_State *L)
{
    struct hook_effects *fx = current(L, "add_header");
    const char *name = luaL_checkstring(L, 1), *value = luaL_checkstring(L, 2);
    int rc = hdr_edit_add(&fx->edits, name, value);
    if (rc == PT_INVALID)
        return hook_error(L, "add_header: '%s' is not a valid header name, or its value "
                          "holds a line break or is too long", name);
    if (rc != PT_OK || fx->edits.len > 65536)
        return hook_error(L, "add_header: too many header edits for one message");
    return 0;
}

static int act_remove_header(lua_State *L)
{
    struct hook_effects *fx = current(L, "remove_header");
    const char *name = luaL_checkstring(L, 1);
    int rc = hdr_edit_remove(&fx->edits, name);
    if (rc == PT_INVALID)
        return hook_error(L, "remove_header: '%s' is not a valid header name", name);
    if (rc != PT_OK || fx->edits.len > 65536)
        return hook_error(L, "remove_header: too many header edits for one message");
    return 0;
}

static const char *const prio_names[] = { "high", "normal", "bulk", NULL };

/* PRIO_HIGH, PRIO_NORMAL, PRIO_BULK for the name, or -1. */
static int prio_of(const char *p)
{
    for (int i = 0; prio_names[i]; i++)
        if (strcmp(p, prio_names[i]) == 0)
            return i;
    return -1;
}

static int act_set_queue_priority(lua_State *L)
{
    struct hook_effects *fx = current(L, "set_queue_priority");
    const char *p = luaL_checkstring(L, 1);
    if ((fx->priority = prio_of(p)) < 0)
        return hook_error(L, "set_queue_priority: '%s' is not one of high, normal, bulk", p);
    return 0;
}

/* A tenant or pool name: 1..127 printable ASCII bytes, no space. */
static bool name_ok(const char *n, size_t len)
{
    if (len == 0 || len >= HOOK_TENANT_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (n[i] <= ' ' || n[i] > '~')
            return false;
    return true;
}

/* set_tenant(name): meta.tenant of the message, whatever a handler left in meta. */
static int act_set_tenant(lua_State *L)
{
    struct hook_effects *fx = current(L, "set_tenant");
    size_t len;
    const char *t = luaL_checklstring(L, 1, &len);
    if (!name_ok(t, len))
        return hook_error(L, "set_tenant: '%s' is not a tenant name (1 to 127 printable "
                          "characters, no spaces)", t);
    memcpy(fx->tenant, t, len + 1);
    fx->tenant_set = true;
    return 0;
}

/* The config generation this Lua state was built from. */
static const struct config *hook_cfg(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, HOOK_CFG);
    const struct config *cfg = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return cfg;
}

/* set_egress_pool(name): the pool the message's egress source is chosen from. */
static int act_set_egress_pool(lua_State *L)
{
    struct hook_effects *fx = current(L, "set_egress_pool");
    const char *name = luaL_checkstring(L, 1);
    const struct config *cfg = hook_cfg(L);
    if (config_egress_pool_index(cfg, name) < 0)
        return hook_error(L, "set_egress_pool: no egress pool named '%s' (make_egress_pool)",
                          name);
    snprintf(fx->egress_pool, sizeof fx->egress_pool, "%s", name);
    return 0;
}

/* route_to(target, {priority=}): target is a configure_transport key or a relay
 * host "[host]:port"; the entry is delivered that way instead of by its domain. */
static int act_route_to(lua_State *L)
{
    struct hook_effects *fx = current(L, "route_to");
    const char *name = luaL_checkstring(L, 1);
    const struct config *cfg = hook_cfg(L);
    const struct cfg_route *r = config_route_named(cfg, name);
    struct cfg_route lit;
    if (r && r->kind == ROUTE_ERROR)
        return hook_error(L, "route_to: '%s' is an error route; it cannot carry mail", name);
    if (!r && (strlen(name) >= sizeof fx->route || config_parse_route_literal(name, &lit) != PT_OK))
        return hook_error(L, "route_to: '%s' is neither a configure_transport key nor a relay "
                          "host such as \"[smtp.example.com]:587\"", name);
    int prio = fx->priority;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (strcmp(k, "priority") != 0)
                return hook_error(L, "route_to: unknown option '%s' (known: priority)", k);
            const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
            if ((prio = prio_of(v)) < 0)
                return hook_error(L, "route_to: priority '%s' is not one of high, normal, bulk", v);
            lua_pop(L, 1);
        }
    }
    fx->priority = prio;
    snprintf(fx->route, sizeof fx->route, "%s", name);
    return 0;
}

/* sign_dkim(domain, selector, key_file): the message is signed with that key at
 * delivery. A key already in the cache (and not due for its file check) is used as
 * is; any other is only noted in fx->dkim_load: the caller loads it off the event
 * loop (hooks_load_dkim_keys) before accepting the message, so a missing or bad key
 * still refuses the message (451) instead of sending it unsigned later. */
static int act_sign_dkim(lua_State *L)
{
    struct hook_effects *fx = current(L, "sign_dkim");
    const char *d = luaL_checkstring(L, 1), *sel = luaL_checkstring(L, 2);
    const char *file = luaL_checkstring(L, 3);
    if (strpbrk(d, "\t\n") || strpbrk(sel, "\t\n") || strpbrk(file, "\t\n"))
        return hook_error(L, "sign_dkim: arguments must not hold tabs or line breaks");
    if (!*file)
        return hook_error(L, "sign_dkim(%s, %s): key_file: missing", d, sel);
    if (buf_appendf(&fx->dkim, "%s\t%s\t%s\n", d, sel, file) != PT_OK || fx->dkim.len > 65536)
        return hook_error(L, "sign_dkim: too many signing requests for one message");
    bool due = false;
    if (!dkim_key_cache_peek(d, sel, file, &due) || due) {
        char where[LUA_IDSIZE + 32];
        caller_where(L, where, sizeof where);
        for (char *p = where; *p; p++)   /* the line format's separators */
            if (*p == '\t' || *p == '\n')
                *p = ' ';
        if (buf_appendf(&fx->dkim_load, "%s\t%s\t%s\t%s\n", where, d, sel, file) != PT_OK ||
            fx->dkim_load.len > 2 * 65536)
            return hook_error(L, "sign_dkim: too many signing requests for one message");
    }
    return 0;
}

int hooks_load_dkim_keys(const char *lines, char *err, size_t errlen)
{
    const char *p = lines ? lines : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[4096];
        if (len >= sizeof line) {
            snprintf(err, errlen, "sign_dkim: request too long");
            return PT_INVALID;
        }
        memcpy(line, p, len);
        line[len] = 0;
        p += len + (nl ? 1 : 0);
        char *where = line, *d = strchr(where, '\t');
        char *sel = d ? strchr(++d, '\t') : NULL;
        char *file = sel ? strchr(++sel, '\t') : NULL;
        if (!file) {
            snprintf(err, errlen, "sign_dkim: malformed load request");
            return PT_INVALID;
        }
        d[-1] = sel[-1] = 0;
        *file++ = 0;
        char why[256];
        if (!dkim_key_cache_get(d, sel, file, why, sizeof why)) {
            snprintf(err, errlen, "%ssign_dkim(%s, %s): %s", where, d, sel, why);
            return PT_INVALID;
        }
    }
    return PT_OK;
}

/* limit_sending(key, n, {per = "second" | "minute" | "hour"}): at most n messages
 * per period under key, counted across the whole process when the message is
 * accepted (policy/limits.h). per defaults to "second". */
static int act_limit_sending(lua_State *L)
{
    struct hook_effects *fx = current(L, "limit_sending");
    const char *key = luaL_checkstring(L, 1);
    lua_Number n = luaL_checknumber(L, 2);
    double period = 1;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            if (strcmp(k, "per") != 0)
                return hook_error(L, "limit_sending: unknown option '%s' (known: per)", k);
            const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
            if (strcmp(v, "second") == 0)
                period = 1;
            else if (strcmp(v, "minute") == 0)
                period = 60;
            else if (strcmp(v, "hour") == 0)
                period = 3600;
            else
                return hook_error(L, "limit_sending: per '%s' is not one of second, minute, hour",
                                  v);
            lua_pop(L, 1);
        }
    }
    if (!(n >= 1) || n > 1e9)
        return hook_error(L, "limit_sending: the limit must be a number from 1 to 1e9 (got %s)",
                          luaL_tolstring(L, 2, NULL));
    int rc = limits_record(&fx->limits, key, (double)n, period);
    if (rc == PT_INVALID)
        return hook_error(L, "limit_sending: key '%s' must be 1 to %d bytes without tabs or "
                          "line breaks", key, LIMITS_KEY_MAX);
    if (rc != PT_OK || fx->limits.len > 65536)
        return hook_error(L, "limit_sending: too many limits for one message");
    return 0;
}

static int act_log(lua_State *L)
{
    enum log_level lvl = (enum log_level)lua_tointeger(L, lua_upvalueindex(1));
    char where[LUA_IDSIZE + 32];
    caller_where(L, where, sizeof where);
    log_diag(lvl, "%s%s", where, luaL_tolstring(L, 1, NULL));
    return 0;
}

static int act_unsupported(lua_State *L)
{
    return hook_error(L, "%s is not supported by this build of petrel",
                      lua_tostring(L, lua_upvalueindex(1)));
}

/* meta.headers["subject"] finds "Subject": names are case-insensitive. */
static int headers_index(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING)
        return 0;
    const char *want = lua_tostring(L, 2);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) == LUA_TSTRING && strcasecmp(lua_tostring(L, -2), want) == 0)
            return 1;
        lua_pop(L, 1);
    }
    return 0;
}

static int install_p(lua_State *L)
{
    static const luaL_Reg acts[] = {
        { "add_header", act_add_header },
        { "remove_header", act_remove_header },
        { "set_queue_priority", act_set_queue_priority },
        { "route_to", act_route_to },
        { "sign_dkim", act_sign_dkim },
        { "limit_sending", act_limit_sending },
        { "set_tenant", act_set_tenant },
        { "set_egress_pool", act_set_egress_pool },
        { NULL, NULL },
    };
    static const char *const unsupported[] = {
        "adjust_domain_rate", NULL,
    };
    static const struct { const char *name; enum log_level lvl; } logs[] = {
        { "log_info", LOG_L_INFO }, { "log_warn", LOG_L_WARN }, { "log_error", LOG_L_ERROR },
    };
    lua_newtable(L);
    luaL_setfuncs(L, acts, 0);
    for (int i = 0; unsupported[i]; i++) {
        lua_pushstring(L, unsupported[i]);
        lua_pushcclosure(L, act_unsupported, 1);
        lua_setfield(L, -2, unsupported[i]);
    }
    for (size_t i = 0; i < sizeof logs / sizeof logs[0]; i++) {
        lua_pushinteger(L, logs[i].lvl);
        lua_pushcclosure(L, act_log, 1);
        lua_setfield(L, -2, logs[i].name);
    }
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_API_ACTIONS);
    lua_newtable(L);
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, -2, "__index");
    lua_setfield(L, LUA_REGISTRYINDEX, HOOK_HDRMETA);
    return 0;
}

int hooks_install(lua_State *L, const struct config *cfg)
{
    lua_pushcfunction(L, install_p);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        return PT_NOMEM;
    }
    lua_pushlightuserdata(L, (void *)cfg);
    lua_setfield(L, LUA_REGISTRYINDEX, HOOK_CFG);
    return PT_OK;
}

bool hooks_any(lua_State *L, const char *event)
{
    return lua_api_handlers(L, event) > 0;
}

static void set_str(lua_State *L, const char *key, const char *v)
{
    if (!v)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

/* meta.headers: the first field of each name (case-insensitive), unfolded, under
 * the name as it was written. */
static void push_headers(lua_State *L, const char *msg, size_t len)
{
    lua_newtable(L);
    lua_newtable(L);                 /* seen: lowercased name -> true */
    struct buf v;
    buf_init(&v, 0);
    struct hdr_field f;
    size_t pos = 0;
    while (hdr_next(msg, len, &pos, &f)) {
        buf_reset(&v);
        int rc = buf_append(&v, f.name, f.name_len);
        for (size_t i = 0; rc == PT_OK && i < v.len; i++)
            v.data[i] = (char)tolower((unsigned char)v.data[i]);
        if (rc == PT_OK && lua_getfield(L, -1, v.data) != LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        lua_pop(L, 1);
        if (rc == PT_OK) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, v.data);
            buf_reset(&v);
            rc = hdr_unfold(f.value, f.value_len, &v);
        }
        if (rc != PT_OK) {
            buf_free(&v);
            luaL_error(L, "out of memory");
        }
        lua_pushlstring(L, f.name, f.name_len);
        lua_pushlstring(L, v.data ? v.data : "", v.len);
        lua_rawset(L, -4);
    }
    buf_free(&v);
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, HOOK_HDRMETA);
    lua_setmetatable(L, -2);
}

/* Message handler of the protected runs: an error raised from C without a
 * position (coroutine.yield outside a coroutine, a C library function) gets the
 * "FILE:LINE: " of the innermost Lua code, so every hook failure names its line. */
static int add_where(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        return 1;
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
            continue;
        size_t n = strlen(ar.short_src);
        if (strncmp(msg, ar.short_src, n) != 0 || msg[n] != ':')
            lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
        return 1;
    }
    return 1;
}

/* Raises "FILE:LINE: EVENT handler returned a TYPE (expected WHAT)", naming where
 * the i-th handler of the sequence at index handlers was defined. */
static int handler_returned(lua_State *L, int handlers, lua_Integer i, const char *what)
{
    const char *type = luaL_typename(L, -1);
    lua_rawgeti(L, handlers, i);
    lua_Debug ar;
    const char *src = "?";
    int line = 0;
    if (lua_getinfo(L, ">S", &ar)) {
        src = ar.short_src;
        line = ar.linedefined;
    }
    return luaL_error(L, "%s:%d: the handler defined here returned a %s (expected %s)", src,
                      line, type, what);
}

struct run_args {
    const char *event, *arg1;
    const struct hook_meta *m;
    struct hook_effects *fx;
};

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    /* Once over budget, every further instruction fails too, so a handler that
     * catches the error with pcall cannot go on looping. */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    char where[LUA_IDSIZE + 32] = "";
    lua_Debug cur;
    if (lua_getstack(L, 0, &cur) && lua_getinfo(L, "Sl", &cur) && cur.currentline > 0)
        snprintf(where, sizeof where, "%s:%d: ", cur.short_src, cur.currentline);
    lua_pushfstring(L, "%shook exceeded its budget of %d Lua instructions", where, HOOK_BUDGET);
    lua_error(L);
}

static int run_p(lua_State *L)
{
    const struct run_args *a = lua_touserdata(L, 1);
    const struct hook_meta *m = a->m;
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_API_HANDLERS);
    lua_getfield(L, -1, a->event);
    int handlers = lua_gettop(L);
    lua_newtable(L);
    int meta = lua_gettop(L);
    set_str(L, "client_ip", m->client_ip);
    set_str(L, "listener", m->listener);
    set_str(L, "tenant", m->tenant && *m->tenant ? m->tenant : NULL);
    set_str(L, "auth_user", m->auth_user && *m->auth_user ? m->auth_user : NULL);
    set_str(L, "id", m->id);
    set_str(L, "sender", m->sender);
    if (m->rcpts) {
        lua_createtable(L, (int)m->nrcpt, 0);
        for (size_t i = 0; i < m->nrcpt; i++) {
            lua_pushstring(L, m->rcpts[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, meta, "recipients");
    }
    if (m->content) {
        push_headers(L, m->content, m->content_len);
        lua_setfield(L, meta, "headers");
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, handlers);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, handlers, i);
        if (a->arg1)
            lua_pushstring(L, a->arg1);
        else
            lua_pushnil(L);
        lua_pushvalue(L, meta);
        lua_call(L, 2, 1);
        if (!lua_isnil(L, -1))
            return handler_returned(L, handlers, i, "nothing");
        lua_pop(L, 1);
    }
    if (a->fx->tenant_set)
        return 0;
    a->fx->tenant[0] = 0;
    if (lua_getfield(L, meta, "tenant") == LUA_TSTRING)
        snprintf(a->fx->tenant, sizeof a->fx->tenant, "%s", lua_tostring(L, -1));
    return 0;
}

int hooks_run(lua_State *L, const char *event, const char *arg1, const struct hook_meta *m,
              struct hook_effects *fx, char *err, size_t errlen)
{
    struct run_args a = { event, arg1, m, fx };
    lua_pushlightuserdata(L, fx);
    lua_setfield(L, LUA_REGISTRYINDEX, HOOK_CURRENT);
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_BUDGET);
    lua_pushcfunction(L, add_where);
    lua_pushcfunction(L, run_p);
    lua_pushlightuserdata(L, &a);
    int status = lua_pcall(L, 1, 0, -3);
    lua_sethook(L, NULL, 0, 0);
    lua_remove(L, status == LUA_OK ? -1 : -2);   /* the message handler */
    int rc = PT_OK;
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
        rc = PT_ERROR;
    }
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, HOOK_CURRENT);
    return rc;
}

struct request_args {
    const char *method, *path, *ip;
    const struct hook_kv *headers;
    size_t nheaders;
    int *status;
    struct buf *body;
};

static int request_p(lua_State *L)
{
    const struct request_args *a = lua_touserdata(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_API_HANDLERS);
    lua_getfield(L, -1, "http_request");
    int handlers = lua_gettop(L);
    lua_createtable(L, 0, 4);
    int req = lua_gettop(L);
    set_str(L, "method", a->method);
    set_str(L, "path", a->path);
    set_str(L, "client_ip", a->ip);
    lua_createtable(L, 0, (int)a->nheaders);
    for (size_t i = 0; i < a->nheaders; i++) {
        lua_pushstring(L, a->headers[i].name);
        if (lua_rawget(L, -2) != LUA_TNIL) {   /* first of a repeated name wins */
            lua_pop(L, 1);
            continue;
        }
        lua_pop(L, 1);
        lua_pushstring(L, a->headers[i].name);
        lua_pushstring(L, a->headers[i].value ? a->headers[i].value : "");
        lua_rawset(L, -3);
    }
    lua_getfield(L, LUA_REGISTRYINDEX, HOOK_HDRMETA);
    lua_setmetatable(L, -2);
    lua_setfield(L, req, "headers");
    lua_Integer n = (lua_Integer)lua_rawlen(L, handlers);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, handlers, i);
        lua_pushvalue(L, req);
        lua_call(L, 1, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (!lua_istable(L, -1))
            return handler_returned(L, handlers, i, "nil or a table {status=, body=}");
        int t = lua_gettop(L);
        lua_getfield(L, t, "status");
        lua_Integer st = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
        if (st < 100 || st > 599) {
            lua_rawgeti(L, handlers, i);
            lua_Debug ar;
            lua_getinfo(L, ">S", &ar);
            return luaL_error(L, "%s:%d: the handler defined here returned status %s (expected "
                              "an integer from 100 to 599)", ar.short_src, ar.linedefined,
                              luaL_tolstring(L, -1, NULL));
        }
        int bt = lua_getfield(L, t, "body");
        if (bt != LUA_TNIL && bt != LUA_TSTRING && bt != LUA_TNUMBER) {
            lua_rawgeti(L, handlers, i);
            lua_Debug ar;
            lua_getinfo(L, ">S", &ar);
            return luaL_error(L, "%s:%d: the handler defined here returned a body of type %s "
                              "(expected a string)", ar.short_src, ar.linedefined,
                              lua_typename(L, bt));
        }
        size_t blen = 0;
        const char *b = bt == LUA_TNIL ? "" : lua_tolstring(L, -1, &blen);
        if (buf_append(a->body, b, blen) != PT_OK)
            return luaL_error(L, "out of memory");
        *a->status = (int)st;
        return 0;
    }
    return 0;
}

int hooks_run_request(lua_State *L, const char *method, const char *path, const char *client_ip,
                      const struct hook_kv *headers, size_t nheaders, int *status,
                      struct buf *body, char *err, size_t errlen)
{
    *status = 0;
    struct request_args a = { method, path, client_ip, headers, nheaders, status, body };
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, HOOK_CURRENT);   /* no message: no actions */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_BUDGET);
    lua_pushcfunction(L, add_where);
    lua_pushcfunction(L, request_p);
    lua_pushlightuserdata(L, &a);
    int st = lua_pcall(L, 1, 0, -3);
    lua_sethook(L, NULL, 0, 0);
    lua_remove(L, st == LUA_OK ? -1 : -2);   /* the message handler */
    if (st == LUA_OK)
        return PT_OK;
    const char *msg = lua_tostring(L, -1);
    snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
    *status = 0;
    return PT_ERROR;
}

void hooks_default_tenant(const char *listener_tenant, const char *content, size_t len,
                          const char *auth_user, char out[HOOK_TENANT_MAX])
{
    out[0] = 0;
    if (listener_tenant && *listener_tenant) {
        snprintf(out, HOOK_TENANT_MAX, "%s", listener_tenant);
        return;
    }
    struct hdr_field f;
    size_t pos = 0;
    while (content && hdr_next(content, len, &pos, &f)) {
        if (f.name_len == 8 && strncasecmp(f.name, "X-Tenant", 8) == 0) {
            struct buf v;
            buf_init(&v, HOOK_TENANT_MAX);
            if (hdr_unfold(f.value, f.value_len, &v) == PT_OK && v.len) {
                snprintf(out, HOOK_TENANT_MAX, "%s", v.data);
                buf_free(&v);
                return;
            }
            buf_free(&v);
            break;
        }
    }
    if (auth_user)
        snprintf(out, HOOK_TENANT_MAX, "%s", auth_user);
}
