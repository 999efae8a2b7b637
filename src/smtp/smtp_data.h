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
    uint64_t max_size;    /* content beyond this is counted, not stored */
    uint64_t size;        /* unstuffed content bytes seen (incl. discarded) */
    bool too_big;         /* size exceeded max_size -> reply 552 5.3.4 */
    bool line_too_long;   /* a line exceeded 998 octets -> reply 554 5.6.0 */
    bool bare_lf;         /* a bare LF (or bare CR) was seen and normalized to CRLF */
    bool has_nul;         /* a NUL byte was seen (kept; informational) */
};

void smtp_data_init(struct smtp_data *d, uint64_t max_size);
/* Consumes in[0..len), appending unstuffed content to out (CRLF line endings,
 * without the final ".CRLF"; the last content line keeps its CRLF). Stops right
 * after the end-of-data marker.
 *  PT_AGAIN: all input consumed (*consumed = len), need more.
 *  PT_OK:    end of data reached; *consumed = bytes used (the rest is the next
 *            pipelined command). Check the flags to decide the reply.
 *  PT_NOMEM: out could not grow (out->max is honoured by stopping the append and
 *            setting too_big instead, so this is only real allocation failure). */
int smtp_data_feed(struct smtp_data *d, const char *in, size_t len, size_t *consumed,
                   struct buf *out);

/* Appends content (CRLF or LF lines) to out dot-stuffed, with CRLF endings, a CRLF
 * added after a last unterminated line, and the terminating ".\r\n". */
int smtp_dot_stuff(const char *content, size_t len, struct buf *out);

#endif
