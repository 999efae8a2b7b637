/* Parsing of config values: durations ("30s", "5m", "72h", "7d", plain seconds),
 * sizes ("25MB", "512KB", bytes; KB/MB/GB are powers of 1024) and host:port.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_PARSE_H
#define PETREL_UTIL_PARSE_H

#include <stdint.h>

/* Suffixes: ms, s, m, h, d (no suffix = seconds). Fractions allowed ("1.5h").
 * Negative, empty or garbage = PT_INVALID. */
int parse_duration(const char *s, double *secs);
/* Suffixes (case-insensitive): B, KB, MB, GB, also K, M, G. PT_INVALID on garbage or overflow. */
int parse_size(const char *s, uint64_t *bytes);
/* "host:port", "[host]:port", "[v6addr]:port", "host" (port = default_port).
 * *bracketed is set when the host was in brackets (Postfix: no MX lookup).
 * host must have room for 256 bytes. */
int parse_hostport(const char *s, char *host, uint16_t *port, int *bracketed,
                   uint16_t default_port);

#endif
