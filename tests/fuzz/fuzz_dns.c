/* libFuzzer target for the DNS answer parsers (dns_parse_mx_answer and
 * dns_parse_addr_answer): random bytes as a DNS response must never crash, read out
 * of bounds or yield a result that breaks the dns.h contract.
 * SPDX-License-Identifier: Apache-2.0 */
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "delivery/dns.h"
#include "util/result.h"

static struct dns_result result; /* 20 KB: kept off the stack */

static void check(int rc, const struct dns_result *r, int family)
{
    if (rc != PT_OK && rc != PT_INVALID && rc != PT_NOMEM)
        abort();
    if (rc != PT_OK && r->status != DNS_TEMPFAIL)
        abort();
    if (r->status < DNS_OK || r->status > DNS_TEMPFAIL)
        abort();
    if (r->nhosts < 0 || r->nhosts > DNS_MAX_HOSTS || (r->status != DNS_OK && r->nhosts))
        abort();
    if (!memchr(r->error, '\0', sizeof r->error))
        abort();
    for (int i = 0; i < r->nhosts; i++) {
        const struct dns_host *h = &r->hosts[i];
        size_t len = strnlen(h->name, sizeof h->name);
        if (len == sizeof h->name || h->naddr < 0 || h->naddr > DNS_MAX_ADDRS)
            abort();
        if (i > 0 && family == AF_UNSPEC && h->pref < r->hosts[i - 1].pref)
            abort(); /* MX hosts come sorted by preference */
        if (family == AF_UNSPEC && (len == 0 || h->naddr != 0))
            abort();
        for (int j = 0; j < h->naddr; j++)
            if (h->addrs[j].ss_family != family)
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    /* The first byte picks the parser; the rest is the answer. */
    const unsigned char *abuf = data + 1;
    int alen = (int)(size - 1);
    uint32_t ttl;
    int rc;
    switch (data[0] % 3) {
    case 0:
        rc = dns_parse_mx_answer(abuf, alen, &result, &ttl);
        check(rc, &result, AF_UNSPEC);
        break;
    case 1:
        rc = dns_parse_addr_answer(abuf, alen, AF_INET, &result, &ttl);
        check(rc, &result, AF_INET);
        break;
    default:
        rc = dns_parse_addr_answer(abuf, alen, AF_INET6, &result, &ttl);
        check(rc, &result, AF_INET6);
        break;
    }
    return 0;
}
