/* libFuzzer target for TLS-RPT input: the first byte picks the `_smtp._tls` TXT
 * record parser (RFC 8460 §3) or the saved counters (tls-rpt/state.json) loader.
 * Random bytes must never crash or read out of bounds; a parsed record keeps the
 * header's contract (only mailto:/https: URIs, NUL-terminated, no controls or
 * spaces, at most TLSRPT_MAX_RUA); a loaded state dumps again and reloads equal.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "delivery/tlsrpt.h"
#include "delivery/tlsrpt_agg.h"
#include "util/result.h"

static void check_rua(const struct tlsrpt_rua *r)
{
    if (r->n < 1 || r->n > TLSRPT_MAX_RUA)
        abort();
    for (int i = 0; i < r->n; i++) {
        const char *u = r->uri[i];
        size_t l = strnlen(u, TLSRPT_URI_MAX);
        if (l == TLSRPT_URI_MAX)
            abort();
        if (strncasecmp(u, "mailto:", 7) != 0 && strncasecmp(u, "https://", 8) != 0)
            abort();
        for (size_t k = 0; k < l; k++)
            if ((unsigned char)u[k] <= 0x20 || (unsigned char)u[k] >= 0x7f || u[k] == ',' ||
                u[k] == ';')
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        struct tlsrpt_rua rua;
        if (tlsrpt_parse_txt(s, n, &rua) == PT_OK)
            check_rua(&rua);
        return 0;
    }
    struct tlsrpt_agg *a = tlsrpt_agg_new(), *b = tlsrpt_agg_new();
    int64_t start = 0, start2 = 0;
    if (a && b && tlsrpt_agg_load(a, s, n, &start) == PT_OK) {
        tlsrpt_agg_success(a, "fuzz.test", "sts");
        tlsrpt_agg_failure(a, "fuzz.test", "sts", "validation-failure", "mx.fuzz.test",
                           "192.0.2.1", NULL, NULL);
        uint64_t gen;
        char *t1 = tlsrpt_agg_dump(a, start, &gen);
        if (t1) {
            if (tlsrpt_agg_load(b, t1, strlen(t1), &start2) != PT_OK || start2 != start)
                abort();
            char *t2 = tlsrpt_agg_dump(b, start2, &gen);
            if (t2 && strcmp(t1, t2) != 0)
                abort();
            free(t2);
        }
        free(t1);
        free(tlsrpt_agg_take(a, start));
    }
    tlsrpt_agg_free(a);
    tlsrpt_agg_free(b);
    return 0;
}
