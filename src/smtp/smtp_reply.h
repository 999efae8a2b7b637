/* Pure, resumable parser of SMTP replies (client side), multi-line aware, and the
 * EHLO capability reader. Bounded: a reply over SMTP_REPLY_MAX is PT_TOOLONG.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_REPLY_H
#define PETREL_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_MAX 4096    /* all lines of one reply */
#define SMTP_REPLY_LINES 64

struct smtp_reply {
    int code;                  /* 200..599 */
    char enhanced[16];         /* "5.1.1" when the first line's text starts with an RFC 3463
                                  code of the reply's class, else ""; it is stripped from
                                  every line of text that starts with it */
    int nlines;
    size_t len;
    char text[SMTP_REPLY_MAX]; /* lines' text after "NNN-"/"NNN " (and after the
                                  enhanced code on the first line), joined by '\n', NUL-terminated */
};

struct smtp_reply_parser {
    int state;                 /* private */
    size_t line_len;
    char line[1024];
    struct smtp_reply cur;
};

void smtp_reply_init(struct smtp_reply_parser *p);
/* Consumes in[0..len).
 *  PT_OK:      one complete reply in *out; *consumed = bytes used (call again for
 *              pipelined replies that follow).
 *  PT_AGAIN:   need more (*consumed = len).
 *  PT_INVALID: not an SMTP reply (bad code, mixed codes across lines, control bytes);
 *  PT_TOOLONG: a line over 1000 octets with its CRLF (998 without), or a reply
 *              over SMTP_REPLY_MAX / SMTP_REPLY_LINES.
 *  Bare LF line endings are accepted; CR elsewhere and control bytes other than
 *  TAB are PT_INVALID. On an error *consumed is the offset just past the bad byte.
 *  After an error the parser must be re-initialized (the caller drops the connection). */
int smtp_reply_feed(struct smtp_reply_parser *p, const char *in, size_t len,
                    size_t *consumed, struct smtp_reply *out);

enum {
    SMTP_CAP_PIPELINING = 1u << 0, SMTP_CAP_SIZE = 1u << 1, SMTP_CAP_8BITMIME = 1u << 2,
    SMTP_CAP_STARTTLS = 1u << 3, SMTP_CAP_AUTH = 1u << 4, SMTP_CAP_SMTPUTF8 = 1u << 5,
    SMTP_CAP_ENHANCEDSTATUSCODES = 1u << 6, SMTP_CAP_CHUNKING = 1u << 7,
    SMTP_CAP_DSN = 1u << 8, SMTP_CAP_REQUIRETLS = 1u << 9, SMTP_CAP_BINARYMIME = 1u << 10,
};
struct smtp_caps {
    unsigned flags;
    uint64_t size;             /* SIZE limit, 0 = none given */
    char auth[128];            /* mechanisms, space-separated, uppercased */
};
/* Reads the capabilities from a 250 EHLO reply (lines after the first; keywords
 * case-insensitive, unknown ones ignored). *caps is cleared first, so any other
 * code yields no capabilities. AUTH and the old "AUTH=" form both fill auth. */
void smtp_caps_parse(const struct smtp_reply *r, struct smtp_caps *caps);

#endif
