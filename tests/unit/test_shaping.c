/* Unit tests for delivery/shaping (the local token bucket behind shaping_acquire /
 * shaping_next_time): burst of one second's worth, then an even pace.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "delivery/shaping.h"

static void test_unlimited(void **state)
{
    (void)state;
    struct shaping_slot s = { 0 };
    assert_true(shaping_rate_per_s(0) == 0);
    for (int i = 0; i < 1000; i++)
        assert_true(shaping_acquire(&s, 0, 100.0));
    assert_int_equal(shaping_available(&s, 0, 100.0), UINT32_MAX);
    assert_true(shaping_next_time(&s, 0) == 0);
}

static void test_burst_then_pace(void **state)
{
    (void)state;
    struct shaping_slot s = { 0 };
    double per_s = shaping_rate_per_s(120);          /* 2 per second */
    assert_true(fabs(per_s - 2.0) < 1e-12);
    double t = 1000.0;
    assert_int_equal(shaping_available(&s, per_s, t), 2);
    assert_true(shaping_acquire(&s, per_s, t));
    assert_true(shaping_acquire(&s, per_s, t));
    assert_false(shaping_acquire(&s, per_s, t));     /* burst spent */
    assert_int_equal(shaping_available(&s, per_s, t), 0);
    assert_true(fabs(shaping_next_time(&s, per_s) - (t + 0.5)) < 1e-9);
    assert_false(shaping_acquire(&s, per_s, t + 0.49));
    assert_true(shaping_acquire(&s, per_s, t + 0.5));
    /* a long quiet time refills to the burst, not beyond */
    assert_int_equal(shaping_available(&s, per_s, t + 100), 2);
}

static void test_slow_rate_burst_is_one(void **state)
{
    (void)state;
    struct shaping_slot s = { 0 };
    double per_s = shaping_rate_per_s(30);           /* one every 2 s */
    assert_true(shaping_acquire(&s, per_s, 50.0));
    assert_false(shaping_acquire(&s, per_s, 51.0));
    assert_true(fabs(shaping_next_time(&s, per_s) - 52.0) < 1e-9);
    assert_true(shaping_acquire(&s, per_s, 52.0));
}

static void test_paced_count_over_time(void **state)
{
    (void)state;
    struct shaping_slot s = { 0 };
    double per_s = shaping_rate_per_s(600);          /* 10 per second */
    int sent = 0;
    for (double t = 0; t < 10.0; t += 0.001)
        while (shaping_acquire(&s, per_s, 1.0 + t))
            sent++;
    assert_true(sent >= 100 && sent <= 111);         /* 10 burst + 10/s over 10 s */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_burst_then_pace),
        cmocka_unit_test(test_slow_rate_burst_is_one),
        cmocka_unit_test(test_paced_count_over_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
