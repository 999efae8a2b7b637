/* Unit tests for the Redis queue: the redis:// URL parser (pure), and the spool
 * backend against a real redis-server started here (temp dir, loopback, free port,
 * AOF always; stopped by PID): durable commit then reads, leases, release, delete
 * cleanup, the durability check. The server tests skip when redis-server is missing.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/redis.h"
#include "queue/entry.h"
#include "queue/spool.h"
#include "queue/spool_redis.h"
#include "util/buf.h"
#include "util/result.h"
#include "util/timeutil.h"

#define REDIS_SERVER "/usr/bin/redis-server"

extern char **environ;

/* ---- URL parser ---------------------------------------------------------- */

static void test_url_good(void **st)
{
    (void)st;
    struct redis_url u;
    char err[200];
    assert_int_equal(redis_url_parse("redis://127.0.0.1:6379/0", &u, err, sizeof err), PT_OK);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_false(u.tls);
    assert_int_equal(redis_url_parse("redis://h", &u, err, sizeof err), PT_OK);
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 6379);
    assert_int_equal(redis_url_parse("rediss://user:p%40ss%3a@[::1]:6380/12?ca_file=/etc/ca.pem",
                                     &u, err, sizeof err), PT_OK);
    assert_true(u.tls);
    assert_string_equal(u.user, "user");
    assert_string_equal(u.password, "p@ss:");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 12);
    assert_string_equal(u.ca_file, "/etc/ca.pem");
    char text[600];
    redis_url_text(&u, text, sizeof text);
    assert_string_equal(text, "rediss://user:***@[::1]:6380/12");
    assert_int_equal(redis_url_parse("redis://:secret@redis.example:7000", &u, err, sizeof err),
                     PT_OK);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "secret");
}

static void test_url_bad(void **st)
{
    (void)st;
    static const char *const bad[] = {
        "http://x", "redis://", "redis://:6379", "redis://h:0", "redis://h:65536",
        "redis://h:12a", "redis://h/x", "redis://h/2000000", "redis://pw@h",
        "redis://u:%4@h", "redis://u:%zz@h", "redis://h?ca_file=/x", "rediss://h?foo=1",
        "redis://[::1", "redis://[]:1", "redis://h:", "redis://u:%00@h", "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct redis_url u;
        char err[200] = "";
        if (redis_url_parse(bad[i], &u, err, sizeof err) != PT_INVALID)
            fail_msg("accepted: %s", bad[i]);
        assert_true(err[0] != 0);
    }
}

/* ---- a private redis-server ---------------------------------------------- */

struct redis_proc {
    pid_t pid;
    int port;
    char dir[64];
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static bool redis_start(struct redis_proc *r, const char *appendonly, const char *appendfsync)
{
    if (access(REDIS_SERVER, X_OK) != 0)
        return false;
    snprintf(r->dir, sizeof r->dir, "/tmp/petrel-redis-XXXXXX");
    if (!mkdtemp(r->dir))
        return false;
    r->port = free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", r->port);
    char *argv[] = { REDIS_SERVER, "--bind", "127.0.0.1", "--port", port, "--dir", r->dir,
                     "--appendonly", (char *)appendonly, "--appendfsync", (char *)appendfsync,
                     "--save", "", "--daemonize", "no", "--logfile", "", NULL };
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", 1, 0);
    if (posix_spawn(&r->pid, REDIS_SERVER, &fa, NULL, argv, environ) != 0)
        return false;
    posix_spawn_file_actions_destroy(&fa);
    struct redis_url u = { .port = (uint16_t)r->port };
    strcpy(u.host, "127.0.0.1");
    for (int i = 0; i < 100; i++) {
        char err[200];
        struct redis_conn *c = redis_connect(&u, 1.0, err, sizeof err);
        if (c) {
            redisReply *rep = redis_cmdf(c, "PING");
            bool up = rep && rep->type == REDIS_REPLY_STATUS;
            if (rep)
                freeReplyObject(rep);
            redis_close(c);
            if (up)
                return true;
        }
        usleep(50000);
    }
    return false;
}

static void redis_stop(struct redis_proc *r)
{
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", r->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", r->dir);
}

static redisReply *cmd(struct redis_proc *r, const char *fmt, const char *arg)
{
    struct redis_url u = { .port = (uint16_t)r->port };
    strcpy(u.host, "127.0.0.1");
    char err[200];
    struct redis_conn *c = redis_connect(&u, 1.0, err, sizeof err);
    assert_non_null(c);
    redisReply *rep = redis_cmdf(c, fmt, arg);
    redis_close(c);
    return rep;
}

static long long cmd_int(struct redis_proc *r, const char *fmt, const char *arg)
{
    redisReply *rep = cmd(r, fmt, arg);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    long long v = rep->integer;
    freeReplyObject(rep);
    return v;
}

/* ---- the spool ----------------------------------------------------------- */

struct done {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n, status;
};

static void on_done(void *arg, int status)
{
    struct done *d = arg;
    pthread_mutex_lock(&d->lock);
    d->n++;
    d->status = status;
    pthread_cond_signal(&d->cond);
    pthread_mutex_unlock(&d->lock);
}

static int wait_done(struct done *d, int n)
{
    pthread_mutex_lock(&d->lock);
    while (d->n < n)
        pthread_cond_wait(&d->cond, &d->lock);
    int st = d->status;
    pthread_mutex_unlock(&d->lock);
    return st;
}

static struct spool *open_spool(struct redis_proc *r, char *err, size_t errlen)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", r->port);
    struct spool_redis_opts o = { .url = url, .key_prefix = "t:", .lease = 30,
                                  .max_queue_depth = 1000 };
    return spool_redis_open(&o, err, errlen);
}

static int scan_count(void *arg, const char *id, const char *domain, const void *rec, size_t len)
{
    (void)id;
    (void)domain;
    struct entry *e;
    assert_int_equal(entry_decode(rec, len, &e), PT_OK);
    entry_free(e);
    (*(int *)arg)++;
    return 0;
}

static void test_spool_roundtrip(void **st)
{
    (void)st;
    struct redis_proc r;
    if (!redis_start(&r, "yes", "always"))
        skip();
    char err[300];
    struct spool *s = open_spool(&r, err, sizeof err);
    assert_non_null(s);
    assert_true(spool_shared(s));
    assert_string_equal(spool_backend_name(s), "redis");

    char id[ENTRY_ID_LEN + 1];
    entry_new_id(id);
    const char *rc1[] = { "a@one.test" }, *rc2[] = { "b@two.test" };
    struct entry *e1 = entry_new(id, "one.test", "s@x.test", rc1, 1);
    struct entry *e2 = entry_new(id, "two.test", "s@x.test", rc2, 1);
    e1->received_at = e2->received_at = e1->next_attempt = e2->next_attempt = time_now();
    struct buf rec1, rec2;
    buf_init(&rec1, 0);
    buf_init(&rec2, 0);
    assert_int_equal(entry_encode(e1, &rec1), PT_OK);
    assert_int_equal(entry_encode(e2, &rec2), PT_OK);
    struct spool_batch *b = spool_batch_new();
    assert_int_equal(spool_batch_put_content(b, id, "Subject: x\r\n\r\nbody\r\n", 20), PT_OK);
    assert_int_equal(spool_batch_put_entry(b, id, "one.test", rec1.data, rec1.len), PT_OK);
    assert_int_equal(spool_batch_put_entry(b, id, "two.test", rec2.data, rec2.len), PT_OK);
    struct done d = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -99 };
    assert_int_equal(spool_commit_durable(s, b, on_done, &d), PT_OK);
    assert_int_equal(wait_done(&d, 1), PT_OK);

    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(spool_get_content(s, id, &out), PT_OK);
    assert_int_equal(out.len, 20);
    assert_memory_equal(out.data, "Subject: x\r\n\r\nbody\r\n", 20);
    buf_free(&out);
    int n = 0;
    assert_int_equal(spool_scan_id(s, id, scan_count, &n), PT_OK);
    assert_int_equal(n, 2);
    assert_int_equal(spool_scan_id(s, "nothex", scan_count, &n), PT_INVALID);
    assert_true(spool_has_entries(s, id));
    /* both entries leased to this node (durable put = ingest) */
    assert_int_equal(cmd_int(&r, "HLEN %s", "t:own"), 2);
    assert_int_equal(cmd_int(&r, "ZCARD %s", "t:due"), 2);

    /* a deferral (no-sync put) releases its entry to the shared due index */
    e1->next_attempt = time_now() + 300;
    buf_reset(&rec1);
    assert_int_equal(entry_encode(e1, &rec1), PT_OK);
    b = spool_batch_new();
    assert_int_equal(spool_batch_put_entry(b, id, "one.test", rec1.data, rec1.len), PT_OK);
    assert_int_equal(spool_commit_nosync(s, b), PT_OK);
    for (int i = 0; i < 100 && cmd_int(&r, "HLEN %s", "t:own") != 1; i++)
        usleep(20000);
    assert_int_equal(cmd_int(&r, "HLEN %s", "t:own"), 1);

    /* deleting the entries one by one: the content goes with the last */
    b = spool_batch_new();
    assert_int_equal(spool_batch_del_entry(b, id, "one.test"), PT_OK);
    assert_int_equal(spool_commit_nosync(s, b), PT_OK);
    b = spool_batch_new();
    assert_int_equal(spool_batch_del_entry(b, id, "two.test"), PT_OK);
    assert_int_equal(spool_commit_nosync(s, b), PT_OK);
    for (int i = 0; i < 100 && spool_has_entries(s, id); i++)
        usleep(20000);
    assert_false(spool_has_entries(s, id));
    buf_init(&out, 0);
    assert_int_equal(spool_get_content(s, id, &out), PT_NOTFOUND);
    buf_free(&out);
    assert_int_equal(cmd_int(&r, "ZCARD %s", "t:due"), 0);
    assert_int_equal(cmd_int(&r, "EXISTS %s", "t:doms"), 0);

    struct spool_stats sst;
    spool_stats(s, &sst);
    assert_true(sst.durable_commits >= 1);
    spool_close(s);
    entry_free(e1);
    entry_free(e2);
    buf_free(&rec1);
    buf_free(&rec2);
    redis_stop(&r);
}

static void test_spool_refuses_non_durable_redis(void **st)
{
    (void)st;
    struct redis_proc r;
    if (!redis_start(&r, "no", "everysec"))
        skip();
    char err[300] = "";
    struct spool *s = open_spool(&r, err, sizeof err);
    assert_null(s);
    assert_non_null(strstr(err, "redis is not durable: appendonly=no appendfsync=everysec"));
    redis_stop(&r);
}

static void test_spool_commit_fails_when_redis_is_gone(void **st)
{
    (void)st;
    struct redis_proc r;
    if (!redis_start(&r, "yes", "always"))
        skip();
    char err[300];
    struct spool *s = open_spool(&r, err, sizeof err);
    assert_non_null(s);
    redis_stop(&r);
    char id[ENTRY_ID_LEN + 1];
    entry_new_id(id);
    struct spool_batch *b = spool_batch_new();
    assert_int_equal(spool_batch_put_content(b, id, "x", 1), PT_OK);
    struct done d = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -99 };
    double t0 = time_now();
    assert_int_equal(spool_commit_durable(s, b, on_done, &d), PT_OK);
    assert_int_equal(wait_done(&d, 1), PT_ERROR);      /* never PT_OK */
    assert_true(time_now() - t0 < 10);
    spool_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_good),
        cmocka_unit_test(test_url_bad),
        cmocka_unit_test(test_spool_roundtrip),
        cmocka_unit_test(test_spool_refuses_non_durable_redis),
        cmocka_unit_test(test_spool_commit_fails_when_redis_is_gone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
