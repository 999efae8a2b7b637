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
#define REGEX_MAX_NULLABLE 64  /* copies made by repeating expressions that can
                                  already match the empty string, in all */
#define REGEX_MAX_OPTIONAL 1024 /* optional copies ("a?", "a{0,9}"), in all */
#define REGEX_MAX_BOUNDARIES 8 /* word boundaries and back-references */

/* Whether glibc's regcomp would take long (seconds to hours) or build an enormous
 * automaton for pattern: PT_OK when it is short and within these estimates, else
 * PT_INVALID with the reason in err. Never compiles.
 * - size: atoms, each repetition multiplying what it repeats (*, + and ? by 2,
 *   {m,n} by n+1): at most REGEX_MAX_NODES;
 * - the copies a repetition makes optional: their closures grow with the square
 *   of their number ("[a-z]{0,4000}" takes 0.6 s, 2 s after a "\b");
 * - repetitions of what can already match the empty string ("(a?){n}", "(|a)+"):
 *   the square of their copies, and much more near an anchor;
 * - word boundaries, whose cost multiplies with the empty matches around them
 *   ("\b(a|)" 30 times takes 1.5 s): at most REGEX_MAX_BOUNDARIES, and with any,
 *   a quarter of the two budgets above;
 * - refused outright: a repetition of a repetition ("a++", "a*?": undefined in
 *   POSIX) and a repeated anchor or back-reference ("(\b){40}" takes seconds,
 *   "(\b){60}" minutes). */
int regex_check(const char *pattern, char *err, size_t errlen);
/* regex_check, then regcomp(re, pattern, flags): PT_OK (re to regfree), PT_NOMEM, or
 * PT_INVALID with "invalid regex 'PATTERN': reason" in err. */
int regex_compile(regex_t *re, const char *pattern, int flags, char *err, size_t errlen);

#endif
