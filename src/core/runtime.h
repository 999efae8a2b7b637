/* The runtime: the process-wide services every thread borrows (spool, scheduler,
 * AUTH failure tracker) and the current config generation. A generation is an
 * immutable config plus everything derived from it (TLS contexts, users file,
 * DKIM keys, the route table, one Lua state per SMTP worker, per HTTP listener
 * and per delivery thread), reference
 * counted: a session, a delivery connection and a delivery attempt hold the
 * generation they started with; a reload swaps the
 * pointer for new work and the old one is freed by its last holder.
 * A generation is never modified after runtime_gen_build returns.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_RUNTIME_H
#define PETREL_CORE_RUNTIME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/config.h"

struct spool;
struct sched;
struct tls_ctx;
struct users;
struct authban;
struct dkim_key;
struct lua_State;
struct tlsrpt_agg;
struct route_table;
struct hooks_delivery;

#define RT_MAX_CA 16

struct cfg_gen {
    atomic_int refs;           /* holders: the runtime slot, sessions, thread caches */
    uint64_t id;               /* 1 = startup, +1 per successful reload */
    struct config *cfg;        /* owned */
    struct tls_ctx *listener_tls[CFG_MAX_LISTENERS]; /* by cfg listener index; NULL = no tls */
    struct tls_ctx *client_tls;                      /* outbound, system CA store */
    struct { const char *ca_file; struct tls_ctx *ctx; } client_ca[RT_MAX_CA];
    int n_client_ca;
    struct users *users;       /* configure_auth users_file, NULL = none */
    struct dkim_key **dkim;    /* configure_dkim_signing keys, in config order */
    int n_dkim;
    /* Lua states built from this generation's file with the hooks installed.
     * smtp_L[i] is used only by SMTP worker i, http_L[i] only by the thread of
     * HTTP listener i: never two threads at once. Closed with the generation. */
    struct lua_State **smtp_L; int n_smtp_L;
    struct lua_State **http_L; int n_http_L;
    /* smtp_delivery_result handlers: dlv_hooks[i] only for delivery thread i
     * (NULL = the config registers none). */
    struct hooks_delivery **dlv_hooks; int n_dlv;
    struct route_table *routes;  /* configure_transport / relayhost routes (interned) */
};

struct runtime {
    /* The startup generation's config: only for what a reload cannot change
     * (thread counts, spool, HTTP listeners, MTA-STS/DANE agent). Everything else
     * comes from a generation (runtime_gen_acquire). */
    const struct config *cfg;
    struct cfg_gen *boot;      /* startup generation: one reference held until exit */
    struct spool *spool;
    struct sched *sched;
    char hostname[256];        /* default Reporting-MTA / helo name */
    struct authban *ban;       /* AUTH failure tracker (kept across reloads) */
    struct cluster_limits *climits; /* configure_redis: shared limits; NULL = local */
    struct tlsrpt_agg *tlsrpt; /* TLS-RPT counters; NULL = tls_rpt off */
    /* current generation: gen is guarded by gen_lock and holds one reference;
     * gen_id mirrors gen->id for the lock-free check of runtime_gen_acquire */
    pthread_mutex_t gen_lock;
    struct cfg_gen *gen;
    atomic_uint_least64_t gen_id;
    /* The reload entry point (main installs it; NULL = none): what SIGHUP does.
     * Thread-safe, blocks the caller for the reload (reads files): never call it
     * on an SMTP loop. PT_OK, or an error with "FILE:LINE: message" in err. */
    int (*reload)(void *arg, char *err, size_t errlen);
    void *reload_arg;
};

/* Builds a generation from cfg (taken, freed on failure too): every TLS context,
 * the users file, the DKIM keys, the route table, n_smtp Lua states for the SMTP
 * workers, n_http for the HTTP listeners and n_dlv delivery hook states. Reads files and runs the config file again: call
 * it off the event loops. On failure NULL and err holds "FILE:LINE: message". The
 * result has one reference (the caller's). */
struct cfg_gen *runtime_gen_build(struct config *cfg, uint64_t id, int n_smtp, int n_http,
                                  int n_dlv, char *err, size_t errlen);

/* Installs gen (taken) as the first, startup generation and makes the
 * rt->cfg alias point into it. Call once, before any thread starts. */
int runtime_init(struct runtime *rt, struct cfg_gen *gen);
/* Releases the current and startup generations and the tracker (at exit, after
 * every thread stopped). */
void runtime_free(struct runtime *rt);

/* The current generation with one more reference for the caller (release it
 * with runtime_gen_release). Lock-free on the hot path: each thread caches a
 * reference to the generation it saw last; one atomic load and one atomic
 * increment unless a reload happened since (then one short mutex hold). */
struct cfg_gen *runtime_gen_acquire(struct runtime *rt);
/* Drops one reference; the last one frees the generation (on the caller's
 * thread: Lua states, TLS contexts, keys). NULL is a no-op. */
void runtime_gen_release(struct cfg_gen *g);
/* One more reference to a generation the caller already holds. */
struct cfg_gen *runtime_gen_ref(struct cfg_gen *g);
/* Makes gen (taken) the current generation for new work; the previous one is
 * released (freed when its last session ends). Thread-safe. */
void runtime_gen_swap(struct runtime *rt, struct cfg_gen *gen);
/* Drops the calling thread's cached reference (call before a thread exits;
 * threads not under our control drop it through a thread-exit destructor). */
void runtime_gen_thread_done(void);

/* Lua state of SMTP worker i / HTTP listener i in g (NULL if not built). */
struct lua_State *runtime_gen_smtp_lua(const struct cfg_gen *g, int i);
struct lua_State *runtime_gen_http_lua(const struct cfg_gen *g, int i);
/* smtp_delivery_result state of delivery thread i in g (NULL = none). */
struct hooks_delivery *runtime_gen_dlv_hooks(const struct cfg_gen *g, int i);

/* Outbound TLS context for a CA bundle (NULL = the system store). Never NULL. */
struct tls_ctx *runtime_gen_client_tls(const struct cfg_gen *g, const char *ca_file);

#endif
