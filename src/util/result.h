/* The one result vocabulary of petrel: 0 is success, negative values are errors,
 * PT_AGAIN means "need more input". Never mix with 1-means-success conventions.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_UTIL_RESULT_H
#define PETREL_UTIL_RESULT_H

enum pt_result {
    PT_OK = 0,
    PT_AGAIN = -1,    /* incomplete input: feed more bytes and call again */
    PT_INVALID = -2,  /* malformed input */
    PT_TOOLONG = -3,  /* a bounded buffer or limit was exceeded */
    PT_NOMEM = -4,    /* allocation failed */
    PT_ERROR = -5,    /* I/O or library error */
    PT_NOTFOUND = -6,
};

#endif
