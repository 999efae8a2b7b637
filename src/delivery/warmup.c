/* IP warm-up state: per source its first-send day, per (source, site) today's
 * count. Days are UTC calendar days (days since the epoch). The file:
 *   {"sources": {"ip1": {"first_day": 20428, "day": 20429, "sent": {"site": 5}}}}
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "delivery/warmup.h"
#include "obs/log.h"
#include "util/atomicfile.h"
#include "util/result.h"

#define WARMUP_FILE "STATE.json"
#define WARMUP_WRITE_DELAY_MS 200   /* counts coalesce this long before a write */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static json_t *state;               /* {"sources": {...}}; under lock */
static bool dirty, stopping, running;
static pthread_t writer;
static char dir[4096], path[4200];

static long day_of(double wall)
{
    return (long)floor(wall / 86400.0);
}

double warmup_until_next_day(double wall)
{
    return (double)(day_of(wall) + 1) * 86400.0 - wall;
}

/* The object of source (created); under lock. NULL when out of memory. */
static json_t *source_obj(const char *source, bool create)
{
    json_t *srcs = json_object_get(state, "sources");
    json_t *o = json_object_get(srcs, source);
    if (!o && create) {
        o = json_pack("{s:I, s:I, s:{}}", "first_day", (json_int_t)0, "day", (json_int_t)0,
                      "sent");
        if (!o || json_object_set_new(srcs, source, o) != 0)
            return NULL;
    }
    return o;
}

uint32_t warmup_remaining(const char *source, const int *warmup, int n, const char *site,
                          double wall)
{
    if (!source || n <= 0)
        return UINT32_MAX;
    long today = day_of(wall);
    pthread_mutex_lock(&lock);
    json_t *o = state ? source_obj(source, false) : NULL;
    long first = o ? (long)json_integer_value(json_object_get(o, "first_day")) : 0;
    long dayno = first ? today - first + 1 : 1;
    uint32_t left = UINT32_MAX;
    if (dayno >= 1 && dayno <= n) {
        long sent = 0;
        if (o && json_integer_value(json_object_get(o, "day")) == today)
            sent = (long)json_integer_value(json_object_get(json_object_get(o, "sent"), site));
        left = sent >= warmup[dayno - 1] ? 0 : (uint32_t)(warmup[dayno - 1] - sent);
    }
    pthread_mutex_unlock(&lock);
    return left;
}

void warmup_take(const char *source, const char *site, double wall)
{
    if (!source)
        return;
    long today = day_of(wall);
    pthread_mutex_lock(&lock);
    json_t *o = state ? source_obj(source, true) : NULL;
    if (o) {
        if (json_integer_value(json_object_get(o, "first_day")) == 0)
            json_object_set_new(o, "first_day", json_integer(today));
        if (json_integer_value(json_object_get(o, "day")) != today) {
            json_object_set_new(o, "day", json_integer(today));
            json_object_set_new(o, "sent", json_object());
        }
        json_t *sent = json_object_get(o, "sent");
        json_int_t n = json_integer_value(json_object_get(sent, site));
        json_object_set_new(sent, site, json_integer(n + 1));
        dirty = true;
        pthread_cond_signal(&cond);
    } else {
        log_warn("warm-up: out of memory counting a message of %s", source);
    }
    pthread_mutex_unlock(&lock);
}

/* Writes text to the file atomically (util/atomicfile). */
static int write_file(const char *text)
{
    struct file_part part = { text, strlen(text) };
    return file_write_atomic(path, &part, 1);
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!dirty && !stopping)
            pthread_cond_wait(&cond, &lock);
        if (!dirty && stopping)
            break;
        if (!stopping) {   /* let counts coalesce */
            pthread_mutex_unlock(&lock);
            usleep(WARMUP_WRITE_DELAY_MS * 1000);
            pthread_mutex_lock(&lock);
        }
        dirty = false;
        char *text = json_dumps(state, JSON_COMPACT | JSON_SORT_KEYS);
        pthread_mutex_unlock(&lock);
        if (!text || write_file(text) != PT_OK)
            log_error("warm-up: cannot write %s: %s", path, strerror(errno));
        free(text);
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

int warmup_open(const char *spool_dir, bool required, char *err, size_t errlen)
{
    snprintf(dir, sizeof dir, "%s/egress", spool_dir);
    snprintf(path, sizeof path, "%s/%s", dir, WARMUP_FILE);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        if (required) {
            snprintf(err, errlen, "warm-up state: cannot create %s: %s", dir, strerror(errno));
            return PT_ERROR;
        }
        /* no warm-up configured (and no local spool directory): counts stay in memory */
        pthread_mutex_lock(&lock);
        state = json_pack("{s:{}}", "sources");
        pthread_mutex_unlock(&lock);
        return PT_OK;
    }
    json_error_t jerr;
    json_t *s = json_load_file(path, 0, &jerr);
    if (!s && access(path, F_OK) == 0) {
        snprintf(err, errlen, "warm-up state %s is not valid JSON (%s); fix or remove it",
                 path, jerr.text);
        return PT_ERROR;
    }
    if (s && !json_is_object(json_object_get(s, "sources"))) {
        json_decref(s);
        snprintf(err, errlen, "warm-up state %s has no \"sources\" object; fix or remove it",
                 path);
        return PT_ERROR;
    }
    if (!s && !(s = json_pack("{s:{}}", "sources"))) {
        snprintf(err, errlen, "out of memory");
        return PT_ERROR;
    }
    pthread_mutex_lock(&lock);
    state = s;
    stopping = false;
    dirty = false;
    pthread_mutex_unlock(&lock);
    if (pthread_create(&writer, NULL, writer_main, NULL) != 0) {
        snprintf(err, errlen, "warm-up state: cannot start its writer thread");
        return PT_ERROR;
    }
    running = true;
    return PT_OK;
}

void warmup_close(void)
{
    if (!running) {
        pthread_mutex_lock(&lock);
        json_decref(state);
        state = NULL;
        pthread_mutex_unlock(&lock);
        return;
    }
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(writer, NULL);
    running = false;
    pthread_mutex_lock(&lock);
    json_decref(state);
    state = NULL;
    pthread_mutex_unlock(&lock);
}
