/* Replacing a small file atomically and durably: the new content goes to
 * PATH.tmp, is fsynced, renamed over PATH, and the directory is fsynced, so a
 * crash leaves either the old file or the new one, never a torn one. Blocking:
 * call it from a worker pool or a thread of its own, never from an event loop.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_ATOMICFILE_H
#define PETREL_UTIL_ATOMICFILE_H

#include <stddef.h>

/* Writes the n parts (concatenated) to path. PT_OK, or PT_ERROR with errno set
 * and the temporary file removed. */
struct file_part {
    const void *data;
    size_t len;
};
int file_write_atomic(const char *path, const struct file_part *parts, int n);

#endif
