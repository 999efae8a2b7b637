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
 * sent, and alt7 (initialized, empty) with its 7-bit form for a next hop without
 * 8BITMIME (RFC 6152 §3, util/mime.h), converted before petrel's DKIM signatures
 * so that they cover what is sent; alt7 stays empty when the content is 7-bit,
 * configure_delivery.eight_bit_downgrade is false, the message already carries a
 * DKIM-Signature (converting would break it: such mail bounces with 5.6.3 at a hop
 * without 8BITMIME) or cannot be converted. PT_OK; PT_NOTFOUND: the content is
 * gone from the spool (drop the entry); PT_NOMEM or another error: try again later
 * (out and alt7 are emptied). The configured DKIM keys and options are g's (the
 * generation the attempt runs under). rt, g and e are borrowed for the call; e is
 * only read. Thread-safe. */
int prepare_content(const struct runtime *rt, const struct cfg_gen *g, const struct entry *e,
                    struct buf *out, struct buf *alt7);

#endif
