/* Fuzz target for util/idna: any bytes give PT_OK with a NUL-terminated, all-ASCII
 * name within the output bound, or an error with a reason; never a read past the
 * input. An ASCII input comes back unchanged. SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/idna.h"
#include "util/result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;
    char out[256], err[160] = "";
    int rc = idna_to_ascii(s, out, sizeof out, err, sizeof err);
    if (rc == PT_OK) {
        if (strnlen(out, sizeof out) == sizeof out || !idna_is_ascii(out))
            abort();
        if (idna_is_ascii(s) && strcmp(s, out) != 0)
            abort();
    } else if ((rc != PT_INVALID && rc != PT_TOOLONG) || !err[0]) {
        abort();
    }
    free(s);
    return 0;
}
