/* This node in a cluster sharing its queue in Redis: opens the shared spool from
 * the config and connects the cluster thread's claims and suspensions to the
 * scheduler. Never used with the local spool (every call is then a no-op).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CLUSTER_NODE_H
#define PETREL_CLUSTER_NODE_H

#include <stddef.h>

struct config;
struct runtime;
struct spool;

/* The spool the config asks for: RocksDB in spool_dir, or the shared Redis queue
 * (backend = "redis"). NULL with "what: why" in err. */
struct spool *cluster_node_open_spool(const struct config *cfg, char *err, size_t errlen);
/* Starts taking due entries from the shared queue into rt->sched (after
 * sched_start). */
void cluster_node_attach(struct runtime *rt);
/* Stops it; returns once no claim is in progress (before sched_stop). */
void cluster_node_detach(struct runtime *rt);

#endif
