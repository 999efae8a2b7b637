/* DANE TLSA parsing and the per-host verdict; see dane.h.
 * SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "delivery/dane.h"
#include "delivery/dnsrec.h"
#include "util/result.h"

const char *dane_verdict_name(enum dane_verdict v)
{
    switch (v) {
    case DANE_AUTH: return "dane-auth";
    case DANE_ENCRYPT: return "dane-unusable-tlsa";
    case DANE_FAIL: return "dane-lookup-failed";
    default: return "none";
    }
}

int dane_tlsa_parse(const unsigned char *rdata, size_t len, struct dane_tlsa *out)
{
    memset(out, 0, offsetof(struct dane_tlsa, data));
    if (len < 4)
        return PT_INVALID;  /* at least one byte of association data */
    if (len - 3 > DANE_DATA_MAX)
        return PT_TOOLONG;
    out->usage = rdata[0];
    out->selector = rdata[1];
    out->mtype = rdata[2];
    out->len = (uint16_t)(len - 3);
    memcpy(out->data, rdata + 3, len - 3);
    return PT_OK;
}

bool dane_tlsa_usable(const struct dane_tlsa *t)
{
    if (t->usage != 2 && t->usage != 3)
        return false;       /* PKIX-TA(0)/PKIX-EE(1) are not for SMTP (§3.1.3) */
    if (t->selector > 1)
        return false;
    switch (t->mtype) {
    case 0: return t->len > 0;
    case 1: return t->len == 32;
    case 2: return t->len == 64;
    default: return false;
    }
}

void dane_host_verdict(const unsigned char *abuf, int alen, bool trusted,
                       struct dane_host *out)
{
    out->verdict = DANE_NONE;
    out->n = 0;
    struct dnsrec_set set;
    if (!abuf || alen <= 0 || dnsrec_parse(abuf, alen, DNSREC_TYPE_TLSA, &set) != PT_OK) {
        out->verdict = DANE_FAIL;
        return;
    }
    if (set.rcode == DNSREC_NXDOMAIN)
        return;             /* no TLSA (securely denied or not): DANE does not apply */
    if (set.rcode != DNSREC_NOERROR) {
        out->verdict = DANE_FAIL;
        return;
    }
    if (!trusted || !set.ad || set.n == 0)
        return;             /* insecure, untrusted or NODATA: DANE does not apply */
    for (int i = 0; i < set.n; i++) {
        struct dane_tlsa t;
        if (dane_tlsa_parse(abuf + set.rr[i].off, set.rr[i].len, &t) != PT_OK ||
            !dane_tlsa_usable(&t) || out->n >= DANE_MAX_TLSA)
            continue;
        out->tlsa[out->n++] = t;
    }
    out->verdict = out->n > 0 ? DANE_AUTH : DANE_ENCRYPT;
}
