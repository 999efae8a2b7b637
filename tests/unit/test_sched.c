/* Unit tests for the scheduler's pure parts: retry backoff math.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "queue/sched.h"

static void test_backoff_doubles_from_retry_interval(void **state)
{
    (void)state;
    assert_true(fabs(sched_backoff(300, 3600, 1) - 300) < 1e-9);
    assert_true(fabs(sched_backoff(300, 3600, 2) - 600) < 1e-9);
    assert_true(fabs(sched_backoff(300, 3600, 3) - 1200) < 1e-9);
    assert_true(fabs(sched_backoff(300, 3600, 4) - 2400) < 1e-9);
}

static void test_backoff_capped(void **state)
{
    (void)state;
    assert_true(fabs(sched_backoff(300, 3600, 5) - 3600) < 1e-9);
    assert_true(fabs(sched_backoff(300, 3600, 50) - 3600) < 1e-9);
    assert_true(fabs(sched_backoff(300, 3600, 4000000000u) - 3600) < 1e-9);
}

static void test_backoff_zero_attempts_is_first(void **state)
{
    (void)state;
    assert_true(fabs(sched_backoff(1, 2, 0) - 1) < 1e-9);
}

static void test_backoff_monotonic(void **state)
{
    (void)state;
    double prev = 0;
    for (uint32_t a = 1; a < 100; a++) {
        double d = sched_backoff(1.5, 7200, a);
        assert_true(d >= prev);
        assert_true(d <= 7200);
        prev = d;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_doubles_from_retry_interval),
        cmocka_unit_test(test_backoff_capped),
        cmocka_unit_test(test_backoff_zero_attempts_is_first),
        cmocka_unit_test(test_backoff_monotonic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
