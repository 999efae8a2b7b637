/* HTTP injection bodies to queueable messages: POST /v1/message (petrel's JSON, built
 * into a MIME message here) and POST /api/inject/v1 (KumoMTA's JSON, a template
 * expanded per recipient). Pure: no I/O, no globals; never emits a bare CR or LF, a
 * NUL, or an envelope address that smtp_mailbox_valid() refuses.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_HTTP_INJECT_H
#define PETREL_HTTP_INJECT_H

#include <stddef.h>

#define INJECT_ADDR_MAX 254              /* envelope address, octets (RFC 5321 4.5.3.1.3) */
#define INJECT_RCPT_MAX 1000             /* /v1/message: entries in to + cc + bcc */
#define INJECT_KUMO_RCPT_MAX 10000       /* /api/inject/v1: entries in recipients */
#define INJECT_CONTENT_MAX (64u << 20)   /* one message's content, octets */
#define INJECT_BATCH_MAX (256u << 20)    /* all contents of one request, octets */

/* One message to queue: envelope plus RFC 5322 content. Every member is owned by
 * the struct (malloc'd) and released by inject_msg_free(). */
struct inject_msg {
    char *sender;                 /* envelope sender, addr-spec without <> ("" = null sender) */
    char **rcpts;                 /* envelope recipients, addr-spec without <> */
    size_t nrcpt;
    char *content;                /* CRLF line ends only (no bare CR or LF), ends with CRLF */
    size_t content_len;
};
void inject_msg_free(struct inject_msg *m);   /* frees members; m itself not freed; NULL-safe */

/* POST /v1/message. On success fills *out with ONE message and returns PT_OK. On bad
 * input returns PT_INVALID with a one-line human error in err naming the field, e.g.
 * "to[1]: invalid address \"bob@\"" or "unknown field \"sbject\"" (nothing is allocated
 * in *out then). PT_NOMEM on allocation failure. id is petrel's 16-hex-digit queue id
 * (use it for the Message-ID <id@hostname> and MIME boundaries); now is Unix time for
 * the Date header. body, hostname and id are borrowed; hostname and id are trusted
 * (configuration and petrel's own id), the body is not. The content has no line over
 * 998 octets and no 8-bit octet: text and html go 7bit or quoted-printable,
 * attachments base64, non-ASCII header text RFC 2047 / RFC 2231 encoded. */
int inject_v1_message(const char *body, size_t len, const char *hostname, const char *id,
                      double now, struct inject_msg *out, char *err, size_t errlen);

/* POST /api/inject/v1 (KumoMTA's format). */
struct inject_failure { char *recipient; char *error; };
struct inject_batch {
    struct inject_msg *msgs; size_t nmsgs;            /* messages to queue */
    struct inject_failure *failed; size_t nfailed;    /* recipients refused here */
};
void inject_batch_free(struct inject_batch *b);     /* NULL-safe, frees members */
/* new_id(arg, out) writes a fresh 16-hex-digit id + NUL into out[17] (used for the
 * Message-ID of content that has none). PT_INVALID + err for a request that is bad as
 * a whole (not JSON, envelope_sender missing/invalid, content missing or not a string,
 * recipients missing/empty/not an array, a substitution value that is an object or
 * array, unknown top-level field). A recipient that is not an object, or whose email
 * is missing or invalid, lands in out->failed and the others are still queued (PT_OK
 * with nmsgs 0 when every recipient failed). Content with no "{{" gives one message
 * for all recipients, otherwise one per recipient. Lines over 998 octets are left as
 * they are. Nothing is allocated in *out unless PT_OK. */
int inject_kumo(const char *body, size_t len, const char *hostname, double now,
                void (*new_id)(void *arg, char out[17]), void *arg,
                struct inject_batch *out, char *err, size_t errlen);

#endif
