/* Unit tests for obs/metrics: exposition text (HELP/TYPE, samples, histogram, label
 * escaping), the label-set bound, and exact sums under concurrent updates.
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "obs/metrics.h"
#include "util/buf.h"
#include "util/result.h"

static const struct { const char *name, *type; } expected[] = {
    {"petrel_queue_depth", "gauge"},
    {"petrel_messages_received_total", "counter"},
    {"petrel_messages_delivered_total", "counter"},
    {"petrel_messages_deferred_total", "counter"},
    {"petrel_messages_bounced_total", "counter"},
    {"petrel_delivery_latency_seconds", "histogram"},
    {"petrel_smtp_errors_total", "counter"},
    {"petrel_tls_failures_total", "counter"},
    {"petrel_auth_failures_total", "counter"},
    {"petrel_connections", "gauge"},
    {"petrel_spool_bytes", "gauge"},
};

static int reset(void **state)
{
    metrics_reset();
    return 0;
}

/* Rendered text, with a leading "\n" so every line can be matched as "\n...\n". */
static char *render(void)
{
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(buf_append(&b, "\n", 1), PT_OK);
    assert_int_equal(metrics_render(&b), PT_OK);
    return buf_steal(&b, NULL);
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    char *want = malloc(n + 3);
    assert_non_null(want);
    want[0] = '\n';
    memcpy(want + 1, line, n);
    memcpy(want + 1 + n, "\n", 2);
    bool found = strstr(text, want) != NULL;
    free(want);
    return found;
}

static void assert_line(const char *text, const char *line)
{
    if (!has_line(text, line))
        fail_msg("missing line: %s\n--- rendered:%s", line, text);
}

static size_t count_prefix(const char *text, const char *prefix)
{
    char want[300];
    snprintf(want, sizeof want, "\n%s", prefix);
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, want)); p++)
        n++;
    return n;
}

static void test_help_type_at_startup(void **state)
{
    char *t = render();
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        char line[256];
        snprintf(line, sizeof line, "# HELP %s ", expected[i].name);
        assert_int_equal(count_prefix(t, line), 1);
        snprintf(line, sizeof line, "# TYPE %s %s", expected[i].name, expected[i].type);
        assert_line(t, line);
    }
    /* Unlabeled metrics have a value before their first sample. */
    assert_line(t, "petrel_auth_failures_total 0");
    assert_line(t, "petrel_spool_bytes 0");
    assert_line(t, "petrel_delivery_latency_seconds_bucket{le=\"+Inf\"} 0");
    assert_line(t, "petrel_delivery_latency_seconds_count 0");
    assert_line(t, "petrel_delivery_latency_seconds_sum 0");
    /* Labeled ones have none. */
    assert_int_equal(count_prefix(t, "petrel_messages_delivered_total{"), 0);
    /* Every line is a comment or a sample: no blank lines, ends with a newline. */
    assert_null(strstr(t + 1, "\n\n"));
    assert_int_equal(t[strlen(t) - 1], '\n');
    free(t);
}

static void test_counters(void **state)
{
    metrics_inc(M_DELIVERED, "example.com", NULL, 1);
    metrics_inc(M_DELIVERED, "example.com", NULL, 2);
    metrics_inc(M_DELIVERED, "example.org", NULL, 1);
    metrics_inc(M_BOUNCED, "example.com", NULL, 1);
    metrics_inc(M_DEFERRED, "example.net", NULL, 1);
    metrics_inc(M_RECEIVED, "smtp", NULL, 5);
    metrics_inc(M_SMTP_ERRORS, METRICS_OUTBOUND, metrics_code_class(451), 1);
    metrics_inc(M_SMTP_ERRORS, METRICS_INBOUND, metrics_code_class(554), 1);
    metrics_inc(M_SMTP_ERRORS, METRICS_INBOUND, metrics_code_class(550), 1);
    metrics_inc(M_TLS_FAILURES, METRICS_INBOUND, NULL, 1);
    metrics_inc(M_AUTH_FAILURES, NULL, NULL, 1);
    metrics_inc(M_AUTH_FAILURES, "ignored", "labels", 1);
    metrics_inc(M_DELIVERED, "example.com", NULL, -1);    /* counters never go down */
    metrics_set(M_DELIVERED, "example.com", NULL, 100);   /* nor are they set */
    metrics_observe(M_DELIVERED, 1);                       /* not a histogram */
    metrics_inc(M__COUNT, NULL, NULL, 1);                  /* no such metric */

    char *t = render();
    assert_line(t, "petrel_messages_delivered_total{domain=\"example.com\"} 3");
    assert_line(t, "petrel_messages_delivered_total{domain=\"example.org\"} 1");
    assert_line(t, "petrel_messages_bounced_total{domain=\"example.com\"} 1");
    assert_line(t, "petrel_messages_deferred_total{domain=\"example.net\"} 1");
    assert_line(t, "petrel_messages_received_total{listener=\"smtp\"} 5");
    assert_line(t, "petrel_smtp_errors_total{direction=\"outbound\",code_class=\"4xx\"} 1");
    assert_line(t, "petrel_smtp_errors_total{direction=\"inbound\",code_class=\"5xx\"} 2");
    assert_line(t, "petrel_tls_failures_total{direction=\"inbound\"} 1");
    assert_line(t, "petrel_auth_failures_total 2");
    free(t);
    assert_true(metrics_value(M_DELIVERED, "example.com", NULL) == 3);
    assert_true(metrics_value(M_DELIVERED, "nowhere.example", NULL) == 0);
    assert_null(metrics_code_class(250));
    assert_null(metrics_code_class(600));
}

static void test_gauges(void **state)
{
    metrics_set(M_QUEUE_DEPTH, "example.com", NULL, 10);
    metrics_add(M_QUEUE_DEPTH, "example.com", NULL, -3);
    metrics_set(M_QUEUE_DEPTH, "drained.example", NULL, 4);
    metrics_set(M_QUEUE_DEPTH, "drained.example", NULL, 0);
    metrics_add(M_CONNECTIONS, METRICS_OUTBOUND, "example.com", 1);
    metrics_add(M_CONNECTIONS, METRICS_OUTBOUND, "example.com", 1);
    metrics_inc(M_CONNECTIONS, METRICS_OUTBOUND, "example.com", 1);   /* = add */
    metrics_add(M_CONNECTIONS, METRICS_OUTBOUND, "example.com", -1);
    metrics_set(M_SPOOL_BYTES, NULL, NULL, 123456789012.0);
    metrics_set(M_SPOOL_BYTES, NULL, NULL, INFINITY);   /* not a value: ignored */
    metrics_set(M_SPOOL_BYTES, NULL, NULL, NAN);

    char *t = render();
    assert_line(t, "petrel_queue_depth{domain=\"example.com\"} 7");
    assert_line(t, "petrel_queue_depth{domain=\"drained.example\"} 0");
    assert_line(t, "petrel_connections{direction=\"outbound\",domain=\"example.com\"} 2");
    assert_line(t, "petrel_spool_bytes 123456789012");
    free(t);
    assert_true(metrics_value(M_QUEUE_DEPTH, "example.com", NULL) == 7);
}

static void test_histogram(void **state)
{
    static const double obs[] = {0.0005, 0.001, 0.003, 0.7, 1, 100, 1e6};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        metrics_observe(M_LATENCY, obs[i]);
    char *t = render();
    const char *h = "petrel_delivery_latency_seconds";
    static const struct { const char *le; int n; } want[] = {
        {"0.001", 2}, {"0.005", 3}, {"0.01", 3}, {"0.025", 3}, {"0.05", 3}, {"0.1", 3},
        {"0.25", 3}, {"0.5", 3}, {"1", 5}, {"2.5", 5}, {"5", 5}, {"10", 5}, {"30", 5},
        {"60", 5}, {"300", 6}, {"1800", 6}, {"3600", 6}, {"21600", 6}, {"86400", 6},
        {"+Inf", 7},
    };
    char line[256];
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(line, sizeof line, "%s_bucket{le=\"%s\"} %d", h, want[i].le, want[i].n);
        assert_line(t, line);
    }
    assert_int_equal(count_prefix(t, "petrel_delivery_latency_seconds_bucket{"),
                     sizeof want / sizeof want[0]);
    /* Buckets come in increasing order, then _sum and _count. */
    const char *prev = t;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(line, sizeof line, "le=\"%s\"}", want[i].le);
        const char *at = strstr(t, line);
        assert_true(at > prev);
        prev = at;
    }
    assert_true(strstr(t, "_seconds_sum ") > prev);
    assert_true(strstr(t, "_seconds_count ") > strstr(t, "_seconds_sum "));
    assert_line(t, "petrel_delivery_latency_seconds_count 7");
    snprintf(line, sizeof line, "%s_sum ", h);
    const char *sum = strstr(t, line);
    assert_non_null(sum);
    double s = strtod(sum + strlen(line), NULL);
    assert_true(s == 0.0005 + 0.001 + 0.003 + 0.7 + 1 + 100 + 1e6);
    free(t);
    assert_true(metrics_value(M_LATENCY, NULL, NULL) == 7);
}

static void test_label_escaping(void **state)
{
    metrics_inc(M_DELIVERED, "a\"b\\c\nd", NULL, 1);
    metrics_inc(M_DELIVERED, "caf\xc3\xa9.example", NULL, 1);   /* valid UTF-8 kept */
    metrics_inc(M_DELIVERED, "bad\xff\xc3.example", NULL, 1);   /* invalid: U+FFFD */
    metrics_inc(M_DELIVERED, NULL, NULL, 1);                    /* missing: "" */
    char lng[600];
    memset(lng, 'x', sizeof lng - 1);
    lng[sizeof lng - 1] = 0;
    metrics_inc(M_DELIVERED, lng, NULL, 1);
    lng[300] = 'y';
    metrics_inc(M_DELIVERED, lng, NULL, 1);   /* differs past the cut: same series */

    char *t = render();
    assert_line(t, "petrel_messages_delivered_total{domain=\"a\\\"b\\\\c\\nd\"} 1");
    assert_line(t, "petrel_messages_delivered_total{domain=\"caf\xc3\xa9.example\"} 1");
    assert_line(t, "petrel_messages_delivered_total{domain=\"bad\xef\xbf\xbd\xef\xbf\xbd"
                   ".example\"} 1");
    assert_line(t, "petrel_messages_delivered_total{domain=\"\"} 1");
    char line[600];
    snprintf(line, sizeof line, "petrel_messages_delivered_total{domain=\"%.*s\"} 2",
             METRICS_LABEL_MAX, lng);
    assert_line(t, line);
    free(t);

    /* The cut never splits a character: 254 ASCII bytes then a 2-byte one. */
    memset(lng, 'z', 254);
    memcpy(lng + 254, "\xc3\xa9", 3);
    metrics_inc(M_BOUNCED, lng, NULL, 1);
    t = render();
    snprintf(line, sizeof line, "petrel_messages_bounced_total{domain=\"%.254s\"} 1", lng);
    assert_line(t, line);
    free(t);
}

static void test_cardinality_bound(void **state)
{
    char dom[64];
    for (int i = 0; i < METRICS_MAX_SERIES + 100; i++) {
        snprintf(dom, sizeof dom, "d%d.example", i);
        metrics_inc(M_DELIVERED, dom, NULL, 1);
    }
    /* New label sets of any metric now fold into "other"; known ones still count. */
    metrics_set(M_QUEUE_DEPTH, "late.example", NULL, 5);
    metrics_inc(M_SMTP_ERRORS, METRICS_INBOUND, "4xx", 1);
    metrics_inc(M_DELIVERED, "d0.example", NULL, 1);
    metrics_inc(M_AUTH_FAILURES, NULL, NULL, 1);   /* unlabeled: always its own */

    char *t = render();
    assert_int_equal(count_prefix(t, "petrel_messages_delivered_total{"),
                     METRICS_MAX_SERIES + 1);
    assert_line(t, "petrel_messages_delivered_total{domain=\"other\"} 100");
    assert_line(t, "petrel_messages_delivered_total{domain=\"d0.example\"} 2");
    assert_line(t, "petrel_queue_depth{domain=\"other\"} 5");
    assert_line(t, "petrel_smtp_errors_total{direction=\"other\",code_class=\"other\"} 1");
    assert_line(t, "petrel_auth_failures_total 1");
    assert_false(has_line(t, "petrel_queue_depth{domain=\"late.example\"} 5"));
    free(t);

    metrics_reset();   /* drops everything: room again */
    metrics_inc(M_DELIVERED, "fresh.example", NULL, 1);
    t = render();
    assert_line(t, "petrel_messages_delivered_total{domain=\"fresh.example\"} 1");
    assert_int_equal(count_prefix(t, "petrel_messages_delivered_total{"), 1);
    free(t);
}

#define NTHREADS 4
#define PER_THREAD 1000000

static void *inc_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    char own[32];
    snprintf(own, sizeof own, "t%d.example", t);
    for (int i = 0; i < PER_THREAD; i++) {
        metrics_inc(M_DELIVERED, "shared.example", NULL, 1);
        if (i % 4 == 0)
            metrics_inc(M_DEFERRED, own, NULL, 1);
        if (i % 1000 == 0) {
            metrics_observe(M_LATENCY, 0.5);
            metrics_add(M_CONNECTIONS, METRICS_OUTBOUND, "shared.example", 1);
        }
    }
    return NULL;
}

static atomic_int stop_render, render_failed;

/* Scrapes while the counters move (no cmocka asserts off the main thread). */
static void *render_thread(void *arg)
{
    struct buf b;
    buf_init(&b, 0);
    while (!atomic_load(&stop_render)) {
        buf_reset(&b);
        if (metrics_render(&b) != PT_OK)
            atomic_store(&render_failed, 1);
        nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
    }
    buf_free(&b);
    return NULL;
}

static void test_concurrency(void **state)
{
    struct timespec a, z;
    pthread_t th[NTHREADS], r;
    atomic_store(&stop_render, 0);
    assert_int_equal(pthread_create(&r, NULL, render_thread, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int t = 0; t < NTHREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, inc_thread, (void *)(intptr_t)t), 0);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    clock_gettime(CLOCK_MONOTONIC, &z);
    atomic_store(&stop_render, 1);
    pthread_join(r, NULL);
    assert_int_equal(atomic_load(&render_failed), 0);
    /* Reported, not asserted: performance is judged by the bench, not a unit test. */
    print_message("%d threads x %d increments: %.3f s\n", NTHREADS, PER_THREAD,
                  (double)(z.tv_sec - a.tv_sec) + (double)(z.tv_nsec - a.tv_nsec) / 1e9);

    /* The threads have exited: their counts were folded into the registry. */
    assert_true(metrics_value(M_DELIVERED, "shared.example", NULL) == NTHREADS * PER_THREAD);
    for (int t = 0; t < NTHREADS; t++) {
        char own[32];
        snprintf(own, sizeof own, "t%d.example", t);
        assert_true(metrics_value(M_DEFERRED, own, NULL) == PER_THREAD / 4);
    }
    assert_true(metrics_value(M_LATENCY, NULL, NULL) == NTHREADS * PER_THREAD / 1000);
    assert_true(metrics_value(M_CONNECTIONS, METRICS_OUTBOUND, "shared.example") ==
                NTHREADS * PER_THREAD / 1000);
    char *t = render();
    char line[128];
    snprintf(line, sizeof line, "petrel_messages_delivered_total{domain=\"shared.example\"} %d",
             NTHREADS * PER_THREAD);
    assert_line(t, line);
    free(t);
}

static void *inc_alive(void *arg)
{
    metrics_inc(M_BOUNCED, "alive.example", NULL, 1);
    return NULL;
}

static void test_own_thread_and_exited(void **state)
{
    /* Counts from this (live) thread and from an exited one add up. */
    metrics_inc(M_BOUNCED, "alive.example", NULL, 2);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, inc_alive, NULL), 0);
    pthread_join(th, NULL);
    metrics_inc(M_BOUNCED, "alive.example", NULL, 0.5);
    assert_true(metrics_value(M_BOUNCED, "alive.example", NULL) == 3.5);
    char *t = render();
    assert_line(t, "petrel_messages_bounced_total{domain=\"alive.example\"} 3.5");
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_help_type_at_startup, reset),
        cmocka_unit_test_setup(test_counters, reset),
        cmocka_unit_test_setup(test_gauges, reset),
        cmocka_unit_test_setup(test_histogram, reset),
        cmocka_unit_test_setup(test_label_escaping, reset),
        cmocka_unit_test_setup(test_cardinality_bound, reset),
        cmocka_unit_test_setup(test_concurrency, reset),
        cmocka_unit_test_setup(test_own_thread_and_exited, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
