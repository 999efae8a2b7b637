/* Base64 (RFC 4648 section 4, with padding): the one encoder and decoder of the
 * project (SASL, DKIM, MIME bodies, HTTP attachments). Pure; never reads or writes
 * past the bounds it is given.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_BASE64_H
#define PETREL_UTIL_BASE64_H

#include <stddef.h>

#include "util/buf.h"

/* Decoding options. */
#define BASE64_SKIP_SPACE 1u   /* ignore SP, HTAB, CR and LF anywhere (MIME, JSON) */
#define BASE64_CANONICAL 2u    /* refuse non-zero bits in the last character before
                                  padding (RFC 4648 3.5; SASL wants one encoding) */

/* Characters of the encoding of n octets, without a NUL. */
size_t base64_encoded_len(size_t n);

/* Writes the encoding of in[0..len) and a NUL into out. PT_OK, or PT_TOOLONG when
 * outlen < base64_encoded_len(len) + 1 (out untouched). */
int base64_encode(const void *in, size_t len, char *out, size_t outlen);

/* Appends the encoding of p[0..n) to w; line > 0 (a multiple of 4) breaks it into
 * lines of that many characters, each ended by CRLF (MIME bodies: 76). */
void base64_put(struct bufw *w, const void *p, size_t n, size_t line);

/* Decodes in[0..len) into out[0..outcap); *outlen = octets written. PT_OK; PT_INVALID
 * for a character outside the alphabet, a length that is not a multiple of 4
 * (after skipped spaces), '=' anywhere but the last one or two places, or (with
 * BASE64_CANONICAL) non-zero pad bits; PT_TOOLONG when out is too small. */
int base64_decode(const char *in, size_t len, unsigned flags, unsigned char *out, size_t outcap,
                  size_t *outlen);

#endif
