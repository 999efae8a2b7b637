/* petrel daemon entry point: loads the config, recovers the spool into the
 * scheduler, binds the listeners, starts worker and delivery threads, reloads the
 * config on SIGHUP (or POST /api/reload), and stops gracefully on SIGTERM/SIGINT.
 * Never reports ready before every listener is bound; a reload that fails keeps
 * the running config whole.
 * SPDX-License-Identifier: Apache-2.0 */
#include <ftw.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
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

#include "cluster/node.h"
#include "core/config.h"
#include "core/fdlimit.h"
#include "core/runtime.h"
#include "delivery/warmup.h"
#include "delivery/tlsrpt_send.h"
#include "delivery/route.h"
#include "core/worker.h"
#include "delivery/shaping_rules.h"
#include "http/http_server.h"
#include "obs/log.h"
#include "obs/notify.h"
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

/* ---- reload -------------------------------------------------------------- */

struct reloader {
    pthread_mutex_t lock;             /* one reload at a time; guards the fields below */
    bool stopped;                     /* shutting down: no more reloads */
    const char *path;
    struct runtime *rt;
    struct worker_group *wg;
    int n_http;                       /* HTTP listeners started (Lua state per thread) */
    uint64_t last_id;
};

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Options a reload cannot apply to the running process: said once per reload. */
static void warn_restart_only(const struct config *old, const struct config *cfg)
{
    char what[512] = "";
    size_t n = 0;
#define NOTE(cond, name)                                                               \
    do {                                                                               \
        if (cond)                                                                      \
            n += (size_t)snprintf(what + n, n < sizeof what ? sizeof what - n : 0, "%s%s", \
                                  n ? ", " : "", name);                                \
    } while (0)
    NOTE(old->smtp_threads != cfg->smtp_threads, "configure_process.smtp_threads");
    NOTE(str_differs(old->process_user, cfg->process_user), "configure_process.user");
    NOTE(str_differs(old->queue.spool_dir, cfg->queue.spool_dir), "configure_queue.spool_dir");
    NOTE(old->delivery.tls_rpt != cfg->delivery.tls_rpt ||
         old->delivery.tls_rpt_interval != cfg->delivery.tls_rpt_interval ||
         str_differs(old->delivery.tls_rpt_org, cfg->delivery.tls_rpt_org) ||
         str_differs(old->delivery.tls_rpt_from, cfg->delivery.tls_rpt_from),
         "configure_delivery.tls_rpt*");
    NOTE(str_differs(old->queue.backend, cfg->queue.backend) ||
         str_differs(old->queue.redis_url, cfg->queue.redis_url) ||
         str_differs(old->queue.key_prefix, cfg->queue.key_prefix) ||
         old->queue.wait_replicas != cfg->queue.wait_replicas || old->queue.lease != cfg->queue.lease,
         "configure_queue.backend/redis_url/key_prefix/wait_replicas/lease");
    NOTE(str_differs(old->redis.url, cfg->redis.url) ||
         str_differs(old->redis.key_prefix, cfg->redis.key_prefix), "configure_redis");
    NOTE(old->delivery.threads != cfg->delivery.threads, "configure_delivery.threads");
    bool http = old->n_http != cfg->n_http;
    for (int i = 0; !http && i < cfg->n_http; i++) {
        const struct cfg_http_listener *a = &old->http[i], *b = &cfg->http[i];
        http = str_differs(a->listen, b->listen) || a->n_api_keys != b->n_api_keys ||
               a->n_trusted_hosts != b->n_trusted_hosts || (a->tls == NULL) != (b->tls == NULL) ||
               memcmp(a->trusted_hosts, b->trusted_hosts,
                      (size_t)a->n_trusted_hosts * sizeof *a->trusted_hosts) != 0;
        for (int k = 0; !http && k < a->n_api_keys; k++)
            http = strcmp(a->api_keys[k], b->api_keys[k]) != 0;
        http = http || (a->tls && (str_differs(a->tls->cert_file, b->tls->cert_file) ||
                                   str_differs(a->tls->key_file, b->tls->key_file)));
    }
    NOTE(http, "start_http_listener");
    /* The delivery threads take each new generation (routes, retries, DKIM keys,
     * timeouts, hooks, shaping rules: each queue is rebound to the new rules once
     * its connections under the old ones have closed); the MTA-STS/DANE agent is
     * made once per thread. */
    NOTE(old->delivery.mta_sts != cfg->delivery.mta_sts || old->delivery.dane != cfg->delivery.dane,
         "configure_delivery.mta_sts/dane");
    bool dns = old->n_dns_resolvers != cfg->n_dns_resolvers;
    for (int i = 0; !dns && i < cfg->n_dns_resolvers; i++)
        dns = strcmp(old->dns_resolvers[i], cfg->dns_resolvers[i]) != 0;
    NOTE(dns, "configure_dns");
    NOTE(old->auth_max_failures != cfg->auth_max_failures ||
         old->auth_failure_window != cfg->auth_failure_window ||
         old->auth_ban_time != cfg->auth_ban_time, "configure_auth ban settings");
#undef NOTE
    if (n)
        log_warn("reload: changed settings that apply at the next restart only: %s", what);
}

/* Caller holds r->lock. */
static int reload_locked(struct reloader *r, char *err, size_t errlen)
{
    struct config *cfg = config_load(r->path, err, errlen);
    if (!cfg)
        return PT_INVALID;
    if (cfg->n_listeners == 0) {
        snprintf(err, errlen, "%s:0: no SMTP listener configured (petrel.start_smtp_listener)",
                 r->path);
        config_free(cfg);
        return PT_INVALID;
    }
    fdlimit_apply(cfg);
    const struct config *old = r->rt->gen->cfg;  /* swapped only here, under r->lock */
    int n_dlv = r->rt->cfg->delivery.threads > 0 ? r->rt->cfg->delivery.threads : 1;
    struct cfg_gen *gen = runtime_gen_build(cfg, r->last_id + 1, r->wg->n, r->n_http, n_dlv, err,
                                            errlen);
    if (!gen)
        return PT_INVALID;
    struct worker_listen_plan plan;
    if (workers_prepare(r->wg, gen->cfg, &plan, err, errlen) != PT_OK) {
        runtime_gen_release(gen);
        return PT_INVALID;
    }
    r->last_id++;
    cfg = gen->cfg;
    /* the delivery threads rebind their queues to changed shaping rules */
    cfg->shaping->epoch = old->shaping->epoch +
                          (shaping_rules_equal(old->shaping, cfg->shaping) ? 0 : 1);
    warn_restart_only(old, cfg);
    for (const char *w = cfg->warnings; w && *w; w += strcspn(w, "\n") + 1)
        log_warn("reload: %.*s", (int)strcspn(w, "\n"), w);
    enum log_level lvl;
    if (log_level_parse(cfg->logging.level, &lvl) == PT_OK)
        log_set_level(lvl);
    if (str_differs(old->logging.path, cfg->logging.path))
        log_reopen_path(cfg->logging.path);
    for (int i = 0; i < WORKER_MAX_SLOTS; i++)
        if (plan.drop[i])
            log_info("reload: closing listener %s", r->wg->slot[i].listen);
    for (int a = 0; a < plan.n_add; a++)
        log_info("reload: listening on %s", r->wg->slot[plan.add_slot[a]].listen);
    runtime_gen_swap(r->rt, gen);   /* new sessions and requests get it from now on */
    sched_reloaded(r->rt->sched);   /* the delivery threads take it now */
    workers_commit(r->wg, &plan);   /* listeners added and closed */
    return PT_OK;
}

/* SIGHUP and POST /api/reload. */
static int reload(void *arg, char *err, size_t errlen)
{
    struct reloader *r = arg;
    /* logrotate moved the files: new lines go to new files, reload or not */
    log_diag_reopen();
    log_reopen();
    pthread_mutex_lock(&r->lock);
    int rc;
    if (r->stopped) {
        snprintf(err, errlen, "%s:0: shutting down", r->path);
        rc = PT_ERROR;
    } else {
        rc = reload_locked(r, err, errlen);
    }
    pthread_mutex_unlock(&r->lock);
    if (rc != PT_OK)
        log_error("reload failed: %s", err);
    else
        log_notice("reload ok");
    return rc;
}

static void on_watchdog(uv_timer_t *t)
{
    notify_watchdog();
}

static void on_hup_timer(uv_timer_t *t)
{
    char err[1024];
    notify_reloading();
    notify_reloaded(reload(t->data, err, sizeof err) == PT_OK);
}

static void on_signal(uv_signal_t *h, int signum)
{
    if (signum == SIGHUP) {
        /* reload on the next loop turn: SIGHUPs that arrive meanwhile (or during
         * the reload) make one more reload, not one each, and SIGTERM never waits
         * behind a backlog of them */
        uv_timer_t *t = h->data;
        if (!uv_is_active((uv_handle_t *)t))
            uv_timer_start(t, on_hup_timer, 0, 0);
        return;
    }
    log_info("signal %d: shutting down", signum);
    notify_stopping();
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
    if (cfg->warnings)
        fputs(cfg->warnings, stderr);
    if (check) {
        /* What start and reload build beyond the Lua: TLS contexts, CA files, the
         * users file, DKIM keys and the hook states; a config that cannot start is
         * not "ok". One state of each kind is enough to run the config once more. */
        struct cfg_gen *gen = runtime_gen_build(cfg, 0, 1, cfg->n_http ? 1 : 0, 1, err,
                                                sizeof err);
        if (!gen) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        runtime_gen_release(gen);
        printf("config ok\n");
        return 0;
    }
    if (cfg->n_listeners == 0) {
        fprintf(stderr, "%s: no SMTP listener configured (petrel.start_smtp_listener)\n", path);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);  /* a logrotate during start must not kill us; handled once ready */
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
    enum log_level lvl;
    if (log_level_parse(cfg->logging.level, &lvl) == PT_OK)
        log_set_level(lvl);
    log_diag_track_stderr();
    if (log_open(cfg->logging.path, err, sizeof err) != PT_OK) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    fdlimit_apply(cfg); /* max_connections within ulimit -n (warns when it clamps) */
    struct runtime rt = { 0 };
    if (gethostname(rt.hostname, sizeof rt.hostname - 1) != 0)
        snprintf(rt.hostname, sizeof rt.hostname, "localhost");
    int nworkers = cfg->smtp_threads, n_http = cfg->n_http;
    int n_dlv = cfg->delivery.threads > 0 ? cfg->delivery.threads : 1;
    struct cfg_gen *gen = runtime_gen_build(cfg, 1, nworkers, n_http, n_dlv, err, sizeof err);
    if (!gen) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    if (runtime_init(&rt, gen) != PT_OK) {
        fprintf(stderr, "petrel: out of memory\n");
        return 1;
    }
    cfg = gen->cfg;    /* the startup generation's, owned by it */
    rt.spool = cluster_node_open_spool(cfg, err, sizeof err);
    if (!rt.spool) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    if (cluster_node_limits_start(&rt, err, sizeof err) != PT_OK) {
        fprintf(stderr, "petrel: cluster limits: %s\n", err);
        return 1;
    }
    struct spool_stats sst;
    spool_stats(rt.spool, &sst);
    if (!spool_shared(rt.spool))
        log_info("spool %s open; CRC32C on %s", cfg->queue.spool_dir, sst.crc32c);
    bool warm = false;
    for (int i = 0; i < cfg->n_egress_sources; i++)
        warm |= cfg->egress_sources[i].n_warmup > 0;
    if (warmup_open(cfg->queue.spool_dir, warm, err, sizeof err) != PT_OK) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    rt.sched = sched_new(&rt, err, sizeof err);
    if (!rt.sched) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    double t0 = time_now();
    struct recover_ctx rc = { .sched = rt.sched };
    if (spool_scan_entries(rt.spool, recover_one, &rc) != PT_OK) {
        /* Never start with a queue silently cut at the damage. */
        fprintf(stderr, "petrel: spool %s: the queue could not be read to the end (after %llu "
                "entries; the error is logged above); nothing was changed. Back up the spool, "
                "then start once with PETREL_SPOOL_RECOVERY=repair to keep every readable "
                "table (damaged ones are moved to lost/ in the spool)\n", cfg->queue.spool_dir,
                (unsigned long long)rc.n);
        return 1;
    }
    if (!spool_shared(rt.spool))
        log_info("recovered %llu queued entries from %s in %.3f s%s",
             (unsigned long long)rc.n, cfg->queue.spool_dir, time_now() - t0,
             rc.bad ? " (some undecodable entries skipped)" : "");

    struct worker *workers = calloc((size_t)nworkers, sizeof *workers);
    struct frontdoor *fd = frontdoor_new();
    struct worker_group *wg = calloc(1, sizeof *wg);
    if (!workers || !fd || !wg)
        return 1;
    wg->w = workers;
    wg->n = nworkers;
    for (int i = 0; i < nworkers; i++) {
        workers[i].index = i;
        workers[i].rt = &rt;
        workers[i].fd = fd;
        if (worker_start(&workers[i]) != PT_OK) {
            fprintf(stderr, "petrel: cannot start worker %d\n", i);
            return 1;
        }
    }
    struct worker_listen_plan plan;
    if (workers_prepare(wg, cfg, &plan, err, sizeof err) != PT_OK) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    workers_commit(wg, &plan);
    struct reloader rl = { .path = path, .rt = &rt, .wg = wg, .n_http = n_http, .last_id = 1,
                           .stopped = true };
    pthread_mutex_init(&rl.lock, NULL);
    rt.reload = reload;
    rt.reload_arg = &rl;
    /* HTTP listeners: bound while still root (privileged ports, root-only keys) */
    struct http_server *http_srv[CFG_MAX_LISTENERS] = { 0 };
    for (int i = 0; i < cfg->n_http; i++) {
        http_srv[i] = http_start(&rt, &cfg->http[i], i, err, sizeof err);
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
    pthread_mutex_lock(&rl.lock);
    wg->running = true;
    rl.stopped = false;          /* reloads from here on */
    pthread_mutex_unlock(&rl.lock);
    struct tlsrpt_send *rpt = tlsrpt_send_start(&rt, err, sizeof err);
    if (!rpt && err[0]) {
        fprintf(stderr, "petrel: %s\n", err);
        return 1;
    }
    if (sched_start(rt.sched) != PT_OK) {
        fprintf(stderr, "petrel: cannot start delivery threads\n");
        return 1;
    }
    cluster_node_attach(&rt);

    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sigs[3];
    uv_timer_t hup;
    uv_timer_init(loop, &hup);
    hup.data = &rl;
    int signums[3] = { SIGTERM, SIGINT, SIGHUP };
    for (int i = 0; i < 3; i++) {
        uv_signal_init(loop, &sigs[i]);
        sigs[i].data = &hup;
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
    notify_ready();
    /* systemd WatchdogSec=: a keep-alive at a third of the interval from the main
     * loop, so a stuck main loop is restarted */
    uv_timer_t watchdog;
    uv_timer_init(loop, &watchdog);
    double wd = notify_watchdog_interval();
    if (wd > 0) {
        uint64_t ms = (uint64_t)(wd * 1000 / 3);
        uv_timer_start(&watchdog, on_watchdog, ms ? ms : 1, ms ? ms : 1);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_timer_stop(&watchdog);

    /* graceful stop: HTTP and SMTP inbound first (finish transactions), then
     * delivery, then disk; no reload from here on */
    pthread_mutex_lock(&rl.lock);
    rl.stopped = true;
    pthread_mutex_unlock(&rl.lock);
    for (int i = 0; i < cfg->n_http; i++)
        http_stop(http_srv[i]);
    for (int i = 0; i < nworkers; i++)
        worker_request_stop(&workers[i]);
    for (int i = 0; i < nworkers; i++)
        worker_join(&workers[i]);
    cluster_node_detach(&rt);
    sched_stop(rt.sched);
    cluster_node_limits_stop(&rt);
    tlsrpt_send_stop(rpt);       /* after delivery (it counts), before the spool */
    sched_free(rt.sched);
    warmup_close();              /* after delivery: its last counts are written */
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
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_close((uv_handle_t *)&hup, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    frontdoor_free(fd);
    free(workers);
    free(wg);
    pthread_mutex_destroy(&rl.lock);
    runtime_free(&rt);
    route_intern_free_all();
    return 0;
}
