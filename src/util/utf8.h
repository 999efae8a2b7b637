/* UTF-8 validation shared by the event log and the metrics registry.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_UTF8_H
#define PETREL_UTIL_UTF8_H

#include <stddef.h>

/* Length (2..4) of the well-formed UTF-8 sequence starting with the non-ASCII byte
 * at p, or 0 when it is not one (stray continuation, overlong, surrogate,
 * > U+10FFFF, truncated). p must be NUL-terminated: NUL fails the continuation
 * test, so reads stay in bounds. */
size_t utf8_seq_len(const unsigned char *p);

#endif
