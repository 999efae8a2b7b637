/* The queue entry: one message's envelope for one destination domain, with
 * per-recipient state and retry bookkeeping. Compact in RAM (content stays on
 * disk); serialized into the spool with a versioned binary encoding.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_ENTRY_H
#define PETREL_QUEUE_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define ENTRY_ID_LEN 16        /* hex characters */

struct route;

enum rcpt_state { RCPT_PENDING = 0, RCPT_DELIVERED = 1, RCPT_BOUNCED = 2 };
enum entry_protocol { PROTO_SMTP = 0, PROTO_HTTP = 1 };
enum entry_priority { PRIO_HIGH = 0, PRIO_NORMAL = 1, PRIO_BULK = 2 };
enum {
    ENTRY_F_DSN = 1u << 0,        /* a bounce we generated: never bounce it again */
    ENTRY_F_REQUIRETLS = 1u << 1, /* MAIL REQUIRETLS (RFC 8689): verified TLS or bounce 5.7.30 */
    ENTRY_F_RET_FULL = 1u << 2,   /* MAIL RET=FULL (RFC 3461 4.3): failure DSNs carry the message */
    ENTRY_F_RET_HDRS = 1u << 3,   /* MAIL RET=HDRS: failure DSNs carry its headers only */
    ENTRY_F_TLS_OPTIONAL = 1u << 4, /* "TLS-Required: No" header, no REQUIRETLS (RFC 8689 5) */
    ENTRY_F_DEAD = 1u << 5,       /* expired and kept as a dead letter (dead_letter_after):
                                     never delivered; next_attempt = when it expired */
    ENTRY_F_BINARYMIME = 1u << 6, /* MAIL BODY=BINARYMIME (RFC 3030): content stored as
                                     received, sent only with BDAT to a hop offering
                                     BINARYMIME (older spools never set it) */
    ENTRY_F_TENANT_Q = 1u << 7,   /* its tenant has a max_message_rate (DESIGN §9): its
                                     queue is the tenant's own (queue/sched_int.h) */
};
/* NOTIFY of a recipient (RFC 3461 4.1); 0 = not given, which means FAILURE and
 * DELAY (the RFC's default, with the delay warning at our discretion). */
enum {
    ENTRY_N_SUCCESS = 1u << 0, ENTRY_N_FAILURE = 1u << 1, ENTRY_N_DELAY = 1u << 2,
    ENTRY_N_NEVER = 1u << 3,
};
#define ENTRY_N_MASK 0x0fu
/* Per-recipient DSN bookkeeping (entry_rcpt.dflags). */
enum {
    ENTRY_R_ORCPT = 1u << 0,      /* in-memory only: an ORCPT follows addr in the string block */
    ENTRY_R_DELAY_SENT = 1u << 1, /* the delay DSN went out: never twice */
};
#define ENTRY_ENVID_MAX 100      /* ENVID (RFC 3461 4.4), decoded bytes */
#define ENTRY_ORCPT_MAX 500      /* ORCPT (RFC 3461 4.2), "type;address" decoded bytes */

struct entry_rcpt {
    char *addr;                /* points into the entry's string block */
    uint8_t state;
    uint8_t notify;            /* ENTRY_N_* bits, 0 = not given */
    uint8_t dflags;            /* ENTRY_R_* bits */
};

/* Field order keeps the struct at 152 bytes on LP64 (test_entry checks it): the
 * small fields share the id's padding, due shares heap_idx's 8 bytes. */
struct entry {
    char id[ENTRY_ID_LEN + 1];
    uint8_t protocol, priority, flags;
    bool route_static;         /* in-memory only: route is borrowed, not freed with the entry */
    uint16_t ndomains;         /* how many entries the message was split into */
    char *domain;              /* destination domain (queue name), lowercased */
    char *sender;              /* "" for the null sender */
    char *envid;               /* ENVID (RFC 3461 4.4), xtext-decoded; NULL if none; in the
                                  string block */
    char *route;               /* route name: the policy's route_to target, then the
                                  route resolved at ingest (delivery/route.h); NULL =
                                  by domain (spooled by an older version). malloc'ed
                                  separately (entry_set_route), or borrowed
                                  (entry_set_route_static) */
    char *last_response;       /* last deferral reply, NULL if none (malloc'ed separately:
                                  set with entry_set_last_response) */
    char *hdr_edits;           /* header edits of hooks (util/headers.h), applied when sent;
                                  NULL if none (malloc'ed separately: entry_set_hdr_edits) */
    char *ident;               /* tenant and egress source: "tenant\0source\0" (either may
                                  be empty), NULL = neither; malloc'ed separately
                                  (entry_set_ident; read with entry_tenant/entry_source) */
    char *dkim_sign;           /* sign_dkim requests of hooks, lines "domain\tselector\tkey_file\n",
                                  signed at delivery in that order; NULL if none
                                  (malloc'ed separately: entry_set_dkim_sign) */
    struct entry_rcpt *rcpts;
    uint32_t nrcpt;
    uint32_t attempts;
    uint32_t heap_idx;         /* in-memory only (not serialized): scheduler heap slot */
    uint32_t due;              /* in-memory only: next_attempt on the monotonic clock
                                  (util/timeutil.h time_tick), set by the scheduler
                                  when next_attempt is set; what the timers use */
    double received_at;        /* wall clock */
    double next_attempt;       /* wall clock: stored, shown; see due */
    uint64_t size;             /* content bytes */
    /* in-memory only (not serialized): */
    struct entry *next;        /* scheduler list link */
    const struct route *via;   /* the route named by `route` (delivery/route.h), once
                                  resolved; interned (valid across reloads) */
};

/* Builds an entry; the struct, the rcpts array and the strings are one allocation
 * (sizeof(struct entry) + strings + 16 bytes per recipient on LP64). rcpts[]
 * addresses are copied; states start PENDING. id NULL = a fresh entry_new_id()
 * (a longer id is cut to ENTRY_ID_LEN);
 * the domain copy is lowercased; sender NULL = "". Defaults: ndomains 1, PROTO_SMTP,
 * PRIO_NORMAL, everything else 0/NULL. Returns NULL on allocation failure. */
struct entry *entry_new(const char *id, const char *domain, const char *sender,
                        const char *const *rcpts, uint32_t nrcpt);
/* DSN parameters of a new entry (RFC 3461), all optional; borrowed for the call.
 * Values are xtext-decoded, printable ASCII, bounded (ENTRY_ENVID_MAX,
 * ENTRY_ORCPT_MAX): the parser checked them. */
struct entry_dsn {
    const char *envid;          /* NULL = none */
    const uint8_t *notify;      /* [nrcpt] ENTRY_N_* bits; NULL = none given */
    const char *const *orcpt;   /* [nrcpt] "addr-type;address"; NULL, or NULL items = none */
};
/* entry_new with DSN parameters (dsn NULL = none); they share the one allocation. */
struct entry *entry_new_dsn(const char *id, const char *domain, const char *sender,
                            const char *const *rcpts, uint32_t nrcpt,
                            const struct entry_dsn *dsn);
/* The ORCPT of r ("addr-type;address", decoded), or NULL when none was given. */
const char *entry_rcpt_orcpt(const struct entry_rcpt *r);
/* The RET of e: ENTRY_F_RET_FULL, ENTRY_F_RET_HDRS or 0 (not given). */
unsigned entry_ret(const struct entry *e);
void entry_free(struct entry *e);                 /* NULL ok */
void entry_set_last_response(struct entry *e, const char *text); /* copies; NULL clears */
/* Sets (copies) or clears (NULL) the route override. PT_OK or PT_NOMEM (then NULL). */
int entry_set_route(struct entry *e, const char *route);
/* Sets the route name to name, borrowed: it must outlive the entry (a route
 * table's name). No allocation. */
void entry_set_route_static(struct entry *e, const char *name);
/* Sets (copies) or clears (NULL) the header edits. PT_OK, PT_TOOLONG (over 64 KiB) or
 * PT_NOMEM (then NULL). */
int entry_set_hdr_edits(struct entry *e, const char *edits);
/* Sets (copies) or clears (NULL) the sign_dkim requests. PT_OK, PT_TOOLONG (over
 * 64 KiB) or PT_NOMEM (then NULL). */
int entry_set_dkim_sign(struct entry *e, const char *requests);
/* Sets (copies) the tenant and the egress source name; NULL or "" = none (both
 * none clears). Each at most 255 bytes. PT_OK, PT_TOOLONG or PT_NOMEM (then cleared). */
int entry_set_ident(struct entry *e, const char *tenant, const char *source);
/* The tenant / egress source of e, NULL when none. */
const char *entry_tenant(const struct entry *e);
const char *entry_source(const struct entry *e);
uint32_t entry_pending(const struct entry *e);    /* recipients still PENDING */

/* Fresh message id: 16 lowercase hex digits, unique per process and over time
 * (44 bits of milliseconds since the epoch + a 20-bit counter that starts at a
 * random value in each process). Ids of one process increase strictly. Thread-safe,
 * lock-free. */
void entry_new_id(char out[ENTRY_ID_LEN + 1]);

/* Serialization (versioned, little-endian; format in entry.c). encode appends to
 * out; it refuses (PT_INVALID / PT_TOOLONG, out unchanged) an entry decode would
 * refuse: strings over 64 KiB, more than 100000 recipients, unknown enum values,
 * non-finite times. decode allocates a new entry; it never trusts lengths
 * (fuzzed): PT_INVALID on any inconsistency or trailing bytes, PT_NOMEM. */
int entry_encode(const struct entry *e, struct buf *out);
int entry_decode(const void *data, size_t len, struct entry **out);

#endif
