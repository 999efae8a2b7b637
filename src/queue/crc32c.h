/* CRC32C (Castagnoli) for the RocksDB spool, in hardware where the CPU has it.
 *
 * Debian builds librocksdb "portable", without SSE4.2, so RocksDB computes the
 * CRC32C of every WAL record (the whole message, for a content write) with a
 * table-driven loop: about 40 us per 50 KB message, 10-12% of petrel's CPU per
 * relayed message (perf, bench/bench.py 50k). librocksdb calls its
 * rocksdb::crc32c::Extend() through the PLT, so petrel defines that symbol and
 * the dynamic linker binds RocksDB's calls to it (ELF interposition, as with
 * malloc): the same polynomial and the same results, computed with the SSE4.2
 * crc32 instruction. On a CPU without SSE4.2, or if the self-check below ever
 * disagrees with the library, every call goes to the library's own code.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_CRC32C_H
#define PETREL_QUEUE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* RocksDB's convention: extends crc (a finished CRC32C value, 0 to start) over
 * n bytes and returns the finished value. crc32c_extend(0, "123456789", 9) is
 * 0xe3069283. */
uint32_t crc32c_extend(uint32_t crc, const void *data, size_t n);

/* Compares the interposed function with librocksdb's own on fixed and pseudo-random
 * buffers of many lengths and alignments; on a mismatch every later call goes to the
 * library. Returns a short description of what RocksDB's CRC32C now runs on:
 * "sse4.2", "librocksdb (no sse4.2)" or "librocksdb (self-check failed)". */
const char *crc32c_select(void);

/* The library's own implementation (for tests); NULL if it cannot be found. */
uint32_t (*crc32c_library(void))(uint32_t, const char *, size_t);

#endif
