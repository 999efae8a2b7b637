/* The runtime: the immutable config snapshot and the process-wide services every
 * thread borrows (spool, scheduler). Built by main, read-only afterwards.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_RUNTIME_H
#define PETREL_CORE_RUNTIME_H

#include "core/config.h"

struct spool;
struct sched;
struct tls_ctx;
struct users;
struct authban;
struct dkim_key;

#define RT_MAX_CA 16

struct runtime {
    const struct config *cfg;
    struct spool *spool;
    struct sched *sched;
    char hostname[256];        /* default Reporting-MTA / helo name */
    struct tls_ctx *listener_tls[CFG_MAX_LISTENERS]; /* NULL = listener without tls */
    struct tls_ctx *client_tls;                      /* outbound, system CA store */
    struct { const char *ca_file; struct tls_ctx *ctx; } client_ca[RT_MAX_CA];
    int n_client_ca;
    struct users *users;       /* configure_auth users_file, NULL = none */
    struct authban *ban;       /* AUTH failure tracker */
    struct dkim_key **dkim;    /* configure_dkim_signing keys, in config order */
    int n_dkim;
};

/* Outbound TLS context for a CA bundle (NULL = the system store). Never NULL
 * after runtime_tls_init succeeded. */
struct tls_ctx *runtime_client_tls(const struct runtime *rt, const char *ca_file);
/* Builds every TLS context, loads the users file and the DKIM keys; errors name
 * the file. */
int runtime_tls_init(struct runtime *rt, char *err, size_t errlen);
void runtime_tls_free(struct runtime *rt);

#endif
