/* libFuzzer target for the 8-bit to 7-bit downgrade (util/mime.h,
 * mime_downgrade_7bit): any message must convert without crashing, reading out of
 * bounds or looping; a converted message has no octet >= 0x80 and no bare CR or
 * LF; for a single text/plain entity the quoted-printable body decodes back to the
 * input body byte for byte.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/mime.h"
#include "util/result.h"

static int hexv(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* RFC 2045 6.7 decoding of what qp_put writes (soft breaks, =XX, CRLF). */
static size_t qp_decode(const char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '=' && i + 2 < n + 0 && p[i + 1] == '\r' && p[i + 2] == '\n') {
            i += 2;
        } else if (p[i] == '=') {
            if (i + 2 >= n || hexv(p[i + 1]) < 0 || hexv(p[i + 2]) < 0)
                abort();
            out[o++] = (char)(hexv(p[i + 1]) * 16 + hexv(p[i + 2]));
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    return o;
}

static void check_7bit(const struct buf *b)
{
    for (size_t i = 0; i < b->len; i++) {
        unsigned char c = (unsigned char)b->data[i];
        if (c >= 0x80)
            abort();
        if (c == '\n' && (i == 0 || b->data[i - 1] != '\r'))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* mode 0: the input as a whole message (CRLF made canonical); mode 1: a
     * text/plain header block we write, the input as its body */
    if (size < 1)
        return 0;
    int mode = data[0] & 1;
    struct buf in, out;
    buf_init(&in, 0);
    buf_init(&out, 0);
    if (mode == 1)
        buf_appends(&in, "Content-Type: text/plain; charset=utf-8\r\n\r\n");
    size_t body_at = in.len;
    for (size_t i = 1; i < size; i++) {
        char c = (char)data[i];
        if (c == '\r' || c == '\n') {          /* spooled content has CRLF only */
            buf_append(&in, "\r\n", 2);
            if (c == '\r' && i + 1 < size && data[i + 1] == '\n')
                i++;
        } else {
            buf_append(&in, &c, 1);
        }
    }
    int rc = mime_downgrade_7bit(in.data ? in.data : "", in.len, &out);
    if (rc == PT_OK) {
        check_7bit(&out);
        if (mode == 1 && mime_has_8bit(in.data + body_at, in.len - body_at)) {
            const char *hdr_end = memmem(out.data, out.len, "\r\n\r\n", 4);
            if (!hdr_end)
                abort();
            const char *body = hdr_end + 4;
            size_t blen = out.len - (size_t)(body - out.data);
            char *dec = malloc(blen + 1);
            size_t dl = qp_decode(body, blen, dec);
            if (dl != in.len - body_at || memcmp(dec, in.data + body_at, dl) != 0)
                abort();
            free(dec);
        }
    } else if (rc != PT_INVALID && rc != PT_NOMEM) {
        abort();
    }
    buf_free(&in);
    buf_free(&out);
    return 0;
}
