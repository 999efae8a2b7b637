/* Metrics registry; see metrics.h. Counters and the histogram are summed in per-thread
 * shards (hot path: one uncontended lock); gauges live in the registry itself.
 * Must never exceed METRICS_MAX_SERIES label sets nor block on anything but memory.
 * SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obs/metrics.h"
#include "obs/version.h"
#include "util/utf8.h"
#include "util/buf.h"
#include "util/result.h"

enum metric_type { MT_COUNTER, MT_GAUGE, MT_HISTOGRAM };

struct metric_def {
    const char *name;
    const char *help;
    enum metric_type type;
    int nlabels;             /* 0..2; histograms have none */
    const char *labels[2];
};

/* Names, types and labels are fixed by DESIGN §7. */
static const struct metric_def defs[M__COUNT] = {
    [M_QUEUE_DEPTH] = {"petrel_queue_depth",
        "Messages waiting in the queue per destination domain.", MT_GAUGE, 1, {"domain"}},
    [M_RECEIVED] = {"petrel_messages_received_total",
        "Messages accepted per listener.", MT_COUNTER, 1, {"listener"}},
    [M_DELIVERED] = {"petrel_messages_delivered_total",
        "Recipients delivered per destination domain.", MT_COUNTER, 1, {"domain"}},
    [M_DEFERRED] = {"petrel_messages_deferred_total",
        "Delivery attempts deferred per destination domain.", MT_COUNTER, 1, {"domain"}},
    [M_BOUNCED] = {"petrel_messages_bounced_total",
        "Recipients bounced per destination domain.", MT_COUNTER, 1, {"domain"}},
    [M_LATENCY] = {"petrel_delivery_latency_seconds",
        "Time from reception to delivery.", MT_HISTOGRAM, 0, {NULL}},
    [M_SMTP_ERRORS] = {"petrel_smtp_errors_total",
        "SMTP error replies sent (inbound) or received (outbound) by code class.",
        MT_COUNTER, 2, {"direction", "code_class"}},
    [M_TLS_FAILURES] = {"petrel_tls_failures_total",
        "Failed TLS handshakes by direction.", MT_COUNTER, 1, {"direction"}},
    [M_AUTH_FAILURES] = {"petrel_auth_failures_total",
        "Failed SMTP AUTH attempts.", MT_COUNTER, 0, {NULL}},
    [M_CONNECTIONS] = {"petrel_connections",
        "Open SMTP connections by direction and domain.", MT_GAUGE, 2, {"direction", "domain"}},
    [M_SPOOL_BYTES] = {"petrel_spool_bytes",
        "Bytes of message data in the spool.", MT_GAUGE, 0, {NULL}},
    [M_CLUSTER_LIMITS_DEGRADED] = {"petrel_cluster_limits_degraded",
        "1 while Redis is unreachable and each node applies 1/N of the shared limits.",
        MT_GAUGE, 0, {NULL}},
    [M_SHAPING_ACTIONS] = {"petrel_shaping_actions_total",
        "Shaping automation triggers by action (configure_shaping automation).", MT_COUNTER, 1,
        {"action"}},
    [M_TENANT_DELIVERED] = {"petrel_tenant_messages_delivered_total",
        "Recipients delivered per tenant (configure_tenant tenants only).", MT_COUNTER, 1,
        {"tenant"}},
};

static const char *const type_names[] = {
    [MT_COUNTER] = "counter", [MT_GAUGE] = "gauge", [MT_HISTOGRAM] = "histogram",
};

/* Latency buckets: the fast path (milliseconds to a minute) and then retries, which
 * take minutes to days. */
static const double latency_le[] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    300, 1800, 3600, 21600, 86400,
};
#define NLE (sizeof latency_le / sizeof latency_le[0])
/* Histogram slots: NLE + 1 per-bucket (not cumulative) counts, the last one above every
 * bound, then the sum of observations. */
#define HIST_SUM (NLE + 1)
#define HIST_SLOTS (NLE + 2)

static size_t slots_of(enum metric_id m)
{
    return defs[m].type == MT_HISTOGRAM ? HIST_SLOTS : 1;
}

/* A label set, made canonical (cut, UTF-8 repaired) before anything is looked up. */
struct key {
    enum metric_id m;
    uint64_t hash;
    size_t len;
    char data[2 * (METRICS_LABEL_MAX + 1)];   /* each value NUL-terminated */
};

/* One label set of one metric. Owned by the registry; freed only by metrics_reset. */
struct series {
    struct series *next;     /* same metric, in creation order (render order) */
    uint64_t hash;
    enum metric_id m;
    size_t len;
    char *labels;            /* the key data, stored after v[] */
    /* v[0 .. slots): a gauge's value, or what exited threads contributed;
     * v[slots .. 2*slots): scratch for summing the shards. */
    double v[];
};

/* A thread's counts for the label sets it has touched. Only its thread writes it; the
 * lock is shared with render and reset only, so it is uncontended on the hot path. */
struct shard_ent {
    struct series *s;
    double v[];              /* slots_of(s->m) */
};

#define SHARD_ALIGN 128   /* two cache lines: adjacent-line prefetch counts too */

struct shard {
    pthread_mutex_t lock;
    struct shard_ent **tab;  /* open addressing, power-of-two size */
    size_t cap, n;
    struct shard *next;
};

/* Process-wide by nature (one /metrics view of the process); the registry is a
 * deliberate exception to "no global mutable state". Lock order: reg.lock, then a
 * shard's lock. */
static struct {
    pthread_mutex_t lock;
    struct series **tab;     /* open addressing, power-of-two size */
    size_t cap, n;
    size_t limited;          /* series that count against METRICS_MAX_SERIES */
    struct series *head[M__COUNT], *tail[M__COUNT];
    struct shard *shards;
} reg = { .lock = PTHREAD_MUTEX_INITIALIZER };

static pthread_key_t shard_key;
static pthread_once_t shard_once = PTHREAD_ONCE_INIT;
static _Thread_local struct shard *tls_shard;

/* ---- keys ---- */


/* Copies at most METRICS_LABEL_MAX bytes of s to dst, whole characters only, invalid
 * bytes as U+FFFD; returns the length (dst is not terminated). */
static size_t label_copy(char *dst, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    while (o < METRICS_LABEL_MAX && *p && *p < 0x80)   /* the usual case: ASCII */
        dst[o++] = (char)*p++;
    while (*p) {
        if (*p < 0x80) {
            if (o + 1 > METRICS_LABEL_MAX)
                break;
            dst[o++] = (char)*p++;
            continue;
        }
        size_t n = utf8_seq_len(p);
        if (o + (n ? n : 3) > METRICS_LABEL_MAX)
            break;
        if (n) {
            memcpy(dst + o, p, n);
            p += n;
            o += n;
        } else {
            memcpy(dst + o, "\xef\xbf\xbd", 3);
            p++;
            o += 3;
        }
    }
    return o;
}

/* Word-at-a-time multiplicative hash: the key is hashed on every update. */
static void key_hash(struct key *k)
{
    const uint64_t mul = 0x9e3779b97f4a7c15ULL;
    uint64_t h = ((uint64_t)k->m << 32 | k->len) * mul, w;
    const char *p = k->data;
    size_t n = k->len;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * mul;
        h ^= h >> 29;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * mul;
    k->hash = h ^ (h >> 32);
}

static void key_make(struct key *k, enum metric_id m, const char *l1, const char *l2)
{
    const char *vals[2] = {l1, l2};
    k->m = m;
    k->len = 0;
    for (int i = 0; i < defs[m].nlabels; i++) {
        k->len += label_copy(k->data + k->len, vals[i] ? vals[i] : "");
        k->data[k->len++] = 0;
    }
    key_hash(k);
}

static void key_other(struct key *k, enum metric_id m)
{
    key_make(k, m, METRICS_OTHER, METRICS_OTHER);
}

static bool key_is_other(const struct key *k)
{
    struct key o;
    key_other(&o, k->m);
    return o.len == k->len && memcmp(o.data, k->data, k->len) == 0;
}

static bool series_is(const struct series *s, const struct key *k)
{
    return s->hash == k->hash && s->m == k->m && s->len == k->len &&
           memcmp(s->labels, k->data, k->len) == 0;
}

/* ---- registry (reg.lock held) ---- */

static struct series **reg_slot(struct series **tab, size_t cap, const struct key *k)
{
    size_t mask = cap - 1;
    for (size_t i = k->hash & mask;; i = (i + 1) & mask)
        if (!tab[i] || series_is(tab[i], k))
            return &tab[i];
}

static int reg_grow(void)
{
    size_t cap = reg.cap ? reg.cap * 2 : 64;
    struct series **tab = calloc(cap, sizeof *tab);
    if (!tab)
        return PT_NOMEM;
    for (size_t i = 0; i < reg.cap; i++) {
        struct series *s = reg.tab[i];
        if (!s)
            continue;
        size_t j = s->hash & (cap - 1);
        while (tab[j])
            j = (j + 1) & (cap - 1);
        tab[j] = s;
    }
    free(reg.tab);
    reg.tab = tab;
    reg.cap = cap;
    return PT_OK;
}

static struct series *series_find(const struct key *k)
{
    return reg.cap ? *reg_slot(reg.tab, reg.cap, k) : NULL;
}

/* The series for k, created if needed; past the bound, the all-"other" series. NULL only
 * when out of memory. */
static struct series *series_get(const struct key *k)
{
    struct series *s = series_find(k);
    if (s)
        return s;
    bool other = key_is_other(k);
    if (!other && reg.limited >= METRICS_MAX_SERIES) {
        struct key o;
        key_other(&o, k->m);
        return series_get(&o);
    }
    if ((reg.n + 1) * 2 > reg.cap && reg_grow())
        return NULL;
    size_t slots = slots_of(k->m);
    s = calloc(1, sizeof *s + 2 * slots * sizeof(double) + k->len + 1);
    if (!s)
        return NULL;
    s->hash = k->hash;
    s->m = k->m;
    s->len = k->len;
    s->labels = (char *)(s->v + 2 * slots);
    memcpy(s->labels, k->data, k->len);
    *reg_slot(reg.tab, reg.cap, k) = s;
    if (reg.tail[k->m])
        reg.tail[k->m]->next = s;
    else
        reg.head[k->m] = s;
    reg.tail[k->m] = s;
    reg.n++;
    if (!other)
        reg.limited++;
    return s;
}

/* Adds one update to a value array: slot is the bucket for histograms. */
static void values_apply(double *v, enum metric_id m, size_t slot, double x)
{
    if (defs[m].type == MT_HISTOGRAM) {
        v[slot] += 1;
        v[HIST_SUM] += x;
    } else {
        v[0] += x;
    }
}

/* ---- shards ---- */

static struct shard_ent **shard_slot(struct shard *sh, uint64_t hash, const struct key *k,
                                     const struct series *s)
{
    size_t mask = sh->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct shard_ent *e = sh->tab[i];
        if (!e || (s ? e->s == s : series_is(e->s, k)))
            return &sh->tab[i];
    }
}

static struct shard_ent *shard_find(struct shard *sh, const struct key *k)
{
    return sh->cap ? *shard_slot(sh, k->hash, k, NULL) : NULL;
}

static int shard_grow(struct shard *sh)
{
    size_t cap = sh->cap ? sh->cap * 2 : 16;
    struct shard_ent **tab = calloc(cap, sizeof *tab);
    if (!tab)
        return PT_NOMEM;
    for (size_t i = 0; i < sh->cap; i++) {
        struct shard_ent *e = sh->tab[i];
        if (!e)
            continue;
        size_t j = e->s->hash & (cap - 1);
        while (tab[j])
            j = (j + 1) & (cap - 1);
        tab[j] = e;
    }
    free(sh->tab);
    sh->tab = tab;
    sh->cap = cap;
    return PT_OK;
}

static struct shard_ent *shard_get(struct shard *sh, struct series *s)
{
    if (sh->cap) {
        struct shard_ent *e = *shard_slot(sh, s->hash, NULL, s);
        if (e)
            return e;
    }
    if ((sh->n + 1) * 2 > sh->cap && shard_grow(sh))
        return NULL;
    struct shard_ent *e = calloc(1, sizeof *e + slots_of(s->m) * sizeof(double));
    if (!e)
        return NULL;
    e->s = s;
    *shard_slot(sh, s->hash, NULL, s) = e;
    sh->n++;
    return e;
}

static void shard_clear(struct shard *sh)
{
    for (size_t i = 0; i < sh->cap; i++) {
        free(sh->tab[i]);
        sh->tab[i] = NULL;
    }
    sh->n = 0;
}

/* Thread exit: fold the thread's counts into the registry so they outlive it. */
static void shard_retire(void *p)
{
    struct shard *sh = p;
    pthread_mutex_lock(&reg.lock);
    for (struct shard **pp = &reg.shards; *pp; pp = &(*pp)->next) {
        if (*pp == sh) {
            *pp = sh->next;
            break;
        }
    }
    pthread_mutex_lock(&sh->lock);
    for (size_t i = 0; i < sh->cap; i++) {
        struct shard_ent *e = sh->tab[i];
        if (!e)
            continue;
        for (size_t j = 0, n = slots_of(e->s->m); j < n; j++)
            e->s->v[j] += e->v[j];
    }
    shard_clear(sh);
    pthread_mutex_unlock(&sh->lock);
    pthread_mutex_unlock(&reg.lock);
    pthread_mutex_destroy(&sh->lock);
    free(sh->tab);
    free(sh);
    tls_shard = NULL;
}

static void shard_key_make(void)
{
    pthread_key_create(&shard_key, shard_retire);
}

/* The calling thread's shard, created on first use; NULL when out of memory. */
static struct shard *my_shard(void)
{
    if (tls_shard)
        return tls_shard;
    pthread_once(&shard_once, shard_key_make);
    /* Cache-line aligned: shards of different threads must not share a line. */
    size_t size = (sizeof(struct shard) + SHARD_ALIGN - 1) / SHARD_ALIGN * SHARD_ALIGN;
    struct shard *sh = aligned_alloc(SHARD_ALIGN, size);
    if (!sh)
        return NULL;
    memset(sh, 0, size);
    pthread_mutex_init(&sh->lock, NULL);
    pthread_mutex_lock(&reg.lock);
    sh->next = reg.shards;
    reg.shards = sh;
    pthread_mutex_unlock(&reg.lock);
    pthread_setspecific(shard_key, sh);
    tls_shard = sh;
    return sh;
}

/* Counter and histogram updates: the thread's own shard when it already knows the label
 * set; otherwise resolve it in the registry (creating or folding it) first. */
static void shard_update(const struct key *k, size_t slot, double x)
{
    struct shard *sh = my_shard();
    if (sh) {
        pthread_mutex_lock(&sh->lock);
        struct shard_ent *e = shard_find(sh, k);
        if (e)
            values_apply(e->v, k->m, slot, x);
        pthread_mutex_unlock(&sh->lock);
        if (e)
            return;
    }
    pthread_mutex_lock(&reg.lock);
    struct series *s = series_get(k);
    if (s) {
        struct shard_ent *e = NULL;
        if (sh) {
            pthread_mutex_lock(&sh->lock);
            e = shard_get(sh, s);
            if (e)
                values_apply(e->v, k->m, slot, x);
            pthread_mutex_unlock(&sh->lock);
        }
        if (!e)   /* no memory for the shard: count in the registry directly */
            values_apply(s->v, k->m, slot, x);
    }
    pthread_mutex_unlock(&reg.lock);
}

/* ---- API ---- */

static bool valid_id(enum metric_id m)
{
    return (unsigned)m < M__COUNT;
}

static void gauge_update(enum metric_id m, const char *l1, const char *l2, double x, bool set)
{
    struct key k;
    key_make(&k, m, l1, l2);
    pthread_mutex_lock(&reg.lock);
    struct series *s = series_get(&k);
    if (s)
        s->v[0] = set ? x : s->v[0] + x;
    pthread_mutex_unlock(&reg.lock);
}

void metrics_inc(enum metric_id m, const char *l1, const char *l2, double v)
{
    if (!valid_id(m) || !isfinite(v))
        return;
    if (defs[m].type == MT_GAUGE) {
        gauge_update(m, l1, l2, v, false);
        return;
    }
    if (defs[m].type != MT_COUNTER || v < 0)
        return;
    struct key k;
    key_make(&k, m, l1, l2);
    shard_update(&k, 0, v);
}

void metrics_add(enum metric_id m, const char *l1, const char *l2, double delta)
{
    if (valid_id(m) && defs[m].type == MT_GAUGE && isfinite(delta))
        gauge_update(m, l1, l2, delta, false);
}

void metrics_set(enum metric_id m, const char *l1, const char *l2, double v)
{
    if (valid_id(m) && defs[m].type == MT_GAUGE && isfinite(v))
        gauge_update(m, l1, l2, v, true);
}

void metrics_observe(enum metric_id m, double v)
{
    if (!valid_id(m) || defs[m].type != MT_HISTOGRAM || !isfinite(v))
        return;
    size_t slot = 0;
    while (slot < NLE && v > latency_le[slot])
        slot++;
    struct key k;
    key_make(&k, m, NULL, NULL);
    shard_update(&k, slot, v);
}

const char *metrics_code_class(int code)
{
    if (code >= 400 && code <= 499)
        return "4xx";
    if (code >= 500 && code <= 599)
        return "5xx";
    return NULL;
}

/* Sums base values and every live shard into each series' scratch (reg.lock held). */
static void sum_shards(void)
{
    for (int m = 0; m < M__COUNT; m++) {
        size_t slots = slots_of(m);
        for (struct series *s = reg.head[m]; s; s = s->next)
            memcpy(s->v + slots, s->v, slots * sizeof(double));
    }
    for (struct shard *sh = reg.shards; sh; sh = sh->next) {
        pthread_mutex_lock(&sh->lock);
        for (size_t i = 0; i < sh->cap; i++) {
            struct shard_ent *e = sh->tab[i];
            if (!e)
                continue;
            size_t slots = slots_of(e->s->m);
            for (size_t j = 0; j < slots; j++)
                e->s->v[slots + j] += e->v[j];
        }
        pthread_mutex_unlock(&sh->lock);
    }
}

double metrics_value(enum metric_id m, const char *l1, const char *l2)
{
    if (!valid_id(m))
        return 0;
    struct key k;
    key_make(&k, m, l1, l2);
    double total = 0;
    pthread_mutex_lock(&reg.lock);
    struct series *s = series_find(&k);
    if (s) {
        size_t slots = slots_of(m);
        double *sum = s->v + slots;
        memcpy(sum, s->v, slots * sizeof(double));
        for (struct shard *sh = reg.shards; sh; sh = sh->next) {
            pthread_mutex_lock(&sh->lock);
            struct shard_ent *e = sh->cap ? *shard_slot(sh, s->hash, NULL, s) : NULL;
            if (e)
                for (size_t j = 0; j < slots; j++)
                    sum[j] += e->v[j];
            pthread_mutex_unlock(&sh->lock);
        }
        if (defs[m].type == MT_HISTOGRAM)
            for (size_t j = 0; j <= NLE; j++)
                total += sum[j];
        else
            total = sum[0];
    }
    pthread_mutex_unlock(&reg.lock);
    return total;
}

/* Shortest of %.15g..%.17g that reads back exactly; integers without exponent. */
static void fmt_value(double v, char *out, size_t outlen)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
    } else if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, outlen, "%.0f", v);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(out, outlen, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

/* Label value escaping of the text format: backslash, double quote and line feed. */
static int append_label_value(struct buf *out, const char *v, size_t len)
{
    int rc = buf_reserve(out, 2 * len);
    for (size_t i = 0; !rc && i < len; i++) {
        char c = v[i];
        if (c == '\\' || c == '"' || c == '\n') {
            out->data[out->len++] = '\\';
            c = c == '\n' ? 'n' : c;
        }
        out->data[out->len++] = c;
    }
    if (!rc)
        out->data[out->len] = 0;
    return rc;
}

/* "{a=\"x\",b=\"y\"" without the closing brace, or nothing for an unlabeled series;
 * the caller closes it (histograms add le first). */
static int append_labels(struct buf *out, const struct metric_def *d, const char *labels)
{
    int rc = PT_OK;
    for (int i = 0; !rc && i < d->nlabels; i++) {
        size_t len = strlen(labels);
        rc = buf_appendf(out, "%s%s=\"", i ? "," : "{", d->labels[i]);
        if (!rc)
            rc = append_label_value(out, labels, len);
        if (!rc)
            rc = buf_append(out, "\"", 1);
        labels += len + 1;
    }
    return rc;
}

static int render_sample(struct buf *out, const struct metric_def *d, const char *labels,
                         const double *v)
{
    char num[40];
    int rc;
    if (d->type != MT_HISTOGRAM) {
        fmt_value(v[0], num, sizeof num);
        rc = buf_appends(out, d->name);
        if (!rc)
            rc = append_labels(out, d, labels);
        if (!rc && d->nlabels)
            rc = buf_append(out, "}", 1);
        if (!rc)
            rc = buf_appendf(out, " %s\n", num);
        return rc;
    }
    double cum = 0;
    rc = PT_OK;
    for (size_t i = 0; !rc && i <= NLE; i++) {
        cum += v[i];
        fmt_value(cum, num, sizeof num);
        rc = buf_appendf(out, "%s_bucket", d->name);
        if (!rc)
            rc = append_labels(out, d, labels);
        if (!rc && i < NLE)
            rc = buf_appendf(out, "%sle=\"%g\"} %s\n", d->nlabels ? "," : "{",
                             latency_le[i], num);
        else if (!rc)
            rc = buf_appendf(out, "%sle=\"+Inf\"} %s\n", d->nlabels ? "," : "{", num);
    }
    const char *tail[2] = {"_sum", "_count"};
    double val[2] = {v[HIST_SUM], cum};
    for (int i = 0; !rc && i < 2; i++) {
        fmt_value(val[i], num, sizeof num);
        rc = buf_appendf(out, "%s%s", d->name, tail[i]);
        if (!rc)
            rc = append_labels(out, d, labels);
        if (!rc && d->nlabels)
            rc = buf_append(out, "}", 1);
        if (!rc)
            rc = buf_appendf(out, " %s\n", num);
    }
    return rc;
}

/* ---- process metrics (the Prometheus client libraries' standard names) ---- */

/* Fields of /proc/self/stat after the ")" ending comm: state is field 3, utime 14,
 * stime 15, starttime 22, rss 24 (proc(5)). Reads of /proc are served from kernel
 * memory: no disk I/O, fine on the HTTP thread. */
static int proc_self_stat(double *cpu_s, double *start_s, double *rss_bytes)
{
    char buf[2048];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return PT_ERROR;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return PT_ERROR;
    unsigned long long v[24] = { 0 };
    int field = 3;
    char *save = NULL;
    for (char *tok = strtok_r(p + 1, " ", &save); tok && field <= 24;
         tok = strtok_r(NULL, " ", &save), field++)
        v[field - 1] = strtoull(tok, NULL, 10);
    if (field <= 24)
        return PT_ERROR;
    double hz = (double)sysconf(_SC_CLK_TCK);
    *cpu_s = (double)(v[13] + v[14]) / hz;
    *rss_bytes = (double)v[23] * (double)sysconf(_SC_PAGESIZE);
    double btime = 0;
    f = fopen("/proc/stat", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "btime ", 6) == 0) {
                btime = strtod(line + 6, NULL);
                break;
            }
        fclose(f);
    }
    *start_s = btime + (double)v[21] / hz;
    return PT_OK;
}

static double proc_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    double n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;   /* the directory stream's own descriptor */
}

static int render_process(struct buf *out)
{
    double cpu = 0, start = 0, rss = 0;
    proc_self_stat(&cpu, &start, &rss);
    char c[64], st[64], r[64], fds[64];
    fmt_value(cpu, c, sizeof c);
    fmt_value(start, st, sizeof st);
    fmt_value(rss, r, sizeof r);
    fmt_value(proc_open_fds(), fds, sizeof fds);
    return buf_appendf(
        out,
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %s\n"
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %s\n"
        "# HELP process_open_fds Number of open file descriptors.\n"
        "# TYPE process_open_fds gauge\nprocess_open_fds %s\n"
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %s\n"
        "# HELP petrel_build_info Build information; the value is always 1.\n"
        "# TYPE petrel_build_info gauge\npetrel_build_info{version=\"%s\"} 1\n",
        c, r, fds, st, PETREL_VERSION);
}

int metrics_render(struct buf *out)
{
    static const double zeros[HIST_SLOTS];
    int rc = PT_OK;
    pthread_mutex_lock(&reg.lock);
    sum_shards();
    for (int m = 0; !rc && m < M__COUNT; m++) {
        const struct metric_def *d = &defs[m];
        size_t slots = slots_of(m);
        rc = buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
                         type_names[d->type]);
        if (!rc && !reg.head[m] && d->nlabels == 0)
            rc = render_sample(out, d, "", zeros);   /* unlabeled: always a value */
        for (struct series *s = reg.head[m]; !rc && s; s = s->next)
            rc = render_sample(out, d, s->labels, s->v + slots);
    }
    pthread_mutex_unlock(&reg.lock);
    if (!rc)
        rc = render_process(out);
    return rc;
}

void metrics_reset(void)
{
    pthread_mutex_lock(&reg.lock);
    for (struct shard *sh = reg.shards; sh; sh = sh->next) {
        pthread_mutex_lock(&sh->lock);
        shard_clear(sh);
        pthread_mutex_unlock(&sh->lock);
    }
    for (size_t i = 0; i < reg.cap; i++)
        free(reg.tab[i]);
    free(reg.tab);
    reg.tab = NULL;
    reg.cap = reg.n = reg.limited = 0;
    for (int m = 0; m < M__COUNT; m++)
        reg.head[m] = reg.tail[m] = NULL;
    pthread_mutex_unlock(&reg.lock);
}
