/* Unit tests for delivery/route: resolution at ingest (route_to target, transport
 * key, relayhost, MX), stored names back to routes, and queue identity by the whole
 * route (two routes to one relay host never share a queue). No spool, no threads.
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

#include "core/config.h"
#include "delivery/route.h"
#include "util/result.h"

static struct config *load_ok(const char *text)
{
    char path[64], err[1024] = "";
    snprintf(path, sizeof path, "/tmp/petrel_test_route_XXXXXX.lua");
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    struct config *cfg = config_load(path, err, sizeof err);
    unlink(path);
    if (!cfg)
        fail_msg("config did not load: %s", err);
    return cfg;
}

static const char *TWO_ROUTES =
    "petrel.configure_transport {\n"
    "  ['may.test'] = { relayhost = '[127.0.0.1]:2600', tls = 'may' },\n"
    "  ['enc.test'] = { relayhost = '[127.0.0.1]:2600', tls = 'encrypt',\n"
    "                   auth = { username = 'u', password = 'p' } },\n"
    "  ['.corp.test'] = { relayhost = 'smart.test:2601' },\n"
    "  ['gone.test'] = 'discard',\n"
    "}\n";

static void test_same_relay_different_routes_different_queues(void **state)
{
    (void)state;
    struct config *cfg = load_ok(TWO_ROUTES);
    struct route_table *rt = route_table_new(cfg);
    assert_non_null(rt);
    const struct route *a = route_resolve(rt, "may.test", NULL);
    const struct route *b = route_resolve(rt, "enc.test", NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->way, ROUTE_WAY_RELAY);
    assert_int_equal(b->way, ROUTE_WAY_RELAY);
    assert_string_equal(a->relayhost, b->relayhost);
    char k1[ROUTE_QKEY_MAX], k2[ROUTE_QKEY_MAX];
    assert_string_not_equal(route_queue_key(a, "may.test", k1), route_queue_key(b, "enc.test", k2));
    assert_string_equal(a->tls, "may");
    assert_string_equal(b->tls, "encrypt");
    assert_null(a->auth);
    assert_non_null(b->auth);
    assert_string_equal(b->auth->username, "u");
    assert_int_equal(a->port, 2600);
    assert_true(a->no_mx);
    route_table_free(rt);
    config_free(cfg);
}

static void test_resolution_order(void **state)
{
    (void)state;
    struct config *cfg = load_ok(TWO_ROUTES);
    struct route_table *rt = route_table_new(cfg);
    /* parent-domain key, MX default, discard */
    const struct route *r = route_resolve(rt, "x.corp.test", NULL);
    assert_string_equal(r->name, ".corp.test");
    assert_false(r->no_mx);
    assert_string_equal(r->relay_host, "smart.test");
    r = route_resolve(rt, "other.test", NULL);
    assert_string_equal(r->name, ROUTE_NAME_MX);
    assert_int_equal(r->way, ROUTE_WAY_MX);
    assert_null(r->qkey);
    char kb[ROUTE_QKEY_MAX];
    assert_string_equal(route_queue_key(r, "other.test", kb), "other.test");
    assert_int_equal(route_resolve(rt, "gone.test", NULL)->way, ROUTE_WAY_DISCARD);
    /* route_to: a key wins over the domain's route, a literal makes its own route */
    r = route_resolve(rt, "other.test", "enc.test");
    assert_string_equal(r->name, "enc.test");
    const struct route *l = route_resolve(rt, "other.test", "[10.0.0.1]:2525");
    assert_non_null(l);
    assert_string_equal(l->name, "[10.0.0.1]:2525");
    assert_null(l->auth);                      /* credentials never follow a literal */
    assert_ptr_equal(l, route_resolve(rt, "more.test", "[10.0.0.1]:2525"));
    assert_string_not_equal(l->qkey, route_resolve(rt, "may.test", NULL)->qkey);
    route_table_free(rt);
    config_free(cfg);
}

static void test_stored_name_keeps_its_route(void **state)
{
    (void)state;
    struct config *cfg = load_ok("petrel.configure_delivery { relayhost = '[relay.test]:2525' }\n"
                                 "petrel.configure_transport { ['*'] = { relayhost = '[x.test]:25' } }\n");
    struct route_table *rt = route_table_new(cfg);
    /* an entry stored on the MX route stays there although '*' now matches */
    const struct route *r = route_lookup(rt, ROUTE_NAME_MX, "dest.test", "0000000000000001");
    assert_int_equal(r->way, ROUTE_WAY_MX);
    r = route_lookup(rt, ROUTE_NAME_RELAYHOST, "dest.test", "0000000000000001");
    assert_string_equal(r->relayhost, "[relay.test]:2525");
    /* no stored name (older spool): by domain */
    r = route_lookup(rt, NULL, "dest.test", "0000000000000001");
    assert_string_equal(r->name, "*");
    /* a name the config lost: by domain (logged) */
    r = route_lookup(rt, "vanished.test", "dest.test", "0000000000000001");
    assert_string_equal(r->name, "*");
    assert_true(route_named(r, "*"));
    assert_true(route_named(r, "[x.test]:25"));
    assert_false(route_named(r, "dest.test"));
    route_table_free(rt);
    config_free(cfg);
}

/* A reload: the route of a name the new config still has is its new definition;
 * a name it lost keeps the old one, valid after the old table and config went. */
static void test_reload_keeps_or_renews_routes(void **state)
{
    (void)state;
    struct config *c1 = load_ok("petrel.configure_transport {\n"
                                "  ['a.test'] = { relayhost = '[one.test]:2601' },\n"
                                "  ['b.test'] = { relayhost = '[one.test]:2602' },\n"
                                "}\n");
    struct route_table *t1 = route_table_new(c1);
    const struct route *a = route_resolve(t1, "a.test", NULL);
    const struct route *b = route_resolve(t1, "b.test", NULL);
    struct config *c2 = load_ok("petrel.configure_transport {\n"
                                "  ['b.test'] = { relayhost = '[two.test]:2603' },\n"
                                "}\n");
    struct route_table *t2 = route_table_new(c2);
    route_table_free(t1);
    config_free(c1);
    assert_ptr_equal(route_current(t2, a), a);             /* vanished: as it was */
    assert_string_equal(a->relay_host, "one.test");
    assert_int_equal(a->port, 2601);
    const struct route *b2 = route_current(t2, b);
    assert_ptr_not_equal(b2, b);
    assert_string_equal(b2->relay_host, "two.test");
    assert_int_equal(b2->port, 2603);
    assert_string_equal(b2->qkey, b->qkey);                /* the same queue */
    /* interned: an equal definition is the same pointer */
    struct route_table *t3 = route_table_new(c2);
    assert_ptr_equal(route_resolve(t3, "b.test", NULL), b2);
    route_table_free(t3);
    route_table_free(t2);
    config_free(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reload_keeps_or_renews_routes),
        cmocka_unit_test(test_same_relay_different_routes_different_queues),
        cmocka_unit_test(test_resolution_order),
        cmocka_unit_test(test_stored_name_keeps_its_route),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
