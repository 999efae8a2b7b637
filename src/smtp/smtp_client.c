/* SMTP client session; see smtp_client.h. States: connecting -> greeting ->
 * ehlo (-> helo) -> ready <-> transaction -> quit. Replies are matched to the
 * commands sent through an expectation queue, so the same code drives pipelined
 * and lock-step servers.
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obs/log.h"
#include "queue/entry.h"
#include "smtp/conn.h"
#include "smtp/smtp_auth.h"
#include "smtp/happy.h"
#include "smtp/smtp_client.h"
#include "smtp/smtp_data.h"
#include "smtp/smtp_reply.h"
#include "util/cidr.h"
#include "tls/tls.h"
#include "util/base64.h"
#include "util/result.h"

#define CLIENT_STATES(X) \
    X(C_CONNECTING) X(C_GREETING) X(C_EHLO) X(C_HELO) X(C_STARTTLS) X(C_TLS) \
    X(C_AUTH) X(C_AUTH_USER) X(C_AUTH_PASS) X(C_READY) X(C_TXN) X(C_QUIT) X(C_DEAD)
#define AS_ENUM(s) s,
#define AS_NAME(s) #s,
enum client_state { CLIENT_STATES(AS_ENUM) C__COUNT };
static const char *const cstate_names[] = { CLIENT_STATES(AS_NAME) };

enum expect { X_RSET, X_MAIL, X_RCPT, X_DATA, X_BODY, X_BDAT };

struct smtp_client {
    struct conn conn;
    uv_loop_t *loop;
    const struct smtp_client_ops *ops;
    void *owner;
    enum client_state state;
    struct dns_result hosts;
    int host_i, addr_i;
    uint16_t port;
    char helo[256];
    struct sockaddr_storage source; /* egress source address (port 0), if has_source */
    bool has_source;
    double connect_timeout, command_timeout;
    struct smtp_reply_parser rp;
    struct smtp_reply reply;
    struct smtp_caps caps;
    char site[300];
    char peer[64];
    char last_error[512];
    char last_tls[128];             /* TLS of the last host given up on (host_fail), for
                                       the result when no later host was reached */
    bool need_rset, aborting, txn_started;
    bool no_chunking;
    enum client_tls_policy tls_policy; /* of this connection (route's, raised or lowered
                                          by the entry it was opened for) */
    enum client_tls_policy route_policy; /* the route's, as configured */
    bool requiretls;            /* opened for a REQUIRETLS entry: the hop must offer it */
    bool rtls_refused;          /* a host failed a REQUIRETLS need (TLS, verification,
                                   no REQUIRETLS): when none is left, 5.7.30 */
    enum client_tls_policy base_tls;    /* the connection's floor: the route's, raised or lowered by the entry */
    enum client_tls_policy host_tls[DNS_MAX_HOSTS];
    struct dane_host *dane[DNS_MAX_HOSTS]; /* owned copies; NULL = no DANE */
    struct tls_ctx *tls_ctx;
    char *auth_user, *auth_pass;
    int plain_host, plain_addr;     /* address to retry without STARTTLS (policy may) */
    int cur_host, cur_addr;
    struct happy *happy;            /* a connect race over the host's addresses, or NULL */
    int happy_base;                 /* index of the race's first address in the host */
    uint32_t deliveries;
    /* current transaction */
    struct entry *e;
    struct buf content;
    struct buf content7;        /* its 7-bit form (RFC 6152 §3), or empty: none */
    uint32_t *idx;              /* indexes of the pending recipients */
    struct client_result *res;
    uint32_t nres, nsent_rcpt, accepted;
    enum expect *exp;           /* expectation ring (simple array + head) */
    uint32_t nexp, exp_head, exp_cap;
    bool mail_failed;
    bool body_8bit;             /* the content has octets >= 0x80 */
    struct client_result mail_res;
};

static void enter_state(struct smtp_client *c, enum client_state st)
{
    if (c->state != st)
        log_debug("smtp-out %s: %s -> %s", c->site[0] ? c->site : "-", cstate_names[c->state],
                  cstate_names[st]);
    c->state = st;
}

static void set_result(struct client_result *r, int code, const char *enh, const char *text)
{
    free(r->text);
    r->code = code;
    if (enh && *enh)
        snprintf(r->enhanced, sizeof r->enhanced, "%s", enh);
    else if (code >= 200)
        snprintf(r->enhanced, sizeof r->enhanced, "%d.0.0", code / 100);
    else
        snprintf(r->enhanced, sizeof r->enhanced, "4.4.1");
    r->text = strdup(text ? text : "");
    r->remote = false;
}

/* The next hop's own reply as the result. */
static void set_remote(struct client_result *r, const struct smtp_reply *rp, const char *text)
{
    set_result(r, rp->code, rp->enhanced, text);
    r->remote = true;
}

/* "550 5.1.1 text" from the parsed reply (first line only, newlines flattened). */
static void reply_text(const struct smtp_reply *rp, char *out, size_t n)
{
    if (rp->enhanced[0])
        snprintf(out, n, "%d %s %s", rp->code, rp->enhanced, rp->text);
    else
        snprintf(out, n, "%d %s", rp->code, rp->text);
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

static bool hop_dsn(const struct smtp_client *c)
{
    return (c->caps.flags & SMTP_CAP_DSN) != 0;
}

static void txn_clear(struct smtp_client *c)
{
    for (uint32_t i = 0; i < c->nres; i++)
        free(c->res[i].text);
    free(c->res);
    free(c->idx);
    free(c->mail_res.text);
    c->mail_res.text = NULL;
    c->res = NULL;
    c->idx = NULL;
    c->nres = c->nsent_rcpt = c->accepted = 0;
    c->nexp = c->exp_head = 0;
    c->mail_failed = false;
    c->e = NULL;
    buf_free(&c->content);
    buf_free(&c->content7);
}

/* Hands the finished transaction to the scheduler. The transaction is detached
 * from the client first: on_done may start the next one on this client. */
static void txn_done(struct smtp_client *c, bool usable)
{
    struct entry *e = c->e;
    if (!e)
        return;
    struct client_result *res = c->res;
    uint32_t nres = c->nres;
    for (uint32_t i = 0; i < nres; i++)
        res[i].hop_dsn = hop_dsn(c);
    c->res = NULL;
    c->nres = 0;
    txn_clear(c);
    c->deliveries++;
    const char *tls = conn_tls_describe(&c->conn);
    if (!tls && c->last_tls[0])
        tls = c->last_tls;
    c->ops->on_done(c->owner, c, e, res, nres, usable, c->site[0] ? c->site : NULL,
                    c->peer[0] ? c->peer : NULL, tls);
    for (uint32_t i = 0; i < nres; i++)
        free(res[i].text);
    free(res);
}

/* Transaction over, connection reusable: READY first, since on_done may hand us
 * the next entry or ask for QUIT. */
static void txn_finish(struct smtp_client *c)
{
    enter_state(c, C_READY);
    txn_done(c, true);
}

/* Every still-unanswered recipient of the current transaction gets this result. */
static void txn_fail_all(struct smtp_client *c, int code, const char *enh, const char *text)
{
    for (uint32_t i = 0; i < c->nres; i++)
        if (c->res[i].code == 0 || c->res[i].code / 100 == 2)
            set_result(&c->res[i], code, enh, text);
}

static void client_die(struct smtp_client *c, int code, const char *enh, const char *text)
{
    if (c->state == C_DEAD)
        return;
    if (c->e && c->deliveries > 0 && c->exp_head == 0 && !c->aborting) {
        /* a reused connection that died before answering anything: the entry was
         * not attempted (code -1), the scheduler requeues it for a fresh connection */
        for (uint32_t i = 0; i < c->nres; i++)
            set_result(&c->res[i], 0, "4.4.2", "stale connection");
        for (uint32_t i = 0; i < c->nres; i++)
            c->res[i].code = -1;
        txn_done(c, false);
    } else if (c->e) {
        /* recipients accepted at RCPT but without a final DATA reply are not delivered */
        txn_fail_all(c, code, enh, text);
        txn_done(c, false);
    }
    enter_state(c, C_DEAD);
    conn_close(&c->conn, false);
}

static void expect(struct smtp_client *c, enum expect x)
{
    if (c->nexp == c->exp_cap) {
        uint32_t cap = c->exp_cap ? c->exp_cap * 2 : 16;
        enum expect *p = realloc(c->exp, cap * sizeof *p);
        if (!p)
            return;
        c->exp = p;
        c->exp_cap = cap;
    }
    c->exp[c->nexp++] = x;
}

static void try_next_host(struct smtp_client *c);

static void client_free(struct smtp_client *c)
{
    happy_cancel(c->happy);
    txn_clear(c);
    free(c->exp);
    if (c->auth_pass)
        explicit_bzero(c->auth_pass, strlen(c->auth_pass));
    for (int i = 0; i < DNS_MAX_HOSTS; i++)
        free(c->dane[i]);
    free(c->auth_user);
    free(c->auth_pass);
    free(c);
}

/* Appends s as xtext (RFC 3461 4): "+", "=", and bytes outside "!".."~" as "+XX". */
static void send_xtext(struct smtp_client *c, const char *s)
{
    char out[3 * ENTRY_ORCPT_MAX + 8];   /* every byte encoded, and room to stop */
    size_t n = 0;
    for (; *s && n + 4 < sizeof out; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < '!' || ch > '~' || ch == '+' || ch == '=')
            n += (size_t)snprintf(out + n, sizeof out - n, "+%02X", ch);
        else
            out[n++] = (char)ch;
    }
    conn_send(&c->conn, out, n);
}

static void send_rcpt(struct smtp_client *c, uint32_t i)
{
    const struct entry_rcpt *r = &c->e->rcpts[c->idx[i]];
    conn_sendf(&c->conn, "RCPT TO:<%s>", r->addr);
    if (hop_dsn(c) && r->notify) {   /* RFC 3461 5.2: relay NOTIFY and ORCPT as given */
        if (r->notify & ENTRY_N_NEVER) {
            conn_send(&c->conn, " NOTIFY=NEVER", 13);
        } else {
            const char *sep = " NOTIFY=";
            static const struct { unsigned bit; const char *name; } kw[] = {
                { ENTRY_N_SUCCESS, "SUCCESS" }, { ENTRY_N_FAILURE, "FAILURE" },
                { ENTRY_N_DELAY, "DELAY" },
            };
            for (size_t k = 0; k < sizeof kw / sizeof kw[0]; k++)
                if (r->notify & kw[k].bit) {
                    conn_sendf(&c->conn, "%s%s", sep, kw[k].name);
                    sep = ",";
                }
        }
    }
    const char *orcpt = entry_rcpt_orcpt(r);
    const char *semi = orcpt ? strchr(orcpt, ';') : NULL;
    if (hop_dsn(c) && semi) {
        conn_sendf(&c->conn, " ORCPT=%.*s;", (int)(semi - orcpt), orcpt);
        send_xtext(c, semi + 1);
    }
    conn_send(&c->conn, "\r\n", 2);
    expect(c, X_RCPT);
}

static bool has_8bit_str(const char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    return false;
}

/* Octets >= 0x80 anywhere in b: eight at a time (this runs once per delivery). */
static bool has_8bit(const struct buf *b)
{
    const unsigned char *p = (const unsigned char *)b->data, *end = p + b->len;
    uint64_t acc = 0, w;
    for (; end - p >= 8; p += 8) {
        memcpy(&w, p, 8);
        acc |= w;
    }
    for (; p < end; p++)
        acc |= *p;
    return (acc & 0x8080808080808080ull) != 0;
}

/* A non-ASCII sender or pending recipient: the transaction needs SMTPUTF8. */
static bool envelope_utf8(const struct smtp_client *c)
{
    if (has_8bit_str(c->e->sender))
        return true;
    for (uint32_t i = 0; i < c->nres; i++)
        if (has_8bit_str(c->e->rcpts[c->idx[i]].addr))
            return true;
    return false;
}

static bool use_bdat(const struct smtp_client *c);

/* Content the next hop cannot take as it is: every recipient fails permanently
 * here, nothing is sent (RFC 6152 §3: never 8-bit to a hop without 8BITMIME; RFC
 * 6531 §3.4: a UTF-8 envelope needs SMTPUTF8). 8-bit content goes in its 7-bit
 * form when it has one (prepared and signed before), else it bounces with 5.6.3.
 * Returns true if it failed the entry. */
static bool txn_refuse_unsendable(struct smtp_client *c)
{
    const char *why = NULL, *enh = NULL;
    int code = 0;
    bool binary = (c->e->flags & ENTRY_F_BINARYMIME) != 0;
    if (!binary && c->body_8bit && !(c->caps.flags & SMTP_CAP_8BITMIME) && c->content7.len &&
        !(envelope_utf8(c) && !(c->caps.flags & SMTP_CAP_SMTPUTF8))) {
        log_info("smtp-out %s: no 8BITMIME: %s sent converted to 7 bit (RFC 6152 §3)",
                 c->site, c->e->id);
        buf_free(&c->content);
        c->content = c->content7;
        buf_init(&c->content7, 0);
        c->body_8bit = false;
    }
    if (binary && !(use_bdat(c) && (c->caps.flags & SMTP_CAP_BINARYMIME))) {
        /* RFC 3030 §4: petrel does not convert BINARYMIME content */
        code = 554;
        enh = "5.6.3";
        why = use_bdat(c) ? "554 5.6.3 the next hop does not offer BINARYMIME, needed for this "
                            "BODY=BINARYMIME message (it is not converted)"
                          : "554 5.6.3 BODY=BINARYMIME needs BDAT: the next hop does not offer "
                            "CHUNKING (or chunking = false); the message is not converted";
    } else if (envelope_utf8(c) && !(c->caps.flags & SMTP_CAP_SMTPUTF8)) {
        code = 553;
        enh = "5.6.7";
        why = "553 5.6.7 the next hop does not offer SMTPUTF8, needed for this UTF-8 address";
    } else if (!binary && c->body_8bit && !(c->caps.flags & SMTP_CAP_8BITMIME)) {
        code = 554;
        enh = "5.6.3";
        why = "554 5.6.3 the next hop does not offer 8BITMIME, needed for this 8-bit message "
              "(it cannot be converted to 7 bit: an 8-bit header, a binary or message/* "
              "part, an existing DKIM signature, or eight_bit_downgrade = false)";
    }
    if (!why)
        return false;
    log_info("smtp-out %s: %s", c->site, why);
    for (uint32_t i = 0; i < c->nres; i++)
        set_result(&c->res[i], code, enh, why);
    txn_finish(c);
    return true;
}

/* The TLS an entry needs: REQUIRETLS = verified TLS (RFC 8689 4.2.1), whatever the
 * route says; "TLS-Required: No" = none (RFC 8689 5); else the route's policy. */
static enum client_tls_policy entry_tls_need(const struct entry *e, enum client_tls_policy route)
{
    if (e->flags & ENTRY_F_REQUIRETLS)
        return CTLS_VERIFY;
    if (e->flags & ENTRY_F_TLS_OPTIONAL)
        return CTLS_MAY;
    return route;
}

/* What this connection achieved: VERIFY (TLS with a verified certificate), ENCRYPT
 * (TLS), or MAY (clear; satisfies "may" and nothing stronger). */
static enum client_tls_policy conn_tls_level(const struct smtp_client *c)
{
    if (!c->conn.tls)
        return CTLS_MAY;
    return c->tls_policy == CTLS_VERIFY ? CTLS_VERIFY : CTLS_ENCRYPT;
}

/* The entry's TLS need (entry_tls_need) against this connection. A connection
 * opened for another entry that falls short is not used: the entry is handed back
 * untried (-1) and the connection closed, so a fresh one is opened with its need.
 * On the connection opened for it (only possible without a TLS context, or a hop
 * without REQUIRETLS) REQUIRETLS fails with 5.7.30. Returns true if it ended the
 * transaction. */
static bool txn_tls_refused(struct smtp_client *c)
{
    const struct entry *e = c->e;
    enum client_tls_policy need = entry_tls_need(e, c->route_policy);
    bool rtls = (e->flags & ENTRY_F_REQUIRETLS) != 0;
    bool short_tls = need == CTLS_VERIFY ? conn_tls_level(c) != CTLS_VERIFY
                   : need == CTLS_ENCRYPT ? conn_tls_level(c) == CTLS_MAY : false;
    bool short_rtls = rtls && !(c->caps.flags & SMTP_CAP_REQUIRETLS);
    if (!short_tls && !short_rtls)
        return false;
    if (c->deliveries > 0 && (short_tls || !c->requiretls)) {
        log_info("smtp-out %s: connection falls short of what entry %s needs (%s); "
                 "a new connection takes it", c->site, e->id,
                 rtls ? "REQUIRETLS" : "route TLS policy");
        for (uint32_t i = 0; i < c->nres; i++) {
            set_result(&c->res[i], 0, "4.4.2", "connection not usable for this message");
            c->res[i].code = -1;
        }
        txn_done(c, false);
        enter_state(c, C_DEAD);
        conn_send(&c->conn, "QUIT\r\n", 6);
        conn_close(&c->conn, true);
        return true;
    }
    const char *why = short_rtls && !short_tls
        ? "550 5.7.30 REQUIRETLS support required: the next hop does not offer REQUIRETLS"
        : "550 5.7.30 REQUIRETLS support required: no TLS with a verified certificate "
          "to the next hop";
    if (!rtls)   /* the route's own policy: a deferral, as for any TLS policy failure */
        why = "451 4.7.5 TLS policy of the route not met by this connection";
    log_info("smtp-out %s: %s (entry %s)", c->site, why, e->id);
    for (uint32_t i = 0; i < c->nres; i++)
        set_result(&c->res[i], rtls ? 550 : 451, rtls ? "5.7.30" : "4.7.5", why);
    txn_finish(c);
    return true;
}

static bool use_bdat(const struct smtp_client *c)
{
    return !c->no_chunking && (c->caps.flags & SMTP_CAP_CHUNKING);
}

/* BDAT <size> LAST and the content as it is (no dot-stuffing, RFC 3030). The
 * spooled content has CRLF line ends (ingest.h), so it needs no conversion. */
static void send_bdat(struct smtp_client *c)
{
    conn_sendf(&c->conn, "BDAT %zu LAST\r\n", c->content.len);
    if (c->content.len)
        conn_send(&c->conn, c->content.data, c->content.len);
    buf_free(&c->content);
    expect(c, X_BDAT);
}

/* Sends the commands of the transaction: all at once with PIPELINING. */
static void txn_begin(struct smtp_client *c)
{
    struct entry *e = c->e;
    c->txn_started = true;
    enter_state(c, C_TXN);
    conn_set_timeout(&c->conn, c->command_timeout); /* replaces an idle deadline */
    c->nexp = c->exp_head = 0;
    if (txn_tls_refused(c) || txn_refuse_unsendable(c))
        return;
    if (c->need_rset) {
        conn_send(&c->conn, "RSET\r\n", 6);
        expect(c, X_RSET);
        c->need_rset = false;
        if (!(c->caps.flags & SMTP_CAP_PIPELINING)) {
            conn_flush(&c->conn);
            return;
        }
    }
    /* BODY=8BITMIME only for 8-bit content (RFC 6152): 7-bit mail declares nothing;
     * BINARYMIME as received (txn_refuse_unsendable checked the hop takes it) */
    const char *body = (e->flags & ENTRY_F_BINARYMIME) ? " BODY=BINARYMIME"
                       : c->body_8bit                 ? " BODY=8BITMIME"
                                                      : "";
    bool utf8 = envelope_utf8(c);
    conn_sendf(&c->conn, "MAIL FROM:<%s>", e->sender);
    if (c->caps.flags & SMTP_CAP_SIZE)
        conn_sendf(&c->conn, " SIZE=%llu", (unsigned long long)c->content.len);
    conn_sendf(&c->conn, "%s%s", body, utf8 && (c->caps.flags & SMTP_CAP_SMTPUTF8) ? " SMTPUTF8" : "");
    if (hop_dsn(c)) {
        unsigned ret = entry_ret(e);
        if (ret)
            conn_send(&c->conn, ret == ENTRY_F_RET_HDRS ? " RET=HDRS" : " RET=FULL", 9);
        if (e->envid) {
            conn_send(&c->conn, " ENVID=", 7);
            send_xtext(c, e->envid);
        }
    }
    if (e->flags & ENTRY_F_REQUIRETLS)   /* txn_tls_refused checked the hop offers it */
        conn_send(&c->conn, " REQUIRETLS", 11);
    conn_send(&c->conn, "\r\n", 2);
    expect(c, X_MAIL);
    if (c->caps.flags & SMTP_CAP_PIPELINING) {
        for (uint32_t i = 0; i < c->nres; i++)
            send_rcpt(c, i);
        c->nsent_rcpt = c->nres;
        if (use_bdat(c)) {
            send_bdat(c); /* the server discards it if no recipient was accepted */
        } else {
            conn_send(&c->conn, "DATA\r\n", 6);
            expect(c, X_DATA);
        }
    }
    conn_flush(&c->conn);
}

/* True if content can go on the wire as is: it ends in CRLF and no line starts
 * with '.', so dot-stuffing would not change a byte. Spooled content always has
 * CRLF line ends (ingest.h), so only dots matter: one memchr scan for '.', which
 * is far rarer than line ends (none at all in base64). */
static bool needs_no_stuffing(const struct buf *b)
{
    const char *p = b->data, *end = b->data + b->len;
    if (b->len < 2 || p[0] == '.' || end[-2] != '\r' || end[-1] != '\n')
        return false;
    for (const char *q = p + 1; (q = memchr(q, '.', (size_t)(end - q))) != NULL; q++)
        if (q[-1] == '\n')
            return false;
    return true;
}

static void send_body(struct smtp_client *c)
{
    struct buf stuffed;
    if (needs_no_stuffing(&c->content)) {
        /* the common case: hand the spool copy to the connection, no second copy */
        stuffed = c->content;
        buf_init(&c->content, 0);
        if (buf_append(&stuffed, ".\r\n", 3) != PT_OK) {
            buf_free(&stuffed);
            client_die(c, 451, "4.3.0", "451 4.3.0 out of memory preparing the message");
            return;
        }
    } else {
        buf_init(&stuffed, 0);
        if (smtp_dot_stuff(c->content.data, c->content.len, &stuffed) != PT_OK) {
            buf_free(&stuffed);
            client_die(c, 451, "4.3.0", "451 4.3.0 out of memory preparing the message");
            return;
        }
    }
    /* hand the stuffed copy to the connection without another copy */
    if (c->conn.out.len == 0) {
        buf_free(&c->conn.out);
        c->conn.out = stuffed;
    } else {
        conn_send(&c->conn, stuffed.data, stuffed.len);
        buf_free(&stuffed);
    }
    expect(c, X_BODY);
    conn_flush(&c->conn);
}

static void txn_on_reply(struct smtp_client *c, const struct smtp_reply *rp)
{
    if (c->exp_head >= c->nexp) {
        client_die(c, 451, "4.4.2", "451 4.4.2 unexpected reply from the next hop");
        return;
    }
    enum expect x = c->exp[c->exp_head++];
    char text[600];
    reply_text(rp, text, sizeof text);
    bool pipelining = c->caps.flags & SMTP_CAP_PIPELINING;
    switch (x) {
    case X_RSET:
        if (!pipelining)
            txn_begin(c);
        return;
    case X_MAIL:
        if (rp->code / 100 != 2) {
            c->mail_failed = true;
            for (uint32_t i = 0; i < c->nres; i++)
                set_remote(&c->res[i], rp, text);
            if (!pipelining) {
                c->need_rset = true;
                txn_finish(c);
            }
            return;
        }
        if (!pipelining) {
            send_rcpt(c, c->nsent_rcpt++);
            conn_flush(&c->conn);
        }
        return;
    case X_RCPT: {
        uint32_t i = 0;
        /* the n-th RCPT reply belongs to the n-th recipient sent */
        for (uint32_t k = 0; k < c->exp_head - 1; k++)
            if (c->exp[k] == X_RCPT)
                i++;
        if (!c->mail_failed && i < c->nres) {
            set_remote(&c->res[i], rp, text);
            if (rp->code / 100 == 2)
                c->accepted++;
        }
        if (!pipelining) {
            if (c->nsent_rcpt < c->nres) {
                send_rcpt(c, c->nsent_rcpt++);
            } else if (c->accepted > 0 && use_bdat(c)) {
                send_bdat(c);
            } else if (c->accepted > 0) {
                conn_send(&c->conn, "DATA\r\n", 6);
                expect(c, X_DATA);
            } else {
                c->need_rset = true;
                txn_finish(c);
                return;
            }
            conn_flush(&c->conn);
        }
        return;
    }
    case X_DATA:
        if (rp->code == 354) {
            if (c->accepted == 0 || c->mail_failed) {
                conn_send(&c->conn, ".\r\n", 3); /* broken server: end the empty message */
                expect(c, X_RSET);
                c->need_rset = true;
                return;
            }
            send_body(c);
            return;
        }
        if (c->accepted > 0 && !c->mail_failed)
            for (uint32_t i = 0; i < c->nres; i++)
                if (c->res[i].code / 100 == 2)
                    set_remote(&c->res[i], rp, text);
        c->need_rset = true;
        txn_finish(c);
        return;
    case X_BODY:
        for (uint32_t i = 0; i < c->nres; i++)
            if (c->res[i].code / 100 == 2)
                set_remote(&c->res[i], rp, text);
        txn_finish(c);
        return;
    case X_BDAT:
        /* the final reply; after a failed MAIL or no accepted RCPT it only
         * refuses the (discarded) chunk: the earlier replies stand */
        if (c->accepted > 0 && !c->mail_failed)
            for (uint32_t i = 0; i < c->nres; i++)
                if (c->res[i].code / 100 == 2)
                    set_remote(&c->res[i], rp, text);
        if (rp->code / 100 != 2)
            c->need_rset = true;
        txn_finish(c);
        return;
    }
}

/* This host can't be used (TLS policy, AUTH): note why and move to the next one. */
static void host_fail(struct smtp_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void host_fail(struct smtp_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
    log_info("smtp-out %s: %s", c->site, c->last_error);
    const char *tls = conn_tls_describe(&c->conn);
    snprintf(c->last_tls, sizeof c->last_tls, "%s", tls ? tls : "");
    if (!c->conn.tls || c->conn.tls_done)
        conn_send(&c->conn, "QUIT\r\n", 6);
    conn_close(&c->conn, true);
}

/* The address of one end of the connected socket, as text; "" when unknown. */
static void end_address(const uv_tcp_t *tcp, bool peer, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    out[0] = 0;
    int rc = peer ? uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len)
                  : uv_tcp_getsockname(tcp, (struct sockaddr *)&ss, &len);
    if (rc != 0)
        return;
    if (ss.ss_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)&ss, out, outlen);
    else if (ss.ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)&ss, out, outlen);
}

static void tls_failure(struct smtp_client *c, const char *why)
{
    if (c->requiretls)
        c->rtls_refused = true;
    if (c->ops->on_tls_failure) {
        char local[64], peer[64];   /* TLS-RPT's sending-mta-ip and receiving-ip */
        end_address(&c->conn.tcp, false, local, sizeof local);
        end_address(&c->conn.tcp, true, peer, sizeof peer);
        c->ops->on_tls_failure(c->owner, c->site, local[0] ? local : NULL,
                               peer[0] ? peer : NULL, why);
    }
}

static void send_ehlo(struct smtp_client *c)
{
    enter_state(c, C_EHLO);
    conn_sendf(&c->conn, "EHLO %s\r\n", c->helo);
    conn_flush(&c->conn);
    conn_set_timeout(&c->conn, c->command_timeout);
}

static bool has_mech(const struct smtp_caps *caps, const char *mech)
{
    size_t n = strlen(mech);
    for (const char *p = caps->auth; (p = strstr(p, mech)) != NULL; p += n)
        if ((p == caps->auth || p[-1] == ' ') && (p[n] == 0 || p[n] == ' '))
            return true;
    return false;
}

/* After a successful EHLO: STARTTLS per policy, then AUTH, then the transaction. */
static void after_ehlo(struct smtp_client *c)
{
    bool plain_retry = c->cur_host == c->plain_host && c->cur_addr == c->plain_addr;
    if (!c->conn.tls && c->tls_policy != CTLS_NONE && !plain_retry) {
        if (c->caps.flags & SMTP_CAP_STARTTLS) {
            enter_state(c, C_STARTTLS);
            conn_send(&c->conn, "STARTTLS\r\n", 10);
            conn_flush(&c->conn);
            return;
        }
        if (c->tls_policy >= CTLS_ENCRYPT) {
            tls_failure(c, "STARTTLS not offered");
            host_fail(c, "TLS is required, but %s did not offer STARTTLS", c->site);
            return;
        }
    }
    if (c->requiretls && c->conn.tls && !(c->caps.flags & SMTP_CAP_REQUIRETLS)) {
        c->rtls_refused = true;    /* RFC 8689 4.2.1: try the next MX */
        host_fail(c, "REQUIRETLS message, but %s does not offer REQUIRETLS", c->site);
        return;
    }
    if (c->auth_user) {
        if (!c->conn.tls) {
            host_fail(c, "refusing to send AUTH credentials to %s without TLS", c->site);
            return;
        }
        char raw[1024], b64[1400];
        if (has_mech(&c->caps, "PLAIN")) {
            int n = snprintf(raw, sizeof raw, "%c%s%c%s", 0, c->auth_user, 0, c->auth_pass);
            if (n < 0 || (size_t)n >= sizeof raw || base64_encode(raw, (size_t)n, b64, sizeof b64) != PT_OK) {
                host_fail(c, "AUTH credentials too long");
                return;
            }
            explicit_bzero(raw, sizeof raw);
            enter_state(c, C_AUTH);
            conn_sendf(&c->conn, "AUTH PLAIN %s\r\n", b64);
            explicit_bzero(b64, sizeof b64);
        } else if (has_mech(&c->caps, "LOGIN")) {
            enter_state(c, C_AUTH_USER);
            conn_send(&c->conn, "AUTH LOGIN\r\n", 12);
        } else {
            host_fail(c, "%s offers no AUTH mechanism we support (PLAIN, LOGIN)", c->site);
            return;
        }
        conn_flush(&c->conn);
        return;
    }
    txn_begin(c);
}

static void auth_send_b64(struct smtp_client *c, const char *s)
{
    char b64[1400];
    if (base64_encode(s, strlen(s), b64, sizeof b64) != PT_OK) {
        host_fail(c, "AUTH credentials too long");
        return;
    }
    conn_sendf(&c->conn, "%s\r\n", b64);
    explicit_bzero(b64, sizeof b64);
    conn_flush(&c->conn);
}

static void on_reply(struct smtp_client *c, const struct smtp_reply *rp)
{
    char text[600];
    switch (c->state) {
    case C_GREETING:
        if (rp->code != 220) {
            reply_text(rp, text, sizeof text);
            snprintf(c->last_error, sizeof c->last_error, "%s said: %s", c->site, text);
            conn_send(&c->conn, "QUIT\r\n", 6);
            conn_flush(&c->conn);
            conn_close(&c->conn, true);
            return; /* on_closed tries the next host */
        }
        send_ehlo(c);
        return;
    case C_EHLO:
        if (rp->code / 100 != 2) {
            enter_state(c, C_HELO);
            conn_sendf(&c->conn, "HELO %s\r\n", c->helo);
            conn_flush(&c->conn);
            return;
        }
        smtp_caps_parse(rp, &c->caps);
        after_ehlo(c);
        return;
    case C_STARTTLS:
        if (rp->code != 220) {
            reply_text(rp, text, sizeof text);
            if (c->tls_policy >= CTLS_ENCRYPT) {
                tls_failure(c, "STARTTLS refused");
                host_fail(c, "TLS is required, but %s refused STARTTLS: %s", c->site, text);
                return;
            }
            c->plain_host = c->cur_host;
            c->plain_addr = c->cur_addr;
            after_ehlo(c); /* may: go on in clear */
            return;
        }
        enter_state(c, C_TLS);
        {
            const char *host = c->hosts.hosts[c->cur_host].name;
            const struct dane_host *d = c->dane[c->cur_host];
            if (d && d->n > 0) {
                struct tls_dane_rec recs[DANE_MAX_TLSA];
                for (int i = 0; i < d->n; i++)
                    recs[i] = (struct tls_dane_rec){ d->tlsa[i].usage, d->tlsa[i].selector,
                                                     d->tlsa[i].mtype, d->tlsa[i].data,
                                                     d->tlsa[i].len };
                struct tls_session *t = tls_session_new_dane(c->tls_ctx, host, recs, d->n);
                if (!t || conn_start_tls_session(&c->conn, t) != PT_OK)
                    host_fail(c, "cannot start DANE TLS with %s", c->site);
            } else if (conn_start_tls(&c->conn, c->tls_ctx, false, host,
                                      c->tls_policy == CTLS_VERIFY ? host : NULL) != PT_OK) {
                host_fail(c, "cannot start TLS with %s", c->site);
            }
        }
        return;
    case C_AUTH:
        if (rp->code != 235) {
            reply_text(rp, text, sizeof text);
            host_fail(c, "authentication to %s failed: %s", c->site, text);
            return;
        }
        txn_begin(c);
        return;
    case C_AUTH_USER:
    case C_AUTH_PASS:
        if (rp->code != 334) {
            reply_text(rp, text, sizeof text);
            host_fail(c, "authentication to %s failed: %s", c->site, text);
            return;
        }
        if (c->state == C_AUTH_USER) {
            enter_state(c, C_AUTH_PASS);
            auth_send_b64(c, c->auth_user);
        } else {
            enter_state(c, C_AUTH);
            auth_send_b64(c, c->auth_pass);
        }
        return;
    case C_HELO:
        if (rp->code / 100 != 2) {
            reply_text(rp, text, sizeof text);
            client_die(c, rp->code, rp->enhanced, text);
            return;
        }
        memset(&c->caps, 0, sizeof c->caps);
        after_ehlo(c);
        return;
    case C_TXN:
        txn_on_reply(c, rp);
        return;
    case C_QUIT:
        conn_close(&c->conn, true);
        return;
    default:
        return;
    }
}

static void on_data(struct conn *conn)
{
    struct smtp_client *c = conn->owner;
    size_t off = 0;
    while (off < conn->in.len && c->state != C_DEAD && !conn->closing) {
        size_t used = 0;
        int rc = smtp_reply_feed(&c->rp, conn->in.data + off, conn->in.len - off, &used, &c->reply);
        off += used;
        if (rc == PT_AGAIN)
            break;
        if (rc != PT_OK) {
            log_warn("smtp-out %s: malformed reply; dropping the connection", c->site);
            client_die(c, 451, "4.5.0", "451 4.5.0 malformed SMTP reply from the next hop");
            break;
        }
        if (c->reply.code / 100 == 4 || c->reply.code / 100 == 5)
            log_debug("smtp-out %s: %d %s", c->site, c->reply.code, c->reply.text);
        on_reply(c, &c->reply);
        if (c->state != C_READY && c->state != C_QUIT && c->state != C_DEAD)
            conn_set_timeout(conn, c->command_timeout);
    }
    buf_consume(&conn->in, off);
}

static void on_eof(struct conn *conn, int err)
{
    struct smtp_client *c = conn->owner;
    char text[600];
    if (c->state == C_TLS) {
        const char *why = conn_tls_error(conn);
        char msg[400];
        snprintf(msg, sizeof msg, "TLS handshake with %s failed: %s", c->site,
                 why && *why ? why : "connection closed");
        tls_failure(c, msg);
        if (c->tls_policy == CTLS_MAY) {
            log_warn("smtp-out %s; retrying in clear", msg);
            c->plain_host = c->cur_host;
            c->plain_addr = c->cur_addr;
            c->addr_i--; /* the same address again */
        }
        snprintf(c->last_error, sizeof c->last_error, "%s", msg);
        conn_close(conn, false);
        return;
    }
    if (!c->txn_started && c->state != C_READY && c->state != C_QUIT) {
        snprintf(c->last_error, sizeof c->last_error, "lost connection with %s in state %s",
                 c->site, cstate_names[c->state]);
        conn_close(conn, false);
        return;
    }
    snprintf(text, sizeof text, "451 4.4.2 lost connection with %s%s%s", c->site,
             err ? ": " : "", err ? uv_strerror(err) : "");
    client_die(c, 451, "4.4.2", text);
}

static void on_timeout(struct conn *conn)
{
    struct smtp_client *c = conn->owner;
    char text[600];
    if (!c->txn_started && c->state != C_READY && c->state != C_QUIT) {
        snprintf(c->last_error, sizeof c->last_error, "%s %s timed out",
                 c->state == C_CONNECTING ? "connect to" : c->state == C_GREETING ? "greeting from" :
                 c->state == C_TLS ? "TLS handshake with" : "waiting for", c->site);
        if (c->state == C_TLS)
            tls_failure(c, c->last_error);
        conn_close(conn, false);
        return;
    }
    if (c->state == C_READY) {
        smtp_client_quit(c); /* idle too long */
        return;
    }
    if (c->state == C_QUIT) {
        enter_state(c, C_DEAD);
        conn_close(conn, false);
        return;
    }
    snprintf(text, sizeof text, "451 4.4.2 timeout waiting for a reply from %s", c->site);
    client_die(c, 451, "4.4.2", text);
}

static void on_tls(struct conn *conn)
{
    struct smtp_client *c = conn->owner;
    log_debug("smtp-out %s: TLS %s", c->site, conn_tls_describe(conn));
    memset(&c->caps, 0, sizeof c->caps);
    send_ehlo(c);
}

static void on_connect(struct conn *conn, int status)
{
    struct smtp_client *c = conn->owner;
    if (status < 0) {
        snprintf(c->last_error, sizeof c->last_error, "connect to %s[%s]: %s", c->site, c->peer,
                 uv_strerror(status));
        conn_close(conn, false);
        return;
    }
    enter_state(c, C_GREETING);
    conn_set_timeout(conn, c->connect_timeout);
    conn_start(conn);
}

static const struct conn_ops client_conn_ops;

static void on_closed(struct conn *conn)
{
    struct smtp_client *c = conn->owner;
    happy_cancel(c->happy);
    c->happy = NULL;
    bool retry_host = !c->txn_started && !c->aborting && c->state != C_DEAD;
    if (retry_host) {
        c->state = C_CONNECTING;
        try_next_host(c);
        return;
    }
    if (c->e) {
        txn_fail_all(c, 451, "4.4.2", "451 4.4.2 connection closed");
        txn_done(c, false);
    }
    c->ops->on_closed(c->owner, c);
    client_free(c);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* The connect race of the current host is over (smtp/happy.h). */
static void on_happy(void *arg, int fd, int index, int err)
{
    struct smtp_client *c = arg;
    c->happy = NULL;
    if (c->conn.closing) {
        if (fd >= 0)
            close(fd);
        return;
    }
    if (fd < 0) {
        snprintf(c->last_error, sizeof c->last_error, "connect to %s[%s]: %s", c->site,
                 c->peer, uv_strerror(err));
        conn_close(&c->conn, false);
        return;
    }
    struct dns_host *h = &c->hosts.hosts[c->cur_host];
    c->cur_addr = c->happy_base + index;
    c->addr_i = c->cur_addr + 1;       /* a later failure goes on after the winner */
    struct sockaddr_storage ss = h->addrs[c->cur_addr];
    set_port(&ss, c->port);
    cidr_addr_str((struct sockaddr *)&ss, c->peer, sizeof c->peer);
    if (conn_accept_fd(&c->conn, fd) != PT_OK) {
        snprintf(c->last_error, sizeof c->last_error, "connect to %s[%s]: cannot use the "
                 "socket", c->site, c->peer);
        conn_close(&c->conn, false);
        return;
    }
    on_connect(&c->conn, 0);
}

/* Connects to the next address of the current host, or the next host: with more
 * than one address left, they race (Happy Eyeballs, smtp/happy.h). When none
 * is left, the transaction fails with the last error (a deferral). */
static void try_next_host(struct smtp_client *c)
{
    while (c->host_i < c->hosts.nhosts) {
        struct dns_host *h = &c->hosts.hosts[c->host_i];
        if (c->addr_i >= h->naddr) {
            c->host_i++;
            c->addr_i = 0;
            continue;
        }
        /* an egress source reaches only the addresses of its own family: mail must
         * not leave from another address of this host */
        if (c->has_source && h->addrs[c->addr_i].ss_family != c->source.ss_family) {
            c->addr_i++;
            snprintf(c->last_error, sizeof c->last_error, "%s: no address of the egress "
                     "source's family (%s)", h->name,
                     c->source.ss_family == AF_INET6 ? "IPv6" : "IPv4");
            continue;
        }
        c->cur_host = c->host_i;
        c->cur_addr = c->addr_i;
        c->tls_policy = c->tls_ctx && c->host_tls[c->cur_host] > c->base_tls
                            ? c->host_tls[c->cur_host] : c->base_tls;
        c->txn_started = false;
        int left = c->has_source ? 1 : h->naddr - c->addr_i;  /* a source: no race */
        struct sockaddr_storage ss = h->addrs[c->addr_i++];
        set_port(&ss, c->port);
        snprintf(c->site, sizeof c->site, "%s:%u", h->name, c->port);
        cidr_addr_str((struct sockaddr *)&ss, c->peer, sizeof c->peer);
        buf_free(&c->conn.in);
        c->last_tls[0] = 0;  /* a new host: only its own TLS counts from here */
        if (conn_init(&c->conn, c->loop, &client_conn_ops, c) != PT_OK)
            break;
        smtp_reply_init(&c->rp);
        enter_state(c, C_CONNECTING);
        conn_set_timeout(&c->conn, c->connect_timeout);
        if (left > 1) {
            struct sockaddr_storage race[HAPPY_MAX];
            int n = 0;
            for (int i = c->cur_addr; i < h->naddr && n < HAPPY_MAX; i++) {
                race[n] = h->addrs[i];
                set_port(&race[n++], c->port);
            }
            c->happy_base = c->cur_addr;
            if ((c->happy = happy_start(c->loop, race, n, HAPPY_DELAY_MS,
                                        c->has_source ? &c->source : NULL, on_happy, c))) {
                c->addr_i = h->naddr;      /* all raced; on_happy says which won */
                return;
            }
        }
        if (c->has_source && c->source.ss_family == ss.ss_family &&
            uv_tcp_bind(&c->conn.tcp, (const struct sockaddr *)&c->source, 0) != 0) {
            snprintf(c->last_error, sizeof c->last_error,
                     "connect to %s[%s]: cannot bind the egress source address", c->site,
                     c->peer);
            conn_close(&c->conn, false);
            return;
        }
        if (conn_connect(&c->conn, (struct sockaddr *)&ss) == PT_OK)
            return;
        snprintf(c->last_error, sizeof c->last_error, "connect to %s[%s]: failed", c->site, c->peer);
        conn_close(&c->conn, false);
        return;
    }
    /* nothing worked */
    char text[700];
    /* every host failed (refused, 4xx/5xx greeting, TLS policy): a deferral */
    snprintf(text, sizeof text, "451 4.4.1 %s", c->last_error[0] ? c->last_error : "no reachable host");
    if (c->e && c->rtls_refused && (c->e->flags & ENTRY_F_REQUIRETLS)) {
        /* RFC 8689 4.2.1: no host gave verified TLS and REQUIRETLS: a bounce */
        snprintf(text, sizeof text, "550 5.7.30 REQUIRETLS support required: %s",
                 c->last_error[0] ? c->last_error : "no suitable host");
        txn_fail_all(c, 550, "5.7.30", text);
        txn_done(c, false);
    } else if (c->e) {
        txn_fail_all(c, 451, "4.4.1", text);
        txn_done(c, false);
    }
    enter_state(c, C_DEAD);
    c->ops->on_closed(c->owner, c);
    client_free(c);
}

static const struct conn_ops client_conn_ops = {
    .on_data = on_data, .on_eof = on_eof, .on_timeout = on_timeout,
    .on_closed = on_closed, .on_connect = on_connect, .on_tls = on_tls,
};

static int txn_setup(struct smtp_client *c, struct entry *e, struct buf *content,
                     struct buf *content7)
{
    c->e = e;
    c->content = *content;
    buf_init(content, 0);
    c->content7 = *content7;
    buf_init(content7, 0);
    c->body_8bit = has_8bit(&c->content);
    uint32_t n = entry_pending(e);
    c->idx = calloc(n ? n : 1, sizeof *c->idx);
    c->res = calloc(n ? n : 1, sizeof *c->res);
    if (!c->idx || !c->res)
        return PT_NOMEM;
    for (uint32_t i = 0; i < e->nrcpt; i++)
        if (e->rcpts[i].state == RCPT_PENDING)
            c->idx[c->nres++] = i;
    return PT_OK;
}

struct smtp_client *smtp_client_start(uv_loop_t *loop, const struct smtp_client_params *p,
                                      const struct smtp_client_ops *ops, void *owner,
                                      struct entry *e, struct buf *content,
                                      struct buf *content7)
{
    struct smtp_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ops = ops;
    c->owner = owner;
    c->hosts = *p->hosts;
    c->port = p->port;
    snprintf(c->helo, sizeof c->helo, "%s", p->helo);
    if (p->source) {
        c->source = *p->source;
        c->has_source = true;
    }
    c->connect_timeout = p->connect_timeout;
    c->command_timeout = p->command_timeout;
    c->route_policy = p->tls;
    c->requiretls = (e->flags & ENTRY_F_REQUIRETLS) != 0;
    c->tls_policy = c->base_tls = p->tls_ctx ? entry_tls_need(e, p->tls) : CTLS_NONE;
    for (int i = 0; i < DNS_MAX_HOSTS && i < p->hosts->nhosts; i++) {
        c->host_tls[i] = p->host_tls[i];
        if (p->dane[i] && (c->dane[i] = malloc(sizeof *c->dane[i])) != NULL)
            *c->dane[i] = *p->dane[i];
        else if (p->dane[i])
            c->host_tls[i] = CTLS_VERIFY;  /* out of memory: never less than asked */
    }
    c->tls_ctx = p->tls_ctx;
    c->plain_host = c->plain_addr = -1;
    c->no_chunking = p->no_chunking;
    if (p->auth_user) {
        c->auth_user = strdup(p->auth_user);
        c->auth_pass = strdup(p->auth_pass ? p->auth_pass : "");
    }
    c->loop = loop;
    buf_init(&c->content, 0);
    buf_init(&c->content7, 0);
    if (txn_setup(c, e, content, content7) != PT_OK) {
        txn_clear(c);
        for (int i = 0; i < DNS_MAX_HOSTS; i++)
            free(c->dane[i]);
        free(c->auth_user);
        free(c->auth_pass);
        free(c);
        return NULL;
    }
    snprintf(c->last_error, sizeof c->last_error, "no address for the next hop");
    try_next_host(c);
    return c;
}

void smtp_client_deliver(struct smtp_client *c, struct entry *e, struct buf *content,
                         struct buf *content7)
{
    if (txn_setup(c, e, content, content7) != PT_OK) {
        txn_fail_all(c, 451, "4.3.0", "451 4.3.0 out of memory");
        txn_done(c, true);
        return;
    }
    txn_begin(c);
}

void smtp_client_idle(struct smtp_client *c, double secs)
{
    if (c->state == C_READY)
        conn_set_timeout(&c->conn, secs);
}

void smtp_client_quit(struct smtp_client *c)
{
    if (c->state == C_DEAD || c->conn.closing)
        return;
    enter_state(c, C_QUIT);
    conn_send(&c->conn, "QUIT\r\n", 6);
    conn_flush(&c->conn);
    conn_set_timeout(&c->conn, 5);
}

void smtp_client_abort(struct smtp_client *c)
{
    c->aborting = true;
    client_die(c, 451, "4.3.2", "451 4.3.2 delivery aborted: shutting down");
}

uint32_t smtp_client_deliveries(const struct smtp_client *c)
{
    return c->deliveries;
}
