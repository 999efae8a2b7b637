/* MIME multipart framing; see mime.h.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include "util/mime.h"

void mime_multipart_begin(struct bufw *w, const char *subtype, const char *params,
                          const char *boundary, const char *preamble)
{
    if (params)
        bufw_printf(w, "Content-Type: multipart/%s; %s;\r\n\tboundary=\"%s\"\r\n", subtype, params,
                    boundary);
    else
        bufw_printf(w, "Content-Type: multipart/%s; boundary=\"%s\"\r\n", subtype, boundary);
    if (preamble)
        bufw_printf(w, "\r\n%s\r\n", preamble);
    bufw_printf(w, "\r\n--%s\r\n", boundary);
}

void mime_multipart_next(struct bufw *w, const char *boundary)
{
    bufw_printf(w, "--%s\r\n", boundary);
}

void mime_multipart_end(struct bufw *w, const char *boundary)
{
    bufw_printf(w, "--%s--\r\n", boundary);
}

bool mime_boundary_clashes(const char *boundary, const struct buf *texts, size_t n)
{
    char delim[MIME_BOUNDARY_MAX + 3];
    int dl = snprintf(delim, sizeof delim, "--%s", boundary);
    if (dl < 0 || (size_t)dl >= sizeof delim)
        return true;             /* too long to be a boundary at all */
    for (size_t i = 0; i < n; i++)
        if (texts[i].data && memmem(texts[i].data, texts[i].len, delim, (size_t)dl))
            return true;
    return false;
}
