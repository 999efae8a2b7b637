/* Config generations (core/runtime): build from a config file, acquire/release,
 * swap, the per-thread cached reference, and the per-thread Lua states.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
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

#include "core/config.h"
#include "core/runtime.h"
#include "policy/hooks.h"
#include "util/result.h"

static struct config *load(const char *text)
{
    char path[64] = "/tmp/petrel_test_runtime_XXXXXX.lua", err[1024];
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct config *cfg = config_load(path, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    /* runtime_gen_build runs the file again for the Lua states: keep it until then */
    return cfg;
}

static struct cfg_gen *build(const char *text, uint64_t id, int n_smtp)
{
    char err[1024];
    struct config *cfg = load(text);
    char *path = strdup(cfg->path);
    struct cfg_gen *g = runtime_gen_build(cfg, id, n_smtp, 1, 0, err, sizeof err);
    unlink(path);
    free(path);
    if (!g)
        fail_msg("%s", err);
    return g;
}

static int refs(struct cfg_gen *g)
{
    return atomic_load(&g->refs);
}

static const char cfg_a[] =
    "petrel.start_smtp_listener { listen = \"127.0.0.1:2525\", hostname = \"a.test\" }\n"
    "petrel.on(\"smtp_message_received\", function(d, meta) petrel.add_header(\"X-G\", \"a\") end)\n";
static const char cfg_b[] =
    "petrel.start_smtp_listener { listen = \"127.0.0.1:2526\", hostname = \"b.test\" }\n";

static void test_build_and_lua_states(void **state)
{
    struct cfg_gen *g = build(cfg_a, 7, 3);
    assert_int_equal(g->id, 7);
    assert_int_equal(refs(g), 1);
    assert_int_equal(g->n_smtp_L, 3);
    assert_int_equal(g->n_http_L, 1);
    for (int i = 0; i < 3; i++) {
        assert_non_null(runtime_gen_smtp_lua(g, i));
        assert_true(hooks_any(runtime_gen_smtp_lua(g, i), "smtp_message_received"));
    }
    assert_ptr_not_equal(runtime_gen_smtp_lua(g, 0), runtime_gen_smtp_lua(g, 1));
    assert_null(runtime_gen_smtp_lua(g, 3));
    assert_non_null(runtime_gen_http_lua(g, 0));
    assert_null(runtime_gen_http_lua(g, 1));
    assert_non_null(runtime_gen_client_tls(g, NULL));
    assert_int_equal(config_listener_index(g->cfg, "127.0.0.1", 2525), 0);
    assert_int_equal(config_listener_index(g->cfg, "127.0.0.1", 2526), -1);
    runtime_gen_release(g);
}

/* A failure names FILE:LINE and frees the config. */
static void test_build_error(void **state)
{
    char err[1024];
    struct config *cfg = load("petrel.start_smtp_listener { listen = \"127.0.0.1:2525\",\n"
                              "  tls = { cert_file = \"/nonexistent/c.pem\", key_file = \"/nonexistent/k.pem\" } }\n");
    char path[64];
    snprintf(path, sizeof path, "%s", cfg->path);
    assert_null(runtime_gen_build(cfg, 2, 1, 0, 0, err, sizeof err));
    unlink(path);
    char want[128];
    snprintf(want, sizeof want, "%s:1: start_smtp_listener 127.0.0.1:2525: tls: ", path);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("got '%s', want '%s...'", err, want);
}

struct other {
    struct runtime *rt;
    struct cfg_gen *seen;
};

static void *other_thread(void *arg)
{
    struct other *o = arg;
    o->seen = runtime_gen_acquire(o->rt);   /* this thread caches a reference too */
    runtime_gen_release(o->seen);
    runtime_gen_thread_done();
    return NULL;
}

static void test_acquire_swap_release(void **state)
{
    struct runtime rt = { 0 };
    struct cfg_gen *a = build(cfg_a, 1, 1);
    assert_int_equal(runtime_init(&rt, a), PT_OK);
    assert_ptr_equal(rt.cfg, a->cfg);          /* the startup aliases */
    assert_ptr_equal(rt.boot, a);
    assert_int_equal(refs(a), 2);               /* the runtime slot + boot */

    struct cfg_gen *s1 = runtime_gen_acquire(&rt);  /* a session */
    assert_ptr_equal(s1, a);
    assert_int_equal(refs(a), 4);               /* + this thread's cache + the session */
    struct cfg_gen *s2 = runtime_gen_acquire(&rt);
    assert_ptr_equal(s2, a);
    assert_int_equal(refs(a), 5);               /* the fast path: one increment */

    struct cfg_gen *b = build(cfg_b, 2, 1);
    runtime_gen_swap(&rt, b);
    assert_int_equal(refs(a), 4);               /* the slot's reference dropped */
    struct cfg_gen *s3 = runtime_gen_acquire(&rt);
    assert_ptr_equal(s3, b);                    /* new work gets the new generation */
    assert_int_equal(refs(a), 3);               /* the thread cache moved to b */
    assert_int_equal(refs(b), 3);               /* slot + cache + s3 */
    assert_string_equal(s3->cfg->listeners[0].hostname, "b.test");
    assert_string_equal(s1->cfg->listeners[0].hostname, "a.test"); /* old sessions keep a */

    struct other o = { .rt = &rt };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, &o), 0);
    pthread_join(t, NULL);
    assert_ptr_equal(o.seen, b);
    assert_int_equal(refs(b), 3);               /* its cache was dropped at thread end */

    runtime_gen_release(s1);
    runtime_gen_release(s2);
    assert_int_equal(refs(a), 1);               /* boot only (delivery threads) */
    runtime_gen_release(s3);
    runtime_free(&rt);                          /* frees both: ASan sees any leak */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_and_lua_states),
        cmocka_unit_test(test_build_error),
        cmocka_unit_test(test_acquire_swap_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
