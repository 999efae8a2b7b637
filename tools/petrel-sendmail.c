/* petrel-sendmail: the sendmail(8) command line that cron, PHP's mail() and git
 * send-email use, submitting one message over SMTP to petrel ($PETREL_SMTP, default
 * 127.0.0.1:2525). Exits 0 only when the relay answered 250 to the message; never
 * says it took a message the relay did not acknowledge.
 * SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SM_EX_USAGE 64       /* sysexits.h values, as sendmail returns them */
#define SM_EX_DATAERR 65
#define SM_EX_NOUSER 67
#define SM_EX_UNAVAILABLE 69
#define SM_EX_SOFTWARE 70
#define SM_EX_OSERR 71
#define SM_EX_TEMPFAIL 75

#define SM_DEFAULT_SERVER "127.0.0.1:2525"
#define SM_MAX_MESSAGE (64u * 1024 * 1024)  /* stdin beyond this is refused */
#define SM_MAX_RCPTS 10000
#define SM_ADDR_MAX 512
#define SM_IO_TIMEOUT 300                   /* seconds per read/write (RFC 5321 4.5.3.2) */
#define SM_PIPE_LINGER 30                   /* -bs: wait this long for replies after stdin ends */

struct sm_opts {
    bool extract;            /* -t */
    bool ignore_dots;        /* -i, -oi */
    bool smtp_stdin;         /* -bs */
    const char *sender;      /* -f */
    const char *fullname;    /* -F */
    char **rcpts;
    size_t nrcpt;
};

struct sm_buf {
    char *p;
    size_t len, cap;
};

static const char *sm_prog = "sendmail";

static void sm_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void sm_die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", sm_prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static void sm_put(struct sm_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            sm_die(SM_EX_OSERR, "out of memory");
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sm_puts(struct sm_buf *b, const char *s)
{
    sm_put(b, s, strlen(s));
}

/* ---- command line -------------------------------------------------------- */

static void sm_add_rcpt(struct sm_opts *o, const char *a)
{
    if (o->nrcpt >= SM_MAX_RCPTS)
        sm_die(SM_EX_USAGE, "too many recipients (at most %d)", SM_MAX_RCPTS);
    char **r = realloc(o->rcpts, (o->nrcpt + 1) * sizeof *r);
    if (!r || !(r[o->nrcpt] = strdup(a)))
        sm_die(SM_EX_OSERR, "out of memory");
    o->rcpts = r;
    o->nrcpt++;
}

static void sm_usage(void)
{
    fprintf(stderr, "usage: %s [-t] [-i|-oi] [-f SENDER] [-F NAME] [-bs] [--] [RCPT...]\n"
                    "  submits a message read from stdin to petrel at $PETREL_SMTP "
                    "(default %s)\n", sm_prog, SM_DEFAULT_SERVER);
    exit(SM_EX_USAGE);
}

/* Parses argv sendmail-style: options may be glued to their value (-fuser@x) or
 * separate (-f user@x); -o and -B options other than -oi are accepted and ignored
 * (cron passes -oem and -B8BITMIME). */
static void sm_parse_args(int argc, char **argv, struct sm_opts *o)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || a[1] == 0)
            break;
        if (strcmp(a, "--help") == 0)
            sm_usage();
        char c = a[1];
        const char *val = a[2] ? a + 2 : NULL;
        switch (c) {
        case 't':
            if (a[2])
                sm_usage();
            o->extract = true;
            break;
        case 'i':
            if (a[2])
                sm_usage();
            o->ignore_dots = true;
            break;
        case 'f':
        case 'F':
        case 'r':  /* -r is the old name of -f */
            if (!val) {
                if (i + 1 >= argc)
                    sm_usage();
                val = argv[++i];
            }
            if (c == 'F')
                o->fullname = val;
            else
                o->sender = val;
            break;
        case 'o':
            if (strcmp(a, "-oi") == 0)
                o->ignore_dots = true;
            else if (!a[2])
                i++;               /* "-o X": sendmail option with its value, ignored */
            break;
        case 'B':
            if (!a[2])
                i++;
            break;
        case 'b':
            if (strcmp(a, "-bs") == 0)
                o->smtp_stdin = true;
            else if (strcmp(a, "-bm") != 0)
                sm_die(SM_EX_USAGE, "mode %s is not supported (only -bm and -bs)", a);
            break;
        case 'v':
        case 'n':
        case 'm':
        case 'U':
            break;             /* verbose, no aliasing, me-too, initial submission */
        default:
            fprintf(stderr, "%s: unknown option %s\n", sm_prog, a);
            sm_usage();
        }
    }
    for (; i < argc; i++) {
        /* "a@x, b@y" in one argument is allowed, as sendmail allows */
        char *copy = strdup(argv[i]), *save = NULL;
        if (!copy)
            sm_die(SM_EX_OSERR, "out of memory");
        for (char *t = strtok_r(copy, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save))
            sm_add_rcpt(o, t);
        free(copy);
    }
}

/* ---- the message --------------------------------------------------------- */

/* Reads stdin into b with CRLF line ends. Without -i a line holding a single dot
 * ends the message (classic sendmail). */
static void sm_read_message(struct sm_buf *b, bool ignore_dots)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        if (!ignore_dots && len == 1 && line[0] == '.')
            break;
        if (b->len + len + 2 > SM_MAX_MESSAGE)
            sm_die(SM_EX_DATAERR, "message larger than %u bytes", SM_MAX_MESSAGE);
        sm_put(b, line, len);
        sm_put(b, "\r\n", 2);
    }
    free(line);
    if (ferror(stdin))
        sm_die(SM_EX_OSERR, "reading the message: %s", strerror(errno));
}

/* Length of the header block (up to and including the empty line), 0 if none. */
static size_t sm_header_len(const struct sm_buf *m)
{
    if (m->len >= 2 && m->p[0] == '\r' && m->p[1] == '\n')
        return 2;
    const char *e = m->p ? strstr(m->p, "\r\n\r\n") : NULL;
    return e ? (size_t)(e - m->p) + 4 : m->len;
}

/* Is there a header field `name` in the header block? */
static bool sm_has_header(const struct sm_buf *m, size_t hlen, const char *name)
{
    size_t nl = strlen(name);
    for (size_t at = 0; at < hlen;) {
        if (strncasecmp(m->p + at, name, nl) == 0 && m->p[at + nl] == ':')
            return true;
        const char *e = memchr(m->p + at, '\n', hlen - at);
        if (!e)
            break;
        at = (size_t)(e - m->p) + 1;
    }
    return false;
}

/* Addresses in an address-list header value: the <...> part of each element, or
 * the bare word with an '@'. Good enough for what applications write. */
static void sm_extract_addrs(struct sm_opts *o, const char *v)
{
    char tok[SM_ADDR_MAX];
    const char *p = v;
    while (*p) {
        int depth = 0;
        bool quoted = false;
        const char *start = p;
        while (*p && (quoted || depth || *p != ',')) {
            if (*p == '"')
                quoted = !quoted;
            else if (!quoted && *p == '(')
                depth++;
            else if (!quoted && *p == ')' && depth)
                depth--;
            p++;
        }
        size_t n = (size_t)(p - start);
        if (*p == ',')
            p++;
        if (n >= sizeof tok)
            continue;
        memcpy(tok, start, n);
        tok[n] = 0;
        char *lt = strrchr(tok, '<'), *addr;
        if (lt && strchr(lt, '>')) {
            addr = lt + 1;
            *strchr(addr, '>') = 0;
        } else {
            addr = tok;
            char *paren = strchr(addr, '(');
            if (paren)
                *paren = 0;
        }
        while (isspace((unsigned char)*addr))
            addr++;
        size_t al = strlen(addr);
        while (al && isspace((unsigned char)addr[al - 1]))
            addr[--al] = 0;
        if (al && strchr(addr, ':') == NULL)   /* skips "group:" prefixes badly but safely */
            sm_add_rcpt(o, addr);
    }
}

/* -t: recipients from To, Cc and Bcc; the Bcc field is removed from the copy sent. */
static void sm_extract_rcpts(struct sm_opts *o, struct sm_buf *m)
{
    size_t hlen = sm_header_len(m);
    struct sm_buf out = { 0 };
    size_t at = 0;
    while (at < hlen) {
        /* one field with its continuation lines */
        size_t end = at;
        do {
            const char *e = memchr(m->p + end, '\n', hlen - end);
            end = e ? (size_t)(e - m->p) + 1 : hlen;
        } while (end < hlen && (m->p[end] == ' ' || m->p[end] == '\t'));
        size_t flen = end - at;
        char *field = strndup(m->p + at, flen);
        if (!field)
            sm_die(SM_EX_OSERR, "out of memory");
        bool bcc = strncasecmp(field, "Bcc:", 4) == 0;
        if (strncasecmp(field, "To:", 3) == 0 || strncasecmp(field, "Cc:", 3) == 0 || bcc) {
            for (char *q = field; *q; q++)
                if (*q == '\r' || *q == '\n' || *q == '\t')
                    *q = ' ';
            sm_extract_addrs(o, strchr(field, ':') + 1);
        }
        if (!bcc)
            sm_put(&out, m->p + at, flen);
        free(field);
        at = end;
    }
    sm_put(&out, m->p + hlen, m->len - hlen);
    free(m->p);
    *m = out;
}

static void sm_hostname(char *h, size_t n)
{
    if (gethostname(h, n) != 0 || !h[0])
        snprintf(h, n, "localhost");
    h[n - 1] = 0;
}

/* Adds From:, Date: and Message-ID: when the application wrote none. */
static void sm_complete_headers(struct sm_buf *m, const char *sender, const char *fullname)
{
    size_t hlen = sm_header_len(m);
    struct sm_buf add = { 0 };
    char line[1024], host[256];
    sm_hostname(host, sizeof host);
    if (!sm_has_header(m, hlen, "From")) {
        if (fullname && *fullname) {
            /* a quoted-string: no line breaks (header injection), " and \ escaped */
            char q[400];
            size_t k = 0;
            for (const char *f = fullname; *f && k + 3 < sizeof q; f++) {
                if (*f == '\r' || *f == '\n')
                    continue;
                if (*f == '"' || *f == '\\')
                    q[k++] = '\\';
                q[k++] = *f;
            }
            q[k] = 0;
            snprintf(line, sizeof line, "From: \"%s\" <%s>\r\n", q, sender);
        }
        else
            snprintf(line, sizeof line, "From: <%s>\r\n", sender);
        sm_puts(&add, line);
    }
    if (!sm_has_header(m, hlen, "Date")) {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S %z\r\n", &tm);
        sm_puts(&add, line);
    }
    if (!sm_has_header(m, hlen, "Message-ID")) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        snprintf(line, sizeof line, "Message-ID: <%lld.%06ld.%d@%s>\r\n", (long long)tv.tv_sec,
                 (long)tv.tv_usec, (int)getpid(), host);
        sm_puts(&add, line);
    }
    if (!add.len)
        return;
    /* a body without any header (a cron job's output): the added fields become
     * the header, followed by the empty line */
    bool has_header = false;
    if (m->len) {
        size_t k = 0;
        while (k < m->len && m->p[k] > ' ' && m->p[k] < 127 && m->p[k] != ':')
            k++;
        has_header = k > 0 && k < m->len && m->p[k] == ':';
    }
    if (!has_header)
        sm_put(&add, "\r\n", 2);
    sm_put(&add, m->p ? m->p : "", m->len);
    free(m->p);
    *m = add;
}

/* ---- SMTP ---------------------------------------------------------------- */

struct sm_conn {
    int fd;
    char in[8192];
    size_t inlen;
};

static int sm_connect(const char *spec)
{
    char host[256], port[16];
    const char *colon;
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - spec - 1) >= sizeof host)
            sm_die(SM_EX_USAGE, "PETREL_SMTP must be HOST:PORT or [IPV6]:PORT, not '%s'", spec);
        memcpy(host, spec + 1, (size_t)(rb - spec - 1));
        host[rb - spec - 1] = 0;
        colon = rb + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof host)
            sm_die(SM_EX_USAGE, "PETREL_SMTP must be HOST:PORT or [IPV6]:PORT, not '%s'", spec);
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = 0;
    }
    snprintf(port, sizeof port, "%s", colon + 1);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        sm_die(SM_EX_TEMPFAIL, "cannot resolve %s: %s", spec, gai_strerror(rc));
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = { .tv_sec = SM_IO_TIMEOUT };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        sm_die(SM_EX_TEMPFAIL, "cannot connect to petrel at %s: %s (message not sent)", spec,
               strerror(err));
    return fd;
}

static void sm_write(struct sm_conn *c, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            sm_die(SM_EX_TEMPFAIL, "writing to petrel: %s (message not sent)", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* Reads one reply; returns its code and leaves the last line's text in text. */
static int sm_reply(struct sm_conn *c, char *text, size_t tn)
{
    for (;;) {
        char *nl = memchr(c->in, '\n', c->inlen);
        if (!nl) {
            if (c->inlen == sizeof c->in)
                sm_die(SM_EX_TEMPFAIL, "reply line too long from petrel (message not sent)");
            ssize_t r = recv(c->fd, c->in + c->inlen, sizeof c->in - c->inlen, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                sm_die(SM_EX_TEMPFAIL, "connection to petrel lost%s%s (message not sent)",
                       r < 0 ? ": " : "", r < 0 ? strerror(errno) : "");
            c->inlen += (size_t)r;
            continue;
        }
        size_t ll = (size_t)(nl - c->in) + 1;
        size_t tl = ll;
        while (tl && (c->in[tl - 1] == '\n' || c->in[tl - 1] == '\r'))
            tl--;
        bool last = tl < 4 || c->in[3] != '-';
        int code = tl >= 3 && isdigit((unsigned char)c->in[0]) && isdigit((unsigned char)c->in[1]) &&
                           isdigit((unsigned char)c->in[2])
                       ? (c->in[0] - '0') * 100 + (c->in[1] - '0') * 10 + (c->in[2] - '0')
                       : -1;
        if (last) {
            size_t k = tl < tn - 1 ? tl : tn - 1;
            memcpy(text, c->in, k);
            text[k] = 0;
        }
        memmove(c->in, c->in + ll, c->inlen - ll);
        c->inlen -= ll;
        if (code < 0)
            sm_die(SM_EX_TEMPFAIL, "malformed reply from petrel (message not sent)");
        if (last)
            return code;
    }
}

/* Sends a command and reads its reply; 4xx/5xx end the program with the relay's
 * text (after QUIT). */
static int sm_cmd(struct sm_conn *c, int want, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int sm_cmd(struct sm_conn *c, int want, const char *what, const char *fmt, ...)
{
    char line[SM_ADDR_MAX + 64], text[1024];
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line - 2, fmt, ap);
        va_end(ap);
        strcat(line, "\r\n");
        sm_write(c, line, strlen(line));
    }
    int code = sm_reply(c, text, sizeof text);
    if (code / 100 == want / 100)
        return code;
    sm_write(c, "QUIT\r\n", 6);
    if (code >= 400 && code < 500)
        sm_die(SM_EX_TEMPFAIL, "%s: %s (message not sent, try again later)", what, text);
    sm_die(strncmp(what, "RCPT", 4) == 0 ? SM_EX_NOUSER : SM_EX_UNAVAILABLE,
           "%s: %s (message not sent)", what, text);
}

static bool sm_addr_ok(const char *a)
{
    if (strlen(a) > 254)
        return false;
    for (const char *p = a; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>')
            return false;
    return true;
}

static int sm_submit(const char *server, const struct sm_opts *o, const char *sender,
                     const struct sm_buf *m)
{
    struct sm_conn c = { .fd = sm_connect(server) };
    char host[256], what[SM_ADDR_MAX + 16];
    sm_hostname(host, sizeof host);
    sm_cmd(&c, 220, "greeting", NULL);
    sm_cmd(&c, 250, "EHLO", "EHLO %s", host);
    snprintf(what, sizeof what, "MAIL FROM:<%s>", sender);
    sm_cmd(&c, 250, what, "MAIL FROM:<%s>", sender);
    for (size_t i = 0; i < o->nrcpt; i++) {
        snprintf(what, sizeof what, "RCPT TO:<%s>", o->rcpts[i]);
        sm_cmd(&c, 250, what, "RCPT TO:<%s>", o->rcpts[i]);
    }
    sm_cmd(&c, 354, "DATA", "DATA");
    /* dot-stuffing, one write per 64 KB */
    struct sm_buf out = { 0 };
    size_t at = 0;
    while (at < m->len) {
        const char *e = memchr(m->p + at, '\n', m->len - at);
        size_t end = e ? (size_t)(e - m->p) + 1 : m->len;
        if (m->p[at] == '.')
            sm_put(&out, ".", 1);
        sm_put(&out, m->p + at, end - at);
        at = end;
        if (out.len >= 65536) {
            sm_write(&c, out.p, out.len);
            out.len = 0;
        }
    }
    if (m->len && m->p[m->len - 1] != '\n')
        sm_put(&out, "\r\n", 2);
    sm_put(&out, ".\r\n", 3);
    sm_write(&c, out.p, out.len);
    free(out.p);
    sm_cmd(&c, 250, "end of DATA", NULL);
    sm_write(&c, "QUIT\r\n", 6);
    close(c.fd);
    return 0;
}

/* -bs: the caller speaks SMTP itself; bytes are passed both ways unchanged. */
static int sm_pipe(const char *server)
{
    int fd = sm_connect(server);
    struct pollfd p[2] = { { .fd = 0, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
    char buf[16384];
    bool stdin_done = false;
    for (;;) {
        /* after the caller's last byte, petrel answers and closes (QUIT); no
         * half-close: a relay may drop a reply to a client that half-closed */
        int n = poll(p, 2, (stdin_done ? SM_PIPE_LINGER : SM_IO_TIMEOUT) * 1000);
        if (n <= 0)
            return stdin_done ? 0 : SM_EX_TEMPFAIL;
        if (p[1].revents) {
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0)
                return 0;
            for (ssize_t k = 0; k < r;) {
                ssize_t w = write(1, buf + k, (size_t)(r - k));
                if (w <= 0)
                    return SM_EX_OSERR;
                k += w;
            }
        }
        if (p[0].revents) {
            ssize_t r = read(0, buf, sizeof buf);
            if (r <= 0) {
                stdin_done = true;
                p[0].fd = -1;
                continue;
            }
            struct sm_conn c = { .fd = fd };
            sm_write(&c, buf, (size_t)r);
        }
    }
}

int main(int argc, char **argv)
{
    struct sm_opts o = { 0 };
    const char *slash = strrchr(argv[0], '/');
    sm_prog = slash ? slash + 1 : argv[0];
    sm_parse_args(argc, argv, &o);
    const char *server = getenv("PETREL_SMTP");
    if (!server || !*server)
        server = SM_DEFAULT_SERVER;
    if (o.smtp_stdin)
        return sm_pipe(server);
    char sender[SM_ADDR_MAX];
    if (o.sender) {
        snprintf(sender, sizeof sender, "%s", o.sender);
        /* "-f <a@b>" and "-f '<>'" as some callers write it */
        size_t n = strlen(sender);
        if (n >= 2 && sender[0] == '<' && sender[n - 1] == '>') {
            memmove(sender, sender + 1, n - 2);
            sender[n - 2] = 0;
        }
    } else {
        struct passwd *pw = getpwuid(getuid());
        char host[256];
        sm_hostname(host, sizeof host);
        snprintf(sender, sizeof sender, "%s@%s", pw ? pw->pw_name : "nobody", host);
    }
    if (!sm_addr_ok(sender))
        sm_die(SM_EX_USAGE, "bad sender address '%s'", sender);
    struct sm_buf m = { 0 };
    sm_read_message(&m, o.ignore_dots);
    if (o.extract)
        sm_extract_rcpts(&o, &m);
    if (o.nrcpt == 0)
        sm_die(SM_EX_USAGE, "no recipients given (use -t or name them)");
    for (size_t i = 0; i < o.nrcpt; i++)
        if (!sm_addr_ok(o.rcpts[i]))
            sm_die(SM_EX_DATAERR, "bad recipient address '%s'", o.rcpts[i]);
    sm_complete_headers(&m, sender, o.fullname);
    int rc = sm_submit(server, &o, sender, &m);
    free(m.p);
    for (size_t i = 0; i < o.nrcpt; i++)
        free(o.rcpts[i]);
    free(o.rcpts);
    return rc;
}
