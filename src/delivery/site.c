/* Site globs: validation and whole-name matching of MX host names. Pure; must
 * never allocate or recurse without bound (the matcher is iterative).
 * SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "delivery/site.h"

bool site_glob_valid(const char *glob, char *why, size_t whylen)
{
    size_t n = strlen(glob), lit = 0;
    if (n == 0 || n >= SITE_NAME_MAX) {
        snprintf(why, whylen, "a site glob must have 1 to %d characters", SITE_NAME_MAX - 1);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)glob[i];
        if (c == '*' || c == '?')
            continue;
        if (!isalnum(c) && c != '-' && c != '.' && c != '_') {
            snprintf(why, whylen, "invalid character '%c' in site glob '%s' (host name "
                     "characters, '*' and '?' only)", isprint(c) ? c : '?', glob);
            return false;
        }
        if (c == '.' && glob[i + 1] == '.') {
            snprintf(why, whylen, "empty label in site glob '%s'", glob);
            return false;
        }
        if (c != '.')
            lit++;
    }
    if (lit == 0) {
        snprintf(why, whylen, "site glob '%s' matches every host; use the default rule", glob);
        return false;
    }
    return true;
}

bool site_glob_match(const char *glob, const char *host)
{
    size_t hn = strlen(host);
    if (hn && host[hn - 1] == '.')
        hn--;
    const char *g = glob, *star = NULL;
    size_t h = 0, mark = 0;
    while (h < hn) {
        if (*g == '*') {
            star = g++;
            mark = h;
        } else if (*g && (*g == '?' || tolower((unsigned char)*g) ==
                                       tolower((unsigned char)host[h]))) {
            g++;
            h++;
        } else if (star) {
            g = star + 1;
            h = ++mark;
        } else {
            return false;
        }
    }
    while (*g == '*')
        g++;
    return *g == 0;
}

bool site_hosts_match(const char *glob, const char *hosts, size_t stride, int n)
{
    if (n <= 0)
        return false;
    for (int i = 0; i < n; i++)
        if (!site_glob_match(glob, hosts + (size_t)i * stride))
            return false;
    return true;
}
