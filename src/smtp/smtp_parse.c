/* SMTP command parsing (server side): the line splitter and the one-line parser.
 * Pure and bounded: never allocates, never reads past the given length, and never
 * trusts the client (every syntax failure becomes the reply text to send).
 * SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "smtp/smtp_parse.h"
#include "util/result.h"

/* The verb table is generated from one list so names and enum values cannot drift. */
#define SMTP_VERB_LIST(X) \
    X(HELO) X(EHLO) X(MAIL) X(RCPT) X(DATA) X(RSET) X(NOOP) X(QUIT) X(VRFY) X(EXPN) \
    X(HELP) X(STARTTLS) X(AUTH) X(BDAT)

static const struct {
    const char *name;
    size_t len;
    enum smtp_verb verb;
} smtp_verbs[] = {
#define SMTP_VERB_ROW(v) {#v, sizeof #v - 1, SMTP_VERB_##v},
    SMTP_VERB_LIST(SMTP_VERB_ROW)
#undef SMTP_VERB_ROW
};

_Static_assert(sizeof smtp_verbs / sizeof smtp_verbs[0] == SMTP_VERB__COUNT - 1,
               "SMTP_VERB_LIST must name every enum smtp_verb value");

/* Replies for syntax failures (RFC 5321 4.2, RFC 3463 enhanced codes). */
static const char smtp_e_chars[] = "500 5.5.2 Invalid characters in command";
static const char smtp_e_mail[] = "501 5.5.4 Syntax: MAIL FROM:<address>";
static const char smtp_e_rcpt[] = "501 5.5.4 Syntax: RCPT TO:<address>";
static const char smtp_e_sender[] = "501 5.1.7 Bad sender address syntax";
static const char smtp_e_recipient[] = "501 5.1.3 Bad recipient address syntax";
static const char smtp_e_sender_long[] = "501 5.1.7 Sender address too long";
static const char smtp_e_recipient_long[] = "501 5.1.3 Recipient address too long";
static const char smtp_e_param[] = "555 5.5.4 Unsupported parameter";
static const char smtp_e_param_syntax[] = "501 5.5.4 Invalid parameter syntax";
static const char smtp_e_param_dup[] = "501 5.5.4 Duplicate parameter";
static const char smtp_e_size[] = "501 5.5.4 Invalid SIZE parameter";
static const char smtp_e_body[] = "501 5.5.4 Invalid BODY parameter";
static const char smtp_e_ret[] = "501 5.5.4 Invalid RET parameter (FULL or HDRS)";
static const char smtp_e_envid[] = "501 5.5.4 Invalid ENVID parameter";
static const char smtp_e_notify[] =
    "501 5.5.4 Invalid NOTIFY parameter (NEVER, or a list of SUCCESS, FAILURE, DELAY)";
static const char smtp_e_orcpt[] = "501 5.5.4 Invalid ORCPT parameter";
static const char smtp_e_utf8[] = "553 5.6.7 SMTPUTF8 required for non-ASCII address";
static const char smtp_e_helo[] = "501 5.5.4 Syntax: HELO hostname";
static const char smtp_e_ehlo[] = "501 5.5.4 Syntax: EHLO hostname";

const char *smtp_verb_name(enum smtp_verb v)
{
    if (v <= SMTP_VERB_UNKNOWN || v >= SMTP_VERB__COUNT)
        return "UNKNOWN";
    return smtp_verbs[v - 1].name;
}

/* ---- line splitter ---- */

void smtp_lines_init(struct smtp_lines *s, size_t max)
{
    s->max = max ? max : SMTP_LINE_MAX;
    s->discarding = false;
}

int smtp_lines_next(struct smtp_lines *s, const char *in, size_t len, size_t *line_len,
                    size_t *consumed)
{
    size_t max = s->max ? s->max : SMTP_LINE_MAX;
    const char *lf;

    *line_len = 0;
    *consumed = 0;
    if (len == 0)
        return PT_AGAIN;
    if (s->discarding) {
        lf = memchr(in, '\n', len);
        if (!lf) {
            *consumed = len;
            return PT_AGAIN;
        }
        s->discarding = false;
        *consumed = (size_t)(lf - in) + 1;
        return PT_TOOLONG;
    }
    /* A line fits if its LF is among the first max bytes. */
    lf = memchr(in, '\n', len < max ? len : max);
    if (lf) {
        size_t n = (size_t)(lf - in);
        *consumed = n + 1;
        if (n > 0 && in[n - 1] == '\r')
            n--;
        *line_len = n;
        return PT_OK;
    }
    if (len < max)
        return PT_AGAIN;
    /* Over-long: report it when its LF arrives; drop its bytes meanwhile. */
    lf = memchr(in + max, '\n', len - max);
    if (lf) {
        *consumed = (size_t)(lf - in) + 1;
        return PT_TOOLONG;
    }
    s->discarding = true;
    *consumed = len;
    return PT_AGAIN;
}

/* ---- address syntax (RFC 5321 4.1.2, RFC 6531 for UTF-8) ---- */

static bool smtp_is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* atext of RFC 5322 3.2.3, plus UTF-8 octets (checked for well-formedness later). */
static bool smtp_is_atext(unsigned char c)
{
    return smtp_is_alnum(c) || c >= 0x80 || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* Well-formed UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
static bool smtp_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 1;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3;
        else
            return false;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
        else if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
        if (n - i <= k)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j <= k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xbf)
                return false;
        i += k + 1;
    }
    return true;
}

/* "[1.2.3.4]" or "[IPv6:...]". General address literals (tag:content) are refused. */
static bool smtp_addr_literal_valid(const char *s, size_t len)
{
    char tmp[64];
    unsigned char bin[16];
    int family = AF_INET;
    const char *in = s + 1;
    size_t n;

    if (len < 3 || s[0] != '[' || s[len - 1] != ']')
        return false;
    n = len - 2;
    if (n >= 5 && strncasecmp(in, "IPv6:", 5) == 0) {
        family = AF_INET6;
        in += 5;
        n -= 5;
    }
    if (n == 0 || n >= sizeof tmp || memchr(in, 0, n))
        return false;
    memcpy(tmp, in, n);
    tmp[n] = 0;
    return inet_pton(family, tmp, bin) == 1;
}

bool smtp_domain_valid(const char *s, size_t len)
{
    size_t label = 0;

    if (!s || len == 0 || len > SMTP_DOMAIN_MAX)
        return false;
    if (s[0] == '[')
        return smtp_addr_literal_valid(s, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!smtp_is_alnum(c) && c != '-' && c < 0x80)
            return false;
        if (label == 0 && c == '-')
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[len - 1] != '-';
}

/* local-part "@" domain; local-part is a dot-atom or a quoted string. */
bool smtp_mailbox_valid(const char *a, size_t n)
{
    const char *p = a, *end = a + n;

    if (n == 0)
        return false;
    if (*p == '"') {
        for (p++;; p++) {
            unsigned char c;
            if (p >= end)
                return false;
            c = (unsigned char)*p;
            if (c == '"')
                break;
            if (c == '\\') {
                if (++p >= end || (unsigned char)*p < 32 || (unsigned char)*p > 126)
                    return false;
            } else if (c < 32 || c == 127) {
                return false;
            }
        }
        p++;
    } else {
        bool after_dot = true; /* a leading dot is as bad as a doubled one */
        const char *start = p;
        for (; p < end && *p != '@'; p++) {
            if (*p == '.') {
                if (after_dot)
                    return false;
                after_dot = true;
            } else if (smtp_is_atext((unsigned char)*p)) {
                after_dot = false;
            } else {
                return false;
            }
        }
        if (p == start || after_dot)
            return false;
    }
    if (p >= end || *p != '@')
        return false;
    p++;
    return smtp_domain_valid(p, (size_t)(end - p));
}

/* Skips a source route "@a,@b:" (RFC 5321 A-d-l, accepted and ignored per
 * 4.1.1.3). Returns the byte after the ':' or NULL. */
static const char *smtp_adl_skip(const char *p, const char *end)
{
    for (;;) {
        const char *d;
        if (p >= end || *p != '@')
            return NULL;
        d = ++p;
        if (p < end && *p == '[') {
            const char *close = memchr(p, ']', (size_t)(end - p));
            if (!close)
                return NULL;
            p = close + 1;
        } else {
            while (p < end && *p != ',' && *p != ':')
                p++;
        }
        if (!smtp_domain_valid(d, (size_t)(p - d)) || p >= end)
            return NULL;
        if (*p++ == ':')
            return p;
        if (p[-1] != ',')
            return NULL;
    }
}

/* Parses "<...>" at p into cmd->path. Returns NULL or the reply to send;
 * *next is set to the byte after '>'. */
static const char *smtp_path_parse(const char *p, const char *end, bool rcpt,
                                   struct smtp_cmd *cmd, const char **next)
{
    const char *bad = rcpt ? smtp_e_recipient : smtp_e_sender;
    const char *q, *close = NULL, *a;
    bool quoted = false;
    size_t n;

    for (q = p + 1; q < end; q++) {
        if (quoted) {
            if (*q == '\\' && q + 1 < end)
                q++;
            else if (*q == '"')
                quoted = false;
        } else if (*q == '"') {
            quoted = true;
        } else if (*q == '>') {
            close = q;
            break;
        } else if (*q == '<') {
            return bad;
        }
    }
    if (!close)
        return bad;
    *next = close + 1;
    if ((size_t)(close - p) + 1 > SMTP_PATH_MAX)
        return rcpt ? smtp_e_recipient_long : smtp_e_sender_long;
    a = p + 1;
    if (a == close) {
        if (rcpt)
            return bad;
        cmd->path[0] = 0;
        return NULL;
    }
    if (*a == '@') {
        a = smtp_adl_skip(a, close);
        if (!a)
            return bad;
    }
    n = (size_t)(close - a);
    if (!(rcpt && n == 10 && strncasecmp(a, "postmaster", 10) == 0) &&
        !smtp_mailbox_valid(a, n))
        return bad;
    if (!smtp_utf8_valid((const unsigned char *)a, n))
        return bad;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)a[i] >= 0x80)
            cmd->path_utf8 = true;
    memcpy(cmd->path, a, n);
    cmd->path[n] = 0;
    return NULL;
}

/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static bool smtp_keyword_valid(const char *k, size_t n)
{
    if (n == 0 || !smtp_is_alnum((unsigned char)k[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!smtp_is_alnum((unsigned char)k[i]) && k[i] != '-')
            return false;
    return true;
}

static bool smtp_kw_is(const char *k, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(k, name, n) == 0;
}

/* xtext (RFC 3461 4): xchar is "!".."~" except "+" and "="; "+" and two hex
 * digits encode any octet (upper case per the RFC; lower case tolerated). Decodes
 * v[0..vn) into out (cap >= vn + 1). The decoded text must be printable ASCII
 * (SP allowed): it goes into DSN header fields. false on any violation. */
static int smtp_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool smtp_xtext_decode(const char *v, size_t vn, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < vn; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '+') {
            int hi, lo;
            if (i + 2 >= vn)
                return false;
            hi = smtp_hexval(v[i + 1]);
            lo = smtp_hexval(v[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
            if (c < 0x20 || c > 0x7e)
                return false;
        } else if (c < '!' || c > '~' || c == '=') {
            return false;
        }
        out[n++] = (char)c;
    }
    out[n] = 0;
    return true;
}

/* NOTIFY=NEVER | 1#(SUCCESS / FAILURE / DELAY), case-insensitive, each at most once. */
static const char *smtp_notify_parse(const char *v, size_t vn, uint8_t *bits)
{
    uint8_t b = 0;
    const char *p = v, *end = v + vn;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        size_t n = (size_t)(e - p);
        uint8_t one;
        if (n == 5 && strncasecmp(p, "NEVER", 5) == 0)
            one = SMTP_NOTIFY_NEVER;
        else if (n == 7 && strncasecmp(p, "SUCCESS", 7) == 0)
            one = SMTP_NOTIFY_SUCCESS;
        else if (n == 7 && strncasecmp(p, "FAILURE", 7) == 0)
            one = SMTP_NOTIFY_FAILURE;
        else if (n == 5 && strncasecmp(p, "DELAY", 5) == 0)
            one = SMTP_NOTIFY_DELAY;
        else
            return smtp_e_notify;
        if (b & one)
            return smtp_e_notify;
        b |= one;
        if (!comma)
            break;
        p = comma + 1;
    }
    if ((b & SMTP_NOTIFY_NEVER) && b != SMTP_NOTIFY_NEVER)
        return smtp_e_notify;    /* NEVER stands alone (RFC 3461 4.1) */
    *bits = b;
    return NULL;
}

/* ORCPT=addr-type ";" xtext, addr-type an atom; stored as "addr-type;decoded". */
static const char *smtp_orcpt_parse(const char *v, size_t vn, char out[SMTP_ORCPT_MAX + 1])
{
    const char *semi = memchr(v, ';', vn);
    if (vn > SMTP_ORCPT_MAX || !semi || semi == v || semi + 1 == v + vn)
        return smtp_e_orcpt;
    size_t tn = (size_t)(semi - v);
    for (size_t i = 0; i < tn; i++)
        if (!smtp_is_atext((unsigned char)v[i]) || (unsigned char)v[i] >= 0x80)
            return smtp_e_orcpt;
    memcpy(out, v, tn + 1);
    if (!smtp_xtext_decode(semi + 1, (size_t)(v + vn - semi - 1), out + tn + 1))
        return smtp_e_orcpt;
    return NULL;
}

/* Parses " KEY[=VALUE]..." after the path. MAIL takes SIZE, BODY, SMTPUTF8, RET,
 * ENVID, REQUIRETLS and AUTH (RFC 4954 5: a server offering AUTH must accept it;
 * its value is ignored). RCPT takes NOTIFY and ORCPT (RFC 3461). */
static const char *smtp_params_parse(const char *p, const char *end, bool rcpt,
                                     struct smtp_cmd *cmd)
{
    bool seen_size = false, seen_body = false, seen_utf8 = false, seen_auth = false;
    bool seen_ret = false, seen_envid = false, seen_rtls = false;
    bool seen_notify = false, seen_orcpt = false;

    while (p < end) {
        const char *k, *eq, *v, *tok_end;
        size_t kn, vn;

        while (p < end && *p == ' ')
            p++;
        if (p == end)
            break;
        k = p;
        while (p < end && *p != ' ')
            p++;
        tok_end = p;
        eq = memchr(k, '=', (size_t)(tok_end - k));
        kn = (size_t)((eq ? eq : tok_end) - k);
        v = eq ? eq + 1 : NULL;
        vn = eq ? (size_t)(tok_end - v) : 0;
        if (!smtp_keyword_valid(k, kn) || (eq && (vn == 0 || memchr(v, '=', vn))))
            return smtp_e_param_syntax;
        if (rcpt) {
            const char *err;
            if (smtp_kw_is(k, kn, "NOTIFY")) {
                if (seen_notify)
                    return smtp_e_param_dup;
                if (!v)
                    return smtp_e_notify;
                if ((err = smtp_notify_parse(v, vn, &cmd->notify)) != NULL)
                    return err;
                seen_notify = true;
            } else if (smtp_kw_is(k, kn, "ORCPT")) {
                if (seen_orcpt)
                    return smtp_e_param_dup;
                if (!v)
                    return smtp_e_orcpt;
                if ((err = smtp_orcpt_parse(v, vn, cmd->orcpt)) != NULL)
                    return err;
                seen_orcpt = true;
            } else {
                return smtp_e_param;
            }
            continue;
        }
        if (smtp_kw_is(k, kn, "SIZE")) {
            uint64_t size = 0;
            if (seen_size)
                return smtp_e_param_dup;
            if (!v || vn > 20)
                return smtp_e_size;
            for (size_t i = 0; i < vn; i++) {
                unsigned d = (unsigned)(unsigned char)v[i] - '0';
                if (d > 9 || size > (UINT64_MAX - d) / 10)
                    return smtp_e_size;
                size = size * 10 + d;
            }
            cmd->size = size;
            seen_size = true;
        } else if (smtp_kw_is(k, kn, "BODY")) {
            if (seen_body)
                return smtp_e_param_dup;
            if (v && smtp_kw_is(v, vn, "8BITMIME"))
                cmd->body_8bit = true;
            else if (v && smtp_kw_is(v, vn, "BINARYMIME"))
                cmd->body_binary = true;
            else if (!v || !smtp_kw_is(v, vn, "7BIT"))
                return smtp_e_body;
            seen_body = true;
        } else if (smtp_kw_is(k, kn, "SMTPUTF8")) {
            if (seen_utf8)
                return smtp_e_param_dup;
            if (v)
                return smtp_e_param_syntax;
            cmd->smtputf8 = true;
            seen_utf8 = true;
        } else if (smtp_kw_is(k, kn, "AUTH")) {
            if (seen_auth)
                return smtp_e_param_dup;
            if (!v)
                return smtp_e_param_syntax;
            seen_auth = true;
        } else if (smtp_kw_is(k, kn, "RET")) {
            if (seen_ret)
                return smtp_e_param_dup;
            if (v && smtp_kw_is(v, vn, "FULL"))
                cmd->ret = SMTP_RET_FULL;
            else if (v && smtp_kw_is(v, vn, "HDRS"))
                cmd->ret = SMTP_RET_HDRS;
            else
                return smtp_e_ret;
            seen_ret = true;
        } else if (smtp_kw_is(k, kn, "ENVID")) {
            if (seen_envid)
                return smtp_e_param_dup;
            if (!v || vn > SMTP_ENVID_MAX || !smtp_xtext_decode(v, vn, cmd->envid))
                return smtp_e_envid;
            seen_envid = true;
        } else if (smtp_kw_is(k, kn, "REQUIRETLS")) {
            if (seen_rtls)
                return smtp_e_param_dup;
            if (v)
                return smtp_e_param_syntax;
            cmd->requiretls = true;
            seen_rtls = true;
        } else {
            return smtp_e_param;
        }
    }
    return NULL;
}

/* MAIL FROM:<path> [params] / RCPT TO:<path> [params], arg after the verb. */
static const char *smtp_mail_rcpt_parse(const char *p, const char *end, bool rcpt,
                                        struct smtp_cmd *cmd)
{
    const char *kw = rcpt ? "TO:" : "FROM:";
    size_t kwn = rcpt ? 3 : 5;
    const char *syntax = rcpt ? smtp_e_rcpt : smtp_e_mail;
    const char *err;

    while (p < end && *p == ' ')
        p++;
    if ((size_t)(end - p) < kwn || strncasecmp(p, kw, kwn) != 0)
        return syntax;
    p += kwn;
    while (p < end && *p == ' ')
        p++;
    if (p >= end || *p != '<')
        return syntax;
    err = smtp_path_parse(p, end, rcpt, cmd, &p);
    if (err)
        return err;
    if (p < end && *p != ' ')
        return rcpt ? smtp_e_recipient : smtp_e_sender;
    err = smtp_params_parse(p, end, rcpt, cmd);
    if (err)
        return err;
    if (!rcpt && cmd->path_utf8 && !cmd->smtputf8)
        return smtp_e_utf8;
    return NULL;
}

/* HELO/EHLO: the first word is the client's name. Deliberately lenient (any
 * printable word up to 255 octets): real clients send bare names, underscores
 * and address literals, and the name is only informational. */
static const char *smtp_helo_parse(const char *p, const char *end, bool ehlo,
                                   struct smtp_cmd *cmd)
{
    const char *w;

    while (p < end && *p == ' ')
        p++;
    w = p;
    while (p < end && *p != ' ')
        p++;
    if (p == w || (size_t)(p - w) > SMTP_DOMAIN_MAX)
        return ehlo ? smtp_e_ehlo : smtp_e_helo;
    memcpy(cmd->path, w, (size_t)(p - w));
    cmd->path[p - w] = 0;
    return NULL;
}

int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd)
{
    const char *end, *p, *err = NULL;
    size_t vlen;

    if (!line)
        line = "";
    end = line + len;

    cmd->verb = SMTP_VERB_UNKNOWN;
    cmd->arg = end;
    cmd->arg_len = 0;
    cmd->path[0] = 0;
    cmd->size = 0;
    cmd->body_8bit = false;
    cmd->body_binary = false;
    cmd->smtputf8 = false;
    cmd->path_utf8 = false;
    cmd->ret = SMTP_RET_NONE;
    cmd->envid[0] = 0;
    cmd->requiretls = false;
    cmd->notify = 0;
    cmd->orcpt[0] = 0;
    cmd->error = NULL;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f) {
            cmd->error = smtp_e_chars;
            return PT_INVALID;
        }
    }
    while (end > line && end[-1] == ' ')
        end--;

    p = memchr(line, ' ', (size_t)(end - line));
    vlen = p ? (size_t)(p - line) : (size_t)(end - line);
    for (size_t i = 0; i < sizeof smtp_verbs / sizeof smtp_verbs[0]; i++) {
        if (smtp_verbs[i].len == vlen && strncasecmp(line, smtp_verbs[i].name, vlen) == 0) {
            cmd->verb = smtp_verbs[i].verb;
            break;
        }
    }
    cmd->arg = p ? p + 1 : end;
    cmd->arg_len = (size_t)(end - cmd->arg);

    switch (cmd->verb) {
    case SMTP_VERB_MAIL:
    case SMTP_VERB_RCPT:
        err = smtp_mail_rcpt_parse(cmd->arg, end, cmd->verb == SMTP_VERB_RCPT, cmd);
        break;
    case SMTP_VERB_HELO:
    case SMTP_VERB_EHLO:
        err = smtp_helo_parse(cmd->arg, end, cmd->verb == SMTP_VERB_EHLO, cmd);
        break;
    default:
        break;
    }
    if (err) {
        cmd->path[0] = 0;
        cmd->error = err;
        return PT_INVALID;
    }
    return PT_OK;
}

const char *smtp_addr_domain(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    return at ? at + 1 : NULL;
}

void smtp_domain_lower(const char *domain, char *out, size_t outlen)
{
    size_t i = 0;

    if (!out || outlen == 0)
        return;
    for (; domain && domain[i] && i + 1 < outlen; i++) {
        char c = domain[i];
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out[i] = 0;
}
