/* SMTP load generator for the benchmark scenarios smtp-source cannot express:
 * recipients spread over several domains, a unique id per message, STARTTLS, and the
 * time of each final 250 (for the latency probe). bench/bench.py compiles and drives it.
 *
 * usage: blast -p PORT [-n MESSAGES] [-c CONNECTIONS] [-r RCPTS] [-D DOMAINS]
 *              [-l BODY_BYTES] [-k] [-w MS] [-o FILE] [-i ID_PREFIX] [-N] [-T] [-R]
 *   -k      keep the connection: send the next message over it (default: 1 per connection)
 *   -w MS   wait MS milliseconds between messages of one connection (light load)
 *   -o FILE write "ID NS" for every message accepted (NS = CLOCK_REALTIME ns when the
 *           250 after the final dot was read)
 *   -N      no PIPELINING even when offered (default: MAIL/RCPT/DATA in one write
 *           when the server offers it, as RFC 2920 allows)
 *   -T      STARTTLS on every connection (no certificate check); fails if not offered
 *   -R      random body per message (base64 characters, incompressible) instead of
 *           the same lines of 'x' in every message
 * Recipient k of a message is rcpt<k>@d<k mod DOMAINS>.example.net; every message has
 * "Message-ID: <ID@bench.invalid>" and "X-Bench-Id: ID" headers, ID = PREFIX-<seq>.
 * Prints one line at the end:
 *   done sent=S ok=A fail=F rcpt_ok=R rcpt_fail=X elapsed=SECONDS
 * Exit status 0 when every message was accepted.
 * SPDX-License-Identifier: Apache-2.0
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { S_CONNECT, S_GREET, S_EHLO, S_STARTTLS, S_HANDSHAKE, S_ENV, S_BODY, S_QUIT, S_WAIT };

struct conn {
    int fd, state, pipelining, tls_done, claimed;
    SSL *ssl;
    long msg;                 /* current message number, -1 none */
    int step;                 /* S_ENV: command (0 MAIL, 1..R RCPT, R+1 DATA) the next
                                 reply answers */
    int rcpt_ok, bad;
    long long wake_ns;        /* S_WAIT: when to start the next message */
    char rbuf[8192];
    size_t rlen;
    char *obuf;
    size_t olen, ooff, ocap;
};

static int port, nconn = 1, nrcpt = 1, ndom = 1, keep, wait_ms, nopipe, use_tls, random_body;
static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static long nmsg = 1, next_msg, done_ok, done_fail, rcpt_ok_total, rcpt_fail_total, active;
static long unclaimed_conns;   /* open connections that have not started a message yet */
static size_t body_len = 2048;
static char *payload;
static const char *prefix = "m";
static FILE *tlog;
static int ep;
static struct conn **waiting;  /* connections pausing between messages (-w) */
static int nwaiting;
static SSL_CTX *cctx;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put(struct conn *c, const char *s, size_t n) {
    if (c->olen + n > c->ocap) {
        size_t cap = c->ocap ? c->ocap : 4096;
        while (cap < c->olen + n) cap *= 2;
        c->obuf = realloc(c->obuf, cap);
        if (!c->obuf) { perror("realloc"); exit(1); }
        c->ocap = cap;
    }
    memcpy(c->obuf + c->olen, s, n);
    c->olen += n;
}

static void puts_(struct conn *c, const char *s) { put(c, s, strlen(s)); }

static void set_events(struct conn *c, unsigned ev) {
    struct epoll_event e = { .events = ev, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* >0 bytes, 0 EOF, -1 error, -2 would block */
static ssize_t io_read(struct conn *c, char *b, size_t n) {
    if (!c->ssl) {
        ssize_t r = read(c->fd, b, n);
        if (r < 0) return (errno == EAGAIN || errno == EINTR) ? -2 : -1;
        return r;
    }
    int r = SSL_read(c->ssl, b, (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) return -2;
    if (e == SSL_ERROR_WANT_WRITE) { set_events(c, EPOLLIN | EPOLLOUT); return -2; }
    return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
}

static ssize_t io_write(struct conn *c, const char *b, size_t n) {
    if (!c->ssl) {
        ssize_t w = write(c->fd, b, n);
        if (w < 0) return (errno == EAGAIN || errno == EINTR) ? -2 : -1;
        return w;
    }
    int w = SSL_write(c->ssl, b, (int)n);
    if (w > 0) return w;
    int e = SSL_get_error(c->ssl, w);
    return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? -2 : -1;
}

/* 0 all written, 1 pending (EPOLLOUT armed), -1 error */
static int flush_out(struct conn *c) {
    while (c->ooff < c->olen) {
        ssize_t w = io_write(c, c->obuf + c->ooff, c->olen - c->ooff);
        if (w == -2) { set_events(c, EPOLLIN | EPOLLOUT); return 1; }
        if (w < 0) return -1;
        c->ooff += (size_t)w;
    }
    c->ooff = c->olen = 0;
    return 0;
}

static void open_conn(void);

static void finish_msg(struct conn *c, int ok) {
    if (c->msg < 0) return;
    if (ok) {
        done_ok++;
        rcpt_ok_total += c->rcpt_ok;
        rcpt_fail_total += nrcpt - c->rcpt_ok;
        if (tlog) fprintf(tlog, "%s-%ld %lld\n", prefix, c->msg, now_ns());
    } else {
        done_fail++;
        rcpt_fail_total += nrcpt;
    }
    c->msg = -1;
}

static void close_conn(struct conn *c) {
    for (int i = 0; i < nwaiting; i++)
        if (waiting[i] == c) { waiting[i] = waiting[--nwaiting]; break; }
    finish_msg(c, 0);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    int claimed = c->claimed;
    free(c->obuf);
    free(c);
    active--;
    if (!claimed) unclaimed_conns--;
    if (next_msg + unclaimed_conns < nmsg) open_conn();
}

static void envelope_cmd(struct conn *c, int step) {
    char line[256];
    if (step == 0) {
        puts_(c, "MAIL FROM:<from@example.com>\r\n");
    } else if (step <= nrcpt) {
        int k = step - 1;
        snprintf(line, sizeof line, "RCPT TO:<rcpt%d@d%d.example.net>\r\n", k, k % ndom);
        puts_(c, line);
    } else {
        puts_(c, "DATA\r\n");
    }
}

static void start_msg(struct conn *c) {
    if (!c->claimed) {
        c->claimed = 1;
        unclaimed_conns--;
    }
    if (next_msg >= nmsg) {
        puts_(c, "QUIT\r\n");
        c->state = S_QUIT;
        return;
    }
    c->msg = next_msg++;
    c->rcpt_ok = 0;
    c->bad = 0;
    c->state = S_ENV;
    c->step = 0;
    if (c->pipelining) {
        for (int s = 0; s <= nrcpt + 1; s++) envelope_cmd(c, s);
    } else {
        envelope_cmd(c, 0);
    }
}

static void send_body(struct conn *c) {
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr,
                     "From: <from@example.com>\r\nTo: <rcpt0@d0.example.net>\r\n"
                     "Subject: bench %s-%ld\r\nMessage-ID: <%s-%ld@bench.invalid>\r\n"
                     "X-Bench-Id: %s-%ld\r\n\r\n",
                     prefix, c->msg, prefix, c->msg, prefix, c->msg);
    put(c, hdr, (size_t)n);
    put(c, payload, body_len);
    if (random_body) { /* replace the 'x' of the copy just queued */
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char *b = c->obuf + c->olen - body_len;
        for (size_t i = 0; i < body_len; i++) {
            if (b[i] == 'x') {
                rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
                b[i] = b64[rng & 63];
            }
        }
    }
    puts_(c, ".\r\n");
    c->state = S_BODY;
}

/* returns 0 done, 1 waiting, -1 failed */
static int handshake(struct conn *c) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_done = 1;
        set_events(c, EPOLLIN);
        puts_(c, "EHLO blast.bench.invalid\r\n");
        c->state = S_EHLO;
        return 0;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) { set_events(c, EPOLLIN); return 1; }
    if (e == SSL_ERROR_WANT_WRITE) { set_events(c, EPOLLIN | EPOLLOUT); return 1; }
    fprintf(stderr, "blast: TLS handshake failed\n");
    ERR_print_errors_fp(stderr);
    return -1;
}

/* One complete reply (possibly multi-line, text in [text, text+len)).
 * Returns 0 go on, 1 close normally, -1 protocol failure. */
static int on_reply(struct conn *c, int code, const char *text, size_t len) {
    switch (c->state) {
    case S_GREET:
        if (code != 220) return -1;
        puts_(c, "EHLO blast.bench.invalid\r\n");
        c->state = S_EHLO;
        return 0;
    case S_EHLO:
        if (code != 250) return -1;
        if (use_tls && !c->tls_done) {
            if (!memmem(text, len, "STARTTLS", 8)) {
                fprintf(stderr, "blast: server does not offer STARTTLS\n");
                exit(1);
            }
            puts_(c, "STARTTLS\r\n");
            c->state = S_STARTTLS;
            return 0;
        }
        c->pipelining = !nopipe && memmem(text, len, "PIPELINING", 10) != NULL;
        start_msg(c);
        return 0;
    case S_STARTTLS:
        if (code != 220) return -1;
        c->ssl = SSL_new(cctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_connect_state(c->ssl);
        c->state = S_HANDSHAKE;
        return 0;
    case S_ENV: {
        int step = c->step++;
        if (step == 0 && code / 100 != 2) {
            c->bad = 1;
        } else if (step >= 1 && step <= nrcpt) {
            if (code / 100 == 2) c->rcpt_ok++;
        } else if (step == nrcpt + 1) {
            if (code == 354 && !c->bad && c->rcpt_ok > 0) {
                send_body(c);
                return 0;
            }
            finish_msg(c, 0);
            puts_(c, code == 354 ? ".\r\nQUIT\r\n" : "QUIT\r\n");
            c->state = S_QUIT;
            return 0;
        }
        if (!c->pipelining) envelope_cmd(c, step + 1);
        return 0;
    }
    case S_BODY:
        finish_msg(c, code / 100 == 2);
        if (keep) {
            if (wait_ms > 0 && next_msg < nmsg) {
                c->state = S_WAIT;
                c->wake_ns = now_ns() + (long long)wait_ms * 1000000LL;
                waiting[nwaiting++] = c;
                return 0;
            }
            start_msg(c);
        } else {
            puts_(c, "QUIT\r\n");
            c->state = S_QUIT;
        }
        return 0;
    case S_QUIT:
        return code == 221 ? 1 : 0;
    }
    return -1;
}

static void on_event(struct conn *c, unsigned events) {
    if (c->state == S_HANDSHAKE) {
        int h = handshake(c);
        if (h < 0) { close_conn(c); return; }
        if (h > 0) return;
        if (flush_out(c) < 0) close_conn(c);
        return;
    }
    if ((events & EPOLLOUT) && c->olen) {
        int f = flush_out(c);
        if (f < 0) { close_conn(c); return; }
        if (f > 0) return;
        set_events(c, EPOLLIN);
    }
    for (;;) {
        ssize_t r = io_read(c, c->rbuf + c->rlen, sizeof c->rbuf - 1 - c->rlen);
        if (r == -2) break;
        if (r <= 0) { close_conn(c); return; }
        c->rlen += (size_t)r;
        size_t start = 0, pos = 0;
        while (pos < c->rlen) {
            char *nl = memchr(c->rbuf + pos, '\n', c->rlen - pos);
            if (!nl) break;
            size_t ls = pos;
            pos = (size_t)(nl - c->rbuf) + 1;
            if (pos - ls >= 4 && c->rbuf[ls + 3] == '-') continue; /* continuation */
            int code = atoi(c->rbuf + ls);
            int res = on_reply(c, code, c->rbuf + start, pos - start);
            start = pos;
            if (res != 0) { close_conn(c); return; }
            if (c->state == S_HANDSHAKE) { /* plaintext done: TLS from here on */
                c->rlen = 0;
                if (flush_out(c) < 0) { close_conn(c); return; }
                int h = handshake(c);
                if (h < 0) { close_conn(c); return; }
                if (h == 0 && flush_out(c) < 0) close_conn(c);
                return;
            }
        }
        memmove(c->rbuf, c->rbuf + start, c->rlen - start);
        c->rlen -= start;
        if (c->rlen >= sizeof c->rbuf - 1) { close_conn(c); return; }
        if (!c->ssl && (size_t)r < 4096) break;
    }
    if (flush_out(c) < 0) close_conn(c);
}

static void open_conn(void) {
    struct conn *c = calloc(1, sizeof *c);
    if (!c) { perror("calloc"); exit(1); }
    c->msg = -1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->state = S_CONNECT;
    active++;
    unclaimed_conns++;
    struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        perror("connect");
        exit(1);
    }
}

int main(int argc, char **argv) {
    int opt;
    const char *tpath = NULL;
    while ((opt = getopt(argc, argv, "p:n:c:r:D:l:kw:o:i:NTR")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'n': nmsg = atol(optarg); break;
        case 'c': nconn = atoi(optarg); break;
        case 'r': nrcpt = atoi(optarg); break;
        case 'D': ndom = atoi(optarg); break;
        case 'l': body_len = (size_t)atol(optarg); break;
        case 'k': keep = 1; break;
        case 'w': wait_ms = atoi(optarg); break;
        case 'o': tpath = optarg; break;
        case 'i': prefix = optarg; break;
        case 'N': nopipe = 1; break;
        case 'T': use_tls = 1; break;
        case 'R': random_body = 1; break;
        default:
            fprintf(stderr, "usage: blast -p PORT [-n N] [-c CONNS] [-r RCPTS] [-D DOMAINS] "
                            "[-l BYTES] [-k] [-w MS] [-o FILE] [-i PREFIX] [-N] [-T] [-R]\n");
            return 2;
        }
    }
    if (port <= 0 || nconn < 1 || nrcpt < 1 || ndom < 1 || nmsg < 1) {
        fprintf(stderr, "blast: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (tpath && !(tlog = fopen(tpath, "w"))) { perror(tpath); return 1; }
    if (use_tls) {
        cctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(cctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    /* payload: lines of 76 'x' + CRLF, cut to body_len, ending in CRLF */
    payload = malloc(body_len + 2);
    for (size_t i = 0; i < body_len; i++)
        payload[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : 'x';
    if (body_len >= 2) { payload[body_len - 2] = '\r'; payload[body_len - 1] = '\n'; }

    waiting = calloc((size_t)nconn, sizeof *waiting);
    ep = epoll_create1(EPOLL_CLOEXEC);
    long long t0 = now_ns();
    for (int i = 0; i < nconn && i < nmsg; i++) open_conn();
    struct epoll_event evs[256];
    while (active > 0) {
        int timeout = -1;
        if (nwaiting > 0) {
            long long now = now_ns(), first = waiting[0]->wake_ns;
            for (int i = 1; i < nwaiting; i++)
                if (waiting[i]->wake_ns < first) first = waiting[i]->wake_ns;
            timeout = first <= now ? 0 : (int)((first - now + 999999) / 1000000);
        }
        int n = epoll_wait(ep, evs, 256, timeout);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->state == S_CONNECT) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) { fprintf(stderr, "blast: connect: %s\n", strerror(err)); return 1; }
                c->state = S_GREET;
                set_events(c, EPOLLIN);
                continue;
            }
            on_event(c, evs[i].events);
        }
        if (nwaiting > 0) {
            long long now = now_ns();
            for (int i = 0; i < nwaiting;) {
                struct conn *c = waiting[i];
                if (c->wake_ns > now) { i++; continue; }
                waiting[i] = waiting[--nwaiting];
                start_msg(c);
                if (flush_out(c) < 0) close_conn(c);
            }
        }
    }
    double el = (double)(now_ns() - t0) / 1e9;
    if (tlog) fclose(tlog);
    printf("done sent=%ld ok=%ld fail=%ld rcpt_ok=%ld rcpt_fail=%ld elapsed=%.3f\n", next_msg,
           done_ok, done_fail, rcpt_ok_total, rcpt_fail_total, el);
    return done_fail == 0 && done_ok == nmsg ? 0 : 1;
}
