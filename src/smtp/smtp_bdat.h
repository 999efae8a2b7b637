/* Pure, resumable reader of BDAT chunks (RFC 3030 CHUNKING): the "BDAT n [LAST]"
 * arguments and the n octets that follow, copied into the message with line ends
 * normalized to CRLF and 998-octet lines flagged like smtp_data does. It never
 * reads a chunk's octets as commands, and never reads past the announced size.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_BDAT_H
#define PETREL_SMTP_BDAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

struct smtp_bdat {
    uint64_t total;       /* octets of the chunks accepted so far in this message */
    uint64_t remaining;   /* octets of the current chunk still to come */
    bool last;            /* the current chunk is the LAST one */
    bool discard;         /* the current chunk was refused: its octets are dropped */
    bool cr;              /* private: a CR ended the octets so far (withheld) */
    size_t line_len;      /* octets of the current line so far (without CRLF) */
    bool line_too_long;   /* a line exceeded 998 octets -> 554 5.6.0 */
    bool bare_lf;         /* a bare LF or CR was seen and written as CRLF */
    bool has_nul;         /* a NUL octet was seen (kept; informational) */
    bool nomem;           /* an append failed: nothing more is stored -> 451 */
    bool raw;             /* BODY=BINARYMIME: octets stored exactly as sent (no line-end
                             normalization, no line length limit); set after init */
};

/* Parses the argument of BDAT: "chunk-size [LAST]" (RFC 3030 §2: chunk-size is
 * 1*DIGIT; LAST is case-insensitive; one space between). PT_OK with *size and
 * *last, or PT_INVALID (missing, non-digit or over 2^64-1 size, other words). */
int smtp_bdat_args(const char *arg, size_t n, uint64_t *size, bool *last);

/* Starts a message: clears every counter and flag. */
void smtp_bdat_init(struct smtp_bdat *b);

/* Starts a chunk of size octets. discard: drop them (a refused BDAT still owns its
 * octets: they must not be read as commands). An accepted chunk adds size to
 * total; a discarded one does not. */
void smtp_bdat_chunk(struct smtp_bdat *b, uint64_t size, bool last, bool discard);

/* Takes at most b->remaining octets of in[0..len) (b, in and out are borrowed),
 * appending them to out unless discarding (CRLF, bare LF and bare CR all become
 * CRLF, even across chunks).
 *  PT_AGAIN: all of in was taken (*consumed = len) and the chunk needs more.
 *  PT_OK:    the chunk is complete; *consumed octets were taken, the rest of in
 *            is the next pipelined command. A 0-octet chunk is complete at once.
 * An append failure sets nomem (stop storing, keep counting); never fails itself. */
int smtp_bdat_feed(struct smtp_bdat *b, const char *in, size_t len, size_t *consumed,
                   struct buf *out);

/* Ends the message after the LAST chunk: a withheld CR becomes CRLF and an
 * unterminated last line gets its CRLF, so the content ends like a DATA message
 * (nothing in raw mode). */
void smtp_bdat_finish(struct smtp_bdat *b, struct buf *out);

#endif
