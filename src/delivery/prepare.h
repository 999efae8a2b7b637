/* Content preparation for one delivery: the message read from the spool, the
 * hooks' header edits applied, then DKIM signatures prepended. Runs wherever it is
 * called (it reads the spool and signs: keep it off event loops); never touches
 * scheduler state.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_PREPARE_H
#define PETREL_DELIVERY_PREPARE_H

#include "util/buf.h"

struct runtime;
struct cfg_gen;
struct entry;

/* Fills out (initialized by the caller, empty) with e's content as it is to be
 * sent. PT_OK; PT_NOTFOUND: the content is gone from the spool (drop the entry);
 * PT_NOMEM or another error: try again later (out is emptied). The configured
 * DKIM keys are g's (the generation the attempt runs under). rt, g and e are
 * borrowed for the call; e is only read. Thread-safe. */
int prepare_content(const struct runtime *rt, const struct cfg_gen *g, const struct entry *e,
                    struct buf *out);

#endif
