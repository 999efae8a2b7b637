/* Admin suspensions (POST /api/queue/suspend): see suspend.c. Every function runs
 * on the thread that owns t, except suspend_persist (the asking thread) and
 * suspend_restore (before the delivery threads start).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_SUSPEND_H
#define PETREL_QUEUE_SUSPEND_H

#include <stdbool.h>

struct dthread;
struct entry;
struct sched;

/* POST /api/queue/suspend: no new delivery for a destination until `until`. */
struct suspension {
    struct suspension *next;
    char key[300];
    double until;        /* wall clock: stored and shown */
    double until_mono;   /* the same on the monotonic clock (util/timeutil.h),
                            converted when set: what the timer uses */
};

/* The suspension of exactly key, or NULL. */
struct suspension *suspend_of(const struct dthread *t, const char *key);
/* The active suspension that holds e: one named by its domain or by a name of its
 * route (route_named); NULL if none. */
struct suspension *suspend_for(const struct dthread *t, const struct entry *e);
/* Suspends key until (wall clock; made or extended). false when out of memory. */
bool suspend_set(struct dthread *t, const char *key, double until);
/* Before recovery: every thread gets the suspensions kept in the spool (expired
 * ones are deleted there). */
void suspend_restore(struct sched *s);
/* Keeps (on) or forgets a suspension of dest in the spool (no fsync: a lost
 * suspension loses no mail). Failures are logged. */
void suspend_persist(struct sched *s, const char *dest, double until, bool on);

#endif
