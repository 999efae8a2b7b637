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

#include <jansson.h>
#include <uv.h>

#include "core/runtime.h"
#include "delivery/dns.h"
#include "delivery/dnsrec.h"
#include "delivery/tlsrpt.h"
#include "delivery/tlsrpt_agg.h"
#include "delivery/tlsrpt_send.h"
#include "obs/log.h"
#include "queue/entry.h"
#include "queue/ingest.h"
#include "util/base64.h"
#include "util/mime.h"
#include "util/result.h"
#include "util/timeutil.h"

#define TICK_MS 1000          /* how often the counters are saved when they changed */
#define STATE_MAX (8 << 20)   /* a state file larger than this is not loaded */

struct tlsrpt_send {
    struct runtime *rt;
    struct tlsrpt_agg *agg;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t stop;
    uv_timer_t tick;
    struct dns *dns;
    char path[1100], tmp[1110];
    const char *org, *from, *host;
    char org_buf[256], from_buf[300];
    int64_t start;              /* wall-clock start of the interval */
    double due;                 /* time_mono() when it ends */
    uint64_t saved_gen;         /* counters' change counter at the last save */
    bool saving, resave;
    int pending;                /* reports between take and queueing */
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
    struct report *next;
};

/* ---- the state file ---------------------------------------------------------- */

/* Writes text to s->path atomically (temp file, fsync, rename). Worker pool. */
static int write_state(const struct tlsrpt_send *s, const char *text)
{
    int fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return PT_ERROR;
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return PT_ERROR;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        return PT_ERROR;
    return rename(s->tmp, s->path) == 0 ? PT_OK : PT_ERROR;
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

/* Queues r's mail to each mailto: rua. Worker pool. */
static void send_work(uv_work_t *w)
{
    struct report *r = w->data;
    const struct tlsrpt_send *s = r->s;
    for (int i = 0; i < r->rua.n; i++) {
        const char *uri = r->rua.uri[i];
        if (strncasecmp(uri, "mailto:", 7) != 0) {
            log_warn("tls-rpt %s: rua %s: only mailto: reports are supported; skipped",
                     r->domain, uri);
            continue;
        }
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
                .content = msg.data, .content_len = msg.len, .protocol = 0,
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

static void report_free(struct report *r)
{
    buf_free(&r->gz);
    free(r);
}

static void send_done(uv_work_t *w, int status)
{
    struct report *r = w->data;
    r->s->pending--;
    report_free(r);
}

/* ---- rua lookup (loop) --------------------------------------------------------- */

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
    r->work.data = r;
    if (uv_queue_work(&s->loop, &r->work, send_work, send_done) != 0) {
        s->pending--;
        report_free(r);
    }
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
    snprintf(s->tmp, sizeof s->tmp, "%s/state.json.tmp", dir);
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
