/* Metrics: the process-wide registry of counters, gauges and the delivery latency
 * histogram (DESIGN §7), rendered in Prometheus text format for GET /metrics.
 * Never blocks on I/O; memory is bounded by METRICS_MAX_SERIES label sets.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_OBS_METRICS_H
#define PETREL_OBS_METRICS_H

/* One entry per metric; names, types and label names are fixed in metrics.c. */
enum metric_id {
    M_QUEUE_DEPTH,      /* petrel_queue_depth{domain}                       gauge */
    M_RECEIVED,         /* petrel_messages_received_total{listener}         counter */
    M_DELIVERED,        /* petrel_messages_delivered_total{domain}          counter */
    M_DEFERRED,         /* petrel_messages_deferred_total{domain}           counter */
    M_BOUNCED,          /* petrel_messages_bounced_total{domain}            counter */
    M_LATENCY,          /* petrel_delivery_latency_seconds                  histogram */
    M_SMTP_ERRORS,      /* petrel_smtp_errors_total{direction,code_class}   counter */
    M_TLS_FAILURES,     /* petrel_tls_failures_total{direction}             counter */
    M_AUTH_FAILURES,    /* petrel_auth_failures_total                       counter */
    M_CONNECTIONS,      /* petrel_connections{direction,domain}             gauge */
    M_SPOOL_BYTES,      /* petrel_spool_bytes                               gauge */
    M_CLUSTER_LIMITS_DEGRADED, /* petrel_cluster_limits_degraded            gauge */
    M_SHAPING_ACTIONS,  /* petrel_shaping_actions_total{action}             counter */
    M_TENANT_DELIVERED, /* petrel_tenant_messages_delivered_total{tenant}   counter
                           (configure_tenant tenants only) */
    M__COUNT
};

/* Label values for "direction". */
#define METRICS_INBOUND "inbound"    /* replies we sent / connections we accepted */
#define METRICS_OUTBOUND "outbound"  /* replies we got / connections we opened */

/* Distinct label sets over all metrics. A new label set beyond it is counted under the
 * label set whose every value is "other", so a flood of domains cannot exhaust memory. */
#define METRICS_MAX_SERIES 50000
#define METRICS_OTHER "other"
/* Longer label values are cut (at a UTF-8 boundary); invalid UTF-8 becomes U+FFFD. */
#define METRICS_LABEL_MAX 255

/* Labels are passed positionally as l1, l2 in the order shown above (e.g. direction,
 * then code_class); pass NULL for labels the metric does not have (NULL for a label
 * it has counts as ""). Strings are borrowed for the call only. All functions are
 * thread-safe and need no init. Calls that do not fit the metric's type are ignored. */

/* Counter += v (v >= 0). Per-thread shards: no lock is shared with other callers once
 * a thread has seen a label set. On a gauge, same as metrics_add. */
void metrics_inc(enum metric_id m, const char *l1, const char *l2, double v);
/* Gauge += delta (either sign). */
void metrics_add(enum metric_id m, const char *l1, const char *l2, double delta);
/* Gauge = v. A drained series is set to 0 (it stays listed). */
void metrics_set(enum metric_id m, const char *l1, const char *l2, double v);
/* Records one observation in a histogram (M_LATENCY, seconds). Histograms are unlabeled. */
void metrics_observe(enum metric_id m, double v);

/* Current value of a counter or gauge series (a histogram's _count); 0 if absent. */
double metrics_value(enum metric_id m, const char *l1, const char *l2);
/* "4xx" or "5xx" for an SMTP code, NULL for anything else (the code_class label). */
const char *metrics_code_class(int code);

/* Appends the Prometheus text exposition (version 0.0.4) of every metric to out:
 * # HELP and # TYPE for each even before its first sample; unlabeled metrics always
 * show a value. Returns PT_OK or the buf error (out may then hold a partial text). */
struct buf;
int metrics_render(struct buf *out);

/* Drops every series and zeroes everything (tests). */
void metrics_reset(void);

#endif
