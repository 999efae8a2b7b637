/* Fuzz target for the header-check engine: bytes before the first NUL are a regex
 * (tried with each action), the rest is a message. Compiling must fail cleanly or
 * succeed; applying must stay in bounds, keep the body byte for byte, and leave
 * the output untouched on REJECT/DISCARD.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/header_checks.h"
#include "util/headers.h"
#include "util/result.h"

static const char *const actions[] = {
    "IGNORE", "DUNNO", "WARN w", "REJECT r", "DISCARD", "PREPEND X-P: 1", "REPLACE X-R: 2",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nul = memchr(data, 0, size);
    if (!nul || (size_t)(nul - (const char *)data) > 256)
        return 0;
    const char *pattern = (const char *)data;
    const char *msg = nul + 1;
    size_t len = size - (size_t)(nul - pattern) - 1;
    /* where the body starts, as the engine sees it */
    size_t body = 0;
    struct hdr_field f;
    while (hdr_next(msg, len, &body, &f))
        ;
    for (size_t a = 0; a < sizeof actions / sizeof actions[0]; a++) {
        struct header_checks_rule r[] = { { pattern, actions[a] }, { "^Subject:", "IGNORE" } };
        struct header_checks *hc;
        size_t bad;
        char err[256];
        int rc = header_checks_new(r, 2, &hc, &bad, err, sizeof err);
        if (rc != PT_OK) {
            if (hc || bad != 0 || !err[0])
                abort();
            return 0;
        }
        struct buf out;
        buf_init(&out, 0);
        buf_appends(&out, "pre");
        struct header_checks_result res;
        if (header_checks_apply(hc, msg, len, &out, &res) != PT_OK)
            abort();
        if (res.verdict != HEADER_CHECKS_ACCEPT) {
            if (out.len != 3 || memcmp(out.data, "pre", 3) || !res.text[0])
                abort();
        } else if (out.len < 3 + (len - body) ||
                   memcmp(out.data + out.len - (len - body), msg + body, len - body)) {
            abort();
        }
        buf_free(&out);
        header_checks_free(hc);
    }
    return 0;
}
