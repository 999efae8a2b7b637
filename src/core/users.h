/* SMTP AUTH user table: loads users_file ("user:HASH" lines) and verifies
 * passwords and CRAM-MD5 digests against it. Never stores or logs a clear-text
 * password, and never compares secrets with anything but CRYPTO_memcmp.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_USERS_H
#define PETREL_CORE_USERS_H

#include <stdbool.h>
#include <stddef.h>

/* Limits shared with the SASL server: longer names or passwords are refused
 * before any hashing happens. */
#define USERS_NAME_MAX 255
#define USERS_PASS_MAX 1024
#define USERS_LINE_MAX 4096              /* one users_file line, without newline */
#define USERS_FILE_MAX (64u << 20)       /* a larger users_file is an error */

/* Dovecot's CRAM-MD5 scheme (`doveadm pw -s CRAM-MD5`): the MD5 chaining state
 * after absorbing key^opad, then after key^ipad (key = password, or MD5 of it
 * when longer than 64 bytes), each as four little-endian 32-bit words; written
 * as "{CRAM-MD5}" and 64 hex digits. */
#define USERS_CRAM_PREFIX "{CRAM-MD5}"
#define USERS_CRAM_CONTEXT_LEN 32
#define USERS_CRAM_HASH_LEN (sizeof USERS_CRAM_PREFIX - 1 + 2 * USERS_CRAM_CONTEXT_LEN)
#define USERS_CRAM_DIGEST_LEN 16

/* Room for any hash users_crypt_hash() produces, NUL included. */
#define USERS_HASH_MAX 512

struct users;   /* immutable once loaded: safe to share between threads */

/* Loads path. A line is "user:HASH"; blank lines and lines whose first
 * non-blank character is '#' are skipped; a trailing "\r" is ignored. HASH is a
 * crypt(3) string starting "$y$", "$6$" or "$5$" (PLAIN and LOGIN only), or
 * "{CRAM-MD5}" + 64 hex digits (PLAIN, LOGIN and CRAM-MD5). User names are
 * 1..USERS_NAME_MAX bytes without ':', spaces or control characters, unique
 * and case-sensitive. On error returns NULL and writes "FILE:LINE: message"
 * (LINE 0 for errors about the whole file) into err. The caller owns the table. */
struct users *users_load(const char *path, char *err, size_t errlen);

/* As users_load, from len bytes of text in memory; name is used in messages.
 * text need not be NUL-terminated. */
struct users *users_parse(const char *name, const char *text, size_t len, char *err,
                          size_t errlen);

void users_free(struct users *u);                 /* wipes the hashes; NULL is a no-op */
size_t users_count(const struct users *u);
/* True when at least one user has a {CRAM-MD5} entry, i.e. CRAM-MD5 can succeed. */
bool users_has_cram(const struct users *u);

/* Checks user's clear-text password (both borrowed, NUL-terminated).
 * Returns PT_OK on a match; PT_ERROR for a wrong password, an unknown user, or
 * a name or password over the limits (the three are indistinguishable, and an
 * unknown user costs the same hashing as a known one); PT_NOMEM when libcrypt
 * could not get the memory it needs (a temporary failure: 454 4.7.0).
 * COST: a crypt(3) entry runs the full hash, ~10+ ms of CPU and 16 MiB of RAM
 * for default yescrypt. Callers on an event loop should run this on a work
 * thread (uv_queue_work) so the loop never stalls; it is thread-safe. */
int users_verify_plain(const struct users *u, const char *user, const char *pass);

/* Checks a CRAM-MD5 answer (RFC 2195): digest must equal
 * HMAC-MD5(password, challenge) for user's {CRAM-MD5} entry. Cheap (two MD5
 * blocks). Returns PT_OK or PT_ERROR (wrong digest, unknown user, or a user
 * with a crypt(3) entry, which cannot serve CRAM-MD5). */
int users_verify_cram(const struct users *u, const char *user, const char *challenge,
                      size_t challenge_len, const unsigned char digest[USERS_CRAM_DIGEST_LEN]);

/* Computes the Dovecot CRAM-MD5 contexts of pass (len bytes) into ctx. */
void users_cram_context(const char *pass, size_t len, unsigned char ctx[USERS_CRAM_CONTEXT_LEN]);

/* Writes "{CRAM-MD5}<64 lowercase hex>" for pass into out (at least
 * USERS_CRAM_HASH_LEN + 1 bytes). Returns PT_OK, or PT_TOOLONG when out is short. */
int users_cram_hash(const char *pass, size_t len, char *out, size_t outlen);

/* Writes a fresh crypt(3) hash of pass (NUL-terminated) into out: yescrypt with
 * libcrypt's default cost, or SHA-512 crypt ("$6$") where yescrypt is not
 * available. Returns PT_OK, PT_TOOLONG (out too short), PT_NOMEM or PT_ERROR
 * (libcrypt failed, e.g. no entropy). Slow, like users_verify_plain. */
int users_crypt_hash(const char *pass, char *out, size_t outlen);

#endif
