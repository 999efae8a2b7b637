/* Unit tests of the acceptance rules both doors share (policy/accept.c).
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "policy/accept.h"
#include "util/result.h"

static void test_recipient_rules(void **state)
{
    char path[] = "/tmp/petrel_test_accept_XXXXXX.lua", err[512];
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    const char *text =
        "petrel.start_smtp_listener { listen = '127.0.0.1:2525' }\n"
        "petrel.configure_transport {\n"
        "  ['blocked.example'] = 'error:550 5.1.1 local delivery disabled',\n"
        "  ['.sub.example'] = 'error:451 4.3.2 try later',\n"
        "  ['ok.example'] = 'discard',\n"
        "}\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct config *cfg = config_load(path, err, sizeof err);
    unlink(path);
    if (!cfg)
        fail_msg("%s", err);
    const char *reply = NULL;
    int code = 0;
    assert_int_equal(accept_recipient(cfg, "a@dest.test", &reply, &code), PT_OK);
    assert_int_equal(accept_recipient(cfg, "a@ok.example", &reply, &code), PT_OK);
    assert_int_equal(accept_recipient(cfg, "a@BLOCKED.example", &reply, &code), PT_INVALID);
    assert_int_equal(code, 550);
    assert_string_equal(reply, "550 5.1.1 local delivery disabled");
    assert_int_equal(accept_recipient(cfg, "a@x.sub.example", &reply, &code), PT_INVALID);
    assert_int_equal(code, 451);
    assert_int_equal(accept_recipient(cfg, "postmaster", &reply, &code), PT_NOTFOUND);
    assert_int_equal(code, 550);
    assert_non_null(strstr(reply, "must include a domain"));
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recipient_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
