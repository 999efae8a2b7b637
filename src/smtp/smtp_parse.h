/* Pure, resumable SMTP command parsing (server side): splitting the input stream
 * into command lines and parsing one line into a verb and its arguments. No I/O,
 * no allocation; everything is bounded (RFC 5321 §4.5.3.1).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_PARSE_H
#define PETREL_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_LINE_MAX 512      /* command line incl. CRLF (RFC 5321 4.5.3.1.4) */
#define SMTP_AUTH_LINE_MAX 12288 /* AUTH continuation lines may be longer */
#define SMTP_PATH_MAX 256      /* reverse/forward path (4.5.3.1.3) */
#define SMTP_DOMAIN_MAX 255
#define SMTP_ENVID_MAX 100     /* ENVID xtext (RFC 3461 4.4) */
#define SMTP_ORCPT_MAX 500     /* ORCPT value (RFC 3461 4.2) */

/* NOTIFY values (RFC 3461 4.1) as bits; the same values as queue/entry.h's
 * ENTRY_N_* (smtp_server.c checks). 0 = NOTIFY not given. */
enum {
    SMTP_NOTIFY_SUCCESS = 1u << 0, SMTP_NOTIFY_FAILURE = 1u << 1, SMTP_NOTIFY_DELAY = 1u << 2,
    SMTP_NOTIFY_NEVER = 1u << 3,
};
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

enum smtp_verb {
    SMTP_VERB_UNKNOWN = 0,
    SMTP_VERB_HELO, SMTP_VERB_EHLO, SMTP_VERB_MAIL, SMTP_VERB_RCPT, SMTP_VERB_DATA,
    SMTP_VERB_RSET, SMTP_VERB_NOOP, SMTP_VERB_QUIT, SMTP_VERB_VRFY, SMTP_VERB_EXPN,
    SMTP_VERB_HELP, SMTP_VERB_STARTTLS, SMTP_VERB_AUTH, SMTP_VERB_BDAT,
    SMTP_VERB__COUNT
};
const char *smtp_verb_name(enum smtp_verb v);

/* Line splitter state. Lines end at LF (CRLF or bare LF both accepted in the
 * command phase; the CR is stripped). A line longer than max is reported once as
 * PT_TOOLONG, when its LF arrives; until then its bytes are dropped (PT_AGAIN with
 * *consumed = len), so the caller never holds more than max bytes of one line and
 * replies exactly once per over-long line, in pipeline order. max 0 = SMTP_LINE_MAX;
 * max may be changed between calls (e.g. SMTP_AUTH_LINE_MAX during AUTH). */
struct smtp_lines {
    size_t max;        /* max line length including CRLF */
    bool discarding;   /* inside an over-long line */
};
void smtp_lines_init(struct smtp_lines *s, size_t max);
/* Looks for the next line in in[0..len).
 *  PT_OK:      *line_len = length without CR/LF, *consumed = bytes to drop incl. terminator;
 *              the line is in[0..*line_len) (may contain NULs: the parser rejects them).
 *  PT_AGAIN:   no complete line yet; *consumed = bytes that may be dropped (non-zero
 *              only while discarding); keep the rest and call again with more input.
 *  PT_TOOLONG: a line exceeded max; *consumed = bytes to drop. Reply 500 5.5.2 and go on. */
int smtp_lines_next(struct smtp_lines *s, const char *in, size_t len, size_t *line_len,
                    size_t *consumed);

struct smtp_cmd {
    enum smtp_verb verb;
    const char *arg;      /* borrowed from the line: text after the verb and one space */
    size_t arg_len;
    /* MAIL FROM / RCPT TO only: */
    char path[SMTP_PATH_MAX + 1]; /* address without <>, "" for the null reverse path */
    uint64_t size;        /* SIZE=n, 0 if absent */
    bool body_8bit;       /* BODY=8BITMIME */
    bool body_binary;     /* BODY=BINARYMIME (RFC 3030) */
    bool smtputf8;        /* SMTPUTF8 */
    bool path_utf8;       /* path has octets >= 0x80 (well-formed UTF-8): legal only in a
                             SMTPUTF8 transaction. MAIL without SMTPUTF8 is refused here
                             (553 5.6.7); for RCPT the caller checks its transaction. */
    /* DSN (RFC 3461) and REQUIRETLS (RFC 8689), xtext already decoded: */
    enum smtp_ret ret;    /* MAIL RET= */
    char envid[SMTP_ENVID_MAX + 1]; /* MAIL ENVID=, "" if absent */
    bool requiretls;      /* MAIL REQUIRETLS (the caller checks the session has TLS) */
    uint8_t notify;       /* RCPT NOTIFY= bits, 0 if absent */
    char orcpt[SMTP_ORCPT_MAX + 1]; /* RCPT ORCPT= as "addr-type;address", "" if absent */
    /* HELO/EHLO: domain in path[] */
    const char *error;    /* on PT_INVALID: the full reply to send, e.g. "501 5.5.4 ..." */
};

/* Parses one command line (without CRLF). Verbs are case-insensitive.
 *  MAIL: "FROM:<path> [params]" (a space after the colon is tolerated); params SIZE,
 *        BODY=7BIT|8BITMIME|BINARYMIME, SMTPUTF8, RET=FULL|HDRS, ENVID=xtext, REQUIRETLS (others
 *        -> 555 5.5.4). Null path "<>" allowed.
 *  RCPT: "TO:<path> [params]" ; "<postmaster>" allowed without domain; null path not.
 *        params NOTIFY=NEVER|SUCCESS,FAILURE,DELAY and ORCPT=addr-type;xtext.
 *  A bad value (xtext, NOTIFY list, RET), a repeated parameter or a value over its
 *  bound (ENVID 100, ORCPT 500 characters) is 501 5.5.4. Decoded xtext must be
 *  printable ASCII.
 *  Paths: local@domain with a dot-atom or quoted-string local part, domain a
 *  hostname or [address literal]; source routes "@a,@b:" are stripped; non-ASCII
 *  allowed only if the caller later checks SMTPUTF8 (cmd->smtputf8 tells).
 *  HELO/EHLO: the first word (any printable text up to 255 octets) into path.
 *  Trailing spaces are ignored. Returns PT_OK, or PT_INVALID with cmd->error set to
 *  the reply to send (a static string). A line with NUL or other control bytes
 *  (< 0x20, incl. TAB, or 0x7f) is PT_INVALID ("500 5.5.2 ..."). An unknown verb is
 *  PT_OK with verb SMTP_VERB_UNKNOWN. A path (with its <>) over SMTP_PATH_MAX is 501.
 *  MAIL also accepts AUTH=... (RFC 4954 5), ignoring its value. */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd);

/* Address helpers. domain_of returns a pointer into addr after the last '@'
 * (or NULL). smtp_domain_lower copies a lowercased domain into out (size >= 256). */
const char *smtp_addr_domain(const char *addr);
void smtp_domain_lower(const char *domain, char *out, size_t outlen);
/* true if s is a syntactically valid hostname (LDH labels) or address literal. */
bool smtp_domain_valid(const char *s, size_t len);
/* true if a[0..n) is a mailbox "local@domain" (no <>, no source route): a dot-atom
 * or quoted-string local part and a domain smtp_domain_valid() accepts. Octets >= 0x80
 * pass as atext/label characters (SMTPUTF8); callers wanting ASCII check that. */
bool smtp_mailbox_valid(const char *a, size_t n);

#endif
