/* Clocks and timestamp formatting. Locale-independent (own day and month names)
 * and never fails: a timestamp that cannot be represented prints as the epoch.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "util/timeutil.h"

static const char time_days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char time_months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

double time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double time_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double time_mono_at(double wall)
{
    return time_mono() + (wall - time_now());
}

double time_wall_at(double mono)
{
    return time_now() + (mono - time_mono());
}

uint32_t time_tick(double mono)
{
    if (!(mono > 0))
        return isnan(mono) ? UINT32_MAX : 0;
    double t = ceil(mono / TIME_TICK_S - 1e-6);   /* 0.3 s is 3 ticks, not 4 */
    return t >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

double time_tick_mono(uint32_t tick)
{
    return (double)tick * TIME_TICK_S;
}

/* Splits t into UTC calendar fields and milliseconds (truncated, so a timestamp
 * is never printed later than it happened). */
static void time_split(double t, struct tm *tm, int *ms)
{
    /* Years 0001..9999 only: outside that (or NaN) we print the epoch. */
    if (!(t > -62135596800.0 && t < 253402300800.0))
        t = 0;
    /* Round to the microsecond first so 0.123 (stored as 0.12299999...) stays .123. */
    long long us = (long long)(t * 1e6 + (t >= 0 ? 0.5 : -0.5));
    long long sec = us / 1000000;
    long long rem = us % 1000000;
    if (rem < 0) {
        rem += 1000000;
        sec--;
    }
    rem /= 1000;
    time_t tt = (time_t)sec;
    if (!gmtime_r(&tt, tm)) {
        tt = 0;
        rem = 0;
        gmtime_r(&tt, tm);
    }
    *ms = (int)rem;
}

void time_rfc3339(double t, char *out, size_t outlen)
{
    struct tm tm;
    int ms;

    if (!out || outlen == 0)
        return;
    time_split(t, &tm, &ms);
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

void time_rfc5322(double t, char *out, size_t outlen)
{
    struct tm tm;
    int ms;

    if (!out || outlen == 0)
        return;
    time_split(t, &tm, &ms);
    snprintf(out, outlen, "%s, %d %s %04d %02d:%02d:%02d +0000", time_days[tm.tm_wday],
             tm.tm_mday, time_months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
}
