/* TLS-RPT reporter (RFC 8460 §5): its own thread and loop keep the counters of
 * rt->tlsrpt saved in SPOOL_DIR/tls-rpt/state.json (written atomically on the
 * worker pool, so a restart loses nothing), and at the end of each
 * configure_delivery.tls_rpt_interval it builds one gzip'ed JSON report per policy
 * domain, looks up `_smtp._tls.DOMAIN` TXT through petrel's resolver and queues the
 * report as a multipart/report mail to each mailto: rua and POSTs it (libcurl, on
 * the worker pool) to each https: rua. Never touches a delivery or SMTP loop.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_TLSRPT_SEND_H
#define PETREL_DELIVERY_TLSRPT_SEND_H

#include <stddef.h>

struct runtime;
struct tlsrpt_send;

/* With rt->cfg->delivery.tls_rpt: creates rt->tlsrpt (the counters), loads the saved
 * state and starts the thread. NULL and a message in err on failure; NULL with
 * err[0] == 0 when tls_rpt is off. Call before the delivery threads start. */
struct tlsrpt_send *tlsrpt_send_start(struct runtime *rt, char *err, size_t errlen);
/* Stops the thread, saves the counters and frees rt->tlsrpt. Reports whose rua
 * lookup is still in flight are lost (logged). Call before the spool closes and
 * after the delivery threads stopped. NULL is a no-op. */
void tlsrpt_send_stop(struct tlsrpt_send *s);

#endif
