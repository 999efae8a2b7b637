/* TLS-RPT record parser, report builder and gzip; see tlsrpt.h.
 * SPDX-License-Identifier: Apache-2.0 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <zlib.h>

#include "delivery/tlsrpt.h"
#include "util/result.h"

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

int tlsrpt_parse_txt(const char *txt, size_t len, struct tlsrpt_rua *out)
{
    static const char ver[] = "v=TLSRPTv1";
    out->n = 0;
    if (len < sizeof ver - 1 || memcmp(txt, ver, sizeof ver - 1) != 0)
        return PT_NOTFOUND;
    size_t i = sizeof ver - 1;
    bool have_rua = false;
    while (i < len) {
        while (i < len && is_wsp(txt[i]))
            i++;
        if (i >= len)
            break;
        if (txt[i] != ';')
            return PT_INVALID;
        i++;
        while (i < len && is_wsp(txt[i]))
            i++;
        if (i >= len)
            break;
        size_t fs = i;
        while (i < len && txt[i] != ';')
            i++;
        size_t fe = i;
        while (fe > fs && is_wsp(txt[fe - 1]))
            fe--;
        const char *eq = memchr(txt + fs, '=', fe - fs);
        if (!eq || eq == txt + fs)
            return PT_INVALID;
        size_t nlen = (size_t)(eq - (txt + fs));
        if (nlen != 3 || memcmp(txt + fs, "rua", 3) != 0)
            continue;                 /* extensions are ignored */
        if (have_rua)
            return PT_INVALID;
        have_rua = true;
        const char *v = eq + 1, *end = txt + fe;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *ue = comma ? comma : end;
            const char *us = v;
            while (us < ue && is_wsp(*us))
                us++;
            const char *ut = ue;
            while (ut > us && is_wsp(ut[-1]))
                ut--;
            size_t ul = (size_t)(ut - us);
            for (size_t k = 0; k < ul; k++)
                if ((unsigned char)us[k] <= 0x20 || (unsigned char)us[k] >= 0x7f)
                    return PT_INVALID;
            bool ok = (ul > 7 && strncasecmp(us, "mailto:", 7) == 0 && memchr(us, '@', ul)) ||
                      (ul > 8 && strncasecmp(us, "https://", 8) == 0);
            if (ok && ul < TLSRPT_URI_MAX && out->n < TLSRPT_MAX_RUA) {
                memcpy(out->uri[out->n], us, ul);
                out->uri[out->n][ul] = '\0';
                out->n++;
            }
            v = comma ? comma + 1 : end;
        }
    }
    return have_rua && out->n > 0 ? PT_OK : PT_INVALID;
}

static void rfc3339(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *str_array(const char *const *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        if (v[i] && json_array_append_new(a, json_string(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static int set_opt(json_t *o, const char *k, const char *v)
{
    return v ? json_object_set_new(o, k, json_string(v)) : 0;
}

int tlsrpt_build_json(const char *org, const char *contact, const char *report_id,
                      int64_t start, int64_t end, const struct tlsrpt_policy *p, int n,
                      struct buf *out)
{
    if (!org || !contact || !report_id || (n > 0 && !p))
        return PT_INVALID;
    for (int i = 0; i < n; i++)
        if (!p[i].policy_type || !p[i].policy_domain)
            return PT_INVALID;
    char s[32], e[32];
    rfc3339(start, s);
    rfc3339(end, e);
    json_t *root = json_object(), *policies = json_array();
    int bad = !root || !policies;
    bad |= set_opt(root, "organization-name", org);
    bad |= json_object_set_new(root, "date-range",
                               json_pack("{s:s,s:s}", "start-datetime", s, "end-datetime", e));
    bad |= set_opt(root, "contact-info", contact);
    bad |= set_opt(root, "report-id", report_id);
    for (int i = 0; !bad && i < n; i++) {
        const struct tlsrpt_policy *q = &p[i];
        json_t *pol = json_object(), *item = json_object(), *fails = json_array();
        bad |= !pol || !item || !fails;
        bad |= set_opt(pol, "policy-type", q->policy_type);
        if (q->n_policy_string > 0)
            bad |= json_object_set_new(pol, "policy-string",
                                       str_array(q->policy_string, q->n_policy_string));
        bad |= set_opt(pol, "policy-domain", q->policy_domain);
        if (q->n_mx_host > 0)
            bad |= json_object_set_new(pol, "mx-host", str_array(q->mx_host, q->n_mx_host));
        bad |= json_object_set_new(item, "policy", pol);
        bad |= json_object_set_new(item, "summary",
                                   json_pack("{s:I,s:I}", "total-successful-session-count",
                                             (json_int_t)q->success,
                                             "total-failure-session-count",
                                             (json_int_t)q->failure));
        for (int k = 0; !bad && k < q->n_failures; k++) {
            const struct tlsrpt_failure *f = &q->failures[k];
            json_t *fd = json_object();
            bad |= !fd || !f->result_type;
            if (bad) {
                json_decref(fd);
                break;
            }
            bad |= set_opt(fd, "result-type", f->result_type);
            bad |= set_opt(fd, "sending-mta-ip", f->sending_mta_ip);
            bad |= set_opt(fd, "receiving-mx-hostname", f->receiving_mx_hostname);
            bad |= set_opt(fd, "receiving-ip", f->receiving_ip);
            bad |= json_object_set_new(fd, "failed-session-count",
                                       json_integer((json_int_t)f->count));
            bad |= set_opt(fd, "failure-reason-code", f->failure_reason_code);
            bad |= json_array_append_new(fails, fd);
        }
        if (q->n_failures > 0)
            bad |= json_object_set_new(item, "failure-details", fails);
        else
            json_decref(fails);
        bad |= json_array_append_new(policies, item);
    }
    if (!bad)
        bad |= json_object_set_new(root, "policies", policies);
    else
        json_decref(policies);
    char *txt = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!txt)
        return bad ? PT_INVALID : PT_NOMEM;
    int rc = buf_appends(out, txt);
    free(txt);
    return rc;
}

int tlsrpt_gzip(const void *in, size_t len, struct buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return PT_NOMEM;
    uLong bound = deflateBound(&z, (uLong)len);
    if (buf_reserve(out, bound + 32) != PT_OK) {
        deflateEnd(&z);
        return PT_NOMEM;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out->data + out->len;
    z.avail_out = (uInt)(bound + 32);
    int rc = deflate(&z, Z_FINISH);
    if (rc != Z_STREAM_END) {
        deflateEnd(&z);
        return PT_ERROR;
    }
    out->len += z.total_out;
    out->data[out->len] = '\0';
    deflateEnd(&z);
    return PT_OK;
}

int tlsrpt_filename(const char *sender_domain, const char *policy_domain, int64_t start,
                    int64_t end, const char *id, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s!%s!%" PRId64 "!%" PRId64 "!%s.json.gz", sender_domain,
                     policy_domain, start, end, id);
    return n < 0 || (size_t)n >= outlen ? PT_TOOLONG : PT_OK;
}
