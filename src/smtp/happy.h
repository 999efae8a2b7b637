/* Happy Eyeballs connection racing (RFC 8305 §5, light): connects to one of a host's
 * addresses, tried in their order (dns.c interleaves IPv6 and IPv4, IPv6 first);
 * the next attempt starts when the previous one has not connected within the
 * attempt delay or has failed, and the first to connect wins: the others are
 * closed. Only TCP connects; never reads or writes. One loop, never blocks it.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_HAPPY_H
#define PETREL_SMTP_HAPPY_H

#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#define HAPPY_DELAY_MS 250   /* RFC 8305 §5 "Connection Attempt Delay" (recommended) */
#define HAPPY_MAX 16         /* addresses raced at most */

struct happy;

/* The race is over: fd >= 0 is the connected socket of addrs[index] (taken by the
 * callee), or fd < 0 and err the libuv error of the last attempt (every one
 * failed). Runs once, on the loop, never from inside happy_start. */
typedef void (*happy_cb)(void *arg, int fd, int index, int err);

/* Races connects to addrs[0..n) (copied; ports set) with delay_ms between starts.
 * NULL when out of memory (nothing started, no callback). */
struct happy *happy_start(uv_loop_t *loop, const struct sockaddr_storage *addrs, int n,
                          uint64_t delay_ms, const struct sockaddr_storage *source,
                          happy_cb cb, void *arg);
/* Abandons the race: no callback follows; every socket is closed. The struct frees
 * itself once libuv has closed its handles. NULL is a no-op. */
void happy_cancel(struct happy *h);

#endif
