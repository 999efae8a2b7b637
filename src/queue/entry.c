/* Queue entries: one allocation per entry (struct, recipient array, strings), a
 * time-ordered unique id, and the versioned spool encoding. Decode never trusts
 * the input: every length is checked against what remains, before any copy.
 * SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "queue/entry.h"
#include "util/result.h"

/* Encoding v5, all integers little-endian, strings as u32 length + bytes (no NUL;
 * length 0xffffffff = NULL for the nullable ones):
 *   u8 version=5 | str id | str domain | str sender | nstr route | nstr last_response
 *   | nstr hdr_edits | nstr dkim_sign | nstr envid | nstr tenant | nstr egress_source
 *   | u8 protocol | u8 priority | u8 flags
 *   | u16 ndomains | u32 attempts | u64 size | f64 received_at | f64 next_attempt
 *   | u32 nrcpt | nrcpt x (u8 state, str addr, u8 notify, u8 dflags, nstr orcpt)
 * Nothing may follow the last recipient. Still read: v1 (no hdr_edits), v2 (no
 * dkim_sign), v3 (no envid, recipients only state + addr), v4 (no tenant, no
 * egress_source). dflags never carries
 * ENTRY_R_ORCPT (orcpt's presence says it); envid and orcpt are at most 500 bytes
 * without control bytes, notify has no bit beyond ENTRY_N_MASK. */
#define ENTRY_VERSION 5
#define ENTRY_IDENT_MAX 255u         /* tenant, egress source: bytes each */
#define ENTRY_DSN_STR_MAX 500u       /* envid, orcpt */
#define ENTRY_R_STORED ENTRY_R_DELAY_SENT /* dflags bits that are serialized */
#define ENTRY_MAX_RCPT 100000u       /* more than any message we accept */
#define ENTRY_MAX_STR 65536u         /* per string, bytes */
#define ENTRY_NULL_STR 0xffffffffu
#define ENTRY_RCPT_MIN_ENC 5u        /* state + empty string (v1-v3; v4: 11) */

/* Id: 44 bits of milliseconds since the epoch (good until year 2527), then a
 * 20-bit counter. */
#define ID_SEQ_BITS 20
#define ID_SEQ_MASK ((UINT64_C(1) << ID_SEQ_BITS) - 1)
#define ID_MS_MASK ((UINT64_C(1) << (64 - ID_SEQ_BITS)) - 1)

/* Memory layout: [struct entry][nrcpt x struct entry_rcpt][strings]. struct entry
 * is padded to its alignment, which covers entry_rcpt's. */
_Static_assert(_Alignof(struct entry) >= _Alignof(struct entry_rcpt),
               "recipient array must be aligned right after the entry");

static struct entry *entry_alloc(uint32_t nrcpt, size_t strbytes, char **strs)
{
    size_t head = sizeof(struct entry) + (size_t)nrcpt * sizeof(struct entry_rcpt);
    if (strbytes > SIZE_MAX - head)
        return NULL;
    struct entry *e = malloc(head + strbytes);
    if (!e)
        return NULL;
    memset(e, 0, head);
    e->rcpts = nrcpt ? (struct entry_rcpt *)(e + 1) : NULL;
    e->nrcpt = nrcpt;
    e->ndomains = 1;
    e->protocol = PROTO_SMTP;
    e->priority = PRIO_NORMAL;
    *strs = (char *)e + head;
    return e;
}

static char *put_str(char **cursor, const char *s, size_t n)
{
    char *d = *cursor;
    memcpy(d, s, n);
    d[n] = 0;
    *cursor = d + n + 1;
    return d;
}

struct entry *entry_new(const char *id, const char *domain, const char *sender,
                        const char *const *rcpts, uint32_t nrcpt)
{
    return entry_new_dsn(id, domain, sender, rcpts, nrcpt, NULL);
}

static const char *dsn_orcpt(const struct entry_dsn *dsn, uint32_t i)
{
    return dsn && dsn->orcpt ? dsn->orcpt[i] : NULL;
}

struct entry *entry_new_dsn(const char *id, const char *domain, const char *sender,
                            const char *const *rcpts, uint32_t nrcpt,
                            const struct entry_dsn *dsn)
{
    if (nrcpt && !rcpts)
        return NULL;
    if (!domain)
        domain = "";
    if (!sender)
        sender = "";
    const char *envid = dsn ? dsn->envid : NULL;
    size_t dlen = strlen(domain), slen = strlen(sender);
    size_t total = dlen + 1 + slen + 1 + (envid ? strlen(envid) + 1 : 0);
    for (uint32_t i = 0; i < nrcpt; i++) {
        const char *o = dsn_orcpt(dsn, i);
        total += (rcpts[i] ? strlen(rcpts[i]) : 0) + 1 + (o ? strlen(o) + 1 : 0);
    }
    char *s;
    struct entry *e = entry_alloc(nrcpt, total, &s);
    if (!e)
        return NULL;
    if (id)
        snprintf(e->id, sizeof e->id, "%s", id);
    else
        entry_new_id(e->id);
    e->domain = put_str(&s, domain, dlen);
    for (char *c = e->domain; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    e->sender = put_str(&s, sender, slen);
    if (envid)
        e->envid = put_str(&s, envid, strlen(envid));
    for (uint32_t i = 0; i < nrcpt; i++) {
        const char *a = rcpts[i] ? rcpts[i] : "";
        const char *o = dsn_orcpt(dsn, i);
        e->rcpts[i].addr = put_str(&s, a, strlen(a));
        e->rcpts[i].state = RCPT_PENDING;
        e->rcpts[i].notify = dsn && dsn->notify ? (uint8_t)(dsn->notify[i] & ENTRY_N_MASK) : 0;
        if (o) {
            put_str(&s, o, strlen(o));
            e->rcpts[i].dflags |= ENTRY_R_ORCPT;
        }
    }
    return e;
}

const char *entry_rcpt_orcpt(const struct entry_rcpt *r)
{
    if (!(r->dflags & ENTRY_R_ORCPT))
        return NULL;
    return r->addr + strlen(r->addr) + 1;
}

unsigned entry_ret(const struct entry *e)
{
    if (e->flags & ENTRY_F_RET_HDRS)
        return ENTRY_F_RET_HDRS;
    return e->flags & ENTRY_F_RET_FULL;
}

void entry_free(struct entry *e)
{
    if (!e)
        return;
    free(e->last_response);
    if (!e->route_static)
        free(e->route);
    free(e->hdr_edits);
    free(e->dkim_sign);
    free(e->ident);
    free(e);
}

/* Replaces *slot with a bounded copy of text (NULL clears). On allocation failure
 * the old value is dropped: a missing diagnostic is better than a stale one. */
static int set_owned(char **slot, const char *text)
{
    free(*slot);
    *slot = NULL;
    if (!text)
        return PT_OK;
    size_t n = strnlen(text, ENTRY_MAX_STR);
    char *c = malloc(n + 1);
    if (!c)
        return PT_NOMEM;
    memcpy(c, text, n);
    c[n] = 0;
    *slot = c;
    return PT_OK;
}

void entry_set_last_response(struct entry *e, const char *text)
{
    set_owned(&e->last_response, text);
}

int entry_set_route(struct entry *e, const char *route)
{
    if (e->route_static) {
        e->route = NULL;
        e->route_static = false;
    }
    return set_owned(&e->route, route);
}

void entry_set_route_static(struct entry *e, const char *name)
{
    if (!e->route_static)
        free(e->route);
    e->route = (char *)name;
    e->route_static = true;
}

int entry_set_hdr_edits(struct entry *e, const char *edits)
{
    if (edits && strlen(edits) > ENTRY_MAX_STR) {
        entry_set_hdr_edits(e, NULL);
        return PT_TOOLONG;
    }
    return set_owned(&e->hdr_edits, edits);
}

int entry_set_dkim_sign(struct entry *e, const char *requests)
{
    if (requests && strlen(requests) > ENTRY_MAX_STR) {
        entry_set_dkim_sign(e, NULL);
        return PT_TOOLONG;
    }
    return set_owned(&e->dkim_sign, requests);
}

int entry_set_ident(struct entry *e, const char *tenant, const char *source)
{
    size_t nt = tenant ? strlen(tenant) : 0, ns = source ? strlen(source) : 0;
    char *c = NULL;
    int rc = PT_OK;
    if (nt > ENTRY_IDENT_MAX || ns > ENTRY_IDENT_MAX)
        rc = PT_TOOLONG;
    else if ((nt || ns) && !(c = malloc(nt + ns + 2)))
        rc = PT_NOMEM;
    if (c) {   /* built before the old one goes: tenant may point into it */
        memcpy(c, nt ? tenant : "", nt);
        c[nt] = 0;
        memcpy(c + nt + 1, ns ? source : "", ns);
        c[nt + 1 + ns] = 0;
    }
    free(e->ident);
    e->ident = c;
    return rc;
}

const char *entry_tenant(const struct entry *e)
{
    return e->ident && e->ident[0] ? e->ident : NULL;
}

const char *entry_source(const struct entry *e)
{
    if (!e->ident)
        return NULL;
    const char *s = e->ident + strlen(e->ident) + 1;
    return *s ? s : NULL;
}

uint32_t entry_pending(const struct entry *e)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->nrcpt; i++)
        n += e->rcpts[i].state == RCPT_PENDING;
    return n;
}

/* ---- ids ---- */

/* Last id handed out, as a number: strictly increasing within the process, so
 * threads never collide however fast they ask. A new process starts its counter
 * at a random point, so a restart within the same millisecond (or after a clock
 * step back) collides only by a 1 in 2^20 chance per id. */
static _Atomic uint64_t entry_id_last;

static uint64_t id_random_seq(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (uint64_t)ts.tv_nsec * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)getpid();
    }
    return r & ID_SEQ_MASK;
}

void entry_new_id(char out[ENTRY_ID_LEN + 1])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) & ID_MS_MASK;
    uint64_t now = ms << ID_SEQ_BITS;
    uint64_t old = atomic_load(&entry_id_last), next;
    do {
        if (old == 0) {
            next = now | id_random_seq();
        } else {
            /* Count on; when the clock has moved past the last id's millisecond
             * take the new time but keep counting the low bits. */
            next = old + 1;
            if ((next >> ID_SEQ_BITS) < ms)
                next = now | (next & ID_SEQ_MASK);
        }
    } while (!atomic_compare_exchange_weak(&entry_id_last, &old, next));
    snprintf(out, ENTRY_ID_LEN + 1, "%016" PRIx64, next);
}

/* ---- encoding ---- */

static int enc_le(struct buf *b, uint64_t v, int nbytes)
{
    unsigned char t[8];
    for (int i = 0; i < nbytes; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    return buf_append(b, t, (size_t)nbytes);
}

static uint64_t f64_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static int enc_str(struct buf *b, const char *s)
{
    if (!s)
        return enc_le(b, ENTRY_NULL_STR, 4);
    size_t n = strlen(s);
    if (n > ENTRY_MAX_STR)
        return PT_TOOLONG;
    int rc = enc_le(b, n, 4);
    return rc ? rc : buf_append(b, s, n);
}

/* envid / orcpt: bounded, printable (they end up in DSN header fields). */
static bool dsn_str_ok(const char *s, size_t n)
{
    if (n > ENTRY_DSN_STR_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* Refuses what decode would refuse, so whatever we write we can read back. */
static int enc_check(const struct entry *e)
{
    size_t idlen = strnlen(e->id, sizeof e->id);
    if (idlen == 0 || idlen > ENTRY_ID_LEN || !e->domain || !e->sender)
        return PT_INVALID;
    if (e->nrcpt > ENTRY_MAX_RCPT || (e->nrcpt && !e->rcpts))
        return PT_INVALID;
    if (e->protocol > PROTO_HTTP || e->priority > PRIO_BULK)
        return PT_INVALID;
    if (!isfinite(e->received_at) || !isfinite(e->next_attempt))
        return PT_INVALID;
    if (e->envid && !dsn_str_ok(e->envid, strlen(e->envid)))
        return PT_INVALID;
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        const struct entry_rcpt *r = &e->rcpts[i];
        const char *o = r->addr ? entry_rcpt_orcpt(r) : NULL;
        if (r->state > RCPT_BOUNCED || !r->addr || (r->notify & ~ENTRY_N_MASK) ||
            (r->dflags & ~(ENTRY_R_STORED | ENTRY_R_ORCPT)) || (o && !dsn_str_ok(o, strlen(o))))
            return PT_INVALID;
    }
    return PT_OK;
}

int entry_encode(const struct entry *e, struct buf *out)
{
    int rc = enc_check(e);
    if (rc)
        return rc;
    size_t start = out->len;
    unsigned char v = ENTRY_VERSION;
    if ((rc = buf_append(out, &v, 1)) || (rc = enc_str(out, e->id)) ||
        (rc = enc_str(out, e->domain)) || (rc = enc_str(out, e->sender)) ||
        (rc = enc_str(out, e->route)) || (rc = enc_str(out, e->last_response)) ||
        (rc = enc_str(out, e->hdr_edits)) || (rc = enc_str(out, e->dkim_sign)) ||
        (rc = enc_str(out, e->envid)) || (rc = enc_str(out, entry_tenant(e))) ||
        (rc = enc_str(out, entry_source(e))) ||
        (rc = enc_le(out, e->protocol, 1)) || (rc = enc_le(out, e->priority, 1)) ||
        (rc = enc_le(out, e->flags, 1)) || (rc = enc_le(out, e->ndomains, 2)) ||
        (rc = enc_le(out, e->attempts, 4)) || (rc = enc_le(out, e->size, 8)) ||
        (rc = enc_le(out, f64_bits(e->received_at), 8)) ||
        (rc = enc_le(out, f64_bits(e->next_attempt), 8)) ||
        (rc = enc_le(out, e->nrcpt, 4)))
        goto fail;
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        const struct entry_rcpt *r = &e->rcpts[i];
        if ((rc = enc_le(out, r->state, 1)) || (rc = enc_str(out, r->addr)) ||
            (rc = enc_le(out, r->notify, 1)) ||
            (rc = enc_le(out, r->dflags & ENTRY_R_STORED, 1)) ||
            (rc = enc_str(out, entry_rcpt_orcpt(r))))
            goto fail;
    }
    return PT_OK;
fail:
    out->len = start;
    if (out->data)
        out->data[start] = 0;
    return rc;
}

/* ---- decoding ---- */

struct reader {
    const unsigned char *p, *end;
    bool bad;                  /* sticky: every later read returns zeros */
};

struct slice {
    const char *p;             /* NULL for a NULL string */
    size_t len;
};

static bool rd_need(struct reader *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n)
        r->bad = true;
    return !r->bad;
}

static uint64_t rd_le(struct reader *r, int nbytes)
{
    if (!rd_need(r, (size_t)nbytes))
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < nbytes; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += nbytes;
    return v;
}

static double rd_f64(struct reader *r)
{
    uint64_t u = rd_le(r, 8);
    double d;
    memcpy(&d, &u, sizeof d);
    if (!isfinite(d))
        r->bad = true;
    return d;
}

static struct slice rd_str(struct reader *r, bool nullable)
{
    struct slice s = { NULL, 0 };
    uint64_t n = rd_le(r, 4);
    if (r->bad)
        return s;
    if (n == ENTRY_NULL_STR) {
        r->bad |= !nullable;
        return s;
    }
    if (n > ENTRY_MAX_STR || !rd_need(r, (size_t)n) || memchr(r->p, 0, (size_t)n)) {
        r->bad = true;
        return s;
    }
    s.p = (const char *)r->p;
    s.len = (size_t)n;
    r->p += n;
    return s;
}

static char *slice_dup(struct slice s)
{
    char *c = malloc(s.len + 1);
    if (c) {
        memcpy(c, s.p, s.len);
        c[s.len] = 0;
    }
    return c;
}

int entry_decode(const void *data, size_t len, struct entry **out)
{
    *out = NULL;
    if (!data)
        return PT_INVALID;
    struct reader r = { data, (const unsigned char *)data + len, false };
    uint64_t version = rd_le(&r, 1);
    if (version < 1 || version > ENTRY_VERSION)
        return PT_INVALID;
    struct slice id = rd_str(&r, false), domain = rd_str(&r, false);
    struct slice sender = rd_str(&r, false), route = rd_str(&r, true);
    struct slice resp = rd_str(&r, true), edits = { NULL, 0 }, dkim = { NULL, 0 };
    struct slice envid = { NULL, 0 }, tenant = { NULL, 0 }, source = { NULL, 0 };
    if (version >= 2)
        edits = rd_str(&r, true);
    if (version >= 3)
        dkim = rd_str(&r, true);
    if (version >= 4) {
        envid = rd_str(&r, true);
        if (envid.p && !dsn_str_ok(envid.p, envid.len))
            return PT_INVALID;
    }
    if (version >= 5) {
        tenant = rd_str(&r, true);
        source = rd_str(&r, true);
        if (tenant.len > ENTRY_IDENT_MAX || source.len > ENTRY_IDENT_MAX ||
            (tenant.p && !tenant.len) || (source.p && !source.len))
            return PT_INVALID;   /* "" is written as NULL: one encoding per entry */
    }
    uint8_t protocol = (uint8_t)rd_le(&r, 1), priority = (uint8_t)rd_le(&r, 1);
    uint8_t flags = (uint8_t)rd_le(&r, 1);
    uint16_t ndomains = (uint16_t)rd_le(&r, 2);
    uint32_t attempts = (uint32_t)rd_le(&r, 4);
    uint64_t size = rd_le(&r, 8);
    double received_at = rd_f64(&r), next_attempt = rd_f64(&r);
    uint64_t nrcpt = rd_le(&r, 4);
    if (r.bad || id.len == 0 || id.len > ENTRY_ID_LEN || protocol > PROTO_HTTP ||
        priority > PRIO_BULK || nrcpt > ENTRY_MAX_RCPT ||
        nrcpt * (ENTRY_RCPT_MIN_ENC + (version >= 4 ? 6 : 0)) > (uint64_t)(r.end - r.p))
        return PT_INVALID;

    /* Pass 1 over the recipients: validate and size; nothing allocated yet. */
    const unsigned char *rcpt_start = r.p;
    size_t strbytes = domain.len + 1 + sender.len + 1 + (envid.p ? envid.len + 1 : 0);
    for (uint64_t i = 0; i < nrcpt; i++) {
        if (rd_le(&r, 1) > RCPT_BOUNCED)
            return PT_INVALID;
        struct slice a = rd_str(&r, false);
        if (version >= 4) {
            uint64_t notify = rd_le(&r, 1), dflags = rd_le(&r, 1);
            struct slice o = rd_str(&r, true);
            if ((notify & ~(uint64_t)ENTRY_N_MASK) || (dflags & ~(uint64_t)ENTRY_R_STORED) ||
                (o.p && !dsn_str_ok(o.p, o.len)))
                return PT_INVALID;
            strbytes += o.p ? o.len + 1 : 0;
        }
        if (r.bad)
            return PT_INVALID;
        strbytes += a.len + 1;
    }
    if (r.p != r.end)
        return PT_INVALID;

    char *s;
    struct entry *e = entry_alloc((uint32_t)nrcpt, strbytes, &s);
    if (!e)
        return PT_NOMEM;
    memcpy(e->id, id.p, id.len);
    e->id[id.len] = 0;
    e->domain = put_str(&s, domain.p, domain.len);
    e->sender = put_str(&s, sender.p, sender.len);
    if (envid.p)
        e->envid = put_str(&s, envid.p, envid.len);
    e->protocol = protocol;
    e->priority = priority;
    e->flags = flags;
    e->ndomains = ndomains;
    e->attempts = attempts;
    e->size = size;
    e->received_at = received_at;
    e->next_attempt = next_attempt;
    /* Pass 2: input already validated. */
    struct reader r2 = { rcpt_start, r.end, false };
    for (uint32_t i = 0; i < e->nrcpt; i++) {
        e->rcpts[i].state = (uint8_t)rd_le(&r2, 1);
        struct slice a = rd_str(&r2, false);
        e->rcpts[i].addr = put_str(&s, a.p, a.len);
        if (version >= 4) {
            e->rcpts[i].notify = (uint8_t)rd_le(&r2, 1);
            e->rcpts[i].dflags = (uint8_t)rd_le(&r2, 1);
            struct slice o = rd_str(&r2, true);
            if (o.p) {
                put_str(&s, o.p, o.len);
                e->rcpts[i].dflags |= ENTRY_R_ORCPT;
            }
        }
    }
    if ((route.p && !(e->route = slice_dup(route))) ||
        (resp.p && !(e->last_response = slice_dup(resp))) ||
        (edits.p && !(e->hdr_edits = slice_dup(edits))) ||
        (dkim.p && !(e->dkim_sign = slice_dup(dkim)))) {
        entry_free(e);
        return PT_NOMEM;
    }
    char tbuf[ENTRY_IDENT_MAX + 1], sbuf[ENTRY_IDENT_MAX + 1];
    memcpy(tbuf, tenant.p ? tenant.p : "", tenant.len);
    tbuf[tenant.len] = 0;
    memcpy(sbuf, source.p ? source.p : "", source.len);
    sbuf[source.len] = 0;
    if (entry_set_ident(e, tbuf, sbuf) != PT_OK) {
        entry_free(e);
        return PT_NOMEM;
    }
    *out = e;
    return PT_OK;
}
