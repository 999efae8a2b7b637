/* IDNA for DNS lookups: a UTF-8 domain (an SMTPUTF8 recipient's U-labels) to the
 * A-label form that goes into queries, with libidn2 (IDNA2008, UTS #46
 * nontransitional). Never used on the envelope: RCPT keeps the UTF-8 form.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_IDNA_H
#define PETREL_UTIL_IDNA_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s (NUL-terminated) holds a byte >= 0x80: only such names need idna_to_ascii. */
bool idna_is_ascii(const char *s);

/* Converts the domain in (NUL-terminated UTF-8) to its A-label form in out (at most
 * outlen bytes with the NUL). An all-ASCII name, "xn--" labels included, is copied
 * unchanged (the DNS layer validates its syntax). A name with non-ASCII bytes goes
 * through idn2_to_ascii_8z with NFC input and UTS #46 nontransitional processing
 * (IDNA2008; mapping lowercases, so "BÜCHER.example" and "bücher.example" give the
 * same "xn--bcher-kva.example"); when that refuses a disallowed code point, the
 * transitional processing browsers fall back to is tried. PT_OK, or PT_INVALID with
 * libidn2's reason in err (a hyphen at a label's start or end, a label or name too
 * long, bad UTF-8...), or PT_TOOLONG when out is too small. err may be NULL. */
int idna_to_ascii(const char *in, char *out, size_t outlen, char *err, size_t errlen);

#endif
