/* Unit tests for delivery/outcome: one attempt's results applied to an entry
 * (delivered / deferred with backoff / bounced, expiry, not attempted), without a
 * spool or threads (null-sender entries: no DSN is built).
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
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
#include "core/runtime.h"
#include "delivery/outcome.h"
#include "queue/entry.h"
#include "smtp/smtp_client.h"
#include "util/result.h"
#include "util/timeutil.h"

static struct config *cfg;
static struct runtime rt;

static int setup(void **state)
{
    (void)state;
    char path[64] = "/tmp/petrel_test_outcome_XXXXXX.lua", err[512];
    int fd = mkstemps(path, 4);
    const char *text = "petrel.configure_queue { retry_interval = '10s', "
                       "max_retry_interval = '30s', max_retry_age = '1h' }\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    cfg = config_load(path, err, sizeof err);
    unlink(path);
    assert_non_null(cfg);
    rt.cfg = cfg;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    config_free(cfg);
    return 0;
}

static struct entry *three(void)
{
    const char *rcpts[] = { "a@d.test", "b@d.test", "c@d.test" };
    struct entry *e = entry_new(NULL, "d.test", "", rcpts, 3);   /* null sender: no DSN */
    assert_non_null(e);
    e->received_at = e->next_attempt = time_now();
    return e;
}

static struct client_result res(int code, const char *enh, const char *text)
{
    struct client_result r = { .code = code, .text = (char *)text };
    snprintf(r.enhanced, sizeof r.enhanced, "%s", enh);
    return r;
}

static void test_mixed_results_defer_with_backoff(void **state)
{
    (void)state;
    struct entry *e = three();
    struct client_result r[] = { res(250, "2.0.0", "250 ok"), res(451, "4.3.0", "451 later"),
                                 res(550, "5.1.1", "550 no such user") };
    struct outcome_where w = { "mx.d.test:25", "127.0.0.2", NULL };
    double before = time_now();
    assert_int_equal(outcome_apply(&rt, rt.cfg, NULL, e, r, 3, &w), OUTCOME_RETRY);
    assert_int_equal(e->attempts, 1);
    assert_int_equal(e->rcpts[0].state, RCPT_DELIVERED);
    assert_int_equal(e->rcpts[1].state, RCPT_PENDING);
    assert_int_equal(e->rcpts[2].state, RCPT_BOUNCED);
    assert_string_equal(e->last_response, "451 later");
    assert_true(e->next_attempt >= before + 10 - 0.01 && e->next_attempt <= time_now() + 10);
    /* second try of the one pending recipient: backoff doubles */
    struct client_result r2[] = { res(421, "4.7.0", "421 slow down") };
    before = time_now();
    assert_int_equal(outcome_apply(&rt, rt.cfg, NULL, e, r2, 1, &w), OUTCOME_RETRY);
    assert_int_equal(e->attempts, 2);
    assert_true(e->next_attempt >= before + 20 - 0.01);
    struct client_result r3[] = { res(250, "2.0.0", "250 ok") };
    assert_int_equal(outcome_apply(&rt, rt.cfg, NULL, e, r3, 1, &w), OUTCOME_DONE);
    assert_int_equal(entry_pending(e), 0);
    entry_free(e);
}

static void test_not_attempted_changes_nothing(void **state)
{
    (void)state;
    struct entry *e = three();
    struct client_result r[] = { res(-1, "", "stale"), res(-1, "", "stale"),
                                 res(-1, "", "stale") };
    assert_int_equal(outcome_apply(&rt, rt.cfg, NULL, e, r, 3, NULL), OUTCOME_AGAIN);
    assert_int_equal(e->attempts, 0);
    assert_int_equal(entry_pending(e), 3);
    entry_free(e);
}

static void test_expired_after_max_retry_age(void **state)
{
    (void)state;
    struct entry *e = three();
    e->received_at = time_now() - 2 * 3600;
    assert_int_equal(outcome_uniform(&rt, rt.cfg, NULL, e, 451, "4.4.3", "451 4.4.3 DNS lookup failed"),
                     OUTCOME_DONE);
    for (int i = 0; i < 3; i++)
        assert_int_equal(e->rcpts[i].state, RCPT_BOUNCED);
    entry_free(e);
}

/* dead_letter_after: the expired entry is flagged dead (kept), expired "now";
 * the encoding keeps the flag and an entry without it decodes as before. */
static void test_expired_kept_dead_with_dead_letter_after(void **state)
{
    (void)state;
    struct entry *e = three();
    e->received_at = time_now() - 2 * 3600;
    cfg->queue.dead_letter_after = 7 * 86400;
    double before = time_now();
    assert_int_equal(outcome_uniform(&rt, rt.cfg, NULL, e, 451, "4.4.3", "451 4.4.3 later"),
                     OUTCOME_DEAD);
    cfg->queue.dead_letter_after = 0;
    assert_true(e->flags & ENTRY_F_DEAD);
    assert_true(e->next_attempt >= before && e->next_attempt <= time_now());
    assert_int_equal(entry_pending(e), 0);
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(entry_encode(e, &b), PT_OK);
    struct entry *d;
    assert_int_equal(entry_decode(b.data, b.len, &d), PT_OK);
    assert_true(d->flags & ENTRY_F_DEAD);
    entry_free(d);
    buf_free(&b);
    entry_free(e);
}

static void test_deadline_caps_the_next_attempt(void **state)
{
    (void)state;
    struct entry *e = three();
    e->received_at = time_now() - 3600 + 5;        /* 5 s of life left */
    assert_int_equal(outcome_uniform(&rt, rt.cfg, NULL, e, 0, "4.4.1", "451 4.4.1 refused"), OUTCOME_RETRY);
    assert_true(e->next_attempt <= e->received_at + 3600 + 1e-6);
    entry_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_results_defer_with_backoff),
        cmocka_unit_test(test_expired_kept_dead_with_dead_letter_after),
        cmocka_unit_test(test_not_attempted_changes_nothing),
        cmocka_unit_test(test_expired_after_max_retry_age),
        cmocka_unit_test(test_deadline_caps_the_next_attempt),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
