/* DKIM key cache for per-message signing requests (sign_dkim from a hook): loads a
 * key file once per (domain, selector, file) and hands out the same parsed key to
 * every thread; a key file whose mtime or size changed is loaded again. Thread-safe
 * (one mutex); never signs, never frees a key it has handed out before exit.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DKIM_DKIM_CACHE_H
#define PETREL_DKIM_DKIM_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#define DKIM_CACHE_MAX 4096        /* distinct keys loaded per process (old versions count) */
#define DKIM_CACHE_RECHECK_S 10.0  /* a cached key's file is stat()ed at most this often */

struct dkim_key;

/* The key for signing as domain / selector with the PEM key in key_file, loaded
 * (or reloaded after the file changed) on demand; the algorithm follows the key
 * type (RSA: rsa-sha256, Ed25519: ed25519-sha256); the signed headers are From, To,
 * Subject, Date, Message-ID. Returns the key (borrowed: valid until
 * dkim_key_cache_clear, i.e. for the life of the process), or NULL with
 * "key_file PATH: reason" (or "domain ..." / "selector ...") in err: missing or
 * unreadable file, not a usable key, cache full. Reads the file on the calling
 * thread the first time only (a few KB). */
const struct dkim_key *dkim_key_cache_get(const char *domain, const char *selector,
                                          const char *key_file, char *err, size_t errlen);

/* The cached key for domain / selector / key_file without touching the file (safe on
 * an event loop): NULL when it was never loaded (or its last load failed). When a key
 * is returned, *recheck_due (if not NULL) tells whether its file is due for the mtime
 * check of DKIM_CACHE_RECHECK_S: the caller then goes through dkim_key_cache_get off
 * the loop before trusting it. */
const struct dkim_key *dkim_key_cache_peek(const char *domain, const char *selector,
                                           const char *key_file, bool *recheck_due);

/* Frees every cached key. Only when no thread can use one any more (exit, tests). */
void dkim_key_cache_clear(void);

#endif
