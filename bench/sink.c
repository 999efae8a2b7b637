/* Counting SMTP sink for the benchmark (bench/bench.py compiles and drives it).
 *
 * Listens on 127.0.0.1:PORT, answers 250 to everything (optionally 450 to a share of
 * RCPT commands), throws the data away and counts, at each end of DATA:
 * messages (transactions with >= 1 accepted recipient) and accepted recipients.
 * One thread, epoll, non-blocking sockets, pipelining-safe (replies in order).
 *
 * Control on stdin, one command per line, answers on stdout:
 *   stats  -> "stats msgs=M rcpts=R rej=J conns=C first=NS last=NS"
 *             (first/last: CLOCK_REALTIME ns of the first/last counted message, 0 if none)
 *   reset  -> zeroes the counters, answers "ok"
 *   quit   -> exits
 * With -l FILE, every message carrying an "X-Bench-Id: ID" header appends "ID NS\n"
 * (NS = CLOCK_REALTIME ns at end of DATA) to FILE; the file is flushed on "stats".
 *
 * usage: sink [-p PORT] [-l FILE] [-f PERCENT_4XX] [-s SEED]
 *   -p 0 (default) picks a free port; the sink prints "port N" on stdout when listening.
 * SPDX-License-Identifier: Apache-2.0
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
    size_t ilen, olen, ooff;
    char id[128];            /* X-Bench-Id of the current message */
    char ibuf[IBUF];
    char obuf[OBUF];
};

static unsigned long long n_msgs, n_rcpts, n_rej, n_conns;
static long long t_first, t_last;
static int pct_4xx;
static uint64_t rng = 88172645463325252ULL;
static FILE *idlog;

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

static int flush_out(struct conn *c) {
    while (c->ooff < c->olen) {
        ssize_t w = write(c->fd, c->obuf + c->ooff, c->olen - c->ooff);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 1;
            return -1;
        }
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
        out(c, "250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 209715200\r\n"
               "250 ENHANCEDSTATUSCODES\r\n");
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
            c->id[0] = 0;
            out(c, "354 go ahead\r\n");
        }
    } else if (verb(line, "RSET")) {
        c->rcpt_ok = 0;
        out(c, "250 2.0.0 ok\r\n");
    } else if (verb(line, "NOOP")) {
        out(c, "250 2.0.0 ok\r\n");
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
    if (!t_first) t_first = t;
    t_last = t;
    if (idlog && c->id[0]) fprintf(idlog, "%s %lld\n", c->id, t);
    c->rcpt_ok = 0;
    c->state = ST_CMD;
    out(c, "250 2.0.0 ok queued\r\n");
}

/* Consumes what it can of c->ibuf; returns 0, or -1 to close. */
static int process(struct conn *c) {
    size_t off = 0;
    while (off < c->ilen && !c->quit) {
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
        } else {
            if ((llen == 3 && p[0] == '.' && p[1] == '\r') || (llen == 2 && p[0] == '.')) {
                end_of_data(c);
            } else if (c->in_hdr) {
                if (llen <= 2 && (p[0] == '\r' || p[0] == '\n')) {
                    c->in_hdr = 0;
                } else if (llen > 11 && strncasecmp(p, "X-Bench-Id:", 11) == 0) {
                    char *s = p + 11;
                    while (*s == ' ' || *s == '\t') s++;
                    size_t n = 0;
                    while (s + n < nl && s[n] != '\r' && s[n] != '\n' && n < sizeof c->id - 1) n++;
                    memcpy(c->id, s, n);
                    c->id[n] = 0;
                }
            }
        }
        off += llen;
    }
    if (off > 0) {
        memmove(c->ibuf, c->ibuf + off, c->ilen - off);
        c->ilen -= off;
    }
    return 0;
}

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static void on_readable(int ep, struct conn *c) {
    for (;;) {
        if (c->ilen == IBUF) { /* cannot happen: process() always makes room */
            close_conn(ep, c);
            return;
        }
        ssize_t r = read(c->fd, c->ibuf + c->ilen, IBUF - c->ilen);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            close_conn(ep, c);
            return;
        }
        if (r == 0) {
            close_conn(ep, c);
            return;
        }
        c->ilen += (size_t)r;
        process(c);
        if (c->quit) break;
        if ((size_t)r < IBUF / 2) break; /* probably drained; epoll is level-triggered */
    }
    int f = flush_out(c);
    if (f < 0 || (f == 0 && c->quit)) {
        close_conn(ep, c);
        return;
    }
    if (f == 1) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

static void control(int ep, int *running) {
    static char buf[4096];
    static size_t len;
    ssize_t r = read(0, buf + len, sizeof buf - 1 - len);
    if (r <= 0) { *running = 0; return; }
    len += (size_t)r;
    char *nl;
    while ((nl = memchr(buf, '\n', len))) {
        *nl = 0;
        if (strncmp(buf, "stats", 5) == 0) {
            if (idlog) fflush(idlog);
            printf("stats msgs=%llu rcpts=%llu rej=%llu conns=%llu first=%lld last=%lld\n",
                   n_msgs, n_rcpts, n_rej, n_conns, t_first, t_last);
        } else if (strncmp(buf, "reset", 5) == 0) {
            n_msgs = n_rcpts = n_rej = n_conns = 0;
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
    (void)ep;
}

int main(int argc, char **argv) {
    int port = 0, opt;
    const char *logpath = NULL;
    while ((opt = getopt(argc, argv, "p:l:f:s:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'l': logpath = optarg; break;
        case 'f': pct_4xx = atoi(optarg); break;
        case 's': rng = strtoull(optarg, NULL, 10) | 1; break;
        default:
            fprintf(stderr, "usage: sink [-p PORT] [-l FILE] [-f PERCENT_4XX] [-s SEED]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (logpath && !(idlog = fopen(logpath, "w"))) { perror(logpath); return 1; }

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

    int ep = epoll_create1(EPOLL_CLOEXEC);
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
                    out(c, "220 sink ESMTP\r\n");
                    if (flush_out(c) < 0) { close(fd); free(c); continue; }
                    struct epoll_event cev = { .events = EPOLLIN, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
            } else if (ptr == &stdin_tag) {
                control(ep, &running);
            } else {
                struct conn *c = ptr;
                if (evs[i].events & EPOLLOUT) {
                    int f = flush_out(c);
                    if (f < 0 || (f == 0 && c->quit)) { close_conn(ep, c); continue; }
                    if (f == 0) {
                        struct epoll_event cev = { .events = EPOLLIN, .data.ptr = c };
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                    }
                }
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(ep, c);
            }
        }
    }
    if (idlog) fclose(idlog);
    return 0;
}
