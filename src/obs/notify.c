/* sd_notify wrappers (see notify.h). A datagram to $NOTIFY_SOCKET per call: cheap
 * enough for any thread; a missing or broken socket is ignored, never fatal.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdio.h>

#include <systemd/sd-daemon.h>

#include "obs/notify.h"
#include "obs/version.h"

void notify_ready(void)
{
    sd_notifyf(0, "READY=1\nSTATUS=petrel %s ready", PETREL_VERSION);
}

void notify_stopping(void)
{
    sd_notify(0, "STOPPING=1\nSTATUS=stopping: finishing in-flight transactions");
}

void notify_reloading(void)
{
    sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
}

void notify_reloaded(int ok)
{
    sd_notify(0, ok ? "READY=1\nSTATUS=reload ok" : "READY=1\nSTATUS=reload failed, old config kept");
}

double notify_watchdog_interval(void)
{
    uint64_t usec = 0;
    return sd_watchdog_enabled(0, &usec) > 0 ? (double)usec / 1e6 : 0;
}

void notify_watchdog(void)
{
    sd_notify(0, "WATCHDOG=1");
}
