/* Fuzz target for the redis:// URL parser: any bytes give PT_OK or PT_INVALID with
 * a reason, never a read past the input; an accepted URL has a host, a port and
 * NUL-terminated credentials within their bounds, and its log text does not
 * depend on the password. SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/redis.h"
#include "util/result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;
    struct redis_url u;
    char err[200] = "";
    int rc = redis_url_parse(s, &u, err, sizeof err);
    if (rc != PT_OK && rc != PT_INVALID)
        abort();
    if (rc == PT_INVALID && !err[0])
        abort();
    if (rc == PT_OK) {
        if (!u.host[0] || u.port == 0 || u.db < 0 || u.db > 1000000)
            abort();
        if (strnlen(u.user, sizeof u.user) == sizeof u.user ||
            strnlen(u.password, sizeof u.password) == sizeof u.password ||
            strnlen(u.host, sizeof u.host) == sizeof u.host)
            abort();
        /* the log text does not depend on the password */
        char text[1200], text2[1200];
        struct redis_url v = u;
        if (v.password[0])
            strcpy(v.password, "x");
        redis_url_text(&u, text, sizeof text);
        redis_url_text(&v, text2, sizeof text2);
        if (strcmp(text, text2) != 0)
            abort();
    }
    free(s);
    return 0;
}
