/* TLS-RPT counters; see tlsrpt_agg.h. The state is one jansson object under a
 * mutex, in the very shape it is saved in:
 *   {"version":1,"start":S,"policies":{"DOMAIN TYPE":{"domain","type","strings":[],
 *    "mx":[],"success":N,"failure":N,"details":{"RT MX SIP RIP REASON":{"result-type",
 *    "mx","sip","rip","reason","count"}}}}}
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "delivery/tlsrpt_agg.h"
#include "util/idna.h"
#include "util/result.h"

struct tlsrpt_agg {
    pthread_mutex_t lock;
    json_t *pol;             /* "DOMAIN TYPE" -> policy object */
    uint64_t gen;            /* +1 per change */
};

struct tlsrpt_agg *tlsrpt_agg_new(void)
{
    struct tlsrpt_agg *a = calloc(1, sizeof *a);
    if (!a || !(a->pol = json_object())) {
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->lock, NULL);
    return a;
}

void tlsrpt_agg_free(struct tlsrpt_agg *a)
{
    if (!a)
        return;
    json_decref(a->pol);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static json_t *str_array(const char *const *v, int n)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < n; i++)
        if (v[i])
            json_array_append_new(arr, json_string(v[i]));
    return arr;
}

/* The policy object of (domain, type), created when missing; NULL when full or out
 * of memory. An internationalized domain is kept in its A-label form: the report's
 * policy-domain, its Subject and the _smtp._tls lookup are all ASCII. Called locked. */
static json_t *policy_get(struct tlsrpt_agg *a, const char *domain, const char *type)
{
    char key[320], alabel[300];
    if (!idna_is_ascii(domain) && idna_to_ascii(domain, alabel, sizeof alabel, NULL, 0) == PT_OK)
        domain = alabel;
    if (snprintf(key, sizeof key, "%s %s", domain, type) >= (int)sizeof key)
        return NULL;
    json_t *p = json_object_get(a->pol, key);
    if (p || json_object_size(a->pol) >= TLSRPT_AGG_MAX_DOMAINS)
        return p;
    p = json_pack("{s:s,s:s,s:[],s:[],s:I,s:I,s:{}}", "domain", domain, "type", type,
                  "strings", "mx", "success", (json_int_t)0, "failure", (json_int_t)0,
                  "details");
    if (!p || json_object_set_new(a->pol, key, p) != 0)
        return NULL;
    return p;
}

static void add_int(json_t *o, const char *k, json_int_t n)
{
    json_object_set_new(o, k, json_integer(json_integer_value(json_object_get(o, k)) + n));
}

void tlsrpt_agg_policy(struct tlsrpt_agg *a, const char *domain, const char *type,
                       const char *const *lines, int nlines, const char *const *mx, int nmx)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    json_t *p = policy_get(a, domain, type);
    if (p && json_array_size(json_object_get(p, "strings")) == 0 && nlines > 0) {
        json_object_set_new(p, "strings", str_array(lines, nlines));
        json_object_set_new(p, "mx", str_array(mx, nmx));
        a->gen++;
    }
    pthread_mutex_unlock(&a->lock);
}

void tlsrpt_agg_success(struct tlsrpt_agg *a, const char *domain, const char *type)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    json_t *p = policy_get(a, domain, type);
    if (p) {
        add_int(p, "success", 1);
        a->gen++;
    }
    pthread_mutex_unlock(&a->lock);
}

void tlsrpt_agg_failure(struct tlsrpt_agg *a, const char *domain, const char *type,
                        const char *result_type, const char *mx_host,
                        const char *sending_ip, const char *receiving_ip, const char *reason)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    json_t *p = policy_get(a, domain, type);
    if (p) {
        add_int(p, "failure", 1);
        a->gen++;
        char key[900];
        snprintf(key, sizeof key, "%s %s %s %s %s", result_type, mx_host ? mx_host : "",
                 sending_ip ? sending_ip : "", receiving_ip ? receiving_ip : "",
                 reason ? reason : "");
        json_t *details = json_object_get(p, "details");
        json_t *d = json_object_get(details, key);
        if (!d && json_object_size(details) < TLSRPT_AGG_MAX_DETAILS) {
            d = json_pack("{s:s,s:I}", "result-type", result_type, "count", (json_int_t)0);
            if (d && mx_host)
                json_object_set_new(d, "mx", json_string(mx_host));
            if (d && sending_ip)
                json_object_set_new(d, "sip", json_string(sending_ip));
            if (d && receiving_ip)
                json_object_set_new(d, "rip", json_string(receiving_ip));
            if (d && reason)
                json_object_set_new(d, "reason", json_string(reason));
            if (d && json_object_set_new(details, key, d) != 0)
                d = NULL;
        }
        if (d)
            add_int(d, "count", 1);
    }
    pthread_mutex_unlock(&a->lock);
}

static char *dump_locked(struct tlsrpt_agg *a, int64_t start)
{
    json_t *root = json_pack("{s:i,s:I,s:O}", "version", 1, "start", (json_int_t)start,
                             "policies", a->pol);
    char *txt = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    return txt;
}

char *tlsrpt_agg_dump(struct tlsrpt_agg *a, int64_t start, uint64_t *gen)
{
    pthread_mutex_lock(&a->lock);
    char *txt = dump_locked(a, start);
    *gen = a->gen;
    pthread_mutex_unlock(&a->lock);
    return txt;
}

uint64_t tlsrpt_agg_gen(struct tlsrpt_agg *a)
{
    pthread_mutex_lock(&a->lock);
    uint64_t g = a->gen;
    pthread_mutex_unlock(&a->lock);
    return g;
}

/* Whether a loaded policy object has the shape this file writes. */
static bool policy_ok(json_t *p)
{
    if (!json_is_string(json_object_get(p, "domain")) ||
        !json_is_string(json_object_get(p, "type")) ||
        !json_is_array(json_object_get(p, "strings")) ||
        !json_is_array(json_object_get(p, "mx")) ||
        !json_is_integer(json_object_get(p, "success")) ||
        !json_is_integer(json_object_get(p, "failure")) ||
        !json_is_object(json_object_get(p, "details")))
        return false;
    const char *k;
    json_t *d;
    json_object_foreach(json_object_get(p, "details"), k, d)
        if (!json_is_string(json_object_get(d, "result-type")) ||
            !json_is_integer(json_object_get(d, "count")))
            return false;
    return true;
}

int tlsrpt_agg_load(struct tlsrpt_agg *a, const char *text, size_t len, int64_t *start)
{
    json_error_t err;
    json_t *root = json_loadb(text, len, 0, &err);
    json_t *pol = json_object_get(root, "policies");
    json_t *st = json_object_get(root, "start");
    bool ok = json_is_object(pol) && json_is_integer(st) &&
              json_integer_value(json_object_get(root, "version")) == 1 &&
              json_object_size(pol) <= TLSRPT_AGG_MAX_DOMAINS;
    const char *k;
    json_t *p;
    if (ok)
        json_object_foreach(pol, k, p)
            ok = ok && policy_ok(p);
    pthread_mutex_lock(&a->lock);
    json_decref(a->pol);
    a->pol = ok ? json_incref(pol) : json_object();
    a->gen++;
    pthread_mutex_unlock(&a->lock);
    if (ok)
        *start = (int64_t)json_integer_value(st);
    json_decref(root);
    return ok && a->pol ? PT_OK : PT_INVALID;
}

char *tlsrpt_agg_take(struct tlsrpt_agg *a, int64_t start)
{
    pthread_mutex_lock(&a->lock);
    char *txt = NULL;
    json_t *fresh = json_object_size(a->pol) ? json_object() : NULL;
    if (fresh && (txt = dump_locked(a, start)) != NULL) {
        json_decref(a->pol);
        a->pol = fresh;
        a->gen++;
    } else {
        json_decref(fresh);
    }
    pthread_mutex_unlock(&a->lock);
    return txt;
}

const char *tlsrpt_agg_result_type(const char *why, bool dane)
{
    if (!why)
        return "validation-failure";
    if (strcasestr(why, "STARTTLS"))
        return "starttls-not-supported";
    if (dane)
        return "tlsa-invalid";
    if (strcasestr(why, "expired"))
        return "certificate-expired";
    if (strcasestr(why, "mismatch") || strcasestr(why, "hostname"))
        return "certificate-host-mismatch";
    if (strcasestr(why, "self-signed") || strcasestr(why, "self signed") ||
        strcasestr(why, "issuer") || strcasestr(why, "untrusted"))
        return "certificate-not-trusted";
    return "validation-failure";
}
