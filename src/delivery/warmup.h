/* IP warm-up (DESIGN §9): a daily cap of messages per site per egress source that
 * follows the source's `warmup` schedule (day 1 = the UTC day of its first send).
 * The first-send days and today's counts are kept in SPOOL_DIR/egress/STATE.json,
 * so a restart neither resets the day counter nor the caps; the file is written
 * (temporary file, fsync, rename) by a thread of its own, never by the callers.
 * Thread-safe (one mutex; callers never wait on disk).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_WARMUP_H
#define PETREL_DELIVERY_WARMUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Loads the state under spool_dir (a missing file = nothing sent yet) and starts
 * the writer. When the directory cannot be made and not required (no source has
 * a schedule), counts stay in memory. PT_OK, or PT_ERROR with err (an unreadable
 * or corrupt file). */
int warmup_open(const char *spool_dir, bool required, char *err, size_t errlen);
/* Writes what is pending and stops the writer. */
void warmup_close(void);

/* Messages source may still send to site today under its schedule (warmup[0..n)
 * caps day 1..n; past the last day or n == 0: UINT32_MAX). wall = time_now(). */
uint32_t warmup_remaining(const char *source, const int *warmup, int n, const char *site,
                          double wall);
/* One message of source to site is going now (counted; day 1 starts if it is the
 * source's first). */
void warmup_take(const char *source, const char *site, double wall);
/* Seconds from wall to the next UTC midnight (when caps renew). */
double warmup_until_next_day(double wall);

#endif
