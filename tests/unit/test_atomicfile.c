/* Unit tests of util/atomicfile.c: the parts land concatenated, an existing file
 * is replaced whole, and a failed write leaves the old file and no temporary.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/atomicfile.h"
#include "util/result.h"

static char dir[64];

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/petrel-atomicfile-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static size_t slurp(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return (size_t)-1;
    size_t n = fread(out, 1, cap, f);
    fclose(f);
    return n;
}

static void test_parts_and_replace(void **state)
{
    char path[128], got[64];
    snprintf(path, sizeof path, "%s/state.json", dir);
    struct file_part two[2] = { { "head\n", 5 }, { "body", 4 } };
    assert_int_equal(file_write_atomic(path, two, 2), PT_OK);
    assert_int_equal(slurp(path, got, sizeof got), 9);
    assert_memory_equal(got, "head\nbody", 9);

    struct file_part one = { "x", 1 };
    assert_int_equal(file_write_atomic(path, &one, 1), PT_OK);
    assert_int_equal(slurp(path, got, sizeof got), 1);
    assert_int_equal(got[0], 'x');

    struct stat st;
    char tmp[140];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_not_equal(stat(tmp, &st), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_failure_keeps_old_file(void **state)
{
    char path[128], tmp[140], got[16];
    snprintf(path, sizeof path, "%s/kept", dir);
    struct file_part old = { "old", 3 };
    assert_int_equal(file_write_atomic(path, &old, 1), PT_OK);
    /* a directory where the temporary file should go: the write fails before rename */
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(mkdir(tmp, 0700), 0);
    struct file_part neu = { "new", 3 };
    assert_int_equal(file_write_atomic(path, &neu, 1), PT_ERROR);
    assert_int_equal(slurp(path, got, sizeof got), 3);
    assert_memory_equal(got, "old", 3);
    rmdir(tmp);

    snprintf(path, sizeof path, "%s/no/such/dir/file", dir);
    assert_int_equal(file_write_atomic(path, &neu, 1), PT_ERROR);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts_and_replace),
        cmocka_unit_test(test_failure_keeps_old_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
