/* Unit tests for the suspension records of the spool (spool.h): put, replace,
 * delete, scan after reopening; entries and contents are not disturbed.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "queue/spool.h"
#include "util/result.h"

struct seen {
    int n;
    char dest[4][300];
    double until[4];
};

static int collect(void *arg, const char *dest, double until)
{
    struct seen *s = arg;
    if (s->n < 4) {
        snprintf(s->dest[s->n], sizeof s->dest[0], "%s", dest);
        s->until[s->n] = until;
    }
    s->n++;
    return 0;
}

static int count_entries(void *arg, const char *id, const char *domain, const void *rec,
                         size_t len)
{
    (*(int *)arg)++;
    return 0;
}

static void test_put_replace_delete_reopen(void **state)
{
    (void)state;
    char dir[] = "/tmp/petrel_test_susp_XXXXXX", err[256];
    assert_non_null(mkdtemp(dir));
    struct spool *sp = spool_open(dir, err, sizeof err);
    assert_non_null(sp);
    struct spool_batch *b = spool_batch_new();
    assert_int_equal(spool_batch_put_suspension(b, "dest.test", 100.5), PT_OK);
    assert_int_equal(spool_batch_put_suspension(b, "[127.0.0.1]:2525", 200.25), PT_OK);
    assert_int_equal(spool_batch_put_entry(b, "0123456789abcdef", "dest.test", "x", 1), PT_OK);
    assert_int_equal(spool_batch_put_suspension(b, "", 1), PT_INVALID);
    char longd[300];
    memset(longd, 'a', sizeof longd - 1);
    longd[sizeof longd - 1] = 0;
    assert_int_equal(spool_batch_put_suspension(b, longd, 1), PT_TOOLONG);
    assert_int_equal(spool_commit_nosync(sp, b), PT_OK);
    b = spool_batch_new();
    assert_int_equal(spool_batch_put_suspension(b, "dest.test", 300.0), PT_OK); /* replaces */
    assert_int_equal(spool_commit_nosync(sp, b), PT_OK);
    spool_close(sp);

    sp = spool_open(dir, err, sizeof err);
    assert_non_null(sp);
    struct seen s = { 0 };
    assert_int_equal(spool_scan_suspensions(sp, collect, &s), PT_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.dest[0], "[127.0.0.1]:2525");
    assert_true(s.until[0] == 200.25);
    assert_string_equal(s.dest[1], "dest.test");
    assert_true(s.until[1] == 300.0);
    int n = 0;
    assert_int_equal(spool_scan_entries(sp, count_entries, &n), PT_OK);
    assert_int_equal(n, 1);                     /* suspensions are not entries */
    b = spool_batch_new();
    assert_int_equal(spool_batch_del_suspension(b, "dest.test"), PT_OK);
    assert_int_equal(spool_commit_nosync(sp, b), PT_OK);
    spool_close(sp);                            /* drains: no-sync writes are queued */
    sp = spool_open(dir, err, sizeof err);
    assert_non_null(sp);
    memset(&s, 0, sizeof s);
    assert_int_equal(spool_scan_suspensions(sp, collect, &s), PT_OK);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.dest[0], "[127.0.0.1]:2525");
    spool_close(sp);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_replace_delete_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
