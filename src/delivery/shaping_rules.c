/* Shaping rules: rate parsing, most-specific-match lookup and reply flattening
 * for the automation regexes. Pure; never blocks.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "delivery/shaping_rules.h"
#include "delivery/site.h"
#include "util/result.h"

static const char *const action_names[SHAPING__N] = {
    [SHAPING_SUSPEND] = "suspend", [SHAPING_SET_RATE] = "set_rate",
    [SHAPING_REDUCE_RATE] = "reduce_rate", [SHAPING_SET_CONN_LIMIT] = "set_connection_limit",
    [SHAPING_BOUNCE] = "bounce",
};

const char *shaping_action_name(enum shaping_action a)
{
    return a < SHAPING__N ? action_names[a] : "?";
}

int shaping_action_parse(const char *s)
{
    for (int i = 0; i < SHAPING__N; i++)
        if (strcmp(s, action_names[i]) == 0)
            return i;
    return -1;
}

int shaping_rate_parse(const char *s, double *per_s)
{
    static const struct { const char *unit; double secs; } units[] = {
        { "s", 1 }, { "sec", 1 }, { "min", 60 }, { "m", 60 }, { "h", 3600 }, { "d", 86400 },
    };
    char *end;
    errno = 0;
    double n = strtod(s, &end);
    if (end == s || errno || !isfinite(n) || n <= 0 || *end != '/' || s[0] == ' ')
        return PT_INVALID;
    const char *u = end + 1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(u, units[i].unit) == 0) {
            *per_s = n / units[i].secs;
            return PT_OK;
        }
    return PT_INVALID;
}

const struct shaping_rule *shaping_rules_domain(const struct shaping_rules *rules,
                                                const char *domain)
{
    if (!rules)
        return NULL;
    for (int i = 0; i < rules->n_rules; i++)
        if (!rules->rules[i].glob && strcasecmp(rules->rules[i].key, domain) == 0)
            return &rules->rules[i];
    return NULL;
}

const struct shaping_rule *shaping_rules_site(const struct shaping_rules *rules,
                                              const char *hosts, size_t stride, int n)
{
    if (!rules)
        return NULL;
    for (int i = 0; i < rules->n_rules; i++)
        if (rules->rules[i].glob && site_hosts_match(rules->rules[i].glob, hosts, stride, n))
            return &rules->rules[i];
    return NULL;
}

int shaping_rule_conn_limit(const struct shaping_rules *rules, const struct shaping_rule *r)
{
    return r && r->connection_limit >= 0 ? r->connection_limit : rules->dflt.connection_limit;
}

double shaping_rule_rate(const struct shaping_rules *rules, const struct shaping_rule *r)
{
    return r && r->message_rate >= 0 ? r->message_rate : rules->dflt.message_rate;
}

double shaping_rule_conn_rate(const struct shaping_rules *rules, const struct shaping_rule *r)
{
    return r && r->connection_rate >= 0 ? r->connection_rate : rules->dflt.connection_rate;
}

int shaping_rule_max_deliveries(const struct shaping_rules *rules, const struct shaping_rule *r)
{
    return r && r->max_deliveries_per_connection >= 0 ? r->max_deliveries_per_connection
                                                      : rules->dflt.max_deliveries_per_connection;
}

double shaping_rule_connect_timeout(const struct shaping_rules *rules,
                                    const struct shaping_rule *r)
{
    return r && r->connect_timeout >= 0 ? r->connect_timeout : rules->dflt.connect_timeout;
}

int shaping_rule_tls(const struct shaping_rules *rules, const struct shaping_rule *r)
{
    int t = r && r->tls > 0 ? r->tls : rules->dflt.tls;
    return t > 0 ? t : 0;
}

void shaping_reply_flatten(const char *text, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    for (const char *p = text ? text : ""; *p && o + 1 < outlen; p++) {
        if (*p == '\r' || *p == '\n') {
            while (p[1] == '\r' || p[1] == '\n')
                p++;
            if (p[1] && o > 0)
                out[o++] = ' ';
            continue;
        }
        out[o++] = *p;
    }
    out[o] = 0;
}

static bool rule_equal(const struct shaping_rule *a, const struct shaping_rule *b)
{
    return strcmp(a->key, b->key) == 0 && a->connection_limit == b->connection_limit &&
           a->message_rate == b->message_rate && a->connection_rate == b->connection_rate &&
           a->max_deliveries_per_connection == b->max_deliveries_per_connection &&
           a->connect_timeout == b->connect_timeout && a->tls == b->tls;
}

bool shaping_rules_equal(const struct shaping_rules *a, const struct shaping_rules *b)
{
    if (!a || !b)
        return a == b;
    if (!rule_equal(&a->dflt, &b->dflt) || a->n_rules != b->n_rules || a->n_autos != b->n_autos)
        return false;
    for (int i = 0; i < a->n_rules; i++)
        if (!rule_equal(&a->rules[i], &b->rules[i]))
            return false;
    for (int i = 0; i < a->n_autos; i++) {
        const struct shaping_auto *x = &a->autos[i], *y = &b->autos[i];
        if (strcmp(x->match, y->match) != 0 || x->action != y->action ||
            x->duration != y->duration || x->factor != y->factor || x->value != y->value)
            return false;
    }
    return true;
}

void shaping_rules_free(struct shaping_rules *rules)
{
    if (!rules)
        return;
    free(rules->dflt.key);
    for (int i = 0; i < rules->n_rules; i++)
        free(rules->rules[i].key);
    free(rules->rules);
    for (int i = 0; i < rules->n_autos; i++) {
        free(rules->autos[i].match);
        regfree(&rules->autos[i].re);
    }
    free(rules->autos);
    free(rules);
}
