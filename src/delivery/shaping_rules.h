/* Shaping rules (configure_shaping, DESIGN §9): the default rule, rules by
 * destination domain and by site glob, and the automation rules that react to
 * replies. The rule set is part of the immutable config snapshot; lookups are
 * pure and never allocate. Rates are messages (or connections) per second here.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_DELIVERY_SHAPING_RULES_H
#define PETREL_DELIVERY_SHAPING_RULES_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

/* One rule; a field < 0 is unset (the default rule's value applies). */
struct shaping_rule {
    char *key;                   /* "default", "gmail.com" or "site:*.google.com" */
    const char *glob;            /* site rules: the glob (inside key); else NULL */
    int connection_limit;        /* >= 1 */
    double message_rate;         /* per second; 0 = unlimited */
    double connection_rate;      /* new connections per second; 0 = unlimited */
    int max_deliveries_per_connection;
    double connect_timeout;      /* seconds */
    int tls;                     /* outbound TLS level of MX deliveries: 1 may, 2 encrypt,
                                    3 verify (enum client_tls_policy); -1 unset. In the
                                    default rule unset stays -1: the route's level */
};

enum shaping_action {
    SHAPING_SUSPEND = 0, SHAPING_SET_RATE, SHAPING_REDUCE_RATE, SHAPING_SET_CONN_LIMIT,
    SHAPING_BOUNCE, SHAPING__N
};

struct shaping_auto {
    char *match;                 /* POSIX extended regex, as written */
    regex_t re;                  /* compiled (REG_EXTENDED | REG_NOSUB) */
    enum shaping_action action;
    double duration;             /* seconds (not for bounce) */
    double factor;               /* reduce_rate: (0, 1] */
    double value;                /* set_rate: per second; set_connection_limit: >= 1 */
};

struct shaping_rules {
    struct shaping_rule dflt;    /* every field set once the config is finished */
    struct shaping_rule *rules;  /* domain and site rules, in the order written */
    int n_rules;
    struct shaping_auto *autos;
    int n_autos;
    bool has_sites;              /* a site rule exists: MX hosts must be looked up */
    uint64_t epoch;              /* bumped by a reload that changes the rules (the
                                    delivery threads rebind their queues then) */
};

/* Action names as written in the config, the Shaping record and the metric. */
const char *shaping_action_name(enum shaping_action a);
/* "suspend" ... "bounce" -> the action; -1 if unknown. */
int shaping_action_parse(const char *s);

/* "N/s", "N/min", "N/h", "N/d" (N a positive decimal number) into per second.
 * PT_OK or PT_INVALID. A bare number (per minute) is the caller's case. */
int shaping_rate_parse(const char *s, double *per_s);

/* The rule for a lowercased destination domain written as a domain key; NULL if
 * none. Borrowed from rules. */
const struct shaping_rule *shaping_rules_domain(const struct shaping_rules *rules,
                                                const char *domain);
/* The first site rule (in the order written) whose glob matches every one of the
 * n host names (stride bytes apart); NULL if none. */
const struct shaping_rule *shaping_rules_site(const struct shaping_rules *rules,
                                              const char *hosts, size_t stride, int n);
/* A field of r, or the default rule's when r leaves it unset (r may be NULL). */
int shaping_rule_conn_limit(const struct shaping_rules *rules, const struct shaping_rule *r);
double shaping_rule_rate(const struct shaping_rules *rules, const struct shaping_rule *r);
double shaping_rule_conn_rate(const struct shaping_rules *rules, const struct shaping_rule *r);
int shaping_rule_max_deliveries(const struct shaping_rules *rules, const struct shaping_rule *r);
double shaping_rule_connect_timeout(const struct shaping_rules *rules,
                                    const struct shaping_rule *r);
/* The TLS level r sets (enum client_tls_policy: 1 may, 2 encrypt, 3 verify), or the
 * default rule's; 0 = none set: the route's level applies. */
int shaping_rule_tls(const struct shaping_rules *rules, const struct shaping_rule *r);

/* The reply as automation sees it: lines joined by one space (CR/LF runs become
 * a space, a trailing one is dropped), into out (always terminated). */
void shaping_reply_flatten(const char *text, char *out, size_t outlen);

/* Whether two rule sets say the same (a reload compares them). */
bool shaping_rules_equal(const struct shaping_rules *a, const struct shaping_rules *b);

void shaping_rules_free(struct shaping_rules *rules);

#endif
