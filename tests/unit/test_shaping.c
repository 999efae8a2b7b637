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

static void test_adjust_caps_then_recovers(void **state)
{
    (void)state;
    struct shaping_slot s = { 0 };
    double per_s = shaping_rate_per_s(600);          /* configured: 10/s */
    assert_true(fabs(shaping_rate_now(&s, per_s, 1.0) - 10.0) < 1e-9);
    shaping_adjust(&s, per_s, -0.5, 1.0);            /* nothing seen: from the rate */
    assert_true(fabs(shaping_rate_now(&s, per_s, 1.0) - 5.0) < 1e-9);
    shaping_adjust(&s, per_s, -0.5, 1.0);            /* compounds */
    assert_true(fabs(shaping_rate_now(&s, per_s, 1.0) - 2.5) < 1e-9);
    /* doubles back every SHAPING_RECOVER_S, then the cap is lifted */
    assert_true(fabs(shaping_rate_now(&s, per_s, 1.0 + SHAPING_RECOVER_S) - 5.0) < 1e-6);
    assert_true(fabs(shaping_rate_now(&s, per_s, 1.0 + 2 * SHAPING_RECOVER_S) - 10.0) < 1e-6);
    assert_true(s.cap == 0);
    /* a bad fraction changes nothing */
    shaping_adjust(&s, per_s, -2.0, 500.0);
    assert_true(s.cap == 0);
}

static void test_adjust_unlimited_from_the_seen_rate(void **state)
{
    (void)state;
    struct shaping_slot s = { 0 };
    double t = 100.0;
    for (int i = 0; i < 40; i++, t += 0.05)          /* 20/s for 2 s, unlimited */
        assert_true(shaping_acquire(&s, 0, t));
    shaping_adjust(&s, 0, -0.3, t);
    double r = shaping_rate_now(&s, 0, t);
    assert_true(r > 10.0 && r < 16.0);               /* about 0.7 x 20/s */
    /* now it is paced: over 10 s at most about r * 10 + burst */
    int sent = 0;
    for (double u = t; u < t + 10.0; u += 0.001)
        while (shaping_acquire(&s, 0, u))
            sent++;
    assert_true(sent <= (int)(r * 1.2 * 10.0) + 16);
    assert_true(sent >= (int)(r * 10.0) - 2);
    /* never below one a minute */
    for (int i = 0; i < 50; i++)
        shaping_adjust(&s, 0, -1.0, t + 10.0);
    assert_true(shaping_rate_now(&s, 0, t + 10.0) >= SHAPING_MIN_RATE - 1e-12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_burst_then_pace),
        cmocka_unit_test(test_slow_rate_burst_is_one),
        cmocka_unit_test(test_paced_count_over_time),
        cmocka_unit_test(test_adjust_caps_then_recovers),
        cmocka_unit_test(test_adjust_unlimited_from_the_seen_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
