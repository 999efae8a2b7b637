/* Clocks and time formats. Wall time as double seconds since the epoch; timers and
 * due times on the monotonic clock (a wall-clock deadline is turned into a
 * monotonic one once, when it is set, so that a later jump of the wall clock does
 * not move it).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_TIMEUTIL_H
#define PETREL_UTIL_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

double time_now(void);          /* CLOCK_REALTIME, seconds */
uint64_t time_mono_ms(void);    /* CLOCK_MONOTONIC, milliseconds */
double time_mono(void);         /* CLOCK_MONOTONIC, seconds (> 0) */
/* The monotonic time at which the wall clock, as it reads now, shows `wall`. */
double time_mono_at(double wall);
/* The wall time (as the wall clock reads now) at monotonic time `mono`: for display. */
double time_wall_at(double mono);

/* Compact monotonic times (4 bytes, for the queue entries): CLOCK_MONOTONIC in
 * TIME_TICK_S units, good for 13 years of uptime. */
#define TIME_TICK_S 0.1
/* mono rounded up to a tick (so a deadline never comes early); 0 for a time
 * before the clock's start, UINT32_MAX past the range (or NaN). */
uint32_t time_tick(double mono);
/* The monotonic time of a tick, seconds. */
double time_tick_mono(uint32_t tick);
/* RFC 3339 UTC with milliseconds: "2026-11-23T23:38:02.123Z"; out >= 32 bytes. */
void time_rfc3339(double t, char *out, size_t outlen);
/* RFC 5322 date for headers: "Mon, 23 Nov 2026 23:38:02 +0000"; out >= 40 bytes. */
void time_rfc5322(double t, char *out, size_t outlen);

#endif
