/* MIME (RFC 2045/2046): the one writer of multipart headers, delimiter and close
 * lines, and the boundary check, for the HTTP message builder, the DSN and TLS-RPT
 * builders; and the 8-bit to 7-bit downgrade of a message (RFC 6152 §3). Pure text
 * assembly; never writes a bare CR or LF.
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

#define MIME_MAX_DEPTH 16      /* nested multiparts the downgrade walks */

/* The 7-bit form of msg[0..len) (a whole message, CRLF line ends) appended to out,
 * for a next hop without 8BITMIME (RFC 6152 §3): every entity whose body has octets
 * >= 0x80 and is 7bit/8bit (or unlabelled) is re-encoded, text/any as
 * quoted-printable, other leaf types as base64, and its Content-Transfer-Encoding
 * header replaced (moved to the end of its header block); multiparts are walked
 * (their own 8bit label becomes 7bit); everything else is copied byte for byte. A
 * top-level body without MIME headers also gets MIME-Version and a text/plain
 * Content-Type (charset utf-8 when the body is valid UTF-8, else unknown-8bit).
 * PT_OK; PT_INVALID when it cannot be converted without changing what it means:
 * 8-bit octets in a header, in a multipart preamble or epilogue, in a
 * message/any or binary (or already encoded) body, a multipart without a usable
 * boundary or close delimiter, nesting over MIME_MAX_DEPTH; PT_NOMEM. out gets
 * nothing but what was appended before a failure (the caller discards it). */
int mime_downgrade_7bit(const char *msg, size_t len, struct buf *out);

/* Whether p[0..n) has an octet >= 0x80. */
bool mime_has_8bit(const char *p, size_t n);

#endif
