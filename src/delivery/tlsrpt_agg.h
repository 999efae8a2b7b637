/* TLS-RPT counters (RFC 8460 §4): per policy domain and policy type, the successful
 * and failed TLS sessions of the current reporting interval with their failure
 * details, as delivery threads note them. Thread-safe; never does I/O (the state
 * goes to and from JSON text, written by the reporter).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_TLSRPT_AGG_H
#define PETREL_DELIVERY_TLSRPT_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLSRPT_AGG_MAX_DOMAINS 1000   /* policies kept per interval; more are not counted */
#define TLSRPT_AGG_MAX_DETAILS 32     /* failure-details per policy; more are summed only */

struct tlsrpt_agg;

/* NULL when out of memory. */
struct tlsrpt_agg *tlsrpt_agg_new(void);
/* NULL is a no-op. */
void tlsrpt_agg_free(struct tlsrpt_agg *a);

/* The policy of domain (lowercased; a UTF-8 domain is kept as its A-label) with
 * type "sts" or "tlsa": its policy-string lines and (sts) mx patterns, kept as
 * first seen in the interval. All borrowed. */
void tlsrpt_agg_policy(struct tlsrpt_agg *a, const char *domain, const char *type,
                       const char *const *lines, int nlines, const char *const *mx, int nmx);
/* One successful TLS session with a host of domain under a policy of type. */
void tlsrpt_agg_success(struct tlsrpt_agg *a, const char *domain, const char *type);
/* One failed session: result_type per RFC 8460 §4.3 ("starttls-not-supported", ...);
 * mx_host, the session's addresses (ours: sending-mta-ip; the MX's: receiving-ip)
 * and reason may be NULL. */
void tlsrpt_agg_failure(struct tlsrpt_agg *a, const char *domain, const char *type,
                        const char *result_type, const char *mx_host,
                        const char *sending_ip, const char *receiving_ip, const char *reason);

/* The state as JSON text (malloc'ed; NULL when out of memory) with the interval's
 * start (Unix seconds); *dirty_gen receives a counter that changes with every note. */
char *tlsrpt_agg_dump(struct tlsrpt_agg *a, int64_t start, uint64_t *gen);
/* The change counter (compare with the one of the last dump). */
uint64_t tlsrpt_agg_gen(struct tlsrpt_agg *a);
/* Replaces the state with text (a dump); *start gets its interval start. PT_OK or
 * PT_INVALID (the state is left empty). */
int tlsrpt_agg_load(struct tlsrpt_agg *a, const char *text, size_t len, int64_t *start);
/* Takes the interval's counters as JSON text (a dump with start) and empties the
 * state; NULL when nothing was noted (or out of memory). */
char *tlsrpt_agg_take(struct tlsrpt_agg *a, int64_t start);

/* The §4.3 result-type of a TLS failure text from the client ("STARTTLS not
 * offered", an OpenSSL verify reason...); dane = the host was authenticated by TLSA. */
const char *tlsrpt_agg_result_type(const char *why, bool dane);

#endif
