/* Growable byte buffer. Owns its memory; never shrinks on its own. A buffer may
 * have a hard cap (buf->max, 0 = none): growth past it fails with PT_TOOLONG.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_BUF_H
#define PETREL_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data;  /* always NUL-terminated when data != NULL (not counted in len) */
    size_t len;
    size_t cap;
    size_t max;  /* 0 = unbounded */
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);                      /* frees data; buf reusable after init */
int buf_reserve(struct buf *b, size_t extra);      /* room for len+extra+1 bytes */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_appends(struct buf *b, const char *s);
int buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vappendf(struct buf *b, const char *fmt, va_list ap);
void buf_consume(struct buf *b, size_t n);         /* drop n bytes from the front */
static inline void buf_reset(struct buf *b) { b->len = 0; if (b->data) b->data[0] = 0; }
char *buf_steal(struct buf *b, size_t *len);       /* caller takes data; b is reset */

/* A writer that stops at the first failure and remembers it (rc), so that code
 * assembling text (MIME, DSNs) reads as straight-line appends. */
struct bufw {
    struct buf *b;
    int rc;      /* PT_OK until an append fails; then nothing more is written */
};
void bufw_put(struct bufw *w, const char *s, size_t n);
void bufw_puts(struct bufw *w, const char *s);
void bufw_printf(struct bufw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
