/* Outbound TLS policy agent; see tlspol.h. A check runs the MTA-STS lookup of the
 * domain and the TLSA lookups of its MX hosts in parallel and decides when the last
 * one is back. The MTA-STS state of a domain lives in one sts_ent: checks of a
 * domain whose TXT/fetch is in flight wait on it. Disk reads, writes and the HTTPS
 * fetch run on the libuv worker pool, never on the loop.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "delivery/dnsrec.h"
#include "delivery/sts_fetch.h"
#include "delivery/tlspol.h"
#include "obs/log.h"
#include "util/atomicfile.h"
#include "util/buf.h"
#include "util/result.h"

/* Tunables: every default in one place. */
#define STS_TXT_RECHECK_MS 60000   /* a domain's _mta-sts TXT is asked again after this */
#define STS_MAX_DOMAINS 10000      /* MTA-STS states kept per delivery thread */

struct tlspol_req;

struct sts_ent {
    struct sts_ent *next;
    struct tlspol *tp;
    bool busy;                     /* TXT query, address lookup or worker in flight */
    bool disk_checked;             /* the cache file was read once */
    bool have;                     /* a policy is known (maybe expired) */
    char id[MTASTS_ID_MAX + 1];
    int64_t fetched;               /* wall clock, s */
    struct mtasts_policy pol;
    uint64_t txt_checked;          /* loop time, ms */
    char txt_id[MTASTS_ID_MAX + 1]; /* of the lookup in flight; "" = no valid record */
    char ip[64];                   /* of mta-sts.DOMAIN for the fetch; "" = none */
    const char *rpt_error;         /* the last fetch failed (TLS-RPT result-type) and
                                      no valid policy is known; NULL otherwise */
    struct tlspol_req *waiters;
    char domain[256];
};

struct tlsa_slot {
    struct tlspol_req *req;
    int i;
};

struct tlspol_req {
    struct tlspol *tp;
    struct tlspol_req *next_waiter;
    tlspol_cb cb;
    void *arg;
    int pending;
    bool have_pol;
    struct mtasts_policy pol;
    const char *sts_error;         /* a policy is published but could not be had (TLS-RPT) */
    struct dns_result mx;
    struct dane_host *dane;        /* mx.nhosts of them, NULL without DANE */
    struct tlsa_slot slots[DNS_MAX_HOSTS];
    char domain[256];
};

struct tlspol {
    uv_loop_t *loop;
    struct dns *dns;
    const struct config *cfg;
    char *cache_dir;               /* spool_dir/mta-sts */
    struct sts_ent *ents;
    int nents;
    int refs;                      /* 1 (the owner) + callbacks owed to us */
    bool closing;
    atomic_bool stop;              /* read by fetches on worker threads */
};

/* A worker job: disk cache, then the fetch when the TXT id says so. */
struct sts_job {
    uv_work_t work;
    struct sts_ent *e;
    /* in */
    char domain[256], txt_id[MTASTS_ID_MAX + 1], ip[64], ca_file[1024], dir[1024];
    bool disk_check;
    atomic_bool *stop;
    /* in and out */
    bool have;
    char id[MTASTS_ID_MAX + 1];
    int64_t fetched;
    struct mtasts_policy pol;
    /* out */
    char note[600];                /* what happened, for the log */
    bool note_warn;
    const char *rpt_error;         /* TLS-RPT result-type of a failed fetch, or NULL */
};

static void req_step_done(struct tlspol_req *r);

static void tp_unref(struct tlspol *tp)
{
    if (--tp->refs > 0)
        return;
    while (tp->ents) {
        struct sts_ent *n = tp->ents->next;
        free(tp->ents);
        tp->ents = n;
    }
    free(tp->cache_dir);
    free(tp);
}

bool tlspol_enabled(const struct config *cfg)
{
    return cfg->delivery.mta_sts || cfg->delivery.dane;
}

struct tlspol *tlspol_new(uv_loop_t *loop, struct dns *dns, const struct config *cfg)
{
    struct tlspol *tp = calloc(1, sizeof *tp);
    if (!tp)
        return NULL;
    size_t n = strlen(cfg->queue.spool_dir) + sizeof "/mta-sts";
    if (!(tp->cache_dir = malloc(n))) {
        free(tp);
        return NULL;
    }
    snprintf(tp->cache_dir, n, "%s/mta-sts", cfg->queue.spool_dir);
    tp->loop = loop;
    tp->dns = dns;
    tp->cfg = cfg;
    tp->refs = 1;
    atomic_init(&tp->stop, false);
    sts_fetch_global_init();
    if (cfg->delivery.dane && !dns_trusted(dns))
        log_warn("configure_delivery: dane = true, but configure_dns has no resolvers: the "
                 "AD bit of resolv.conf's resolvers is not trusted, so DANE never applies");
    return tp;
}

void tlspol_free(struct tlspol *tp)
{
    if (!tp || tp->closing)
        return;
    tp->closing = true;
    atomic_store(&tp->stop, true);
    tp_unref(tp);
}

static int64_t wall_now(void)
{
    return (int64_t)time(NULL);
}

static bool sts_valid(const struct sts_ent *e)
{
    return e->have && e->fetched + (int64_t)e->pol.max_age >= wall_now();
}

/* ---- worker side (no loop, no struct tlspol) -------------------------------------- */

static void cache_path(const struct sts_job *j, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", j->dir, j->domain);
}

static void job_read_disk(struct sts_job *j)
{
    char path[1400];
    cache_path(j, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    static const size_t cap = MTASTS_POLICY_MAX + 200;
    char *b = malloc(cap);
    ssize_t got = 0, r;
    while (b && (size_t)got < cap && (r = read(fd, b + got, cap - (size_t)got)) > 0)
        got += r;
    close(fd);
    if (!b)
        return;
    char id[MTASTS_ID_MAX + 1];
    int64_t fetched;
    struct mtasts_policy pol;
    if (mtasts_cache_parse(b, (size_t)got, id, &fetched, &pol) == PT_OK &&
        (!j->have || fetched > j->fetched)) {
        j->have = true;
        memcpy(j->id, id, sizeof id);
        j->fetched = fetched;
        j->pol = pol;
    }
    free(b);
}

static void job_write_disk(struct sts_job *j, const char *body, size_t len)
{
    char path[1400], head[128];
    if (mkdir(j->dir, 0700) != 0 && errno != EEXIST)
        return;
    cache_path(j, path, sizeof path);
    if (mtasts_cache_header(j->id, j->fetched, head, sizeof head) != PT_OK)
        return;
    struct file_part parts[2] = { { head, strlen(head) }, { body, len } };
    (void)file_write_atomic(path, parts, 2);
}

static void job_run(uv_work_t *w)
{
    struct sts_job *j = w->data;
    if (j->disk_check)
        job_read_disk(j);
    bool valid = j->have && j->fetched + (int64_t)j->pol.max_age >= wall_now();
    if (!j->txt_id[0] ||
        mtasts_decide(j->txt_id, valid ? j->id : NULL) != MTASTS_FETCH)
        return;
    if (!j->ip[0]) {
        snprintf(j->note, sizeof j->note, "no address for mta-sts.%s", j->domain);
        j->note_warn = true;
        j->rpt_error = "sts-policy-fetch-error";
        return;
    }
    struct buf body;
    buf_init(&body, MTASTS_POLICY_MAX + 1);
    char err[500] = "";
    int rc = sts_fetch(j->domain, j->ip, j->ca_file[0] ? j->ca_file : NULL, j->stop, &body,
                       err, sizeof err);
    struct mtasts_policy pol;
    char why[160] = "";
    if (rc == PT_OK &&
        mtasts_parse_policy(body.data ? body.data : "", body.len, &pol, why, sizeof why) != PT_OK) {
        snprintf(err, sizeof err, "https://mta-sts.%s/.well-known/mta-sts.txt: policy not "
                 "valid: %s", j->domain, why);
        rc = PT_INVALID;
    }
    if (rc != PT_OK) {
        snprintf(j->note, sizeof j->note, "policy fetch failed: %s", err);
        j->note_warn = true;
        j->rpt_error = rc == PT_INVALID ? "sts-policy-invalid"
                     : strcasestr(err, "certificate") ? "sts-webpki-invalid"
                                                      : "sts-policy-fetch-error";
        buf_free(&body);
        return;
    }
    j->have = true;
    memcpy(j->id, j->txt_id, sizeof j->id);
    j->fetched = wall_now();
    j->pol = pol;
    job_write_disk(j, body.data, body.len);
    snprintf(j->note, sizeof j->note, "policy fetched: id %s, mode %s, max_age %u, %d mx",
             j->id, mtasts_mode_name(pol.mode), pol.max_age, pol.nmx);
    buf_free(&body);
}

/* ---- loop side: MTA-STS state of a domain ------------------------------------------ */

static void sts_finish(struct sts_ent *e)
{
    e->busy = false;
    struct tlspol_req *w = e->waiters;
    e->waiters = NULL;
    bool valid = sts_valid(e);
    while (w) {
        struct tlspol_req *next = w->next_waiter;
        w->have_pol = valid;
        if (valid)
            w->pol = e->pol;
        w->sts_error = valid || !e->txt_id[0] ? NULL : e->rpt_error;
        req_step_done(w);
        w = next;
    }
}

static void job_done(uv_work_t *w, int status)
{
    struct sts_job *j = w->data;
    struct sts_ent *e = j->e;
    struct tlspol *tp = e->tp;
    e->disk_checked = true;
    if (status == 0) {
        e->have = j->have;
        memcpy(e->id, j->id, sizeof e->id);
        e->fetched = j->fetched;
        e->pol = j->pol;
    }
    e->rpt_error = sts_valid(e) ? NULL : j->rpt_error;
    if (j->note[0]) {
        if (j->note_warn)
            log_warn("MTA-STS %s: %s%s", e->domain, j->note,
                     sts_valid(e) ? " (the cached policy stays in force)" : "");
        else
            log_info("MTA-STS %s: %s", e->domain, j->note);
    }
    free(j);
    sts_finish(e);
    tp_unref(tp);
}

static void sts_queue_job(struct sts_ent *e)
{
    struct tlspol *tp = e->tp;
    struct sts_job *j = calloc(1, sizeof *j);
    if (!j || tp->closing) {
        free(j);
        sts_finish(e);
        return;
    }
    j->work.data = j;
    j->e = e;
    snprintf(j->domain, sizeof j->domain, "%s", e->domain);
    memcpy(j->txt_id, e->txt_id, sizeof j->txt_id);
    snprintf(j->ip, sizeof j->ip, "%s", e->ip);
    const char *ca = tp->cfg->delivery.dflt.ca_file;
    snprintf(j->ca_file, sizeof j->ca_file, "%s", ca ? ca : "");
    snprintf(j->dir, sizeof j->dir, "%s", tp->cache_dir);
    j->disk_check = !e->disk_checked;
    j->stop = &tp->stop;
    j->have = e->have;
    memcpy(j->id, e->id, sizeof j->id);
    j->fetched = e->fetched;
    j->pol = e->pol;
    tp->refs++;
    if (uv_queue_work(tp->loop, &j->work, job_run, job_done) != 0) {
        tp->refs--;
        free(j);
        sts_finish(e);
    }
}

static void on_policy_host(void *arg, const struct dns_result *res)
{
    struct sts_ent *e = arg;
    struct tlspol *tp = e->tp;
    e->ip[0] = '\0';
    if (res->status == DNS_OK && res->nhosts > 0 && res->hosts[0].naddr > 0) {
        const struct sockaddr_storage *ss = &res->hosts[0].addrs[0];
        if (ss->ss_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)ss, e->ip, sizeof e->ip);
        else
            uv_ip6_name((const struct sockaddr_in6 *)ss, e->ip, sizeof e->ip);
    }
    sts_queue_job(e);
    tp_unref(tp);
}

static void on_txt(void *arg, const unsigned char *abuf, int alen)
{
    struct sts_ent *e = arg;
    struct tlspol *tp = e->tp;
    e->txt_checked = uv_now(tp->loop);
    e->txt_id[0] = '\0';
    struct dnsrec_set set;
    if (abuf && dnsrec_parse(abuf, alen, DNSREC_TYPE_TXT, &set) == PT_OK &&
        set.rcode == DNSREC_NOERROR) {
        /* §3.1: records not starting with v=STSv1 are discarded; exactly one must
         * remain and be valid */
        int nsts = 0;
        char id[MTASTS_ID_MAX + 1] = "";
        bool ok = false;
        char txt[4096];
        for (int i = 0; i < set.n; i++) {
            size_t tn;
            if (dnsrec_txt_join(abuf + set.rr[i].off, set.rr[i].len, txt, sizeof txt, &tn) !=
                PT_OK)
                continue;
            int rc = mtasts_parse_txt(txt, tn, id);
            if (rc == PT_NOTFOUND)
                continue;
            nsts++;
            ok = rc == PT_OK;
        }
        if (nsts == 1 && ok)
            memcpy(e->txt_id, id, sizeof id);
        else if (nsts > 0)
            log_warn("MTA-STS %s: _mta-sts.%s TXT is not one valid STSv1 record: no policy "
                     "published", e->domain, e->domain);
    }
    bool valid = sts_valid(e);
    bool fetch = e->txt_id[0] &&
                 mtasts_decide(e->txt_id, valid ? e->id : NULL) == MTASTS_FETCH;
    if (tp->closing) {
        sts_finish(e);
    } else if (fetch || (e->txt_id[0] && !e->disk_checked)) {
        /* the fetch may be needed (the disk may hold this id): its address first,
         * through the configured resolvers */
        char host[300];
        snprintf(host, sizeof host, "mta-sts.%s", e->domain);
        tp->refs++;
        dns_resolve_host(tp->dns, host, on_policy_host, e);
    } else if (!e->disk_checked) {
        sts_queue_job(e);
    } else {
        sts_finish(e);
    }
    tp_unref(tp);
}

static struct sts_ent *sts_get(struct tlspol *tp, const char *domain)
{
    struct sts_ent **pp = &tp->ents, *e;
    for (; (e = *pp) != NULL; pp = &e->next) {
        if (strcmp(e->domain, domain) == 0) {
            *pp = e->next;          /* move to front: most recently used */
            e->next = tp->ents;
            tp->ents = e;
            return e;
        }
    }
    if (tp->nents >= STS_MAX_DOMAINS) {
        /* forget the least recently used idle one (its disk file stays) */
        struct sts_ent **victim = NULL;
        for (pp = &tp->ents; *pp; pp = &(*pp)->next)
            if (!(*pp)->busy)
                victim = pp;
        if (victim) {
            e = *victim;
            *victim = e->next;
            free(e);
            tp->nents--;
        }
    }
    if (!(e = calloc(1, sizeof *e)))
        return NULL;
    e->tp = tp;
    snprintf(e->domain, sizeof e->domain, "%s", domain);
    e->next = tp->ents;
    tp->ents = e;
    tp->nents++;
    return e;
}

static void sts_start(struct tlspol_req *r)
{
    struct tlspol *tp = r->tp;
    struct sts_ent *e = sts_get(tp, r->domain);
    if (!e) {
        req_step_done(r);           /* out of memory: as if no policy (logged by caller) */
        return;
    }
    r->next_waiter = e->waiters;
    e->waiters = r;
    if (e->busy)
        return;
    if (e->disk_checked && e->txt_checked &&
        uv_now(tp->loop) - e->txt_checked < STS_TXT_RECHECK_MS) {
        sts_finish(e);
        return;
    }
    e->busy = true;
    char name[300];
    snprintf(name, sizeof name, "_mta-sts.%s", r->domain);
    tp->refs++;
    dns_query_raw(tp->dns, name, DNSREC_TYPE_TXT, on_txt, e);
}

/* ---- loop side: DANE ------------------------------------------------------------- */

static void on_tlsa(void *arg, const unsigned char *abuf, int alen)
{
    struct tlsa_slot *s = arg;
    struct tlspol_req *r = s->req;
    struct tlspol *tp = r->tp;
    dane_host_verdict(abuf, alen, dns_trusted(tp->dns), &r->dane[s->i]);
    req_step_done(r);
    tp_unref(tp);
}

/* ---- the verdict ------------------------------------------------------------------ */

static void req_finish(struct tlspol_req *r)
{
    struct tlspol_result res;
    memset(&res, 0, sizeof res);
    struct dns_result *hosts = malloc(sizeof *hosts);
    if (!hosts) {
        res.code = 451;
        snprintf(res.enhanced, sizeof res.enhanced, "4.3.0");
        snprintf(res.text, sizeof res.text, "451 4.3.0 out of memory deciding the TLS policy");
        res.hosts = &r->mx;
        r->cb(r->arg, &res);
        return;
    }
    *hosts = r->mx;
    hosts->nhosts = 0;
    res.hosts = hosts;
    bool enforce = r->have_pol && r->pol.mode == MTASTS_ENFORCE;
    bool testing = r->have_pol && r->pol.mode == MTASTS_TESTING;
    res.sts_mode = enforce ? "enforce" : testing ? "testing" : NULL;
    int dane_failed = 0, sts_skipped = 0;
    char skipped[200] = "";
    for (int i = 0; i < r->mx.nhosts; i++) {
        const struct dns_host *h = &r->mx.hosts[i];
        const struct dane_host *d = r->dane ? &r->dane[i] : NULL;
        enum tlspol_need need = TLSPOL_ANY;
        if (d && d->verdict == DANE_FAIL) {
            /* RFC 7672 §2.2.1: a host whose TLSA lookup failed is not used */
            log_warn("DANE %s: TLSA lookup of _%u._tcp.%s failed: host skipped", r->domain,
                     (unsigned)r->tp->cfg->delivery.smtp_port, h->name);
            dane_failed++;
            continue;
        }
        bool dane = d && (d->verdict == DANE_AUTH || d->verdict == DANE_ENCRYPT);
        if (r->have_pol && r->pol.mode != MTASTS_NONE && !mtasts_mx_match(&r->pol, h->name)) {
            if (enforce && !dane) {
                sts_skipped++;
                if (!skipped[0])
                    snprintf(skipped, sizeof skipped, "%s", h->name);
                continue;
            }
            if (testing)
                log_warn("MTA-STS %s (testing): MX %s does not match the policy; delivering "
                         "anyway", r->domain, h->name);
        }
        if (d && d->verdict == DANE_AUTH)
            need = TLSPOL_DANE;          /* DANE governs a host that has it (RFC 8461 §2) */
        else if (d && d->verdict == DANE_ENCRYPT)
            need = TLSPOL_ENCRYPT;
        else if (enforce)
            need = TLSPOL_VERIFY;
        int k = hosts->nhosts++;
        hosts->hosts[k] = *h;
        res.need[k] = need;
        res.dane[k] = need == TLSPOL_DANE ? d : NULL;
    }
    res.sts = r->have_pol && r->pol.mode != MTASTS_NONE ? &r->pol : NULL;
    for (int i = 0; r->dane && i < r->mx.nhosts; i++)
        if (r->dane[i].verdict == DANE_AUTH || r->dane[i].verdict == DANE_ENCRYPT ||
            r->dane[i].verdict == DANE_FAIL)
            res.rpt_type = "tlsa";
    if (!res.rpt_type && res.sts)
        res.rpt_type = "sts";
    if (!res.rpt_type && r->sts_error) {
        res.rpt_type = "sts";
        res.rpt_note = r->sts_error;
    }
    if (hosts->nhosts == 0) {
        res.rpt_failure = dane_failed ? "dnssec-invalid" : "validation-failure";
        res.code = 451;
        snprintf(res.enhanced, sizeof res.enhanced, "4.7.5");
        if (sts_skipped && !dane_failed)
            snprintf(res.text, sizeof res.text,
                     "451 4.7.5 MTA-STS policy of %s (enforce) matches no MX host (%s%s): "
                     "not delivered", r->domain, skipped, sts_skipped > 1 ? ", ..." : "");
        else if (dane_failed)
            snprintf(res.text, sizeof res.text,
                     "451 4.7.5 DANE: TLSA lookup failed for every usable MX host of %s",
                     r->domain);
        else
            snprintf(res.text, sizeof res.text, "451 4.4.3 no MX host for %s", r->domain);
    } else if (sts_skipped) {
        log_warn("MTA-STS %s (enforce): %d MX host(s) not in the policy skipped (%s%s)",
                 r->domain, sts_skipped, skipped, sts_skipped > 1 ? ", ..." : "");
    }
    r->cb(r->arg, &res);
    free(hosts);
}

static void req_step_done(struct tlspol_req *r)
{
    if (--r->pending > 0)
        return;
    req_finish(r);
    free(r->dane);
    free(r);
}

void tlspol_check(struct tlspol *tp, const char *domain, const struct dns_result *mx,
                  tlspol_cb cb, void *arg)
{
    struct tlspol_req *r = calloc(1, sizeof *r);
    if (!r) {
        struct tlspol_result res = { .code = 451, .enhanced = "4.3.0",
                                     .text = "451 4.3.0 out of memory deciding the TLS policy",
                                     .hosts = mx };
        cb(arg, &res);
        return;
    }
    r->tp = tp;
    r->cb = cb;
    r->arg = arg;
    r->mx = *mx;
    snprintf(r->domain, sizeof r->domain, "%s", domain);
    const struct config *cfg = tp->cfg;
    bool dane = cfg->delivery.dane && dns_trusted(tp->dns) && !tp->closing;
    if (dane && !mx->mx_secure) {
        /* RFC 7672 §2.2.1: an MX RRset that is not authenticated cannot lead to
         * DANE (an attacker could name any host): MTA-STS / the route's TLS apply */
        log_debug("DANE %s: the MX answer is not DNSSEC-authenticated (no AD): DANE "
                  "does not apply", domain);
        dane = false;
    }
    if (dane && mx->nhosts > 0 && !(r->dane = calloc((size_t)mx->nhosts, sizeof *r->dane)))
        dane = false;
    r->pending = 1;                          /* held while starting */
    if (cfg->delivery.mta_sts && !tp->closing) {
        r->pending++;
        sts_start(r);
    }
    for (int i = 0; dane && i < mx->nhosts; i++) {
        char name[300];
        snprintf(name, sizeof name, "_%u._tcp.%s", (unsigned)cfg->delivery.smtp_port,
                 mx->hosts[i].name);
        r->slots[i] = (struct tlsa_slot){ r, i };
        r->pending++;
        tp->refs++;
        dns_query_raw(tp->dns, name, DNSREC_TYPE_TLSA, on_tlsa, &r->slots[i]);
    }
    req_step_done(r);
}
