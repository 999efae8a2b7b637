/* Fuzz target for the header helpers: arbitrary bytes as a message (and, after the
 * first NUL, as edit text read back from a spool). Walking the fields must stay in
 * bounds and cover the header exactly; applying no edits must give the message
 * back unchanged; applying edits must keep the body byte for byte; edits recorded
 * by hdr_edit_* must round-trip through hdr_apply.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/headers.h"
#include "util/result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nul = memchr(data, 0, size);
    const char *msg = (const char *)data;
    size_t len = nul ? (size_t)(nul - msg) : size;
    const char *edits = nul ? nul + 1 : "";
    size_t elen = nul ? size - len - 1 : 0;

    /* walk: fields are contiguous from 0 and end where the body starts */
    size_t pos = 0, covered = 0;
    struct hdr_field f;
    struct buf v, out;
    buf_init(&v, 0);
    buf_init(&out, 0);
    while (hdr_next(msg, len, &pos, &f)) {
        if (f.name != msg + covered || f.raw_len == 0 || covered + f.raw_len != pos ||
            pos > len || f.value < f.name + f.name_len || f.value + f.value_len > msg + pos)
            abort();
        covered = pos;
        buf_reset(&v);
        if (hdr_unfold(f.value, f.value_len, &v) != PT_OK || v.len > f.value_len ||
            memchr(v.data, '\n', v.len))
            abort();
    }
    if (pos != covered)
        abort();
    size_t body = pos;

    /* no edits: identity */
    if (hdr_apply(msg, len, "", 0, &out) != PT_OK || out.len != len || memcmp(out.data, msg, len))
        abort();
    /* any edits: the body is kept at the end */
    buf_reset(&out);
    if (hdr_apply(msg, len, edits, elen, &out) != PT_OK || out.len < len - body ||
        memcmp(out.data + out.len - (len - body), msg + body, len - body))
        abort();

    /* an edit recorded from the input's first field is applied as recorded */
    pos = 0;
    if (hdr_next(msg, len, &pos, &f) && f.name_len < 64) {
        char name[64];
        memcpy(name, f.name, f.name_len);
        name[f.name_len] = 0;
        struct buf e;
        buf_init(&e, 0);
        if (hdr_edit_remove(&e, name) == PT_OK && hdr_edit_add(&e, name, "fuzz") == PT_OK) {
            buf_reset(&out);
            if (hdr_apply(msg, len, e.data, e.len, &out) != PT_OK ||
                out.len < f.name_len + 8 || memcmp(out.data, name, f.name_len) ||
                memcmp(out.data + f.name_len, ": fuzz\r\n", 8))
                abort();
        }
        buf_free(&e);
    }
    buf_free(&v);
    buf_free(&out);
    return 0;
}
