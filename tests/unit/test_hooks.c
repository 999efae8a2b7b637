/* Unit tests of the header helpers (util/headers.c) and the hooks engine
 * (policy/hooks.c) on a real worker Lua state built from a temp config file.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lua.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "core/config.h"
#include "policy/hooks.h"
#include "queue/entry.h"
#include "util/headers.h"
#include "util/result.h"

/* ---- headers ---------------------------------------------------------------- */

static const char MSG[] =
    "Received: from a\r\n\tby b; Mon, 1 Jan 2024\r\n"
    "Subject: hello\r\n world\r\n"
    "X-Secret: 42\r\n"
    "x-secret: 43\r\n"
    "From: <a@b.test>\r\n"
    "\r\n"
    "Subject: this is the body\r\n";

static void test_hdr_next_walks_fields(void **state)
{
    struct hdr_field f;
    size_t pos = 0;
    const char *names[] = { "Received", "Subject", "X-Secret", "x-secret", "From" };
    for (int i = 0; i < 5; i++) {
        assert_true(hdr_next(MSG, strlen(MSG), &pos, &f));
        assert_int_equal(f.name_len, strlen(names[i]));
        assert_memory_equal(f.name, names[i], f.name_len);
    }
    assert_false(hdr_next(MSG, strlen(MSG), &pos, &f));
    assert_string_equal(MSG + pos, "\r\nSubject: this is the body\r\n");

    /* folded value unfolds and trims */
    pos = 0;
    hdr_next(MSG, strlen(MSG), &pos, &f);
    hdr_next(MSG, strlen(MSG), &pos, &f);
    struct buf v;
    buf_init(&v, 0);
    assert_int_equal(hdr_unfold(f.value, f.value_len, &v), PT_OK);
    assert_string_equal(v.data, "hello world");
    buf_free(&v);

    /* bare LF, no body, a value without a line end, a non-field line */
    const char *lf = "A: 1\nB:2";
    pos = 0;
    assert_true(hdr_next(lf, strlen(lf), &pos, &f));
    assert_true(hdr_next(lf, strlen(lf), &pos, &f));
    assert_int_equal(f.value_len, 1);
    assert_false(hdr_next(lf, strlen(lf), &pos, &f));
    pos = 0;
    assert_false(hdr_next("no colon here\r\n", 15, &pos, &f));
    assert_false(hdr_next(" A: continuation first\r\n", 24, &pos, &f));
    assert_false(hdr_next(": empty name\r\n", 14, &pos, &f));
}

static void apply(const char *edits, struct buf *out)
{
    buf_reset(out);
    assert_int_equal(hdr_apply(MSG, strlen(MSG), edits, strlen(edits), out), PT_OK);
}

static void test_hdr_edits(void **state)
{
    struct buf e, out;
    buf_init(&e, 0);
    buf_init(&out, 0);
    assert_int_equal(hdr_edit_add(&e, "X-One", "1"), PT_OK);
    assert_int_equal(hdr_edit_remove(&e, "X-SECRET"), PT_OK);
    assert_int_equal(hdr_edit_add(&e, "X-Two", "2 \xc3\xa9"), PT_OK);
    assert_string_equal(e.data, "+X-One: 1\n-X-SECRET\n+X-Two: 2 \xc3\xa9\n");
    apply(e.data, &out);
    assert_string_equal(out.data,
        "X-One: 1\r\nX-Two: 2 \xc3\xa9\r\n"
        "Received: from a\r\n\tby b; Mon, 1 Jan 2024\r\n"
        "Subject: hello\r\n world\r\n"
        "From: <a@b.test>\r\n"
        "\r\n"
        "Subject: this is the body\r\n");

    /* a removal drops fields added before it, not after; the body is never touched */
    apply("+Subject: new\n-subject\n+Subject: newer\n", &out);
    assert_non_null(strstr(out.data, "Subject: newer\r\n"));
    assert_null(strstr(out.data, "Subject: new\r\n"));
    assert_null(strstr(out.data, "hello"));
    assert_non_null(strstr(out.data, "\r\n\r\nSubject: this is the body\r\n"));

    /* no edits = the message unchanged; malformed edit lines are ignored */
    apply("", &out);
    assert_string_equal(out.data, MSG);
    apply("garbage\n+NoColon\n-Bad Name\n+X-Ok: y", &out);
    assert_memory_equal(out.data, "X-Ok: y\r\nReceived", 17);
    assert_string_equal(out.data + 9, MSG);

    /* header injection and bad names are refused */
    buf_reset(&e);
    assert_int_equal(hdr_edit_add(&e, "X-A", "v\r\nBcc: x@evil.test"), PT_INVALID);
    assert_int_equal(hdr_edit_add(&e, "X-A", "v\nB: c"), PT_INVALID);
    assert_int_equal(hdr_edit_add(&e, "X A", "v"), PT_INVALID);
    assert_int_equal(hdr_edit_add(&e, "X:A", "v"), PT_INVALID);
    assert_int_equal(hdr_edit_add(&e, "", "v"), PT_INVALID);
    assert_int_equal(hdr_edit_remove(&e, "\xc3\xa9"), PT_INVALID);
    char big[1200];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(hdr_edit_add(&e, "X-A", big), PT_INVALID);
    assert_int_equal(e.len, 0);
    buf_free(&e);
    buf_free(&out);
}

/* ---- hooks ------------------------------------------------------------------ */

struct world {
    struct config *cfg;
    lua_State *L;
};

static struct world load(const char *hooks)
{
    char path[64], err[1024] = "";
    snprintf(path, sizeof path, "/tmp/petrel_test_hooks_XXXXXX.lua");
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    char text[4096];
    snprintf(text, sizeof text, "petrel.start_smtp_listener { listen = '127.0.0.1:2525' }\n%s\n",
             hooks);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct world w = { config_load(path, err, sizeof err), NULL };
    if (!w.cfg)
        fail_msg("config: %s", err);
    w.L = config_lua_worker(w.cfg, err, sizeof err);
    unlink(path);
    assert_non_null(w.L);
    assert_int_equal(hooks_install(w.L, w.cfg), PT_OK);
    return w;
}

static void unload(struct world *w)
{
    lua_close(w->L);
    config_free(w->cfg);
}

static const struct hook_meta META = {
    .client_ip = "192.0.2.7", .listener = "in", .tenant = "acme", .auth_user = "carol",
    .id = "0123456789abcdef", .sender = "s@x.test",
    .rcpts = (const char *const[]){ "a@d.test", "b@d.test" }, .nrcpt = 2,
    .content = MSG, .content_len = sizeof MSG - 1,
};

static void test_message_hook_sees_meta_and_acts(void **state)
{
    struct world w = load(
        "petrel.on('smtp_message_received', function(domain, meta)\n"
        "  petrel.add_header('X-Seen', table.concat({domain, meta.client_ip, meta.listener,\n"
        "    meta.tenant, meta.auth_user, meta.id, meta.sender, #meta.recipients,\n"
        "    meta.recipients[2], meta.headers.Subject, meta.headers['x-SECRET']}, '|'))\n"
        "  kumo.remove_header('X-Secret')\n"
        "  petrel.set_queue_priority('bulk')\n"
        "  meta.tenant = 'other'\n"
        "end)\n"
        "petrel.on('smtp_message_received', function(domain, meta)\n"
        "  petrel.add_header('X-Second', meta.tenant)\n"   /* meta is shared, in order */
        "end)\n");
    assert_true(hooks_any(w.L, "smtp_message_received"));
    assert_false(hooks_any(w.L, "smtp_server_greeting"));
    struct hook_effects fx;
    hook_effects_init(&fx);
    char err[256] = "";
    assert_int_equal(hooks_run(w.L, "smtp_message_received", "d.test", &META, &fx, err, sizeof err),
                     PT_OK);
    assert_string_equal(fx.edits.data,
        "+X-Seen: d.test|192.0.2.7|in|acme|carol|0123456789abcdef|s@x.test|2|b@d.test|hello world|42\n"
        "-X-Secret\n+X-Second: other\n");
    assert_int_equal(fx.priority, PRIO_BULK);
    assert_string_equal(fx.tenant, "other");

    /* effects accumulate over runs and copy */
    struct hook_effects fx2;
    hook_effects_init(&fx2);
    assert_int_equal(hook_effects_copy(&fx2, &fx), PT_OK);
    assert_string_equal(fx2.edits.data, fx.edits.data);
    hook_effects_free(&fx2);
    hook_effects_free(&fx);
    assert_int_equal(fx.priority, -1);
    unload(&w);
}

/* Runs w's smtp_message_received handlers for domain into fx (initialized here; the
 * caller frees it). With want_err the run must fail with an error containing it,
 * else it must succeed. */
static void run_message(struct world *w, const char *domain, const char *want_err,
                        struct hook_effects *fx)
{
    hook_effects_init(fx);
    char err[512] = "";
    int rc = hooks_run(w->L, "smtp_message_received", domain, &META, fx, err, sizeof err);
    /* sign_dkim keys not cached yet: loaded after the run, as the servers do */
    if (rc == PT_OK && fx->dkim_load.len &&
        hooks_load_dkim_keys(fx->dkim_load.data, err, sizeof err) != PT_OK)
        rc = PT_ERROR;
    if (!want_err) {
        if (rc != PT_OK)
            fail_msg("%s: unexpected error '%s'", domain, err);
        return;
    }
    assert_int_equal(rc, PT_ERROR);
    if (!strstr(err, want_err))
        fail_msg("%s: error '%s' lacks '%s'", domain, err, want_err);
}

static void test_hook_errors(void **state)
{
    struct world w = load(
        "petrel.on('smtp_message_received', function(domain, meta)\n"
        "  if domain == 'raise.test' then error('no thanks') end\n"
        "  if domain == 'inject.test' then petrel.add_header('X-A', 'v\\r\\nBcc: e@evil.test') end\n"
        "  if domain == 'prio.test' then petrel.set_queue_priority('urgent') end\n"
        "  if domain == 'dkim.test' then petrel.sign_dkim('d', 's', 'k') end\n"
        "  if domain == 'route.test' then petrel.route_to('no-such-route') end\n"
        "  if domain == 'loop.test' then while true do pcall(function() end) end end\n"
        "  petrel.add_header('X-Ok', 'yes')\n"
        "end)\n");
    struct { const char *domain, *want; } cases[] = {
        { "raise.test", ":3: no thanks" },
        { "inject.test", ":4: add_header: 'X-A' is not a valid header name, or its value holds a line break" },
        { "prio.test", ":5: set_queue_priority: 'urgent' is not one of high, normal, bulk" },
        { "dkim.test", ":6: sign_dkim(d, s): key_file k: No such file" },
        { "loop.test", "hook exceeded its budget" },
        { "route.test", "route_to: 'no-such-route' is neither a configure_transport key nor a relay host" },
    };
    struct hook_effects fx;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_message(&w, cases[i].domain, cases[i].want, &fx);
        hook_effects_free(&fx);
    }
    /* the state is still usable after the errors, and actions outside a hook fail */
    run_message(&w, "fine.test", NULL, &fx);
    assert_string_equal(fx.edits.data, "+X-Ok: yes\n");
    hook_effects_free(&fx);
    assert_int_equal(lua_gettop(w.L), 0);
    lua_getglobal(w.L, "petrel");
    lua_getfield(w.L, -1, "add_header");
    lua_pushstring(w.L, "X-A");
    lua_pushstring(w.L, "b");
    assert_int_not_equal(lua_pcall(w.L, 2, 0, 0), LUA_OK);
    assert_non_null(strstr(lua_tostring(w.L, -1), "can only be called inside a hook"));
    lua_settop(w.L, 0);
    unload(&w);
}

static void test_route_to(void **state)
{
    struct world w = load(
        "petrel.configure_transport { ['relay-cluster'] = { relayhost = '[10.0.0.1]:2525' },\n"
        "  ['blocked.example'] = 'error:550 5.1.1 no' }\n"
        "petrel.on('smtp_message_received', function(domain, meta)\n"
        "  if domain == 'a.test' then petrel.route_to('relay-cluster', { priority = 'high' }) end\n"
        "  if domain == 'b.test' then petrel.route_to('[192.0.2.1]:587') end\n"
        "  if domain == 'c.test' then petrel.route_to('blocked.example') end\n"
        "  if domain == 'd.test' then petrel.route_to('relay-cluster', { speed = 1 }) end\n"
        "end)\n");
    struct { const char *domain, *route, *err; int prio; } cases[] = {
        { "a.test", "relay-cluster", NULL, PRIO_HIGH },
        { "b.test", "[192.0.2.1]:587", NULL, -1 },
        { "c.test", NULL, "'blocked.example' is an error route", -1 },
        { "d.test", NULL, "route_to: unknown option 'speed'", -1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct hook_effects fx;
        run_message(&w, cases[i].domain, cases[i].err, &fx);
        if (!cases[i].err) {
            assert_string_equal(fx.route, cases[i].route);
            assert_int_equal(fx.priority, cases[i].prio);
        }
        hook_effects_free(&fx);
    }
    unload(&w);

    struct cfg_route r;
    assert_int_equal(config_parse_route_literal("[mx.example.com]:587", &r), PT_OK);
    assert_string_equal(r.relay_host, "mx.example.com");
    assert_int_equal(r.relay_port, 587);
    assert_true(r.relay_no_mx);
    assert_int_equal(config_parse_route_literal("relay.example.com:25", &r), PT_OK);
    assert_false(r.relay_no_mx);
    assert_int_equal(config_parse_route_literal("relay-cluster", &r), PT_INVALID);
    assert_int_equal(config_parse_route_literal("[]:25", &r), PT_INVALID);
    assert_int_equal(config_parse_route_literal("[x]:0", &r), PT_INVALID);
}

static void test_greeting_hook_and_tenant_rule(void **state)
{
    struct world w = load(
        "petrel.on('smtp_server_greeting', function(domain, meta)\n"
        "  petrel.add_header('X-Helo', domain .. ' ' .. meta.client_ip .. ' ' .. tostring(meta.tenant))\n"
        "end)\n");
    struct hook_meta m = { .client_ip = "::1", .listener = "in" };
    struct hook_effects fx;
    hook_effects_init(&fx);
    char err[256] = "";
    assert_int_equal(hooks_run(w.L, "smtp_server_greeting", "client.test", &m, &fx, err,
                               sizeof err), PT_OK);
    assert_string_equal(fx.edits.data, "+X-Helo: client.test ::1 nil\n");
    assert_string_equal(fx.tenant, "");
    hook_effects_free(&fx);
    unload(&w);

    char t[HOOK_TENANT_MAX];
    const char *with = "From: a\r\nX-Tenant:  blue \r\n\r\nX-Tenant: body\r\n";
    hooks_default_tenant("listener", with, strlen(with), "carol", t);
    assert_string_equal(t, "listener");
    hooks_default_tenant(NULL, with, strlen(with), "carol", t);
    assert_string_equal(t, "blue");
    const char *without = "From: a\r\n\r\nX-Tenant: body\r\n";
    hooks_default_tenant("", without, strlen(without), "carol", t);
    assert_string_equal(t, "carol");
    hooks_default_tenant(NULL, without, strlen(without), NULL, t);
    assert_string_equal(t, "");
}

/* An Ed25519 private key in PEM at a fresh temp path (written by OpenSSL). */
static void write_key(char path[64])
{
    snprintf(path, 64, "/tmp/petrel_test_key_XXXXXX.pem");
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    close(fd);
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(k);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    EVP_PKEY_free(k);
}

static void test_sign_dkim_and_limit_sending_record(void **state)
{
    char key[64], hooks[1024];
    write_key(key);
    snprintf(hooks, sizeof hooks,
             "petrel.on('smtp_message_received', function(domain, meta)\n"
             "  kumo.sign_dkim('example.com', 'mail', '%s')\n"
             "  kumo.limit_sending(meta.tenant, 100, { per = 'minute' })\n"
             "  petrel.limit_sending('global', 5)\n"
             "  if domain == 'nokey.test' then kumo.sign_dkim('example.com', 'm', '%s.gone') end\n"
             "  if domain == 'per.test' then kumo.limit_sending('k', 1, { per = 'day' }) end\n"
             "  if domain == 'zero.test' then kumo.limit_sending('k', 0) end\n"
             "  if domain == 'ret.test' then return 42 end\n"
             "end)\n", key, key);
    struct world w = load(hooks);
    struct hook_effects fx;
    run_message(&w, "d.test", NULL, &fx);
    char want[256];
    snprintf(want, sizeof want, "example.com\tmail\t%s\n", key);
    assert_string_equal(fx.dkim.data, want);
    /* the first use asked for the key to be loaded (never by sign_dkim itself) */
    if (!strstr(fx.dkim_load.data, ".lua:3: \texample.com\tmail\t"))
        fail_msg("dkim_load: %s", fx.dkim_load.data);
    hook_effects_free(&fx);
    run_message(&w, "d.test", NULL, &fx);   /* cached now: nothing to load */
    assert_string_equal(fx.dkim.data, want);
    assert_int_equal(fx.dkim_load.len, 0);
    assert_string_equal(fx.limits.data, "60\t100\tacme\n1\t5\tglobal\n");
    /* the requests reach the entry, and copies keep them */
    struct entry *e = entry_new(NULL, "d.test", "s@x.test", (const char *const[]){ "a@d.test" }, 1);
    assert_int_equal(hook_effects_apply(&fx, e), PT_OK);
    assert_string_equal(e->dkim_sign, want);
    entry_free(e);
    struct hook_effects fx2;
    hook_effects_init(&fx2);
    assert_int_equal(hook_effects_copy(&fx2, &fx), PT_OK);
    assert_string_equal(fx2.limits.data, fx.limits.data);
    assert_string_equal(fx2.dkim.data, fx.dkim.data);
    hook_effects_free(&fx2);
    hook_effects_free(&fx);
    run_message(&w, "nokey.test", ":6: sign_dkim(example.com, m): key_file ", &fx);
    hook_effects_free(&fx);
    run_message(&w, "per.test", ":7: limit_sending: per 'day' is not one of second, minute, hour",
                &fx);
    hook_effects_free(&fx);
    run_message(&w, "zero.test", ":8: limit_sending: the limit must be a number from 1", &fx);
    hook_effects_free(&fx);
    run_message(&w, "ret.test", ":2: the handler defined here returned a number (expected nothing)",
                &fx);
    hook_effects_free(&fx);
    unlink(key);
    unload(&w);
}

static void test_http_request_hook(void **state)
{
    struct world w = load(
        "petrel.on('http_request', function(request)\n"
        "  if request.path == '/boom' then error('kaboom') end\n"
        "  if request.path == '/type' then return 'yes' end\n"
        "  if request.path == '/status' then return { status = 99 } end\n"
        "  if request.path == '/act' then petrel.add_header('X-A', 'b') end\n"
        "  if request.path == '/spin' then while true do end end\n"
        "  local token = request.headers['authorization']:gsub('Bearer ', '')\n"
        "  if token ~= 'good' then\n"
        "    return { status = 403, body = request.method .. ' ' .. request.client_ip }\n"
        "  end\n"
        "end)\n"
        "petrel.on('http_request', function(request)\n"
        "  if request.path == '/second' then return { status = 204 } end\n"
        "end)\n");
    const struct hook_kv hdrs[] = { { "Authorization", "Bearer good" }, { "Host", "x" } };
    const struct hook_kv bad[] = { { "Authorization", "Bearer bad" } };
    struct buf body;
    buf_init(&body, 0);
    int status = -1;
    char err[512];
    assert_int_equal(hooks_run_request(w.L, "GET", "/x", "192.0.2.1", hdrs, 2, &status, &body,
                                       err, sizeof err), PT_OK);
    assert_int_equal(status, 0);
    assert_int_equal(hooks_run_request(w.L, "POST", "/x", "192.0.2.1", bad, 1, &status, &body,
                                       err, sizeof err), PT_OK);
    assert_int_equal(status, 403);
    assert_string_equal(body.data, "POST 192.0.2.1");
    buf_reset(&body);
    assert_int_equal(hooks_run_request(w.L, "GET", "/second", "::1", hdrs, 2, &status, &body,
                                       err, sizeof err), PT_OK);
    assert_int_equal(status, 204);
    static const struct { const char *path, *want; } errs[] = {
        { "/boom", ":3: kaboom" },
        { "/type", ":2: the handler defined here returned a string (expected nil or a table" },
        { "/status", "returned status 99" },
        { "/act", ":6: add_header can only be called inside a hook that handles a message" },
        { "/spin", ":7: hook exceeded its budget" },
        { "/nohdr", ":8: attempt to index a nil value" },
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        const struct hook_kv *h = strcmp(errs[i].path, "/nohdr") ? hdrs : NULL;
        assert_int_equal(hooks_run_request(w.L, "GET", errs[i].path, "::1", h, h ? 2 : 0,
                                           &status, &body, err, sizeof err), PT_ERROR);
        assert_int_equal(status, 0);
        if (!strstr(err, errs[i].want))
            fail_msg("%s: error '%s' lacks '%s'", errs[i].path, err, errs[i].want);
    }
    assert_int_equal(lua_gettop(w.L), 0);
    buf_free(&body);
    unload(&w);
}

/* Errors raised from C without a position (coroutine.yield outside a coroutine,
 * a library function) still name the hook's Lua line. */
static void test_errors_always_name_the_line(void **state)
{
    struct world w = load(
        "petrel.on('smtp_message_received', function(domain, meta)\n"
        "  if domain == 'yield.test' then coroutine.yield(1) end\n"
        "  if domain == 'lib.test' then string.rep() end\n"
        "end)\n");
    struct hook_effects fx;
    run_message(&w, "yield.test", ":3: attempt to yield from outside a coroutine", &fx);
    hook_effects_free(&fx);
    run_message(&w, "lib.test", ":4: bad argument #1 to 'rep'", &fx);
    hook_effects_free(&fx);
    assert_int_equal(lua_gettop(w.L), 0);
    unload(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hdr_next_walks_fields),
        cmocka_unit_test(test_hdr_edits),
        cmocka_unit_test(test_message_hook_sees_meta_and_acts),
        cmocka_unit_test(test_hook_errors),
        cmocka_unit_test(test_route_to),
        cmocka_unit_test(test_greeting_hook_and_tenant_rule),
        cmocka_unit_test(test_sign_dkim_and_limit_sending_record),
        cmocka_unit_test(test_http_request_hook),
        cmocka_unit_test(test_errors_always_name_the_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
