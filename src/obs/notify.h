/* Service manager notifications (systemd Type=notify through libsystemd's
 * sd_notify): READY=1 when petrel is ready, RELOADING=1/READY=1 around a reload,
 * STOPPING=1 at shutdown, WATCHDOG=1 keep-alives. Each call is a no-op when petrel
 * was not started by systemd (no $NOTIFY_SOCKET); none ever blocks or fails petrel.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_OBS_NOTIFY_H
#define PETREL_OBS_NOTIFY_H

/* Call right after writing "petrel ready" (every listener bound). */
void notify_ready(void);
/* Call when SIGTERM/SIGINT starts the graceful stop. */
void notify_stopping(void);
/* Call before and after applying a SIGHUP reload (ok: the new config is live). */
void notify_reloading(void);
void notify_reloaded(int ok);
/* The watchdog interval systemd asked for (WatchdogSec=), in seconds; 0 = none.
 * Call notify_watchdog() at least twice per interval (e.g. from a uv timer). */
double notify_watchdog_interval(void);
void notify_watchdog(void);

#endif
