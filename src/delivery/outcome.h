/* Outcome of a delivery attempt: each pending recipient delivered, deferred or
 * bounced, with its log record, metrics and DSN; then what becomes of the entry
 * (finished, retry at a backoff time, expired). Never touches queues or the spool
 * except to read the original for a DSN: the scheduler acts on the verdict.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_OUTCOME_H
#define PETREL_DELIVERY_OUTCOME_H

#include <stdint.h>

#include <uv.h>

struct runtime;
struct config;
struct entry;
struct client_result;

/* Where an attempt went, as the client saw it; each NULL when not reached. */
struct outcome_where {
    const char *site;           /* "host:port" tried last */
    const char *peer;           /* its IP */
    const char *tls;            /* "TLSv1.3:CIPHER" or NULL = clear */
};

enum outcome_next {
    OUTCOME_DONE,               /* nothing pending: remove the entry */
    OUTCOME_RETRY,              /* e->next_attempt is set: persist it and wait */
    OUTCOME_AGAIN,              /* not attempted (stale cached connection): ready now */
    OUTCOME_DEAD,               /* expired with dead_letter_after set: e is flagged
                                   ENTRY_F_DEAD (next_attempt = now); keep it, dead */
};

/* Applies one attempt's results: res[i] belongs to the i-th PENDING recipient
 * (nres of them; res[0].code == -1 = not attempted). Updates e's recipients,
 * attempts, last response and next_attempt (backoff capped by max_retry_age; past
 * it, the pending recipients expire with an Expiration record and a DSN). DSNs
 * are built on loop's worker pool (NULL: in the call). cfg is the config the
 * attempt ran under (retry settings, delay warnings, DSN reporting MTA). All
 * arguments borrowed for the call. */
enum outcome_next outcome_apply(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e,
                                const struct client_result *res, uint32_t nres,
                                const struct outcome_where *where);
/* The same with one synthetic result for every pending recipient (DNS failure,
 * out of memory): code, enhanced status and the whole reply text. */
enum outcome_next outcome_uniform(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e, int code,
                                  const char *enhanced, const char *text);
/* Ends every pending recipient of e. type LOG_EXPIRATION or LOG_BOUNCE: a record
 * each (code, diag, where) and one DSN with status (Bounce records also count in
 * petrel_messages_bounced_total); type NULL: silently (admin delete). The caller
 * removes e afterwards. */
void outcome_fail_pending(struct runtime *rt, const struct config *cfg, uv_loop_t *loop, struct entry *e, const char *type, int code,
                          const char *status, const char *diag, const struct outcome_where *where);
/* One log record for recipient rcpt of e (DESIGN §6 keys; where may be NULL). */
void outcome_log(const struct entry *e, const char *type, const char *rcpt, int code,
                 const char *response, const struct outcome_where *where);

#endif
