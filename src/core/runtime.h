/* The runtime: the immutable config snapshot and the process-wide services every
 * thread borrows (spool, scheduler). Built by main, read-only afterwards.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_RUNTIME_H
#define PETREL_CORE_RUNTIME_H

#include "core/config.h"

struct spool;
struct sched;

struct runtime {
    const struct config *cfg;
    struct spool *spool;
    struct sched *sched;
    char hostname[256];        /* default Reporting-MTA / helo name */
};

#endif
