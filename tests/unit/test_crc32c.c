/* Unit tests for queue/crc32c: known CRC32C values, agreement with librocksdb's own
 * implementation on random data (a property test), and that the interposer is the
 * definition RocksDB's calls bind to.
 * SPDX-License-Identifier: Apache-2.0 */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "queue/crc32c.h"
#include "queue/spool.h"
#include "util/buf.h"
#include "util/result.h"

#define EXTEND_SYM "_ZN7rocksdb6crc32c6ExtendEjPKcm"

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* RFC 3720 appendix B.4 and the usual check value. */
static void test_known_values(void **state)
{
    unsigned char b[32];
    assert_int_equal(crc32c_extend(0, "123456789", 9), 0xe3069283u);
    assert_int_equal(crc32c_extend(0, "", 0), 0);
    memset(b, 0, sizeof b);
    assert_int_equal(crc32c_extend(0, b, sizeof b), 0x8a9136aau);
    memset(b, 0xff, sizeof b);
    assert_int_equal(crc32c_extend(0, b, sizeof b), 0x62a8ab43u);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    assert_int_equal(crc32c_extend(0, b, sizeof b), 0x46dd794eu);
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)(31 - i);
    assert_int_equal(crc32c_extend(0, b, sizeof b), 0x113fdb5cu);
}

/* Property: equal to librocksdb's Extend for any start value, length and alignment,
 * and extending in two pieces equals extending once. */
static void test_matches_library(void **state)
{
    uint32_t (*lib)(uint32_t, const char *, size_t) = crc32c_library();
    assert_non_null(lib);
    size_t cap = 1 << 17;
    unsigned char *buf = malloc(cap + 16);
    assert_non_null(buf);
    for (int round = 0; round < 3000; round++) {
        size_t len = round < 1000 ? (size_t)round : (size_t)(next() % cap);
        size_t off = (size_t)(next() % 16);
        for (size_t i = 0; i < len; i++)
            buf[off + i] = (unsigned char)next();
        uint32_t init = round % 3 ? (uint32_t)next() : 0;
        uint32_t ours = crc32c_extend(init, buf + off, len);
        assert_int_equal(ours, lib(init, (const char *)buf + off, len));
        size_t cut = len ? (size_t)(next() % len) : 0;
        assert_int_equal(ours, crc32c_extend(crc32c_extend(init, buf + off, cut),
                                             buf + off + cut, len - cut));
    }
    free(buf);
}

/* The symbol RocksDB's PLT calls resolve to is ours (on x86-64 with SSE4.2), so the
 * library computes every checksum with the instruction. */
static void test_interposed(void **state)
{
    const char *what = crc32c_select();
    assert_non_null(what);
#if defined(__x86_64__)
    __builtin_cpu_init();
    void *global = dlsym(RTLD_DEFAULT, EXTEND_SYM);
    assert_non_null(global);
    assert_ptr_not_equal(global, (void *)crc32c_library());
    if (__builtin_cpu_supports("sse4.2"))
        assert_string_equal(what, "sse4.2");
    uint32_t (*g)(uint32_t, const char *, size_t) =
        (uint32_t (*)(uint32_t, const char *, size_t))global;
    assert_int_equal(g(0, "123456789", 9), 0xe3069283u);
#endif
}

/* A spool written with the interposed checksums reopens (WAL replay verifies every
 * record's CRC) and gives the content back byte for byte. */
static void test_spool_roundtrip(void **state)
{
    char base[] = "/tmp/petrel-crc-XXXXXX", dir[64], err[256];
    assert_non_null(mkdtemp(base));
    snprintf(dir, sizeof dir, "%s/spool", base);
    size_t len = 50 * 1024 + 7;
    char *content = malloc(len);
    assert_non_null(content);
    for (size_t i = 0; i < len; i++)
        content[i] = (char)next();
    const char *id = "0123456789abcdef";
    struct spool *s = spool_open(dir, err, sizeof err);
    assert_non_null(s);
    struct spool_stats st;
    spool_stats(s, &st);
    assert_string_equal(st.crc32c, crc32c_select());
    struct spool_batch *b = spool_batch_new();
    assert_int_equal(spool_batch_put_content(b, id, content, len), PT_OK);
    assert_int_equal(spool_commit_nosync(s, b), PT_OK);
    spool_close(s);
    s = spool_open(dir, err, sizeof err);
    assert_non_null(s);
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(spool_get_content(s, id, &out), PT_OK);
    assert_int_equal(out.len, len);
    assert_memory_equal(out.data, content, len);
    buf_free(&out);
    spool_close(s);
    free(content);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spool_roundtrip),
        cmocka_unit_test(test_known_values),
        cmocka_unit_test(test_matches_library),
        cmocka_unit_test(test_interposed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
