/* Header checks; see header_checks.h. Each field is matched as "Name: value" with
 * its line ends removed (folding white space kept), as Postfix matches a logical
 * header. Never touches the body; never writes a bare CR or LF.
 * SPDX-License-Identifier: Apache-2.0 */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "policy/header_checks.h"
#include "util/regex.h"
#include "util/headers.h"
#include "util/result.h"

enum hc_action { A_IGNORE, A_DUNNO, A_OK, A_WARN, A_REJECT, A_DISCARD, A_PREPEND, A_REPLACE };

static const struct {
    const char *verb;
    enum hc_action action;
    int text;                    /* 0 = none, 1 = optional, 2 = required */
} verbs[] = {
    { "IGNORE", A_IGNORE, 0 }, { "DUNNO", A_DUNNO, 0 }, { "OK", A_OK, 0 },
    { "WARN", A_WARN, 1 }, { "REJECT", A_REJECT, 1 }, { "DISCARD", A_DISCARD, 1 },
    { "PREPEND", A_PREPEND, 2 }, { "REPLACE", A_REPLACE, 2 },
};

struct hc_rule {
    regex_t re;
    enum hc_action action;
    const char *verb;            /* canonical spelling */
    char *text;                  /* "" when none */
};

struct header_checks {
    size_t n;
    struct hc_rule rules[];
};

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* PREPEND / REPLACE text must be exactly one well-formed header line. */
static bool header_line_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > HDR_LINE_MAX)
        return false;
    size_t name = 0;
    while (name < n && t[name] >= 33 && t[name] <= 126 && t[name] != ':')
        name++;
    if (name == 0 || name > 76 || t[name] != ':')
        return false;
    for (size_t i = 0; i < n; i++)
        if (t[i] == '\r' || t[i] == '\n' || t[i] == 0)
            return false;
    return true;
}

static int parse_action(const char *a, struct hc_rule *r, char *err, size_t errlen)
{
    while (is_wsp(*a))
        a++;
    size_t vl = strcspn(a, " \t");
    const char *text = a + vl;
    while (is_wsp(*text))
        text++;
    size_t tl = strlen(text);
    while (tl && is_wsp(text[tl - 1]))
        tl--;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        if (strlen(verbs[i].verb) != vl || strncasecmp(verbs[i].verb, a, vl) != 0)
            continue;
        if (verbs[i].text == 0 && tl) {
            snprintf(err, errlen, "invalid action '%s': %s takes no text", a, verbs[i].verb);
            return PT_INVALID;
        }
        if (verbs[i].text == 2 && !tl) {
            snprintf(err, errlen, "invalid action '%s': %s needs a header line, e.g. "
                     "\"%s X-Name: value\"", a, verbs[i].verb, verbs[i].verb);
            return PT_INVALID;
        }
        if (tl >= HEADER_CHECKS_TEXT_MAX && verbs[i].text == 1) {
            snprintf(err, errlen, "invalid action: the text of %s is too long (at most %d bytes)", verbs[i].verb,
                     HEADER_CHECKS_TEXT_MAX - 1);
            return PT_INVALID;
        }
        if (!(r->text = strndup(text, tl)))
            return PT_NOMEM;
        if (verbs[i].text == 2 && !header_line_ok(r->text)) {
            snprintf(err, errlen, "invalid action: the text of %s must be one header line \"Name: value\" of "
                     "at most %d octets", verbs[i].verb, HDR_LINE_MAX);
            return PT_INVALID;
        }
        for (size_t k = 0; k < tl && verbs[i].text == 1; k++)
            if ((unsigned char)r->text[k] < 32 || r->text[k] == 127) {
                snprintf(err, errlen, "invalid action: the text of %s holds a control character",
                         verbs[i].verb);
                return PT_INVALID;
            }
        r->action = verbs[i].action;
        r->verb = verbs[i].verb;
        return PT_OK;
    }
    snprintf(err, errlen, "invalid action '%.*s' (IGNORE, DUNNO, OK, WARN [text], REJECT [text], "
             "DISCARD [text], PREPEND text or REPLACE text)", (int)(vl > 64 ? 64 : vl), a);
    return PT_INVALID;
}

void header_checks_free(struct header_checks *hc)
{
    if (!hc)
        return;
    for (size_t i = 0; i < hc->n; i++) {
        regfree(&hc->rules[i].re);
        free(hc->rules[i].text);
    }
    free(hc);
}

int header_checks_canon(const char *action, char *out, size_t outlen, char *err, size_t errlen)
{
    struct hc_rule r = { .text = NULL };
    int rc = parse_action(action, &r, err, errlen);
    if (rc == PT_OK && (size_t)snprintf(out, outlen, "%s%s%s", r.verb, *r.text ? " " : "",
                                        r.text) >= outlen) {
        snprintf(err, errlen, "invalid action: too long");
        rc = PT_INVALID;
    }
    free(r.text);
    return rc;
}

size_t header_checks_count(const struct header_checks *hc)
{
    return hc ? hc->n : 0;
}

int header_checks_new(const struct header_checks_rule *rules, size_t n, struct header_checks **out,
                      size_t *bad, char *err, size_t errlen)
{
    *out = NULL;
    *bad = 0;
    if (err && errlen)
        err[0] = 0;
    struct header_checks *hc = calloc(1, sizeof *hc + n * sizeof hc->rules[0]);
    if (!hc)
        return PT_NOMEM;
    for (size_t i = 0; i < n; i++) {
        struct hc_rule *r = &hc->rules[i];
        *bad = i;
        int rc = parse_action(rules[i].action ? rules[i].action : "", r, err, errlen);
        if (rc != PT_OK) {
            free(r->text);
            header_checks_free(hc);
            return rc;
        }
        rc = regex_compile(&r->re, rules[i].pattern ? rules[i].pattern : "",
                           REG_EXTENDED | REG_ICASE | REG_NOSUB, err, errlen);
        if (rc != PT_OK) {
            free(r->text);
            header_checks_free(hc);
            return rc;
        }
        hc->n = i + 1;
    }
    *out = hc;
    return PT_OK;
}

/* "Name: value" of f with CR and LF removed, NUL-terminated, in line. */
static int logical_line(const struct hdr_field *f, struct buf *line)
{
    buf_reset(line);
    int rc = buf_append(line, f->name, f->name_len);
    if (rc == PT_OK)
        rc = buf_append(line, ":", 1);
    for (size_t i = 0; rc == PT_OK && i < f->value_len; i++) {
        char c = f->value[i];
        if (c == '\r' || c == '\n')
            continue;
        /* a NUL would end the string regexec sees: match it as a space */
        rc = buf_append(line, c ? &c : " ", 1);
    }
    return rc;
}

static void set_text(struct header_checks_result *res, const char *dflt, const char *text)
{
    snprintf(res->text, sizeof res->text, "%s", *text ? text : dflt);
}

int header_checks_apply(const struct header_checks *hc, const char *msg, size_t len,
                        struct buf *out, struct header_checks_result *res)
{
    memset(res, 0, sizeof *res);
    size_t start = out->len;
    struct buf line;
    buf_init(&line, 0);
    size_t pos = 0, copied = 0;
    struct hdr_field f;
    int rc = PT_OK;
    while (rc == PT_OK && hdr_next(msg, len, &pos, &f)) {
        const char *raw = f.name;
        const struct hc_rule *hit = NULL;
        if (hc && hc->n) {
            if ((rc = logical_line(&f, &line)) != PT_OK)
                break;
            for (size_t i = 0; i < hc->n && !hit; i++)
                if (regexec(&hc->rules[i].re, line.data, 0, NULL, 0) == 0) {
                    hit = &hc->rules[i];
                    res->rule = i;
                }
        }
        if (!hit)
            continue;        /* copied with the next change or at the end */
        rc = buf_append(out, msg + copied, (size_t)(raw - msg) - copied);
        copied = (size_t)(raw - msg);
        switch (hit->action) {
        case A_DUNNO:
        case A_OK:
            break;
        case A_WARN:
            if (res->warnings++ == 0)
                snprintf(res->warning, sizeof res->warning, "rule %zu: %s%s%.*s", res->rule + 1,
                         hit->text, *hit->text ? ": " : "", (int)(line.len > 200 ? 200 : line.len),
                         line.data);
            break;
        case A_REJECT:
            res->verdict = HEADER_CHECKS_REJECT;
            set_text(res, "5.7.1 message content rejected", hit->text);
            if (!(res->text[0] >= '2' && res->text[0] <= '5' && res->text[1] == '.')) {
                char t[sizeof res->text];
                snprintf(t, sizeof t, "5.7.1 %s", res->text);
                memcpy(res->text, t, sizeof t);
            }
            goto done;
        case A_DISCARD:
            res->verdict = HEADER_CHECKS_DISCARD;
            set_text(res, "discarded by header checks", hit->text);
            goto done;
        case A_IGNORE:
            copied += f.raw_len;
            res->changed++;
            break;
        case A_PREPEND:
            if (rc == PT_OK)
                rc = buf_appendf(out, "%s\r\n", hit->text);
            res->changed++;
            break;
        case A_REPLACE:
            if (rc == PT_OK)
                rc = buf_appendf(out, "%s\r\n", hit->text);
            copied += f.raw_len;
            res->changed++;
            break;
        }
    }
    if (rc == PT_OK)
        rc = buf_append(out, msg + copied, len - copied);
done:
    buf_free(&line);
    if (rc != PT_OK || res->verdict != HEADER_CHECKS_ACCEPT) {
        out->len = start;
        if (out->data)
            out->data[start] = 0;
    }
    return rc;
}
