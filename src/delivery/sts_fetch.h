/* The MTA-STS policy fetch (RFC 8461 §3.3): one HTTPS GET of
 * https://mta-sts.DOMAIN/.well-known/mta-sts.txt (DOMAIN in A-label form) with libcurl, to an address the
 * caller resolved (so the configured resolvers are used), certificate verified for
 * mta-sts.DOMAIN, no redirects, HTTPS only, body capped at MTASTS_POLICY_MAX, a
 * deadline. BLOCKING: call it only from a worker thread (uv_queue_work), never on
 * an event loop.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_STS_FETCH_H
#define PETREL_DELIVERY_STS_FETCH_H

#include <stdatomic.h>
#include <stddef.h>

#include "util/buf.h"

#define STS_FETCH_TIMEOUT_MS 8000  /* whole fetch; short, so a shutdown never waits long */

/* Once per process, before the first fetch (thread-safe). */
void sts_fetch_global_init(void);

/* A libcurl handle for one strict HTTPS request (MTA-STS policies, TLS-RPT posts):
 * url, HTTPS only, no redirects, the peer's certificate and name verified, TLS 1.2
 * or later, ca_file (NULL = the system store), resolve (NULL = none: a CURLOPT_RESOLVE
 * list, so that the configured resolvers' answer is used), no signals, timeout_ms,
 * errors into ebuf (CURL_ERROR_SIZE bytes). NULL when out of memory. */
void *sts_https_handle(const char *url, const void *resolve, const char *ca_file,
                       long timeout_ms, char *ebuf);

/* Fetches the policy of domain from ip (a v4 or v6 literal) on port 443 into body
 * (initialized by the caller; the body is appended). ca_file: PEM bundle (NULL = the
 * system store). stop (may be NULL): set to true to abort. PT_OK with HTTP 200 and a
 * text/plain body; else PT_ERROR / PT_TOOLONG with the reason in err (errlen bytes). */
int sts_fetch(const char *domain, const char *ip, const char *ca_file, atomic_bool *stop,
              struct buf *body, char *err, size_t errlen);

#endif
