/* HAProxy PROXY protocol v1 (text) and v2 (binary) header parser: pure, bounded,
 * resumable over an input buffer that grows. Never touches sockets and never reads
 * past the bytes it is given.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_PROXY_H
#define PETREL_SMTP_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#define PROXY_V1_MAX 107             /* the spec's bound, "PROXY ... \r\n" included */
#define PROXY_V2_MAX_PAYLOAD 4096    /* addresses + TLVs we accept (spec allows 65535) */

struct proxy_header {
    int version;                     /* 1 or 2 */
    bool local;                      /* v2 LOCAL, v1 UNKNOWN, v2 UNSPEC: keep the
                                      * connection's own addresses (health checks) */
    struct sockaddr_storage src;     /* the original client (when !local) */
    struct sockaddr_storage dst;     /* the address it connected to (when !local) */
    size_t len;                      /* bytes the header takes at the start of input */
};

/* Parses the header at the start of p[0..n). p is the whole input received so far
 * (call again with the grown buffer after PT_AGAIN). Returns PT_OK with *out filled
 * (consume out->len bytes), PT_AGAIN when every byte so far is a valid prefix of a
 * header, PT_INVALID when it cannot be one (not PROXY, bad syntax, bad address,
 * unsupported command or protocol), PT_TOOLONG when it exceeds the bounds above.
 * p is borrowed for the call. */
int proxy_parse(const void *p, size_t n, struct proxy_header *out);

/* A short reason for the last non-OK result class, for log lines. */
const char *proxy_strerror(int rc);

#endif
