/* CIDR ranges for relay_hosts / trusted_hosts: parsing and matching of IPv4 and
 * IPv6 addresses (an IPv4-mapped IPv6 client matches IPv4 ranges).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_CIDR_H
#define PETREL_UTIL_CIDR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
    int family;        /* AF_INET or AF_INET6 */
    uint8_t addr[16];  /* network order; masked to prefix */
    int prefix;        /* 0..32 or 0..128 */
};

/* "10.0.0.0/8", "::1/128", or a bare address (= /32 or /128).
 * Returns PT_OK or PT_INVALID (bad address, prefix out of range, host bits set are
 * allowed and masked off). */
int cidr_parse(const char *s, struct cidr *out);
bool cidr_match(const struct cidr *c, const struct sockaddr *sa);
bool cidr_match_any(const struct cidr *list, int n, const struct sockaddr *sa);
/* Formats the IP of sa (no port) into out; IPv4-mapped IPv6 is shown as IPv4. */
void cidr_addr_str(const struct sockaddr *sa, char *out, size_t outlen);

#endif
