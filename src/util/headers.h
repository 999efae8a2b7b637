/* RFC 5322 header block helpers: walking the fields of a message's header, and the
 * header edits that hooks ask for (add_header / remove_header), recorded as text
 * at reception and applied when the message is sent. Pure functions; fuzzed.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_HEADERS_H
#define PETREL_UTIL_HEADERS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

#define HDR_LINE_MAX 998     /* RFC 5322 2.1.1, without the CRLF */

struct hdr_field {
    const char *name;        /* not NUL-terminated */
    size_t name_len;
    const char *value;       /* after the colon, folding included, final line end excluded */
    size_t value_len;
    size_t raw_len;          /* whole field with its line end(s), from name */
};

/* Reads the field at *pos of the header block in msg[0..len) and advances *pos past
 * it. false at the end of the header block: an empty line, the end of msg, or a
 * line that is not a field (no colon, a name outside printable ASCII, or a
 * continuation line with no field before it). Line ends are LF or CRLF. */
bool hdr_next(const char *msg, size_t len, size_t *pos, struct hdr_field *f);

/* Appends the value unfolded (line ends removed) and trimmed of surrounding
 * white space to out. */
int hdr_unfold(const char *value, size_t n, struct buf *out);

/* Header edits: a text of lines "+Name: value\n" (add a field) and "-Name\n"
 * (drop every field of that name: those of the message and those added before).
 * Added fields go at the top of the message, in the order they were added. */

/* Records adding "name: value". PT_INVALID when name is not a field name
 * (1..76 printable ASCII characters other than ':') or value holds CR, LF or NUL
 * or makes a line longer than HDR_LINE_MAX. */
int hdr_edit_add(struct buf *edits, const char *name, const char *value);
/* Records removing every field called name (case-insensitive). PT_INVALID as above. */
int hdr_edit_remove(struct buf *edits, const char *name);

/* Appends msg with edits applied to out. Lines of edits that are not well formed
 * are skipped (edits come from hdr_edit_*, but are read back from the spool). */
int hdr_apply(const char *msg, size_t len, const char *edits, size_t edits_len, struct buf *out);

#endif
