/* petrelctl report / dkim-keygen / top (DESIGN §11). report reads the JSON log
 * petrel writes and never modifies it; dkim-keygen never overwrites a key file
 * and writes keys mode 0600; top only reads the admin API and /metrics.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ctl_ops.h"
#include "util/base64.h"
#include "util/buf.h"
#include "util/parse.h"
#include "util/result.h"

#define REPORT_LINE_MAX (1u << 20)    /* longer log lines are skipped, not parsed */
#define REPORT_TOP 10
#define KEYGEN_TXT_CHUNK 255          /* one DNS character-string (RFC 1035 3.3) */

/* ---- report --------------------------------------------------------------- */

/* A counter keyed by a string (domain, sender, "domain\treason"). */
struct rep_count {
    char *key;
    long n;
};
struct rep_table {
    struct rep_count *v;
    size_t len, cap;
};

static int rep_table_add(struct rep_table *t, const char *key)
{
    for (size_t i = 0; i < t->len; i++)
        if (strcmp(t->v[i].key, key) == 0) {
            t->v[i].n++;
            return PT_OK;
        }
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct rep_count *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return PT_NOMEM;
        t->v = v;
        t->cap = cap;
    }
    if (!(t->v[t->len].key = strdup(key)))
        return PT_NOMEM;
    t->v[t->len++].n = 1;
    return PT_OK;
}

static int rep_count_cmp(const void *a, const void *b)
{
    const struct rep_count *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return strcmp(x->key, y->key);
}

static void rep_table_free(struct rep_table *t)
{
    for (size_t i = 0; i < t->len; i++)
        free(t->v[i].key);
    free(t->v);
}

struct rep_delays {
    double *v;
    size_t len, cap;
};

struct report {
    long received, delivered, deferred, bounced, expired, rejected, skipped;
    struct rep_table dest, senders, reasons;
    struct rep_delays delays;
    double first, last;
};

/* "2026-12-05T08:39:02.894Z" or with a +hh:mm offset -> Unix seconds; -1 if bad. */
static double rep_parse_time(const char *s)
{
    struct tm tm = { 0 };
    const char *p = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!p)
        return -1;
    double frac = 0;
    if (*p == '.') {
        double scale = 0.1;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            frac += (*p - '0') * scale;
    }
    double t = (double)timegm(&tm) + frac;
    if (*p == 'Z')
        return t;
    int hh, mm;
    if ((*p == '+' || *p == '-') && sscanf(p + 1, "%2d:%2d", &hh, &mm) == 2)
        return t - (*p == '+' ? 1 : -1) * (hh * 3600.0 + mm * 60.0);
    return -1;
}

static const char *rep_str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static int rep_record(struct report *r, json_t *rec, double since)
{
    const char *type = json_string_value(json_object_get(rec, "type"));
    double ts = rep_parse_time(json_string_value(json_object_get(rec, "timestamp")));
    if (!type || ts < 0) {
        r->skipped++;
        return PT_OK;
    }
    if (since > 0 && ts < since)
        return PT_OK;
    if (r->first == 0 || ts < r->first)
        r->first = ts;
    if (ts > r->last)
        r->last = ts;
    const char *queue = rep_str(rec, "queue");
    int rc = PT_OK;
    if (strcmp(type, "Reception") == 0) {
        r->received++;
        const char *snd = rep_str(rec, "sender");
        rc = rep_table_add(&r->senders, *snd ? snd : "<>");
    } else if (strcmp(type, "Delivery") == 0) {
        r->delivered++;
        rc = rep_table_add(&r->dest, *queue ? queue : "(none)");
        json_t *d = json_object_get(rec, "delay");
        if (rc == PT_OK && json_is_number(d)) {
            struct rep_delays *dl = &r->delays;
            if (dl->len == dl->cap) {
                size_t cap = dl->cap ? dl->cap * 2 : 1024;
                double *v = realloc(dl->v, cap * sizeof *v);
                if (!v)
                    return PT_NOMEM;
                dl->v = v;
                dl->cap = cap;
            }
            dl->v[dl->len++] = json_number_value(d);
        }
    } else if (strcmp(type, "TransientFailure") == 0) {
        r->deferred++;
    } else if (strcmp(type, "Bounce") == 0 || strcmp(type, "Expiration") == 0) {
        if (type[0] == 'B')
            r->bounced++;
        else
            r->expired++;
        char key[1200];
        snprintf(key, sizeof key, "%s\t%s", *queue ? queue : "(none)", rep_str(rec, "response"));
        rc = rep_table_add(&r->reasons, key);
    } else if (strcmp(type, "Rejection") == 0) {
        r->rejected++;
    }
    return rc;
}

static int rep_double_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the sorted delays. */
static double rep_pct(const struct rep_delays *d, double p)
{
    if (d->len == 0)
        return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)d->len);
    return d->v[rank ? rank - 1 : 0];
}

static json_t *rep_top_json(struct rep_table *t, const char *keyname, size_t top)
{
    json_t *a = json_array();
    if (t->len)  /* qsort(NULL, 0) is undefined */
        qsort(t->v, t->len, sizeof *t->v, rep_count_cmp);
    for (size_t i = 0; i < t->len && i < top; i++)
        json_array_append_new(a, json_pack("{s:s, s:I}", keyname, t->v[i].key, "count",
                                           (json_int_t)t->v[i].n));
    return a;
}

static json_t *rep_json(struct report *r)
{
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "received", (json_int_t)r->received,
                          "delivered", (json_int_t)r->delivered, "deferred",
                          (json_int_t)r->deferred, "bounced", (json_int_t)r->bounced, "expired",
                          (json_int_t)r->expired, "rejected", (json_int_t)r->rejected);
    json_object_set_new(o, "top_destinations", rep_top_json(&r->dest, "domain", REPORT_TOP));
    json_object_set_new(o, "top_senders", rep_top_json(&r->senders, "sender", REPORT_TOP));
    json_t *reasons = json_array();
    if (r->reasons.len)
        qsort(r->reasons.v, r->reasons.len, sizeof *r->reasons.v, rep_count_cmp);
    for (size_t i = 0; i < r->reasons.len; i++) {
        char *tab = strchr(r->reasons.v[i].key, '\t');
        *tab = 0;
        json_array_append_new(reasons, json_pack("{s:s, s:s, s:I}", "domain", r->reasons.v[i].key,
                                                 "reason", tab + 1, "count",
                                                 (json_int_t)r->reasons.v[i].n));
        *tab = '\t';
    }
    json_object_set_new(o, "bounce_reasons", reasons);
    if (r->delays.len)
        qsort(r->delays.v, r->delays.len, sizeof *r->delays.v, rep_double_cmp);
    json_object_set_new(o, "delivery_delay_seconds",
                        json_pack("{s:f, s:f, s:f, s:f, s:f}", "p50", rep_pct(&r->delays, 50),
                                  "p90", rep_pct(&r->delays, 90), "p95", rep_pct(&r->delays, 95),
                                  "p99", rep_pct(&r->delays, 99), "max",
                                  rep_pct(&r->delays, 100)));
    json_object_set_new(o, "skipped_lines", json_integer(r->skipped));
    return o;
}

static void rep_print_text(json_t *o, const char *path, double since)
{
    char a[32] = "-", b[32] = "-";
    printf("petrel log summary: %s", path);
    if (since > 0) {
        time_t t = (time_t)since;
        strftime(a, sizeof a, "%Y-%m-%d %H:%M:%S", gmtime(&t));
        printf(" (since %s UTC)", a);
    }
    (void)b;
    printf("\n\nGrand Totals (recipients)\n------------\n");
    static const char *const keys[] = { "received", "delivered", "deferred", "bounced",
                                        "expired", "rejected" };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        printf("%9lld   %s\n", (long long)json_integer_value(json_object_get(o, keys[i])), keys[i]);
    json_t *d = json_object_get(o, "delivery_delay_seconds");
    printf("\nDelivery delay (seconds)\n------------------------\n");
    printf("  p50 %.3f   p90 %.3f   p95 %.3f   p99 %.3f   max %.3f\n",
           json_real_value(json_object_get(d, "p50")), json_real_value(json_object_get(d, "p90")),
           json_real_value(json_object_get(d, "p95")), json_real_value(json_object_get(d, "p99")),
           json_real_value(json_object_get(d, "max")));
    size_t i;
    json_t *e;
    printf("\nTop destinations (delivered)\n----------------------------\n");
    json_array_foreach(json_object_get(o, "top_destinations"), i, e)
        printf("%9lld   %s\n", (long long)json_integer_value(json_object_get(e, "count")),
               json_string_value(json_object_get(e, "domain")));
    printf("\nTop senders (received)\n----------------------\n");
    json_array_foreach(json_object_get(o, "top_senders"), i, e)
        printf("%9lld   %s\n", (long long)json_integer_value(json_object_get(e, "count")),
               json_string_value(json_object_get(e, "sender")));
    printf("\nBounce reasons by domain\n------------------------\n");
    json_array_foreach(json_object_get(o, "bounce_reasons"), i, e)
        printf("%9lld   %s: %s\n", (long long)json_integer_value(json_object_get(e, "count")),
               json_string_value(json_object_get(e, "domain")),
               json_string_value(json_object_get(e, "reason")));
    long long sk = json_integer_value(json_object_get(o, "skipped_lines"));
    if (sk)
        printf("\n(%lld unreadable log lines skipped)\n", sk);
}

int ctl_ops_report(int argc, char **argv)
{
    const char *path = NULL;
    double since = 0;
    bool as_json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
        } else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            double d;
            if (parse_duration(argv[++i], &d) != PT_OK) {
                fprintf(stderr, "petrelctl: report: bad --since '%s' (e.g. 24h, 30m, 7d)\n",
                        argv[i]);
                return 2;
            }
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            since = (double)now.tv_sec + now.tv_nsec / 1e9 - d;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "petrelctl: report: unknown option '%s'\n"
                            "usage: petrelctl report [--since DURATION] [--json] LOGFILE\n",
                    argv[i]);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "petrelctl: report: one LOGFILE only\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: petrelctl report [--since DURATION] [--json] LOGFILE (- = stdin)\n");
        return 2;
    }
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "petrelctl: report: %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct report r = { 0 };
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = PT_OK;
    while (rc == PT_OK && (n = getline(&line, &cap, f)) > 0) {
        if ((size_t)n > REPORT_LINE_MAX) {
            r.skipped++;
            continue;
        }
        json_t *rec = json_loadb(line, (size_t)n, JSON_DISABLE_EOF_CHECK, NULL);
        if (!json_is_object(rec))
            r.skipped++;
        else
            rc = rep_record(&r, rec, since);
        json_decref(rec);
    }
    free(line);
    bool ioerr = ferror(f);
    if (f != stdin)
        fclose(f);
    if (rc != PT_OK || ioerr) {
        fprintf(stderr, "petrelctl: report: %s\n", rc != PT_OK ? "out of memory" : "read error");
        return 1;
    }
    json_t *o = rep_json(&r);
    if (as_json) {
        char *s = json_dumps(o, JSON_COMPACT);
        if (s)
            printf("%s\n", s);
        free(s);
    } else {
        rep_print_text(o, path, since);
    }
    json_decref(o);
    rep_table_free(&r.dest);
    rep_table_free(&r.senders);
    rep_table_free(&r.reasons);
    free(r.delays.v);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- dkim-keygen ------------------------------------------------------------ */

static int kg_b64(const unsigned char *in, size_t n, char **out)
{
    size_t cap = base64_encoded_len(n) + 1;
    *out = malloc(cap);
    if (!*out)
        return PT_NOMEM;
    return base64_encode(in, n, *out, cap);
}

/* Prints `name IN TXT ( "..." "..." )` with the value cut into 255-byte strings. */
static void kg_print_txt(const char *name, const char *value)
{
    size_t n = strlen(value);
    printf("%s IN TXT (", name);
    for (size_t at = 0; at < n; at += KEYGEN_TXT_CHUNK) {
        size_t k = n - at < KEYGEN_TXT_CHUNK ? n - at : KEYGEN_TXT_CHUNK;
        printf("\n    \"%.*s\"", (int)k, value + at);
    }
    printf(" )\n");
}

int ctl_ops_dkim_keygen(int argc, char **argv)
{
    static const char usage[] =
        "usage: petrelctl dkim-keygen --domain D --selector S "
        "[--algorithm rsa-sha256|ed25519-sha256] [--bits 2048] --out DIR\n";
    const char *domain = NULL, *selector = NULL, *alg = "rsa-sha256", *dir = NULL;
    long bits = 2048;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "petrelctl: dkim-keygen: %s needs a value\n%s", argv[i], usage);
            return 2;
        }
        if (strcmp(argv[i], "--domain") == 0)
            domain = v;
        else if (strcmp(argv[i], "--selector") == 0)
            selector = v;
        else if (strcmp(argv[i], "--algorithm") == 0)
            alg = v;
        else if (strcmp(argv[i], "--out") == 0)
            dir = v;
        else if (strcmp(argv[i], "--bits") == 0) {
            char *end;
            bits = strtol(v, &end, 10);
            if (*end || bits < 1024 || bits > 8192) {
                fprintf(stderr, "petrelctl: dkim-keygen: --bits must be 1024..8192\n");
                return 2;
            }
        } else {
            fprintf(stderr, "petrelctl: dkim-keygen: unknown option '%s'\n%s", argv[i], usage);
            return 2;
        }
        i++;
    }
    if (!domain || !selector || !dir) {
        fputs(usage, stderr);
        return 2;
    }
    bool ed = strcmp(alg, "ed25519-sha256") == 0;
    if (!ed && strcmp(alg, "rsa-sha256") != 0) {
        fprintf(stderr, "petrelctl: dkim-keygen: --algorithm must be rsa-sha256 or ed25519-sha256\n");
        return 2;
    }
    for (const char *p = selector; *p; p++)
        if (*p == '/' || *p == ' ')
            goto badname;
    for (const char *p = domain; *p; p++)
        if (*p == '/' || *p == ' ')
            goto badname;
    if (!*domain || !*selector || domain[0] == '.' || selector[0] == '.')
        goto badname;

    EVP_PKEY *pkey = ed ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                        : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    if (!pkey) {
        fprintf(stderr, "petrelctl: dkim-keygen: key generation failed\n");
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s.pem", dir, selector, domain);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "petrelctl: dkim-keygen: %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (not overwritten: remove it first to replace the key)" : "");
        EVP_PKEY_free(pkey);
        return 1;
    }
    fchmod(fd, 0600);  /* whatever the umask */
    FILE *f = fdopen(fd, "w");
    int ok = f && PEM_write_PKCS8PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1;
    ok = ok && fflush(f) == 0 && fsync(fd) == 0;
    if (f)
        fclose(f);
    else
        close(fd);
    if (!ok) {
        fprintf(stderr, "petrelctl: dkim-keygen: writing %s failed\n", path);
        unlink(path);
        EVP_PKEY_free(pkey);
        return 1;
    }
    /* the public half: SubjectPublicKeyInfo for RSA, the raw 32 bytes for
     * Ed25519 (RFC 8463 3) */
    unsigned char raw[64], *der = NULL;
    size_t rawlen = sizeof raw;
    int dlen = 0;
    char *b64 = NULL;
    if (ed) {
        ok = EVP_PKEY_get_raw_public_key(pkey, raw, &rawlen) == 1 &&
             kg_b64(raw, rawlen, &b64) == PT_OK;
    } else {
        dlen = i2d_PUBKEY(pkey, &der);
        ok = dlen > 0 && kg_b64(der, (size_t)dlen, &b64) == PT_OK;
    }
    OPENSSL_free(der);
    EVP_PKEY_free(pkey);
    if (!ok) {
        fprintf(stderr, "petrelctl: dkim-keygen: cannot encode the public key\n");
        free(b64);
        return 1;
    }
    size_t vlen = strlen(b64) + 64;
    char *value = malloc(vlen), name[600];
    if (!value) {
        free(b64);
        return 1;
    }
    snprintf(value, vlen, "v=DKIM1; k=%s; p=%s", ed ? "ed25519" : "rsa", b64);
    free(b64);
    printf("; private key written to %s (mode 0600); in petrel.lua:\n", path);
    printf(";   petrel.configure_dkim_signing { domain = \"%s\", selector = \"%s\",\n"
           ";     key_file = \"%s\", algorithm = \"%s\" }\n", domain, selector, path, alg);
    printf("; DKIM public key: publish this TXT record\n");
    snprintf(name, sizeof name, "%s._domainkey.%s.", selector, domain);
    kg_print_txt(name, value);
    free(value);
    printf("; SPF example: list the addresses petrel sends from\n");
    printf("%s. IN TXT \"v=spf1 mx ip4:192.0.2.10 -all\"\n", domain);
    printf("; DMARC example: start with p=none, move to quarantine/reject once reports are clean\n");
    printf("_dmarc.%s. IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc-reports@%s; adkim=r; aspf=r\"\n",
           domain, domain);
    return fflush(stdout) == 0 ? 0 : 1;
badname:
    fprintf(stderr, "petrelctl: dkim-keygen: bad --domain or --selector\n");
    return 2;
}

/* ---- top ---------------------------------------------------------------------- */

struct top_sample {
    double t;
    double received, delivered, deferred, bounced;
};

/* Sum of every sample of metric `name` (any labels) in a Prometheus text body. */
static double top_metric_sum(const char *text, const char *name)
{
    double sum = 0;
    size_t nl = strlen(name);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        if (strncmp(p, name, nl) == 0 && (p[nl] == ' ' || p[nl] == '{')) {
            const char *v = p[nl] == '{' ? strchr(p + nl, '}') : p + nl;
            if (v && (!eol || v < eol))
                sum += strtod(v + (*v == '}'), NULL);
        }
        p = eol ? eol + 1 : NULL;
    }
    return sum;
}

static int top_sample(const char *url, const char *key, struct top_sample *s)
{
    struct buf b;
    buf_init(&b, 0);
    int st = ctl_get_raw(url, key, "/metrics", &b);
    if (st != 200) {
        if (st > 0)
            fprintf(stderr, "petrelctl: top: GET /metrics: HTTP %d\n", st);
        buf_free(&b);
        return PT_ERROR;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->t = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    const char *txt = b.data ? b.data : "";
    s->received = top_metric_sum(txt, "petrel_messages_received_total");
    s->delivered = top_metric_sum(txt, "petrel_messages_delivered_total");
    s->deferred = top_metric_sum(txt, "petrel_messages_deferred_total");
    s->bounced = top_metric_sum(txt, "petrel_messages_bounced_total");
    buf_free(&b);
    return PT_OK;
}

static int top_queue_cmp(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "count"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "count"));
    return x < y ? 1 : x > y ? -1 : 0;
}

static int top_print(const char *url, const char *key, const struct top_sample *a,
                     const struct top_sample *b, int rows, bool clear)
{
    json_t *q = ctl_fetch(url, key, "/api/queue", NULL);
    if (!q)
        return PT_ERROR;
    double dt = b->t - a->t > 0 ? b->t - a->t : 1;
    if (clear)
        printf("\033[H\033[2J");
    char when[32];
    time_t now = time(NULL);
    strftime(when, sizeof when, "%H:%M:%S", localtime(&now));
    printf("petrel top - %s - %s\n", url, when);
    printf("rates/s: received %.1f  delivered %.1f  deferred %.1f  bounced %.1f\n",
           (b->received - a->received) / dt, (b->delivered - a->delivered) / dt,
           (b->deferred - a->deferred) / dt, (b->bounced - a->bounced) / dt);
    printf("queued: %lld\n\n", (long long)json_integer_value(json_object_get(q, "total")));
    printf("%-40s %9s %10s %6s %s\n", "DOMAIN", "COUNT", "OLDEST_S", "CONNS", "STATE");
    json_t *queues = json_object_get(q, "queues");
    size_t n = json_array_size(queues);
    json_t **v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        json_decref(q);
        return PT_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(queues, i);
    qsort(v, n, sizeof *v, top_queue_cmp);
    for (size_t i = 0; i < n && (int)i < rows; i++) {
        json_t *e = v[i];
        printf("%-40s %9lld %10.0f %6lld %s\n", json_string_value(json_object_get(e, "domain")),
               (long long)json_integer_value(json_object_get(e, "count")),
               json_number_value(json_object_get(e, "oldest_age_s")),
               (long long)json_integer_value(json_object_get(e, "connections")),
               json_is_true(json_object_get(e, "suspended")) ? "suspended" : "active");
    }
    free(v);
    json_decref(q);
    return fflush(stdout) == 0 ? PT_OK : PT_ERROR;
}

int ctl_ops_top(const char *url, const char *key, int argc, char **argv)
{
    bool once = false;
    double interval = 2;
    int rows = 20;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0) {
            once = true;
        } else if (strcmp(argv[i], "--interval") == 0 && i + 1 < argc) {
            if (parse_duration(argv[++i], &interval) != PT_OK || interval < 0.1) {
                fprintf(stderr, "petrelctl: top: bad --interval\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--rows") == 0 && i + 1 < argc) {
            rows = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: petrelctl top [--once] [--interval 2s] [--rows 20]\n");
            return 2;
        }
    }
    struct top_sample a, b;
    if (top_sample(url, key, &a) != PT_OK)
        return 1;
    for (;;) {
        struct timespec ts = { (time_t)interval,
                               (long)((interval - (double)(time_t)interval) * 1e9) };
        nanosleep(&ts, NULL);
        if (top_sample(url, key, &b) != PT_OK || top_print(url, key, &a, &b, rows, !once) != PT_OK)
            return 1;
        if (once)
            return 0;
        a = b;
    }
}
