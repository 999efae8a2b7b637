/* Routing: which way an entry leaves (MX lookup of its domain, a relay host, or
 * discard) and the destination queue key that follows from it. Reads the config;
 * never does I/O.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_ROUTE_H
#define PETREL_DELIVERY_ROUTE_H

#include "core/config.h"

struct entry;
struct route_table;

/* A table over cfg (borrowed; must outlive the table). NULL on allocation failure. */
struct route_table *route_table_new(const struct config *cfg);
void route_table_free(struct route_table *rt);   /* NULL ok */

/* Route of an entry: its route_to target (a transport key, else a relay host),
 * else the transport route of its domain, else the configure_delivery relayhost;
 * NULL = MX delivery. A target the config no longer has falls back to the domain.
 * Borrowed from the table or the config. Thread-safe. */
const struct cfg_route *route_of(struct route_table *rt, const struct entry *e);
/* Destination queue key of an entry on route r (from route_of): the relay host of
 * a relay route, else the entry's domain. Borrowed. */
const char *route_queue_key(const struct cfg_route *r, const struct entry *e);

#endif
