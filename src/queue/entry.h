/* The queue entry: one message's envelope for one destination domain, with
 * per-recipient state and retry bookkeeping. Compact in RAM (content stays on
 * disk); serialized into the spool with a versioned binary encoding.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_ENTRY_H
#define PETREL_QUEUE_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define ENTRY_ID_LEN 16        /* hex characters */

enum rcpt_state { RCPT_PENDING = 0, RCPT_DELIVERED = 1, RCPT_BOUNCED = 2 };
enum entry_protocol { PROTO_SMTP = 0, PROTO_HTTP = 1 };
enum entry_priority { PRIO_HIGH = 0, PRIO_NORMAL = 1, PRIO_BULK = 2 };
enum { ENTRY_F_DSN = 1u << 0 };  /* a bounce we generated: never bounce it again */

struct entry_rcpt {
    char *addr;                /* points into the entry's string block */
    uint8_t state;
};

struct entry {
    char id[ENTRY_ID_LEN + 1];
    char *domain;              /* destination domain (queue name), lowercased */
    char *sender;              /* "" for the null sender */
    char *route;               /* route override set by policy, NULL = by domain */
    char *last_response;       /* last deferral reply, NULL if none (malloc'ed separately) */
    struct entry_rcpt *rcpts;
    uint32_t nrcpt;
    uint32_t attempts;
    uint16_t ndomains;         /* how many entries the message was split into */
    uint8_t protocol, priority, flags;
    double received_at;        /* wall clock */
    double next_attempt;       /* wall clock */
    uint64_t size;             /* content bytes */
    /* in-memory only (not serialized): */
    struct entry *next;        /* scheduler list link */
    uint32_t heap_idx;
};

/* Builds an entry; strings are copied into one allocation. rcpts[] addresses are
 * copied; states start PENDING. Returns NULL on allocation failure. */
struct entry *entry_new(const char *id, const char *domain, const char *sender,
                        const char *const *rcpts, uint32_t nrcpt);
void entry_free(struct entry *e);                 /* NULL ok */
void entry_set_last_response(struct entry *e, const char *text); /* copies */
uint32_t entry_pending(const struct entry *e);    /* recipients still PENDING */

/* Fresh message id: 16 lowercase hex digits, unique per process and over time
 * (milliseconds since epoch + per-process counter + random bits). Thread-safe. */
void entry_new_id(char out[ENTRY_ID_LEN + 1]);

/* Serialization. encode appends to out. decode allocates a new entry; it never
 * trusts lengths (fuzzed): PT_INVALID on any inconsistency. */
int entry_encode(const struct entry *e, struct buf *out);
int entry_decode(const void *data, size_t len, struct entry **out);

#endif
