/* Acceptance rules shared by the SMTP and HTTP doors, so that both refuse the same
 * mail for the same reason: queue back-pressure and a full disk, recipients without a domain,
 * "error:" transport routes. Each door words the refusal
 * for its protocol (an SMTP reply, an HTTP status or a rejected recipient); the
 * decision is made here only. Never blocks: reads the config and one counter.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_POLICY_ACCEPT_H
#define PETREL_POLICY_ACCEPT_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct sched;
struct spool;

/* Whether new mail can be queued now. PT_OK; PT_ERROR when the spool is read-only
 * (disk full); PT_TOOLONG when the queue holds max_queue_depth entries or more.
 * Either refusal is temporary: SMTP 452 4.3.1 at MAIL, HTTP 503 + Retry-After. */
int accept_queue_state(const struct config *cfg, const struct sched *sched, struct spool *spool);

/* Whether rcpt (an addr-spec) may be queued. PT_OK; else *reply (borrowed from cfg
 * or static) is the SMTP reply that refuses it and *code its number: PT_NOTFOUND
 * for no domain (550 5.1.1: this relay has no mailboxes), PT_INVALID for a domain
 * routed to "error:..." (that route's reply). */
int accept_recipient(const struct config *cfg, const char *rcpt, const char **reply, int *code);

#endif
