/* Raw DNS answers for the record types the TLS policies need (TXT, TLSA): the
 * response code, the AD (authenticated data) header bit and the RDATA of each answer
 * record of one type. Pure: bytes in, offsets out; never reads past the length.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_DNSREC_H
#define PETREL_DELIVERY_DNSREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNSREC_MAX 32          /* records of the asked type kept; more are ignored */
enum { DNSREC_TYPE_TXT = 16, DNSREC_TYPE_TLSA = 52 };
enum { DNSREC_NOERROR = 0, DNSREC_SERVFAIL = 2, DNSREC_NXDOMAIN = 3 };

struct dnsrec_set {
    unsigned rcode;            /* header RCODE */
    bool ad;                   /* header AD bit: the resolver validated the answer */
    int n;
    struct { uint16_t off, len; } rr[DNSREC_MAX]; /* RDATA of each record, in abuf */
};

/* Wire-format helpers shared with dns.c: skips the (possibly compressed) name at
 * *off, checking every label against len (PT_OK with *off past it, or PT_INVALID);
 * a big-endian 16-bit field. */
int dnsrec_skip_name(const unsigned char *b, int len, int *off);
unsigned dnsrec_get16(const unsigned char *p);

/* Parses a response (abuf[0..alen), borrowed; the offsets in out point into it).
 * PT_OK when the framing is sound (out->rcode says NXDOMAIN, SERVFAIL...), PT_INVALID
 * when it is not a well-formed response. */
int dnsrec_parse(const unsigned char *abuf, int alen, unsigned type, struct dnsrec_set *out);

/* The character-strings of one TXT RDATA joined into out (NUL-terminated, at most
 * outlen - 1 bytes). PT_OK, PT_INVALID (a string runs past the RDATA), PT_TOOLONG. */
int dnsrec_txt_join(const unsigned char *rdata, size_t len, char *out, size_t outlen,
                    size_t *outn);

#endif
