/* Listening TCP sockets; see netsock.h.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/netsock.h"

int netsock_listen(const char *host, uint16_t port, const char *name, const char *what,
                   int flags, int backlog, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t slen;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        slen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        slen = sizeof *v6;
    } else {
        snprintf(err, errlen, "%s %s: '%s' is not an IP address", what, name, host);
        return -1;
    }
    int type = SOCK_STREAM | SOCK_CLOEXEC | (flags & NETSOCK_NONBLOCK ? SOCK_NONBLOCK : 0);
    int fd = socket(ss.ss_family, type, 0);
    if (fd < 0) {
        snprintf(err, errlen, "%s %s: socket: %s", what, name, strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (flags & NETSOCK_REUSEPORT)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, (struct sockaddr *)&ss, slen) != 0 || listen(fd, backlog) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}
