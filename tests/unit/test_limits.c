/* Unit tests of the limit_sending table (policy/limits.c): GCRA burst and steady
 * rate, keys per period, bounded size, records, and many threads on one key.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/limits.h"
#include "util/buf.h"
#include "util/result.h"

static void test_burst_then_steady_rate(void **state)
{
    struct limits *l = limits_new(64);
    /* 10 per minute: 10 at once, then one every 6 s */
    for (int i = 0; i < 10; i++)
        assert_int_equal(limits_take(l, "acme", 10, 60, 1000.0), PT_OK);
    assert_int_equal(limits_take(l, "acme", 10, 60, 1000.0), PT_TOOLONG);
    assert_int_equal(limits_take(l, "acme", 10, 60, 1005.9), PT_TOOLONG);
    assert_int_equal(limits_take(l, "acme", 10, 60, 1006.0), PT_OK);
    assert_int_equal(limits_take(l, "acme", 10, 60, 1006.1), PT_TOOLONG);
    /* other keys and other periods are separate */
    assert_int_equal(limits_take(l, "blue", 10, 60, 1000.0), PT_OK);
    assert_int_equal(limits_take(l, "acme", 1, 1, 1000.0), PT_OK);
    assert_int_equal(limits_take(l, "acme", 1, 1, 1000.5), PT_TOOLONG);
    assert_int_equal(limits_take(l, "acme", 1, 1, 1001.0), PT_OK);
    /* after a long idle time the full burst is back */
    for (int i = 0; i < 10; i++)
        assert_int_equal(limits_take(l, "acme", 10, 60, 2000.0), PT_OK);
    /* bad arguments */
    assert_int_equal(limits_take(l, "acme", 0, 60, 0), PT_INVALID);
    assert_int_equal(limits_take(l, "acme", 1, 0, 0), PT_INVALID);
    char long_key[LIMITS_KEY_MAX + 2];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = 0;
    assert_int_equal(limits_take(l, long_key, 1, 1, 0), PT_INVALID);
    limits_free(l);
    limits_free(NULL);
}

static void test_bounded_table(void **state)
{
    struct limits *l = limits_new(8);
    char k[32];
    /* far more keys than slots: never fails, never grows */
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "key%d", i);
        assert_int_equal(limits_take(l, k, 1, 3600, 10.0), PT_OK);
    }
    /* a key that is kept keeps its state */
    struct limits *m = limits_new(4);
    assert_int_equal(limits_take(m, "hot", 1, 3600, 10.0), PT_OK);
    assert_int_equal(limits_take(m, "hot", 1, 3600, 11.0), PT_TOOLONG);
    limits_free(m);
    limits_free(l);
}

static void test_records(void **state)
{
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(limits_record(&b, "t1", 2, 60), PT_OK);
    assert_int_equal(limits_record(&b, "t2", 1, 1), PT_OK);
    assert_int_equal(limits_record(&b, "bad\tkey", 1, 1), PT_INVALID);
    assert_int_equal(limits_record(&b, "", 1, 1), PT_INVALID);
    assert_string_equal(b.data, "60\t2\tt1\n1\t1\tt2\n");
    struct limits *l = limits_new(16);
    char over[64] = "";
    assert_int_equal(limits_take_all(l, b.data, b.len, 5.0, over, sizeof over), PT_OK);
    assert_int_equal(limits_take_all(l, b.data, b.len, 5.0, over, sizeof over), PT_TOOLONG);
    assert_string_equal(over, "t2");
    assert_int_equal(limits_take_all(l, "garbage\n\t\n", 10, 5.0, over, sizeof over), PT_OK);
    limits_free(l);
    buf_free(&b);
    assert_non_null(limits_shared());
    assert_ptr_equal(limits_shared(), limits_shared());
}

static struct limits *shared_l;
static int passed[8];

static void *taker(void *arg)
{
    int *n = arg;
    for (int i = 0; i < 1000; i++)
        if (limits_take(shared_l, "k", 100, 3600, 50.0) == PT_OK)
            (*n)++;
    return NULL;
}

static void test_threads_share_one_count(void **state)
{
    shared_l = limits_new(16);
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, taker, &passed[i]);
    int total = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        total += passed[i];
    }
    assert_int_equal(total, 100);
    limits_free(shared_l);
}

/* Cluster sharing: the observer sees every message let through, a merged tat
 * from another node refuses here, and a share of N divides the budget. */
static int seen;
static char seen_name[200];
static double seen_t;

static void observer(void *arg, const char *name, double t)
{
    (void)arg;
    seen++;
    snprintf(seen_name, sizeof seen_name, "%s", name);
    seen_t = t;
}

static void test_cluster_sharing(void **state)
{
    struct limits *l = limits_new(64);
    limits_set_observer(l, observer, NULL);
    assert_int_equal(limits_take(l, "k", 3, 3600, 100.0), PT_OK);
    assert_int_equal(seen, 1);
    assert_string_equal(seen_name, "3600|k");
    assert_true(seen_t > 1199.9 && seen_t < 1200.1);
    /* another node used the rest: tat 3 messages ahead */
    limits_merge(l, "3600|k", 100.0 + 3 * 1200.0);
    assert_int_equal(limits_take(l, "k", 3, 3600, 101.0), PT_TOOLONG);
    assert_int_equal(seen, 1);                 /* refusals are not charged */
    /* a key never seen here, merged first */
    limits_merge(l, "60|fresh", 100.0 + 60.0);
    assert_int_equal(limits_take(l, "fresh", 2, 60, 100.0), PT_TOOLONG);
    /* degraded with 2 nodes: 4 per minute counts as 2 */
    limits_set_share(l, 2);
    assert_int_equal(limits_take(l, "half", 4, 60, 100.0), PT_OK);
    assert_int_equal(limits_take(l, "half", 4, 60, 100.0), PT_OK);
    assert_int_equal(limits_take(l, "half", 4, 60, 100.0), PT_TOOLONG);
    limits_set_share(l, 1);
    limits_set_observer(l, NULL, NULL);
    limits_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_steady_rate),
        cmocka_unit_test(test_bounded_table),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_threads_share_one_count),
        cmocka_unit_test(test_cluster_sharing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
