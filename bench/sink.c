/* Counting SMTP sink for the benchmark (bench/bench.py compiles and drives it).
 *
 * Listens on 127.0.0.1:PORT, answers 250 to everything (optionally 450 to a share of
 * RCPT commands), throws the data away and counts, at each end of DATA:
 * messages (transactions with >= 1 accepted recipient) and accepted recipients.
 * One thread, epoll, non-blocking sockets, pipelining-safe (replies in order).
 * With -t CERT,KEY it offers STARTTLS (OpenSSL, non-blocking).
 *
 * Control on stdin, one command per line, answers on stdout:
 *   stats  -> "stats msgs=M rcpts=R rej=J conns=C tls=T dkim=D first=NS last=NS"
 *             (rej: 450s given; tls: TLS handshakes completed; dkim: messages that had
 *             a DKIM-Signature header; first/last: CLOCK_REALTIME ns of the first/last
 *             counted message, 0 if none)
 *   reset  -> zeroes the counters, answers "ok"
 *   quit   -> exits (so does EOF on stdin)
 * With -l FILE, every message carrying an "X-Bench-Id: ID" header appends "ID NS\n"
 * (NS = CLOCK_REALTIME ns at end of DATA) to FILE; the file is flushed on "stats".
 *
 * usage: sink [-p PORT] [-l FILE] [-f PERCENT_4XX] [-s SEED] [-t CERT,KEY] [-K]
 *   -p 0 (default) picks a free port; the sink prints "port N" on stdout when listening.
 *   -K after "221", waits for the client to close (default: closes, as servers do)
 * SPDX-License-Identifier: Apache-2.0
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IBUF 65536
#define OBUF 8192

enum { ST_CMD, ST_DATA };

struct conn {
    int fd;
    int state;
    int quit;
    int in_hdr;              /* still in the header section of the message */
    int midline;             /* DATA: the next line's start was already dropped */
    int rcpt_ok;             /* accepted recipients of the current transaction */
    int dkim;                /* current message has a DKIM-Signature header */
    SSL *ssl;
    int handshaking;
    int starttls;            /* STARTTLS accepted: start TLS once "220" is out */
    size_t ilen, olen, ooff;
    char id[128];            /* X-Bench-Id of the current message */
    char ibuf[IBUF];
    char obuf[OBUF];
};

static unsigned long long n_msgs, n_rcpts, n_rej, n_conns, n_tls, n_dkim;
static long long t_first, t_last;
static int pct_4xx;
static int close_on_quit = 1;
static uint64_t rng = 88172645463325252ULL;
static FILE *idlog;
static SSL_CTX *sctx;
static int ep;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t xorshift(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

static void out(struct conn *c, const char *s) {
    size_t n = strlen(s);
    if (c->olen + n > OBUF) return; /* cannot happen with sane pipelining depth */
    memcpy(c->obuf + c->olen, s, n);
    c->olen += n;
}

static void want(struct conn *c, unsigned ev) {
    struct epoll_event e = { .events = ev, .data.ptr = c };
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* read/write through TLS when on: >0 bytes, 0 EOF, -1 error, -2 would block */
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
    if (e == SSL_ERROR_WANT_WRITE) { want(c, EPOLLIN | EPOLLOUT); return -2; }
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    return -1;
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
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return -2;
    return -1;
}

/* 0 all written, 1 pending (EPOLLOUT armed), -1 error */
static int flush_out(struct conn *c) {
    while (c->ooff < c->olen) {
        ssize_t w = io_write(c, c->obuf + c->ooff, c->olen - c->ooff);
        if (w == -2) { want(c, EPOLLIN | EPOLLOUT); return 1; }
        if (w < 0) return -1;
        c->ooff += (size_t)w;
    }
    c->ooff = c->olen = 0;
    return 0;
}

static int verb(const char *line, const char *v) {
    size_t n = strlen(v);
    return strncasecmp(line, v, n) == 0 && (line[n] == ' ' || line[n] == '\r' ||
                                            line[n] == '\n' || line[n] == 0);
}

static void command(struct conn *c, char *line) {
    if (verb(line, "EHLO")) {
        out(c, "250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 209715200\r\n");
        if (sctx && !c->ssl) out(c, "250-STARTTLS\r\n");
        out(c, "250 ENHANCEDSTATUSCODES\r\n");
    } else if (verb(line, "HELO")) {
        out(c, "250 sink\r\n");
    } else if (verb(line, "MAIL")) {
        c->rcpt_ok = 0;
        out(c, "250 2.1.0 ok\r\n");
    } else if (verb(line, "RCPT")) {
        if (pct_4xx > 0 && (int)(xorshift() % 100) < pct_4xx) {
            n_rej++;
            out(c, "450 4.2.0 try again later\r\n");
        } else {
            c->rcpt_ok++;
            out(c, "250 2.1.5 ok\r\n");
        }
    } else if (verb(line, "DATA")) {
        if (c->rcpt_ok == 0) {
            out(c, "554 5.5.1 no valid recipients\r\n");
        } else {
            c->state = ST_DATA;
            c->in_hdr = 1;
            c->midline = 0;
            c->dkim = 0;
            c->id[0] = 0;
            out(c, "354 go ahead\r\n");
        }
    } else if (verb(line, "RSET")) {
        c->rcpt_ok = 0;
        out(c, "250 2.0.0 ok\r\n");
    } else if (verb(line, "NOOP")) {
        out(c, "250 2.0.0 ok\r\n");
    } else if (verb(line, "STARTTLS") && sctx && !c->ssl) {
        out(c, "220 2.0.0 ready to start TLS\r\n");
        c->starttls = 1;
    } else if (verb(line, "QUIT")) {
        out(c, "221 2.0.0 bye\r\n");
        c->quit = 1;
    } else {
        out(c, "502 5.5.2 not implemented\r\n");
    }
}

static void end_of_data(struct conn *c) {
    long long t = now_ns();
    n_msgs++;
    n_rcpts += (unsigned long long)c->rcpt_ok;
    if (c->dkim) n_dkim++;
    if (!t_first) t_first = t;
    t_last = t;
    if (idlog && c->id[0]) fprintf(idlog, "%s %lld\n", c->id, t);
    c->rcpt_ok = 0;
    c->state = ST_CMD;
    out(c, "250 2.0.0 ok queued\r\n");
}

/* Consumes what it can of c->ibuf. */
static void process(struct conn *c) {
    size_t off = 0;
    while (off < c->ilen && !c->quit && !c->starttls) {
        char *p = c->ibuf + off;
        size_t avail = c->ilen - off;
        char *nl = memchr(p, '\n', avail);
        if (!nl) {
            if (c->state == ST_DATA && avail >= 1024) {
                /* a long body line: drop what we have; its end cannot be "." CRLF */
                off += avail;
                c->midline = 1;
            }
            break;
        }
        size_t llen = (size_t)(nl - p) + 1;
        if (c->state == ST_CMD) {
            *nl = 0;
            command(c, p);
        } else if (c->midline) {
            c->midline = 0;
        } else if ((llen == 3 && p[0] == '.' && p[1] == '\r') || (llen == 2 && p[0] == '.')) {
            end_of_data(c);
        } else if (c->in_hdr) {
            if (llen <= 2 && (p[0] == '\r' || p[0] == '\n')) {
                c->in_hdr = 0;
            } else if (llen > 15 && strncasecmp(p, "DKIM-Signature:", 15) == 0) {
                c->dkim = 1;
            } else if (llen > 11 && strncasecmp(p, "X-Bench-Id:", 11) == 0) {
                char *s = p + 11;
                while (*s == ' ' || *s == '\t') s++;
                size_t n = 0;
                while (s + n < nl && s[n] != '\r' && s[n] != '\n' && n < sizeof c->id - 1) n++;
                memcpy(c->id, s, n);
                c->id[n] = 0;
            }
        }
        off += llen;
    }
    if (c->starttls) off = c->ilen; /* RFC 3207: discard anything pipelined after it */
    if (off > 0) {
        memmove(c->ibuf, c->ibuf + off, c->ilen - off);
        c->ilen -= off;
    }
}

static void close_conn(struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl) SSL_free(c->ssl);
    close(c->fd);
    free(c);
}

/* returns 0 done/ok, 1 waiting, -1 failed */
static int handshake(struct conn *c) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshaking = 0;
        n_tls++;
        want(c, EPOLLIN);
        return 0;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) { want(c, EPOLLIN); return 1; }
    if (e == SSL_ERROR_WANT_WRITE) { want(c, EPOLLIN | EPOLLOUT); return 1; }
    return -1;
}

static void on_event(struct conn *c, unsigned events) {
    if (c->handshaking) {
        int h = handshake(c);
        if (h < 0) { close_conn(c); return; }
        if (h > 0) return;
    }
    if ((events & EPOLLOUT) && c->olen) {
        int f = flush_out(c);
        if (f < 0) { close_conn(c); return; }
        if (f > 0) return;
        want(c, EPOLLIN);
        if (c->quit && close_on_quit) { close_conn(c); return; }
    }
    for (;;) {
        if (c->ilen == IBUF) { close_conn(c); return; } /* process() always makes room */
        ssize_t r = io_read(c, c->ibuf + c->ilen, IBUF - c->ilen);
        if (r == -2) break;
        if (r <= 0) { close_conn(c); return; }
        c->ilen += (size_t)r;
        if (c->quit) { c->ilen = 0; continue; } /* after QUIT: discard until EOF */
        process(c);
        if (c->starttls) break;
        if (!c->ssl && (size_t)r < IBUF / 2) break; /* drained (epoll is level-triggered) */
    }
    int f = flush_out(c);
    if (f < 0 || (f == 0 && c->quit && close_on_quit)) { close_conn(c); return; }
    if (f == 0 && c->starttls) {
        c->starttls = 0;
        c->ssl = SSL_new(sctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_accept_state(c->ssl);
        c->handshaking = 1;
        c->state = ST_CMD;
        c->rcpt_ok = 0;
        if (handshake(c) < 0) close_conn(c);
    }
}

static void control(int *running) {
    static char buf[4096];
    static size_t len;
    if (len >= sizeof buf - 1) len = 0; /* an over-long line: drop it */
    ssize_t r = read(0, buf + len, sizeof buf - 1 - len);
    if (r <= 0) { *running = 0; return; }
    len += (size_t)r;
    char *nl;
    while ((nl = memchr(buf, '\n', len))) {
        *nl = 0;
        if (strncmp(buf, "stats", 5) == 0) {
            if (idlog) fflush(idlog);
            printf("stats msgs=%llu rcpts=%llu rej=%llu conns=%llu tls=%llu dkim=%llu "
                   "first=%lld last=%lld\n",
                   n_msgs, n_rcpts, n_rej, n_conns, n_tls, n_dkim, t_first, t_last);
        } else if (strncmp(buf, "reset", 5) == 0) {
            n_msgs = n_rcpts = n_rej = n_conns = n_tls = n_dkim = 0;
            t_first = t_last = 0;
            printf("ok\n");
        } else if (strncmp(buf, "quit", 4) == 0) {
            *running = 0;
        } else {
            printf("error unknown command\n");
        }
        fflush(stdout);
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, buf + used, len - used);
        len -= used;
    }
}

int main(int argc, char **argv) {
    int port = 0, opt;
    const char *logpath = NULL;
    char *tls = NULL;
    while ((opt = getopt(argc, argv, "p:l:f:s:t:K")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'l': logpath = optarg; break;
        case 'f': pct_4xx = atoi(optarg); break;
        case 's': rng = strtoull(optarg, NULL, 10) | 1; break;
        case 't': tls = optarg; break;
        case 'K': close_on_quit = 0; break;
        default:
            fprintf(stderr, "usage: sink [-p PORT] [-l FILE] [-f PERCENT_4XX] [-s SEED] "
                            "[-t CERT,KEY] [-K]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (logpath && !(idlog = fopen(logpath, "w"))) { perror(logpath); return 1; }
    if (tls) {
        char *key = strchr(tls, ',');
        if (!key) { fprintf(stderr, "sink: -t CERT,KEY\n"); return 2; }
        *key++ = 0;
        sctx = SSL_CTX_new(TLS_server_method());
        if (!sctx || SSL_CTX_use_certificate_chain_file(sctx, tls) != 1 ||
            SSL_CTX_use_PrivateKey_file(sctx, key, SSL_FILETYPE_PEM) != 1) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
        SSL_CTX_set_mode(sctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4096) < 0) {
        perror("sink: bind/listen");
        return 1;
    }
    socklen_t sl = sizeof sa;
    getsockname(ls, (struct sockaddr *)&sa, &sl);
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    static int stdin_tag;
    ev.data.ptr = &stdin_tag;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);

    struct epoll_event evs[256];
    int running = 1;
    while (running) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == NULL) {
                for (;;) {
                    int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    if (!c) { close(fd); continue; }
                    c->fd = fd;
                    n_conns++;
                    struct epoll_event cev = { .events = EPOLLIN, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                    out(c, "220 sink ESMTP\r\n");
                    if (flush_out(c) < 0) close_conn(c);
                }
            } else if (ptr == &stdin_tag) {
                control(&running);
            } else {
                on_event(ptr, evs[i].events);
            }
        }
    }
    if (idlog) fclose(idlog);
    return 0;
}
