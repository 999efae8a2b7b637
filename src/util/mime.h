/* MIME multipart framing (RFC 2046 5.1): the one writer of multipart headers,
 * delimiter and close lines, and the boundary check, for the HTTP message builder
 * and the DSN builder. Pure text assembly on a bufw; never writes a bare CR or LF.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_MIME_H
#define PETREL_UTIL_MIME_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

#define MIME_BOUNDARY_MAX 70   /* RFC 2046 5.1.1 */

/* "Content-Type: multipart/SUBTYPE; boundary="B"" and CRLF, or with params (e.g.
 * "report-type=delivery-status") "...SUBTYPE; PARAMS;" CRLF TAB "boundary="B"" CRLF;
 * then the blank line, the preamble line when there is one, and the first
 * delimiter line. The caller writes the first part next. All strings borrowed,
 * trusted (ours, not a client's). */
void mime_multipart_begin(struct bufw *w, const char *subtype, const char *params,
                          const char *boundary, const char *preamble);
/* The delimiter line before each further part: "--B" CRLF. The CRLF before it
 * belongs to the delimiter (RFC 2046 5.1.1): a part not ending in CRLF needs one. */
void mime_multipart_next(struct bufw *w, const char *boundary);
/* The close delimiter line "--B--" CRLF. */
void mime_multipart_end(struct bufw *w, const char *boundary);

/* true when "--boundary" occurs in any of texts[0..n) (NULL data = empty): the
 * boundary cannot be used with those part bodies. */
bool mime_boundary_clashes(const char *boundary, const struct buf *texts, size_t n);

#endif
