/* libFuzzer target for the outbound TLS policy parsers: the first byte picks the
 * MTA-STS TXT record, the MTA-STS policy (+ MX matching), the cache file, the
 * TLS-RPT TXT record, or a raw
 * DNS answer through dnsrec (TXT join) and the DANE verdict. Random bytes must never
 * crash, read out of bounds or break the headers' contracts.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "delivery/dane.h"
#include "delivery/dnsrec.h"
#include "delivery/mtasts.h"
#include "delivery/tlsrpt.h"
#include "util/result.h"

static struct mtasts_policy pol;
static struct dane_host host;
static struct tlsrpt_rua rua;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    char id[MTASTS_ID_MAX + 1], why[128];
    switch (sel % 5) {
    case 0: {
        int rc = mtasts_parse_txt(s, n, id);
        if (rc != PT_OK && rc != PT_INVALID && rc != PT_NOTFOUND)
            abort();
        if (strlen(id) > MTASTS_ID_MAX || (rc == PT_OK && id[0] == '\0'))
            abort();
        break;
    }
    case 1: {
        int rc = mtasts_parse_policy(s, n, &pol, why, sizeof why);
        if (rc != PT_OK && rc != PT_INVALID && rc != PT_TOOLONG)
            abort();
        if (!memchr(why, '\0', sizeof why))
            abort();
        if (rc == PT_OK) {
            if (pol.nmx < 0 || pol.nmx > MTASTS_MAX_MX || pol.max_age > MTASTS_MAX_AGE_MAX)
                abort();
            if (pol.mode != MTASTS_NONE && pol.nmx == 0)
                abort();
            for (int i = 0; i < pol.nmx; i++)
                if (!mtasts_pattern_match(pol.mx[i], pol.mx[i][0] == '*' ? "x.y" : pol.mx[i]) &&
                    pol.mx[i][0] != '*')
                    abort();   /* a name always matches itself */
            (void)mtasts_mx_match(&pol, "mx.example.com");
        }
        break;
    }
    case 2: {
        int64_t fetched;
        int rc = mtasts_cache_parse(s, n, id, &fetched, &pol);
        if (rc != PT_OK && rc != PT_INVALID)
            abort();
        break;
    }
    case 3: {
        int rc = tlsrpt_parse_txt(s, n, &rua);
        if (rc != PT_OK && rc != PT_INVALID && rc != PT_NOTFOUND)
            abort();
        if (rua.n < 0 || rua.n > TLSRPT_MAX_RUA || (rc == PT_OK && rua.n == 0))
            abort();
        for (int i = 0; i < rua.n; i++)
            if (!memchr(rua.uri[i], '\0', TLSRPT_URI_MAX))
                abort();
        break;
    }
    default: {
        struct dnsrec_set set;
        int rc = dnsrec_parse(data + 1, (int)n, DNSREC_TYPE_TXT, &set);
        if (rc != PT_OK && rc != PT_INVALID)
            abort();
        for (int i = 0; rc == PT_OK && i < set.n; i++) {
            if ((size_t)set.rr[i].off + set.rr[i].len > n)
                abort();
            char txt[512];
            size_t tn;
            int jr = dnsrec_txt_join(data + 1 + set.rr[i].off, set.rr[i].len, txt, sizeof txt, &tn);
            if (jr == PT_OK && (tn >= sizeof txt || txt[tn] != '\0'))
                abort();
        }
        dane_host_verdict(data + 1, (int)n, sel & 0x80, &host);
        if (host.n < 0 || host.n > DANE_MAX_TLSA || (host.verdict != DANE_AUTH && host.n))
            abort();
        for (int i = 0; i < host.n; i++)
            if (!dane_tlsa_usable(&host.tlsa[i]))
                abort();
        break;
    }
    }
    return 0;
}
