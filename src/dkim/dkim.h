/* DKIM signer (RFC 6376, RFC 8463): rsa-sha256 and ed25519-sha256, relaxed/relaxed.
 * Pure apart from loading the key: never reads DNS, never changes the message.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DKIM_DKIM_H
#define PETREL_DKIM_DKIM_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

#define DKIM_FOLD_AT 78          /* octets per line of the DKIM-Signature field, CRLF excluded */
#define DKIM_DOMAIN_MAX 73       /* d= must fit one folded line: " d=" DOMAIN ";" <= 78 */
#define DKIM_SELECTOR_MAX 63     /* s=, one DNS label's worth (and fits a line) */
#define DKIM_NAME_MAX 64         /* a configured header field name */
#define DKIM_NAMES_MAX 32        /* configured header field names (From included) */
#define DKIM_RSA_MIN_BITS 1024   /* RFC 8301 3.2 */

struct dkim_key;

/* Loads a PEM private key (RSA >= 1024 bits for "rsa-sha256", Ed25519 for
 * "ed25519-sha256"; the key type must match the algorithm). headers: the header
 * field names to sign (e.g. From, To, Subject, Date, Message-ID); "From" is always
 * signed even if not listed (first, when it is not); names listed twice count once.
 * domain and selector are copied (checked as DNS names that fit a folded line);
 * headers is borrowed for the call only. Returns NULL with "key_file PATH: reason"
 * in err for key problems ("domain ...", "selector ...", "algorithm ...",
 * "header ..." for the other arguments). An encrypted key is refused, never
 * prompted for. */
struct dkim_key *dkim_key_load(const char *domain, const char *selector, const char *key_file,
                               const char *algorithm, const char *const *headers, int nheaders,
                               char *err, size_t errlen);
void dkim_key_free(struct dkim_key *k);               /* NULL ok */
const char *dkim_key_domain(const struct dkim_key *k); /* borrowed, lives as long as k */

/* Appends to out one complete "DKIM-Signature: ..." header field (folded lines of at
 * most DKIM_FOLD_AT octets, ending in CRLF) for the message msg[0..len) (RFC 5322,
 * CRLF line ends only; header block, blank line, body). Canonicalization
 * relaxed/relaxed, t= now (integer seconds, truncated), no x=, no l=, no i=.
 * h= lists, for each configured name, as many instances as the message has (RFC
 * 6376 5.4.2: signed bottom-up); names not present are left out. Thread-safe: the
 * key is only read. PT_OK; PT_INVALID (no header block, a header block not ended
 * by an empty line or the end of msg, or no From); PT_NOMEM; PT_ERROR (OpenSSL).
 * On failure out may hold a partial field: the caller truncates to its old length. */
int dkim_sign(const struct dkim_key *k, const char *msg, size_t len, double now, struct buf *out);

/* The domain of the first address in the (first) From header field of msg,
 * lowercased into out (size >= 256): handles "Name <a@b.example>", "a@b.example",
 * comments, quoted local parts, folded values, a group's first member. Returns
 * false if there is none (no From, no '@', a domain literal, or not a host name). */
bool dkim_from_domain(const char *msg, size_t len, char out[256]);

/* true if from_domain is domain or a subdomain of it (case-insensitive; one
 * trailing dot on either is ignored). false for NULL or empty arguments. */
bool dkim_domain_covers(const char *domain, const char *from_domain);

/* Canonicalization, exposed for the unit tests (RFC 6376 3.4.2 and 3.4.4). */
/* Appends "name:value\r\n" in relaxed form: name lowercased, value unfolded, WSP
 * runs as one SP, no WSP at either end of the value. */
int dkim_canon_header(const char *name, size_t name_len, const char *value, size_t value_len,
                      struct buf *out);
/* Appends the relaxed form of body[0..len) (lines split at CRLF only): WSP runs as
 * one SP, none at line ends, no empty lines at the end, a CRLF after the last
 * line; an empty body stays empty. */
int dkim_canon_body(const char *body, size_t len, struct buf *out);

#endif
