/* DKIM key cache; see dkim_cache.h. A small array searched linearly under the
 * mutex: there are a few keys per tenant, not thousands per message.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "dkim/dkim.h"
#include "dkim/dkim_cache.h"
#include "util/timeutil.h"

struct cached {
    char *domain, *selector, *file;
    struct dkim_key *key;
    struct timespec mtime;
    off_t size;
    double checked;              /* monotonic seconds of the last stat */
    bool current;                /* false: superseded by a newer load of the file */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct cached *cache;
static size_t ncache;

static const char *const signed_headers[] = { "From", "To", "Subject", "Date", "Message-ID" };

static double mono(void)
{
    return (double)time_mono_ms() / 1000.0;
}

static struct dkim_key *load(const char *domain, const char *selector, const char *file,
                             char *err, size_t errlen)
{
    int nh = (int)(sizeof signed_headers / sizeof signed_headers[0]);
    struct dkim_key *k = dkim_key_load(domain, selector, file, "rsa-sha256", signed_headers, nh,
                                       err, errlen);
    if (!k) {
        char err2[256];
        k = dkim_key_load(domain, selector, file, "ed25519-sha256", signed_headers, nh, err2,
                          sizeof err2);
    }
    return k;
}

static bool same_file(const struct cached *c, const struct stat *st)
{
    return c->size == st->st_size && c->mtime.tv_sec == st->st_mtim.tv_sec &&
           c->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

const struct dkim_key *dkim_key_cache_get(const char *domain, const char *selector,
                                          const char *key_file, char *err, size_t errlen)
{
    if (!domain || !selector || !key_file || !*key_file) {
        snprintf(err, errlen, "key_file: missing");
        return NULL;
    }
    double now = mono();
    pthread_mutex_lock(&lock);
    struct cached *hit = NULL;
    for (size_t i = 0; i < ncache && !hit; i++) {
        struct cached *c = &cache[i];
        if (c->current && strcmp(c->file, key_file) == 0 &&
            strcasecmp(c->domain, domain) == 0 && strcmp(c->selector, selector) == 0)
            hit = c;
    }
    struct stat st;
    if (hit && now - hit->checked < DKIM_CACHE_RECHECK_S) {
        pthread_mutex_unlock(&lock);
        return hit->key;
    }
    if (stat(key_file, &st) != 0) {
        /* a key that vanished is an error now: never sign with a stale one silently */
        snprintf(err, errlen, "key_file %s: %m", key_file);
        if (hit)
            hit->checked = 0;
        pthread_mutex_unlock(&lock);
        return NULL;
    }
    if (hit && same_file(hit, &st)) {
        hit->checked = now;
        pthread_mutex_unlock(&lock);
        return hit->key;
    }
    const struct dkim_key *ret = NULL;
    if (ncache >= DKIM_CACHE_MAX) {
        snprintf(err, errlen, "key_file %s: too many DKIM keys loaded (%d)", key_file,
                 DKIM_CACHE_MAX);
        goto out;
    }
    struct cached *grown = realloc(cache, (ncache + 1) * sizeof *cache);
    if (!grown) {
        snprintf(err, errlen, "key_file %s: out of memory", key_file);
        goto out;
    }
    cache = grown;
    if (hit)   /* realloc may have moved it */
        hit = NULL;
    struct dkim_key *k = load(domain, selector, key_file, err, errlen);
    if (!k)
        goto out;
    struct cached c = {
        .domain = strdup(domain), .selector = strdup(selector), .file = strdup(key_file),
        .key = k, .mtime = st.st_mtim, .size = st.st_size, .checked = now, .current = true,
    };
    if (!c.domain || !c.selector || !c.file) {
        free(c.domain);
        free(c.selector);
        free(c.file);
        dkim_key_free(k);
        snprintf(err, errlen, "key_file %s: out of memory", key_file);
        goto out;
    }
    for (size_t i = 0; i < ncache; i++)   /* an older load of the same key retires */
        if (cache[i].current && strcmp(cache[i].file, key_file) == 0 &&
            strcasecmp(cache[i].domain, domain) == 0 && strcmp(cache[i].selector, selector) == 0)
            cache[i].current = false;
    cache[ncache++] = c;
    ret = k;
out:
    pthread_mutex_unlock(&lock);
    return ret;
}

const struct dkim_key *dkim_key_cache_peek(const char *domain, const char *selector,
                                           const char *key_file, bool *recheck_due)
{
    if (recheck_due)
        *recheck_due = false;
    if (!domain || !selector || !key_file || !*key_file)
        return NULL;
    double now = mono();
    const struct dkim_key *ret = NULL;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < ncache && !ret; i++) {
        struct cached *c = &cache[i];
        if (c->current && strcmp(c->file, key_file) == 0 &&
            strcasecmp(c->domain, domain) == 0 && strcmp(c->selector, selector) == 0) {
            ret = c->key;
            if (recheck_due)
                *recheck_due = now - c->checked >= DKIM_CACHE_RECHECK_S;
        }
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

void dkim_key_cache_clear(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < ncache; i++) {
        free(cache[i].domain);
        free(cache[i].selector);
        free(cache[i].file);
        dkim_key_free(cache[i].key);
    }
    free(cache);
    cache = NULL;
    ncache = 0;
    pthread_mutex_unlock(&lock);
}
