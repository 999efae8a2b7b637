/* POSIX extended regexes from configuration (header checks, shaping automation):
 * compiled by the C library after a check that the pattern cannot make regcomp
 * build an enormous automaton (glibc copies a repeated group once per repetition,
 * so "a++++..." or "(a{99}){99}" take gigabytes).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_REGEX_H
#define PETREL_UTIL_REGEX_H

#include <regex.h>
#include <stddef.h>

#define REGEX_MAX_LEN 1024     /* pattern bytes */
#define REGEX_MAX_NODES 4096   /* estimated automaton size after repetition copies */

/* PT_OK when pattern is short and its estimated size (atoms, each repetition
 * multiplying what it repeats: *, + and ? by 2, {m,n} by n+1) stays within
 * REGEX_MAX_NODES; else PT_INVALID with the reason in err. Never compiles. */
int regex_check(const char *pattern, char *err, size_t errlen);
/* regex_check, then regcomp(re, pattern, flags): PT_OK (re to regfree), PT_NOMEM, or
 * PT_INVALID with "invalid regex 'PATTERN': reason" in err. */
int regex_compile(regex_t *re, const char *pattern, int flags, char *err, size_t errlen);

#endif
