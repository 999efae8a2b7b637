/* Unit tests for obs/log: JSON record format and escaping (checked by parsing with
 * jansson), the threaded event log writer, and diagnostics on stderr.
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "obs/log.h"
#include "util/buf.h"
#include "util/result.h"

static const char *const all_keys[] = {
    "type", "id", "timestamp", "sender", "recipient", "queue", "site", "peer_address",
    "code", "response", "size", "delay", "attempts", "tls", "protocol", "tenant",
    "egress_source",
};
#define NKEYS (sizeof all_keys / sizeof all_keys[0])

static const struct log_record null_record = {
    .code = -1, .size = -1, .delay = -1, .attempts = -1,
};

/* Formats r and parses the line; asserts exactly one line and exactly the 17 keys. */
static json_t *format_parse(const struct log_record *r, struct buf *line)
{
    buf_init(line, 0);
    assert_int_equal(log_format(r, line), PT_OK);
    assert_true(line->len > 2);
    assert_int_equal(line->data[line->len - 1], '\n');
    assert_null(memchr(line->data, '\n', line->len - 1));
    json_error_t jerr;
    json_t *o = json_loadb(line->data, line->len, 0, &jerr);
    if (!o)
        fail_msg("not JSON (%s): %s", jerr.text, line->data);
    assert_true(json_is_object(o));
    assert_int_equal(json_object_size(o), NKEYS);
    return o;
}

static void assert_key_order(const char *line)
{
    const char *prev = line;
    for (size_t i = 0; i < NKEYS; i++) {
        char k[32];
        snprintf(k, sizeof k, "\"%s\":", all_keys[i]);
        const char *at = strstr(line, k);
        assert_non_null(at);
        assert_true(at >= prev);
        prev = at;
    }
}

static const char *str_of(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_format_full(void **state)
{
    struct log_record r = {
        .type = LOG_DELIVERY, .id = "01HZX5", .timestamp = 1700000000.5,
        .sender = "a@example.org", .recipient = "b@example.com", .queue = "example.com",
        .site = "mx1.example.com:25", .peer_address = "192.0.2.7", .code = 250,
        .response = "2.0.0 Ok: queued as 12345", .size = 4096, .delay = 1.23456,
        .attempts = 2, .tls = "TLSv1.3:TLS_AES_256_GCM_SHA384", .protocol = "smtp",
    };
    struct buf line;
    json_t *o = format_parse(&r, &line);
    assert_key_order(line.data);
    assert_string_equal(str_of(o, "type"), "Delivery");
    assert_string_equal(str_of(o, "id"), "01HZX5");
    assert_string_equal(str_of(o, "timestamp"), "2023-11-14T22:13:20.500Z");
    assert_string_equal(str_of(o, "sender"), "a@example.org");
    assert_string_equal(str_of(o, "recipient"), "b@example.com");
    assert_string_equal(str_of(o, "queue"), "example.com");
    assert_string_equal(str_of(o, "site"), "mx1.example.com:25");
    assert_string_equal(str_of(o, "peer_address"), "192.0.2.7");
    assert_true(json_is_integer(json_object_get(o, "code")));
    assert_int_equal(json_integer_value(json_object_get(o, "code")), 250);
    assert_string_equal(str_of(o, "response"), "2.0.0 Ok: queued as 12345");
    assert_true(json_is_integer(json_object_get(o, "size")));
    assert_int_equal(json_integer_value(json_object_get(o, "size")), 4096);
    assert_true(json_is_real(json_object_get(o, "delay")));
    assert_non_null(strstr(line.data, "\"delay\":1.235,"));
    assert_true(json_is_integer(json_object_get(o, "attempts")));
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 2);
    assert_string_equal(str_of(o, "tls"), "TLSv1.3:TLS_AES_256_GCM_SHA384");
    assert_string_equal(str_of(o, "protocol"), "smtp");
    json_decref(o);
    buf_free(&line);
}

static void test_format_nulls(void **state)
{
    struct buf line;
    json_t *o = format_parse(&null_record, &line);
    assert_key_order(line.data);
    for (size_t i = 0; i < NKEYS; i++) {
        json_t *v = json_object_get(o, all_keys[i]);
        assert_non_null(v);
        if (strcmp(all_keys[i], "timestamp") == 0) {
            /* 0 = now: "YYYY-MM-DDTHH:MM:SS.mmmZ" */
            assert_true(json_is_string(v));
            const char *ts = json_string_value(v);
            assert_int_equal(strlen(ts), 24);
            assert_int_equal(ts[10], 'T');
            assert_int_equal(ts[19], '.');
            assert_int_equal(ts[23], 'Z');
        } else {
            assert_true(json_is_null(v));
        }
    }
    json_decref(o);
    buf_free(&line);
}

static void test_format_numbers(void **state)
{
    struct log_record r = null_record;
    r.type = LOG_RECEPTION;
    r.code = 0;
    r.size = INT64_C(5000000000);
    r.attempts = 0;
    r.delay = 0;
    struct buf line;
    json_t *o = format_parse(&r, &line);
    assert_int_equal(json_integer_value(json_object_get(o, "code")), 0);
    assert_true(json_integer_value(json_object_get(o, "size")) == INT64_C(5000000000));
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 0);
    assert_non_null(strstr(line.data, "\"delay\":0.000,"));
    json_decref(o);
    buf_free(&line);

    /* Not-a-number delays are not JSON: they become null. */
    r.delay = NAN;
    o = format_parse(&r, &line);
    assert_true(json_is_null(json_object_get(o, "delay")));
    json_decref(o);
    buf_free(&line);
}

/* Formats s as "response" and returns what a JSON parser reads back (caller frees). */
static char *roundtrip(const char *s, struct buf *line)
{
    struct log_record r = null_record;
    r.response = s;
    json_t *o = format_parse(&r, line);
    char *back = strdup(str_of(o, "response"));
    json_decref(o);
    return back;
}

static void test_escape_ascii(void **state)
{
    struct buf line;
    char *back = roundtrip("say \"hi\" \\ back\\slash", &line);
    assert_string_equal(back, "say \"hi\" \\ back\\slash");
    assert_non_null(strstr(line.data, "say \\\"hi\\\" \\\\ back\\\\slash"));
    free(back);
    buf_free(&line);

    char ctl[40];
    for (int i = 1; i < 32; i++)
        ctl[i - 1] = (char)i;
    ctl[31] = 0x7f;
    ctl[32] = 0;
    back = roundtrip(ctl, &line);
    assert_string_equal(back, ctl);
    assert_non_null(strstr(line.data, "\\u0001"));
    assert_non_null(strstr(line.data, "\\u001f"));
    assert_non_null(strstr(line.data, "\\n"));
    assert_non_null(strstr(line.data, "\\r"));
    assert_non_null(strstr(line.data, "\\t"));
    free(back);
    buf_free(&line);
}

static void test_escape_utf8(void **state)
{
    struct buf line;
    /* Valid multi-byte UTF-8 passes through unescaped. */
    const char *ok = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf";
    char *back = roundtrip(ok, &line);
    assert_string_equal(back, ok);
    assert_non_null(strstr(line.data, ok));
    free(back);
    buf_free(&line);

    static const struct { const char *in, *out; } bad[] = {
        {"a\xff" "b", "a\xef\xbf\xbd" "b"},                        /* never valid */
        {"a\x80" "b", "a\xef\xbf\xbd" "b"},                        /* lone continuation */
        {"a\xc3", "a\xef\xbf\xbd"},                                /* truncated at end */
        {"\xc3(", "\xef\xbf\xbd("},                                /* bad continuation */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                  /* overlong */
        {"\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},  /* overlong 3-byte */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},  /* surrogate */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
        {"\xf8\x88\x80\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        back = roundtrip(bad[i].in, &line);   /* parses: jansson rejects bad UTF-8 */
        assert_string_equal(back, bad[i].out);
        free(back);
        buf_free(&line);
    }
}

static void test_escape_long(void **state)
{
    /* Long enough to cross many escaping chunks, with multi-byte sequences and escapes
     * at every alignment. */
    const char pattern[] = "x\xc3\xa9\"\\\x01\xf0\x9f\x98\x80\xff";
    const char expect[] = "x\xc3\xa9\"\\\x01\xf0\x9f\x98\x80\xef\xbf\xbd";
    size_t reps = 30000, plen = sizeof pattern - 1, elen = sizeof expect - 1;
    char *in = malloc(reps * plen + 1), *want = malloc(reps * elen + 1);
    assert_non_null(in);
    assert_non_null(want);
    for (size_t i = 0; i < reps; i++) {
        memcpy(in + i * plen, pattern, plen);
        memcpy(want + i * elen, expect, elen);
    }
    in[reps * plen] = 0;
    want[reps * elen] = 0;
    struct buf line;
    char *back = roundtrip(in, &line);
    assert_string_equal(back, want);
    free(back);
    buf_free(&line);

    /* A plain long string, one shorter than a chunk boundary and one past it. */
    for (size_t n = 4095; n <= 4097; n++) {
        char *s = malloc(n + 1);
        memset(s, 'a', n);
        s[n] = 0;
        back = roundtrip(s, &line);
        assert_string_equal(back, s);
        free(back);
        free(s);
        buf_free(&line);
    }
    free(in);
    free(want);
}

static void test_format_bounded(void **state)
{
    /* A failed format leaves the buffer as it was: no half record. */
    struct buf b;
    buf_init(&b, 64);
    assert_int_equal(buf_appends(&b, "keep"), PT_OK);
    struct log_record r = null_record;
    r.response = "this record does not fit in sixty-four bytes, not even nearly";
    assert_int_equal(log_format(&r, &b), PT_TOOLONG);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "keep");
    buf_free(&b);
}

/* ---- the event log file ---- */

static char tmpdir[64];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/petrel-test-log-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct buf b;
    buf_init(&b, 0);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        assert_int_equal(buf_append(&b, chunk, n), PT_OK);
    fclose(f);
    if (!b.data)
        assert_int_equal(buf_append(&b, "", 0), PT_OK);
    return buf_steal(&b, len);
}

static size_t count_lines(const char *p, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += p[i] == '\n';
    return n;
}

static void test_event_without_open(void **state)
{
    struct log_record r = null_record;
    r.type = LOG_ADMIN;
    log_event(&r);   /* nothing opened: nothing written, no crash */
    log_close();     /* no-op */
    assert_int_equal(log_dropped(), 0);
}

#define NTHREADS 4
#define PER_THREAD 10000

static void *event_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    char id[32], rcpt[64];
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(id, sizeof id, "t%d-%d", t, i);
        snprintf(rcpt, sizeof rcpt, "user%d@d\xc3\xa9mo\"%d\".example", i, t);
        struct log_record r = {
            .type = LOG_DELIVERY, .id = id, .sender = "s@example.org", .recipient = rcpt,
            .queue = "example.com", .code = 250, .response = "ok\r\n", .size = i,
            .delay = 0.25, .attempts = 1, .protocol = "http",
        };
        log_event(&r);
    }
    return NULL;
}

static void test_event_threads(void **state)
{
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/a/b/events.log", tmpdir);
    /* Large enough that a slow sanitizer build never drops: the count must be exact. */
    log_set_queue_max(64u << 20);
    assert_int_equal(log_open(path, err, sizeof err), PT_OK);
    assert_int_equal(log_open(path, err, sizeof err), PT_ERROR);   /* already open */
    pthread_t th[NTHREADS];
    for (int t = 0; t < NTHREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, event_thread, (void *)(intptr_t)t), 0);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    log_close();
    log_set_queue_max(0);
    assert_int_equal(log_dropped(), 0);

    size_t len;
    char *data = read_all(path, &len);
    assert_non_null(data);
    assert_int_equal(count_lines(data, len), NTHREADS * PER_THREAD);
    unsigned char *seen = calloc(NTHREADS * PER_THREAD, 1);
    char *p = data;
    for (size_t n = 0; n < NTHREADS * PER_THREAD; n++) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        json_error_t jerr;
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, &jerr);
        if (!o)
            fail_msg("line %zu not JSON: %s", n, jerr.text);
        assert_int_equal(json_object_size(o), NKEYS);
        int t, i;
        assert_int_equal(sscanf(str_of(o, "id"), "t%d-%d", &t, &i), 2);
        assert_true(t >= 0 && t < NTHREADS && i >= 0 && i < PER_THREAD);
        assert_int_equal(json_integer_value(json_object_get(o, "size")), i);
        seen[t * PER_THREAD + i]++;
        json_decref(o);
        p = nl + 1;
    }
    for (size_t n = 0; n < NTHREADS * PER_THREAD; n++)
        assert_int_equal(seen[n], 1);
    free(seen);
    free(data);

    /* Appends on reopen; events after close are ignored. */
    assert_int_equal(log_open(path, err, sizeof err), PT_OK);
    struct log_record r = null_record;
    r.type = LOG_ADMIN;
    log_event(&r);
    log_close();
    log_event(&r);
    data = read_all(path, &len);
    assert_int_equal(count_lines(data, len), NTHREADS * PER_THREAD + 1);
    free(data);
}

static void test_event_reopen(void **state)
{
    char path[128], moved[140], err[256];
    snprintf(path, sizeof path, "%s/rot/events.log", tmpdir);
    snprintf(moved, sizeof moved, "%s.1", path);
    assert_int_equal(log_open(path, err, sizeof err), PT_OK);
    struct log_record r = null_record;
    r.type = LOG_ADMIN;
    r.id = "before";
    log_event(&r);
    assert_int_equal(rename(path, moved), 0);
    log_reopen();
    r.id = "after";
    log_event(&r);
    log_close();

    size_t len;
    char *old = read_all(moved, &len);
    assert_int_equal(count_lines(old, len), 1);
    assert_non_null(strstr(old, "\"before\""));
    free(old);
    char *cur = read_all(path, &len);
    assert_non_null(cur);
    assert_int_equal(count_lines(cur, len), 1);
    assert_non_null(strstr(cur, "\"after\""));
    free(cur);
}

/* A reload that changes configure_logging.path: queued records go to the old
 * file, later ones to the new path (its directories created). */
static void test_event_reopen_path(void **state)
{
    char path[128], other[140], err[256];
    snprintf(path, sizeof path, "%s/p1/events.log", tmpdir);
    snprintf(other, sizeof other, "%s/p2/sub/events.log", tmpdir);
    assert_int_equal(log_open(path, err, sizeof err), PT_OK);
    struct log_record r = null_record;
    r.type = LOG_ADMIN;
    r.id = "first";
    log_event(&r);
    log_reopen_path(other);
    r.id = "second";
    log_event(&r);
    log_reopen_path(other);          /* the same path again: a plain reopen */
    r.id = "third";
    log_event(&r);
    log_close();
    size_t len;
    char *a = read_all(path, &len);
    assert_non_null(a);
    assert_int_equal(count_lines(a, len), 1);
    assert_non_null(strstr(a, "\"first\""));
    free(a);
    char *b = read_all(other, &len);
    assert_non_null(b);
    assert_int_equal(count_lines(b, len), 2);
    assert_non_null(strstr(b, "\"second\""));
    assert_non_null(strstr(b, "\"third\""));
    free(b);
}

/* stderr on a regular file: after mv, log_diag_reopen makes new lines go to a new
 * file of the old name. */
static void test_diag_reopen(void **state)
{
    char path[128], moved[140];
    snprintf(path, sizeof path, "%s/diag.err", tmpdir);
    snprintf(moved, sizeof moved, "%s.1", path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    log_diag_track_stderr();
    log_warn("line before rotation");
    assert_int_equal(rename(path, moved), 0);
    int rc = log_diag_reopen();
    log_warn("line after rotation");
    dup2(saved, STDERR_FILENO);
    close(saved);
    log_diag_track_stderr();         /* a terminal or pipe again: nothing to reopen */
    assert_int_equal(rc, PT_OK);
    size_t len;
    char *old = read_all(moved, &len);
    char *cur = read_all(path, &len);
    assert_non_null(old);
    assert_non_null(cur);
    assert_non_null(strstr(old, "line before rotation"));
    assert_null(strstr(old, "line after rotation"));
    assert_non_null(strstr(cur, "line after rotation"));
    free(old);
    free(cur);
}

/* Runs fn with stderr captured; returns what was written (caller frees). */
static char *capture_stderr(void (*fn)(void))
{
    char path[128];
    snprintf(path, sizeof path, "%s/stderr.txt", tmpdir);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    size_t len;
    return read_all(path, &len);
}

static void drop_everything(void)
{
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/drop/events.log", tmpdir);
    log_set_queue_max(16);   /* smaller than any record: every one is dropped */
    assert_int_equal(log_open(path, err, sizeof err), PT_OK);
    struct log_record r = null_record;
    r.type = LOG_ADMIN;
    for (int i = 0; i < 100; i++)
        log_event(&r);
    assert_int_equal(log_dropped(), 100);
    log_close();
    log_set_queue_max(0);
}

static void test_event_drop(void **state)
{
    char *err = capture_stderr(drop_everything);
    /* One warning for the whole streak, not one per record. */
    assert_non_null(strstr(err, " warn: event log: queue over 16 bytes"));
    assert_null(strstr(strstr(err, "queue over") + 1, "queue over"));
    free(err);
    char path[128];
    snprintf(path, sizeof path, "%s/drop/events.log", tmpdir);
    size_t len;
    char *data = read_all(path, &len);
    assert_int_equal(len, 0);
    free(data);
}

static void test_open_error(void **state)
{
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "%s/file", tmpdir);
    FILE *f = fopen(path, "w");
    fclose(f);
    snprintf(path, sizeof path, "%s/file/sub/events.log", tmpdir);   /* parent is a file */
    assert_int_not_equal(log_open(path, err, sizeof err), PT_OK);
    assert_true(strlen(err) > 0);
    assert_int_equal(log_open(path, NULL, 0), PT_ERROR);
}

static void diag_lines(void)
{
    log_set_level(LOG_L_WARN);
    log_info("hidden %d", 1);
    log_debug("hidden %d", 2);
    log_warn("shown %d", 3);
    log_error("also shown\n");   /* a trailing newline is not doubled */
    char big[5000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    log_error("%s", big);
    log_warn("from %s", "a\r\n2026-01-01T00:00:00.000Z error: forged\x1b[0m");
    log_set_level(LOG_L_INFO);
}

static void test_diag(void **state)
{
    char *out = capture_stderr(diag_lines);
    assert_null(strstr(out, "hidden"));
    char *l1 = out, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
    /* "2026-11-23T23:38:02.123Z warn: shown 3" */
    assert_int_equal(l1[10], 'T');
    assert_int_equal(l1[23], 'Z');
    assert_memory_equal(l1 + 24, " warn: shown 3\n", 15);
    assert_memory_equal(l2 + 24, " error: also shown\n", 19);
    char *end = strchr(l3, '\n');
    assert_non_null(end);
    assert_true(end - l3 < 4096);   /* long messages are cut, still one line */
    assert_memory_equal(end - 3, "...", 3);
    /* control octets are escaped: the forged "line" stays inside the real one */
    char *l4 = end + 1;
    assert_string_equal(l4 + 24, " warn: from a\\x0d\\x0a2026-01-01T00:00:00.000Z error: "
                        "forged\\x1b[0m\n");
    free(out);
}

static void test_level_parse(void **state)
{
    enum log_level l;
    assert_int_equal(log_level_parse("debug", &l), PT_OK);
    assert_int_equal(l, LOG_L_DEBUG);
    assert_int_equal(log_level_parse("info", &l), PT_OK);
    assert_int_equal(l, LOG_L_INFO);
    assert_int_equal(log_level_parse("warn", &l), PT_OK);
    assert_int_equal(l, LOG_L_WARN);
    assert_int_equal(log_level_parse("error", &l), PT_OK);
    assert_int_equal(l, LOG_L_ERROR);
    assert_int_equal(log_level_parse("verbose", &l), PT_INVALID);
    assert_int_equal(log_level_parse(NULL, &l), PT_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_full),
        cmocka_unit_test(test_format_nulls),
        cmocka_unit_test(test_format_numbers),
        cmocka_unit_test(test_escape_ascii),
        cmocka_unit_test(test_escape_utf8),
        cmocka_unit_test(test_escape_long),
        cmocka_unit_test(test_format_bounded),
        cmocka_unit_test(test_event_without_open),
        cmocka_unit_test(test_event_threads),
        cmocka_unit_test(test_event_reopen),
        cmocka_unit_test(test_event_reopen_path),
        cmocka_unit_test(test_diag_reopen),
        cmocka_unit_test(test_event_drop),
        cmocka_unit_test(test_open_error),
        cmocka_unit_test(test_diag),
        cmocka_unit_test(test_level_parse),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
