/* Listening TCP sockets for the SMTP and HTTP listeners.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_NETSOCK_H
#define PETREL_UTIL_NETSOCK_H

#include <stddef.h>
#include <stdint.h>

enum {
    NETSOCK_NONBLOCK = 1 << 0,   /* O_NONBLOCK (for libuv) */
    NETSOCK_REUSEPORT = 1 << 1,  /* SO_REUSEPORT: one socket per worker, one port */
};

/* Binds and listens on host (an IPv4 or IPv6 literal) and port with SO_REUSEADDR;
 * an IPv6 socket also takes IPv4 ("[::]" = every address). Returns the fd, or -1
 * with "WHAT NAME: reason" or "cannot listen on NAME: reason" in err, where name is
 * the listen string as configured and what labels the listener kind. */
int netsock_listen(const char *host, uint16_t port, const char *name, const char *what,
                   int flags, int backlog, char *err, size_t errlen);

#endif
