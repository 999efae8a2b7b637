/* Outbound TLS policy of an MX destination, decided between the MX lookup and the
 * connection: MTA-STS (RFC 8461: the _mta-sts TXT record, the HTTPS policy fetched
 * on a worker thread, cached in memory and in spool_dir/mta-sts/ across restarts)
 * and DANE (RFC 7672: TLSA of each MX host through the configured resolvers, AD bit
 * trusted only from them). It filters the MX hosts and says how much TLS each needs;
 * it never downgrades: when a policy cannot be met the answer is a deferral.
 * One per delivery thread; never blocks its loop.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_TLSPOL_H
#define PETREL_DELIVERY_TLSPOL_H

#include <stdbool.h>
#include <uv.h>

#include "delivery/dane.h"
#include "delivery/dns.h"
#include "delivery/mtasts.h"

struct config;
struct tlspol;

/* TLS a host needs beyond the route's own policy. */
enum tlspol_need {
    TLSPOL_ANY = 0,      /* the route's policy (may/encrypt/verify) */
    TLSPOL_ENCRYPT,      /* TLS required, no authentication (DANE, unusable TLSA) */
    TLSPOL_VERIFY,       /* TLS with a certificate chain naming the MX host (MTA-STS) */
    TLSPOL_DANE,         /* TLS authenticated by the host's TLSA records */
};

/* The verdict for one destination; borrowed for the callback only. */
struct tlspol_result {
    int code;                       /* 0 = deliver; else a deferral (451) ... */
    char enhanced[8];               /* ... with this enhanced code ("4.7.5") ... */
    char text[400];                 /* ... and this whole reply text */
    const struct dns_result *hosts; /* the MX hosts that may be used, in order */
    enum tlspol_need need[DNS_MAX_HOSTS];      /* per host of hosts */
    const struct dane_host *dane[DNS_MAX_HOSTS]; /* TLSA of hosts[i] when need[i] is
                                                    TLSPOL_DANE, else NULL */
    const char *sts_mode;           /* "enforce" | "testing" | NULL (no MTA-STS policy) */
    /* TLS-RPT (RFC 8460): the policy type of the destination, "tlsa" (a host has
     * usable TLSA records), "sts" (an MTA-STS policy) or NULL (none); the MTA-STS
     * policy when there is one (borrowed for the callback); when code != 0, the
     * §4.3 result-type of the failure. */
    const char *rpt_type;
    const struct mtasts_policy *sts;
    const char *rpt_failure;
    /* code == 0, but an MTA-STS policy is published and could not be fetched or
     * was invalid: this result-type ("sts-policy-fetch-error", ...) is one failed
     * session; the delivery goes on without the policy. NULL otherwise. */
    const char *rpt_note;
};
typedef void (*tlspol_cb)(void *arg, const struct tlspol_result *res);

/* A policy agent on loop, querying through dns (both borrowed, must outlive it).
 * cfg (borrowed) gives mta_sts, dane, smtp_port, ca_file and spool_dir. NULL when
 * out of memory. */
struct tlspol *tlspol_new(uv_loop_t *loop, struct dns *dns, const struct config *cfg);
/* Stops: fetches in flight are aborted; requests still pending complete (their
 * callbacks run, with a deferral) as the DNS answers and workers come back, then the
 * agent frees itself. Call before dns_free. NULL is a no-op. */
void tlspol_free(struct tlspol *tp);

/* Whether tlspol_check has anything to do under cfg (MTA-STS or DANE enabled). */
bool tlspol_enabled(const struct config *cfg);

/* Decides the TLS policy of domain (lowercased) whose MX lookup gave mx (copied).
 * cb runs once on the loop, possibly before tlspol_check returns (an answer from
 * the memory cache). */
void tlspol_check(struct tlspol *tp, const char *domain, const struct dns_result *mx,
                  tlspol_cb cb, void *arg);

#endif
