/* Sites: a site is every destination domain whose MX hosts all match one glob
 * (e.g. "*.google.com"), so that the domains one provider hosts share one budget
 * (KumoMTA's site_name). Pure string matching: no DNS, no state, never allocates.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_SITE_H
#define PETREL_DELIVERY_SITE_H

#include <stdbool.h>
#include <stddef.h>

#define SITE_NAME_MAX 256

/* Whether glob is a usable site glob: host name characters (letters, digits, '-',
 * '.', '_') and the wildcards '*' (any run, dots included) and '?' (one
 * character), at least one non-wildcard character, no empty label ("a..b"), at
 * most SITE_NAME_MAX-1 characters. false fills why. */
bool site_glob_valid(const char *glob, char *why, size_t whylen);
/* Whether host (case-insensitive, a trailing dot ignored) matches glob as a
 * whole. */
bool site_glob_match(const char *glob, const char *host);
/* Whether every one of hosts[0..n) matches glob; false when n == 0. hosts is an
 * array of n strings spaced stride bytes apart (struct dns_host names). */
bool site_hosts_match(const char *glob, const char *hosts, size_t stride, int n);

#endif
