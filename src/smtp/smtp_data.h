/* Pure, resumable reader of the DATA phase: finds the end-of-data marker, undoes
 * dot-stuffing, normalizes line endings to CRLF and enforces size and line-length
 * limits. Only <CRLF>.<CRLF> ends the data (SMTP smuggling: a "." line reached by
 * a bare LF or ended by a bare LF is content). Also dot-stuffing for output.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_DATA_H
#define PETREL_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define SMTP_TEXT_LINE_MAX 1000 /* 998 octets + CRLF (RFC 5322 2.1.1) */

struct smtp_data {
    int state;            /* private */
    size_t line_len;      /* octets of the current line so far (without CRLF) */
    uint64_t max_size;    /* content beyond this is counted, not stored; 0 = no limit */
    uint64_t size;        /* content bytes seen as written (CRLF-normalized, unstuffed),
                             incl. those not stored */
    bool too_big;         /* size exceeded max_size (or out->max was hit) -> reply
                             552 5.3.4. Once set, nothing more is appended: a caller
                             that wants to discard the rest may set it itself. */
    bool line_too_long;   /* a line exceeded 998 octets -> reply 554 5.6.0 */
    bool bare_lf;         /* a bare LF (or bare CR) was seen and normalized to CRLF */
    bool has_nul;         /* a NUL byte was seen (kept; informational) */
};

void smtp_data_init(struct smtp_data *d, uint64_t max_size);

/* Line rules of smtp_data_feed. A line ends at CRLF, at a bare LF or at a bare CR
 * (CR not followed by LF); the last two are written as CRLF and set bare_lf. The
 * very first line of DATA counts as following a CRLF. A line starting with "."
 * followed by more content loses that dot (".." -> ".", ".x" -> "x"). A line that
 * is exactly "." ends the data only if it follows a CRLF (or the start) and is
 * ended by CRLF; otherwise (after a bare LF/CR, or ended by a bare LF/CR) it is the
 * content line ".", written ".\r\n" -- smtp_dot_stuff re-stuffs it to ".." on relay,
 * so no receiver downstream can read it as an end marker.
 *
 * Consumes in[0..len), appending unstuffed content to out (CRLF line endings,
 * without the final ".CRLF"; the last content line keeps its CRLF). Stops right
 * after the end-of-data marker. What is stored is always a prefix of the content:
 * at most max_size bytes (and never past out->max), whatever the input split.
 *  PT_AGAIN: all input consumed (*consumed = len), need more.
 *  PT_OK:    end of data reached; *consumed = bytes used (the rest is the next
 *            pipelined command). Check the flags to decide the reply. Further
 *            calls return PT_OK with *consumed = 0 until smtp_data_init.
 *  PT_NOMEM: out could not grow (out->max is honoured by stopping the append and
 *            setting too_big instead, so this is only real allocation failure).
 *            *consumed bytes were parsed; from then on nothing more is stored, but
 *            feeding the rest still finds the end of data (then reply 451). */
int smtp_data_feed(struct smtp_data *d, const char *in, size_t len, size_t *consumed,
                   struct buf *out);

/* Appends content (CRLF or LF lines) to out dot-stuffed, with CRLF endings, a CRLF
 * added after a last unterminated line, and the terminating ".\r\n". A bare CR is
 * written as CRLF too (never sent bare). Feeding the result to smtp_data_feed gives
 * back the content (CRLF-normalized). PT_TOOLONG if out->max is hit, PT_NOMEM. */
int smtp_dot_stuff(const char *content, size_t len, struct buf *out);

#endif
