/* SMTP AUTH server side (RFC 4954): a pure SASL state machine for PLAIN (RFC 4616),
 * LOGIN and CRAM-MD5 (RFC 2195). Bytes in, result codes and challenges out; never
 * touches a socket, never logs or keeps a password beyond the call that checks it.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_AUTH_H
#define PETREL_SMTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/users.h"

/* Room the caller gives sasl_start/sasl_step for a challenge (base64, NUL). */
#define SASL_OUT_MAX 512
/* Longest client line sasl_step accepts (base64 of the longest PLAIN message:
 * 255 + 255 + 1024 bytes and two NULs). Longer lines are PT_INVALID. */
#define SASL_LINE_MAX 2048
#define SASL_CHALLENGE_MAX 320   /* "<random.timestamp@hostname>" */

#define SASL_MECHS "PLAIN LOGIN CRAM-MD5"   /* everything this module speaks */

/* One exchange per SMTP session. The fields are private to smtp_auth.c; the
 * struct is public only so a session can embed it without an allocation. */
struct sasl {
    const struct users *users;               /* borrowed; must outlive the sasl */
    char hostname[256];
    int mech;                                /* index in the mechanism table, -1 = none */
    int state;                               /* enum sasl_state in smtp_auth.c */
    char user[USERS_NAME_MAX + 1];           /* LOGIN: name so far; after PT_OK: the user */
    char challenge[SASL_CHALLENGE_MAX];      /* CRAM-MD5, as sent (before base64) */
    size_t challenge_len;
};

/* Prepares s for a session. users (borrowed; NULL = no AUTH: every mechanism is
 * PT_NOTFOUND) and hostname (copied, for CRAM-MD5 challenges). */
void sasl_init(struct sasl *s, const struct users *users, const char *hostname);

/* AUTH <mech> [initial]: mech is case-insensitive; initial is the initial
 * response as sent (NULL = none, "=" = empty); allowed is the space-separated,
 * case-insensitive list of mechanisms enabled on the listener (NULL = all of
 * SASL_MECHS). out (outlen >= SASL_OUT_MAX) receives the next challenge.
 * Returns, with the reply the SMTP session sends:
 *   PT_AGAIN    "334 " + out (base64, may be empty); feed the next line to sasl_step
 *   PT_OK       authenticated, sasl_user(s) names the user: "235 2.7.0 Authentication successful"
 *   PT_INVALID  malformed: bad base64, bad PLAIN structure, over the limits, NUL in
 *               LOGIN data, an initial response to CRAM-MD5, or "*": "501 5.5.2 ..."
 *               ("501 5.0.0 Authentication cancelled" when the line was "*")
 *   PT_ERROR    credentials wrong (unknown users look the same):
 *               "535 5.7.8 Authentication credentials invalid"
 *   PT_NOTFOUND unknown or disabled mechanism: "504 5.5.4 Unrecognized authentication type"
 *   PT_NOMEM    libcrypt ran out of memory: "454 4.7.0 Temporary authentication failure"
 * Any result but PT_AGAIN ends the exchange; a failed one leaves s idle.
 * COST: a PLAIN or LOGIN check against a crypt(3) entry runs the hash
 * synchronously (~10+ ms for yescrypt, see users_verify_plain). The SMTP server
 * may call this on its loop for now; moving the check to a work thread is the
 * planned fix, and sasl_* stay pure so either is possible. */
int sasl_start(struct sasl *s, const char *mech, const char *initial, const char *allowed,
               char *out, size_t outlen);

/* The client's answer to a 334 challenge: line of len bytes without CRLF.
 * Same results as sasl_start. "*" cancels (PT_INVALID, see above);
 * sasl_was_cancelled tells the two 501s apart. */
int sasl_step(struct sasl *s, const char *line, size_t len, char *out, size_t outlen);

/* True while an exchange waits for sasl_step. */
bool sasl_in_progress(const struct sasl *s);
/* True when the last exchange ended with the client's "*". */
bool sasl_was_cancelled(const struct sasl *s);
/* The authenticated user after PT_OK (borrowed from s), else NULL. */
const char *sasl_user(const struct sasl *s);
/* The user name the client gave so far (also after a failure: for the AuthFailure
 * record), or NULL. Borrowed from s. */
const char *sasl_tried_user(const struct sasl *s);
/* Ends any exchange and forgets the user; wipes every secret (explicit_bzero).
 * users and hostname are kept. */
void sasl_reset(struct sasl *s);

#endif
