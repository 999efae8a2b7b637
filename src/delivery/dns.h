/* Asynchronous DNS for delivery: MX lookup with RFC 5321 §5.1 semantics (MX
 * sorted by preference, equal preferences shuffled, A/AAAA fallback when there is
 * no MX, RFC 7505 null MX) and host address lookup, on c-ares driven by a libuv
 * loop. Resolvers come from configure_dns (tests point them at a fake server).
 * Answers are cached by TTL. Callbacks run on the loop's thread.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_DNS_H
#define PETREL_DELIVERY_DNS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#define DNS_MAX_HOSTS 16
#define DNS_MAX_ADDRS 8

enum dns_status {
    DNS_OK = 0,
    DNS_NULLMX,      /* RFC 7505: the domain accepts no mail -> bounce */
    DNS_NOTFOUND,    /* NXDOMAIN or no MX and no address -> bounce (5.1.2) */
    DNS_TEMPFAIL,    /* timeout, SERVFAIL, malformed answer -> defer */
};

struct dns_host {
    char name[256];            /* MX target (or the domain itself for A/AAAA fallback) */
    uint16_t pref;
    int naddr;
    struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port left 0 */
};

struct dns_result {
    enum dns_status status;
    int nhosts;
    struct dns_host hosts[DNS_MAX_HOSTS]; /* delivery order */
    char error[160];           /* human text for logs when status != DNS_OK */
    bool mx_secure;            /* dns_resolve_mx: the MX answer (or the NODATA answer
                                  before the A/AAAA fallback) had the AD bit: a
                                  validating resolver authenticated it (RFC 7672
                                  §2.2.1; trust it only when dns_trusted) */
};

struct dns;
/* resolvers: "ip" or "ip:port" / "[v6]:port"; n == 0 = system resolv.conf. */
struct dns *dns_new(uv_loop_t *loop, const char *const *resolvers, int n,
                    char *err, size_t errlen);
/* Cancels pending queries (their callbacks run with DNS_TEMPFAIL) and frees.
 * Every callback still owed runs before dns_free returns (answers already complete
 * are delivered as they are); calling dns_free from inside a dns callback is fine.
 * The loop handles close asynchronously: run the loop afterwards to release them.
 * NULL is a no-op. */
void dns_free(struct dns *d);

typedef void (*dns_cb)(void *arg, const struct dns_result *res); /* res borrowed */
/* Every name below may be a UTF-8 (SMTPUTF8) domain: it is queried in its A-label
 * form (util/idna.h, IDNA2008 / UTS #46 nontransitional); one that does not convert
 * is DNS_NOTFOUND ("bad destination domain: IDNA conversion failed: ...", a 5.1.2
 * bounce) or, for dns_query_raw, no answer. Host names in results and error text use
 * the A-label form. */
/* MX lookup for a mail domain: hosts in delivery order, each with its addresses. */
void dns_resolve_mx(struct dns *d, const char *domain, dns_cb cb, void *arg);
/* Address lookup for one host (relayhost): one host entry. An IP literal resolves
 * immediately (callback still asynchronous). */
void dns_resolve_host(struct dns *d, const char *host, dns_cb cb, void *arg);

/* A raw query for name (TXT, TLSA...) with the AD bit set in the query, so that a
 * validating resolver reports its verdict in the answer's AD bit. cb gets the whole
 * response (borrowed for the call: parse it with delivery/dnsrec.h), including
 * NXDOMAIN and SERVFAIL answers; abuf NULL when there was no answer (timeout,
 * network, an invalid name, shutdown). The callback runs later on the loop, never
 * from inside dns_query_raw (except when out of memory for the request itself), and
 * runs exactly once, also when dns_free cancels the query. */
typedef void (*dns_raw_cb)(void *arg, const unsigned char *abuf, int alen);
void dns_query_raw(struct dns *d, const char *name, int type, dns_raw_cb cb, void *arg);
/* Whether the resolvers are the configured ones (configure_dns.resolvers), not the
 * system's resolv.conf: only their AD bit is trusted (DANE). */
bool dns_trusted(const struct dns *d);

/* Pure helper (unit-tested): orders hosts[0..n) by pref, shuffling equal prefs
 * with rnd (a random source returning uniform uint32). */
void dns_order_mx(struct dns_host *hosts, int n, uint32_t (*rnd)(void *), void *rnd_arg);

/* Pure answer parsers (unit-tested, fuzzed); every answer c-ares hands to dns.c goes
 * through them. abuf[0..alen) is a DNS response as c-ares passes it to a query
 * callback: borrowed, never read beyond alen. They return PT_OK when the answer is
 * well-formed, the verdict in out->status (out->error says why when not DNS_OK), or
 * PT_INVALID when it is malformed (out->status = DNS_TEMPFAIL). *ttl (may be NULL)
 * gets the smallest TTL of the answer records used, 0 when there are none. */
/* MX: DNS_OK with hosts (name, pref; naddr 0) sorted by preference (stable), at most
 * DNS_MAX_HOSTS of the lowest preferences; DNS_OK with nhosts == 0 when the domain has
 * no MX (NODATA: the caller falls back to A/AAAA); DNS_NULLMX; DNS_NOTFOUND for
 * NXDOMAIN or when no MX names a usable host (an IP literal or a malformed name);
 * DNS_TEMPFAIL for SERVFAIL, REFUSED and other server failures. */
int dns_parse_mx_answer(const unsigned char *abuf, int alen, struct dns_result *out,
                        uint32_t *ttl);
/* A (family AF_INET) or AAAA (AF_INET6): DNS_OK with the addresses in hosts[0]
 * (nhosts == 1, name left empty, at most DNS_MAX_ADDRS); DNS_NOTFOUND for NXDOMAIN
 * or no address of that family; DNS_TEMPFAIL for a server failure. */
int dns_parse_addr_answer(const unsigned char *abuf, int alen, int family,
                          struct dns_result *out, uint32_t *ttl);

#endif
