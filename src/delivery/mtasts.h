/* MTA-STS (RFC 8461), the pure part: the `_mta-sts` TXT record, the policy file
 * served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt, MX pattern matching,
 * the cache decision and the cache file format. No I/O, no allocation: bytes in,
 * verdicts out, so it is unit-tested and fuzzed directly.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_MTASTS_H
#define PETREL_DELIVERY_MTASTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MTASTS_POLICY_MAX (64 * 1024)  /* RFC 8461 §3.3: senders may cap at 64 KB */
#define MTASTS_MAX_MX 32               /* mx: lines kept; a policy with more is invalid */
#define MTASTS_ID_MAX 32               /* sts-id = 1*32(ALPHA / DIGIT) */
#define MTASTS_MAX_AGE_MAX 31557600u   /* §3.2: max_age at most one year */

enum mtasts_mode { MTASTS_NONE = 0, MTASTS_TESTING, MTASTS_ENFORCE };

struct mtasts_policy {
    enum mtasts_mode mode;
    uint32_t max_age;                  /* seconds */
    int nmx;
    char mx[MTASTS_MAX_MX][256];       /* patterns, lower case, no trailing dot */
};

/* "none" | "testing" | "enforce". */
const char *mtasts_mode_name(enum mtasts_mode m);

/* One TXT record's text (its character-strings concatenated, len bytes, borrowed).
 * PT_OK with the id in id (NUL-terminated) when it is a valid STSv1 record;
 * PT_NOTFOUND when it does not start with "v=STSv1" (another TXT at that name, to be
 * ignored); PT_INVALID when it starts so but is malformed (RFC 8461 §3.1). */
int mtasts_parse_txt(const char *txt, size_t len, char id[MTASTS_ID_MAX + 1]);

/* A policy body (len bytes, borrowed; longer than MTASTS_POLICY_MAX is PT_TOOLONG).
 * PT_OK and *out filled when valid per RFC 8461 §3.2 (version STSv1, a known mode,
 * max_age in range, at least one mx unless mode is none); PT_INVALID otherwise, with
 * the reason in why (whylen bytes, always NUL-terminated). Unknown keys are ignored;
 * of a repeated key (mx aside) the first counts. */
int mtasts_parse_policy(const char *body, size_t len, struct mtasts_policy *out, char *why,
                        size_t whylen);

/* Whether host (an MX name; case and a trailing dot do not matter) matches pattern:
 * equal, or pattern "*.rest" and host is exactly one label followed by ".rest". */
bool mtasts_pattern_match(const char *pattern, const char *host);
/* Whether host matches any mx pattern of p. */
bool mtasts_mx_match(const struct mtasts_policy *p, const char *host);

/* The cache file of one domain: one header line "petrel-mta-sts id=ID fetched=EPOCH",
 * then the policy body as served. mtasts_cache_header writes the line into out;
 * mtasts_cache_parse reads a whole file (borrowed): PT_OK with the id, fetch time and
 * parsed policy, else PT_INVALID. */
int mtasts_cache_header(const char *id, int64_t fetched, char *out, size_t outlen);
int mtasts_cache_parse(const char *file, size_t len, char id[MTASTS_ID_MAX + 1],
                       int64_t *fetched, struct mtasts_policy *out);

/* What to do for a domain given what is cached and what the TXT lookup said
 * (RFC 8461 §5.1): txt_id is the published id, NULL when there is no valid record
 * or the lookup failed; cached_id the cached policy's id, NULL when none is cached
 * or it has expired. */
enum mtasts_action {
    MTASTS_USE_CACHED,   /* the cached policy holds */
    MTASTS_FETCH,        /* fetch; on failure keep the cached one if any */
    MTASTS_NO_POLICY,    /* no policy applies */
};
enum mtasts_action mtasts_decide(const char *txt_id, const char *cached_id);

#endif
