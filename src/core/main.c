/* petrel daemon entry point: loads the config, recovers the spool into the
 * scheduler, binds the listeners, starts worker and delivery threads, and stops
 * gracefully on SIGTERM/SIGINT. Never reports ready before every listener is bound.
 * SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "core/config.h"
#include "core/fdlimit.h"
#include "core/runtime.h"
#include "core/worker.h"
#include "http/http_server.h"
#include "obs/log.h"
#include "queue/entry.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "util/result.h"
#include "util/timeutil.h"

#define PETREL_VERSION "0.1.0"

struct recover_ctx {
    struct sched *sched;
    uint64_t n, bad;
};

static int recover_one(void *arg, const char *id, const char *domain, const void *rec, size_t len)
{
    struct recover_ctx *rc = arg;
    struct entry *e;
    if (entry_decode(rec, len, &e) != PT_OK) {
        rc->bad++;
        log_error("spool: undecodable entry %s/%s left in place", id, domain);
        return 0;
    }
    sched_enqueue(rc->sched, e);
    rc->n++;
    return 0;
}

static uid_t chown_uid;
static gid_t chown_gid;

static int chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (lchown(path, chown_uid, chown_gid) != 0)
        log_warn("cannot chown %s: %m", path);
    return 0;
}

/* configure_process { user }: the spool and log become the user's, then we drop
 * root for good (listeners, keys and users file are already open or loaded). */
static int drop_privileges(const struct config *cfg, char *err, size_t errlen)
{
    const char *user = cfg->process_user;
    if (!user)
        return PT_OK;
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        snprintf(err, errlen, "configure_process: unknown user '%s'", user);
        return PT_ERROR;
    }
    if (geteuid() != 0) {
        if (geteuid() == pw->pw_uid)
            return PT_OK;
        snprintf(err, errlen, "configure_process: must start as root to become '%s'", user);
        return PT_ERROR;
    }
    chown_uid = pw->pw_uid;
    chown_gid = pw->pw_gid;
    nftw(cfg->queue.spool_dir, chown_one, 16, FTW_PHYS);
    if (cfg->logging.path)
        chown_one(cfg->logging.path, NULL, 0, NULL);
    if (initgroups(user, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
        snprintf(err, errlen, "configure_process: cannot become '%s': %s", user, strerror(errno));
        return PT_ERROR;
    }
    if (setuid(0) == 0) {
        snprintf(err, errlen, "configure_process: privileges were not dropped");
        return PT_ERROR;
    }
    log_info("running as user %s (uid %u)", user, (unsigned)pw->pw_uid);
    return PT_OK;
}

static void on_signal(uv_signal_t *h, int signum)
{
    if (signum == SIGHUP) {
        log_warn("SIGHUP: live reload is not supported yet; restart petrel to apply config changes");
        return;
    }
    log_info("signal %d: shutting down", signum);
    uv_stop(h->loop);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: petrel [-c FILE] [--check] [--version]\n"
               "  -c, --config FILE  config file (default: petrel.lua)\n"
               "      --check        validate the config, print 'config ok' and exit\n"
               "      --version      print the version and exit\n");
}

int main(int argc, char **argv)
{
    const char *path = "petrel.lua";
    bool check = false;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "check", no_argument, NULL, 'C' },
        { "version", no_argument, NULL, 'V' }, { "help", no_argument, NULL, 'h' }, { 0 },
    };
    int o;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c': path = optarg; break;
        case 'C': check = true; break;
        case 'V': printf("petrel %s\n", PETREL_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char err[1024];
    struct config *cfg = config_load(path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check) {
        printf("config ok\n");
        config_free(cfg);
        return 0;
    }
    if (cfg->n_listeners == 0) {
        fprintf(stderr, "%s: no SMTP listener configured (petrel.start_smtp_listener)\n", path);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Message buffers (tens of KB) are allocated and freed per message: without
     * this, glibc trims and regrows the heap each time (measured: +0.2 ms CPU per
     * 50 KB message). Memory is still returned above 64 MB of free heap. The mmap
     * threshold at its maximum keeps RocksDB's memtable arena blocks (8 MB) on the
     * heap: mmap'ed, every new memtable faulted in fresh zeroed pages, one per 4 KB
     * of content (perf: page faults under the memcpy of MemTable::Add; -0.1 ms of
     * CPU per 50 KB message). */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    /* Say so when the config asks for something this build does not do yet,
     * rather than silently ignoring it. */
    if (cfg->n_header_checks)
        fprintf(stderr, "petrel: warning: configure_header_checks: not applied by this build\n");
    enum log_level lvl;
    if (log_level_parse(cfg->logging.level, &lvl) == PT_OK)
        log_set_level(lvl);
    if (log_open(cfg->logging.path, err, sizeof err) != PT_OK) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    fdlimit_apply(cfg); /* max_connections within ulimit -n (warns when it clamps) */
    struct runtime rt = { .cfg = cfg };
    if (gethostname(rt.hostname, sizeof rt.hostname - 1) != 0)
        snprintf(rt.hostname, sizeof rt.hostname, "localhost");
    if (runtime_tls_init(&rt, err, sizeof err) != PT_OK) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    rt.spool = spool_open(cfg->queue.spool_dir, err, sizeof err);
    if (!rt.spool) {
        fprintf(stderr, "petrel: spool %s: %s\n", cfg->queue.spool_dir, err);
        return 1;
    }
    struct spool_stats sst;
    spool_stats(rt.spool, &sst);
    log_info("spool %s open; CRC32C on %s", cfg->queue.spool_dir, sst.crc32c);
    rt.sched = sched_new(&rt, err, sizeof err);
    if (!rt.sched) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    double t0 = time_now();
    struct recover_ctx rc = { .sched = rt.sched };
    spool_scan_entries(rt.spool, recover_one, &rc);
    log_info("recovered %llu queued entries from %s in %.3f s%s",
             (unsigned long long)rc.n, cfg->queue.spool_dir, time_now() - t0,
             rc.bad ? " (some undecodable entries skipped)" : "");

    int nworkers = cfg->smtp_threads;
    struct worker *workers = calloc((size_t)nworkers, sizeof *workers);
    struct frontdoor *fd = frontdoor_new();
    if (!workers || !fd)
        return 1;
    for (int i = 0; i < nworkers; i++) {
        workers[i].index = i;
        workers[i].rt = &rt;
        workers[i].fd = fd;
    }
    if (workers_bind(workers, nworkers, cfg, err, sizeof err) != PT_OK) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    for (int i = 0; i < nworkers; i++)
        if (worker_start(&workers[i]) != PT_OK) {
            fprintf(stderr, "petrel: cannot start worker %d\n", i);
            return 1;
        }
    /* HTTP listeners: bound while still root (privileged ports, root-only keys) */
    struct http_server *http_srv[CFG_MAX_LISTENERS] = { 0 };
    for (int i = 0; i < cfg->n_http; i++) {
        http_srv[i] = http_start(&rt, &cfg->http[i], err, sizeof err);
        if (!http_srv[i]) {
            fprintf(stderr, "petrel: %s\n", err);
            return 1;
        }
    }
    if (drop_privileges(cfg, err, sizeof err) != PT_OK) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    for (int i = 0; i < nworkers; i++)
        if (worker_run(&workers[i]) != PT_OK) {
            fprintf(stderr, "petrel: cannot start worker %d\n", i);
            return 1;
        }
    if (sched_start(rt.sched) != PT_OK) {
        fprintf(stderr, "petrel: cannot start delivery threads\n");
        return 1;
    }

    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sigs[3];
    int signums[3] = { SIGTERM, SIGINT, SIGHUP };
    for (int i = 0; i < 3; i++) {
        uv_signal_init(loop, &sigs[i]);
        uv_signal_start(&sigs[i], on_signal, signums[i]);
    }
    for (int i = 0; i < cfg->n_listeners; i++)
        log_info("listening on %s (%s)", cfg->listeners[i].listen, cfg->listeners[i].name);
    for (int i = 0; i < cfg->n_http; i++) {
        log_info("listening on %s://%s", http_scheme(http_srv[i]), cfg->http[i].listen);
        http_set_ready(http_srv[i], true);
    }
    fprintf(stderr, "petrel ready\n");
    fflush(stderr);
    uv_run(loop, UV_RUN_DEFAULT);

    /* graceful stop: HTTP and SMTP inbound first (finish transactions), then
     * delivery, then disk */
    for (int i = 0; i < cfg->n_http; i++)
        http_stop(http_srv[i]);
    for (int i = 0; i < nworkers; i++)
        worker_request_stop(&workers[i]);
    for (int i = 0; i < nworkers; i++)
        worker_join(&workers[i]);
    sched_stop(rt.sched);
    sched_free(rt.sched);
    struct spool_stats st;
    spool_stats(rt.spool, &st);
    log_info("spool: %llu durable commits, %llu fsyncs (%.1f commits per fsync)",
             (unsigned long long)st.durable_commits, (unsigned long long)st.fsyncs,
             st.fsyncs ? (double)st.durable_commits / (double)st.fsyncs : 0.0);
    spool_close(rt.spool);
    log_info("stopped");
    log_close();
    for (int i = 0; i < 3; i++)
        uv_close((uv_handle_t *)&sigs[i], NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    frontdoor_free(fd);
    free(workers);
    runtime_tls_free(&rt);
    config_free(cfg);
    return 0;
}
