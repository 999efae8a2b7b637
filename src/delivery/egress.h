/* Egress sources and pools (DESIGN §9): the source of a message is chosen once, at
 * ingest, by smooth weighted round robin over its pool (set_egress_pool, else its
 * tenant's egress_pool), and stored with the entry; its queue key, bind address and
 * EHLO name follow from it.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_EGRESS_H
#define PETREL_DELIVERY_EGRESS_H

struct config;
struct entry;

/* The next source of pool (an index in cfg->egress_pools) by smooth weighted round
 * robin: over sum(weights) picks, each source is picked exactly weight times, evenly
 * spread. Returns its name (borrowed from cfg). Thread-safe (one mutex). */
const char *egress_pick(const struct config *cfg, int pool);

/* Sets e's egress source: from pool_name ("" or NULL = the tenant's egress_pool, if
 * its tenant is configured with one); none = the host's default address. PT_OK,
 * PT_INVALID (an unknown pool: a reload removed it) or PT_NOMEM. */
int egress_assign(const struct config *cfg, struct entry *e, const char *pool_name);

#endif
