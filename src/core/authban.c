/* AUTH failure tracker (see authban.h): a keyed hash of address records, each a
 * ring of recent failure times, and an LRU list for bounded eviction. Never
 * allocates beyond max_ips records, and never holds its lock across a callback.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "core/authban.h"

#define AUTHBAN_KEY_LEN 16
#define AUTHBAN_TEXT_MAX 64          /* longest address text we parse (with a zone) */

struct authban_rec {
    unsigned char key[AUTHBAN_KEY_LEN];
    struct authban_rec *hnext;       /* hash chain */
    struct authban_rec *prev, *next; /* LRU list: head = most recent failure */
    double last;                     /* time of the last failure */
    double banned_until;             /* 0 = not banned */
    int first, count;                /* ring of failure times, oldest at first */
    double times[];                  /* max_failures slots */
};

struct authban {
    pthread_mutex_t lock;
    int max_failures;
    double window, ban;
    size_t max_ips, n;
    struct authban_rec **buckets;
    size_t nbuckets;                 /* power of two */
    struct authban_rec *head, *tail;
    uint64_t k0, k1;                 /* hash key: addresses come from the network */
    void (*observer)(void *arg, const char *ip, double until);
    void *observer_arg;
};

/* ---- Keys ---------------------------------------------------------------------- */

/* 16 bytes per client: IPv4 as IPv4-mapped IPv6, IPv6 masked to its /64. */
static bool authban_key(const char *ip, unsigned char key[AUTHBAN_KEY_LEN])
{
    char text[AUTHBAN_TEXT_MAX];
    size_t n = ip ? strcspn(ip, "%") : 0;
    if (n == 0 || n >= sizeof text)
        return false;
    memcpy(text, ip, n);
    text[n] = '\0';
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    memset(key, 0, AUTHBAN_KEY_LEN);
    if (inet_pton(AF_INET, text, key + 12) == 1) {
        memcpy(key, mapped, sizeof mapped);
        return true;
    }
    if (inet_pton(AF_INET6, text, key) != 1)
        return false;
    if (memcmp(key, mapped, sizeof mapped) != 0)
        memset(key + 8, 0, 8);
    return true;
}

#define AUTHBAN_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define AUTHBAN_SIPROUND                                                          \
    do {                                                                          \
        v0 += v1; v1 = AUTHBAN_ROTL(v1, 13); v1 ^= v0; v0 = AUTHBAN_ROTL(v0, 32); \
        v2 += v3; v3 = AUTHBAN_ROTL(v3, 16); v3 ^= v2;                            \
        v0 += v3; v3 = AUTHBAN_ROTL(v3, 21); v3 ^= v0;                            \
        v2 += v1; v1 = AUTHBAN_ROTL(v1, 17); v1 ^= v2; v2 = AUTHBAN_ROTL(v2, 32); \
    } while (0)

static uint64_t authban_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* SipHash-2-4 of the 16-byte key: a client cannot aim its addresses at one bucket. */
static size_t authban_hash(const struct authban *b, const unsigned char key[AUTHBAN_KEY_LEN])
{
    uint64_t v0 = b->k0 ^ 0x736f6d6570736575ull, v1 = b->k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = b->k0 ^ 0x6c7967656e657261ull, v3 = b->k1 ^ 0x7465646279746573ull;
    uint64_t m[3] = { authban_le64(key), authban_le64(key + 8), (uint64_t)AUTHBAN_KEY_LEN << 56 };
    for (int i = 0; i < 3; i++) {
        v3 ^= m[i];
        AUTHBAN_SIPROUND;
        AUTHBAN_SIPROUND;
        v0 ^= m[i];
    }
    v2 ^= 0xff;
    for (int i = 0; i < 4; i++)
        AUTHBAN_SIPROUND;
    return (size_t)((v0 ^ v1 ^ v2 ^ v3) & (b->nbuckets - 1));
}

/* ---- Records (lock held) ------------------------------------------------------- */

static struct authban_rec **authban_slot(struct authban *b, const unsigned char *key)
{
    struct authban_rec **p = &b->buckets[authban_hash(b, key)];
    while (*p && memcmp((*p)->key, key, AUTHBAN_KEY_LEN) != 0)
        p = &(*p)->hnext;
    return p;
}

static void authban_unlink(struct authban *b, struct authban_rec *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        b->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        b->tail = r->prev;
    r->prev = r->next = NULL;
}

static void authban_push_front(struct authban *b, struct authban_rec *r)
{
    r->next = b->head;
    r->prev = NULL;
    if (b->head)
        b->head->prev = r;
    b->head = r;
    if (!b->tail)
        b->tail = r;
}

static void authban_drop(struct authban *b, struct authban_rec *r)
{
    struct authban_rec **p = authban_slot(b, r->key);
    *p = r->hnext;
    authban_unlink(b, r);
    free(r);
    b->n--;
}

/* A record that can no longer matter: not banned and no failure in the window. */
static bool authban_stale(const struct authban *b, const struct authban_rec *r, double now)
{
    return r->banned_until <= now && r->last <= now - b->window;
}

/* Forgets failures that left the window. */
static void authban_expire(struct authban *b, struct authban_rec *r, double now)
{
    while (r->count > 0 && r->times[r->first] <= now - b->window) {
        r->first = (r->first + 1) % b->max_failures;
        r->count--;
    }
}

/* ---- API ------------------------------------------------------------------------ */

struct authban *authban_new_cap(int max_failures, double window_s, double ban_s,
                                size_t max_ips)
{
    if (max_failures < 1 || max_failures > AUTHBAN_MAX_FAILURES || !(window_s > 0) ||
        !(ban_s > 0) || !isfinite(window_s) || !isfinite(ban_s) || max_ips < 1 ||
        max_ips > (SIZE_MAX >> 4))
        return NULL;
    struct authban *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->max_failures = max_failures;
    b->window = window_s;
    b->ban = ban_s;
    b->max_ips = max_ips;
    b->nbuckets = 16;
    while (b->nbuckets < max_ips)
        b->nbuckets *= 2;
    unsigned char k[16];
    if (RAND_bytes(k, sizeof k) != 1 || !(b->buckets = calloc(b->nbuckets, sizeof *b->buckets)) ||
        pthread_mutex_init(&b->lock, NULL) != 0) {
        free(b->buckets);
        free(b);
        return NULL;
    }
    b->k0 = authban_le64(k);
    b->k1 = authban_le64(k + 8);
    return b;
}

struct authban *authban_new(int max_failures, double window_s, double ban_s)
{
    return authban_new_cap(max_failures, window_s, ban_s, AUTHBAN_MAX_IPS);
}

void authban_free(struct authban *b)
{
    if (!b)
        return;
    for (struct authban_rec *r = b->head, *next; r; r = next) {
        next = r->next;
        free(r);
    }
    free(b->buckets);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

bool authban_failure(struct authban *b, const char *ip, double now)
{
    unsigned char key[AUTHBAN_KEY_LEN];
    if (!b || !authban_key(ip, key))
        return false;
    bool banned = false;
    pthread_mutex_lock(&b->lock);
    /* Keep memory near the live set: drop up to two dead records per call. */
    for (int i = 0; i < 2 && b->tail && authban_stale(b, b->tail, now); i++)
        authban_drop(b, b->tail);
    struct authban_rec **slot = authban_slot(b, key), *r = *slot;
    if (!r) {
        if (b->n >= b->max_ips)
            authban_drop(b, b->tail);            /* the least recent failure */
        size_t size = sizeof *r + (size_t)b->max_failures * sizeof r->times[0];
        if (!(r = calloc(1, size))) {
            pthread_mutex_unlock(&b->lock);
            return false;                        /* fail open: AUTH itself still fails */
        }
        memcpy(r->key, key, sizeof key);
        slot = authban_slot(b, key);             /* the drop may have moved the chain end */
        *slot = r;
        b->n++;
    } else {
        authban_unlink(b, r);
    }
    authban_push_front(b, r);
    if (r->banned_until > now) {
        pthread_mutex_unlock(&b->lock);
        return false;
    }
    r->banned_until = 0;
    r->last = now;
    authban_expire(b, r, now);
    r->times[(r->first + r->count) % b->max_failures] = now;
    if (++r->count >= b->max_failures) {
        r->banned_until = now + b->ban;
        r->first = r->count = 0;
        banned = true;
    }
    void (*obs)(void *, const char *, double) = b->observer;
    void *arg = b->observer_arg;
    pthread_mutex_unlock(&b->lock);
    if (banned && obs)
        obs(arg, ip, now + b->ban);
    return banned;
}

void authban_set_observer(struct authban *b, void (*fn)(void *arg, const char *ip, double until),
                          void *arg)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->observer = fn;
    b->observer_arg = arg;
    pthread_mutex_unlock(&b->lock);
}

void authban_ban(struct authban *b, const char *ip, double until)
{
    unsigned char key[AUTHBAN_KEY_LEN];
    if (!b || !authban_key(ip, key) || !isfinite(until))
        return;
    pthread_mutex_lock(&b->lock);
    struct authban_rec **slot = authban_slot(b, key), *r = *slot;
    if (!r) {
        if (b->n >= b->max_ips)
            authban_drop(b, b->tail);
        size_t size = sizeof *r + (size_t)b->max_failures * sizeof r->times[0];
        if (!(r = calloc(1, size))) {
            pthread_mutex_unlock(&b->lock);
            return;
        }
        memcpy(r->key, key, sizeof key);
        slot = authban_slot(b, key);
        *slot = r;
        b->n++;
    } else {
        authban_unlink(b, r);
    }
    authban_push_front(b, r);
    if (r->banned_until < until)
        r->banned_until = until;
    pthread_mutex_unlock(&b->lock);
}

void authban_forgive(struct authban *b, const char *ip, int n, double now)
{
    unsigned char key[AUTHBAN_KEY_LEN];
    if (!b || n <= 0 || !authban_key(ip, key))
        return;
    pthread_mutex_lock(&b->lock);
    struct authban_rec *r = *authban_slot(b, key);
    if (r && !(r->banned_until > now)) {
        authban_expire(b, r, now);
        r->count -= n < r->count ? n : r->count;   /* the newest sit at the ring's end */
        if (r->count == 0)
            authban_drop(b, r);
    }
    pthread_mutex_unlock(&b->lock);
}

bool authban_is_banned(struct authban *b, const char *ip, double now)
{
    unsigned char key[AUTHBAN_KEY_LEN];
    if (!b || !authban_key(ip, key))
        return false;
    pthread_mutex_lock(&b->lock);
    const struct authban_rec *r = *authban_slot(b, key);
    bool banned = r && r->banned_until > now;
    pthread_mutex_unlock(&b->lock);
    return banned;
}

size_t authban_count(struct authban *b)
{
    if (!b)
        return 0;
    pthread_mutex_lock(&b->lock);
    size_t n = b->n;
    pthread_mutex_unlock(&b->lock);
    return n;
}
