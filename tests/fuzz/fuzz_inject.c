/* Fuzz target for the HTTP injection bodies: the input goes as it is to both
 * inject_v1_message() and inject_kumo(), and (so the fuzzer reaches the MIME and
 * template code without having to invent JSON) its NUL-separated pieces also fill
 * the fields of a well-formed request of each kind. Every success must obey the
 * content rules (CRLF only, no NUL, final CRLF, a header section whose first field
 * may have obs white space before its colon, as hdr_next reads it; for /v1/message
 * no line over 998 octets and no 8-bit octet), carry only envelope addresses that
 * smtp_mailbox_valid() accepts, and free cleanly (ASan/LSan watch).
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http/inject.h"
#include "smtp/smtp_parse.h"
#include "util/result.h"
#include "util/utf8.h"

#define PIECES 12

static void check_content(const char *c, size_t n, bool strict)
{
    size_t line = 0, k = 0;
    if (!c || n < 2 || c[n - 2] != '\r' || c[n - 1] != '\n' || strlen(c) != n)
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)c[i];
        if ((ch == '\r' && c[i + 1] != '\n') || (ch == '\n' && (i == 0 || c[i - 1] != '\r')))
            abort();
        line = ch == '\n' ? 0 : line + 1;
        if (strict && (line > 999 || ch >= 0x80))
            abort();
    }
    while (k < n && c[k] > 32 && c[k] < 127 && c[k] != ':')
        k++;
    size_t colon = k;               /* obs-syntax: white space before the colon, as
                                       hdr_next reads it (RFC 5322 4.5.8) */
    while (colon < n && (c[colon] == ' ' || c[colon] == '\t'))
        colon++;
    if (k == 0 || colon >= n || c[colon] != ':')
        abort();
}

static void check_msg(const struct inject_msg *m, bool strict)
{
    check_content(m->content, m->content_len, strict);
    if (!m->sender || (*m->sender && !smtp_mailbox_valid(m->sender, strlen(m->sender))))
        abort();
    if (m->nrcpt == 0 || !m->rcpts)
        abort();
    for (size_t i = 0; i < m->nrcpt; i++)
        if (!smtp_mailbox_valid(m->rcpts[i], strlen(m->rcpts[i])))
            abort();
}

static void fuzz_id(void *arg, char out[17])
{
    unsigned *n = arg;
    snprintf(out, 17, "%016x", ++*n);
}

static void run(const char *body, size_t len)
{
    struct inject_msg m;
    struct inject_batch b;
    char err[256];
    unsigned ids = 0;

    int rc = inject_v1_message(body, len, "relay.example", "0123456789abcdef", 1.7e9, &m, err,
                               sizeof err);
    if (rc == PT_OK)
        check_msg(&m, true);
    else if (rc != PT_INVALID || m.content || m.rcpts || m.sender || !memchr(err, 0, sizeof err))
        abort();
    inject_msg_free(&m);

    rc = inject_kumo(body, len, "relay.example", 1.7e9, fuzz_id, &ids, &b, err, sizeof err);
    if (rc == PT_OK) {
        for (size_t i = 0; i < b.nmsgs; i++)
            check_msg(&b.msgs[i], false);
        for (size_t i = 0; i < b.nfailed; i++)
            if (!b.failed[i].recipient || !b.failed[i].error)
                abort();
    } else if (rc != PT_INVALID || b.msgs || b.failed) {
        abort();
    }
    inject_batch_free(&b);
}

/* Piece i of the input as a JSON string (invalid UTF-8 octets become '?'). */
static json_t *piece(char *const *p, size_t i)
{
    char *s = p[i % PIECES];
    for (size_t k = 0; s[k]; k++) {
        size_t n = (unsigned char)s[k] < 0x80 ? 1 : utf8_seq_len((unsigned char *)s + k);
        if (n == 0)
            s[k] = '?';
        else
            k += n - 1;
    }
    return json_string(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run((const char *)data, size);

    /* NUL-separated pieces into two well-formed requests */
    char *copy = malloc(size + 1), *p[PIECES];
    size_t n = 0, start = 0;
    memcpy(copy, data, size);
    copy[size] = 0;
    for (size_t i = 0; i <= size && n < PIECES; i++)
        if (i == size || copy[i] == 0) {
            copy[i] = 0;
            p[n++] = copy + start;
            start = i + 1;
        }
    while (n < PIECES)
        p[n++] = copy + size;

    json_t *req = json_pack("{s:o, s:[o, o], s:[o], s:o, s:o, s:o, s:{s:o}, s:[{s:o, s:o}]}",
                            "from", piece(p, 0), "to", piece(p, 1), piece(p, 2), "bcc",
                            piece(p, 3), "subject", piece(p, 4), "text", piece(p, 5), "html",
                            piece(p, 6), "headers", "X-Fuzz", piece(p, 7), "attachments",
                            "filename", piece(p, 8), "content", piece(p, 9));
    json_t *kumo = json_pack("{s:o, s:o, s:[{s:o, s:o, s:{s:o}}, {s:o}], s:{s:o, s:o}}",
                             "envelope_sender", piece(p, 3), "content", piece(p, 5),
                             "recipients", "email", piece(p, 1), "name", piece(p, 0),
                             "substitutions", "name", piece(p, 4), "email", piece(p, 2),
                             "substitutions", "x", piece(p, 7), "y", piece(p, 10));
    char *j1 = req ? json_dumps(req, 0) : NULL, *j2 = kumo ? json_dumps(kumo, 0) : NULL;
    if (j1)
        run(j1, strlen(j1));
    if (j2)
        run(j2, strlen(j2));
    free(j1);
    free(j2);
    json_decref(req);
    json_decref(kumo);
    free(copy);
    return 0;
}
