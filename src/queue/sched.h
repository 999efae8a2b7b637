/* The scheduler: delivery threads, each owning a shard of the per-destination
 * queues (by destination key hash), with retry timers, connection limits and the
 * SMTP client. Entries enter with sched_enqueue from any thread once durable.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_SCHED_H
#define PETREL_QUEUE_SCHED_H

#include <stdint.h>

struct runtime;
struct entry;
struct sched;

struct sched *sched_new(struct runtime *rt, char *err, size_t errlen);
/* Takes e (durable already). Before sched_start, inserts directly (recovery);
 * afterwards posts to the owning delivery thread. Thread-safe. */
void sched_enqueue(struct sched *s, struct entry *e);
int sched_start(struct sched *s);
/* Stops dispatching, closes connections, joins the threads, frees entries. */
void sched_stop(struct sched *s);
void sched_free(struct sched *s);
/* Entries in the queue (all threads); cheap, approximate under concurrency. */
uint64_t sched_depth(const struct sched *s);



/* Pure: delay before retry number `attempts` (1 = after the first failure):
 * retry_interval * 2^(attempts-1), capped at max_retry_interval. */
double sched_backoff(double retry_interval, double max_retry_interval, uint32_t attempts);
#endif
