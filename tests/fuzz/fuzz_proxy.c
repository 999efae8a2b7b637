/* Fuzz target for the PROXY protocol parser: any bytes give a bounded result, and
 * the parse is resumable (every strict prefix of an accepted header is PT_AGAIN,
 * and a longer buffer never changes a decided result). Never trusts the input.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/proxy.h"
#include "util/result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_header h, h2;
    int rc = proxy_parse(data, size, &h);
    if (rc != PT_OK && rc != PT_AGAIN && rc != PT_INVALID && rc != PT_TOOLONG)
        abort();
    if (rc == PT_OK) {
        if (h.len == 0 || h.len > size || h.len > 16 + PROXY_V2_MAX_PAYLOAD)
            abort();
        if (h.version == 1 && h.len > PROXY_V1_MAX)
            abort();
        if (!h.local && h.src.ss_family != 2 && h.src.ss_family != 10)
            abort();
        for (size_t k = 0; k < h.len; k++)  /* resumable: no earlier decision */
            if (proxy_parse(data, k, &h2) != PT_AGAIN)
                abort();
        if (proxy_parse(data, h.len, &h2) != PT_OK || h2.len != h.len)
            abort();
    } else if (rc != PT_AGAIN && size > 0) {
        /* a decided failure stays decided as more bytes arrive */
        uint8_t *more = malloc(size + 1);
        if (!more)
            return 0;
        memcpy(more, data, size);
        more[size] = '\n';
        int rc2 = proxy_parse(more, size + 1, &h2);
        free(more);
        if (rc2 == PT_OK || rc2 == PT_AGAIN)
            abort();
    }
    return 0;
}
