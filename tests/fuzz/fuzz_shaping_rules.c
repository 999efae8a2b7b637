/* Fuzz target for configure_shaping's pure parsers: rates ("N/s|min|h|d"), site
 * globs (validation and whole-name matching against host names, which must stay
 * linear and never read past either string) and the reply flattening of the
 * automation. Input: glob NUL host NUL rate NUL reply.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/shaping_rules.h"
#include "delivery/site.h"
#include "util/result.h"

#define FS_CHECK(cond) \
    do {               \
        if (!(cond))   \
            abort();   \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *buf = malloc(size + 4);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    memset(buf + size, 0, 4);
    const char *glob = buf;
    const char *host = glob + strlen(glob) + 1;
    if (host > buf + size)
        host = buf + size;
    const char *rate = host + strlen(host) + 1;
    if (rate > buf + size)
        rate = buf + size;
    const char *reply = rate + strlen(rate) + 1;
    if (reply > buf + size)
        reply = buf + size;

    char why[300];
    if (site_glob_valid(glob, why, sizeof why))
        FS_CHECK(strlen(glob) < SITE_NAME_MAX);
    bool m = site_glob_match(glob, host);
    if (!strchr(glob, '*') && !strchr(glob, '?') && m) {
        /* a literal glob matches only its own name (case and a final dot aside) */
        size_t g = strlen(glob), h = strlen(host);
        FS_CHECK(h == g || (h == g + 1 && host[g] == '.'));
    }
    FS_CHECK(site_glob_match("*", host));
    double r = -1;
    if (shaping_rate_parse(rate, &r) == PT_OK)
        FS_CHECK(r > 0 && isfinite(r));
    char out[64];
    shaping_reply_flatten(reply, out, sizeof out);
    FS_CHECK(strlen(out) < sizeof out && !strchr(out, '\r') && !strchr(out, '\n'));
    free(buf);
    return 0;
}
