/* SMTP server session: state machine (enum + enter_state + command table), reply
 * batching for PIPELINING, DATA and BDAT through the pure smtp_data and smtp_bdat
 * readers, relay control and limits from the listener, an optional PROXY protocol
 * header first (its source is then the client everywhere). A session waiting for the
 * spool is paused and kept alive until its commit returns (ownership: the commit
 * holds a reference).
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/authban.h"
#include "core/runtime.h"
#include "core/worker.h"
#include "obs/log.h"
#include "obs/metrics.h"
#include "policy/accept.h"
#include "policy/header_checks.h"
#include "delivery/egress.h"
#include "policy/hooks.h"
#include "policy/limits.h"
#include "queue/entry.h"
#include "queue/ingest.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "smtp/conn.h"
#include "smtp/proxy.h"
#include "smtp/smtp_auth.h"
#include "smtp/smtp_bdat.h"
#include "smtp/smtp_data.h"
#include "smtp/smtp_parse.h"
#include "smtp/smtp_server.h"
#include "tls/tls.h"
#include "util/headers.h"
#include "util/result.h"
#include "util/timeutil.h"

#define SMTP_MAX_ERRORS 20   /* bad commands before we hang up (nginx max_errors) */
#define SMTP_RCPT_INIT 8

#define SESSION_STATES(X) \
    X(S_GREETING) X(S_PROXY) X(S_READY) X(S_MAIL) X(S_RCPT) X(S_DATA) X(S_QUEUEING) X(S_AUTH) X(S_CLOSING) \
    X(S_BDAT) X(S_CHUNK)
/* S_BDAT: between the chunks of a BDAT message; S_CHUNK: reading one chunk's
 * octets (bdat_next: the state after a refused chunk's octets are dropped). */
#define AS_ENUM(s) s,
#define AS_NAME(s) #s,
enum session_state { SESSION_STATES(AS_ENUM) S__COUNT };
static const char *const state_names[] = { SESSION_STATES(AS_NAME) };

struct smtp_session {
    struct conn conn;
    struct worker *w;
    struct cfg_gen *gen;            /* the config generation the session started with */
    struct lua_State *L;            /* this worker's Lua state of that generation */
    const struct cfg_listener *l;
    int li;                         /* index of l in gen->cfg */
    int slot;                       /* listener slot (front-door counters) */
    struct smtp_session *prev, *next;
    enum session_state state;
    int refs;                       /* 1 for the connection + 1 per pending commit */
    int errors;
    bool esmtp, closed, counted;
    char client_ip[64];
    struct sockaddr_storage peer;   /* client address, read once at accept */
    char helo[SMTP_PATH_MAX + 1];
    struct smtp_lines lines;        /* command line splitter (persists across reads) */
    bool authed;
    bool refuse_after_tls;          /* implicit TLS: the queued 421 goes out after the handshake */
    int auth_failures;              /* AUTH failures of this session counted toward a ban */
    char auth_user[256];
    struct sasl sasl;
    /* SASL exchanges run on the libuv thread pool: crypt(3) costs milliseconds */
    uv_work_t auth_work;
    char auth_mech[32], auth_allowed[256], auth_out[SASL_OUT_MAX];
    char *auth_in;                  /* initial response or continuation line, or NULL */
    size_t auth_in_len;
    bool auth_start;
    int auth_rc;
    /* transaction */
    char id[ENTRY_ID_LEN + 1];
    char sender[SMTP_PATH_MAX + 1];
    bool smtputf8;
    uint8_t mail_flags;             /* ENTRY_F_RET_*, ENTRY_F_REQUIRETLS, ENTRY_F_BINARYMIME
                                       of MAIL */
    char envid[SMTP_ENVID_MAX + 1]; /* MAIL ENVID= (decoded), "" if none */
    char **rcpts;
    uint8_t *rcpt_notify;           /* [rcpt_cap] RCPT NOTIFY= bits (ENTRY_N_*) */
    char **rcpt_orcpt;              /* [rcpt_cap] RCPT ORCPT= (decoded) or NULL; owned */
    bool any_dsn;                   /* some RCPT gave NOTIFY or ORCPT */
    size_t nrcpt, rcpt_cap;
    struct smtp_data data;
    struct smtp_bdat bdat;
    enum session_state bdat_next;
    size_t hdr_off;                 /* where the client's message starts in content */
    struct buf content;
    uint64_t size_hint;             /* MAIL SIZE=, 0 if none */
    double received_at;
    /* hooks: what smtp_server_greeting asked for every message of the session */
    struct hook_effects fx;
    char hook_err[512];             /* the error of a refusing smtp_message_received */
    char rate_over[LIMITS_KEY_MAX + 1]; /* the limit_sending key a message went over */
    /* sign_dkim keys a hook asked for that are not in the cache yet: loaded on the
     * worker pool (dkim_work) while the session is paused, then the EHLO or the
     * message goes on (dkim_cont) */
    uv_work_t dkim_work;
    struct buf dkim_todo;           /* hook_effects.dkim_load lines */
    char dkim_err[512];
    int dkim_rc;
    enum { DKIM_CONT_HELO, DKIM_CONT_DATA } dkim_cont;
    int dkim_rounds;                /* loads for the current message (bounded) */
    bool dkim_esmtp;                /* DKIM_CONT_HELO: EHLO (not HELO) */
    char dkim_helo[SMTP_PATH_MAX + 1];
};

static void session_unref(struct smtp_session *s);
static void session_reply_flush(struct smtp_session *s);

static void enter_state(struct smtp_session *s, enum session_state st)
{
    if (s->state != st)
        log_debug("smtp %s: %s -> %s", s->client_ip, state_names[s->state], state_names[st]);
    s->state = st;
}

static void count_reply(const char *text)
{
    if (text[0] == '4' || text[0] == '5')
        metrics_inc(M_SMTP_ERRORS, METRICS_INBOUND, text[0] == '4' ? "4xx" : "5xx", 1);
}

static void reply(struct smtp_session *s, const char *text)
{
    count_reply(text);
    conn_send(&s->conn, text, strlen(text));
    conn_send(&s->conn, "\r\n", 2);
}

static void replyf(struct smtp_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void replyf(struct smtp_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t at = s->conn.out.len;
    buf_vappendf(&s->conn.out, fmt, ap);
    va_end(ap);
    if (s->conn.out.len > at)
        count_reply(s->conn.out.data + at);
    conn_send(&s->conn, "\r\n", 2);
}

static void log_simple(struct smtp_session *s, const char *type, const char *rcpt, int code,
                       const char *response, int64_t size)
{
    char q[SMTP_DOMAIN_MAX + 1] = "";
    const char *d = rcpt ? smtp_addr_domain(rcpt) : NULL;
    if (d)
        smtp_domain_lower(d, q, sizeof q);
    char tenant[HOOK_TENANT_MAX];
    if (s->fx.tenant[0])
        memcpy(tenant, s->fx.tenant, sizeof tenant);
    else
        hooks_default_tenant(s->l->tenant, NULL, 0, s->authed ? s->auth_user : NULL, tenant);
    struct log_record r = {
        .tenant = tenant[0] ? tenant : NULL,
        .type = type, .id = s->id[0] ? s->id : NULL, .sender = s->sender,
        .recipient = rcpt, .queue = d ? q : NULL, .peer_address = s->client_ip,
        .code = code, .response = response, .size = size,
        .delay = strcmp(type, LOG_RECEPTION) == 0 ? 0 : -1,
        .attempts = strcmp(type, LOG_RECEPTION) == 0 ? 0 : -1, .protocol = "smtp",
        .tls = conn_tls_describe(&s->conn),
    };
    log_event(&r);
}

static void txn_reset(struct smtp_session *s)
{
    for (size_t i = 0; i < s->nrcpt; i++) {
        free(s->rcpts[i]);
        free(s->rcpt_orcpt[i]);
    }
    s->nrcpt = 0;
    s->mail_flags = 0;
    s->envid[0] = 0;
    s->any_dsn = false;
    s->sender[0] = 0;
    s->id[0] = 0;
    s->smtputf8 = false;
    buf_free(&s->content); /* an idle session holds no message buffer */
    s->size_hint = 0;
}

static void session_close(struct smtp_session *s, bool graceful)
{
    if (s->closed)
        return;
    s->closed = true;
    enter_state(s, S_CLOSING);
    conn_close(&s->conn, graceful);
}

static void hangup(struct smtp_session *s, const char *text)
{
    reply(s, text);
    session_close(s, true);
}

static bool has_8bit(const char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    return false;
}

/* ---- command handlers -------------------------------------------------- */

static void auth_submit(struct smtp_session *s, bool start, const char *in, size_t len);
static void auth_result(struct smtp_session *s, int rc, const char *out);

/* A listener mechanism the users file can serve: CRAM-MD5 needs a {CRAM-MD5}
 * entry (a crypt(3) hash cannot answer a challenge), so without one it is
 * neither offered nor accepted; clients then pick PLAIN or LOGIN. */
static bool mech_usable(const struct smtp_session *s, const char *mech)
{
    return strcasecmp(mech, "CRAM-MD5") != 0 || users_has_cram(s->gen->users);
}

static bool auth_offered(const struct smtp_session *s)
{
    if (!s->gen->users || (!s->conn.tls && s->l->auth_require_tls))
        return false;
    for (int i = 0; i < s->l->n_auth_mechanisms; i++)
        if (mech_usable(s, s->l->auth_mechanisms[i]))
            return true;
    return false;
}

/* The client's address is in the listener's relay_hosts: such a client is
 * trusted by address, so AUTH failures never ban it (Postfix's
 * permit_mynetworks comes first). */
static bool in_relay_hosts(const struct smtp_session *s)
{
    return s->peer.ss_family &&
           cidr_match_any(s->l->relay_hosts, s->l->n_relay_hosts, (const struct sockaddr *)&s->peer);
}

static void dkim_load_start(struct smtp_session *s);
static void submit_message(struct smtp_session *s, bool greeting_limits);

/* Runs the smtp_server_greeting hooks; false (after replying) when one failed. */
static bool greeting_hooks(struct smtp_session *s, const char *ehlo)
{
    hook_effects_free(&s->fx);
    if (!hooks_any(s->L, "smtp_server_greeting"))
        return true;
    struct hook_meta m = {
        .client_ip = s->client_ip, .listener = s->l->name, .tenant = s->l->tenant,
        .auth_user = s->authed ? s->auth_user : NULL,
    };
    char err[512];
    if (hooks_run(s->L, "smtp_server_greeting", ehlo, &m, &s->fx, err, sizeof err) == PT_OK)
        return true;
    hook_effects_free(&s->fx);
    log_warn("smtp %s: smtp_server_greeting hook failed: %s", s->client_ip, err);
    reply(s, "451 4.3.0 Temporary local policy failure, try again later");
    return false;
}

static void helo_reply(struct smtp_session *s, const char *name, bool esmtp)
{
    snprintf(s->helo, sizeof s->helo, "%s", name);
    s->esmtp = esmtp;
    enter_state(s, S_READY);
    if (!s->esmtp) {
        replyf(s, "250 %s", s->l->hostname);
        return;
    }
    replyf(s, "250-%s", s->l->hostname);
    replyf(s, "250-SIZE %llu", (unsigned long long)s->l->max_message_size);
    reply(s, "250-PIPELINING");
    if (s->gen->listener_tls[s->li] && !s->conn.tls)
        reply(s, "250-STARTTLS");
    if (auth_offered(s)) {
        conn_send(&s->conn, "250-AUTH", 8);
        for (int i = 0; i < s->l->n_auth_mechanisms; i++)
            if (mech_usable(s, s->l->auth_mechanisms[i]))
                conn_sendf(&s->conn, " %s", s->l->auth_mechanisms[i]);
        conn_send(&s->conn, "\r\n", 2);
    }
    reply(s, "250-8BITMIME");
    reply(s, "250-ENHANCEDSTATUSCODES");
    reply(s, "250-CHUNKING");  /* RFC 3030 */
    reply(s, "250-BINARYMIME"); /* RFC 3030: content after BODY=BINARYMIME kept as sent */
    reply(s, "250-DSN");       /* RFC 3461 */
    if (s->conn.tls)
        reply(s, "250-REQUIRETLS"); /* RFC 8689: only offered inside TLS */
    /* RFC 9422: the real per-transaction limit (no limit on transactions) */
    replyf(s, "250-LIMITS RCPTMAX=%d", s->l->max_recipients);
    reply(s, "250 SMTPUTF8");
}

static void cmd_helo(struct smtp_session *s, const struct smtp_cmd *c)
{
    txn_reset(s);
    if (!greeting_hooks(s, c->path))
        return;
    if (s->fx.dkim_load.len) {
        /* sign_dkim keys to read first: off the loop, the reply comes after */
        snprintf(s->dkim_helo, sizeof s->dkim_helo, "%s", c->path);
        s->dkim_esmtp = c->verb == SMTP_VERB_EHLO;
        buf_reset(&s->dkim_todo);
        if (buf_append(&s->dkim_todo, s->fx.dkim_load.data, s->fx.dkim_load.len) != PT_OK) {
            hook_effects_free(&s->fx);
            reply(s, "451 4.3.0 Out of memory, try again later");
            return;
        }
        s->dkim_cont = DKIM_CONT_HELO;
        dkim_load_start(s);
        return;
    }
    helo_reply(s, c->path, c->verb == SMTP_VERB_EHLO);
}

static void cmd_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
    struct runtime *rt = s->w->rt;
    if (s->l->tls_required && !s->conn.tls) {
        reply(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if (c->size && c->size > s->l->max_message_size) {
        reply(s, "552 5.3.4 Message size exceeds fixed maximum message size");
        return;
    }
    if (has_8bit(c->path) && !c->smtputf8) {
        reply(s, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
        return;
    }
    if (c->requiretls && !s->conn.tls) {  /* RFC 8689 4.1: a TLS session only */
        reply(s, "530 5.7.10 REQUIRETLS needs a TLS session: issue STARTTLS first");
        return;
    }
    int room = accept_queue_state(s->gen->cfg, rt->sched, rt->spool);
    if (room == PT_ERROR) {
        reply(s, "452 4.3.1 Insufficient system storage: spool disk full, try again later");
        return;
    }
    if (room != PT_OK) {
        reply(s, "452 4.3.1 Insufficient system storage: queue is full, try again later");
        return;
    }
    snprintf(s->sender, sizeof s->sender, "%s", c->path);
    s->smtputf8 = c->smtputf8;
    s->size_hint = c->size;
    s->mail_flags = (uint8_t)((c->ret == SMTP_RET_FULL ? ENTRY_F_RET_FULL : 0) |
                              (c->ret == SMTP_RET_HDRS ? ENTRY_F_RET_HDRS : 0) |
                              (c->requiretls ? ENTRY_F_REQUIRETLS : 0) |
                              (c->body_binary ? ENTRY_F_BINARYMIME : 0));
    snprintf(s->envid, sizeof s->envid, "%s", c->envid);
    enter_state(s, S_MAIL);
    reply(s, "250 2.1.0 Ok");
}

static bool relay_allowed(struct smtp_session *s)
{
    return s->authed || in_relay_hosts(s);
}

_Static_assert((int)SMTP_NOTIFY_SUCCESS == (int)ENTRY_N_SUCCESS &&
               (int)SMTP_NOTIFY_FAILURE == (int)ENTRY_N_FAILURE &&
               (int)SMTP_NOTIFY_DELAY == (int)ENTRY_N_DELAY &&
               (int)SMTP_NOTIFY_NEVER == (int)ENTRY_N_NEVER,
               "RCPT NOTIFY bits are stored in the entry as they are");

/* Doubles the recipient arrays (address, NOTIFY, ORCPT). PT_OK or PT_NOMEM
 * (nothing changed but what already grew, which stays valid). */
static int rcpts_grow(struct smtp_session *s)
{
    size_t cap = s->rcpt_cap ? s->rcpt_cap * 2 : SMTP_RCPT_INIT;
    char **p = realloc(s->rcpts, cap * sizeof *p);
    if (!p)
        return PT_NOMEM;
    s->rcpts = p;
    char **o = realloc(s->rcpt_orcpt, cap * sizeof *o);
    if (!o)
        return PT_NOMEM;
    s->rcpt_orcpt = o;
    uint8_t *n = realloc(s->rcpt_notify, cap);
    if (!n)
        return PT_NOMEM;
    s->rcpt_notify = n;
    s->rcpt_cap = cap;
    return PT_OK;
}

static void cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c)
{
    const struct config *cfg = s->gen->cfg;
    if (s->nrcpt >= (size_t)s->l->max_recipients) {
        reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    if (has_8bit(c->path) && !s->smtputf8) {
        reply(s, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
        return;
    }
    const char *refusal;
    int code;
    int verdict = accept_recipient(cfg, c->path, &refusal, &code);
    if (verdict == PT_NOTFOUND) {
        reply(s, refusal);
        log_simple(s, LOG_REJECTION, c->path, code, "Recipient address must include a domain", -1);
        return;
    }
    if (!relay_allowed(s)) {    /* before the routes: an outsider learns nothing of them */
        reply(s, "554 5.7.1 Relay access denied");
        log_simple(s, LOG_REJECTION, c->path, 554, "Relay access denied", -1);
        return;
    }
    if (verdict != PT_OK) {
        reply(s, refusal);
        log_simple(s, LOG_REJECTION, c->path, code, refusal, -1);
        return;
    }
    if (s->nrcpt == s->rcpt_cap && rcpts_grow(s) != PT_OK) {
        reply(s, "452 4.3.0 Out of memory, try again later");
        return;
    }
    char *a = strdup(c->path);
    char *o = c->orcpt[0] ? strdup(c->orcpt) : NULL;
    if (!a || (c->orcpt[0] && !o)) {
        free(a);
        free(o);
        reply(s, "452 4.3.0 Out of memory, try again later");
        return;
    }
    s->rcpt_notify[s->nrcpt] = c->notify;
    s->rcpt_orcpt[s->nrcpt] = o;
    s->any_dsn |= c->notify || o;
    s->rcpts[s->nrcpt++] = a;
    enter_state(s, S_RCPT);
    reply(s, "250 2.1.5 Ok");
}

static void add_received(struct smtp_session *s)
{
    char date[48];
    time_rfc5322(s->received_at, date, sizeof date);
    struct buf *b = &s->content;
    if (s->l->hide_received)
        buf_appendf(b, "Received: from %s\r\n", s->helo[0] ? s->helo : "unknown");
    else
        buf_appendf(b, "Received: from %s ([%s])\r\n", s->helo[0] ? s->helo : "unknown",
                    s->client_ip);
    /* RFC 3848 / RFC 6531 §3.7.3: S = TLS, A = authenticated; HELO is plain SMTP */
    char proto[16];
    snprintf(proto, sizeof proto, "%s%s%s",
             s->smtputf8 ? "UTF8SMTP" : s->esmtp ? "ESMTP" : "SMTP",
             s->esmtp && s->conn.tls ? "S" : "", s->esmtp && s->authed ? "A" : "");
    buf_appendf(b, "\tby %s (petrel) with %s id %s%s%s%s;\r\n\t%s\r\n", s->l->hostname,
                proto, s->id,
                s->nrcpt == 1 ? "\r\n\tfor <" : "", s->nrcpt == 1 ? s->rcpts[0] : "",
                s->nrcpt == 1 ? ">" : "", date);
}

/* The message of this transaction starts (DATA, or the first BDAT): its id, the
 * buffer sized once and our Received: header first. */
static void message_start(struct smtp_session *s)
{
    entry_new_id(s->id);
    s->received_at = time_now();
    buf_reset(&s->content);
    /* size the buffer once: growing it by doubling copies the message ~twice */
    uint64_t want = s->size_hint ? s->size_hint + 1024 : 64 * 1024;
    if (want > s->l->max_message_size + 1024)
        want = s->l->max_message_size + 1024;
    buf_reserve(&s->content, (size_t)want);
    add_received(s);
    s->hdr_off = s->content.len;
}

static void cmd_data(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->mail_flags & ENTRY_F_BINARYMIME) {  /* RFC 3030 §3: BDAT only */
        reply(s, "503 5.5.1 Error: BODY=BINARYMIME content must be sent with BDAT");
        return;
    }
    if (s->nrcpt == 0) {
        reply(s, "554 5.5.1 No valid recipients");
        return;
    }
    message_start(s);
    smtp_data_init(&s->data, s->l->max_message_size);
    enter_state(s, S_DATA);
    conn_set_timeout(&s->conn, s->l->data_timeout);
    reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

/* Logs a Rejection per recipient of the transaction (the message was refused). */
static void log_rejected(struct smtp_session *s, int code, const char *why, int64_t size)
{
    for (size_t i = 0; i < s->nrcpt; i++)
        log_simple(s, LOG_REJECTION, s->rcpts[i], code, why, size);
}

/* BDAT n [LAST] (RFC 3030). Every BDAT that has a readable size owns its n octets,
 * refused or not: they are read (or dropped) before the next command, so chunk
 * data can never be taken for commands. The reply to an accepted chunk follows its
 * octets; the reply to LAST is the durable 250 of end_of_data, as for DATA. */
static void cmd_bdat(struct smtp_session *s, const struct smtp_cmd *c)
{
    uint64_t size;
    bool last;
    const char *refuse = NULL;
    if (smtp_bdat_args(c->arg, c->arg_len, &size, &last) != PT_OK) {
        /* without a size the octets that follow cannot be told from commands */
        s->errors++;
        hangup(s, "501 5.5.4 Syntax: BDAT chunk-size [LAST]; closing connection");
        return;
    }
    if (s->state == S_GREETING)
        refuse = "503 5.5.1 Error: send HELO/EHLO first";
    else if (!s->esmtp)
        refuse = "503 5.5.1 Error: BDAT needs EHLO";
    else if (s->state == S_READY)
        refuse = "503 5.5.1 Error: need MAIL command";
    else if (s->state == S_MAIL)
        refuse = "503 5.5.1 Error: need RCPT command";
    if (refuse) {
        s->errors++;
        reply(s, refuse);
        s->bdat_next = s->state;
        smtp_bdat_chunk(&s->bdat, size, last, true);
        enter_state(s, S_CHUNK);
        return;
    }
    if (s->state == S_RCPT) {
        message_start(s);
        smtp_bdat_init(&s->bdat);
        s->bdat.raw = (s->mail_flags & ENTRY_F_BINARYMIME) != 0;
    }
    uint64_t max = s->l->max_message_size;
    if (size > max || s->bdat.total > max - size) {
        /* refused before buffering; the transaction is over (RFC 3030 §4) */
        const char *why = "552 5.3.4 Message size exceeds fixed maximum message size";
        reply(s, why);
        log_rejected(s, 552, why + 4, -1);
        txn_reset(s);
        s->bdat_next = S_READY;
        smtp_bdat_chunk(&s->bdat, size, last, true);
        enter_state(s, S_CHUNK);
        return;
    }
    s->bdat_next = S_BDAT;
    smtp_bdat_chunk(&s->bdat, size, last, false);
    enter_state(s, S_CHUNK);
}

/* The octets of the current chunk are all in. */
static void end_of_data(struct smtp_session *s);
static void chunk_done(struct smtp_session *s)
{
    struct smtp_bdat *b = &s->bdat;
    if (b->discard) {
        enter_state(s, s->bdat_next);
        return;
    }
    if (b->nomem) {
        hangup(s, "451 4.3.0 Out of memory, try again later");
        return;
    }
    if (!b->last) {
        enter_state(s, S_BDAT);
        replyf(s, "250 2.0.0 %llu octets received", (unsigned long long)b->total);
        return;
    }
    smtp_bdat_finish(b, &s->content);
    if (b->nomem) {
        hangup(s, "451 4.3.0 Out of memory, try again later");
        return;
    }
    /* the end of the message is shared with DATA: same checks, same durable 250 */
    smtp_data_init(&s->data, s->l->max_message_size);
    s->data.size = b->total;
    s->data.line_too_long = b->line_too_long;
    s->data.bare_lf = b->bare_lf;
    s->data.has_nul = b->has_nul;
    end_of_data(s);
}

static void cmd_rset(struct smtp_session *s, const struct smtp_cmd *c)
{
    txn_reset(s);
    if (s->state != S_GREETING)
        enter_state(s, S_READY);
    reply(s, "250 2.0.0 Ok");
}

static void cmd_noop(struct smtp_session *s, const struct smtp_cmd *c)
{
    reply(s, "250 2.0.0 Ok");
}

static void cmd_quit(struct smtp_session *s, const struct smtp_cmd *c)
{
    replyf(s, "221 2.0.0 %s closing connection", s->l->hostname);
    session_close(s, true);
}

static void cmd_vrfy(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (c->arg_len == 0) {
        reply(s, "501 5.5.4 Syntax: VRFY address");
        return;
    }
    reply(s, "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct smtp_session *s, const struct smtp_cmd *c)
{
    reply(s, "214 2.0.0 See https://www.rfc-editor.org/rfc/rfc5321");
}

static void cmd_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
    struct tls_ctx *ctx = s->gen->listener_tls[s->li];
    if (!ctx) {
        reply(s, "502 5.5.1 STARTTLS not available");
        return;
    }
    if (s->conn.tls) {
        reply(s, "503 5.5.1 TLS already active");
        return;
    }
    if (c->arg_len) {
        reply(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    reply(s, "220 2.0.0 Ready to start TLS");
    /* RFC 3207 4.2: forget everything learnt in clear. conn_start_tls drops any
     * input pipelined behind STARTTLS (CVE-2011-0411). */
    txn_reset(s);
    s->helo[0] = 0;
    s->esmtp = false;
    s->authed = false;
    enter_state(s, S_GREETING);
    if (conn_start_tls(&s->conn, ctx, true, NULL, NULL) != PT_OK)
        hangup(s, "454 4.7.0 TLS not available due to temporary reason");
}

/* reply: what we answered. One AuthFailure record per failed AUTH (DESIGN §11),
 * relay_hosts clients included: fail2ban decides for itself. */
static void auth_failed(struct smtp_session *s, const char *reply_text)
{
    struct runtime *rt = s->w->rt;
    metrics_inc(M_AUTH_FAILURES, NULL, NULL, 1);
    const char *user = sasl_tried_user(&s->sasl);
    struct log_record r = {
        .type = LOG_AUTH_FAILURE, .peer_address = s->client_ip, .code = 535,
        .response = reply_text, .size = -1, .delay = -1, .attempts = -1, .protocol = "smtp",
        .tls = conn_tls_describe(&s->conn), .user = user && *user ? user : NULL,
    };
    log_event(&r);
    if (in_relay_hosts(s))
        return;
    s->auth_failures++;
    if (authban_failure(rt->ban, s->client_ip, time_now())) {
        char text[160];
        snprintf(text, sizeof text, "too many AUTH failures: %s banned for %.0f s", s->client_ip,
                 s->gen->cfg->auth_ban_time);
        log_warn("smtp %s: %s", s->client_ip, text);
        log_simple(s, LOG_REJECTION, NULL, 421, text, -1);
        hangup(s, "421 4.7.0 Too many authentication failures; try again later");
    }
}

static void auth_result(struct smtp_session *s, int rc, const char *out)
{
    switch (rc) {
    case PT_AGAIN:
        replyf(s, "334 %s", out);
        enter_state(s, S_AUTH);
        s->lines.max = SMTP_AUTH_LINE_MAX;
        return;
    case PT_OK:
        s->authed = true;
        snprintf(s->auth_user, sizeof s->auth_user, "%s", sasl_user(&s->sasl));
        log_info("smtp %s: authenticated as %s", s->client_ip, s->auth_user);
        /* A failure followed by a success (smtplib tries CRAM-MD5, then PLAIN) is
         * a healthy client, not a guess: take the session's failures back. */
        authban_forgive(s->w->rt->ban, s->client_ip, s->auth_failures, time_now());
        s->auth_failures = 0;
        reply(s, "235 2.7.0 Authentication successful");
        break;
    case PT_ERROR:
        reply(s, "535 5.7.8 Authentication credentials invalid");
        auth_failed(s, "535 5.7.8 Authentication credentials invalid");
        break;
    case PT_NOTFOUND:
        reply(s, "504 5.5.4 Unrecognized authentication type");
        break;
    case PT_NOMEM:
        reply(s, "454 4.7.0 Temporary authentication failure");
        break;
    default:
        reply(s, sasl_was_cancelled(&s->sasl) ? "501 5.0.0 Authentication cancelled"
                                               : "501 5.5.2 Malformed authentication data");
        break;
    }
    s->lines.max = SMTP_LINE_MAX;
    sasl_reset(&s->sasl);
    if (s->state == S_AUTH)
        enter_state(s, S_READY);
}

static void auth_work(uv_work_t *req)
{
    struct smtp_session *s = req->data;
    if (s->auth_start)
        s->auth_rc = sasl_start(&s->sasl, s->auth_mech, s->auth_in, s->auth_allowed,
                                s->auth_out, sizeof s->auth_out);
    else
        s->auth_rc = sasl_step(&s->sasl, s->auth_in, s->auth_in_len, s->auth_out,
                               sizeof s->auth_out);
}

static void auth_after_work(uv_work_t *req, int status)
{
    struct smtp_session *s = req->data;
    if (s->auth_in) {
        explicit_bzero(s->auth_in, s->auth_in_len);
        free(s->auth_in);
        s->auth_in = NULL;
    }
    if (!s->closed) {
        auth_result(s, status == 0 ? s->auth_rc : PT_NOMEM, s->auth_out);
        explicit_bzero(s->auth_out, sizeof s->auth_out);
        conn_flush(&s->conn);
        if (!s->closed)
            conn_pause(&s->conn, false); /* input that arrived meanwhile */
    }
    session_unref(s);
}

/* Runs one SASL step off the loop; the session is paused (and kept alive) until
 * auth_after_work replies. */
static void auth_submit(struct smtp_session *s, bool start, const char *in, size_t len)
{
    s->auth_start = start;
    s->auth_in = NULL;
    s->auth_in_len = len;
    if (in) {
        s->auth_in = malloc(len + 1);
        if (!s->auth_in) {
            auth_result(s, PT_NOMEM, "");
            return;
        }
        memcpy(s->auth_in, in, len);
        s->auth_in[len] = 0;
    }
    s->auth_work.data = s;
    s->refs++;
    if (uv_queue_work(&s->w->loop, &s->auth_work, auth_work, auth_after_work) != 0) {
        s->refs--;
        free(s->auth_in);
        s->auth_in = NULL;
        auth_result(s, PT_NOMEM, "");
        return;
    }
    conn_pause(&s->conn, true);
}

static void cmd_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->l->n_auth_mechanisms == 0 || !s->gen->users) {
        reply(s, "502 5.5.1 AUTH not available");
        return;
    }
    if (s->authed) {
        reply(s, "503 5.5.1 Already authenticated");
        return;
    }
    if (!s->conn.tls && s->l->auth_require_tls) {
        reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
        return;
    }
    char mech[32], initial[SASL_LINE_MAX + 1];
    size_t i = 0, n = c->arg_len;
    while (i < n && c->arg[i] != ' ' && i < sizeof mech - 1) {
        mech[i] = c->arg[i];
        i++;
    }
    mech[i] = 0;
    if (i == 0 || (i < n && c->arg[i] != ' ')) {
        reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        return;
    }
    while (i < n && c->arg[i] == ' ')
        i++;
    bool has_initial = i < n;
    if (n - i > SASL_LINE_MAX) {
        reply(s, "501 5.5.2 Malformed authentication data");
        return;
    }
    memcpy(initial, c->arg + i, n - i);
    initial[n - i] = 0;
    char allowed[256] = "";
    for (int k = 0; k < s->l->n_auth_mechanisms; k++) {
        if (!mech_usable(s, s->l->auth_mechanisms[k]))
            continue;
        strncat(allowed, s->l->auth_mechanisms[k], sizeof allowed - strlen(allowed) - 2);
        strcat(allowed, " ");
    }
    sasl_init(&s->sasl, s->gen->users, s->l->hostname);
    snprintf(s->auth_mech, sizeof s->auth_mech, "%s", mech);
    snprintf(s->auth_allowed, sizeof s->auth_allowed, "%s", allowed);
    auth_submit(s, true, has_initial ? initial : NULL, n - i);
}

static void auth_line(struct smtp_session *s, const char *line, size_t len)
{
    auth_submit(s, false, line, len);
}

static void cmd_not_impl(struct smtp_session *s, const struct smtp_cmd *c)
{
    reply(s, "502 5.5.1 Command not implemented");
}

static void cmd_unknown(struct smtp_session *s, const struct smtp_cmd *c)
{
    s->errors++;
    reply(s, "500 5.5.2 Command not recognized");
}

#define ST(x) (1u << (x))
#define ANY_STATE (ST(S_GREETING) | ST(S_READY) | ST(S_MAIL) | ST(S_RCPT) | ST(S_BDAT))

static const struct {
    unsigned states;
    void (*handler)(struct smtp_session *, const struct smtp_cmd *);
    const char *wrong_state;
} commands[SMTP_VERB__COUNT] = {
    [SMTP_VERB_UNKNOWN] = { ANY_STATE, cmd_unknown, NULL },
    [SMTP_VERB_HELO] = { ANY_STATE, cmd_helo, NULL },
    [SMTP_VERB_EHLO] = { ANY_STATE, cmd_helo, NULL },
    [SMTP_VERB_MAIL] = { ST(S_READY), cmd_mail, NULL },
    [SMTP_VERB_RCPT] = { ST(S_MAIL) | ST(S_RCPT), cmd_rcpt, "503 5.5.1 Error: need MAIL command" },
    [SMTP_VERB_DATA] = { ST(S_MAIL) | ST(S_RCPT), cmd_data, "503 5.5.1 Error: need RCPT command" },
    [SMTP_VERB_RSET] = { ANY_STATE, cmd_rset, NULL },
    [SMTP_VERB_NOOP] = { ANY_STATE, cmd_noop, NULL },
    [SMTP_VERB_QUIT] = { ANY_STATE, cmd_quit, NULL },
    [SMTP_VERB_VRFY] = { ANY_STATE, cmd_vrfy, NULL },
    [SMTP_VERB_EXPN] = { ANY_STATE, cmd_not_impl, NULL },
    [SMTP_VERB_HELP] = { ANY_STATE, cmd_help, NULL },
    [SMTP_VERB_STARTTLS] = { ST(S_READY), cmd_starttls, NULL },
    [SMTP_VERB_AUTH] = { ST(S_READY), cmd_auth, NULL },
    [SMTP_VERB_BDAT] = { ANY_STATE, cmd_bdat, NULL }, /* checks the state itself */
};

static void dispatch(struct smtp_session *s, const char *line, size_t len)
{
    struct smtp_cmd c;
    int rc = smtp_cmd_parse(line, len, &c);
    if (rc != PT_OK) {
        s->errors++;
        reply(s, c.error ? c.error : "500 5.5.2 Syntax error");
        return;
    }
    if (!(commands[c.verb].states & ST(s->state))) {
        s->errors++;
        if (s->state == S_BDAT)
            reply(s, "503 5.5.1 Error: BDAT message in progress (send BDAT or RSET)");
        else if (commands[c.verb].wrong_state)
            reply(s, commands[c.verb].wrong_state);
        else if (s->state == S_GREETING)
            reply(s, "503 5.5.1 Error: send HELO/EHLO first");
        else if (c.verb == SMTP_VERB_MAIL)
            reply(s, "503 5.5.1 Error: nested MAIL command");
        else
            reply(s, "503 5.5.1 Bad sequence of commands");
        return;
    }
    commands[c.verb].handler(s, &c);
}

/* ---- DATA completion --------------------------------------------------- */

static void on_ingested(void *arg, int status)
{
    struct smtp_session *s = arg;
    /* spool thread: hand the result to the session's own loop */
    mbox_send(&s->w->mbox, WMSG_SPOOLED, s, 0, status);
}

/* ingest policy: the session's greeting effects, then the smtp_message_received
 * hooks for this entry's destination domain. */
static int message_policy(void *arg, struct entry *e)
{
    struct smtp_session *s = arg;
    struct hook_effects fx;
    hook_effects_init(&fx);
    int rc = hook_effects_copy(&fx, &s->fx);
    const char **addrs = NULL;
    const char *user = s->authed ? s->auth_user : NULL;
    char tenant[HOOK_TENANT_MAX];
    if (s->fx.tenant[0])
        memcpy(tenant, s->fx.tenant, sizeof tenant);
    else
        hooks_default_tenant(s->l->tenant, s->content.data, s->content.len, user, tenant);
    if (!fx.tenant_set)
        memcpy(fx.tenant, tenant, sizeof fx.tenant);   /* meta.tenant when no hook runs */
    if (rc == PT_OK && hooks_any(s->L, "smtp_message_received") &&
        !(addrs = calloc(e->nrcpt, sizeof *addrs)))
        rc = PT_NOMEM;
    if (rc == PT_OK && addrs) {
        for (uint32_t i = 0; i < e->nrcpt; i++)
            addrs[i] = e->rcpts[i].addr;
        struct hook_meta m = {
            .client_ip = s->client_ip, .listener = s->l->name, .tenant = tenant,
            .auth_user = user, .id = s->id, .sender = s->sender,
            .rcpts = addrs, .nrcpt = e->nrcpt,
            .content = s->content.data, .content_len = s->content.len,
        };
        if (hooks_run(s->L, "smtp_message_received", e->domain, &m, &fx, s->hook_err,
                      sizeof s->hook_err) != PT_OK)
            rc = PT_INVALID;
    }
    /* sign_dkim keys not in the cache: nothing is queued now; end_of_data loads
     * them off the loop and submits the message again */
    if (rc == PT_OK && fx.dkim_load.len) {
        rc = buf_append(&s->dkim_todo, fx.dkim_load.data, fx.dkim_load.len);
        if (rc == PT_OK)
            rc = PT_AGAIN;
    }
    /* limits the message hooks added (the greeting's were counted once already) */
    if (rc == PT_OK && fx.limits.len > s->fx.limits.len &&
        limits_take_all(limits_shared(), fx.limits.data + s->fx.limits.len,
                        fx.limits.len - s->fx.limits.len, (double)time_mono_ms() / 1000.0,
                        s->rate_over, sizeof s->rate_over) != PT_OK)
        rc = PT_TOOLONG;
    if (rc == PT_OK)
        rc = hook_effects_apply(&fx, e);
    if (rc == PT_OK)
        rc = egress_assign(s->gen->cfg, e, fx.egress_pool);
    free(addrs);
    hook_effects_free(&fx);
    return rc;
}

/* configure_header_checks on the client's header (below our Received:). false
 * when the message is refused or discarded (replied and logged). */
static bool header_checks(struct smtp_session *s)
{
    const struct header_checks *hc = s->gen->cfg->header_checks_set;
    if (!hc)
        return true;
    struct buf out;
    buf_init(&out, 0);
    struct header_checks_result res;
    int rc = buf_reserve(&out, s->content.len + 1024);
    if (rc == PT_OK)
        rc = buf_append(&out, s->content.data, s->hdr_off);
    if (rc == PT_OK)
        rc = header_checks_apply(hc, s->content.data + s->hdr_off,
                                 s->content.len - s->hdr_off, &out, &res);
    if (rc != PT_OK) {
        buf_free(&out);
        reply(s, "451 4.3.0 Out of memory, try again later");
        return false;
    }
    if (res.warnings)
        log_warn("smtp %s: header_checks: WARN %s (id %s, %zu warning(s))", s->client_ip,
                 res.warning, s->id, res.warnings);
    if (res.verdict == HEADER_CHECKS_REJECT) {
        buf_free(&out);
        replyf(s, "550 %s", res.text);
        log_info("smtp %s: header_checks rule %zu rejected id %s: %s", s->client_ip,
                 res.rule + 1, s->id, res.text);
        for (size_t i = 0; i < s->nrcpt; i++)
            log_simple(s, LOG_REJECTION, s->rcpts[i], 550, res.text, (int64_t)s->content.len);
        return false;
    }
    if (res.verdict == HEADER_CHECKS_DISCARD) {
        /* Postfix DISCARD: the client is told it was taken; nothing is queued */
        buf_free(&out);
        log_info("smtp %s: header_checks rule %zu discarded id %s: %s", s->client_ip,
                 res.rule + 1, s->id, res.text);
        replyf(s, "250 2.0.0 Ok: discarded as %s", s->id);
        return false;
    }
    if (res.changed) {
        buf_free(&s->content);
        s->content = out;
    } else {
        buf_free(&out);
    }
    return true;
}

/* A limit_sending limit refused the message (s->rate_over names its key). */
static void rate_limited(struct smtp_session *s)
{
    const char *why = "451 4.7.0 Sending rate limit exceeded, try again later";
    log_info("smtp %s: limit_sending: key '%s' is over its limit; message %s deferred to the "
             "client", s->client_ip, s->rate_over, s->id);
    reply(s, why);
    for (size_t i = 0; i < s->nrcpt; i++)
        log_simple(s, LOG_REJECTION, s->rcpts[i], 451, why + 4, (int64_t)s->content.len);
    txn_reset(s);
    enter_state(s, S_READY);
}

/* Postfix's always_add_missing_headers: a Date: and a Message-ID: <id@hostname>
 * (the message id) when the client's header has none; large receivers refuse mail
 * without a Message-ID. They go right after our Received: header. */
static int add_missing_headers(struct smtp_session *s)
{
    const char *msg = s->content.data ? s->content.data + s->hdr_off : "";
    size_t len = s->content.len - s->hdr_off, pos = 0;
    bool has_date = false, has_mid = false;
    struct hdr_field f;
    while (hdr_next(msg, len, &pos, &f)) {
        has_date = has_date || (f.name_len == 4 && strncasecmp(f.name, "Date", 4) == 0);
        has_mid = has_mid || (f.name_len == 10 && strncasecmp(f.name, "Message-ID", 10) == 0);
    }
    if (has_date && has_mid)
        return PT_OK;
    char add[300], date[48];
    int n = 0;
    if (!has_date) {
        time_rfc5322(s->received_at, date, sizeof date);
        n += snprintf(add + n, sizeof add - (size_t)n, "Date: %s\r\n", date);
    }
    if (!has_mid)
        n += snprintf(add + n, sizeof add - (size_t)n, "Message-ID: <%s@%s>\r\n", s->id,
                      s->l->hostname);
    if (n <= 0 || (size_t)n >= sizeof add)
        return PT_INVALID; /* a hostname too long for a header line: leave it */
    if (buf_reserve(&s->content, (size_t)n) != PT_OK)
        return PT_NOMEM;
    char *at = s->content.data + s->hdr_off;
    memmove(at + n, at, s->content.len - s->hdr_off);
    memcpy(at, add, (size_t)n);
    s->content.len += (size_t)n;
    return PT_OK;
}

/* RFC 8689 5: a "TLS-Required: No" header field asks that the route's TLS policy
 * be relaxed for this message; REQUIRETLS on MAIL overrides it (RFC 8689 4.1). */
static uint8_t tls_optional_flag(const struct smtp_session *s)
{
    if (s->mail_flags & ENTRY_F_REQUIRETLS)
        return 0;
    const char *msg = s->content.data ? s->content.data + s->hdr_off : "";
    size_t len = s->content.len - s->hdr_off, pos = 0;
    struct hdr_field f;
    while (hdr_next(msg, len, &pos, &f)) {
        if (f.name_len != 12 || strncasecmp(f.name, "TLS-Required", 12) != 0)
            continue;
        const char *v = f.value, *end = f.value + f.value_len;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
            v++;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' ||
                           end[-1] == '\n'))
            end--;
        if (end - v == 2 && strncasecmp(v, "No", 2) == 0)
            return ENTRY_F_TLS_OPTIONAL;
    }
    return 0;
}

static void end_of_data(struct smtp_session *s)
{
    const char *why = NULL;
    int code = 0;
    if (s->data.too_big) {
        why = "552 5.3.4 Message size exceeds fixed maximum message size";
        code = 552;
    } else if (s->data.line_too_long) {
        why = "554 5.6.0 Message contains a line longer than 998 octets (RFC 5322 2.1.1)";
        code = 554;
    }
    if (why) {
        reply(s, why);
        for (size_t i = 0; i < s->nrcpt; i++)
            log_simple(s, LOG_REJECTION, s->rcpts[i], code, why + 4, (int64_t)s->data.size);
        txn_reset(s);
        enter_state(s, S_READY);
        return;
    }
    if (!header_checks(s)) {
        txn_reset(s);
        enter_state(s, S_READY);
        return;
    }
    if (add_missing_headers(s) == PT_NOMEM) {
        reply(s, "451 4.3.0 Out of memory, try again later");
        txn_reset(s);
        enter_state(s, S_READY);
        return;
    }
    s->dkim_rounds = 0;
    submit_message(s, true);
}

/* end_of_data, from the message's ingest on: the first time with the greeting's
 * limit_sending (greeting_limits), again without after sign_dkim keys were loaded. */
static void submit_message(struct smtp_session *s, bool greeting_limits)
{
    const char *why;
    struct ingest_msg m = {
        .sender = s->sender, .rcpts = (const char *const *)s->rcpts, .nrcpt = s->nrcpt,
        .content = s->content.data, .content_len = s->content.len,
        .protocol = PROTO_SMTP, .priority = PRIO_NORMAL, .received_at = s->received_at,
        .peer_address = s->client_ip, .tls = conn_tls_describe(&s->conn), .log_reception = true,
        .flags = s->mail_flags | tls_optional_flag(s), .envid = s->envid[0] ? s->envid : NULL,
        .notify = s->any_dsn ? s->rcpt_notify : NULL,
        .orcpt = s->any_dsn ? (const char *const *)s->rcpt_orcpt : NULL,
    };
    m.policy = message_policy;   /* at least the tenant (DESIGN §4) */
    m.policy_arg = s;
    memcpy(m.id, s->id, sizeof m.id);
    s->hook_err[0] = 0;
    s->rate_over[0] = 0;
    buf_reset(&s->dkim_todo);
    /* limit_sending of smtp_server_greeting: once per message of the session */
    if (greeting_limits && s->fx.limits.len &&
        limits_take_all(limits_shared(), s->fx.limits.data, s->fx.limits.len,
                        (double)time_mono_ms() / 1000.0, s->rate_over,
                        sizeof s->rate_over) != PT_OK) {
        rate_limited(s);
        return;
    }
    s->refs++;
    if (ingest_submit(s->w->rt, &m, on_ingested, s) != PT_OK) {
        s->refs--;
        if (s->rate_over[0]) {
            rate_limited(s);
            return;
        }
        if (s->dkim_todo.len && !s->hook_err[0] && ++s->dkim_rounds <= 4) {
            s->dkim_cont = DKIM_CONT_DATA;
            enter_state(s, S_QUEUEING);   /* input waits, as for the spool */
            dkim_load_start(s);
            return;
        }
        if (s->dkim_todo.len && !s->hook_err[0])   /* keys keep changing under us */
            snprintf(s->hook_err, sizeof s->hook_err, "sign_dkim: keys still not loaded "
                     "after %d attempts", s->dkim_rounds - 1);
        if (s->hook_err[0]) {
            log_warn("smtp %s: smtp_message_received hook failed: %s", s->client_ip, s->hook_err);
            why = "451 4.3.0 Temporary local policy failure, try again later";
            reply(s, why);
            for (size_t i = 0; i < s->nrcpt; i++)
                log_simple(s, LOG_REJECTION, s->rcpts[i], 451, why + 4, (int64_t)s->content.len);
        } else {
            reply(s, "451 4.3.0 Temporary failure writing the queue, try again later");
        }
        txn_reset(s);
        enter_state(s, S_READY);
        return;
    }
    enter_state(s, S_QUEUEING);
    conn_pause(&s->conn, true);
    conn_set_timeout(&s->conn, 0);
}

/* The worker pool side: reads and parses the key files (dkim_key_cache_get). */
static void dkim_work(uv_work_t *req)
{
    struct smtp_session *s = req->data;
    s->dkim_err[0] = 0;
    s->dkim_rc = hooks_load_dkim_keys(s->dkim_todo.data, s->dkim_err, sizeof s->dkim_err);
}

static void dkim_finish(struct smtp_session *s, int rc)
{
    conn_set_timeout(&s->conn, s->l->command_timeout);
    if (s->dkim_cont == DKIM_CONT_HELO) {
        if (rc == PT_OK) {
            buf_reset(&s->fx.dkim_load);
            helo_reply(s, s->dkim_helo, s->dkim_esmtp);
        } else {
            hook_effects_free(&s->fx);
            log_warn("smtp %s: smtp_server_greeting hook failed: %s", s->client_ip,
                     s->dkim_err[0] ? s->dkim_err : "sign_dkim: out of memory");
            reply(s, "451 4.3.0 Temporary local policy failure, try again later");
        }
    } else if (rc == PT_OK) {
        enter_state(s, S_DATA);   /* not S_QUEUEING: that is what a new wait sets */
        submit_message(s, false);
        if (s->state == S_QUEUEING)
            return;               /* waiting again (spool or more keys), still paused */
    } else {
        const char *why = "451 4.3.0 Temporary local policy failure, try again later";
        log_warn("smtp %s: smtp_message_received hook failed: %s", s->client_ip,
                 s->dkim_err[0] ? s->dkim_err : "sign_dkim: out of memory");
        reply(s, why);
        for (size_t i = 0; i < s->nrcpt; i++)
            log_simple(s, LOG_REJECTION, s->rcpts[i], 451, why + 4, (int64_t)s->content.len);
        txn_reset(s);
        enter_state(s, S_READY);
    }
    if (s->closed)
        return;
    if (s->w->stopping) {
        hangup(s, "421 4.3.2 Service shutting down");
    } else {
        session_reply_flush(s);
        conn_pause(&s->conn, false); /* processes pipelined input, if any */
    }
    session_reply_flush(s);
}

static void dkim_after_work(uv_work_t *req, int status)
{
    struct smtp_session *s = req->data;
    if (!s->closed)   /* a client that left meanwhile: nothing to answer */
        dkim_finish(s, status == 0 ? s->dkim_rc : PT_NOMEM);
    session_unref(s);
}

/* Loads s->dkim_todo off the loop; the session is paused (and kept alive) until
 * dkim_after_work goes on with s->dkim_cont. */
static void dkim_load_start(struct smtp_session *s)
{
    s->dkim_err[0] = 0;
    s->dkim_work.data = s;
    s->refs++;
    if (uv_queue_work(&s->w->loop, &s->dkim_work, dkim_work, dkim_after_work) != 0) {
        s->refs--;
        snprintf(s->dkim_err, sizeof s->dkim_err, "sign_dkim: cannot queue the key load");
        dkim_finish(s, PT_ERROR);
        return;
    }
    conn_pause(&s->conn, true);
    conn_set_timeout(&s->conn, 0);
}

void smtp_server_on_spooled(struct worker *w, struct mbox_msg *msg)
{
    struct smtp_session *s = msg->ptr;
    int status = msg->status;
    if (!s->closed) {
        if (status == PT_OK) {
            char resp[64];
            snprintf(resp, sizeof resp, "250 2.0.0 Ok: queued as %s", s->id);
            reply(s, resp); /* Reception records were written by ingest */
            metrics_inc(M_RECEIVED, s->l->name, NULL, 1);
        } else {
            reply(s, "451 4.3.0 Temporary failure writing the queue, try again later");
        }
        txn_reset(s);
        enter_state(s, S_READY);
        conn_set_timeout(&s->conn, s->l->command_timeout);
        if (w->stopping) {
            hangup(s, "421 4.3.2 Service shutting down");
        } else {
            session_reply_flush(s);
            conn_pause(&s->conn, false); /* processes pipelined input, if any */
        }
        session_reply_flush(s);
    }
    session_unref(s);
}

/* ---- input ------------------------------------------------------------- */

static void session_reply_flush(struct smtp_session *s)
{
    conn_flush(&s->conn);
}

static bool proxy_input(struct smtp_session *s);

static void on_data(struct conn *c)
{
    struct smtp_session *s = c->owner;
    if (s->state == S_PROXY && !proxy_input(s))
        return;
    size_t off = 0;
    /* a 0-octet chunk (BDAT 0 [LAST]) is complete without any input */
    while (!s->closed && !c->paused &&
           (off < c->in.len || (s->state == S_CHUNK && s->bdat.remaining == 0))) {
        const char *p = c->in.data + off;
        size_t avail = c->in.len - off, used = 0, line_len = 0;
        if (s->state == S_DATA) {
            int rc = smtp_data_feed(&s->data, p, avail, &used, &s->content);
            off += used;
            if (rc == PT_AGAIN)
                break;
            if (rc != PT_OK) {
                hangup(s, "451 4.3.0 Out of memory, try again later");
                break;
            }
            end_of_data(s);
            if (s->state == S_QUEUEING)
                break;
            conn_set_timeout(c, s->l->command_timeout);
            continue;
        }
        if (s->state == S_CHUNK) {
            int rc = smtp_bdat_feed(&s->bdat, p, avail, &used, &s->content);
            off += used;
            if (rc == PT_AGAIN)
                break;
            chunk_done(s);
            if (s->state == S_QUEUEING)
                break;
            if (!s->closed)
                conn_set_timeout(c, s->l->command_timeout);
            continue;
        }
        if (s->state == S_QUEUEING || s->state == S_CLOSING)
            break;
        int rc = smtp_lines_next(&s->lines, p, avail, &line_len, &used);
        if (rc == PT_AGAIN) {
            off += used;
            break;
        }
        off += used;
        if (rc == PT_TOOLONG && s->state == S_AUTH) {
            auth_result(s, PT_INVALID, "");
        } else if (rc == PT_TOOLONG) {
            s->errors++;
            reply(s, "500 5.5.2 Line too long");
        } else if (s->state == S_AUTH) {
            auth_line(s, p, line_len);
        } else {
            dispatch(s, p, line_len);
            if (s->state == S_CHUNK && !s->closed)
                conn_set_timeout(c, s->l->data_timeout);
            else if (s->state != S_DATA && !s->closed)
                conn_set_timeout(c, s->l->command_timeout);
        }
        if (s->errors >= SMTP_MAX_ERRORS && !s->closed)
            hangup(s, "421 4.7.0 Too many errors, closing connection");
    }
    buf_consume(&c->in, off);
    session_reply_flush(s);
}

static void on_eof(struct conn *c, int err)
{
    struct smtp_session *s = c->owner;
    if (c->tls_failed) {
        metrics_inc(M_TLS_FAILURES, METRICS_INBOUND, NULL, 1);
        log_info("smtp %s: TLS failure: %s", s->client_ip, conn_tls_error(c));
    }
    if (s->state == S_DATA)
        log_warn("smtp %s: connection lost during DATA; message discarded", s->client_ip);
    else if (s->state == S_BDAT || (s->state == S_CHUNK && !s->bdat.discard))
        log_warn("smtp %s: connection lost during BDAT; message discarded", s->client_ip);
    session_close(s, false);
}

static void on_timeout(struct conn *c)
{
    struct smtp_session *s = c->owner;
    if (s->state == S_QUEUEING)
        return;
    if (s->refuse_after_tls) {
        session_close(s, false);
        return;
    }
    if (s->state == S_PROXY) {
        log_warn("smtp %s: closed: no PROXY header within %.0f s", s->client_ip,
                 s->l->greeting_timeout);
        session_close(s, false);
        return;
    }
    log_info("smtp %s: timeout in state %s", s->client_ip, state_names[s->state]);
    replyf(s, "421 4.4.2 %s Error: timeout exceeded", s->l->hostname);
    session_close(s, true);
}

static void on_closed(struct conn *c)
{
    struct smtp_session *s = c->owner;
    struct worker *w = s->w;
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->nsessions--;
    if (s->counted) {
        frontdoor_leave(w->fd, s->slot, s->client_ip);
        metrics_add(M_CONNECTIONS, METRICS_INBOUND, "", -1);
    }
    s->counted = false;
    session_unref(s);
}

static void session_unref(struct smtp_session *s)
{
    if (--s->refs > 0)
        return;
    txn_reset(s);
    sasl_reset(&s->sasl);
    hook_effects_free(&s->fx);
    buf_free(&s->dkim_todo);
    free(s->rcpts);
    free(s->rcpt_orcpt);
    free(s->rcpt_notify);
    buf_free(&s->content);
    runtime_gen_release(s->gen);
    free(s);
}

/* Implicit TLS handshake done: a refused session's 421 is out, close. */
static void on_tls(struct conn *c)
{
    struct smtp_session *s = c->owner;
    if (s->refuse_after_tls)
        session_close(s, true);
}

static const struct conn_ops session_ops = {
    .on_data = on_data, .on_eof = on_eof, .on_timeout = on_timeout, .on_closed = on_closed,
    .on_tls = on_tls,
};

/* The 421 already queued goes out once the implicit TLS handshake completes
 * (on_tls closes then); a client that never completes it is cut at the greeting
 * timeout without a word. Input is never read as commands. */
static void refuse_after_tls(struct smtp_session *s)
{
    s->refuse_after_tls = true;
    enter_state(s, S_CLOSING);
    double t = s->l->greeting_timeout;
    conn_set_timeout(&s->conn, t > 0 && t < 10 ? t : 10);
    conn_start(&s->conn);
    conn_flush(&s->conn);
}

static void session_begin(struct smtp_session *s);

void smtp_server_accept(struct worker *w, struct cfg_gen *gen, int li, int slot, int fd)
{
    struct smtp_session *s = calloc(1, sizeof *s);
    if (!s) {
        runtime_gen_release(gen);
        close(fd);
        return;
    }
    if (conn_init(&s->conn, &w->loop, &session_ops, s) != PT_OK) {
        runtime_gen_release(gen);
        free(s);
        close(fd);
        return;
    }
    s->w = w;
    s->gen = gen;
    s->L = runtime_gen_smtp_lua(gen, w->index);
    s->li = li;
    s->slot = slot;
    s->l = &gen->cfg->listeners[li];
    s->refs = 1;
    buf_init(&s->content, 0);
    hook_effects_init(&s->fx);
    buf_init(&s->dkim_todo, 0);
    smtp_lines_init(&s->lines, SMTP_LINE_MAX);
    s->conn.in_max = 256 * 1024;
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
    if (conn_accept_fd(&s->conn, fd) != PT_OK) {
        session_close(s, false);
        return;
    }
    bool have_peer = conn_peer(&s->conn, &s->peer) == PT_OK;
    if (have_peer)
        cidr_addr_str((struct sockaddr *)&s->peer, s->client_ip, sizeof s->client_ip);
    else
        snprintf(s->client_ip, sizeof s->client_ip, "unknown");
    if (!s->l->proxy_protocol) {
        session_begin(s);
        return;
    }
    /* The PROXY header comes first, before our greeting; only the load balancers
     * in proxy_trusted_hosts may send one, everyone else is dropped. */
    if (!have_peer) {
        /* gone already (a load balancer's connect-only health check resets) */
        log_debug("smtp: PROXY listener %s: peer left before its header", s->l->name);
        session_close(s, false);
        return;
    }
    if (!cidr_match_any(s->l->proxy_trusted_hosts, s->l->n_proxy_trusted_hosts,
                        (struct sockaddr *)&s->peer)) {
        log_warn("smtp %s: refused: peer not in proxy_trusted_hosts of PROXY listener %s",
                 s->client_ip, s->l->name);
        session_close(s, false);
        return;
    }
    enter_state(s, S_PROXY);
    conn_set_timeout(&s->conn, s->l->greeting_timeout);
    if (conn_start(&s->conn) != PT_OK)
        session_close(s, false);
}

/* S_PROXY input: waits for the whole header, then takes its source address as
 * the client's for everything that follows (limits, bans, relay_hosts, logs,
 * hooks, Received:). Returns true when the session goes on with the bytes left
 * in c->in. A health check that connects and leaves (or sends LOCAL) logs
 * nothing above debug. */
static bool proxy_input(struct smtp_session *s)
{
    struct conn *c = &s->conn;
    struct proxy_header h;
    int rc = proxy_parse(c->in.data, c->in.len, &h);
    if (rc == PT_AGAIN)
        return false;
    if (rc != PT_OK) {
        log_warn("smtp %s: closed: %s", s->client_ip, proxy_strerror(rc));
        buf_reset(&c->in);
        session_close(s, false);
        return false;
    }
    buf_consume(&c->in, h.len);
    if (h.local) {
        log_debug("smtp %s: PROXY v%d LOCAL/UNKNOWN: keeping the peer address", s->client_ip,
                  h.version);
    } else {
        char proxy_ip[64];
        memcpy(proxy_ip, s->client_ip, sizeof proxy_ip);
        s->peer = h.src;
        cidr_addr_str((struct sockaddr *)&s->peer, s->client_ip, sizeof s->client_ip);
        log_debug("smtp %s: PROXY v%d from %s", s->client_ip, h.version, proxy_ip);
    }
    /* Implicit TLS starts after the header: the ClientHello may already sit behind
     * it in c->in, and conn_start_tls would drop it, so hand it over. */
    struct buf rest;
    buf_init(&rest, 0);
    bool tls = s->l->tls && s->l->tls->implicit;
    if (tls && c->in.len) {
        if (buf_append(&rest, c->in.data, c->in.len) != PT_OK) {
            session_close(s, false);
            return false;
        }
        buf_reset(&c->in);
    }
    session_begin(s);
    if (tls && rest.len && !s->closed)
        conn_feed_raw(c, rest.data, rest.len);
    buf_free(&rest);
    return !s->closed && !tls;
}

/* After accept (or the PROXY header): connection limits, bans, implicit TLS and
 * the greeting, all judged on the client's address. */
static void session_begin(struct smtp_session *s)
{
    struct worker *w = s->w;
    int li = s->li;
    const char *which = NULL;
    if (frontdoor_enter(w->fd, s->slot, s->client_ip, s->l->max_connections,
                        s->l->max_connections_per_ip, &which) != 0) {
        log_warn("smtp %s: refused: %s reached", s->client_ip, which);
        if (s->l->tls && s->l->tls->implicit) {
            /* Never a word in clear on an implicit-TLS port, and no handshake spent
             * on a client over the limit: just close. */
            session_close(s, false);
            return;
        }
        replyf(s, "421 4.7.0 %s Too many connections (%s), try again later", s->l->hostname, which);
        session_close(s, true);
        conn_flush(&s->conn);
        return;
    }
    s->counted = true;
    metrics_add(M_CONNECTIONS, METRICS_INBOUND, "", 1);  /* inbound: no destination */
    /* Implicit TLS: the handshake comes first, so nothing (not even a refusal) is
     * ever said in clear on this port; replies queued now wait for it. */
    if (s->l->tls && s->l->tls->implicit &&
        conn_start_tls(&s->conn, s->gen->listener_tls[li], true, NULL, NULL) != PT_OK) {
        session_close(s, false);
        return;
    }
    if (!in_relay_hosts(s) && authban_is_banned(w->rt->ban, s->client_ip, time_now())) {
        log_info("smtp %s: refused: banned after AUTH failures", s->client_ip);
        replyf(s, "421 4.7.0 %s Too many authentication failures; try again later", s->l->hostname);
        if (s->conn.tls) {
            refuse_after_tls(s);
            return;
        }
        session_close(s, true);
        conn_flush(&s->conn);
        return;
    }
    if (w->stopping) {
        hangup(s, "421 4.3.2 Service shutting down");
        return;
    }
    enter_state(s, S_GREETING);
    replyf(s, "220 %s ESMTP petrel", s->l->hostname);
    conn_set_timeout(&s->conn, s->l->greeting_timeout);
    if (!s->conn.reading)
        conn_start(&s->conn);
    conn_flush(&s->conn);
}

void smtp_server_stop_all(struct worker *w, bool force)
{
    for (struct smtp_session *s = w->sessions; s; s = s->next) {
        if (s->state == S_QUEUEING ||
            ((s->state == S_DATA || s->state == S_BDAT || s->state == S_CHUNK) && !force))
            continue; /* finishes its transaction; closed on the reply */
        if (s->closed) {
            if (force)
                conn_close(&s->conn, false);
            continue;
        }
        if (s->state == S_PROXY) {      /* not greeted yet: nothing to say */
            session_close(s, false);
            continue;
        }
        reply(s, "421 4.3.2 Service shutting down");
        conn_flush(&s->conn);
        session_close(s, !force);
    }
}
