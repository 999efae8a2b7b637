/* TLS-RPT reporter; see tlsrpt_send.h. The interval runs on monotonic time from
 * the saved wall-clock start (a clock jump after startup moves no report); the
 * report's date-range is wall clock, as RFC 8460 §4.4 wants.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <strings.h>
#include <uv.h>

#include "core/runtime.h"
#include "delivery/dns.h"
#include "delivery/dnsrec.h"
#include "delivery/sts_fetch.h"
#include "delivery/tlsrpt.h"
#include "delivery/tlsrpt_agg.h"
#include "delivery/tlsrpt_send.h"
#include "obs/log.h"
#include "queue/entry.h"
#include "queue/ingest.h"
#include "util/atomicfile.h"
#include "util/base64.h"
#include "util/mime.h"
#include "util/result.h"
#include "util/timeutil.h"

#define TICK_MS 1000          /* how often the counters are saved when they changed */
#define STATE_MAX (8 << 20)   /* a state file larger than this is not loaded */
#define POST_TIMEOUT_MS 30000 /* an https: rua POST (RFC 8460 §5.4) */
#define POST_TRIES 3          /* a failed POST is tried again twice, */
#define POST_RETRY_MAX_S 3600 /* after a tenth of the interval, then two tenths (at
                                 most an hour each) */

struct tlsrpt_send {
    struct runtime *rt;
    struct tlsrpt_agg *agg;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t stop;
    uv_timer_t tick;
    struct dns *dns;
    char path[1100];
    const char *org, *from, *host;
    char org_buf[256], from_buf[300];
    int64_t start;              /* wall-clock start of the interval */
    double due;                 /* time_mono() when it ends */
    uint64_t saved_gen;         /* counters' change counter at the last save */
    bool saving, resave;
    int pending;                /* reports between take and queueing */
    struct report *retrying;    /* reports waiting to POST again */
};

/* One policy domain's report, from the take to the queueing of its mails. */
struct report {
    uv_work_t work;
    struct tlsrpt_send *s;
    char domain[256];
    char id[96];
    char filename[600];
    int64_t start, end;
    struct buf gz;
    struct tlsrpt_rua rua;
    char resolve[TLSRPT_MAX_RUA][320]; /* curl RESOLVE "host:port:addr" of https rua */
    int step;                   /* the rua whose host is being resolved */
    uint16_t step_port;
    struct report *next;
    /* https POSTs that failed (bit i = rua i); a retry sends only those */
    uint32_t failed, redo;
    int tries;
    uv_timer_t retry;           /* initialized on the first retry */
    bool timer_init;
    struct report *rnext;       /* on s->retrying */
};

/* ---- the state file ---------------------------------------------------------- */

/* Writes text to s->path atomically. Worker pool. */
static int write_state(const struct tlsrpt_send *s, const char *text)
{
    struct file_part part = { text, strlen(text) };
    return file_write_atomic(s->path, &part, 1);
}

struct save_job {
    uv_work_t work;
    struct tlsrpt_send *s;
    char *text;
    int rc;
};

static void save_work(uv_work_t *w)
{
    struct save_job *j = w->data;
    j->rc = write_state(j->s, j->text);
}

static void save_start(struct tlsrpt_send *s);

static void save_done(uv_work_t *w, int status)
{
    struct save_job *j = w->data;
    struct tlsrpt_send *s = j->s;
    if (j->rc != PT_OK)
        log_error("tls-rpt: cannot write %s: %s", s->path, strerror(errno));
    free(j->text);
    free(j);
    s->saving = false;
    if (s->resave) {
        s->resave = false;
        save_start(s);
    }
}

/* Saves the counters now, or right after the save in flight. */
static void save_start(struct tlsrpt_send *s)
{
    if (s->saving) {
        s->resave = true;
        return;
    }
    struct save_job *j = calloc(1, sizeof *j);
    if (!j || !(j->text = tlsrpt_agg_dump(s->agg, s->start, &s->saved_gen))) {
        free(j);
        log_error("tls-rpt: out of memory saving the counters");
        return;
    }
    j->s = s;
    j->work.data = j;
    s->saving = true;
    if (uv_queue_work(&s->loop, &j->work, save_work, save_done) != 0) {
        s->saving = false;
        free(j->text);
        free(j);
    }
}

/* ---- building the reports (worker pool) -------------------------------------- */

static const char *const *strings_of(json_t *arr, const char **tmp, int max, int *n)
{
    *n = 0;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
        if (*n < max && json_is_string(v))
            tmp[(*n)++] = json_string_value(v);
    return tmp;
}

/* The §4 JSON of domain's policies in taken (a dump), gzip'ed into r->gz. */
static int build_report(const struct tlsrpt_send *s, json_t *policies, struct report *r)
{
    enum { MAXP = 4, MAXS = 64, MAXF = TLSRPT_AGG_MAX_DETAILS };
    struct tlsrpt_policy pol[MAXP];
    struct tlsrpt_failure fail[MAXP][MAXF];
    const char *lines[MAXP][MAXS], *mx[MAXP][MAXS];
    int n = 0;
    const char *k;
    json_t *p;
    json_object_foreach(policies, k, p) {
        if (n >= MAXP || strcmp(json_string_value(json_object_get(p, "domain")), r->domain))
            continue;
        struct tlsrpt_policy *q = &pol[n];
        memset(q, 0, sizeof *q);
        q->policy_type = json_string_value(json_object_get(p, "type"));
        q->policy_domain = r->domain;
        q->policy_string = strings_of(json_object_get(p, "strings"), lines[n], MAXS,
                                      &q->n_policy_string);
        q->mx_host = strings_of(json_object_get(p, "mx"), mx[n], MAXS, &q->n_mx_host);
        q->success = (uint64_t)json_integer_value(json_object_get(p, "success"));
        q->failure = (uint64_t)json_integer_value(json_object_get(p, "failure"));
        const char *dk;
        json_t *d;
        int nf = 0;
        json_object_foreach(json_object_get(p, "details"), dk, d) {
            if (nf >= MAXF)
                break;
            fail[n][nf++] = (struct tlsrpt_failure){
                .result_type = json_string_value(json_object_get(d, "result-type")),
                .receiving_mx_hostname = json_string_value(json_object_get(d, "mx")),
                .sending_mta_ip = json_string_value(json_object_get(d, "sip")),
                .receiving_ip = json_string_value(json_object_get(d, "rip")),
                .failure_reason_code = json_string_value(json_object_get(d, "reason")),
                .count = (uint64_t)json_integer_value(json_object_get(d, "count")),
            };
        }
        q->failures = fail[n];
        q->n_failures = nf;
        n++;
    }
    char contact[320];
    snprintf(contact, sizeof contact, "mailto:%s", s->from);
    struct buf js;
    buf_init(&js, 0);
    int rc = tlsrpt_build_json(s->org, contact, r->id, r->start, r->end, pol, n, &js);
    buf_init(&r->gz, 0);
    if (rc == PT_OK)
        rc = tlsrpt_gzip(js.data, js.len, &r->gz);
    buf_free(&js);
    return rc;
}

struct take_job {
    uv_work_t work;
    struct tlsrpt_send *s;
    char *text;
    int64_t end;
    struct report *reports;      /* built */
};

static void take_work(uv_work_t *w)
{
    struct take_job *j = w->data;
    const struct tlsrpt_send *s = j->s;
    json_error_t err;
    json_t *root = json_loads(j->text, 0, &err);
    json_t *policies = json_object_get(root, "policies");
    int64_t start = (int64_t)json_integer_value(json_object_get(root, "start"));
    const char *k;
    json_t *p;
    json_object_foreach(policies, k, p) {
        const char *domain = json_string_value(json_object_get(p, "domain"));
        bool seen = false;
        for (struct report *r = j->reports; r && !seen; r = r->next)
            seen = strcmp(r->domain, domain) == 0;
        if (seen)
            continue;
        struct report *r = calloc(1, sizeof *r);
        if (!r) {
            log_error("tls-rpt: out of memory building the report of %s", domain);
            continue;
        }
        r->s = j->s;
        snprintf(r->domain, sizeof r->domain, "%s", domain);
        r->start = start;
        r->end = j->end;
        char eid[ENTRY_ID_LEN + 1];
        entry_new_id(eid);
        snprintf(r->id, sizeof r->id, "%" PRId64 ".%s@%s", start, eid, s->host);
        const char *at = strrchr(s->from, '@');
        if (build_report(s, policies, r) != PT_OK ||
            tlsrpt_filename(at ? at + 1 : s->host, domain, start, j->end, eid, r->filename,
                            sizeof r->filename) != PT_OK) {
            log_error("tls-rpt: cannot build the report of %s", domain);
            buf_free(&r->gz);
            free(r);
            continue;
        }
        r->next = j->reports;
        j->reports = r;
    }
    json_decref(root);
}

/* The mail of report r to rua address to (RFC 8460 §5.3). */
static int build_mail(const struct tlsrpt_send *s, const struct report *r, const char *to,
                      struct buf *out)
{
    struct bufw w = { out, PT_OK };
    char date[64];
    time_rfc5322(time_now(), date, sizeof date);
    bufw_printf(&w, "From: <%s>\r\nTo: <%s>\r\nDate: %s\r\n", s->from, to, date);
    bufw_printf(&w, "Subject: Report Domain: %s Submitter: %s\r\n Report-ID: <%s>\r\n",
                r->domain, s->org, r->id);
    bufw_printf(&w, "Message-ID: <%s>\r\n", r->id);
    bufw_printf(&w, "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n", r->domain,
                s->org);
    bufw_puts(&w, "MIME-Version: 1.0\r\n");
    /* base64 and the fixed text never contain "=_": the boundary cannot clash */
    char boundary[80];
    snprintf(boundary, sizeof boundary, "=_petrel_tlsrpt_%" PRId64, r->start);
    mime_multipart_begin(&w, "report", "report-type=\"tlsrpt\"", boundary,
                         "This is a MIME-formatted message.");
    bufw_puts(&w, "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
    bufw_printf(&w, "This is an aggregate TLS report (RFC 8460) from %s\r\n"
                "for the policy domain %s.\r\n\r\n", s->org, r->domain);
    mime_multipart_next(&w, boundary);
    bufw_puts(&w, "Content-Type: application/tlsrpt+gzip\r\n"
                  "Content-Transfer-Encoding: base64\r\n");
    bufw_printf(&w, "Content-Disposition: attachment;\r\n\tfilename=\"%s\"\r\n\r\n",
                r->filename);
    base64_put(&w, r->gz.data, r->gz.len, 76);
    bufw_puts(&w, "\r\n");
    mime_multipart_end(&w, boundary);
    return w.rc;
}

static void queued(void *arg, int status)
{
    if (status != PT_OK)
        log_error("tls-rpt: could not queue a report");
}

/* The host and port of an https: URI (no user info); PT_OK or PT_INVALID. */
static int https_host(const char *uri, char *host, size_t hostlen, uint16_t *port)
{
    const char *a = uri + 8, *end = a + strcspn(a, "/?#");
    if (memchr(a, '@', (size_t)(end - a)) || end == a)
        return PT_INVALID;
    const char *h = a, *he, *colon;
    if (*a == '[') {
        h = a + 1;
        he = memchr(h, ']', (size_t)(end - h));
        if (!he)
            return PT_INVALID;
        colon = he + 1 < end && he[1] == ':' ? he + 1 : NULL;
    } else {
        colon = memchr(a, ':', (size_t)(end - a));
        he = colon ? colon : end;
    }
    *port = 443;
    if (colon) {
        char *e;
        long v = strtol(colon + 1, &e, 10);
        if (e != end || v < 1 || v > 65535)
            return PT_INVALID;
        *port = (uint16_t)v;
    }
    if (he == h || (size_t)(he - h) >= hostlen)
        return PT_INVALID;
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = '\0';
    return PT_OK;
}

static bool ip_literal(const char *host)
{
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    return size * n;
}

/* RFC 8460 §5.4: the gzip'ed report POSTed as application/tlsrpt+gzip, the server
 * verified against configure_delivery.ca_file (or the system store). Worker pool. */
static bool post_https(const struct tlsrpt_send *s, const struct report *r, const char *uri,
                       const char *resolve)
{
    bool ok = false;
    sts_fetch_global_init();
    char ebuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/tlsrpt+gzip");
    struct curl_slist *res = resolve[0] ? curl_slist_append(NULL, resolve) : NULL;
    CURL *c = hdr && (!resolve[0] || res)
                  ? sts_https_handle(uri, res, s->rt->cfg->delivery.dflt.ca_file,
                                     POST_TIMEOUT_MS, ebuf)
                  : NULL;
    if (!c) {
        log_error("tls-rpt %s: out of memory posting the report to %s", r->domain, uri);
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->gz.data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->gz.len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "petrel-tls-rpt");
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK)
        log_warn("tls-rpt %s: POST of report %s to %s failed: %s", r->domain, r->id, uri,
                 ebuf[0] ? ebuf : curl_easy_strerror(rc));
    else if (status / 100 != 2)
        log_warn("tls-rpt %s: POST of report %s to %s: HTTP %ld", r->domain, r->id, uri,
                 status);
    else
        log_info("tls-rpt %s: report %s posted to %s (HTTP %ld)", r->domain, r->id, uri,
                 status);
    ok = rc == CURLE_OK && status / 100 == 2;
out:
    curl_slist_free_all(hdr);
    curl_slist_free_all(res);
    if (c)
        curl_easy_cleanup(c);
    return ok;
}

/* Sends r to each rua: mail for mailto:, a POST for https:. Worker pool. */
static void send_work(uv_work_t *w)
{
    struct report *r = w->data;
    const struct tlsrpt_send *s = r->s;
    uint32_t only = r->redo;         /* a retry: those POSTs only, no mail again */
    r->failed = 0;
    for (int i = 0; i < r->rua.n; i++) {
        const char *uri = r->rua.uri[i];
        if (only && !(only & (1u << i)))
            continue;
        if (strncasecmp(uri, "https://", 8) == 0) {
            char host[256];
            uint16_t port;
            if (https_host(uri, host, sizeof host, &port) != PT_OK)
                log_warn("tls-rpt %s: rua %s is not a usable https URI; skipped", r->domain,
                         uri);
            else if (!ip_literal(host) && !r->resolve[i][0])
                log_warn("tls-rpt %s: rua %s: %s has no address; skipped", r->domain, uri,
                         host);
            else if (!post_https(s, r, uri, r->resolve[i]))
                r->failed |= 1u << i;
            continue;
        }
        if (strncasecmp(uri, "mailto:", 7) != 0)
            continue;
        char to[TLSRPT_URI_MAX];
        snprintf(to, sizeof to, "%s", uri + 7);
        to[strcspn(to, "?")] = '\0';   /* RFC 6068 headers (?subject=) are not ours */
        if (strpbrk(to, "<>\"(),;:\\[]") || !strchr(to, '@')) {
            log_warn("tls-rpt %s: rua %s is not a usable address; skipped", r->domain, uri);
            continue;
        }
        struct buf msg;
        buf_init(&msg, 0);
        if (build_mail(s, r, to, &msg) == PT_OK) {
            const char *rcpts[1] = { to };
            struct ingest_msg m = {
                .sender = s->from, .rcpts = rcpts, .nrcpt = 1,
                .content = msg.data, .content_len = msg.len, .protocol = PROTO_SMTP,
                .priority = PRIO_NORMAL, .flags = ENTRY_F_DSN, .received_at = time_now(),
            };
            entry_new_id(m.id);
            if (ingest_submit(s->rt, &m, queued, NULL) == PT_OK)
                log_info("tls-rpt %s: report %s queued as %s to <%s>", r->domain, r->id,
                         m.id, to);
            else
                log_error("tls-rpt %s: could not queue the report to <%s>", r->domain, to);
        } else {
            log_error("tls-rpt %s: out of memory building the report mail", r->domain);
        }
        buf_free(&msg);
    }
}

static void report_freed(uv_handle_t *h)
{
    struct report *r = h->data;
    buf_free(&r->gz);
    free(r);
}

static void report_free(struct report *r)
{
    if (r->timer_init) {
        uv_close((uv_handle_t *)&r->retry, report_freed);
        return;
    }
    buf_free(&r->gz);
    free(r);
}

static void send_done(uv_work_t *w, int status);

static void on_retry(uv_timer_t *t)
{
    struct report *r = t->data;
    struct tlsrpt_send *s = r->s;
    struct report **pp = &s->retrying;
    while (*pp && *pp != r)
        pp = &(*pp)->rnext;
    if (*pp)
        *pp = r->rnext;
    if (uv_queue_work(&s->loop, &r->work, send_work, send_done) != 0) {
        log_error("tls-rpt %s: cannot post report %s again; it is lost", r->domain, r->id);
        s->pending--;
        report_free(r);
    }
}

static void send_done(uv_work_t *w, int status)
{
    struct report *r = w->data;
    struct tlsrpt_send *s = r->s;
    if (r->failed && status == 0 && r->tries + 1 < POST_TRIES && s->dns) {
        double d = s->rt->cfg->delivery.tls_rpt_interval / 10.0 * (r->tries + 1);
        uint64_t ms = (uint64_t)((d < POST_RETRY_MAX_S ? d : POST_RETRY_MAX_S) * 1000.0);
        if (!r->timer_init) {
            uv_timer_init(&s->loop, &r->retry);
            r->retry.data = r;
            r->timer_init = true;
        }
        r->tries++;
        r->redo = r->failed;
        r->rnext = s->retrying;
        s->retrying = r;
        log_info("tls-rpt %s: report %s: POST tried again in %.0f s", r->domain, r->id,
                 (double)ms / 1000.0);
        uv_timer_start(&r->retry, on_retry, ms, 0);
        return;                      /* still pending */
    }
    if (r->failed)
        log_warn("tls-rpt %s: report %s: POST failed %d time(s); given up", r->domain, r->id,
                 r->tries + 1);
    s->pending--;
    report_free(r);
}

/* ---- rua lookup (loop) --------------------------------------------------------- */

static void resolve_next(struct report *r);

static void on_rua_host(void *arg, const struct dns_result *res)
{
    struct report *r = arg;
    if (res->status == DNS_OK && res->nhosts > 0 && res->hosts[0].naddr > 0) {
        char ip[64], host[256];
        uint16_t port;
        const struct sockaddr_storage *ss = &res->hosts[0].addrs[0];
        if (ss->ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof ip);
        else
            inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof ip);
        if (https_host(r->rua.uri[r->step], host, sizeof host, &port) == PT_OK)
            snprintf(r->resolve[r->step], sizeof r->resolve[r->step],
                     ss->ss_family == AF_INET6 ? "%s:%u:[%s]" : "%s:%u:%s", host,
                     (unsigned)port, ip);
    }
    r->step++;
    resolve_next(r);
}

/* Resolves the host of each https: rua through petrel's resolver (libcurl gets the
 * address, never its own lookup), then queues the sending. */
static void resolve_next(struct report *r)
{
    struct tlsrpt_send *s = r->s;
    if (!s->dns) {                      /* stopping */
        s->pending--;
        report_free(r);
        return;
    }
    for (; r->step < r->rua.n; r->step++) {
        const char *u = r->rua.uri[r->step];
        char host[256];
        uint16_t port;
        if (strncasecmp(u, "https://", 8) != 0 ||
            https_host(u, host, sizeof host, &port) != PT_OK || ip_literal(host))
            continue;
        dns_resolve_host(s->dns, host, on_rua_host, r);
        return;
    }
    r->work.data = r;
    if (uv_queue_work(&s->loop, &r->work, send_work, send_done) != 0) {
        s->pending--;
        report_free(r);
    }
}

static void on_rua(void *arg, const unsigned char *abuf, int alen)
{
    struct report *r = arg;
    struct tlsrpt_send *s = r->s;
    struct dnsrec_set set;
    int found = 0, valid = 0;
    if (abuf && dnsrec_parse(abuf, alen, DNSREC_TYPE_TXT, &set) == PT_OK &&
        set.rcode == DNSREC_NOERROR) {
        char txt[4096];
        for (int i = 0; i < set.n; i++) {
            size_t tn;
            struct tlsrpt_rua one;
            if (dnsrec_txt_join(abuf + set.rr[i].off, set.rr[i].len, txt, sizeof txt, &tn) !=
                PT_OK)
                continue;
            int rc = tlsrpt_parse_txt(txt, tn, &one);
            if (rc == PT_NOTFOUND)
                continue;
            found++;
            if (rc == PT_OK) {
                valid++;
                r->rua = one;
            }
        }
    }
    /* §3: exactly one TLSRPTv1 record with a usable rua, else no report */
    if (found != 1 || valid != 1) {
        log_warn("tls-rpt %s: _smtp._tls.%s has %s: no report sent", r->domain, r->domain,
                 !abuf ? "no answer" : found == 0 ? "no TLSRPTv1 record"
                 : found > 1 ? "more than one TLSRPTv1 record"
                             : "no valid TLSRPTv1 record with a usable rua");
        s->pending--;
        report_free(r);
        return;
    }
    r->step = 0;
    resolve_next(r);
}

static void take_done(uv_work_t *w, int status)
{
    struct take_job *j = w->data;
    struct tlsrpt_send *s = j->s;
    s->pending--;
    for (struct report *r = j->reports, *next; r; r = next) {
        next = r->next;
        char name[300];
        snprintf(name, sizeof name, "_smtp._tls.%s", r->domain);
        if (!s->dns) {
            report_free(r);
            continue;
        }
        s->pending++;
        dns_query_raw(s->dns, name, DNSREC_TYPE_TXT, on_rua, r);
    }
    free(j->text);
    free(j);
}

/* The interval is over: take its counters, start the next one and report. */
static void interval_end(struct tlsrpt_send *s)
{
    int64_t now = (int64_t)time_now();
    char *text = tlsrpt_agg_take(s->agg, s->start);
    int64_t start = s->start;
    s->start = now > start ? now : start + 1;
    s->due = time_mono() + s->rt->cfg->delivery.tls_rpt_interval;
    save_start(s);
    if (!text) {
        log_debug("tls-rpt: nothing to report for %" PRId64 "..%" PRId64, start, now);
        return;
    }
    struct take_job *j = calloc(1, sizeof *j);
    if (!j) {
        free(text);
        log_error("tls-rpt: out of memory: the reports of this interval are lost");
        return;
    }
    j->s = s;
    j->text = text;
    j->end = s->start;
    j->work.data = j;
    s->pending++;
    if (uv_queue_work(&s->loop, &j->work, take_work, take_done) != 0) {
        s->pending--;
        free(text);
        free(j);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct tlsrpt_send *s = t->data;
    if (time_mono() >= s->due)
        interval_end(s);
    else if (tlsrpt_agg_gen(s->agg) != s->saved_gen)
        save_start(s);
}

static void on_stop(uv_async_t *a)
{
    struct tlsrpt_send *s = a->data;
    uv_timer_stop(&s->tick);
    uv_close((uv_handle_t *)&s->tick, NULL);
    uv_close((uv_handle_t *)&s->stop, NULL);
    while (s->retrying) {           /* waiting to POST again: not sent */
        struct report *r = s->retrying;
        s->retrying = r->rnext;
        uv_timer_stop(&r->retry);
        log_warn("tls-rpt %s: stopping: report %s is not posted again", r->domain, r->id);
        s->pending--;
        report_free(r);
    }
    if (s->pending)
        log_warn("tls-rpt: stopping with %d report(s) not yet queued; they are lost",
                 s->pending);
    struct dns *d = s->dns;
    s->dns = NULL;
    dns_free(d);
}

static void *thread_main(void *arg)
{
    struct tlsrpt_send *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    runtime_gen_thread_done();
    return NULL;
}

/* ---- start / stop ----------------------------------------------------------------- */

static void load_state(struct tlsrpt_send *s)
{
    s->start = (int64_t)time_now();
    FILE *f = fopen(s->path, "r");
    if (!f)
        return;
    struct buf b;
    buf_init(&b, STATE_MAX);
    char chunk[8192];
    size_t n;
    int rc = PT_OK;
    while (rc == PT_OK && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = buf_append(&b, chunk, n);
    fclose(f);
    int64_t start = 0;
    if (rc != PT_OK || tlsrpt_agg_load(s->agg, b.data ? b.data : "", b.len, &start) != PT_OK)
        log_warn("tls-rpt: %s is not a valid state file; counting from zero", s->path);
    else
        s->start = start;
    buf_free(&b);
}

struct tlsrpt_send *tlsrpt_send_start(struct runtime *rt, char *err, size_t errlen)
{
    const struct config *cfg = rt->cfg;
    err[0] = '\0';
    if (!cfg->delivery.tls_rpt)
        return NULL;
    struct tlsrpt_send *s = calloc(1, sizeof *s);
    if (!s || !(s->agg = tlsrpt_agg_new())) {
        free(s);
        snprintf(err, errlen, "tls-rpt: out of memory");
        return NULL;
    }
    s->rt = rt;
    s->host = cfg->delivery.helo_name ? cfg->delivery.helo_name : rt->hostname;
    snprintf(s->org_buf, sizeof s->org_buf, "%s", cfg->delivery.tls_rpt_org ?
             cfg->delivery.tls_rpt_org : s->host);
    snprintf(s->from_buf, sizeof s->from_buf, "%s", cfg->delivery.tls_rpt_from ?
             cfg->delivery.tls_rpt_from : "");
    if (!s->from_buf[0])
        snprintf(s->from_buf, sizeof s->from_buf, "postmaster@%s", s->host);
    s->org = s->org_buf;
    s->from = s->from_buf;
    char dir[1040];
    snprintf(dir, sizeof dir, "%s/tls-rpt", cfg->queue.spool_dir);
    snprintf(s->path, sizeof s->path, "%s/state.json", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "tls-rpt: cannot create %s: %s", dir, strerror(errno));
        goto fail;
    }
    load_state(s);
    double left = (double)s->start + cfg->delivery.tls_rpt_interval - time_now();
    s->due = time_mono() + (left > 0 ? left : 0);
    s->saved_gen = tlsrpt_agg_gen(s->agg);
    if (uv_loop_init(&s->loop) != 0) {
        snprintf(err, errlen, "tls-rpt: cannot create its loop");
        goto fail;
    }
    s->dns = dns_new(&s->loop, (const char *const *)cfg->dns_resolvers, cfg->n_dns_resolvers,
                     err, errlen);
    if (!s->dns) {
        uv_loop_close(&s->loop);
        goto fail;
    }
    uv_async_init(&s->loop, &s->stop, on_stop);
    s->stop.data = s;
    uv_timer_init(&s->loop, &s->tick);
    s->tick.data = s;
    uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
    rt->tlsrpt = s->agg;
    if (pthread_create(&s->thread, NULL, thread_main, s) != 0) {
        rt->tlsrpt = NULL;
        snprintf(err, errlen, "tls-rpt: cannot start its thread");
        goto fail;   /* the loop's handles leak with the failed start: we exit */
    }
    log_info("tls-rpt: reports every %.0f s from <%s>; next in %.0f s",
             cfg->delivery.tls_rpt_interval, s->from, left > 0 ? left : 0);
    return s;
fail:
    tlsrpt_agg_free(s->agg);
    free(s);
    return NULL;
}

void tlsrpt_send_stop(struct tlsrpt_send *s)
{
    if (!s)
        return;
    uv_async_send(&s->stop);
    pthread_join(s->thread, NULL);
    uv_loop_close(&s->loop);
    uint64_t gen;
    char *text = tlsrpt_agg_dump(s->agg, s->start, &gen);
    if (!text || write_state(s, text) != PT_OK)
        log_error("tls-rpt: cannot save the counters to %s", s->path);
    free(text);
    s->rt->tlsrpt = NULL;
    tlsrpt_agg_free(s->agg);
    free(s);
}
