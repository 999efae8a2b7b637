/* limit_sending rates: a per-key GCRA (generic cell rate algorithm) table shared by
 * every thread of the process, behind one mutex. Bounded in size; a key idle long
 * enough to be back at full burst is forgotten first. Never blocks beyond the
 * mutex, never allocates after creation.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_POLICY_LIMITS_H
#define PETREL_POLICY_LIMITS_H

#include <stddef.h>

#define LIMITS_KEY_MAX 128        /* bytes of a key (longer keys are refused) */
#define LIMITS_TABLE_SIZE 8192    /* keys tracked at once */

struct limits;
struct buf;

/* A table for up to cap keys. NULL when out of memory. */
struct limits *limits_new(size_t cap);
void limits_free(struct limits *l);  /* NULL ok */

/* The process-wide table hooks use (created on first use; NULL only if out of
 * memory). Lives until exit. */
struct limits *limits_shared(void);

/* One message under key, allowed n per period seconds (n >= 1, period > 0), at
 * time now (seconds, monotonic). Up to n messages may pass in a burst, then one
 * every period/n. PT_OK (counted) or PT_TOOLONG (over the limit, not counted).
 * PT_INVALID for a bad argument. Thread-safe. */
int limits_take(struct limits *l, const char *key, double n, double period, double now);

/* Cluster sharing (cluster/limits.h). fn (NULL = none) is called after every
 * message a take lets pass, outside the lock, with the slot's name "PERIOD|KEY"
 * and the time one message costs (period/n); set it before other threads use l. */
void limits_set_observer(struct limits *l, void (*fn)(void *arg, const char *name, double t),
                         void *arg);
/* What the cluster used of name ("PERIOD|KEY"): its tat becomes at least tat
 * (same clock as limits_take's now). */
void limits_merge(struct limits *l, const char *name, double tat);
/* While the cluster is unreachable: every limit counts n/share (at least 1). */
void limits_set_share(struct limits *l, int share);

/* limit_sending records as hooks keep them: lines "PERIOD\tN\tKEY\n". */
int limits_record(struct buf *lines, const char *key, double n, double period);
/* Takes one message for every line of lines[0..len); on the first refusal stops
 * and writes its key into over (size overlen) and returns PT_TOOLONG. PT_OK when
 * all passed. Malformed lines are skipped. */
int limits_take_all(struct limits *l, const char *lines, size_t len, double now, char *over,
                    size_t overlen);

#endif
