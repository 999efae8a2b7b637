/* Durable spool behind a narrow interface (RocksDB backend in spool_rocksdb.c, the
 * shared Redis queue in spool_redis.c; spool.c dispatches).
 * Content is stored once per message id; entries (one per destination domain)
 * reference it. spool_commit_durable() group-commits: one WAL fsync per batch of
 * concurrent commits, from the spool thread. Nothing is acknowledged before its
 * fsync completes.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_SPOOL_H
#define PETREL_QUEUE_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

struct spool;
struct spool_batch;

/* Opens (creating if missing, with parents) the spool in dir and starts the spool
 * thread. NULL on error with a message in err. */
struct spool *spool_open(const char *dir, char *err, size_t errlen);
/* Stops the spool thread after completing queued commits, closes the database. */
void spool_close(struct spool *s);
/* "rocksdb" or "redis". */
const char *spool_backend_name(const struct spool *s);
/* 1 when the queue is shared by several nodes (Redis): an entry this node does not
 * deliver now goes back to the shared queue (a deferral written with
 * spool_commit_nosync releases it) instead of waiting in this node's memory. */
int spool_shared(const struct spool *s);

struct spool_batch *spool_batch_new(void);
void spool_batch_free(struct spool_batch *b);     /* NULL ok */
int spool_batch_put_content(struct spool_batch *b, const char *id, const void *data, size_t len);
int spool_batch_put_entry(struct spool_batch *b, const char *id, const char *domain,
                          const void *rec, size_t len);
int spool_batch_del_entry(struct spool_batch *b, const char *id, const char *domain);
int spool_batch_del_content(struct spool_batch *b, const char *id);

/* Called on the spool thread once the batch is durable (status PT_OK) or failed
 * (PT_ERROR). Must not block; post to your own loop (util/mbox.h). */
typedef void (*spool_done_cb)(void *arg, int status);
/* Queues b (taken) for a durable, group-committed write; cb runs when done.
 * Returns PT_OK, or PT_ERROR if the spool is closing (b is freed, cb not called). */
int spool_commit_durable(struct spool *s, struct spool_batch *b, spool_done_cb cb, void *arg);
/* Writes b (taken) soon, without forcing an fsync (deletions and retry-state updates, whose
 * loss only means an earlier retry or a duplicate delivery). In read-only mode
 * (see spool_writable) b is kept and written when the spool can write again.
 * Thread-safe. */
int spool_commit_nosync(struct spool *s, struct spool_batch *b);

/* Deletes the entry of (id, domain) and, once no other entry of id remains, the
 * content, without a sync (as spool_commit_nosync). Thread-safe. */
int spool_remove_entry(struct spool *s, const char *id, const char *domain);

/* 1 while the spool takes writes; 0 in read-only mode after a write error (disk
 * full) until space returns (the spool thread retries by itself): refuse new mail
 * with 452 4.3.1 meanwhile. Reads, and therefore deliveries, go on. Thread-safe. */
int spool_writable(struct spool *s);

/* Reads a message's content into out (appended). PT_NOTFOUND if missing. Thread-safe. */
int spool_get_content(struct spool *s, const char *id, struct buf *out);
/* true if any entry of id remains (used to decide when content can go). */
int spool_has_entries(struct spool *s, const char *id);

/* Calls cb for every stored entry (recovery at start). cb returns 0 to go on. */
typedef int (*spool_scan_cb)(void *arg, const char *id, const char *domain,
                             const void *rec, size_t len);
int spool_scan_entries(struct spool *s, spool_scan_cb cb, void *arg);
/* The same for the entries of one message id only (admin lookups). PT_INVALID for a
 * malformed id. */
int spool_scan_id(struct spool *s, const char *id, spool_scan_cb cb, void *arg);

/* Admin suspensions (POST /api/queue/suspend), kept so that they survive a restart.
 * dest: a destination as the admin API takes it, 1..255 bytes; until: wall clock.
 * A put replaces an earlier one for dest. Commit with spool_commit_nosync (a lost
 * suspension loses no mail). */
int spool_batch_put_suspension(struct spool_batch *b, const char *dest, double until);
int spool_batch_del_suspension(struct spool_batch *b, const char *dest);
typedef int (*spool_suspension_cb)(void *arg, const char *dest, double until);
/* Calls cb for every stored suspension (at start; malformed records are skipped).
 * PT_OK, the non-zero value cb stopped with, or PT_ERROR on a read error. */
int spool_scan_suspensions(struct spool *s, spool_suspension_cb cb, void *arg);

struct spool_stats {
    uint64_t durable_commits;   /* batches handed to spool_commit_durable */
    uint64_t fsyncs;            /* synced writes performed */
    uint64_t bytes;             /* approximate live size on disk */
    const char *crc32c;         /* what computes RocksDB's checksums (crc32c.h) */
};
void spool_stats(struct spool *s, struct spool_stats *out);

#endif
