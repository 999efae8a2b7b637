/* Unit tests for the service manager notifications: each call sends the systemd
 * datagram to $NOTIFY_SOCKET (a socket of this test), and nothing breaks without it.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "obs/notify.h"

static int listen_fd = -1;
static char sock_path[108];

static int setup(void **st)
{
    snprintf(sock_path, sizeof sock_path, "/tmp/petrel-notify-%d.sock", (int)getpid());
    unlink(sock_path);
    listen_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock_path);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    struct timeval tv = { .tv_sec = 2 };
    setsockopt(listen_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return 0;
}

static int teardown(void **st)
{
    close(listen_fd);
    unlink(sock_path);
    return 0;
}

static void expect_msg(const char *want)
{
    char buf[512];
    ssize_t n = recv(listen_fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = 0;
    if (!strstr(buf, want))
        fail_msg("got \"%s\", want \"%s\"", buf, want);
}

static void test_messages(void **st)
{
    setenv("NOTIFY_SOCKET", sock_path, 1);
    notify_ready();
    expect_msg("READY=1");
    notify_reloading();
    expect_msg("RELOADING=1");
    notify_reloaded(1);
    expect_msg("READY=1\nSTATUS=reload ok");
    notify_watchdog();
    expect_msg("WATCHDOG=1");
    notify_stopping();
    expect_msg("STOPPING=1");
    setenv("WATCHDOG_USEC", "4000000", 1);
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_true(notify_watchdog_interval() == 4.0);
}

static void test_no_socket(void **st)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    notify_ready();
    notify_stopping();
    assert_true(notify_watchdog_interval() == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_no_socket),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
