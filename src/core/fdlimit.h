/* File-descriptor budget: fits the listeners' max_connections into RLIMIT_NOFILE at
 * start, so a connection flood meets "421 too many connections" instead of EMFILE
 * in the spool or the delivery thread. Never lowers a limit the process could hold.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_FDLIMIT_H
#define PETREL_CORE_FDLIMIT_H

#include "core/config.h"

/* Fds kept out of the connection budget: the spool (RocksDB keeps up to 512 table
 * files open, but a small spool holds few), the log, outbound connections, DNS. */
#define FDLIMIT_RESERVE 256

/* Raises the soft RLIMIT_NOFILE towards the hard one as far as the listeners'
 * max_connections (sum) + FDLIMIT_RESERVE need; if that is still short, lowers each
 * listener's max_connections (cfg is modified) so that they fit in what is left,
 * keeping at least 1, and logs a warning naming the listener, the old and new values
 * and the limit. Returns the number of listeners clamped. Call before any worker
 * starts (cfg is then read-only). */
int fdlimit_apply(struct config *cfg);

#endif
