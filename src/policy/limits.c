/* limit_sending rates; see limits.h. GCRA keeps one number per key, the
 * theoretical arrival time (tat): a message at now passes when tat - now <= tau
 * (tau = period - period/n, the burst allowance), and moves tat on by period/n.
 * Open addressing with linear probing; a full probe run evicts the entry whose
 * tat is oldest (an entry with tat <= now is indistinguishable from a new one).
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/limits.h"
#include "util/buf.h"
#include "util/result.h"

#define PROBE_MAX 16

struct slot {
    char key[LIMITS_KEY_MAX + 24];   /* "PERIOD|KEY": a key per period */
    double tat;
    bool used;
};

struct limits {
    pthread_mutex_t lock;
    size_t cap;
    void (*observer)(void *arg, const char *name, double t);
    void *observer_arg;
    atomic_int share;                /* 0 or 1 = the whole budget */
    struct slot slots[];
};

struct limits *limits_new(size_t cap)
{
    if (cap == 0)
        cap = 1;
    struct limits *l = calloc(1, sizeof *l + cap * sizeof l->slots[0]);
    if (!l)
        return NULL;
    pthread_mutex_init(&l->lock, NULL);
    l->cap = cap;
    return l;
}

void limits_free(struct limits *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l);
}

static struct limits *shared;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;

static void shared_init(void)
{
    shared = limits_new(LIMITS_TABLE_SIZE);
}

struct limits *limits_shared(void)
{
    pthread_once(&shared_once, shared_init);
    return shared;
}

static size_t hash(const char *s)
{
    size_t h = 1469598103934665603ull;   /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The slot of k (made, evicting the oldest of its probe run, if absent). Under lock. */
static struct slot *slot_of(struct limits *l, const char *k, double now)
{
    size_t h = hash(k), probes = l->cap < PROBE_MAX ? l->cap : PROBE_MAX;
    struct slot *hit = NULL, *oldest = NULL;
    for (size_t i = 0; i < probes && !hit; i++) {
        struct slot *s = &l->slots[(h + i) % l->cap];
        if (s->used && strcmp(s->key, k) == 0)
            hit = s;
        else if (!oldest || !s->used || (oldest->used && s->tat < oldest->tat))
            oldest = s;
    }
    if (!hit) {
        hit = oldest;
        snprintf(hit->key, sizeof hit->key, "%s", k);
        hit->used = true;
        hit->tat = now;
    }
    return hit;
}

int limits_take(struct limits *l, const char *key, double n, double period, double now)
{
    if (!l || !key || strlen(key) > LIMITS_KEY_MAX || !(n >= 1) || !(period > 0) ||
        !isfinite(n) || !isfinite(period))
        return PT_INVALID;
    char k[sizeof l->slots[0].key];
    snprintf(k, sizeof k, "%.0f|%s", period, key);
    int share = atomic_load(&l->share);
    if (share > 1)
        n = n / share >= 1 ? floor(n / share) : 1;
    double t = period / n, tau = period - t;
    pthread_mutex_lock(&l->lock);
    struct slot *hit = slot_of(l, k, now);
    double tat = hit->tat > now ? hit->tat : now;
    int rc = PT_OK;
    if (tat - now > tau + 1e-9)
        rc = PT_TOOLONG;
    else
        hit->tat = tat + t;
    void (*obs)(void *, const char *, double) = l->observer;
    void *arg = l->observer_arg;
    pthread_mutex_unlock(&l->lock);
    if (rc == PT_OK && obs)
        obs(arg, k, t);
    return rc;
}

void limits_set_observer(struct limits *l, void (*fn)(void *arg, const char *name, double t),
                         void *arg)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->observer = fn;
    l->observer_arg = arg;
    pthread_mutex_unlock(&l->lock);
}

void limits_merge(struct limits *l, const char *name, double tat)
{
    if (!l || !name || strlen(name) >= sizeof l->slots[0].key || !isfinite(tat))
        return;
    pthread_mutex_lock(&l->lock);
    struct slot *s = slot_of(l, name, tat);
    if (s->tat < tat)
        s->tat = tat;
    pthread_mutex_unlock(&l->lock);
}

void limits_set_share(struct limits *l, int share)
{
    if (l)
        atomic_store(&l->share, share);
}

int limits_record(struct buf *lines, const char *key, double n, double period)
{
    if (!key || !*key || strlen(key) > LIMITS_KEY_MAX || strpbrk(key, "\t\n") || !(n >= 1) ||
        !isfinite(n) || !(period > 0))
        return PT_INVALID;
    return buf_appendf(lines, "%.17g\t%.17g\t%s\n", period, n, key);
}

int limits_take_all(struct limits *l, const char *lines, size_t len, double now, char *over,
                    size_t overlen)
{
    size_t pos = 0;
    while (pos < len) {
        const char *line = lines + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        pos += ll + 1;
        char buf[LIMITS_KEY_MAX + 96];
        if (ll >= sizeof buf)
            continue;
        memcpy(buf, line, ll);
        buf[ll] = 0;
        char *t1 = strchr(buf, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2)
            continue;
        *t1 = *t2 = 0;
        double period = strtod(buf, NULL), n = strtod(t1 + 1, NULL);
        if (limits_take(l, t2 + 1, n, period, now) == PT_TOOLONG) {
            snprintf(over, overlen, "%s", t2 + 1);
            return PT_TOOLONG;
        }
    }
    return PT_OK;
}
