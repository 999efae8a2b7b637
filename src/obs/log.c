/* Event log (JSON lines, DESIGN §6) and stderr diagnostics; see log.h. Callers format
 * on their own thread into a bounded in-memory queue that one writer thread drains.
 * Must never block a caller on disk I/O, and never grow past the queue cap (drop instead).
 * SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "obs/log.h"
#include "util/utf8.h"
#include "util/buf.h"
#include "util/result.h"
#include "util/timeutil.h"

/* Tunables. The queue cap bounds memory when the disk is slower than the mail flow
 * (two buffers of this size may exist while the writer works); a line cap bounds one
 * record; a drained write buffer larger than LOG_KEEP_BYTES is given back. */
#define LOG_QUEUE_MAX_DEFAULT (4u << 20)
#define LOG_LINE_MAX (1u << 20)
#define LOG_KEEP_BYTES (256u << 10)
#define LOG_DIAG_MAX 2048
#define LOG_FILE_MODE 0640  /* records carry addresses: not world-readable */

/* The event log is process-wide by nature (one file, one writer thread), so its state is
 * a deliberate exception to "no global mutable state". Everything below `lock`
 * is guarded by it; fd and path are owned by the writer between open and close. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_bool opened;     /* lock-free pre-check for log_event; `running` decides */
    bool running;           /* log_event may queue */
    bool stopping;          /* log_close asked the writer to drain and exit */
    bool reopen;            /* log_reopen asked the writer to reopen path ... */
    size_t reopen_at;       /* ... after this many queued bytes (they go to the old file) */
    struct buf queue;       /* formatted lines waiting for the writer; max = the cap */
    size_t queue_max;
    uint64_t dropped;       /* since log_open, for log_dropped() */
    uint64_t unreported;    /* drops the writer has not yet warned about */
    int fd;
    char *path;
    char *new_path;         /* log_reopen_path: the writer switches to it at the reopen */
    pthread_t writer;
} lg = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .queue_max = LOG_QUEUE_MAX_DEFAULT,
    .fd = -1,
};

static atomic_int diag_level = LOG_L_INFO;

static const char *const level_names[] = {
    [LOG_L_DEBUG] = "debug",
    [LOG_L_INFO] = "info",
    [LOG_L_WARN] = "warn",
    [LOG_L_ERROR] = "error",
};

/* ---- JSON formatting (hot path: several records per message) ---- */


/* Input is escaped in chunks so the worst case (6 output bytes per input byte) is
 * reserved per chunk, not for the whole string at once. */
#define ESC_CHUNK 4096

static int json_str(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    if (!s)
        return buf_append(b, "null", 4);
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + strlen(s);
    int rc = buf_append(b, "\"", 1);
    while (!rc && p < end) {
        size_t chunk = (size_t)(end - p) < ESC_CHUNK ? (size_t)(end - p) : ESC_CHUNK;
        /* +3: a multi-byte sequence may run past the chunk end (copied as is). */
        if ((rc = buf_reserve(b, (chunk + 3) * 6 + 2)))
            break;
        const unsigned char *stop = p + chunk;
        char *o = b->data + b->len;
        while (p < stop) {
            unsigned char c = *p;
            if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
                *o++ = (char)c;
                p++;
            } else if (c == '"' || c == '\\') {
                *o++ = '\\';
                *o++ = (char)c;
                p++;
            } else if (c < 0x20) {
                *o++ = '\\';
                switch (c) {
                case '\n': *o++ = 'n'; break;
                case '\r': *o++ = 'r'; break;
                case '\t': *o++ = 't'; break;
                default:
                    memcpy(o, "u00", 3);
                    o += 3;
                    *o++ = hex[c >> 4];
                    *o++ = hex[c & 15];
                }
                p++;
            } else {
                size_t n = utf8_seq_len(p);
                if (n) {
                    memcpy(o, p, n);
                    o += n;
                    p += n;
                } else {
                    memcpy(o, "\\ufffd", 6);
                    o += 6;
                    p++;
                }
            }
        }
        b->len = (size_t)(o - b->data);
    }
    if (!rc)
        rc = buf_append(b, "\"", 1);
    return rc;
}

static int json_int(struct buf *b, int64_t v)
{
    if (v < 0)
        return buf_append(b, "null", 4);
    char tmp[24], *o = tmp + sizeof tmp;
    do {
        *--o = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(b, o, (size_t)(tmp + sizeof tmp - o));
}

static int json_delay(struct buf *b, double d)
{
    if (!(d >= 0) || !isfinite(d))   /* negative, NaN and inf are not JSON numbers */
        return buf_append(b, "null", 4);
    return buf_appendf(b, "%.3f", d);
}

int log_format(const struct log_record *r, struct buf *out)
{
    size_t start = out->len;
    char ts[40];
    time_rfc3339(r->timestamp != 0 ? r->timestamp : time_now(), ts, sizeof ts);

    int rc = buf_append(out, "{\"type\":", 8);
    if (!rc) rc = json_str(out, r->type);
    if (!rc) rc = buf_append(out, ",\"id\":", 6);
    if (!rc) rc = json_str(out, r->id);
    if (!rc) rc = buf_append(out, ",\"timestamp\":", 13);
    if (!rc) rc = json_str(out, ts);
    if (!rc) rc = buf_append(out, ",\"sender\":", 10);
    if (!rc) rc = json_str(out, r->sender);
    if (!rc) rc = buf_append(out, ",\"recipient\":", 13);
    if (!rc) rc = json_str(out, r->recipient);
    if (!rc) rc = buf_append(out, ",\"queue\":", 9);
    if (!rc) rc = json_str(out, r->queue);
    if (!rc) rc = buf_append(out, ",\"site\":", 8);
    if (!rc) rc = json_str(out, r->site);
    if (!rc) rc = buf_append(out, ",\"peer_address\":", 16);
    if (!rc) rc = json_str(out, r->peer_address);
    if (!rc) rc = buf_append(out, ",\"code\":", 8);
    if (!rc) rc = json_int(out, r->code);
    if (!rc) rc = buf_append(out, ",\"response\":", 12);
    if (!rc) rc = json_str(out, r->response);
    if (!rc) rc = buf_append(out, ",\"size\":", 8);
    if (!rc) rc = json_int(out, r->size);
    if (!rc) rc = buf_append(out, ",\"delay\":", 9);
    if (!rc) rc = json_delay(out, r->delay);
    if (!rc) rc = buf_append(out, ",\"attempts\":", 12);
    if (!rc) rc = json_int(out, r->attempts);
    if (!rc) rc = buf_append(out, ",\"tls\":", 7);
    if (!rc) rc = json_str(out, r->tls);
    if (!rc) rc = buf_append(out, ",\"protocol\":", 12);
    if (!rc) rc = json_str(out, r->protocol);
    if (!rc) rc = buf_append(out, ",\"tenant\":", 10);
    if (!rc) rc = json_str(out, r->tenant);
    if (!rc) rc = buf_append(out, ",\"egress_source\":", 17);
    if (!rc) rc = json_str(out, r->egress_source);
    if (!rc && r->user) {
        rc = buf_append(out, ",\"user\":", 8);
        if (!rc) rc = json_str(out, r->user);
    }
    if (!rc && r->action) {
        rc = buf_append(out, ",\"action\":", 10);
        if (!rc) rc = json_str(out, r->action);
        if (!rc) rc = buf_append(out, ",\"until\":", 9);
        if (!rc && r->until > 0) {
            char ts[64];
            time_rfc3339(r->until, ts, sizeof ts);
            rc = json_str(out, ts);
        } else if (!rc) {
            rc = json_str(out, NULL);
        }
    }
    if (!rc) rc = buf_append(out, "}\n", 2);
    if (rc) {   /* never leave half a record behind */
        out->len = start;
        if (out->data)
            out->data[start] = 0;
    }
    return rc;
}

/* ---- queue and writer thread ---- */

/* Each thread formats into its own line buffer, so the queue lock is held only for a
 * memcpy. The key's destructor frees the buffer when the thread exits. */
static pthread_key_t line_key;
static pthread_once_t line_once = PTHREAD_ONCE_INIT;
static _Thread_local struct buf tls_line;
static _Thread_local bool tls_line_ready;

static void line_free(void *p)
{
    buf_free(p);
    tls_line_ready = false;
}

static void line_key_make(void)
{
    pthread_key_create(&line_key, line_free);
}

static struct buf *line_buf(void)
{
    if (!tls_line_ready) {
        pthread_once(&line_once, line_key_make);
        buf_init(&tls_line, LOG_LINE_MAX);
        pthread_setspecific(line_key, &tls_line);
        tls_line_ready = true;
    }
    buf_reset(&tls_line);
    return &tls_line;
}

static void log_drop(void)
{
    pthread_mutex_lock(&lg.lock);
    bool first = lg.running && lg.unreported++ == 0;
    lg.dropped++;
    size_t cap = lg.queue_max;
    pthread_mutex_unlock(&lg.lock);
    if (first)
        log_warn("event log: queue over %zu bytes or record too long, dropping records", cap);
}

void log_event(const struct log_record *r)
{
    if (!atomic_load_explicit(&lg.opened, memory_order_acquire))
        return;
    struct buf *line = line_buf();
    if (log_format(r, line)) {
        log_drop();
        return;
    }
    pthread_mutex_lock(&lg.lock);
    if (!lg.running) {
        pthread_mutex_unlock(&lg.lock);
        return;
    }
    bool was_empty = lg.queue.len == 0;
    if (buf_append(&lg.queue, line->data, line->len)) {
        pthread_mutex_unlock(&lg.lock);
        log_drop();
        return;
    }
    /* The writer sleeps only on an empty queue, so only the first line must wake it. */
    if (was_empty)
        pthread_cond_signal(&lg.wake);
    pthread_mutex_unlock(&lg.lock);
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return PT_ERROR;
        }
        p += w;
        n -= (size_t)w;
    }
    return PT_OK;
}

static int open_append(const char *path)
{
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, LOG_FILE_MODE);
}

/* Writes one batch; a failure is counted and reported once per streak of failures
 * (the records are lost: the log must not hold mail up). */
static void writer_write(const char *p, size_t n, bool *failing)
{
    if (!n)
        return;
    if (write_all(lg.fd, p, n)) {
        int e = errno;
        uint64_t lines = 0;
        for (const char *q = p; (q = memchr(q, '\n', (size_t)(p + n - q))); q++)
            lines++;
        pthread_mutex_lock(&lg.lock);
        lg.dropped += lines;   /* a partial write may have saved a few: close enough */
        pthread_mutex_unlock(&lg.lock);
        if (!*failing)
            log_error("event log: write to %s failed: %s", lg.path, strerror(e));
        *failing = true;
        return;
    }
    *failing = false;
}

static int make_parents(const char *path, char *err, size_t errlen);

#define LOG_BATCH_NS 10000000L /* 10 ms */

static void *log_writer(void *arg)
{
    (void)arg;
    struct buf out;
    buf_init(&out, 0);
    bool failing = false;
    pthread_mutex_lock(&lg.lock);
    for (;;) {
        while (lg.queue.len == 0 && !lg.stopping && !lg.reopen)
            pthread_cond_wait(&lg.wake, &lg.lock);
        /* Swap buffers: callers keep appending while this batch is written. */
        struct buf q = lg.queue;
        lg.queue = out;
        lg.queue.max = q.max;
        out = q;
        bool stopping = lg.stopping, reopen = lg.reopen;
        char *new_path = reopen ? lg.new_path : NULL;
        if (reopen)
            lg.new_path = NULL;
        size_t cut = reopen ? lg.reopen_at : out.len;
        uint64_t unreported = lg.unreported;
        lg.reopen = false;
        lg.unreported = 0;
        pthread_mutex_unlock(&lg.lock);

        writer_write(out.data, cut, &failing);
        if (reopen) {
            char perr[256];
            const char *path = new_path ? new_path : lg.path;
            int fd = new_path && make_parents(path, perr, sizeof perr) ? -1 : open_append(path);
            if (fd < 0) {
                log_error("event log: reopen %s failed: %s (still writing to %s)", path,
                          strerror(errno), lg.path);
                free(new_path);
            } else {
                close(lg.fd);
                lg.fd = fd;
                if (new_path) {
                    pthread_mutex_lock(&lg.lock);
                    free(lg.path);
                    lg.path = new_path;
                    pthread_mutex_unlock(&lg.lock);
                }
            }
        }
        if (out.len > cut)
            writer_write(out.data + cut, out.len - cut, &failing);
        buf_reset(&out);
        if (out.cap > LOG_KEEP_BYTES)
            buf_free(&out);
        if (unreported)
            log_warn("event log: dropped %llu records", (unsigned long long)unreported);
        /* Let records accumulate: at most ~100 writes (and wakeups) per second
         * however busy we are; context switches cost more than the write. */
        if (!stopping) {
            struct timespec ts = { 0, LOG_BATCH_NS };
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&lg.lock);
        if (stopping && lg.queue.len == 0)
            break;
    }
    pthread_mutex_unlock(&lg.lock);
    buf_free(&out);
    return NULL;
}

/* mkdir -p of every directory above path. */
static int make_parents(const char *path, char *err, size_t errlen)
{
    char *dir = strdup(path);
    if (!dir) {
        snprintf(err, errlen, "out of memory");
        return PT_NOMEM;
    }
    for (char *p = dir + 1; (p = strchr(p, '/')); p++) {
        *p = 0;
        if (mkdir(dir, 0755) && errno != EEXIST) {
            snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
            free(dir);
            return PT_ERROR;
        }
        *p = '/';
    }
    free(dir);
    return PT_OK;
}

int log_open(const char *path, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || !errlen)
        err = dummy, errlen = sizeof dummy;
    if (atomic_load(&lg.opened)) {
        snprintf(err, errlen, "event log already open");
        return PT_ERROR;
    }
    int rc = make_parents(path, err, errlen);
    if (rc)
        return rc;
    int fd = open_append(path);
    if (fd < 0) {
        snprintf(err, errlen, "open %s: %s", path, strerror(errno));
        return PT_ERROR;
    }
    char *copy = strdup(path);
    if (!copy) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return PT_NOMEM;
    }
    pthread_mutex_lock(&lg.lock);
    lg.fd = fd;
    lg.path = copy;
    buf_init(&lg.queue, lg.queue_max);
    lg.running = true;
    lg.stopping = lg.reopen = false;
    lg.dropped = lg.unreported = 0;
    pthread_mutex_unlock(&lg.lock);
    if (pthread_create(&lg.writer, NULL, log_writer, NULL)) {
        pthread_mutex_lock(&lg.lock);
        lg.running = false;
        lg.fd = -1;
        lg.path = NULL;
        pthread_mutex_unlock(&lg.lock);
        close(fd);
        free(copy);
        snprintf(err, errlen, "cannot start the log writer thread");
        return PT_ERROR;
    }
    atomic_store_explicit(&lg.opened, true, memory_order_release);
    return PT_OK;
}

void log_reopen(void)
{
    log_reopen_path(NULL);
}

void log_reopen_path(const char *path)
{
    char *copy = path ? strdup(path) : NULL;
    pthread_mutex_lock(&lg.lock);
    const char *cur = lg.new_path ? lg.new_path : lg.path;
    if (copy && lg.running && (!cur || strcmp(copy, cur) != 0)) {
        free(lg.new_path);
        lg.new_path = copy;
        copy = NULL;
    }
    free(copy);
    if (lg.running) {
        if (!lg.reopen)   /* one pending already: its cut stays, later lines go to the new file */
            lg.reopen_at = lg.queue.len;
        lg.reopen = true;
        pthread_cond_signal(&lg.wake);
    }
    pthread_mutex_unlock(&lg.lock);
}

void log_close(void)
{
    if (!atomic_load(&lg.opened))
        return;
    pthread_mutex_lock(&lg.lock);
    lg.running = false;
    lg.stopping = true;
    pthread_cond_signal(&lg.wake);
    pthread_mutex_unlock(&lg.lock);
    pthread_join(lg.writer, NULL);

    pthread_mutex_lock(&lg.lock);
    atomic_store(&lg.opened, false);
    close(lg.fd);
    lg.fd = -1;
    free(lg.path);
    lg.path = NULL;
    free(lg.new_path);
    lg.new_path = NULL;
    buf_free(&lg.queue);
    pthread_mutex_unlock(&lg.lock);
}

void log_set_queue_max(size_t bytes)
{
    pthread_mutex_lock(&lg.lock);
    lg.queue_max = bytes ? bytes : LOG_QUEUE_MAX_DEFAULT;
    pthread_mutex_unlock(&lg.lock);
}

uint64_t log_dropped(void)
{
    pthread_mutex_lock(&lg.lock);
    uint64_t n = lg.dropped;
    pthread_mutex_unlock(&lg.lock);
    return n;
}

/* ---- diagnostics on stderr ---- */

void log_set_level(enum log_level l)
{
    atomic_store(&diag_level, (int)l);
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (s && strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return PT_OK;
        }
    }
    return PT_INVALID;
}

/* A diagnostic is one line whatever its text holds: a line end or another control
 * octet in the message (a Lua error value, a peer's reply, a decoded URL) is written
 * as \xHH, so no text can start a forged line of its own. */
static void diag_write(const char *level, const char *fmt, va_list ap)
{
    char msg[LOG_DIAG_MAX], line[LOG_DIAG_MAX];
    time_rfc3339(time_now(), line, 40);
    size_t n = strlen(line);
    n += (size_t)snprintf(line + n, sizeof line - n, " %s: ", level);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    size_t mlen = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    bool cut = m >= 0 && (size_t)m >= sizeof msg;
    while (mlen && msg[mlen - 1] == '\n')
        mlen--;
    for (size_t i = 0; i < mlen; i++) {
        unsigned char c = (unsigned char)msg[i];
        bool ctl = (c < 0x20 && c != '\t') || c == 0x7f;
        if (n + (ctl ? 4 : 1) > sizeof line - 5) {
            cut = true;
            break;
        }
        if (ctl)
            n += (size_t)snprintf(line + n, 5, "\\x%02x", c);
        else
            line[n++] = (char)c;
    }
    if (cut) {                             /* truncated: mark it, keep the line whole */
        memcpy(line + n, "...", 3);
        n += 3;
    }
    line[n++] = '\n';
    /* One write per line so lines from different threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_diag(enum log_level l, const char *fmt, ...)
{
    if ((int)l < atomic_load_explicit(&diag_level, memory_order_relaxed))
        return;
    if ((unsigned)l > LOG_L_ERROR)
        l = LOG_L_ERROR;
    va_list ap;
    va_start(ap, fmt);
    diag_write(level_names[l], fmt, ap);
    va_end(ap);
}

void log_notice(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_write("notice", fmt, ap);
    va_end(ap);
}

/* The file stderr was opened on at start, when it is a regular file (a service
 * manager's or a shell's redirection); log_diag_reopen opens that name again. */
static char diag_path[4096];

void log_diag_track_stderr(void)
{
    struct stat st;
    ssize_t n = readlink("/proc/self/fd/2", diag_path, sizeof diag_path - 1);
    if (n <= 0 || diag_path[0] != '/' || fstat(STDERR_FILENO, &st) != 0 || !S_ISREG(st.st_mode)) {
        diag_path[0] = 0;
        return;
    }
    diag_path[n] = 0;
}

int log_diag_reopen(void)
{
    if (!diag_path[0])
        return PT_OK;
    int fd = open_append(diag_path);
    if (fd < 0) {
        log_error("diagnostic log: reopen %s failed: %s", diag_path, strerror(errno));
        return PT_ERROR;
    }
    int rc = dup2(fd, STDERR_FILENO) < 0 ? PT_ERROR : PT_OK; /* atomic for writers */
    close(fd);
    return rc;
}
