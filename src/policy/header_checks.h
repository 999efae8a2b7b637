/* Header checks (configure_header_checks, Postfix header_checks semantics): POSIX
 * extended, case-insensitive regexes matched against each unfolded header field of
 * a client's message, first matching rule wins per field. Pure: no I/O, no logging,
 * no globals; a compiled set is immutable and may be used by many threads at once.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_POLICY_HEADER_CHECKS_H
#define PETREL_POLICY_HEADER_CHECKS_H

#include <stddef.h>

#include "util/buf.h"

struct header_checks;

#define HEADER_CHECKS_TEXT_MAX 512   /* REJECT / WARN / DISCARD text, bytes */

/* One rule as configured: pattern and action ("IGNORE", "DUNNO", "OK",
 * "WARN [text]", "REJECT [text]", "DISCARD [text]", "PREPEND text", "REPLACE text";
 * the verb is case-insensitive). Borrowed by header_checks_new. */
struct header_checks_rule { const char *pattern, *action; };

/* Compiles n rules. PT_OK with *out (owned by the caller; header_checks_free), or
 * PT_INVALID with *bad = the index of the offending rule and a one-line reason in
 * err (the pattern does not compile, the action is unknown, or the text of PREPEND /
 * REPLACE is not one header line "Name: value" under 998 octets), or PT_NOMEM.
 * n == 0 gives a set that changes nothing. */
int header_checks_new(const struct header_checks_rule *rules, size_t n, struct header_checks **out,
                      size_t *bad, char *err, size_t errlen);
/* Writes the canonical spelling of one action ("VERB" or "VERB text", the verb
 * uppercased) into out. PT_OK, or PT_INVALID with the reason in err. */
int header_checks_canon(const char *action, char *out, size_t outlen, char *err, size_t errlen);
void header_checks_free(struct header_checks *hc);    /* NULL ok */
size_t header_checks_count(const struct header_checks *hc);  /* rules; 0 for NULL */

enum header_checks_verdict {
    HEADER_CHECKS_ACCEPT = 0,    /* queue the (possibly rewritten) message */
    HEADER_CHECKS_REJECT,        /* refuse it: "550 " + text */
    HEADER_CHECKS_DISCARD,       /* accept it and drop it */
};

struct header_checks_result {
    enum header_checks_verdict verdict;
    /* REJECT: the reply without its code, e.g. "5.7.1 message content rejected";
     * DISCARD: the reason. */
    char text[HEADER_CHECKS_TEXT_MAX];
    size_t rule;                 /* index of the rule that decided (REJECT/DISCARD) */
    size_t changed;              /* fields dropped, replaced or prepended */
    size_t warnings;             /* WARN matches */
    char warning[HEADER_CHECKS_TEXT_MAX]; /* the first WARN: "rule N: text: header" */
};

/* Checks the header block of msg[0..len) and appends the message with the actions
 * applied to out (fields that match no rule, and the body, byte for byte; added
 * lines end in CRLF). res tells the verdict. out is untouched unless PT_OK is
 * returned and the verdict is ACCEPT. PT_OK or PT_NOMEM. */
int header_checks_apply(const struct header_checks *hc, const char *msg, size_t len,
                        struct buf *out, struct header_checks_result *res);

#endif
