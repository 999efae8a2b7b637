/* Fuzz target for the entry encoding: entry_decode on arbitrary bytes must never
 * over-read or crash, and what it accepts must re-encode to the same bytes (a v1-v4
 * record re-encodes as v5, which must decode to the same entry); an entry built
 * from the input, with or without DSN parameters, must survive encode -> decode
 * unchanged.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/entry.h"
#include "util/buf.h"
#include "util/result.h"

#define FZ_CHECK(c) do { if (!(c)) abort(); } while (0)
#define FZ_MAX_PIECES 64

static int fz_streq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static void fz_same(const struct entry *a, const struct entry *b)
{
    FZ_CHECK(strcmp(a->id, b->id) == 0);
    FZ_CHECK(fz_streq(a->domain, b->domain) && fz_streq(a->sender, b->sender));
    FZ_CHECK(fz_streq(a->route, b->route));
    FZ_CHECK(fz_streq(a->last_response, b->last_response));
    FZ_CHECK(fz_streq(a->hdr_edits, b->hdr_edits));
    FZ_CHECK(fz_streq(a->dkim_sign, b->dkim_sign));
    FZ_CHECK(fz_streq(a->envid, b->envid));
    FZ_CHECK(fz_streq(entry_tenant(a), entry_tenant(b)));
    FZ_CHECK(fz_streq(entry_source(a), entry_source(b)));
    FZ_CHECK(a->nrcpt == b->nrcpt);
    for (uint32_t i = 0; i < a->nrcpt; i++) {
        FZ_CHECK(a->rcpts[i].state == b->rcpts[i].state &&
                 fz_streq(a->rcpts[i].addr, b->rcpts[i].addr));
        FZ_CHECK(a->rcpts[i].notify == b->rcpts[i].notify &&
                 a->rcpts[i].dflags == b->rcpts[i].dflags);
        FZ_CHECK(fz_streq(entry_rcpt_orcpt(&a->rcpts[i]), entry_rcpt_orcpt(&b->rcpts[i])));
    }
    FZ_CHECK(a->attempts == b->attempts && a->ndomains == b->ndomains);
    FZ_CHECK(a->protocol == b->protocol && a->priority == b->priority && a->flags == b->flags);
    FZ_CHECK(memcmp(&a->received_at, &b->received_at, sizeof(double)) == 0);
    FZ_CHECK(memcmp(&a->next_attempt, &b->next_attempt, sizeof(double)) == 0);
    FZ_CHECK(a->size == b->size);
}

/* decode(data) accepted => encode gives data back, byte for byte. */
static void fz_decode_arbitrary(const uint8_t *data, size_t size)
{
    struct entry *e = (struct entry *)1;
    int rc = entry_decode(data, size, &e);
    if (rc != PT_OK) {
        FZ_CHECK(rc == PT_INVALID && e == NULL);
        return;
    }
    FZ_CHECK(e && strlen(e->id) >= 1 && strlen(e->id) <= ENTRY_ID_LEN);
    FZ_CHECK(entry_pending(e) <= e->nrcpt);
    struct buf b;
    buf_init(&b, 0);
    FZ_CHECK(entry_encode(e, &b) == PT_OK);
    if (data[0] >= 1 && data[0] <= 4) {
        /* v1: no hdr_edits, v2: no dkim_sign, v3: no envid (4 bytes each); before v4
         * recipients had no notify, dflags, orcpt (6 bytes each); before v5 no tenant,
         * no egress source (4 bytes each) */
        struct entry *d = NULL;
        FZ_CHECK(data[0] == 4 || e->envid == NULL);
        FZ_CHECK(data[0] >= 3 || e->dkim_sign == NULL);
        FZ_CHECK(data[0] >= 2 || e->hdr_edits == NULL);
        FZ_CHECK(!entry_tenant(e) && !entry_source(e));
        FZ_CHECK(b.len == size + 4u * (4u - data[0]) + (data[0] < 4 ? 6u * e->nrcpt : 0) + 8u);
        FZ_CHECK(entry_decode(b.data, b.len, &d) == PT_OK);
        fz_same(e, d);
        entry_free(d);
    } else {
        FZ_CHECK(b.len == size && memcmp(b.data, data, size) == 0);
    }
    buf_free(&b);
    entry_free(e);
}

/* What the encoding accepts for envid and orcpt: at most 500 bytes, no control byte. */
static bool fz_dsn_str_ok(const char *s)
{
    size_t n = strlen(s);
    if (n > 500)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static uint64_t fz_take(const uint8_t **p, const uint8_t *end, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n && *p < end; i++, (*p)++)
        v |= (uint64_t)**p << (8 * i);
    return v;
}

/* Builds an entry from the input (fixed fields first, then NUL-separated
 * strings) and checks decode(encode(x)) == x. */
static void fz_round_trip(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    uint8_t shape = (uint8_t)fz_take(&p, end, 1);
    uint32_t attempts = (uint32_t)fz_take(&p, end, 4);
    uint16_t ndomains = (uint16_t)fz_take(&p, end, 2);
    uint8_t flags = (uint8_t)fz_take(&p, end, 1);
    uint64_t size_f = fz_take(&p, end, 8);
    uint64_t t1 = fz_take(&p, end, 8), t2 = fz_take(&p, end, 8);
    uint8_t states = (uint8_t)fz_take(&p, end, 1);

    /* the rest: NUL-separated pieces, copied so each is terminated */
    size_t rest = (size_t)(end - p);
    char *text = malloc(rest + 1);
    if (!text)
        return;
    memcpy(text, p, rest);
    text[rest] = 0;
    const char *pieces[FZ_MAX_PIECES];
    int np = 0;
    for (char *s = text; np < FZ_MAX_PIECES;) {
        pieces[np++] = s;
        size_t l = strlen(s);
        if (s + l >= text + rest)
            break;
        s += l + 1;
    }
    const char *domain = np > 0 ? pieces[0] : "";
    const char *sender = np > 1 ? pieces[1] : "";
    int first_rcpt = 2 + ((shape & 1) != 0) + ((shape & 2) != 0) + ((shape & 32) != 0);
    uint32_t nrcpt = np > first_rcpt ? (uint32_t)(np - first_rcpt) : 0;
    char id[ENTRY_ID_LEN + 1];
    entry_new_id(id);
    /* shape bit 128: DSN parameters (envid piece 6, NOTIFY from the state byte, every
     * other recipient's own address as its ORCPT) */
    uint8_t notify[FZ_MAX_PIECES];
    const char *orcpt[FZ_MAX_PIECES];
    bool dsn_ok = true;
    struct entry_dsn dsn = { .envid = np > 6 ? pieces[6] : NULL, .notify = notify, .orcpt = orcpt };
    if (dsn.envid)
        dsn_ok = fz_dsn_str_ok(dsn.envid);
    for (uint32_t i = 0; i < nrcpt; i++) {
        notify[i] = (uint8_t)((states >> (i % 5)) & ENTRY_N_MASK);
        orcpt[i] = (i & 1) ? pieces[first_rcpt + i] : NULL;
        if (orcpt[i] && !fz_dsn_str_ok(orcpt[i]))
            dsn_ok = false;
    }
    bool with_dsn = (shape & 128) != 0;
    struct entry *e = entry_new_dsn(id, domain, sender, nrcpt ? pieces + first_rcpt : NULL, nrcpt,
                                    with_dsn ? &dsn : NULL);
    if (!e) {
        free(text);
        return;
    }
    if ((shape & 1) && np > 2)
        entry_set_route(e, pieces[2]);
    if ((shape & 2) && np > 3)
        entry_set_last_response(e, pieces[3]);
    if ((shape & 32) && np > 4)
        entry_set_hdr_edits(e, pieces[4]);
    if ((shape & 64) && np > 5)
        entry_set_dkim_sign(e, pieces[5]);
    /* tenant and egress source: pieces 7 and 8 (over 255 bytes: refused, cleared) */
    if (np > 7)
        entry_set_ident(e, pieces[7], np > 8 ? pieces[8] : NULL);
    e->attempts = attempts;
    e->ndomains = ndomains;
    e->flags = flags;
    e->size = size_f;
    e->protocol = (shape >> 2) & 1;
    e->priority = (uint8_t)(((shape >> 3) & 3) % 3);
    memcpy(&e->received_at, &t1, sizeof t1);
    memcpy(&e->next_attempt, &t2, sizeof t2);
    for (uint32_t i = 0; i < nrcpt; i++) {
        e->rcpts[i].state = (uint8_t)(((states >> (i % 8)) & 1) ? RCPT_BOUNCED : RCPT_PENDING);
        if ((states >> (i % 7)) & 2)
            e->rcpts[i].dflags |= ENTRY_R_DELAY_SENT;
    }

    struct buf b;
    buf_init(&b, 0);
    int rc = entry_encode(e, &b);
    if (!isfinite(e->received_at) || !isfinite(e->next_attempt) || (with_dsn && !dsn_ok)) {
        FZ_CHECK(rc == PT_INVALID && b.len == 0);
    } else if (rest > 65536 && rc == PT_TOOLONG) {
        FZ_CHECK(b.len == 0);              /* a piece over the string cap */
    } else {
        FZ_CHECK(rc == PT_OK);
        struct entry *d = NULL;
        FZ_CHECK(entry_decode(b.data, b.len, &d) == PT_OK);
        fz_same(e, d);
        entry_free(d);
    }
    buf_free(&b);
    entry_free(e);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_decode_arbitrary(data, size);
    fz_round_trip(data, size);
    return 0;
}
