/* DANE for SMTP (RFC 7672), the pure part: TLSA records (RFC 6698 §2) from a raw
 * answer, which of them SMTP may use (usages DANE-TA(2) and DANE-EE(3), selectors
 * 0/1, matching types 0/1/2 with the right digest length), and the verdict for one
 * MX host from the answer's code, its AD bit and whether the resolver is trusted.
 * Never allocates, never does I/O.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_DANE_H
#define PETREL_DELIVERY_DANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DANE_MAX_TLSA 8        /* usable records kept per host */
#define DANE_DATA_MAX 1024     /* association data kept (a full certificate may be larger:
                                  such a record is unusable here) */

struct dane_tlsa {
    uint8_t usage, selector, mtype;
    uint16_t len;
    unsigned char data[DANE_DATA_MAX];
};

/* The TLSA state of one MX host (RFC 7672 §2.2). */
enum dane_verdict {
    DANE_NONE = 0,   /* no secure TLSA RRset: DANE does not apply (the other policies do) */
    DANE_AUTH,       /* usable records: TLS required, the peer must match one of them */
    DANE_ENCRYPT,    /* a secure RRset whose records are all unusable: TLS required,
                        no authentication (§2.2 "unusable" = mandatory unauthenticated TLS) */
    DANE_FAIL,       /* the TLSA lookup failed (not "no such record"): the host must not
                        be used now (§2.2.1); try another, else defer */
};

struct dane_host {
    enum dane_verdict verdict;
    int n;
    struct dane_tlsa tlsa[DANE_MAX_TLSA];  /* usable records (DANE_AUTH) */
};

const char *dane_verdict_name(enum dane_verdict v);

/* One TLSA RDATA (borrowed): PT_OK and *out filled, PT_INVALID when shorter than 4
 * bytes, PT_TOOLONG when the data exceeds DANE_DATA_MAX. */
int dane_tlsa_parse(const unsigned char *rdata, size_t len, struct dane_tlsa *out);
/* Whether SMTP may use the record (RFC 7672 §3.1: usages 2 and 3 only; selector 0/1;
 * matching 0 with data, 1 with 32 bytes, 2 with 64 bytes). */
bool dane_tlsa_usable(const struct dane_tlsa *t);

/* The verdict for one host from its TLSA answer: abuf[0..alen) as the resolver sent
 * it (NULL / alen <= 0 = the lookup failed: timeout, network), trusted = it came from
 * a configured resolver (configure_dns.resolvers). The AD bit counts only when
 * trusted. Fills out (usable records only). */
void dane_host_verdict(const unsigned char *abuf, int alen, bool trusted,
                       struct dane_host *out);

#endif
