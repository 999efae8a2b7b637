/* CRC32C for the RocksDB spool; see crc32c.h for why petrel interposes it.
 * SPDX-License-Identifier: Apache-2.0 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "queue/crc32c.h"

/* rocksdb::crc32c::Extend(unsigned int, char const*, unsigned long) */
#define ROCKSDB_EXTEND "_ZN7rocksdb6crc32c6ExtendEjPKcm"

typedef uint32_t (*extend_fn)(uint32_t, const char *, size_t);

enum { USE_SOFTWARE, USE_HARDWARE, USE_LIBRARY };

static pthread_once_t once = PTHREAD_ONCE_INIT;
static extend_fn library;          /* librocksdb's own Extend, or NULL */
static int use;                    /* USE_*, written once under `once` */
static const char *what = "software";
static uint32_t table[256];        /* reflected 0x82f63b78, for USE_SOFTWARE */

static uint32_t crc_software(uint32_t crc, const unsigned char *p, size_t n)
{
    uint32_t l = crc ^ 0xffffffffu;
    while (n--)
        l = table[(l ^ *p++) & 0xff] ^ (l >> 8);
    return l ^ 0xffffffffu;
}

#if defined(__x86_64__)
/* One crc32 instruction per 8 bytes: about 8 bytes per 3 cycles, some 6x the
 * library's portable table loop. */
__attribute__((target("sse4.2")))
static uint32_t crc_hardware(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t l = crc ^ 0xffffffffu;
    for (; n && ((uintptr_t)p & 7); n--)
        l = __builtin_ia32_crc32qi((uint32_t)l, *p++);
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        l = __builtin_ia32_crc32di(l, w);
    }
    for (; n; n--)
        l = __builtin_ia32_crc32qi((uint32_t)l, *p++);
    return (uint32_t)l ^ 0xffffffffu;
}
#endif

static uint32_t dispatch(uint32_t crc, const void *data, size_t n)
{
    switch (use) {
#if defined(__x86_64__)
    case USE_HARDWARE:
        return crc_hardware(crc, data, n);
#endif
    case USE_LIBRARY:
        return library(crc, data, n);
    default:
        return crc_software(crc, data, n);
    }
}

/* Deterministic test data: xorshift bytes. */
static void fill(unsigned char *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        p[i] = (unsigned char)seed;
    }
}

/* True if impl agrees with the reference (the library, else the known value). */
static int agrees(int impl)
{
    int saved = use;
    use = impl;
    int ok = dispatch(0, "123456789", 9) == 0xe3069283u && dispatch(0, "", 0) == 0;
    static unsigned char buf[70000];
    fill(buf, sizeof buf, 0x9e3779b97f4a7c15ull);
    for (size_t len = 0; ok && library && len < 300; len++)
        for (size_t off = 0; ok && off < 8; off++)
            ok = dispatch((uint32_t)(len * 2654435761u), buf + off, len) ==
                 library((uint32_t)(len * 2654435761u), (const char *)buf + off, len);
    if (ok && library)
        ok = dispatch(0x12345678u, buf + 3, sizeof buf - 3) ==
             library(0x12345678u, (const char *)buf + 3, sizeof buf - 3);
    use = saved;
    return ok;
}

static void init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (c & 1 ? 0x82f63b78u : 0);
        table[i] = c;
    }
    library = (extend_fn)dlsym(RTLD_NEXT, ROCKSDB_EXTEND);
    use = USE_SOFTWARE;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        if (agrees(USE_HARDWARE)) {
            use = USE_HARDWARE;
            what = "sse4.2";
            return;
        }
        what = "librocksdb (self-check failed)";
    } else {
        what = "librocksdb (no sse4.2)";
    }
#endif
    if (library)
        use = USE_LIBRARY;
    else
        what = "software";  /* no librocksdb symbol to defer to (a static link) */
}

uint32_t crc32c_extend(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&once, init);
    return dispatch(crc, data, n);
}

const char *crc32c_select(void)
{
    pthread_once(&once, init);
    return what;
}

extend_fn crc32c_library(void)
{
    pthread_once(&once, init);
    return library;
}

#if defined(__x86_64__)
/* The interposer: librocksdb's PLT calls to rocksdb::crc32c::Extend bind here
 * (the link exports it, see the Makefile). Same contract as the library's. */
uint32_t petrel_rocksdb_crc32c_extend(uint32_t crc, const char *data, size_t n)
    __asm__(ROCKSDB_EXTEND) __attribute__((visibility("default"), used));
uint32_t petrel_rocksdb_crc32c_extend(uint32_t crc, const char *data, size_t n)
{
    return crc32c_extend(crc, data, n);
}
#endif
