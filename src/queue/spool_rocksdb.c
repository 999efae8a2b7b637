/* RocksDB spool backend (spool.h): message content and per-domain entries in one
 * database; durable commits are grouped into one synced WAL write on the spool thread.
 * Never acknowledges a commit before its fsync, never makes a caller wait for one.
 * SPDX-License-Identifier: Apache-2.0 */

/*
 * Key layout (one column family, byte-ordered keys):
 *
 *   "m" <id:16 hex>                      -> message content, raw bytes
 *   "q" <id:16 hex> "/" <domain:1..255>  -> entry record (entry_encode() output)
 *   "s" <destination:1..255>             -> admin suspension: f64 until, little-endian
 *
 * All entries sort after all contents, so a recovery scan reads only entry blocks, and
 * the entries of one id are adjacent, so rdb_has_entries() is one bounded seek. Ids
 * start with a millisecond clock, so scan order is roughly arrival order. Other
 * first bytes are free for future record kinds.
 *
 * One writer: every write goes through the spool thread. rdb_commit_durable() and
 * rdb_commit_nosync() append the batch to one queue under a mutex and return; the
 * spool thread takes everything queued so far, writes each batch with sync off and
 * then flushes the WAL once (rocksdb FlushWAL), with a sync when the group holds a
 * durable batch; batches queued meanwhile form the next group. The WAL is flushed by
 * hand (manual_wal_flush): a write lands in RocksDB's WAL buffer without a syscall,
 * so a group costs one write(2) and at most one fdatasync however many batches it
 * has, and its batches are never copied into one. Event loops never wait for an
 * fsync (they only append to the queue), and a no-sync batch (deletions after
 * delivery, retry state) rides along with the next group. A group is readable a few
 * hundred microseconds before it is durable, which is harmless because nothing is
 * acknowledged (and nobody looks for the message) before the callback.
 * One writer is also what keeps a write error safe: RocksDB's WAL writer must never
 * be used again after an error (Debian's build asserts and aborts), and with two
 * writing threads the second could pass the read-only check just before the first
 * failed.
 *
 * Write errors (disk full): the first failed write or WAL flush puts the spool in
 * read-only mode. From then on no write reaches RocksDB, durable commits fail at once
 * (the SMTP and HTTP fronts answer 4xx/5xx), and reads go on, so deliveries
 * continue. Every SPOOL_RETRY_S the spool thread checks the free space and, with at
 * least SPOOL_RESUME_FREE, closes and reopens the database (RocksDB's own recovery
 * wants a write buffer's worth of free space, 64 MB, and its C API has no Resume):
 * the reopen replays the WAL, drops a torn tail (never acknowledged) and starts a
 * fresh WAL. The same happens when the database cannot be opened for writing at
 * start: it is opened read-only and reopened when space returns.
 * No-sync batches that meet read-only mode are kept in order (up to
 * SPOOL_DEFER_MAX, beyond that dropped: a duplicate delivery at worst) and written
 * first after the reopen, so delivered mail is deleted after all.
 * Every use of s->db holds dblock for reading; only the reopen holds it for writing.
 *
 * Damage at open: the WAL is replayed tolerating only a torn tail (an incomplete last
 * record: power loss mid-write, never acknowledged). Damage inside it fails the open,
 * and petrel refuses to start naming the remedy, rather than say ready with a queue
 * silently cut at the damage (RocksDB's default). PETREL_SPOOL_RECOVERY=skip-corrupted
 * (every readable record) or =point-in-time (up to the damage) starts anyway. A spool
 * whose PETREL_SPOOL_FORMAT file names a newer format is refused by name.
 */

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>

#include <rocksdb/c.h>

#include "obs/log.h"
#include "queue/crc32c.h"
#include "queue/spool.h"
#include "queue/spool_backend.h"
#include "util/buf.h"
#include "util/result.h"

/* Tunables, with their reasons. */
#define SPOOL_ID_LEN            16          /* hex digits, as entry.h's ENTRY_ID_LEN */
#define SPOOL_DOMAIN_MAX        255         /* RFC 1035 name length */
#define SPOOL_KEY_MAX           (1 + SPOOL_ID_LEN + 1 + SPOOL_DOMAIN_MAX)
#define SPOOL_WRITE_BUFFER      (64u << 20) /* memtable: most messages die before a flush */
#define SPOOL_WRITE_BUFFERS     3           /* one filling, up to two flushing */
#define SPOOL_BLOCK_CACHE       (16u << 20) /* reads are one-shot: content read once per try */
#define SPOOL_BLOCK_SIZE        (16u << 10) /* contents are 2-50 KB: one block each, or so */
#define SPOOL_BLOOM_BITS        10.0        /* point gets of content skip most SST files */
#define SPOOL_MAX_OPEN_FILES    512         /* bounded fds; table cache stays small */
#define SPOOL_BG_JOBS           2           /* one flush + one compaction on 2 cores */
#define SPOOL_BYTES_PER_SYNC    (1u << 20)  /* smooth SST writeback, no fsync storms */
#define SPOOL_LOG_KEEP          3           /* RocksDB's own LOG files kept */
#define SPOOL_LOG_SIZE          (8u << 20)
/* RocksDB's own LOG file is off: it lives on the spool disk, and once one of its
 * writes fails (disk full) the next one aborts the process in an assert-enabled
 * librocksdb (Debian's). HEADER_LEVEL + 1 silences even the option dump. */
#define SPOOL_LOG_LEVEL         6
#define SPOOL_RETRY_S           1           /* read-only mode: free-space check period */
#define SPOOL_RESUME_FREE       (2u << 20)  /* free bytes before writes are tried again */
#define SPOOL_MANIFEST_PREALLOC (64u << 10) /* not 4 MB: a small spool disk stays usable */
#define SPOOL_DEFER_MAX         65536       /* read-only mode: no-sync batches kept for later */
#define SPOOL_FORMAT            1           /* PETREL_SPOOL_FORMAT: bump on incompatible layouts */
#define SPOOL_FORMAT_FILE       "PETREL_SPOOL_FORMAT"
#define SPOOL_RECOVERY_ENV      "PETREL_SPOOL_RECOVERY"
#define SPOOL_SCAN_READAHEAD    (2u << 20)  /* recovery scan: large sequential reads */
#define SPOOL_DIR_MODE          0750

struct rdb_batch {
    rocksdb_writebatch_t *wb;
    spool_done_cb cb;           /* durable batches only */
    void *arg;
    int durable;
    char last_of[SPOOL_ID_LEN + 1];  /* "": none; else delete this id's content once
                                      * no entry of it remains (rdb_remove_entry) */
    struct rdb_batch *next;   /* pending queue link */
};

struct rdb_spool {
    rocksdb_t *db;
    pthread_rwlock_t dblock;            /* read: any use of db; write: reopen */
    char *dir;
    _Atomic int readonly;               /* a write failed, or opened read-only: refuse writes */
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *topts;
    rocksdb_cache_t *cache;
    rocksdb_writeoptions_t *wopts;  /* sync off: durability comes from flush_wal */
    rocksdb_readoptions_t *ropts;   /* default reads, shared read-only by all threads */

    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct rdb_batch *head, *tail;    /* pending batches (durable and not), under lock */
    struct rdb_batch *dhead, *dtail;  /* read-only mode: deferred no-sync batches, under lock */
    size_t ndeferred;                   /* under lock */
    int closing;                        /* under lock */
    int thread_done;                    /* under lock: the spool thread has returned */
    double next_resume;                 /* spool thread: read-only mode's next check */

    const char *crc;                    /* what RocksDB's CRC32C runs on (crc32c.h) */
    _Atomic uint64_t durable_commits;
    _Atomic uint64_t fsyncs;
};

/* ---- keys ---- */

static int id_valid(const char *id)
{
    if (!id)
        return 0;
    for (int i = 0; i < SPOOL_ID_LEN; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return id[SPOOL_ID_LEN] == '\0';
}

/* Content key into k (SPOOL_KEY_MAX bytes); returns its length. id must be valid. */
static size_t key_content(char *k, const char *id)
{
    k[0] = 'm';
    memcpy(k + 1, id, SPOOL_ID_LEN);
    return 1 + SPOOL_ID_LEN;
}

/* Entry key prefix of id: "q" id "/". */
static size_t key_entry_prefix(char *k, const char *id)
{
    k[0] = 'q';
    memcpy(k + 1, id, SPOOL_ID_LEN);
    k[1 + SPOOL_ID_LEN] = '/';
    return 2 + SPOOL_ID_LEN;
}

static int key_entry(char *k, size_t *klen, const char *id, const char *domain)
{
    if (!id_valid(id) || !domain)
        return PT_INVALID;
    size_t dlen = strnlen(domain, SPOOL_DOMAIN_MAX + 1);
    if (dlen == 0)
        return PT_INVALID;
    if (dlen > SPOOL_DOMAIN_MAX)
        return PT_TOOLONG;
    size_t n = key_entry_prefix(k, id);
    memcpy(k + n, domain, dlen);
    *klen = n + dlen;
    return PT_OK;
}

/* ---- batches ---- */

static struct rdb_batch *rdb_batch_new(void)
{
    struct rdb_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->wb = rocksdb_writebatch_create();
    if (!b->wb) {
        free(b);
        return NULL;
    }
    return b;
}

static void rdb_batch_free(struct rdb_batch *b)
{
    if (!b)
        return;
    rocksdb_writebatch_destroy(b->wb);
    free(b);
}

static int rdb_batch_put_content(struct rdb_batch *b, const char *id, const void *data, size_t len)
{
    char k[SPOOL_KEY_MAX];
    if (!b || !id_valid(id) || (!data && len))
        return PT_INVALID;
    size_t klen = key_content(k, id);
    rocksdb_writebatch_put(b->wb, k, klen, data ? data : "", len);
    return PT_OK;
}

static int rdb_batch_put_entry(struct rdb_batch *b, const char *id, const char *domain,
                          const void *rec, size_t len)
{
    char k[SPOOL_KEY_MAX];
    size_t klen;
    if (!b || (!rec && len))
        return PT_INVALID;
    int rc = key_entry(k, &klen, id, domain);
    if (rc != PT_OK)
        return rc;
    rocksdb_writebatch_put(b->wb, k, klen, rec ? rec : "", len);
    return PT_OK;
}

static int rdb_batch_del_entry(struct rdb_batch *b, const char *id, const char *domain)
{
    char k[SPOOL_KEY_MAX];
    size_t klen;
    if (!b)
        return PT_INVALID;
    int rc = key_entry(k, &klen, id, domain);
    if (rc != PT_OK)
        return rc;
    rocksdb_writebatch_delete(b->wb, k, klen);
    return PT_OK;
}

static int rdb_batch_del_content(struct rdb_batch *b, const char *id)
{
    char k[SPOOL_KEY_MAX];
    if (!b || !id_valid(id))
        return PT_INVALID;
    size_t klen = key_content(k, id);
    rocksdb_writebatch_delete(b->wb, k, klen);
    return PT_OK;
}

/* ---- group commit ---- */

static struct rdb_batch *spool_batch_pop_free(struct rdb_batch *b)
{
    struct rdb_batch *next = b->next;
    rdb_batch_free(b);
    return next;
}

/* Keeps b (taken) for try_resume; drops it beyond SPOOL_DEFER_MAX. */
static void spool_defer(struct rdb_spool *s, struct rdb_batch *b)
{
    b->next = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->ndeferred >= SPOOL_DEFER_MAX) {
        pthread_mutex_unlock(&s->lock);
        rdb_batch_free(b);
        return;
    }
    if (s->dtail)
        s->dtail->next = b;
    else
        s->dhead = b;
    s->dtail = b;
    s->ndeferred++;
    pthread_mutex_unlock(&s->lock);
}

/* A write or WAL flush failed (err, freed here): read-only mode until a reopen. */
static void spool_write_failed(struct rdb_spool *s, char *err)
{
    if (!atomic_exchange(&s->readonly, 1))
        log_error("spool: write failed, refusing new mail until it can write again "
                  "(deliveries go on): %s", err);
    rocksdb_free(err);
}

static void db_read_lock(struct rdb_spool *s)
{
    pthread_rwlock_rdlock(&s->dblock);
}

static void db_unlock(struct rdb_spool *s)
{
    pthread_rwlock_unlock(&s->dblock);
}

/* Writes the group (a list of batches) into the WAL buffer, then one WAL flush,
 * synced when a batch of the group is durable. Spool thread only. */
static int write_group(struct rdb_spool *s, struct rdb_batch *group)
{
    char *err = NULL;
    int sync = 0;
    db_read_lock(s);
    if (atomic_load(&s->readonly) || !s->db) {
        db_unlock(s);
        return PT_ERROR;
    }
    for (struct rdb_batch *b = group; b && !err; b = b->next) {
        sync |= b->durable;
        rocksdb_write(s->db, s->wopts, b->wb, &err);
    }
    if (!err) {
        rocksdb_flush_wal(s->db, (unsigned char)sync, &err);
        if (sync)
            atomic_fetch_add_explicit(&s->fsyncs, 1, memory_order_relaxed);
    }
    if (err)
        spool_write_failed(s, err);   /* the callbacks carry it to the owners (451) */
    db_unlock(s);
    return err ? PT_ERROR : PT_OK;
}

static int free_space_ok(const char *dir)
{
    struct statvfs v;
    return statvfs(dir, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize >= SPOOL_RESUME_FREE;
}

static double mono_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Read-only mode, spool thread: with enough free space, reopens the database for
 * writing and puts the deferred no-sync batches at the head of the queue (they are
 * older than anything queued since), so they are written first. */
static void try_resume(struct rdb_spool *s)
{
    if (!free_space_ok(s->dir))
        return;
    pthread_rwlock_wrlock(&s->dblock);
    char *err = NULL;
    if (s->db)
        rocksdb_close(s->db);   /* no WAL flush: the WAL writer saw an error */
    s->db = rocksdb_open(s->opts, s->dir, &err);
    if (err) {
        rocksdb_free(err);
        err = NULL;
        s->db = rocksdb_open_for_read_only(s->opts, s->dir, 0, &err);
        if (err) {
            /* Nothing to read from either: keep trying; readers get errors. */
            log_error("spool: reopening %s read-only failed: %s", s->dir, err);
            rocksdb_free(err);
            s->db = NULL;
        }
        pthread_rwlock_unlock(&s->dblock);
        return;
    }
    pthread_mutex_lock(&s->lock);
    size_t nd = s->ndeferred;
    if (s->dhead) {
        s->dtail->next = s->head;
        if (!s->head)
            s->tail = s->dtail;
        s->head = s->dhead;
    }
    s->dhead = s->dtail = NULL;
    s->ndeferred = 0;
    pthread_mutex_unlock(&s->lock);
    atomic_store(&s->readonly, 0);
    pthread_rwlock_unlock(&s->dblock);
    log_warn("spool: writing again (free space returned; %zu deferred updates queued "
             "first); taking mail", nd);
}

static void enqueue(struct rdb_spool *s, struct rdb_batch *b)
{
    b->next = NULL;
    int was_idle = s->head == NULL;
    if (s->tail)
        s->tail->next = b;
    else
        s->head = b;
    s->tail = b;
    if (was_idle)
        pthread_cond_signal(&s->cond);
}

static int rdb_has_entries(struct rdb_spool *s, const char *id);

/* After a written batch of rdb_remove_entry: its content goes once no entry of the
 * id remains (the spool thread is the only writer, so the answer is current). */
static void remove_content_if_last(struct rdb_spool *s, const char *id)
{
    if (rdb_has_entries(s, id))
        return;
    struct rdb_batch *b = rdb_batch_new();
    if (!b)
        return;                 /* an orphaned content: disk space, never lost mail */
    if (rdb_batch_del_content(b, id) != PT_OK) {
        rdb_batch_free(b);
        return;
    }
    pthread_mutex_lock(&s->lock);
    enqueue(s, b);
    pthread_mutex_unlock(&s->lock);
}

static void *spool_thread(void *arg)
{
    struct rdb_spool *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (!s->head && !s->closing) {
            if (!atomic_load(&s->readonly)) {
                pthread_cond_wait(&s->cond, &s->lock);
                continue;
            }
            struct timespec t;
            clock_gettime(CLOCK_REALTIME, &t);
            t.tv_sec += SPOOL_RETRY_S;
            if (pthread_cond_timedwait(&s->cond, &s->lock, &t) == ETIMEDOUT)
                break;
        }
        if (atomic_load(&s->readonly) && !s->closing && mono_now() >= s->next_resume) {
            pthread_mutex_unlock(&s->lock);
            try_resume(s);
            s->next_resume = mono_now() + SPOOL_RETRY_S;
            continue;
        }
        struct rdb_batch *group = s->head;
        s->head = s->tail = NULL;
        if (!group && s->closing)
            s->thread_done = 1;
        pthread_mutex_unlock(&s->lock);
        if (!group) {
            if (s->closing)
                break;          /* closing and drained */
            continue;
        }

        int status = write_group(s, group);
        while (group) {
            struct rdb_batch *next = group->next;
            if (group->durable) {
                if (group->cb)
                    group->cb(group->arg, status);
                rdb_batch_free(group);
            } else if (status != PT_OK) {
                spool_defer(s, group);   /* deletes and puts are idempotent: later */
            } else {
                if (group->last_of[0])
                    remove_content_if_last(s, group->last_of);
                rdb_batch_free(group);
            }
            group = next;
        }
    }
    return NULL;
}

static int rdb_commit_durable(struct rdb_spool *s, struct rdb_batch *b, spool_done_cb cb, void *arg)
{
    if (!s || !b) {
        rdb_batch_free(b);
        return PT_ERROR;
    }
    b->cb = cb;
    b->arg = arg;
    b->durable = 1;
    pthread_mutex_lock(&s->lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        rdb_batch_free(b);
        return PT_ERROR;
    }
    atomic_fetch_add_explicit(&s->durable_commits, 1, memory_order_relaxed);
    enqueue(s, b);
    pthread_mutex_unlock(&s->lock);
    return PT_OK;
}

/* Queued for the spool thread like a durable batch, without a callback and without
 * forcing a sync. After the spool thread has returned (close), nothing else runs:
 * written here. */
static int rdb_commit_nosync(struct rdb_spool *s, struct rdb_batch *b)
{
    if (!s || !b) {
        rdb_batch_free(b);
        return PT_ERROR;
    }
    b->durable = 0;
    pthread_mutex_lock(&s->lock);
    if (!s->thread_done && s->thread_started) {
        enqueue(s, b);
        pthread_mutex_unlock(&s->lock);
        return PT_OK;
    }
    pthread_mutex_unlock(&s->lock);
    char *err = NULL;
    db_read_lock(s);
    if (!atomic_load(&s->readonly) && s->db) {
        rocksdb_write(s->db, s->wopts, b->wb, &err);
        if (!err)
            rocksdb_flush_wal(s->db, 0, &err);
        if (err)
            spool_write_failed(s, err);
    }
    db_unlock(s);
    rdb_batch_free(b);
    return PT_OK;
}

/* Deletes the entry of (id, domain), and the content with it when no other entry of
 * id remains, without a sync. */
static int rdb_remove_entry(struct rdb_spool *s, const char *id, const char *domain)
{
    struct rdb_batch *b = rdb_batch_new();
    if (!b)
        return PT_NOMEM;
    int rc = rdb_batch_del_entry(b, id, domain);
    if (rc != PT_OK) {
        rdb_batch_free(b);
        return rc;
    }
    memcpy(b->last_of, id, SPOOL_ID_LEN);
    b->last_of[SPOOL_ID_LEN] = '\0';
    return rdb_commit_nosync(s, b);
}

static int rdb_writable(struct rdb_spool *s)
{
    return s && !atomic_load(&s->readonly);
}

/* ---- reads ---- */

static int rdb_get_content(struct rdb_spool *s, const char *id, struct buf *out)
{
    char k[SPOOL_KEY_MAX];
    char *err = NULL;
    if (!s || !out || !id_valid(id))
        return PT_INVALID;
    size_t klen = key_content(k, id);
    db_read_lock(s);
    if (!s->db) {
        db_unlock(s);
        return PT_ERROR;
    }
    rocksdb_pinnableslice_t *v = rocksdb_get_pinned(s->db, s->ropts, k, klen, &err);
    if (err) {
        db_unlock(s);
        rocksdb_free(err);
        return PT_ERROR;
    }
    if (!v) {
        db_unlock(s);
        return PT_NOTFOUND;
    }
    size_t vlen;
    const char *data = rocksdb_pinnableslice_value(v, &vlen);
    int rc = buf_append(out, data, vlen);
    rocksdb_pinnableslice_destroy(v);
    db_unlock(s);
    return rc;
}

/* On a read error this answers "yes": the caller then keeps the content, and an
 * orphaned content costs disk space, while a wrongly deleted one loses mail. */
static int rdb_has_entries(struct rdb_spool *s, const char *id)
{
    char lo[SPOOL_KEY_MAX], hi[SPOOL_KEY_MAX];
    if (!s || !id_valid(id))
        return 0;
    size_t n = key_entry_prefix(lo, id);
    memcpy(hi, lo, n);
    hi[n - 1] = '/' + 1;

    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_lower_bound(ro, lo, n);
    rocksdb_readoptions_set_iterate_upper_bound(ro, hi, n);
    rocksdb_readoptions_set_fill_cache(ro, 0);
    db_read_lock(s);
    if (!s->db) {
        db_unlock(s);
        rocksdb_readoptions_destroy(ro);
        return 1;
    }
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, ro);
    rocksdb_iter_seek(it, lo, n);
    int found = rocksdb_iter_valid(it);
    if (!found) {
        char *err = NULL;
        rocksdb_iter_get_error(it, &err);
        if (err) {
            rocksdb_free(err);
            found = 1;
        }
    }
    rocksdb_iter_destroy(it);
    db_unlock(s);
    rocksdb_readoptions_destroy(ro);
    return found;
}

/* Calls cb for each well-formed entry key in [lo, hi). Keys in the entry range that
 * do not parse (not written by this file) are skipped: one bad record must not stop
 * the recovery of a million good ones. Returns PT_OK, the non-zero value cb stopped
 * the scan with, or PT_ERROR on a read error. */
static int scan_range(struct rdb_spool *s, const char *lo, size_t lolen, const char *hi,
                      size_t hilen, size_t readahead, spool_scan_cb cb, void *arg)
{
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_lower_bound(ro, lo, lolen);
    rocksdb_readoptions_set_iterate_upper_bound(ro, hi, hilen);
    rocksdb_readoptions_set_fill_cache(ro, 0);
    if (readahead)
        rocksdb_readoptions_set_readahead_size(ro, readahead);
    db_read_lock(s);
    if (!s->db) {
        db_unlock(s);
        rocksdb_readoptions_destroy(ro);
        return PT_ERROR;
    }
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, ro);

    int rc = PT_OK;
    char id[SPOOL_ID_LEN + 1];
    char domain[SPOOL_DOMAIN_MAX + 1];
    for (rocksdb_iter_seek(it, lo, lolen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < 3 + SPOOL_ID_LEN || klen > SPOOL_KEY_MAX || k[1 + SPOOL_ID_LEN] != '/')
            continue;
        memcpy(id, k + 1, SPOOL_ID_LEN);
        id[SPOOL_ID_LEN] = '\0';
        size_t dlen = klen - (2 + SPOOL_ID_LEN);
        memcpy(domain, k + 2 + SPOOL_ID_LEN, dlen);
        domain[dlen] = '\0';
        if (!id_valid(id) || strlen(domain) != dlen)
            continue;
        const char *v = rocksdb_iter_value(it, &vlen);
        rc = cb(arg, id, domain, v, vlen);
        if (rc != 0)
            break;
    }
    if (rc == PT_OK) {
        char *err = NULL;
        rocksdb_iter_get_error(it, &err);
        if (err) {
            log_error("spool %s: read error: %s", s->dir, err);
            rocksdb_free(err);
            rc = PT_ERROR;
        }
    }
    rocksdb_iter_destroy(it);
    db_unlock(s);
    rocksdb_readoptions_destroy(ro);
    return rc;
}

static int rdb_scan_entries(struct rdb_spool *s, spool_scan_cb cb, void *arg)
{
    if (!s || !cb)
        return PT_INVALID;
    return scan_range(s, "q", 1, "r", 1, SPOOL_SCAN_READAHEAD, cb, arg);
}

static int rdb_scan_id(struct rdb_spool *s, const char *id, spool_scan_cb cb, void *arg)
{
    char lo[SPOOL_KEY_MAX], hi[SPOOL_KEY_MAX];
    if (!s || !cb || !id_valid(id))
        return PT_INVALID;
    size_t n = key_entry_prefix(lo, id);
    memcpy(hi, lo, n);
    hi[n - 1] = '/' + 1;
    return scan_range(s, lo, n, hi, n, 0, cb, arg);
}

static uint64_t prop_u64(struct rdb_spool *s, const char *name)
{
    uint64_t v = 0;
    db_read_lock(s);
    if (!s->db || rocksdb_property_int(s->db, name, &v) != 0)
        v = 0;
    db_unlock(s);
    return v;
}

static void rdb_stats(struct rdb_spool *s, struct spool_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!s)
        return;
    out->durable_commits = atomic_load_explicit(&s->durable_commits, memory_order_relaxed);
    out->fsyncs = atomic_load_explicit(&s->fsyncs, memory_order_relaxed);
    out->crc32c = s->crc;
    out->bytes = prop_u64(s, "rocksdb.live-sst-files-size") +
                 prop_u64(s, "rocksdb.cur-size-all-mem-tables");
}

/* ---- open / close ---- */

static int mkdir_p(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof(path)) {
        snprintf(err, errlen, "spool: bad directory name");
        return PT_INVALID;
    }
    memcpy(path, dir, n + 1);
    for (char *p = path + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, SPOOL_DIR_MODE) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "spool: mkdir %s: %s", path, strerror(errno));
            return PT_ERROR;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "spool: %s is not a directory", dir);
        return PT_ERROR;
    }
    return PT_OK;
}

/* The WAL recovery mode from PETREL_SPOOL_RECOVERY (RocksDB's WALRecoveryMode
 * numbers), or -1 for an unknown value. *name gets the mode's name. */
static int recovery_mode(const char **name)
{
    const char *v = getenv(SPOOL_RECOVERY_ENV);
    *name = v && *v ? v : "tail-only";
    if (!v || !*v)
        return 0;                               /* kTolerateCorruptedTailRecords */
    if (strcmp(v, "point-in-time") == 0)
        return 2;                               /* kPointInTimeRecovery */
    if (strcmp(v, "skip-corrupted") == 0)
        return 3;                               /* kSkipAnyCorruptedRecords */
    if (strcmp(v, "repair") == 0)
        return 0;                               /* RepairDB has read the WAL already */
    return -1;
}

/* Checks (or writes, for a new spool) the format marker in dir. */
static int check_format(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, SPOOL_FORMAT_FILE) >= (int)sizeof path) {
        snprintf(err, errlen, "spool: directory name too long");
        return PT_INVALID;
    }
    FILE *f = fopen(path, "r");
    if (f) {
        long v = 0;
        int ok = fscanf(f, "%ld", &v) == 1;
        fclose(f);
        if (!ok || v < 1) {
            snprintf(err, errlen, "%s is unreadable; it should hold \"%d\"", SPOOL_FORMAT_FILE,
                     SPOOL_FORMAT);
            return PT_ERROR;
        }
        if (v > SPOOL_FORMAT) {
            snprintf(err, errlen, "format %ld (%s) is newer than this petrel's (%d): run the "
                     "petrel version that wrote it, or restore a backup", v, SPOOL_FORMAT_FILE,
                     SPOOL_FORMAT);
            return PT_ERROR;
        }
        return PT_OK;
    }
    if (errno != ENOENT) {
        snprintf(err, errlen, "spool: %s: %s", path, strerror(errno));
        return PT_ERROR;
    }
    if ((f = fopen(path, "w"))) {                /* best effort: a full disk may refuse */
        fprintf(f, "%d\n", SPOOL_FORMAT);
        fclose(f);
    }
    return PT_OK;
}

static void configure(struct rdb_spool *s)
{
    rocksdb_options_t *o = s->opts;
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_write_buffer_size(o, SPOOL_WRITE_BUFFER);
    rocksdb_options_set_max_write_buffer_number(o, SPOOL_WRITE_BUFFERS);
    rocksdb_options_set_max_background_jobs(o, SPOOL_BG_JOBS);
    rocksdb_options_set_max_subcompactions(o, 1);
    rocksdb_options_set_max_open_files(o, SPOOL_MAX_OPEN_FILES);
    rocksdb_options_set_bytes_per_sync(o, SPOOL_BYTES_PER_SYNC);
    rocksdb_options_set_level_compaction_dynamic_level_bytes(o, 1);
    /* Mail text compresses about 2:1 with LZ4 at a few microseconds per message, and
     * only on flush/compaction: messages deleted before a flush never pay it. */
    rocksdb_options_set_compression(o, rocksdb_lz4_compression);
    /* Debian's librocksdb is built without NDEBUG, which makes DEBUG its default
     * LOG level: a formatted LOG line (and a write) for every FlushWAL call. */
    rocksdb_options_set_info_log_level(o, SPOOL_LOG_LEVEL);
    rocksdb_options_set_keep_log_file_num(o, SPOOL_LOG_KEEP);
    rocksdb_options_set_max_log_file_size(o, SPOOL_LOG_SIZE);
    rocksdb_options_set_manual_wal_flush(o, 1);
    rocksdb_options_set_manifest_preallocation_size(o, SPOOL_MANIFEST_PREALLOC);
    const char *mode_name;
    rocksdb_options_set_wal_recovery_mode(o, recovery_mode(&mode_name));
    /* The recovery mode tolerates a torn WAL tail (it can only hold unacknowledged
     * writes) and nothing else, unless PETREL_SPOOL_RECOVERY says (see the top). */

    s->cache = rocksdb_cache_create_lru(SPOOL_BLOCK_CACHE);
    s->topts = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(s->topts, s->cache);
    rocksdb_block_based_options_set_block_size(s->topts, SPOOL_BLOCK_SIZE);
    rocksdb_block_based_options_set_filter_policy(
        s->topts, rocksdb_filterpolicy_create_bloom_full(SPOOL_BLOOM_BITS));
    /* Index and filter blocks live in the bounded cache, not unbounded beside it:
     * with a million queued messages RSS must stay under the budget. */
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(s->topts, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(s->topts, 1);
    rocksdb_block_based_options_set_format_version(s->topts, 5);
    rocksdb_options_set_block_based_table_factory(o, s->topts);
}

static void spool_destroy(struct rdb_spool *s)
{
    if (s->db) {
        char *err = NULL;
        if (!atomic_load(&s->readonly))
            rocksdb_flush_wal(s->db, 1, &err);  /* the WAL is flushed by hand */
        rocksdb_free(err);
        rocksdb_close(s->db);
    }
    if (s->wopts)
        rocksdb_writeoptions_destroy(s->wopts);
    if (s->ropts)
        rocksdb_readoptions_destroy(s->ropts);
    if (s->opts)
        rocksdb_options_destroy(s->opts);
    if (s->topts)
        rocksdb_block_based_options_destroy(s->topts);
    if (s->cache)
        rocksdb_cache_destroy(s->cache);
    while (s->dhead)
        s->dhead = spool_batch_pop_free(s->dhead);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    pthread_rwlock_destroy(&s->dblock);
    free(s->dir);
    free(s);
}

static struct rdb_spool *rdb_open(const char *dir, char *err, size_t errlen)
{
    char *dberr = NULL;
    char scratch[1];
    if (!err || !errlen) {
        err = scratch;
        errlen = sizeof(scratch);
    }
    err[0] = '\0';

    if (!dir || mkdir_p(dir, err, errlen) != PT_OK)
        return NULL;
    const char *mode_name;
    const char *recovery = getenv(SPOOL_RECOVERY_ENV);
    if (recovery_mode(&mode_name) < 0) {
        snprintf(err, errlen, "spool: %s=%s: use skip-corrupted, point-in-time or repair",
                 SPOOL_RECOVERY_ENV, mode_name);
        return NULL;
    }
    if (check_format(dir, err, errlen) != PT_OK)
        return NULL;
    bool repair = recovery && strcmp(recovery, "repair") == 0;
    if (recovery && *recovery && !repair)
        log_warn("spool %s: recovering with %s (%s): damaged WAL records are dropped", dir,
                 mode_name, SPOOL_RECOVERY_ENV);
    struct rdb_spool *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "spool: out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_rwlock_init(&s->dblock, NULL);
    atomic_init(&s->readonly, 0);
    if (!(s->dir = strdup(dir))) {
        snprintf(err, errlen, "spool: out of memory");
        spool_destroy(s);
        return NULL;
    }
    atomic_init(&s->durable_commits, 0);
    atomic_init(&s->fsyncs, 0);

    s->crc = crc32c_select(); /* before RocksDB's first checksum */
    s->opts = rocksdb_options_create();
    configure(s);
    s->wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wopts, 0);
    s->ropts = rocksdb_readoptions_create();

    if (repair) {
        log_warn("spool %s: repairing (%s=repair): every readable table and log record is "
                 "kept, damaged table files are moved to %s/lost", dir, SPOOL_RECOVERY_ENV, dir);
        rocksdb_repair_db(s->opts, dir, &dberr);
        if (dberr) {
            snprintf(err, errlen, "spool: repair %s: %s", dir, dberr);
            rocksdb_free(dberr);
            spool_destroy(s);
            return NULL;
        }
    }
    s->db = rocksdb_open(s->opts, dir, &dberr);
    if (dberr && !free_space_ok(dir)) {
        /* A full disk: serve what is queued read-only, take mail when space returns. */
        log_error("spool: cannot open %s for writing (%s); opened read-only, refusing new "
                  "mail until space returns", dir, dberr);
        rocksdb_free(dberr);
        dberr = NULL;
        s->db = rocksdb_open_for_read_only(s->opts, dir, 0, &dberr);
        atomic_store(&s->readonly, 1);
    }
    if (dberr && strstr(dberr, "Corruption") && !(recovery && *recovery)) {
        snprintf(err, errlen, "spool: the spool is damaged; nothing was changed. Back up the "
                 "spool, then start once with %s=skip-corrupted if the error at the end names the "
                 "write-ahead log (*.log; =point-in-time stops at the damage), or with %s=repair "
                 "if it names a table (*.sst) or the MANIFEST (every readable table is kept, "
                 "damaged ones are moved to lost/ in the spool). Opening %s: %s",
                 SPOOL_RECOVERY_ENV, SPOOL_RECOVERY_ENV, dir, dberr);
        rocksdb_free(dberr);
        s->db = NULL;
        spool_destroy(s);
        return NULL;
    }
    if (dberr) {
        snprintf(err, errlen, "spool: open %s: %s", dir, dberr);
        rocksdb_free(dberr);
        s->db = NULL;
        spool_destroy(s);
        return NULL;
    }

    /* The spool thread takes no signals: they belong to the loops. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&s->thread, NULL, spool_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "spool: thread: %s", strerror(rc));
        spool_destroy(s);
        return NULL;
    }
    pthread_setname_np(s->thread, "petrel-spool");
    s->thread_started = 1;
    return s;
}

/* Must not be called from a spool_done_cb (that runs on the thread being joined). */
static void rdb_close(struct rdb_spool *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        s->closing = 1;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    spool_destroy(s);
}

/* ---- admin suspensions ("s" keys; after the entry range, so recovery never reads
 * them) ---- */

#define SPOOL_SUSP_KEY_MAX (1 + SPOOL_DOMAIN_MAX)

static int key_suspension(char *k, size_t *klen, const char *dest)
{
    size_t n = dest ? strnlen(dest, SPOOL_DOMAIN_MAX + 1) : 0;
    if (n == 0)
        return PT_INVALID;
    if (n > SPOOL_DOMAIN_MAX)
        return PT_TOOLONG;
    k[0] = 's';
    memcpy(k + 1, dest, n);
    *klen = 1 + n;
    return PT_OK;
}

static int rdb_batch_put_suspension(struct rdb_batch *b, const char *dest, double until)
{
    char k[SPOOL_SUSP_KEY_MAX];
    size_t klen;
    int rc = key_suspension(k, &klen, dest);
    if (rc != PT_OK)
        return rc;
    uint64_t bits;
    unsigned char v[8];
    memcpy(&bits, &until, sizeof bits);
    for (int i = 0; i < 8; i++)
        v[i] = (unsigned char)(bits >> (8 * i));
    rocksdb_writebatch_put(b->wb, k, klen, (const char *)v, sizeof v);
    return PT_OK;
}

static int rdb_batch_del_suspension(struct rdb_batch *b, const char *dest)
{
    char k[SPOOL_SUSP_KEY_MAX];
    size_t klen;
    int rc = key_suspension(k, &klen, dest);
    if (rc != PT_OK)
        return rc;
    rocksdb_writebatch_delete(b->wb, k, klen);
    return PT_OK;
}

static int rdb_scan_suspensions(struct rdb_spool *s, spool_suspension_cb cb, void *arg)
{
    if (!s || !cb)
        return PT_INVALID;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_lower_bound(ro, "s", 1);
    rocksdb_readoptions_set_iterate_upper_bound(ro, "t", 1);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, ro);
    int rc = PT_OK;
    char dest[SPOOL_DOMAIN_MAX + 1];
    for (rocksdb_iter_seek(it, "s", 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        const unsigned char *v = (const unsigned char *)rocksdb_iter_value(it, &vlen);
        if (klen < 2 || klen > SPOOL_SUSP_KEY_MAX || vlen != 8 || memchr(k + 1, 0, klen - 1))
            continue;
        memcpy(dest, k + 1, klen - 1);
        dest[klen - 1] = '\0';
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++)
            bits |= (uint64_t)v[i] << (8 * i);
        double until;
        memcpy(&until, &bits, sizeof until);
        if (!(until == until))   /* NaN: not ours */
            continue;
        if ((rc = cb(arg, dest, until)) != 0)
            break;
    }
    if (rc == PT_OK) {
        char *err = NULL;
        rocksdb_iter_get_error(it, &err);
        if (err) {
            rocksdb_free(err);
            rc = PT_ERROR;
        }
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    return rc;
}

/* ---- backend table ------------------------------------------------------- */

static void *ops_batch_new(void) { return rdb_batch_new(); }
static void ops_batch_free(void *b) { rdb_batch_free(b); }
static int ops_put_content(void *b, const char *id, const void *d, size_t n)
{
    return rdb_batch_put_content(b, id, d, n);
}
static int ops_put_entry(void *b, const char *id, const char *dom, const void *r, size_t n)
{
    return rdb_batch_put_entry(b, id, dom, r, n);
}
static int ops_del_entry(void *b, const char *id, const char *dom)
{
    return rdb_batch_del_entry(b, id, dom);
}
static int ops_del_content(void *b, const char *id) { return rdb_batch_del_content(b, id); }
static int ops_commit_durable(void *s, void *b, spool_done_cb cb, void *arg)
{
    return rdb_commit_durable(s, b, cb, arg);
}
static int ops_commit_nosync(void *s, void *b) { return rdb_commit_nosync(s, b); }
static int ops_remove_entry(void *s, const char *id, const char *dom)
{
    return rdb_remove_entry(s, id, dom);
}
static int ops_writable(void *s) { return rdb_writable(s); }
static int ops_get_content(void *s, const char *id, struct buf *out)
{
    return rdb_get_content(s, id, out);
}
static int ops_has_entries(void *s, const char *id) { return rdb_has_entries(s, id); }
static int ops_scan_entries(void *s, spool_scan_cb cb, void *arg)
{
    return rdb_scan_entries(s, cb, arg);
}
static int ops_scan_id(void *s, const char *id, spool_scan_cb cb, void *arg)
{
    return rdb_scan_id(s, id, cb, arg);
}
static int ops_put_suspension(void *b, const char *dest, double until)
{
    return rdb_batch_put_suspension(b, dest, until);
}
static int ops_del_suspension(void *b, const char *dest)
{
    return rdb_batch_del_suspension(b, dest);
}
static int ops_scan_suspensions(void *s, spool_suspension_cb cb, void *arg)
{
    return rdb_scan_suspensions(s, cb, arg);
}
static void ops_stats(void *s, struct spool_stats *out) { rdb_stats(s, out); }
static void ops_close(void *s) { rdb_close(s); }

void *spool_rocksdb_open(const char *dir, char *err, size_t errlen)
{
    return rdb_open(dir, err, errlen);
}

const struct spool_ops spool_rocksdb_ops = {
    .name = "rocksdb",
    .batch_new = ops_batch_new, .batch_free = ops_batch_free,
    .batch_put_content = ops_put_content, .batch_put_entry = ops_put_entry,
    .batch_del_entry = ops_del_entry, .batch_del_content = ops_del_content,
    .commit_durable = ops_commit_durable, .commit_nosync = ops_commit_nosync,
    .remove_entry = ops_remove_entry,
    .writable = ops_writable, .get_content = ops_get_content, .has_entries = ops_has_entries,
    .scan_entries = ops_scan_entries, .scan_id = ops_scan_id, .stats = ops_stats,
    .batch_put_suspension = ops_put_suspension, .batch_del_suspension = ops_del_suspension,
    .scan_suspensions = ops_scan_suspensions,
    .close = ops_close,
};
