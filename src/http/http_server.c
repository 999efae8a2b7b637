/* HTTP listeners on libmicrohttpd: auth (trusted_hosts, else a Bearer key compared
 * in constant time), a route table, JSON error bodies. Handlers run on MHD's
 * polling thread and never wait on a worker or the spool thread; the queue API waits
 * (at most ADMIN_SNAPSHOT_TIMEOUT_S) for the delivery threads' answers.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <lua.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/config.h"
#include "core/runtime.h"
#include "http/http_server.h"
#include "http/inject.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "policy/accept.h"
#include "policy/header_checks.h"
#include "delivery/egress.h"
#include "policy/hooks.h"
#include "policy/limits.h"
#include "queue/entry.h"
#include "queue/ingest.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "smtp/smtp_parse.h"
#include "util/buf.h"
#include "util/cidr.h"
#include "util/netsock.h"
#include "util/parse.h"
#include "util/result.h"
#include "util/timeutil.h"
#include "util/utf8.h"

#define KEY_HASH_LEN 32         /* SHA-256 */
#define ERR_PATH_MAX 200        /* bytes of a client's path quoted in an error */

struct http_server {
    struct runtime *rt;                       /* borrowed */
    const struct cfg_http_listener *l;        /* borrowed */
    struct MHD_Daemon *daemon;
    atomic_bool ready;
    unsigned char (*key_hash)[KEY_HASH_LEN];  /* SHA-256 of each api_key */
    int n_keys;
    char *cert_pem, *key_pem;                 /* kept while MHD runs; key wiped at stop */
    size_t key_len;
    atomic_bool starting;                     /* MHD messages go to start_err meanwhile */
    char start_err[256];
    atomic_bool stopping;                     /* injections get 503 from now on */
    atomic_int inflight;                      /* injection jobs not yet answered */
    int index;                                /* listener index: its Lua state in each
                                                 generation (runtime_gen_http_lua) */
};

struct inject_job;

/* What http_message_received asked for one destination domain of one message. */
struct dom_fx {
    size_t msg;
    char domain[256];           /* lowercased, as ingest names the entry */
    struct hook_effects fx;
};

/* Per request, from MHD's first call to its completion notice. */
struct http_req {
    bool answered;              /* a response is queued: discard any body */
    bool takes_body;            /* the endpoint reads the body (kept in data) */
    size_t body;                /* body bytes seen */
    struct buf data;            /* the body, for endpoints that take one */
    char ip[64];                /* client address */
    struct inject_job *job;     /* an injection waiting for the spool */
    struct cfg_gen *gen;        /* config generation the request started with (held) */
};

/* ---- responses ----------------------------------------------------------- */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *ctype,
                               char *body, size_t len, const char *hname, const char *hvalue)
{
    /* body is taken (malloc'd), NULL = empty */
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body ? body : (char *)"",
                                                             body ? MHD_RESPMEM_MUST_FREE
                                                                  : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Sends obj (taken) as the JSON body. */
static enum MHD_Result respond_json(struct MHD_Connection *c, unsigned status, json_t *obj,
                                    const char *hname, const char *hvalue)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text)
        return MHD_NO;  /* out of memory: MHD closes the connection */
    size_t n = strlen(text);
    /* json_dumps allocates with jansson's allocator, malloc by default */
    return respond(c, status, "application/json", text, n, hname, hvalue);
}

/* {"error": "..."}; the message is made valid UTF-8 (jansson refuses anything else). */
static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *hname,
                                     const char *hvalue, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *hname,
                                     const char *hvalue, const char *fmt, ...)
{
    char raw[512], msg[sizeof raw * 3];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)raw; *p && o + 4 < sizeof msg;) {
        size_t n = *p < 0x80 ? 1 : utf8_seq_len(p);
        if (n == 0) {
            memcpy(msg + o, "\xEF\xBF\xBD", 3);  /* U+FFFD */
            o += 3;
            p++;
        } else {
            memcpy(msg + o, p, n);
            o += n;
            p += n;
        }
    }
    msg[o] = 0;
    return respond_json(c, status, json_pack("{s:s}", "error", msg), hname, hvalue);
}

/* ---- endpoints ------------------------------------------------------------ */

static enum MHD_Result get_metrics(struct http_server *s, struct MHD_Connection *c,
                                    struct http_req *req, int arg)
{
    struct spool_stats st;
    spool_stats(s->rt->spool, &st);
    metrics_set(M_SPOOL_BYTES, NULL, NULL, (double)st.bytes);
    struct buf out;
    buf_init(&out, 0);
    if (metrics_render(&out) != PT_OK) {
        buf_free(&out);
        return respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, NULL,
                             "cannot render metrics: out of memory");
    }
    size_t len;
    char *text = buf_steal(&out, &len);
    return respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4", text, len, NULL, NULL);
}

static enum MHD_Result get_healthz(struct http_server *s, struct MHD_Connection *c,
                                    struct http_req *req, int arg)
{
    return respond_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ok"), NULL, NULL);
}

static enum MHD_Result get_readyz(struct http_server *s, struct MHD_Connection *c,
                                    struct http_req *req, int arg)
{
    if (!atomic_load(&s->ready))
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "not ready: listeners are not all bound yet");
    const char *dir = s->rt->cfg->queue.spool_dir;
    if (access(dir, W_OK) != 0)
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "not ready: spool directory %s is not writable: %s", dir,
                             strerror(errno));
    return respond_json(c, MHD_HTTP_OK, json_pack("{s:s}", "status", "ready"), NULL, NULL);
}

/* ---- message injection (POST /v1/message, POST /api/inject/v1) -------------
 *
 * The body is parsed into messages (http/inject.c), each is handed to ingest, and
 * the connection is suspended until every submission's durable callback has run
 * (on the spool thread), which resumes it: the 200 is never sent before the fsync,
 * and MHD's thread never waits. */

struct inject_sub {             /* one submitted message */
    struct inject_job *job;
    size_t msg;                 /* index in the batch */
    bool failed;                /* spool error: its recipients were not queued */
};

struct inject_job {
    pthread_mutex_t lock;
    struct http_server *s;
    struct MHD_Connection *c;
    bool kumo;
    int pending;                /* submissions whose callback has not run (under lock) */
    bool suspended;             /* under lock */
    char id[ENTRY_ID_LEN + 1];  /* /v1/message: the queue id */
    struct inject_batch batch;  /* messages and the recipients refused up front */
    json_t *rejected;           /* /v1/message: recipients refused by policy */
    size_t discarded;           /* recipients accepted and dropped (header checks DISCARD) */
    char (*ids)[ENTRY_ID_LEN + 1];  /* queue id of each message of the batch */
    struct dom_fx *fx;          /* http_message_received effects per message and domain */
    size_t nfx;
    size_t nsubs;
    struct inject_sub *subs;
    const struct config *cfg;   /* the runtime's (startup) config: egress sources */
};

static void job_free(struct inject_job *j)
{
    if (!j)
        return;
    inject_batch_free(&j->batch);
    json_decref(j->rejected);
    free(j->subs);
    free(j->ids);
    for (size_t i = 0; i < j->nfx; i++)
        hook_effects_free(&j->fx[i].fx);
    free(j->fx);
    pthread_mutex_destroy(&j->lock);
    atomic_fetch_sub(&j->s->inflight, 1);
    free(j);
}

static void inject_done(void *arg, int status)
{
    struct inject_sub *sub = arg;
    struct inject_job *j = sub->job;
    if (status == PT_OK)
        metrics_inc(M_RECEIVED, j->s->l->listen, NULL, 1);
    pthread_mutex_lock(&j->lock);
    sub->failed = status != PT_OK;
    bool resume = --j->pending == 0 && j->suspended;
    struct MHD_Connection *c = j->c;
    pthread_mutex_unlock(&j->lock);
    if (resume)
        MHD_resume_connection(c);  /* MHD calls on_request again: finish_job answers */
}

static void new_id(void *arg, char out[ENTRY_ID_LEN + 1])
{
    entry_new_id(out);
}

/* Drops the recipients the SMTP listener would refuse at RCPT (policy/accept.h: a
 * domain routed to "error:..."); each goes to rejected (v1) or to the batch's
 * failures (kumo). */
static int apply_routes(struct inject_job *j, const struct config *cfg)
{
    for (size_t m = 0; m < j->batch.nmsgs; m++) {
        struct inject_msg *msg = &j->batch.msgs[m];
        size_t keep = 0;
        for (size_t i = 0; i < msg->nrcpt; i++) {
            const char *refusal;
            int code;
            if (accept_recipient(cfg, msg->rcpts[i], &refusal, &code) == PT_OK) {
                msg->rcpts[keep++] = msg->rcpts[i];
                continue;
            }
            if (!j->kumo) {
                json_array_append_new(j->rejected, json_string(msg->rcpts[i]));
                free(msg->rcpts[i]);
                continue;
            }
            struct inject_failure *f = realloc(j->batch.failed,
                                               (j->batch.nfailed + 1) * sizeof *f);
            if (f)
                j->batch.failed = f;
            char *why = f ? strdup(refusal) : NULL;
            if (!why) {  /* keep what is left owned by msg, then give up */
                for (; i < msg->nrcpt; i++)
                    msg->rcpts[keep++] = msg->rcpts[i];
                msg->nrcpt = keep;
                return PT_NOMEM;
            }
            f[j->batch.nfailed++] = (struct inject_failure){ .recipient = msg->rcpts[i],
                                                             .error = why };
        }
        msg->nrcpt = keep;
    }
    return PT_OK;
}

/* Moves every recipient of msg to the refused ones with the reason why (v1:
 * rejected; kumo: the batch's failures). msg keeps no recipient. */
static int refuse_all(struct inject_job *j, struct inject_msg *msg, const char *why)
{
    for (size_t i = 0; i < msg->nrcpt; i++) {
        if (!j->kumo) {
            json_array_append_new(j->rejected, json_string(msg->rcpts[i]));
            free(msg->rcpts[i]);
            continue;
        }
        struct inject_failure *f = realloc(j->batch.failed, (j->batch.nfailed + 1) * sizeof *f);
        if (f)
            j->batch.failed = f;
        char *w = f ? strdup(why) : NULL;
        if (!w) {
            for (size_t k = i; k < msg->nrcpt; k++)
                msg->rcpts[k - i] = msg->rcpts[k];
            msg->nrcpt -= i;
            return PT_NOMEM;
        }
        f[j->batch.nfailed++] = (struct inject_failure){ .recipient = msg->rcpts[i], .error = w };
    }
    msg->nrcpt = 0;
    return PT_OK;
}

/* configure_header_checks on each message's header, as for SMTP. REJECT refuses
 * the message's recipients by policy (v1: "rejected"; kumo: failed_recipients with
 * the reply) rather than failing the request: the JSON was valid. DISCARD counts
 * them accepted and queues nothing. */
static int apply_header_checks(struct inject_job *j, const struct config *cfg, const char *ip)
{
    const struct header_checks *hc = cfg->header_checks_set;
    for (size_t m = 0; hc && m < j->batch.nmsgs; m++) {
        struct inject_msg *msg = &j->batch.msgs[m];
        if (msg->nrcpt == 0)
            continue;
        struct buf out;
        buf_init(&out, 0);
        struct header_checks_result res;
        int rc = header_checks_apply(hc, msg->content, msg->content_len, &out, &res);
        if (rc != PT_OK) {
            buf_free(&out);
            return rc;
        }
        if (res.warnings)
            log_warn("http %s: header_checks: WARN %s (%zu warning(s))", ip, res.warning,
                     res.warnings);
        if (res.verdict == HEADER_CHECKS_REJECT) {
            char why[HEADER_CHECKS_TEXT_MAX + 8];
            snprintf(why, sizeof why, "550 %s", res.text);
            log_info("http %s: header_checks rule %zu rejected a message: %s", ip, res.rule + 1,
                     res.text);
            rc = refuse_all(j, msg, why);
        } else if (res.verdict == HEADER_CHECKS_DISCARD) {
            log_info("http %s: header_checks rule %zu discarded a message: %s", ip, res.rule + 1,
                     res.text);
            j->discarded += msg->nrcpt;
            for (size_t i = 0; i < msg->nrcpt; i++)
                free(msg->rcpts[i]);
            msg->nrcpt = 0;
        } else if (res.changed) {
            size_t len;
            free(msg->content);
            msg->content = buf_steal(&out, &len);
            msg->content_len = len;
        }
        buf_free(&out);
        if (rc != PT_OK)
            return rc;
    }
    return PT_OK;
}

/* Refuses the recipients of msg whose lowercased domain is dom (see refuse_all). */
static int refuse_domain(struct inject_job *j, struct inject_msg *msg, const char *dom,
                         const char *why)
{
    struct inject_msg out = { .rcpts = msg->rcpts };
    size_t keep = 0, n = 0;
    char **refused = malloc(msg->nrcpt * sizeof *refused);
    if (!refused)
        return PT_NOMEM;
    for (size_t i = 0; i < msg->nrcpt; i++) {
        char ldom[256];
        const char *d = smtp_addr_domain(msg->rcpts[i]);
        smtp_domain_lower(d ? d : "", ldom, sizeof ldom);
        if (strcmp(ldom, dom) == 0)
            refused[n++] = msg->rcpts[i];
        else
            msg->rcpts[keep++] = msg->rcpts[i];
    }
    msg->nrcpt = keep;
    out.rcpts = refused;
    out.nrcpt = n;
    int rc = refuse_all(j, &out, why);
    for (size_t i = 0; i < out.nrcpt; i++)   /* left over only when out of memory */
        free(out.rcpts[i]);
    free(refused);
    return rc;
}

/* http_message_received, once per destination domain of each message, before
 * anything is queued: an error refuses that domain's recipients (v1: rejected;
 * kumo: failed_recipients) and nothing is queued for them; the effects of the
 * others are kept in j->fx for ingest (http_policy). */
static int message_hooks(struct http_server *s, struct inject_job *j, struct http_req *req)
{
    const char *ip = req->ip;
    lua_State *L = runtime_gen_http_lua(req->gen, s->index);
    if (!L || !hooks_any(L, "http_message_received"))
        return PT_OK;
    for (size_t m = 0; m < j->batch.nmsgs; m++) {
        struct inject_msg *msg = &j->batch.msgs[m];
        size_t n = msg->nrcpt;
        if (n == 0)
            continue;
        char (*dom)[256] = malloc(n * sizeof *dom);
        const char **members = malloc(n * sizeof *members);
        struct dom_fx *grown = realloc(j->fx, (j->nfx + n) * sizeof *j->fx);
        if (grown)
            j->fx = grown;
        if (!dom || !members || !grown) {
            free(dom);
            free(members);
            return PT_NOMEM;
        }
        for (size_t i = 0; i < n; i++) {
            const char *d = smtp_addr_domain(msg->rcpts[i]);
            smtp_domain_lower(d ? d : "", dom[i], sizeof dom[i]);
        }
        char tenant[HOOK_TENANT_MAX];
        hooks_default_tenant(NULL, msg->content, msg->content_len, NULL, tenant);
        int rc = PT_OK;
        char (*failed)[256] = malloc(n * sizeof *failed);
        size_t nfailed = 0;
        if (!failed)
            rc = PT_NOMEM;
        for (size_t i = 0; rc == PT_OK && i < n; i++) {
            bool first = true;
            for (size_t k = 0; k < i && first; k++)
                first = strcmp(dom[k], dom[i]) != 0;
            if (!first)
                continue;
            size_t nm = 0;
            for (size_t k = i; k < n; k++)
                if (strcmp(dom[k], dom[i]) == 0)
                    members[nm++] = msg->rcpts[k];
            struct dom_fx *df = &j->fx[j->nfx];
            df->msg = m;
            memcpy(df->domain, dom[i], sizeof df->domain);
            hook_effects_init(&df->fx);
            struct hook_meta meta = {
                .client_ip = ip, .listener = s->l->listen, .tenant = tenant,
                .id = j->ids[m], .sender = msg->sender, .rcpts = members, .nrcpt = nm,
                .content = msg->content, .content_len = msg->content_len,
            };
            char err[512];
            /* sign_dkim keys not in the cache are read here: this runs on one of
             * libmicrohttpd's own threads (MHD_USE_INTERNAL_POLLING_THREAD), not on
             * a libuv event loop, so the load may block it briefly */
            if (hooks_run(L, "http_message_received", dom[i], &meta, &df->fx, err,
                          sizeof err) == PT_OK &&
                (!df->fx.dkim_load.len ||
                 hooks_load_dkim_keys(df->fx.dkim_load.data, err, sizeof err) == PT_OK)) {
                buf_reset(&df->fx.dkim_load);
                j->nfx++;
                continue;
            }
            hook_effects_free(&df->fx);
            log_warn("http %s: %s: http_message_received hook failed for %s: %s", s->l->listen,
                     ip, dom[i], err);
            memcpy(failed[nfailed++], dom[i], sizeof failed[0]);
        }
        for (size_t f = 0; rc == PT_OK && f < nfailed; f++)
            rc = refuse_domain(j, msg, failed[f],
                               "451 4.3.0 Temporary local policy failure, try again later");
        free(failed);
        free(dom);
        free(members);
        if (rc != PT_OK)
            return rc;
    }
    return PT_OK;
}

/* ingest policy of an HTTP message: the effects its hooks asked for this entry's
 * destination domain. */
static int http_policy(void *arg, struct entry *e)
{
    const struct inject_sub *sub = arg;
    const struct inject_job *j = sub->job;
    for (size_t i = 0; i < j->nfx; i++)
        if (j->fx[i].msg == sub->msg && strcmp(j->fx[i].domain, e->domain) == 0) {
            int rc = hook_effects_apply(&j->fx[i].fx, e);
            return rc == PT_OK ? egress_assign(j->cfg, e, j->fx[i].fx.egress_pool) : rc;
        }
    /* no hook ran for it: the tenant of DESIGN §4 (X-Tenant) */
    const struct inject_msg *msg = &j->batch.msgs[sub->msg];
    char tenant[HOOK_TENANT_MAX];
    hooks_default_tenant(NULL, msg->content, msg->content_len, NULL, tenant);
    int rc = entry_set_ident(e, tenant, entry_source(e));
    return rc == PT_OK ? egress_assign(j->cfg, e, NULL) : rc;
}

/* limit_sending of every message of the request, before any is queued: PT_OK, or
 * PT_TOOLONG with the key over its limit in over. */
static int take_limits(const struct inject_job *j, char *over, size_t overlen)
{
    double now = (double)time_mono_ms() / 1000.0;
    for (size_t i = 0; i < j->nfx; i++) {
        const struct buf *b = &j->fx[i].fx.limits;
        if (b->len && limits_take_all(limits_shared(), b->data, b->len, now, over, overlen) != PT_OK)
            return PT_TOOLONG;
    }
    return PT_OK;
}

/* Builds the final answer once every submission has reported. */
static enum MHD_Result finish_job(struct http_req *req, struct MHD_Connection *c)
{
    struct inject_job *j = req->job;
    req->job = NULL;
    req->answered = true;
    size_t ok = j->discarded, failed = 0;
    json_t *frcpt = json_array(), *errors = json_array();
    for (size_t k = 0; k < j->nsubs; k++) {
        const struct inject_msg *msg = &j->batch.msgs[j->subs[k].msg];
        if (!j->subs[k].failed) {
            ok += msg->nrcpt;
            continue;
        }
        failed += msg->nrcpt;
        for (size_t i = 0; i < msg->nrcpt; i++) {
            json_array_append_new(frcpt, json_string(msg->rcpts[i]));
            json_array_append_new(errors, json_sprintf("%s: temporary failure writing the "
                                                       "queue, try again later", msg->rcpts[i]));
        }
    }
    enum MHD_Result ret;
    if (!j->kumo) {
        json_decref(frcpt);
        json_decref(errors);
        if (failed)
            ret = respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                                "temporary failure writing the queue, try again later");
        else
            ret = respond_json(c, MHD_HTTP_OK,
                               json_pack("{s:s, s:I, s:O}", "id", j->id, "accepted",
                                         (json_int_t)ok, "rejected", j->rejected),
                               NULL, NULL);
    } else {
        for (size_t i = 0; i < j->batch.nfailed; i++) {
            const struct inject_failure *f = &j->batch.failed[i];
            json_array_append_new(frcpt, json_string(f->recipient));
            json_array_append_new(errors, json_sprintf("%s: %s", f->recipient, f->error));
        }
        failed += j->batch.nfailed;
        ret = respond_json(c, MHD_HTTP_OK,
                           json_pack("{s:I, s:I, s:o, s:o}", "success_count", (json_int_t)ok,
                                     "fail_count", (json_int_t)failed, "failed_recipients",
                                     frcpt, "errors", errors),
                           NULL, NULL);
    }
    job_free(j);
    return ret;
}

/* arg: 1 = KumoMTA's format, 0 = /v1/message */
static enum MHD_Result post_inject(struct http_server *s, struct MHD_Connection *c,
                                   struct http_req *req, int arg)
{
    bool kumo = arg != 0;
    if (req->job)
        return finish_job(req, c);  /* resumed: every submission has reported */
    req->answered = true;
    const struct config *cfg = req->gen->cfg;
    if (atomic_load(&s->stopping))
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "shutting down, try again later");
    int room = accept_queue_state(cfg, s->rt->sched, s->rt->spool);
    if (room == PT_ERROR)
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Retry-After", "60",
                             "spool disk full, try again later");
    if (room != PT_OK)
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "Retry-After", "60",
                             "queue is full, try again later");
    struct inject_job *j = calloc(1, sizeof *j);
    if (!j)
        return MHD_NO;
    pthread_mutex_init(&j->lock, NULL);
    atomic_fetch_add(&s->inflight, 1);
    j->s = s;
    j->c = c;
    j->kumo = kumo;
    j->rejected = json_array();
    char err[512];
    int rc;
    const char *body = req->data.data ? req->data.data : "";
    double now = time_now();
    const char *host = cfg->delivery.helo_name ? cfg->delivery.helo_name : s->rt->hostname;
    if (kumo) {
        rc = inject_kumo(body, req->data.len, host, now, new_id, NULL, &j->batch, err,
                         sizeof err);
    } else {
        entry_new_id(j->id);
        j->batch.msgs = calloc(1, sizeof *j->batch.msgs);
        rc = !j->batch.msgs ? PT_NOMEM
                            : inject_v1_message(body, req->data.len, host, j->id, now,
                                                &j->batch.msgs[0], err, sizeof err);
        if (rc == PT_OK)
            j->batch.nmsgs = 1;
    }
    j->cfg = cfg;   /* the request's generation: egress pools and tenants */
    if (rc == PT_OK)
        rc = apply_routes(j, cfg);
    if (rc == PT_OK)
        rc = apply_header_checks(j, cfg, req->ip);
    if (rc == PT_OK && j->batch.nmsgs && !(j->ids = calloc(j->batch.nmsgs, sizeof *j->ids)))
        rc = PT_NOMEM;
    for (size_t m = 0; rc == PT_OK && m < j->batch.nmsgs; m++) {
        if (!kumo && m == 0)
            memcpy(j->ids[m], j->id, sizeof j->ids[m]);
        else
            entry_new_id(j->ids[m]);
    }
    if (rc == PT_OK)
        rc = message_hooks(s, j, req);
    char over[LIMITS_KEY_MAX + 1];
    if (rc == PT_OK && take_limits(j, over, sizeof over) != PT_OK) {
        job_free(j);
        log_info("http %s: %s: limit_sending: key '%s' is over its limit", s->l->listen, req->ip,
                 over);
        return respond_error(c, MHD_HTTP_TOO_MANY_REQUESTS, "Retry-After", "1",
                             "sending rate limit exceeded for '%s', try again later", over);
    }
    if (rc == PT_OK && j->batch.nmsgs && !(j->subs = calloc(j->batch.nmsgs, sizeof *j->subs)))
        rc = PT_NOMEM;
    if (rc != PT_OK) {
        job_free(j);
        if (rc == PT_INVALID)
            return respond_error(c, MHD_HTTP_BAD_REQUEST, NULL, NULL, "%s", err);
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "out of memory, try again later");
    }
    /* pending holds one reference of our own while submitting, so no callback can
     * see zero before we have decided whether to suspend; the spool thread never
     * waits on this lock for longer than a counter update. */
    j->pending = 1;
    for (size_t m = 0; m < j->batch.nmsgs; m++) {
        struct inject_msg *msg = &j->batch.msgs[m];
        if (msg->nrcpt == 0)
            continue;
        struct inject_sub *sub = &j->subs[j->nsubs++];
        *sub = (struct inject_sub){ .job = j, .msg = m };
        struct ingest_msg im = {
            .sender = msg->sender, .rcpts = (const char *const *)msg->rcpts,
            .nrcpt = msg->nrcpt, .content = msg->content, .content_len = msg->content_len,
            .protocol = PROTO_HTTP, .priority = PRIO_NORMAL, .received_at = now,
            .peer_address = req->ip, .log_reception = true,
        };
        memcpy(im.id, j->ids[m], sizeof im.id);
        im.policy = http_policy;   /* at least the tenant (DESIGN §4) */
        im.policy_arg = sub;
        pthread_mutex_lock(&j->lock);
        j->pending++;
        pthread_mutex_unlock(&j->lock);
        if (ingest_submit(s->rt, &im, inject_done, sub) != PT_OK) {
            pthread_mutex_lock(&j->lock);
            j->pending--;
            sub->failed = true;
            pthread_mutex_unlock(&j->lock);
        }
    }
    req->job = j;
    pthread_mutex_lock(&j->lock);
    if (--j->pending == 0) {  /* every submission has reported already */
        pthread_mutex_unlock(&j->lock);
        return finish_job(req, c);
    }
    req->answered = false;  /* finish_job answers after the resume */
    MHD_suspend_connection(c);
    j->suspended = true;
    pthread_mutex_unlock(&j->lock);
    return MHD_YES;
}

/* ---- queue inspection (GET /api/queue, GET /api/message/ID) ---------------- */

#define ADMIN_SNAPSHOT_TIMEOUT_S 5.0   /* delivery threads answer within a loop turn */

static json_t *json_time(double t)
{
    if (t <= 0)
        return json_null();
    char buf[64];
    time_rfc3339(t, buf, sizeof buf);
    return json_string(buf);
}

/* GET /api/queue?by=tenant: entries counted by tenant (DESIGN §9). */
static enum MHD_Result get_queue_tenants(struct http_server *s, struct MHD_Connection *c)
{
    struct sched_queue_info *q;
    size_t n;
    if (sched_snapshot_tenants(s->rt->sched, ADMIN_SNAPSHOT_TIMEOUT_S, &q, &n) != PT_OK)
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "the delivery threads did not answer (stopping?)");
    double now = time_now();
    json_int_t total = 0;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        total += q[i].count;
        json_array_append_new(arr, json_pack(
            "{s:o, s:I, s:o, s:o}", "tenant", q[i].key[0] ? json_string(q[i].key) : json_null(),
            "count", (json_int_t)q[i].count, "oldest_age_s",
            q[i].oldest > 0 ? json_real(now > q[i].oldest ? now - q[i].oldest : 0) : json_null(),
            "next_attempt", json_time(q[i].next_attempt)));
    }
    free(q);
    return respond_json(c, MHD_HTTP_OK, json_pack("{s:I, s:o}", "total", total, "tenants", arr),
                        NULL, NULL);
}

static enum MHD_Result get_queue(struct http_server *s, struct MHD_Connection *c,
                                 struct http_req *req, int arg)
{
    struct sched_queue_info *q;
    size_t n;
    const char *by = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "by");
    if (by && strcmp(by, "tenant") == 0)
        return get_queue_tenants(s, c);
    if (by && strcmp(by, "domain") != 0)
        return respond_error(c, MHD_HTTP_BAD_REQUEST, NULL, NULL,
                             "by=%s: known groupings are domain (the default) and tenant", by);
    int rc = sched_snapshot(s->rt->sched, ADMIN_SNAPSHOT_TIMEOUT_S, &q, &n);
    if (rc != PT_OK)
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "the delivery threads did not answer (stopping?)");
    double now = time_now();
    json_int_t total = 0, dead = 0;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        total += q[i].count;
        dead += q[i].dead;
        /* shaping (DESIGN §9): the rule in force; rate in messages/s, null = unlimited
         * or not known yet (the site lookup is pending) */
        json_t *shaping = json_pack(
            "{s:o, s:o, s:o, s:o, s:o}", "rate",
            q[i].shaping_rate > 0 ? json_real(q[i].shaping_rate) : json_null(),
            "connection_limit",
            q[i].shaping_rate >= 0 ? json_integer(q[i].shaping_conn_limit) : json_null(),
            "suspended_until",
            q[i].shaping_suspended_until > 0 ? json_time(q[i].shaping_suspended_until)
                                             : json_null(),
            "reason", q[i].shaping_reason[0] ? json_string(q[i].shaping_reason) : json_null(),
            "tls", q[i].shaping_tls ? json_string(q[i].shaping_tls) : json_null());
        double next = q[i].suspended ? q[i].suspended_until : q[i].next_attempt;
        if (q[i].shaping_suspended_until > next)
            next = q[i].shaping_suspended_until;
        json_array_append_new(arr, json_pack(
            "{s:s, s:s, s:I, s:o, s:o, s:b, s:i, s:o, s:o, s:I}", "domain", q[i].key, "route",
            q[i].route, "count",
            (json_int_t)q[i].count, "oldest_age_s",
            q[i].oldest > 0 ? json_real(now > q[i].oldest ? now - q[i].oldest : 0) : json_null(),
            "next_attempt", json_time(next),
            "suspended", q[i].suspended, "connections", q[i].connections,
            "site", q[i].site[0] ? json_string(q[i].site) : json_null(),
            "shaping", shaping ? shaping : json_null(),
            "dead", (json_int_t)q[i].dead));
    }
    free(q);
    return respond_json(c, MHD_HTTP_OK, json_pack("{s:I, s:I, s:o}", "total", total, "dead", dead,
                                                  "queues", arr), NULL, NULL);
}

static const char *const rcpt_states[] = { "pending", "delivered", "bounced" };

static int message_entry(void *arg, const char *id, const char *domain, const void *rec,
                         size_t len)
{
    json_t *doc = arg;
    struct entry *e;
    if (entry_decode(rec, len, &e) != PT_OK)
        return 0;  /* not ours to judge here: recovery skips it too */
    if (!json_object_get(doc, "sender")) {
        json_object_set_new(doc, "sender", json_string(e->sender));
        json_object_set_new(doc, "received_at", json_time(e->received_at));
        json_object_set_new(doc, "size", json_integer((json_int_t)e->size));
        json_object_set_new(doc, "protocol", json_string(e->protocol == PROTO_HTTP ? "http"
                                                                                  : "smtp"));
    }
    json_t *rc = json_array();
    for (uint32_t i = 0; i < e->nrcpt; i++)
        json_array_append_new(rc, json_pack("{s:s, s:s}", "address", e->rcpts[i].addr, "state",
                                            e->rcpts[i].state < 3 ? rcpt_states[e->rcpts[i].state]
                                                                  : "unknown"));
    bool dead = (e->flags & ENTRY_F_DEAD) != 0;
    json_array_append_new(json_object_get(doc, "destinations"), json_pack(
        "{s:s, s:I, s:o, s:o, s:b, s:s, s:o}", "domain", domain, "attempts",
        (json_int_t)e->attempts, "next_attempt", dead ? json_null() : json_time(e->next_attempt),
        "last_response", e->last_response ? json_string(e->last_response) : json_null(),
        "dead", dead, "state", dead ? "dead" : "queued",
        "expired_at", dead ? json_time(e->next_attempt) : json_null()));
    json_object_set_new(json_array_get(json_object_get(doc, "destinations"),
                                       json_array_size(json_object_get(doc, "destinations")) - 1),
                        "recipients", rc);
    entry_free(e);
    return 0;
}

static enum MHD_Result get_message(struct http_server *s, struct MHD_Connection *c,
                                   struct http_req *req, const char *id)
{
    json_t *doc = json_pack("{s:s, s:[]}", "id", id, "destinations");
    int rc = spool_scan_id(s->rt->spool, id, message_entry, doc);
    if (rc == PT_INVALID) {
        json_decref(doc);
        return respond_error(c, MHD_HTTP_BAD_REQUEST, NULL, NULL,
                             "not a message id: %.40s (16 hex digits)", id);
    }
    if (rc != PT_OK) {
        json_decref(doc);
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "cannot read the spool, try again later");
    }
    if (json_array_size(json_object_get(doc, "destinations")) == 0) {
        json_decref(doc);
        return respond_error(c, MHD_HTTP_NOT_FOUND, NULL, NULL,
                             "no queued message %.40s (delivered, bounced or never queued)", id);
    }
    return respond_json(c, MHD_HTTP_OK, doc, NULL, NULL);
}

/* ---- queue actions (POST /api/queue/suspend, resume, flush, bounce, delete) ---- */

#define ADMIN_SUSPEND_DEFAULT_S 3600.0           /* suspend without a duration: 1 h */
#define ADMIN_SUSPEND_MAX_S (30.0 * 86400.0)
#define ADMIN_REASON_MAX 190

static const char *const admin_fields[][4] = {
    [SCHED_SUSPEND] = { "domain", "duration", "reason", NULL },
    [SCHED_RESUME] = { "domain", NULL },
    [SCHED_FLUSH] = { "domain", NULL },
    [SCHED_BOUNCE] = { "id", "domain", "reason", NULL },
    [SCHED_DELETE] = { "id", "domain", "reason", NULL },
};

static bool admin_field_ok(enum sched_admin_op op, const char *name)
{
    for (int i = 0; admin_fields[op][i]; i++)
        if (strcmp(admin_fields[op][i], name) == 0)
            return true;
    return false;
}

/* Validates the body into rq (strings point into doc or the buffers); on a bad
 * request writes the reason into err. */
static bool admin_parse(json_t *doc, enum sched_admin_op op, struct sched_admin_req *rq,
                        char domain[256], char id[ENTRY_ID_LEN + 1], char *err, size_t errlen)
{
    if (!json_is_object(doc)) {
        snprintf(err, errlen, "the body must be a JSON object");
        return false;
    }
    const char *name;
    json_t *v;
    json_object_foreach(doc, name, v) {
        if (!admin_field_ok(op, name)) {
            snprintf(err, errlen, "unknown field \"%.40s\"", name);
            return false;
        }
    }
    *rq = (struct sched_admin_req){ .op = op };
    json_t *d = json_object_get(doc, "domain"), *i = json_object_get(doc, "id");
    if (d) {
        const char *ds = json_string_value(d);
        if (!ds || !*ds || strlen(ds) > 255) {
            snprintf(err, errlen, "domain: expected a destination (a domain or a relay host)");
            return false;
        }
        smtp_domain_lower(ds, domain, 256);
        rq->domain = domain;
    }
    if (i) {
        const char *is = json_string_value(i);
        if (!is || strlen(is) != ENTRY_ID_LEN || strspn(is, "0123456789abcdefABCDEF") != ENTRY_ID_LEN) {
            snprintf(err, errlen, "id: expected a message id (16 hex digits)");
            return false;
        }
        for (int k = 0; k <= ENTRY_ID_LEN; k++)
            id[k] = (char)(is[k] >= 'A' && is[k] <= 'F' ? is[k] - 'A' + 'a' : is[k]);
        rq->id = id;
    }
    if ((op == SCHED_SUSPEND || op == SCHED_RESUME) && !rq->domain) {
        snprintf(err, errlen, "domain: required");
        return false;
    }
    if ((op == SCHED_BOUNCE || op == SCHED_DELETE) && !rq->domain == !rq->id) {
        snprintf(err, errlen, "give either id or domain");
        return false;
    }
    json_t *r = json_object_get(doc, "reason");
    if (r) {
        const char *rs = json_string_value(r);
        bool clean = rs && strlen(rs) <= ADMIN_REASON_MAX;
        for (const char *p = rs; clean && *p; p++)
            clean = (unsigned char)*p >= 0x20 && *p != 0x7f;
        if (!clean) {
            snprintf(err, errlen, "reason: expected one line of at most %d characters",
                     ADMIN_REASON_MAX);
            return false;
        }
        rq->reason = *rs ? rs : NULL;
    }
    if (op == SCHED_SUSPEND) {
        double secs = ADMIN_SUSPEND_DEFAULT_S;
        json_t *du = json_object_get(doc, "duration");
        if (du && !(json_is_number(du) ? (secs = json_number_value(du), true)
                    : json_is_string(du) && parse_duration(json_string_value(du), &secs) == PT_OK) ) {
            snprintf(err, errlen, "duration: expected seconds or a duration like \"30m\"");
            return false;
        }
        if (!(secs > 0 && secs <= ADMIN_SUSPEND_MAX_S)) {
            snprintf(err, errlen, "duration: must be more than 0 and at most 30 days");
            return false;
        }
        rq->until = time_now() + secs;
    }
    return true;
}

/* arg: the enum sched_admin_op */
static enum MHD_Result post_admin(struct http_server *s, struct MHD_Connection *c,
                                  struct http_req *req, int arg)
{
    enum sched_admin_op op = (enum sched_admin_op)arg;
    json_t *doc = json_loadb(req->data.data ? req->data.data : "", req->data.len, 0, NULL);
    struct sched_admin_req rq;
    char domain[256], id[ENTRY_ID_LEN + 1], err[200];
    if (!admin_parse(doc, op, &rq, domain, id, err, sizeof err)) {
        json_decref(doc);
        return respond_error(c, MHD_HTTP_BAD_REQUEST, NULL, NULL, "%s", err);
    }
    uint64_t n = 0;
    int rc = sched_admin(s->rt->sched, &rq, ADMIN_SNAPSHOT_TIMEOUT_S, &n);
    json_decref(doc);
    if (rc != PT_OK)
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "the delivery threads did not answer (stopping?)");
    static const char *const names[] = { "suspend", "resume", "flush", "bounce", "delete" };
    log_info("http %s: %s: queue %s %s: %llu recipient(s)", s->l->listen, req->ip, names[op],
             rq.id ? rq.id : rq.domain ? rq.domain : "(all)", (unsigned long long)n);
    return respond_json(c, MHD_HTTP_OK, json_pack("{s:I}", "affected", (json_int_t)n), NULL,
                        NULL);
}

/* POST /api/reload: the same as SIGHUP (DESIGN §11). Runs the reload on this
 * thread: it reads the config and waits for the SMTP workers to switch
 * listeners (milliseconds), never for mail. */
static enum MHD_Result post_reload(struct http_server *s, struct MHD_Connection *c,
                                   struct http_req *req, int arg)
{
    char err[1024];
    if (!s->rt->reload)
        return respond_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, NULL, NULL,
                             "reload is not available");
    log_info("http %s: %s: reload requested", s->l->listen, req->ip);
    if (s->rt->reload(s->rt->reload_arg, err, sizeof err) != PT_OK)
        return respond_json(c, MHD_HTTP_BAD_REQUEST, json_pack("{s:s}", "error", err), NULL,
                            NULL);
    return respond_json(c, MHD_HTTP_OK, json_pack("{s:b}", "reloaded", 1), NULL, NULL);
}

typedef enum MHD_Result (*route_fn)(struct http_server *s, struct MHD_Connection *c,
                                   struct http_req *req, int arg);

/* Every endpoint. GET routes also answer HEAD (MHD omits the body). */
static const struct route {
    const char *path;
    const char *method;
    route_fn fn;
    int arg;
    bool takes_body;
} routes[] = {
    { "/metrics", MHD_HTTP_METHOD_GET, get_metrics, 0, false },
    { "/healthz", MHD_HTTP_METHOD_GET, get_healthz, 0, false },
    { "/readyz", MHD_HTTP_METHOD_GET, get_readyz, 0, false },
    { "/v1/message", MHD_HTTP_METHOD_POST, post_inject, 0, true },
    { "/api/inject/v1", MHD_HTTP_METHOD_POST, post_inject, 1, true },
    { "/api/queue", MHD_HTTP_METHOD_GET, get_queue, 0, false },
    { "/api/queue/suspend", MHD_HTTP_METHOD_POST, post_admin, SCHED_SUSPEND, true },
    { "/api/queue/resume", MHD_HTTP_METHOD_POST, post_admin, SCHED_RESUME, true },
    { "/api/queue/flush", MHD_HTTP_METHOD_POST, post_admin, SCHED_FLUSH, true },
    { "/api/queue/bounce", MHD_HTTP_METHOD_POST, post_admin, SCHED_BOUNCE, true },
    { "/api/queue/delete", MHD_HTTP_METHOD_POST, post_admin, SCHED_DELETE, true },
    { "/api/reload", MHD_HTTP_METHOD_POST, post_reload, 0, false },
};

#define MESSAGE_PREFIX "/api/message/"

static bool route_takes_body(const char *path, const char *method)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (routes[i].takes_body && strcmp(routes[i].path, path) == 0 &&
            strcmp(routes[i].method, method) == 0)
            return true;
    return false;
}

static enum MHD_Result route(struct http_server *s, struct MHD_Connection *c, const char *path,
                             const char *method, struct http_req *req)
{
    char allow[64] = "";
    if (strncmp(path, MESSAGE_PREFIX, strlen(MESSAGE_PREFIX)) == 0 && path[strlen(MESSAGE_PREFIX)]) {
        if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0)
            return get_message(s, c, req, path + strlen(MESSAGE_PREFIX));
        return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, MHD_HTTP_HEADER_ALLOW, "GET, HEAD",
                             "method %.32s not allowed on %.*s (allowed: GET, HEAD)", method,
                             ERR_PATH_MAX, path);
    }
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *r = &routes[i];
        if (strcmp(r->path, path) != 0)
            continue;
        bool get = strcmp(r->method, MHD_HTTP_METHOD_GET) == 0;
        if (strcmp(method, r->method) == 0 || (get && strcmp(method, MHD_HTTP_METHOD_HEAD) == 0))
            return r->fn(s, c, req, r->arg);
        size_t o = strlen(allow);
        snprintf(allow + o, sizeof allow - o, "%s%s%s", o ? ", " : "", r->method,
                 get ? ", HEAD" : "");
    }
    if (allow[0])
        return respond_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, MHD_HTTP_HEADER_ALLOW, allow,
                             "method %.32s not allowed on %.*s (allowed: %s)", method,
                             ERR_PATH_MAX, path, allow);
    return respond_error(c, MHD_HTTP_NOT_FOUND, NULL, NULL, "no such endpoint: %.*s",
                         ERR_PATH_MAX, path);
}

/* ---- auth ------------------------------------------------------------------ */

static void key_digest(const char *key, size_t len, unsigned char out[KEY_HASH_LEN])
{
    unsigned int n = 0;
    if (EVP_Digest(key, len, out, &n, EVP_sha256(), NULL) != 1 || n != KEY_HASH_LEN)
        abort();  /* SHA-256 is always available in OpenSSL 3 */
}

/* true if "Bearer KEY" names one of the api_keys. Keys are compared as SHA-256
 * digests with CRYPTO_memcmp: time depends neither on where a guess differs nor on
 * its length; every key is tried. */
static bool bearer_ok(const struct http_server *s, const char *hdr)
{
    if (!hdr || s->n_keys == 0 || strncasecmp(hdr, "Bearer", 6) != 0 ||
        (hdr[6] != ' ' && hdr[6] != '\t'))
        return false;
    const char *k = hdr + 6;
    while (*k == ' ' || *k == '\t')
        k++;
    size_t n = strlen(k);
    while (n && (k[n - 1] == ' ' || k[n - 1] == '\t'))
        n--;
    if (n == 0)
        return false;
    unsigned char h[KEY_HASH_LEN];
    key_digest(k, n, h);
    int match = 0;
    for (int i = 0; i < s->n_keys; i++)
        match |= CRYPTO_memcmp(h, s->key_hash[i], KEY_HASH_LEN) == 0;
    return match;
}

static bool authorized(const struct http_server *s, struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr &&
        cidr_match_any(s->l->trusted_hosts, s->l->n_trusted_hosts, ci->client_addr))
        return true;
    return bearer_ok(s, MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION));
}

/* ---- http_request hook ------------------------------------------------------ */

#define HOOK_HEADERS_MAX 100    /* request headers shown to http_request */

struct hdr_list {
    struct hook_kv kv[HOOK_HEADERS_MAX];
    size_t n;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    struct hdr_list *h = cls;
    if (h->n < HOOK_HEADERS_MAX && key)
        h->kv[h->n++] = (struct hook_kv){ key, value };
    return MHD_YES;
}

/* Runs the http_request handlers. true when they answered (the response is
 * queued: theirs, or 500 when a handler failed). */
static bool request_hook(struct http_server *s, struct MHD_Connection *c, const char *url,
                         const char *method, struct http_req *req, enum MHD_Result *ret)
{
    lua_State *L = runtime_gen_http_lua(req->gen, s->index);
    if (!L || !hooks_any(L, "http_request"))
        return false;
    struct hdr_list h = { .n = 0 };
    MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, &h);
    struct buf body;
    buf_init(&body, HTTP_MAX_BODY);
    int status = 0;
    char err[512];
    if (hooks_run_request(L, method, url, req->ip, h.kv, h.n, &status, &body, err,
                          sizeof err) != PT_OK) {
        buf_free(&body);
        log_warn("http %s: %s: http_request hook failed for %s %.200s: %s", s->l->listen,
                 req->ip, method, url, err);
        *ret = respond_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, NULL,
                             "http_request hook failed; see the server log");
        return true;
    }
    if (status == 0) {
        buf_free(&body);
        return false;
    }
    size_t len;
    char *text = buf_steal(&body, &len);
    const char *ctype = len && (text[0] == '{' || text[0] == '[') ? "application/json"
                                                                   : "text/plain; charset=utf-8";
    log_info("http %s: %s: http_request hook answered %d to %s %.200s", s->l->listen, req->ip,
             status, method, url);
    *ret = respond(c, (unsigned)status, ctype, text, len, NULL, NULL);
    return true;
}

/* ---- MHD callbacks ---------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct http_server *s = cls;
    struct http_req *req = *con_cls;
    if (!req) {  /* first call: headers only */
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        *con_cls = req;
        req->gen = runtime_gen_acquire(s->rt);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        snprintf(req->ip, sizeof req->ip, "?");
        if (ci && ci->client_addr)
            cidr_addr_str(ci->client_addr, req->ip, sizeof req->ip);
        enum MHD_Result hret;
        if (request_hook(s, c, url, method, req, &hret)) {
            req->answered = true;
            return hret;
        }
        if (!authorized(s, c)) {
            req->answered = true;
            return respond_error(c, MHD_HTTP_UNAUTHORIZED, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                 "Bearer", "authentication required: a trusted host, or "
                                 "Authorization: Bearer with an API key");
        }
        req->takes_body = route_takes_body(url, method);
        size_t max = req->takes_body ? HTTP_MAX_INJECT : HTTP_MAX_BODY;
        buf_init(&req->data, max);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > max) {
            req->answered = true;
            return respond_error(c, MHD_HTTP_CONTENT_TOO_LARGE, NULL, NULL,
                                 "request body too large (at most %zu bytes)", max);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        req->body += n;
        if (req->answered)
            return MHD_YES;  /* refused already: drop the rest */
        /* a chunked body has no length to refuse up front: cut the connection */
        if (!req->takes_body)
            return req->body > HTTP_MAX_BODY ? MHD_NO : MHD_YES;
        return buf_append(&req->data, upload_data, n) == PT_OK ? MHD_YES : MHD_NO;
    }
    if (req->answered)
        return MHD_YES;
    if (!req->job) {
        req->answered = true;
        log_debug("http %s: %s %s %.200s", s->l->listen, req->ip, method, url);
    }
    return route(s, c, url, method, req);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    struct http_req *req = *con_cls;
    if (req) {
        job_free(req->job);  /* only if the client left before its answer */
        buf_free(&req->data);
        runtime_gen_release(req->gen);
        free(req);
    }
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct http_server *s = cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    if (atomic_load(&s->starting)) {  /* keep them all: the first says why */
        size_t o = strlen(s->start_err);
        snprintf(s->start_err + o, sizeof s->start_err - o, "%s%s", o ? "; " : "", msg);
    }
    else
        log_debug("http %s: %s", s->l->listen, msg);  /* client errors, TLS handshakes */
}

/* ---- start / stop ---------------------------------------------------------- */

static char *read_pem(const char *path, const char *what, const char *listen, size_t *len,
                      char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "http listener %s: tls.%s %s: %s", listen, what, path,
                 strerror(errno));
        return NULL;
    }
    char *data = malloc(HTTP_MAX_PEM + 1);
    size_t n = data ? fread(data, 1, HTTP_MAX_PEM + 1, f) : 0;
    bool bad = !data || ferror(f) || n > HTTP_MAX_PEM || n == 0;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "http listener %s: tls.%s %s: %s", listen, what, path,
                 !data ? "out of memory" : n > HTTP_MAX_PEM ? "file too large" : "cannot read");
        free(data);
        return NULL;
    }
    data[n] = 0;
    *len = n;
    return data;
}

/* gnutls priority string for the listener's (else configure_tls's) minimum version */
static const char *tls_priorities(const struct runtime *rt, const struct cfg_http_listener *l)
{
    const char *min = l->tls->min_tls_version ? l->tls->min_tls_version
                                              : rt->cfg->tls.min_tls_version;
    if (min && strcmp(min, "1.3") == 0)
        return "NORMAL:-VERS-ALL:+VERS-TLS1.3";
    return "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
}

static void free_server(struct http_server *s)
{
    if (s->key_pem)
        OPENSSL_cleanse(s->key_pem, s->key_len);
    free(s->key_pem);
    free(s->cert_pem);
    free(s->key_hash);
    free(s);
}

struct http_server *http_start(struct runtime *rt, const struct cfg_http_listener *l, int index,
                               char *err, size_t errlen)
{
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "http listener %s: out of memory", l->listen);
        return NULL;
    }
    s->rt = rt;
    s->l = l;
    s->index = index;
    atomic_init(&s->ready, false);
    atomic_init(&s->starting, true);
    if (l->n_api_keys) {
        s->key_hash = calloc((size_t)l->n_api_keys, sizeof *s->key_hash);
        if (!s->key_hash) {
            snprintf(err, errlen, "http listener %s: out of memory", l->listen);
            free_server(s);
            return NULL;
        }
        for (int i = 0; i < l->n_api_keys; i++)
            if (l->api_keys[i][0])  /* an empty key never matches: bearer_ok needs n > 0 */
                key_digest(l->api_keys[i], strlen(l->api_keys[i]), s->key_hash[s->n_keys++]);
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     MHD_ALLOW_SUSPEND_RESUME;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL
                                                                    : MHD_USE_POLL;
    if (l->tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "http listener %s: tls is configured but this libmicrohttpd "
                     "was built without TLS support", l->listen);
            free_server(s);
            return NULL;
        }
        size_t clen;
        s->cert_pem = read_pem(l->tls->cert_file, "cert_file", l->listen, &clen, err, errlen);
        if (s->cert_pem)
            s->key_pem = read_pem(l->tls->key_file, "key_file", l->listen, &s->key_len, err,
                                  errlen);
        if (!s->cert_pem || !s->key_pem) {
            free_server(s);
            return NULL;
        }
        flags |= MHD_USE_TLS;
    }
    int fd = netsock_listen(l->host, l->port, l->listen, "http listener", 0, 128, err, errlen);
    if (fd < 0) {
        free_server(s);
        return NULL;
    }
    struct MHD_OptionItem tls_opts[] = {
        { MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem },
        { MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem },
        { MHD_OPTION_HTTPS_PRIORITIES, 0, l->tls ? (void *)tls_priorities(rt, l) : NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,   /* first, or MHD warns on stderr */
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)HTTP_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTP_CONNECTION_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_ARRAY, l->tls ? tls_opts : &tls_opts[3],
        MHD_OPTION_END);
    if (!s->daemon) {
        if (l->tls)
            snprintf(err, errlen, "http listener %s: cannot start (tls cert_file %s, key_file "
                     "%s): %s", l->listen, l->tls->cert_file, l->tls->key_file,
                     s->start_err[0] ? s->start_err : "libmicrohttpd refused them");
        else
            snprintf(err, errlen, "http listener %s: cannot start: %s", l->listen,
                     s->start_err[0] ? s->start_err : "libmicrohttpd refused the options");
        /* fd is not closed here: MHD may already have closed it on some of its
         * failure paths, and a second close could hit a reused descriptor. The
         * process is about to exit anyway. */
        free_server(s);
        return NULL;
    }
    atomic_store(&s->starting, false);
    return s;
}

void http_set_ready(struct http_server *s, bool ready)
{
    if (s)
        atomic_store(&s->ready, ready);
}

const char *http_scheme(const struct http_server *s)
{
    return s->l->tls ? "https" : "http";
}

void http_stop(struct http_server *s)
{
    if (!s)
        return;
    /* Injections in flight finish first (the spool is still running): MHD must not
     * be stopped with a suspended connection, and their mail is queued already. */
    atomic_store(&s->stopping, true);
    for (int i = 0; i < 10000 && atomic_load(&s->inflight) > 0; i++)
        usleep(1000);
    MHD_stop_daemon(s->daemon);  /* closes the listen socket and every connection */
    free_server(s);
}
