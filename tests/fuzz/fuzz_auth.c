/* Fuzz target for SMTP AUTH: AUTH arguments and continuation lines through the SASL
 * state machine over a fixed users table (documented results only, challenges valid
 * base64, a user only after PT_OK), and users_parse. Never runs a slow crypt(3) hash.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/users.h"
#include "smtp/smtp_auth.h"
#include "util/base64.h"
#include "util/result.h"

#define FA_CHECK(cond) \
    do {               \
        if (!(cond))   \
            abort();   \
    } while (0)

/* carol/carolpw and erin/password, both {CRAM-MD5}: no crypt(3) cost per input. */
static const char fa_users_text[] =
    "carol:{CRAM-MD5}%s\n"
    "erin:{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740\n";

static struct users *fa_table(void)
{
    static struct users *u;
    if (!u) {
        char hash[USERS_CRAM_HASH_LEN + 1], text[512], err[256];
        FA_CHECK(users_cram_hash("carolpw", 7, hash, sizeof hash) == PT_OK);
        size_t n = 0;
        for (const char *p = fa_users_text; *p; p++) {
            if (p[0] == '%' && p[1] == 's') {
                memcpy(text + n, hash + sizeof USERS_CRAM_PREFIX - 1, 64);
                n += 64;
                p++;
            } else {
                text[n++] = *p;
            }
        }
        u = users_parse("fuzz", text, n, err, sizeof err);
        FA_CHECK(u != NULL);
    }
    return u;
}

static void fa_check_result(const struct sasl *s, int rc, const char *out)
{
    FA_CHECK(rc == PT_OK || rc == PT_AGAIN || rc == PT_INVALID || rc == PT_ERROR ||
             rc == PT_NOTFOUND || rc == PT_NOMEM);
    FA_CHECK(memchr(out, '\0', SASL_OUT_MAX) != NULL);
    if (rc == PT_AGAIN) {
        unsigned char dec[SASL_OUT_MAX];
        size_t n;
        FA_CHECK(sasl_in_progress(s));
        FA_CHECK(base64_decode(out, strlen(out), BASE64_CANONICAL, dec, sizeof dec, &n) == PT_OK);
        FA_CHECK(sasl_user(s) == NULL);
    } else {
        FA_CHECK(!sasl_in_progress(s));
        FA_CHECK(out[0] == '\0');
    }
    if (rc == PT_OK) {
        const char *u = sasl_user(s);
        FA_CHECK(u != NULL && (strcmp(u, "carol") == 0 || strcmp(u, "erin") == 0));
    } else {
        FA_CHECK(sasl_user(s) == NULL);
    }
}

/* Input: byte 0 picks the mode and the allowed list; the rest is lines split at
 * '\n'. Line 1 is "MECH[ initial]", each further line goes to sasl_step. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const allowed[] = { NULL, "PLAIN LOGIN CRAM-MD5", "PLAIN", "cram-md5 login" };
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const char *p = (const char *)data + 1, *end = (const char *)data + size;

    if (mode & 0x80) {                          /* users_file parser */
        char err[512];
        struct users *u = users_parse("fuzz", p, (size_t)(end - p), err, sizeof err);
        if (u) {                                /* no verify_plain: a fuzzed $y$ cost */
            static const unsigned char d[USERS_CRAM_DIGEST_LEN];   /* could be huge */
            FA_CHECK(users_verify_cram(u, "a", "<1.2@h>", 7, d) == PT_ERROR ||
                     users_has_cram(u));
            users_free(u);
        } else {
            FA_CHECK(strncmp(err, "fuzz:", 5) == 0);
        }
        return 0;
    }

    struct sasl s;
    char out[SASL_OUT_MAX], line[SASL_LINE_MAX * 2 + 1];
    sasl_init(&s, fa_table(), (mode & 4) ? "relay.example.com" : NULL);
    const char *allow = allowed[mode & 3];
    bool started = false;
    int rc = PT_INVALID;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        if (n > sizeof line - 1)
            n = sizeof line - 1;
        memcpy(line, p, n);
        line[n] = '\0';
        p = nl ? nl + 1 : end;
        memset(out, 'x', sizeof out);
        out[sizeof out - 1] = '\0';
        if (!started || (!sasl_in_progress(&s) && (mode & 8))) {
            char *sp = memchr(line, ' ', n);
            if (sp)
                *sp = '\0';
            rc = sasl_start(&s, line, sp ? sp + 1 : NULL, allow, out, sizeof out);
            started = true;
        } else {
            bool waiting = sasl_in_progress(&s);
            const char *user = sasl_user(&s);
            rc = sasl_step(&s, line, n, out, sizeof out);
            if (!waiting) {                     /* no exchange: refused, nothing changes */
                FA_CHECK(rc == PT_INVALID && out[0] == '\0' && sasl_user(&s) == user);
                continue;
            }
            FA_CHECK(sasl_was_cancelled(&s) == (n == 1 && line[0] == '*'));
        }
        fa_check_result(&s, rc, out);
    }
    sasl_reset(&s);
    FA_CHECK(sasl_user(&s) == NULL && !sasl_in_progress(&s));
    return 0;
}
