/* Unit tests for delivery/egress: smooth weighted round robin picks each source
 * exactly weight times per round, interleaved; the tenant's pool applies when no
 * pool is named; an unknown pool is refused.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/config.h"
#include "delivery/egress.h"
#include "queue/entry.h"
#include "util/result.h"

static struct cfg_egress_source srcs[3] = {
    { .name = "ip1" }, { .name = "ip2" }, { .name = "ip3" },
};
static int pool_src[3] = { 0, 1, 2 }, pool_w[3] = { 5, 1, 1 };
static struct cfg_egress_pool pools[1] = {
    { .name = "p", .src = pool_src, .weight = pool_w, .n = 3 },
};
static struct cfg_tenant tenants[2] = {
    { .name = "acme", .pool = 0, .max_message_rate = 0 },
    { .name = "slow", .pool = -1, .max_message_rate = 2 },
};

static struct config test_cfg(void)
{
    struct config c;
    memset(&c, 0, sizeof c);
    c.egress_sources = srcs;
    c.n_egress_sources = 3;
    c.egress_pools = pools;
    c.n_egress_pools = 1;
    c.tenants = tenants;
    c.n_tenants = 2;
    return c;
}

static void test_smooth_wrr(void **state)
{
    struct config c = test_cfg();
    /* nginx's smooth WRR for 5,1,1: a a b a c a a per round */
    const char *want = "aabacaa";
    for (int round = 0; round < 3; round++) {
        int count[3] = { 0 };
        for (int i = 0; i < 7; i++) {
            const char *s = egress_pick(&c, 0);
            assert_non_null(s);
            int k = s[2] - '1';
            count[k]++;
            assert_int_equal("abc"[k], want[i]);
        }
        assert_int_equal(count[0], 5);
        assert_int_equal(count[1], 1);
        assert_int_equal(count[2], 1);
    }
    assert_null(egress_pick(&c, 1));
    assert_null(egress_pick(&c, -1));
}

static void test_assign(void **state)
{
    struct config c = test_cfg();
    struct entry *e = entry_new(NULL, "d.test", "s", (const char *const[]){ "r@d.test" }, 1);
    assert_int_equal(egress_assign(&c, e, NULL), PT_OK);   /* no tenant, no pool */
    assert_null(entry_source(e));
    assert_int_equal(egress_assign(&c, e, "nope"), PT_INVALID);
    assert_int_equal(entry_set_ident(e, "acme", NULL), PT_OK);
    assert_int_equal(egress_assign(&c, e, NULL), PT_OK);    /* the tenant's pool */
    assert_non_null(entry_source(e));
    assert_string_equal(entry_tenant(e), "acme");
    assert_false(e->flags & ENTRY_F_TENANT_Q);
    assert_int_equal(entry_set_ident(e, "slow", NULL), PT_OK);
    assert_int_equal(egress_assign(&c, e, "p"), PT_OK);     /* a named pool */
    assert_non_null(entry_source(e));
    assert_true(e->flags & ENTRY_F_TENANT_Q);
    assert_int_equal(entry_set_ident(e, "walk-in", NULL), PT_OK);
    assert_int_equal(egress_assign(&c, e, NULL), PT_OK);
    assert_null(entry_source(e));
    assert_false(e->flags & ENTRY_F_TENANT_Q);
    entry_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smooth_wrr),
        cmocka_unit_test(test_assign),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
