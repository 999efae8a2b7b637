/* Fuzz target for the command phase: smtp_lines_next over a stream split at
 * arbitrary points (same lines and errors as in one piece, bounded buffering) and
 * smtp_cmd_parse on every line (no crash, results within the documented bounds),
 * with the BDAT argument parser on BDAT lines.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp_bdat.h"
#include "smtp/smtp_parse.h"
#include "util/result.h"

#define FC_CHECK(cond) \
    do {               \
        if (!(cond))   \
            abort();   \
    } while (0)

/* Summary of a stream's events, order-sensitive. */
struct fc_trace {
    uint64_t hash;
    size_t lines, toolong, pending;
};

static uint32_t fc_rand(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

static void fc_mix(struct fc_trace *t, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        t->hash = (t->hash ^ b[i]) * 1099511628211ull;
}

static void fc_check_cmd(const char *line, size_t n)
{
    struct smtp_cmd cmd;
    int rc = smtp_cmd_parse(line, n, &cmd);

    FC_CHECK(rc == PT_OK || rc == PT_INVALID);
    FC_CHECK(cmd.arg >= line && cmd.arg + cmd.arg_len <= line + n);
    FC_CHECK(memchr(cmd.path, 0, sizeof cmd.path) != NULL);
    FC_CHECK(smtp_verb_name(cmd.verb) != NULL);
    if (rc == PT_INVALID) {
        FC_CHECK(cmd.error && strlen(cmd.error) > 4);
        FC_CHECK(cmd.error[0] == '5' && cmd.error[3] == ' ');
        return;
    }
    FC_CHECK(cmd.error == NULL);
    for (size_t i = 0; i < n; i++)
        FC_CHECK((unsigned char)line[i] >= 0x20 && line[i] != 0x7f);
    if ((cmd.verb == SMTP_VERB_MAIL || cmd.verb == SMTP_VERB_RCPT) && cmd.path[0]) {
        const char *dom = smtp_addr_domain(cmd.path);
        char lower[SMTP_DOMAIN_MAX + 1];
        FC_CHECK(strlen(cmd.path) <= SMTP_PATH_MAX - 2);
        if (cmd.verb == SMTP_VERB_RCPT && !dom) {
            FC_CHECK(strlen(cmd.path) == 10); /* postmaster */
        } else {
            FC_CHECK(dom && smtp_domain_valid(dom, strlen(dom)));
            smtp_domain_lower(dom, lower, sizeof lower);
            FC_CHECK(strlen(lower) == strlen(dom));
        }
    }
    if (cmd.verb == SMTP_VERB_MAIL)
        FC_CHECK(!cmd.path_utf8 || cmd.smtputf8);
    if (cmd.verb == SMTP_VERB_BDAT) {
        /* the server reads the chunk size from the argument the parser leaves */
        uint64_t size;
        bool last;
        int brc = smtp_bdat_args(cmd.arg, cmd.arg_len, &size, &last);
        FC_CHECK(brc == PT_OK || brc == PT_INVALID);
        FC_CHECK(brc != PT_OK || cmd.arg_len > 0);
    }
    if (cmd.verb == SMTP_VERB_HELO || cmd.verb == SMTP_VERB_EHLO)
        FC_CHECK(cmd.path[0] && strlen(cmd.path) <= SMTP_DOMAIN_MAX);
}

/* Runs the splitter like a server would: a pending buffer, pieces appended, all
 * complete lines taken out after each piece. piece_seed 0 = one piece. */
static void fc_stream(const char *in, size_t len, size_t max, uint32_t seed,
                      struct fc_trace *t)
{
    struct smtp_lines s;
    char *pend = malloc(len + 1);
    size_t plen = 0, off = 0;

    FC_CHECK(pend);
    memset(t, 0, sizeof *t);
    smtp_lines_init(&s, max);
    while (off < len || off == 0) {
        size_t piece = len - off;
        if (seed) {
            uint32_t k = fc_rand(&seed);
            size_t want = (k & 1) ? (k >> 1) % 8 : (k >> 1) % 700;
            if (want < piece)
                piece = want;
        }
        memcpy(pend + plen, in + off, piece);
        plen += piece;
        off += piece;
        for (;;) {
            size_t line_len = 0, used = 0;
            int rc = smtp_lines_next(&s, pend, plen, &line_len, &used);
            FC_CHECK(used <= plen);
            if (rc == PT_OK) {
                FC_CHECK(used == line_len + 1 || used == line_len + 2);
                FC_CHECK(used <= s.max);
                FC_CHECK(pend[used - 1] == '\n');
                FC_CHECK(!memchr(pend, '\n', line_len));
                fc_mix(t, "L", 1);
                fc_mix(t, pend, line_len);
                t->lines++;
                if (!seed)
                    fc_check_cmd(pend, line_len);
            } else if (rc == PT_TOOLONG) {
                FC_CHECK(pend[used - 1] == '\n');
                fc_mix(t, "T", 1);
                t->toolong++;
            } else {
                FC_CHECK(rc == PT_AGAIN);
            }
            memmove(pend, pend + used, plen - used);
            plen -= used;
            if (rc == PT_AGAIN) {
                /* bounded: never more than one line's worth is kept */
                FC_CHECK(plen < s.max);
                break;
            }
        }
        if (len == 0)
            break;
    }
    t->pending = plen;
    free(pend);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fc_trace whole, split;
    size_t max;
    uint32_t seed;

    if (size < 3)
        return 0;
    /* mostly small maxima, so over-long lines are common */
    max = data[0] < 16 ? SMTP_LINE_MAX : (size_t)(data[0] % 64) + 1;
    seed = ((uint32_t)data[1] << 8 | data[2]) | 1u;
    data += 3;
    size -= 3;

    fc_stream((const char *)data, size, max, 0, &whole);
    fc_stream((const char *)data, size, max, seed, &split);
    FC_CHECK(whole.hash == split.hash && whole.lines == split.lines);
    FC_CHECK(whole.toolong == split.toolong && whole.pending == split.pending);

    /* the parser alone, on the raw input as one line (bounded like a real line) */
    fc_check_cmd((const char *)data, size < SMTP_AUTH_LINE_MAX ? size : SMTP_AUTH_LINE_MAX);
    return 0;
}
