/* AUTH failure tracker: counts failed AUTH attempts per client address within a
 * sliding window and bans an address that reaches the limit for a fixed time.
 * Thread-safe; memory is bounded (never more than max_ips addresses tracked).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CORE_AUTHBAN_H
#define PETREL_CORE_AUTHBAN_H

#include <stdbool.h>
#include <stddef.h>

#define AUTHBAN_MAX_IPS 65536      /* default bound on tracked addresses */
#define AUTHBAN_MAX_FAILURES 100   /* largest max_failures (each keeps a time per failure) */

struct authban;

/* A tracker that bans an address for ban_s seconds once it has max_failures
 * failures within window_s seconds (1 <= max_failures <= AUTHBAN_MAX_FAILURES,
 * window_s > 0, ban_s > 0), tracking at most AUTHBAN_MAX_IPS addresses.
 * NULL on bad arguments or without memory. The caller owns it (authban_free). */
struct authban *authban_new(int max_failures, double window_s, double ban_s);
/* As authban_new with another bound on tracked addresses (>= 1). Records with
 * nothing left to count are dropped as they age out; when full, a new address
 * evicts the record whose last failure is the oldest, even a banned one: a
 * flood from max_ips fresh addresses can cut old bans short but never grows
 * memory. */
struct authban *authban_new_cap(int max_failures, double window_s, double ban_s,
                                size_t max_ips);
void authban_free(struct authban *b);   /* NULL is a no-op */

/* ip is the client address as text (IPv4, IPv6, or IPv4-mapped IPv6; a "%zone"
 * suffix is ignored). IPv6 addresses count per /64, the smallest block a
 * single client usually holds; IPv4-mapped ones count as their IPv4 address.
 * Text that is not an address is never tracked nor banned.
 * now is a monotonic time in seconds (e.g. uv_now()/1000.0); calls must not
 * go back in time by more than the window. */

/* Records one AUTH failure of ip at now. Returns true when this failure starts a
 * ban (log it, count it); false otherwise, including while ip is already
 * banned (that failure does not extend the ban). */
bool authban_failure(struct authban *b, const char *ip, double now);
/* Takes back up to n of ip's most recent failures still in the window (a client
 * that failed and then authenticated in the same session, e.g. a client trying
 * CRAM-MD5 before PLAIN). Never lifts or shortens a ban already started. */
void authban_forgive(struct authban *b, const char *ip, int n, double now);
/* True while ip is banned at now: refuse it with 421 before any AUTH. */
bool authban_is_banned(struct authban *b, const char *ip, double now);
/* Cluster sharing (cluster/limits.h): fn (NULL = none) is called, outside the
 * lock, when a failure starts a ban, with ip as given and the ban's end (now +
 * ban_s). Set it before other threads use b. */
void authban_set_observer(struct authban *b, void (*fn)(void *arg, const char *ip, double until),
                          void *arg);
/* A ban made elsewhere: ip is banned until `until` (same clock as now), unless it
 * already is for longer. */
void authban_ban(struct authban *b, const char *ip, double until);
/* Addresses currently tracked (for tests and metrics). */
size_t authban_count(struct authban *b);

#endif
