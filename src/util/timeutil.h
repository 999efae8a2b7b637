/* Clocks and time formats. Wall time as double seconds since the epoch.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_TIMEUTIL_H
#define PETREL_UTIL_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

double time_now(void);          /* CLOCK_REALTIME, seconds */
uint64_t time_mono_ms(void);    /* CLOCK_MONOTONIC, milliseconds */
/* RFC 3339 UTC with milliseconds: "2026-11-23T23:38:02.123Z"; out >= 32 bytes. */
void time_rfc3339(double t, char *out, size_t outlen);
/* RFC 5322 date for headers: "Mon, 23 Nov 2026 23:38:02 +0000"; out >= 40 bytes. */
void time_rfc5322(double t, char *out, size_t outlen);

#endif
