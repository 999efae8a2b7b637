/* Routing: which way an entry leaves (MX lookup of its domain, a relay host, or
 * discard), decided once at ingest and stored with the entry by name, and the
 * delivery queue that follows from it. A relay queue is identified by its whole
 * route (name, TLS policy, CA file, credentials, relay host and port), never by
 * the relay host alone. Reads the config; never does I/O.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_ROUTE_H
#define PETREL_DELIVERY_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

struct entry;
struct route_table;

/* Names of the two routes that are not transport keys or relay specs (a '@' is
 * in no domain, transport key or "[host]:port"). */
#define ROUTE_NAME_MX "@mx"                /* MX lookup of the entry's domain */
#define ROUTE_NAME_RELAYHOST "@relayhost"  /* configure_delivery's relayhost */

enum route_way { ROUTE_WAY_MX = 0, ROUTE_WAY_RELAY, ROUTE_WAY_DISCARD };

/* One route with its effective settings (its own, else configure_delivery's).
 * Immutable and interned: one copy per distinct definition in the process, valid
 * until route_intern_free_all (at exit), whatever happens to the table (a reload
 * frees the old generation's table; entries queued under it keep their route). */
struct route {
    const char *name;           /* stored with the entry: a transport key, a route_to
                                   "[host]:port" spec, ROUTE_NAME_MX or _RELAYHOST */
    const char *label;          /* shown (metrics, /api/queue "route"): the transport
                                   key, else the relay host spec; NULL for MX */
    const char *qkey;           /* delivery queue key of a relay route ("@" + name);
                                   NULL = per domain (route_queue_key) */
    bool domain_queue;          /* the default MX route: the queue key is the domain */
    enum route_way way;
    const char *relayhost;      /* relay: as written, "[smtp.example.com]:587" */
    const char *relay_host;     /* relay: parsed host */
    uint16_t port;              /* relay port, or configure_delivery's smtp_port */
    bool no_mx;                 /* relay in brackets: address lookup only */
    const char *tls;            /* "may" | "encrypt" | "verify" */
    const char *ca_file;        /* NULL = system store */
    const struct cfg_auth_client *auth; /* relays only; NULL = no AUTH */
};

/* A table over cfg (borrowed; must outlive the table). NULL on allocation failure. */
struct route_table *route_table_new(const struct config *cfg);
void route_table_free(struct route_table *rt);   /* NULL ok */

/* At ingest: the route of an entry for domain (lowercased) with the policy's
 * route_to target (a transport key or relay spec; NULL = none): the target, else
 * the transport route of the domain, else the configure_delivery relayhost, else
 * MX. NULL only when out of memory. Thread-safe. */
const struct route *route_resolve(struct route_table *rt, const char *domain, const char *target);
/* A stored route name back to its route (recovery from the spool). NULL name (an
 * entry spooled before routes were stored) resolves by domain. A name the config
 * no longer has is logged and resolved by domain: never silently. NULL only when
 * out of memory. Thread-safe. */
const struct route *route_lookup(struct route_table *rt, const char *name, const char *domain,
                                 const char *id);
#define ROUTE_QKEY_MAX 600
/* The delivery queue key of an entry for domain on r: r->qkey for a relay route,
 * the domain itself for the default MX route, else "@name/domain" (an MX-way
 * transport route: its own queue per domain) written into buf. Borrowed from r,
 * domain or buf. */
const char *route_queue_key(const struct route *r, const char *domain,
                            char buf[ROUTE_QKEY_MAX]);
/* The definition the table (a newer config) gives r's route: the table's route of
 * the same name when it has one with the same queue key, else r itself (the name
 * is gone from the config: the entries keep the route as it was). Thread-safe. */
const struct route *route_current(struct route_table *rt, const struct route *r);
/* Whether a and b are the same definition (every field). */
bool route_same(const struct route *a, const struct route *b);
/* Frees every interned route (at exit, when no entry, queue or table is left). */
void route_intern_free_all(void);
/* Whether an admin destination string names r: its name, label or relay host. */
bool route_named(const struct route *r, const char *what);

#endif
