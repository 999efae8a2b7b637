/* Unit tests for the RocksDB spool: round trip across reopen, group commit under
 * concurrency, durability across SIGKILL, nosync visibility. Never leaves temp dirs.
 * SPDX-License-Identifier: Apache-2.0 */
/* `test_spool --bench [dir] [committers] [seconds] [content bytes]` runs a
 * durable-commit micro-benchmark instead (prints only; not a test). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "queue/spool.h"
#include "util/buf.h"
#include "util/result.h"

#define GC_THREADS      8
#define GC_PER_THREAD   2000
#define CRASH_ROUNDS    4
#define CRASH_INFLIGHT  64
#define CRASH_CONTENT   1500

/* ---- helpers ---- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct tmpdir {
    char base[64];
    char path[128];     /* base + "/a/b/spool": spool_open must make the parents */
};

static void tmpdir_make(struct tmpdir *t)
{
    snprintf(t->base, sizeof(t->base), "/tmp/petrel-spool-XXXXXX");
    assert_non_null(mkdtemp(t->base));
    snprintf(t->path, sizeof(t->path), "%s/a/b/spool", t->base);
}

static struct spool *open_ok(const char *dir)
{
    char err[256];
    struct spool *s = spool_open(dir, err, sizeof(err));
    if (!s)
        fail_msg("spool_open(%s): %s", dir, err);
    return s;
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One waitable completion. */
struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    int status;
};

static void waiter_init(struct waiter *w)
{
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->done = 0;
    w->status = 1;
}

static void waiter_destroy(struct waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

static void waiter_cb(void *arg, int status)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->lock);
    w->done++;
    w->status = status;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static int waiter_wait(struct waiter *w)
{
    pthread_mutex_lock(&w->lock);
    while (!w->done)
        pthread_cond_wait(&w->cond, &w->lock);
    w->done = 0;
    int st = w->status;
    pthread_mutex_unlock(&w->lock);
    return st;
}

static int commit_wait(struct spool *s, struct spool_batch *b)
{
    struct waiter w;
    waiter_init(&w);
    int rc = spool_commit_durable(s, b, waiter_cb, &w);
    if (rc == PT_OK)
        rc = waiter_wait(&w);
    waiter_destroy(&w);
    return rc;
}

struct seen {
    int n;
    char id[8][17];
    char domain[8][256];
    char rec[8][64];
};

static int collect_cb(void *arg, const char *id, const char *domain, const void *rec, size_t len)
{
    struct seen *s = arg;
    if (s->n >= 8)
        return -1;
    snprintf(s->id[s->n], sizeof(s->id[0]), "%s", id);
    snprintf(s->domain[s->n], sizeof(s->domain[0]), "%s", domain);
    snprintf(s->rec[s->n], sizeof(s->rec[0]), "%.*s", (int)len, (const char *)rec);
    s->n++;
    return 0;
}

static int count_cb(void *arg, const char *id, const char *domain, const void *rec, size_t len)
{
    (*(size_t *)arg)++;
    return 0;
}

/* ---- tests ---- */

/* A no-sync write goes through the spool thread: visible soon, not at once. Waits
 * up to 5 s for the spool's state to satisfy pred. */
static int eventually(int (*pred)(struct spool *, const char *), struct spool *s, const char *id)
{
    for (int i = 0; i < 500; i++) {
        if (pred(s, id))
            return 1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int has_content(struct spool *s, const char *id)
{
    struct buf out;
    buf_init(&out, 0);
    int ok = spool_get_content(s, id, &out) == PT_OK;
    buf_free(&out);
    return ok;
}

static int no_content(struct spool *s, const char *id)
{
    return !has_content(s, id);
}

static const char *g_want;   /* the record the only entry must hold */

static int single_record_is(struct spool *s, const char *id)
{
    struct seen seen = {0};
    return spool_scan_entries(s, collect_cb, &seen) == PT_OK && seen.n == 1 &&
           strcmp(seen.rec[0], g_want) == 0;
}

static int no_entries(struct spool *s, const char *id)
{
    return !spool_has_entries(s, id);
}

static void test_roundtrip(void **state)
{
    struct tmpdir t;
    tmpdir_make(&t);
    const char *id = "0123456789abcdef";
    const char body[] = "Subject: hi\r\n\r\nhello\r\n";

    struct spool *s = open_ok(t.path);
    struct spool_batch *b = spool_batch_new();
    assert_int_equal(spool_batch_put_content(b, id, body, sizeof(body) - 1), PT_OK);
    assert_int_equal(spool_batch_put_entry(b, id, "example.org", "rec-org", 7), PT_OK);
    assert_int_equal(spool_batch_put_entry(b, id, "example.com", "rec-com", 7), PT_OK);
    assert_int_equal(commit_wait(s, b), PT_OK);
    struct spool_stats st;
    spool_stats(s, &st);
    assert_int_equal(st.durable_commits, 1);
    assert_int_equal(st.fsyncs, 1);
    assert_true(st.bytes > 0);
    spool_close(s);

    s = open_ok(t.path);
    struct seen seen = {0};
    assert_int_equal(spool_scan_entries(s, collect_cb, &seen), PT_OK);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.id[0], id);
    assert_string_equal(seen.domain[0], "example.com");     /* key order */
    assert_string_equal(seen.rec[0], "rec-com");
    assert_string_equal(seen.domain[1], "example.org");
    assert_string_equal(seen.rec[1], "rec-org");

    struct buf out;
    buf_init(&out, 0);
    buf_append(&out, "X", 1);
    assert_int_equal(spool_get_content(s, id, &out), PT_OK);   /* appends */
    assert_int_equal(out.len, 1 + sizeof(body) - 1);
    assert_memory_equal(out.data + 1, body, sizeof(body) - 1);
    buf_reset(&out);
    assert_int_equal(spool_get_content(s, "fedcba9876543210", &out), PT_NOTFOUND);
    assert_int_equal(out.len, 0);
    assert_true(spool_has_entries(s, id));
    assert_false(spool_has_entries(s, "0123456789abcdee"));
    assert_false(spool_has_entries(s, "0123456789abcdeg"));

    /* Delete one entry: the other still holds the content. */
    b = spool_batch_new();
    assert_int_equal(spool_batch_del_entry(b, id, "example.com"), PT_OK);
    assert_int_equal(commit_wait(s, b), PT_OK);
    assert_true(spool_has_entries(s, id));
    b = spool_batch_new();
    assert_int_equal(spool_batch_del_entry(b, id, "example.org"), PT_OK);
    assert_int_equal(spool_commit_nosync(s, b), PT_OK);
    assert_true(eventually(no_entries, s, id));
    b = spool_batch_new();
    assert_int_equal(spool_batch_del_content(b, id), PT_OK);
    assert_int_equal(commit_wait(s, b), PT_OK);
    assert_int_equal(spool_get_content(s, id, &out), PT_NOTFOUND);
    spool_close(s);

    s = open_ok(t.path);
    seen.n = 0;
    assert_int_equal(spool_scan_entries(s, collect_cb, &seen), PT_OK);
    assert_int_equal(seen.n, 0);
    assert_int_equal(spool_get_content(s, id, &out), PT_NOTFOUND);
    spool_close(s);
    buf_free(&out);
    rm_rf(t.base);
}

static void test_bad_input(void **state)
{
    struct spool_batch *b = spool_batch_new();
    char longdom[300];
    memset(longdom, 'a', sizeof(longdom) - 1);
    longdom[sizeof(longdom) - 1] = '\0';
    assert_int_equal(spool_batch_put_content(b, "short", "x", 1), PT_INVALID);
    assert_int_equal(spool_batch_put_content(b, "0123456789abcdef0", "x", 1), PT_INVALID);
    assert_int_equal(spool_batch_put_content(b, "0123456789abcdeZ", "x", 1), PT_INVALID);
    assert_int_equal(spool_batch_put_entry(b, "0123456789abcdef", "", "r", 1), PT_INVALID);
    assert_int_equal(spool_batch_put_entry(b, "0123456789abcdef", longdom, "r", 1), PT_TOOLONG);
    longdom[255] = '\0';
    assert_int_equal(spool_batch_put_entry(b, "0123456789abcdef", longdom, "r", 1), PT_OK);
    spool_batch_free(b);
    spool_batch_free(NULL);
    spool_close(NULL);

    /* A regular file where the directory should be. */
    struct tmpdir t;
    tmpdir_make(&t);
    char file[160], err[256];
    snprintf(file, sizeof(file), "%s/f", t.base);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(file, sizeof(file), "%s/f/spool", t.base);
    assert_null(spool_open(file, err, sizeof(err)));
    assert_true(err[0] != '\0');
    rm_rf(t.base);
}

static void test_nosync_visible(void **state)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct spool *s = open_ok(t.path);
    const char *id = "00000000000000a1";
    struct spool_batch *b = spool_batch_new();
    assert_int_equal(spool_batch_put_content(b, id, "body", 4), PT_OK);
    assert_int_equal(spool_batch_put_entry(b, id, "d.example", "r1", 2), PT_OK);
    assert_int_equal(spool_commit_nosync(s, b), PT_OK);

    assert_true(eventually(has_content, s, id));
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(spool_get_content(s, id, &out), PT_OK);
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "body", 4);
    assert_true(spool_has_entries(s, id));
    g_want = "r1";
    assert_true(eventually(single_record_is, s, id));

    /* Overwrite (retry-state update) is visible too, and in order. */
    b = spool_batch_new();
    assert_int_equal(spool_batch_put_entry(b, id, "d.example", "r2", 2), PT_OK);
    assert_int_equal(spool_commit_nosync(s, b), PT_OK);
    g_want = "r2";
    assert_true(eventually(single_record_is, s, id));

    /* A cb that stops the scan has its value returned. */
    b = spool_batch_new();
    assert_int_equal(spool_batch_put_entry(b, id, "e.example", "r3", 2), PT_OK);
    assert_int_equal(spool_commit_nosync(s, b), PT_OK);
    assert_true(eventually(spool_has_entries, s, id));
    struct seen seen = {.n = 7};
    for (int i = 0; i < 500 && spool_scan_entries(s, collect_cb, &seen) != -1; i++) {
        seen.n = 7;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    seen.n = 7;
    assert_int_equal(spool_scan_entries(s, collect_cb, &seen), -1);

    /* spool_remove_entry: the content stays while another entry of the id remains
     * and goes with the last one. */
    assert_int_equal(spool_remove_entry(s, id, "d.example"), PT_OK);
    g_want = "r3";
    assert_true(eventually(single_record_is, s, id));
    assert_true(has_content(s, id));
    assert_int_equal(spool_remove_entry(s, id, "e.example"), PT_OK);
    assert_true(eventually(no_content, s, id));
    assert_false(spool_has_entries(s, id));

    spool_close(s);
    buf_free(&out);
    rm_rf(t.base);
}

/* Group commit: GC_THREADS committers, each waiting for its own callback. */
struct gc_slot {
    atomic_int calls;
    atomic_int status;
    struct waiter *w;
};

struct gc_thread {
    struct spool *s;
    int idx;
    struct gc_slot *slots;
    int errors;
};

static void gc_cb(void *arg, int status)
{
    struct gc_slot *slot = arg;
    atomic_fetch_add(&slot->calls, 1);
    atomic_store(&slot->status, status);
    waiter_cb(slot->w, status);
}

static void *gc_run(void *arg)
{
    struct gc_thread *t = arg;
    struct waiter w;
    char id[17], body[256];
    waiter_init(&w);
    memset(body, 'x', sizeof(body));
    for (int i = 0; i < GC_PER_THREAD; i++) {
        struct gc_slot *slot = &t->slots[t->idx * GC_PER_THREAD + i];
        slot->w = &w;
        snprintf(id, sizeof(id), "%08x%08x", t->idx, i);
        struct spool_batch *b = spool_batch_new();
        if (spool_batch_put_content(b, id, body, sizeof(body)) != PT_OK ||
            spool_batch_put_entry(b, id, "example.net", "rec", 3) != PT_OK ||
            spool_commit_durable(t->s, b, gc_cb, slot) != PT_OK) {
            t->errors++;
            continue;
        }
        if (waiter_wait(&w) != PT_OK)
            t->errors++;
    }
    waiter_destroy(&w);
    return NULL;
}

static void test_group_commit(void **state)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct spool *s = open_ok(t.path);
    struct gc_slot *slots = calloc(GC_THREADS * GC_PER_THREAD, sizeof(*slots));
    assert_non_null(slots);
    struct gc_thread th[GC_THREADS];
    pthread_t tid[GC_THREADS];
    double t0 = now_sec();
    for (int i = 0; i < GC_THREADS; i++) {
        th[i] = (struct gc_thread){ .s = s, .idx = i, .slots = slots };
        assert_int_equal(pthread_create(&tid[i], NULL, gc_run, &th[i]), 0);
    }
    for (int i = 0; i < GC_THREADS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(th[i].errors, 0);
    }
    double dt = now_sec() - t0;
    for (int i = 0; i < GC_THREADS * GC_PER_THREAD; i++) {
        assert_int_equal(atomic_load(&slots[i].calls), 1);
        assert_int_equal(atomic_load(&slots[i].status), PT_OK);
    }
    struct spool_stats st;
    spool_stats(s, &st);
    assert_int_equal(st.durable_commits, GC_THREADS * GC_PER_THREAD);
    assert_true(st.fsyncs > 0);
    assert_true(st.fsyncs < st.durable_commits);
    printf("group commit: %llu commits, %llu fsyncs, %.2f commits/fsync, %.2f s\n",
           (unsigned long long)st.durable_commits, (unsigned long long)st.fsyncs,
           (double)st.durable_commits / st.fsyncs, dt);
    size_t n = 0;
    assert_int_equal(spool_scan_entries(s, count_cb, &n), PT_OK);
    assert_int_equal(n, GC_THREADS * GC_PER_THREAD);
    spool_close(s);
    free(slots);
    rm_rf(t.base);
}

/* spool_close completes everything queued before it returns. */
static void count_ok_cb(void *arg, int status)
{
    if (status == PT_OK)
        atomic_fetch_add((atomic_int *)arg, 1);
}

static void test_close_drains(void **state)
{
    struct tmpdir t;
    tmpdir_make(&t);
    struct spool *s = open_ok(t.path);
    atomic_int ok = 0;
    char id[17];
    for (int i = 0; i < 500; i++) {
        snprintf(id, sizeof(id), "%016x", i);
        struct spool_batch *b = spool_batch_new();
        assert_int_equal(spool_batch_put_entry(b, id, "x.example", "r", 1), PT_OK);
        assert_int_equal(spool_commit_durable(s, b, count_ok_cb, &ok), PT_OK);
    }
    spool_close(s);
    assert_int_equal(atomic_load(&ok), 500);
    s = open_ok(t.path);
    size_t n = 0;
    assert_int_equal(spool_scan_entries(s, count_cb, &n), PT_OK);
    assert_int_equal(n, 500);
    spool_close(s);
    rm_rf(t.base);
}

/* ---- crash durability ---- */

static void crash_id(char out[17], int round, long i)
{
    snprintf(out, 17, "%02x%014lx", round, i);
}

static void crash_body(char *body, size_t len, const char *id)
{
    for (size_t i = 0; i < len; i++)
        body[i] = id[i % 16] ^ (char)(i & 0x1f);
}

struct crash_child {
    sem_t inflight;
    int fd;
};

struct crash_commit {
    struct crash_child *c;
    char line[18];
};

static void crash_child_cb(void *arg, int status)
{
    struct crash_commit *cc = arg;
    if (status == PT_OK) {
        ssize_t n = write(cc->c->fd, cc->line, 17);   /* < PIPE_BUF: atomic */
        (void)n;
    }
    sem_post(&cc->c->inflight);
    free(cc);
}

/* Runs in a fresh process (exec'd): commits until killed, reporting each durable id. */
static int crash_child_main(const char *dir, int round, int fd)
{
    char err[256], body[CRASH_CONTENT];
    struct spool *s = spool_open(dir, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "child: %s\n", err);
        return 1;
    }
    struct crash_child c = { .fd = fd };
    sem_init(&c.inflight, 0, CRASH_INFLIGHT);
    for (long i = 0; i < 100000000L; i++) {
        sem_wait(&c.inflight);
        struct crash_commit *cc = malloc(sizeof(*cc));
        char id[17];
        crash_id(id, round, i);
        memcpy(cc->line, id, 16);
        cc->line[16] = '\n';
        cc->c = &c;
        crash_body(body, sizeof(body), id);
        struct spool_batch *b = spool_batch_new();
        if (spool_batch_put_content(b, id, body, sizeof(body)) != PT_OK ||
            spool_batch_put_entry(b, id, "crash.example", id, 16) != PT_OK ||
            spool_commit_durable(s, b, crash_child_cb, cc) != PT_OK)
            return 1;
    }
    spool_close(s);
    return 0;
}

static int pipe_read_ids(int fd, struct buf *got, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0)
        return r;
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n > 0)
        buf_append(got, tmp, (size_t)n);
    return n > 0 ? 1 : -1;      /* -1: EOF */
}

static void test_crash_durability(void **state)
{
    struct tmpdir t;
    tmpdir_make(&t);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            char fdarg[16], roundarg[16];
            snprintf(fdarg, sizeof(fdarg), "%d", pfd[1]);
            snprintf(roundarg, sizeof(roundarg), "%d", round);
            char *argv[] = { "test_spool", "--crash-child", t.path, roundarg, fdarg, NULL };
            execv("/proc/self/exe", argv);
            _exit(127);
        }
        close(pfd[1]);
        struct buf got;
        buf_init(&got, 0);
        /* Wait for the first durable id, then kill at a random moment. */
        double deadline = now_sec() + 20;
        while (got.len == 0 && now_sec() < deadline)
            if (pipe_read_ids(pfd[0], &got, 100) < 0)
                break;
        assert_true(got.len > 0);
        int delay_ms = 1 + rand() % 60;
        double kill_at = now_sec() + delay_ms / 1000.0;
        while (now_sec() < kill_at)
            pipe_read_ids(pfd[0], &got, 1);
        kill(pid, SIGKILL);
        int wst;
        waitpid(pid, &wst, 0);
        assert_true(WIFSIGNALED(wst));
        while (pipe_read_ids(pfd[0], &got, 1000) > 0)
            ;
        close(pfd[0]);

        struct spool *s = open_ok(t.path);
        struct buf content;
        buf_init(&content, 0);
        char body[CRASH_CONTENT], id[17];
        size_t n = got.len / 17, missing = 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(id, got.data + i * 17, 16);
            id[16] = '\0';
            crash_body(body, sizeof(body), id);
            buf_reset(&content);
            if (spool_get_content(s, id, &content) != PT_OK || content.len != sizeof(body) ||
                memcmp(content.data, body, sizeof(body)) != 0 || !spool_has_entries(s, id))
                missing++;
        }
        printf("crash round %d (seed %u): killed after %d ms, %zu acknowledged, %zu missing\n",
               round, seed, delay_ms, n, missing);
        assert_int_equal(got.len % 17, 0);
        assert_int_equal(missing, 0);
        spool_close(s);
        buf_free(&content);
        buf_free(&got);
    }
    rm_rf(t.base);
}

/* After several memtables have been flushed and their WAL files retired, a process
 * that dies (no close) must come back with exactly what it committed: the durable
 * contents, and none of the deleted ones resurrected from flushed tables or WALs. */
#define FLUSHES_BIG     (1u << 20)
#define FLUSHES_ROUNDS  260           /* ~4 memtables of 64 MB */
#define FLUSHES_KEEP    40

static void flushes_id(char id[17], int i)
{
    snprintf(id, 17, "%016x", (unsigned)i + 1);
}

/* The child (a fresh exec: RocksDB's thread pools do not survive a fork). */
static int flushes_child_main(const char *dir)
{
    char err[256], id[17];
    struct spool *s = spool_open(dir, err, sizeof err);
    char *big = malloc(FLUSHES_BIG);
    if (!s || !big)
        return 2;
    for (int i = 0; i < FLUSHES_ROUNDS + FLUSHES_KEEP; i++) {
        flushes_id(id, i);
        memset(big, 'a' + i % 26, FLUSHES_BIG);
        struct spool_batch *b = spool_batch_new();
        spool_batch_put_content(b, id, big, i < FLUSHES_ROUNDS ? FLUSHES_BIG : 100);
        spool_batch_put_entry(b, id, "d.test", "rec", 3);
        if (commit_wait(s, b) != PT_OK)
            return 3;
        if (i < FLUSHES_ROUNDS) {       /* delivered: deleted without sync */
            b = spool_batch_new();
            spool_batch_del_entry(b, id, "d.test");
            spool_batch_del_content(b, id);
            spool_commit_nosync(s, b);
        }
    }
    /* the last commit's fsync covers the deletions written before it */
    struct spool_batch *b = spool_batch_new();
    spool_batch_put_entry(b, "ffffffffffffffff", "d.test", "rec", 3);
    if (commit_wait(s, b) != PT_OK)
        return 3;
    _exit(0);                           /* no spool_close: as if killed */
}

static void test_crash_after_memtable_flushes(void **state)
{
    struct tmpdir t;
    tmpdir_make(&t);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[] = { "test_spool", "--flushes-child", t.path, NULL };
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    int wst;
    waitpid(pid, &wst, 0);
    assert_true(WIFEXITED(wst));
    assert_int_equal(WEXITSTATUS(wst), 0);

    struct spool *s = open_ok(t.path);
    struct buf content;
    buf_init(&content, 0);
    char id[17];
    for (int i = 0; i < FLUSHES_ROUNDS + FLUSHES_KEEP; i++) {
        flushes_id(id, i);
        buf_reset(&content);
        int rc = spool_get_content(s, id, &content);
        if (i < FLUSHES_ROUNDS) {
            if (rc != PT_NOTFOUND || spool_has_entries(s, id))
                fail_msg("deleted message %s came back after the crash", id);
        } else {
            assert_int_equal(rc, PT_OK);
            assert_int_equal(content.len, 100);
            assert_int_equal(content.data[0], 'a' + i % 26);
            assert_true(spool_has_entries(s, id));
        }
    }
    size_t n = 0;
    spool_scan_entries(s, count_cb, &n);
    assert_int_equal(n, FLUSHES_KEEP + 1);
    spool_close(s);
    buf_free(&content);
    rm_rf(t.base);
}

/* ---- micro-benchmark (not a test) ---- */

struct bench {
    struct spool *s;
    int idx;
    size_t content;
    volatile int *stop;
    long done;
};

/* Mail-like text (words and line breaks), so compression sees realistic input. */
static void bench_body(char *body, size_t len, unsigned seed)
{
    static const char *words[] = { "the ", "message ", "delivery ", "relay ", "queue ",
        "customer ", "invoice ", "account ", "please ", "update ", "order ", "12345 ",
        "shipping ", "thank ", "you ", "for ", "your ", "with ", "and ", "Lorem ", "ipsum " };
    size_t col = 0;
    for (size_t i = 0; i < len; ) {
        seed = seed * 1103515245u + 12345u;
        const char *w = words[(seed >> 16) % (sizeof(words) / sizeof(words[0]))];
        for (; *w && i < len; w++, i++, col++)
            body[i] = *w;
        if (col > 70 && i + 2 <= len) {
            body[i++] = '\r';
            body[i++] = '\n';
            col = 0;
        }
    }
}

static void *bench_run(void *arg)
{
    struct bench *b = arg;
    struct waiter w;
    char id[17], rec[120];
    /* A pool larger than the content, read at varying offsets, so that adjacent
     * messages differ as real ones do (compression gets no free dedup). */
    size_t pool = b->content + 65536;
    char *body = malloc(pool);
    bench_body(body, pool, (unsigned)b->idx * 7919u + 1);
    memset(rec, 'r', sizeof(rec));
    waiter_init(&w);
    while (!*b->stop) {
        snprintf(id, sizeof(id), "%04x%012lx", b->idx, b->done);
        struct spool_batch *sb = spool_batch_new();
        spool_batch_put_content(sb, id, body + (b->done * 4099) % 65536, b->content);
        spool_batch_put_entry(sb, id, "bench.example", rec, sizeof(rec));
        if (spool_commit_durable(b->s, sb, waiter_cb, &w) != PT_OK || waiter_wait(&w) != PT_OK)
            break;
        b->done++;
    }
    waiter_destroy(&w);
    free(body);
    return NULL;
}

/* Measures spool_commit_nosync latency while durable groups are being synced: the
 * callers are event loops, so this must not include an fsync wait. */
struct probe {
    struct spool *s;
    volatile int *stop;
    double lat[200000];
    size_t n;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *probe_run(void *arg)
{
    struct probe *p = arg;
    char id[17];
    while (!*p->stop && p->n < sizeof(p->lat) / sizeof(p->lat[0])) {
        snprintf(id, sizeof(id), "ffff%012zx", p->n);
        struct spool_batch *sb = spool_batch_new();
        spool_batch_put_entry(sb, id, "probe.example", "retry-state", 11);
        double t = now_sec();
        spool_commit_nosync(p->s, sb);
        p->lat[p->n++] = now_sec() - t;
        usleep(200);
    }
    return NULL;
}

static int bench_main(int argc, char **argv)
{
    char tmpl[] = "/tmp/petrel-spool-bench-XXXXXX";
    const char *dir = argc > 2 ? argv[2] : mkdtemp(tmpl);
    int nthreads = argc > 3 ? atoi(argv[3]) : 20;
    double secs = argc > 4 ? atof(argv[4]) : 5;
    size_t content = argc > 5 ? (size_t)atol(argv[5]) : 2048;
    char err[256];
    struct spool *s = spool_open(dir, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    volatile int stop = 0;
    struct bench *b = calloc(nthreads, sizeof(*b));
    pthread_t *tid = calloc(nthreads, sizeof(*tid));
    double t0 = now_sec();
    clock_t c0 = clock();
    for (int i = 0; i < nthreads; i++) {
        b[i] = (struct bench){ .s = s, .idx = i, .content = content, .stop = &stop };
        pthread_create(&tid[i], NULL, bench_run, &b[i]);
    }
    struct probe *probe = calloc(1, sizeof(*probe));
    pthread_t ptid;
    probe->s = s;
    probe->stop = &stop;
    pthread_create(&ptid, NULL, probe_run, probe);
    usleep((useconds_t)(secs * 1e6));
    stop = 1;
    pthread_join(ptid, NULL);
    long total = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(tid[i], NULL);
        total += b[i].done;
    }
    double dt = now_sec() - t0;
    double cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    struct spool_stats st;
    spool_stats(s, &st);
    printf("bench: %d committers, %zu B content: %ld commits in %.2f s = %.0f commits/s, "
           "%llu fsyncs, %.2f msgs/fsync, %.1f us CPU/commit, spool %.1f MB\n",
           nthreads, content, total, dt, total / dt, (unsigned long long)st.fsyncs,
           (double)st.durable_commits / (st.fsyncs ? st.fsyncs : 1), cpu / total * 1e6,
           st.bytes / 1e6);

    if (probe->n) {
        qsort(probe->lat, probe->n, sizeof(double), cmp_double);
        printf("bench: nosync latency under load: p50 %.0f us, p99 %.0f us, max %.0f us "
               "(%zu writes)\n", probe->lat[probe->n / 2] * 1e6,
               probe->lat[probe->n * 99 / 100] * 1e6, probe->lat[probe->n - 1] * 1e6, probe->n);
    }
    free(probe);
    double t1 = now_sec();
    size_t n = 0;
    spool_scan_entries(s, count_cb, &n);
    printf("bench: scan of %zu entries in %.3f s\n", n, now_sec() - t1);
    spool_close(s);
    if (argc <= 2)
        rm_rf(dir);
    free(b);
    free(tid);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--crash-child") == 0)
        return crash_child_main(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 3 && strcmp(argv[1], "--flushes-child") == 0)
        return flushes_child_main(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "--bench") == 0)
        return bench_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_nosync_visible),
        cmocka_unit_test(test_close_drains),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_crash_durability),
        cmocka_unit_test(test_crash_after_memtable_flushes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
