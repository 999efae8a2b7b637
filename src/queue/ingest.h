/* Message ingestion: splits an accepted message into one queue entry per
 * destination domain, writes content + entries durably (group commit) and, once
 * durable, hands the entries to the scheduler. Shared by the SMTP server, the
 * HTTP API and the bounce generator. Never acknowledges before the fsync.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_INGEST_H
#define PETREL_QUEUE_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/entry.h"
#include "util/buf.h"

struct runtime;

struct ingest_msg {
    char id[ENTRY_ID_LEN + 1];     /* filled by the caller (entry_new_id) */
    const char *sender;            /* "" = null sender; borrowed for the call */
    const char *const *rcpts;      /* borrowed for the call */
    size_t nrcpt;
    const char *content;           /* borrowed for the call (copied into the spool batch);
                                      CRLF line ends only, no bare CR or LF: the SMTP
                                      client sends it without normalizing (except
                                      with ENTRY_F_BINARYMIME: octets as received,
                                      sent only with BDAT) */
    size_t content_len;
    uint8_t protocol, priority, flags; /* flags: ENTRY_F_* (RET, REQUIRETLS...) */
    /* DSN parameters (RFC 3461), each optional (NULL); borrowed for the call: */
    const char *envid;             /* decoded ENVID */
    const uint8_t *notify;         /* [nrcpt] ENTRY_N_* bits */
    const char *const *orcpt;      /* [nrcpt] "addr-type;address" or NULL items */
    double received_at;
    /* for the Reception records (written once durable, before delivery starts): */
    const char *peer_address;      /* client IP, NULL if none */
    const char *tls;               /* "TLSv1.3:CIPHER" or NULL */
    bool log_reception;            /* false for bounces we generate */
    /* Optional policy (hooks), called on the caller's thread for each entry once it is
     * built and before anything is written: it may set the entry's priority, route
     * and header edits. A return other than PT_OK fails the submission with it. */
    int (*policy)(void *arg, struct entry *e);
    void *policy_arg;
};

/* Called once on the spool thread: PT_OK = durable and queued; else nothing was
 * queued. Must not block. */
typedef void (*ingest_cb)(void *arg, int status);

/* Returns PT_OK when submitted (cb will run), or an error (cb will not run). */
int ingest_submit(struct runtime *rt, const struct ingest_msg *m, ingest_cb cb, void *arg);

#endif
