/* TLS-RPT (RFC 8460), the pure part: the `_smtp._tls` TXT record (v=TLSRPTv1; rua=),
 * the aggregate report JSON of §4 built from per-policy counts, its gzip form and
 * the report file name of §5.3. No I/O; the counters are in tlsrpt_agg.c, the
 * sending in tlsrpt_send.c.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_TLSRPT_H
#define PETREL_DELIVERY_TLSRPT_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define TLSRPT_MAX_RUA 8
#define TLSRPT_URI_MAX 512

struct tlsrpt_rua {
    int n;
    char uri[TLSRPT_MAX_RUA][TLSRPT_URI_MAX];  /* "mailto:..." or "https://..." */
};

/* One TXT record's text (borrowed). PT_OK with the rua URIs (mailto: and https: only;
 * others ignored, at least one kept); PT_NOTFOUND when it does not start with
 * "v=TLSRPTv1"; PT_INVALID when malformed or no usable rua. */
int tlsrpt_parse_txt(const char *txt, size_t len, struct tlsrpt_rua *out);

struct tlsrpt_failure {
    const char *result_type;          /* "starttls-not-supported", "certificate-host-mismatch",
                                         "validation-failure", "sts-policy-fetch-error", ... */
    const char *sending_mta_ip;       /* may be NULL */
    const char *receiving_mx_hostname; /* may be NULL */
    const char *receiving_ip;         /* may be NULL */
    uint64_t count;
    const char *failure_reason_code;  /* may be NULL */
};

struct tlsrpt_policy {
    const char *policy_type;          /* "sts" | "tlsa" | "no-policy-found" */
    const char *policy_domain;
    const char *const *policy_string; int n_policy_string;  /* policy lines / TLSA RRs */
    const char *const *mx_host; int n_mx_host;              /* sts: the mx patterns */
    uint64_t success, failure;
    const struct tlsrpt_failure *failures; int n_failures;
};

/* The §4 report for [start, end) (Unix seconds, UTC) into out (appended; out
 * initialized by the caller). All strings borrowed. PT_OK, PT_NOMEM or PT_INVALID
 * (a required string missing). */
int tlsrpt_build_json(const char *org, const char *contact, const char *report_id,
                      int64_t start, int64_t end, const struct tlsrpt_policy *p, int n,
                      struct buf *out);
/* gzip (RFC 1952) of in[0..len) appended to out. PT_OK or PT_NOMEM / PT_ERROR. */
int tlsrpt_gzip(const void *in, size_t len, struct buf *out);
/* §5.3 file name "sender!policy-domain!start!end!id.json.gz" into out. */
int tlsrpt_filename(const char *sender_domain, const char *policy_domain, int64_t start,
                    int64_t end, const char *id, char *out, size_t outlen);

#endif
