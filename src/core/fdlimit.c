/* File-descriptor budget (see fdlimit.h): one getrlimit/setrlimit at start. Never
 * touches a listener that fits, never raises the hard limit.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <sys/resource.h>

#include "core/fdlimit.h"
#include "obs/log.h"

int fdlimit_apply(struct config *cfg)
{
    struct rlimit rl;
    if (cfg->n_listeners == 0 || getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    uint64_t want = FDLIMIT_RESERVE;
    for (int i = 0; i < cfg->n_listeners; i++)
        want += (uint64_t)cfg->listeners[i].max_connections;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
        return 0;
    /* Still short: the reserve first (at most half the limit), the rest shared out. */
    uint64_t lim = rl.rlim_cur;
    uint64_t reserve = lim / 2 < FDLIMIT_RESERVE ? lim / 2 : FDLIMIT_RESERVE;
    uint64_t share = (lim - reserve) / (uint64_t)cfg->n_listeners;
    if (share < 1)
        share = 1;
    int clamped = 0;
    for (int i = 0; i < cfg->n_listeners; i++) {
        struct cfg_listener *l = &cfg->listeners[i];
        if ((uint64_t)l->max_connections <= share)
            continue;
        log_warn("listener %s: max_connections %d clamped to %llu: the open-files limit "
                 "(RLIMIT_NOFILE, ulimit -n) is %llu; raise it (LimitNOFILE= in systemd) to "
                 "allow more", l->name ? l->name : "?", l->max_connections,
                 (unsigned long long)share, (unsigned long long)lim);
        l->max_connections = (int)share;
        clamped++;
    }
    return clamped;
}
