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
/* Starts the cluster-wide limits when the config asks for them (configure_redis,
 * or backend = "redis"): rt->climits, shared with rt->ban and limit_sending;
 * suspensions too with the local spool. Before any thread uses them; PT_OK (also
 * when Redis is unreachable: degraded until it is back) or an error in err. */
int cluster_node_limits_start(struct runtime *rt, char *err, size_t errlen);
/* Stops them (after the delivery and SMTP threads are gone). */
void cluster_node_limits_stop(struct runtime *rt);
/* Starts taking due entries from the shared queue into rt->sched (after
 * sched_start). */
void cluster_node_attach(struct runtime *rt);
/* Stops it; returns once no claim is in progress (before sched_stop). */
void cluster_node_detach(struct runtime *rt);

#endif
