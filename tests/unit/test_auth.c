/* Unit tests of SMTP AUTH: the SASL server (PLAIN, LOGIN, CRAM-MD5, strict base64,
 * limits, cancel) over a users table in memory, and the AUTH failure ban tracker
 * (window, expiry, memory bound, threads). No sockets, no files.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/authban.h"
#include "core/users.h"
#include "smtp/smtp_auth.h"
#include "util/base64.h"
#include "util/result.h"

/* `openssl passwd -6 -salt Zq8vN2pXc1 bobpw` */
#define BOB_SHA512 "$6$Zq8vN2pXc1$pUMLbxwoCXzV2rpjaVstqqCPp/BvVHXF49H2pPy013.DebPAHLYAVYebLadhWHp0whVJHOSEZgPvepIl78tJY/"

static struct users *t_users;   /* alice: yescrypt, bob: $6$, carol: {CRAM-MD5} */

static int setup_users(void **state)
{
    (void)state;
    char y[USERS_HASH_MAX], cram[USERS_HASH_MAX], text[2048], err[256];
    if (users_crypt_hash("alicepw", y, sizeof y) != PT_OK ||
        users_cram_hash("carolpw", 7, cram, sizeof cram) != PT_OK)
        return -1;
    snprintf(text, sizeof text, "alice:%s\nbob:%s\ncarol:%s\n", y, BOB_SHA512, cram);
    t_users = users_parse("users.txt", text, strlen(text), err, sizeof err);
    return t_users ? 0 : -1;
}

static int teardown_users(void **state)
{
    (void)state;
    users_free(t_users);
    t_users = NULL;
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------- */

static char *b64(const void *p, size_t n)
{
    static char out[4][4096];
    static int k;
    char *o = out[k++ & 3];
    assert_int_equal(base64_encode(p, n, o, sizeof out[0]), PT_OK);
    return o;
}

static char *b64s(const char *s)
{
    return b64(s, strlen(s));
}

/* base64 of authzid NUL authcid NUL pass. */
static char *plain(const char *authzid, const char *authcid, const char *pass)
{
    char m[3000];
    size_t a = strlen(authzid), c = strlen(authcid), p = strlen(pass);
    assert_true(a + c + p + 2 <= sizeof m);
    memcpy(m, authzid, a);
    m[a] = '\0';
    memcpy(m + a + 1, authcid, c);
    m[a + 1 + c] = '\0';
    memcpy(m + a + c + 2, pass, p);
    return b64(m, a + c + p + 2);
}

static int start(struct sasl *s, const char *mech, const char *ir, char *out)
{
    sasl_init(s, t_users, "relay.example.com");
    return sasl_start(s, mech, ir, "PLAIN LOGIN CRAM-MD5", out, SASL_OUT_MAX);
}

static int step(struct sasl *s, const char *line, char *out)
{
    return sasl_step(s, line, strlen(line), out, SASL_OUT_MAX);
}

static char *decode(const char *in)
{
    static unsigned char out[SASL_OUT_MAX + 1];
    size_t n;
    assert_int_equal(base64_decode(in, strlen(in), BASE64_CANONICAL, out, SASL_OUT_MAX, &n), PT_OK);
    out[n] = '\0';
    return (char *)out;
}

/* ---- base64 ------------------------------------------------------------------------ */

static void test_base64(void **state)
{
    (void)state;
    unsigned char in[64], out[64];
    char enc[128];
    size_t n;
    for (size_t len = 0; len <= sizeof in; len++) {
        for (size_t i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 37 + len);
        assert_int_equal(base64_encode(in, len, enc, sizeof enc), PT_OK);
        assert_int_equal(strlen(enc), (len + 2) / 3 * 4);
        assert_int_equal(base64_decode(enc, strlen(enc), BASE64_CANONICAL, out, sizeof out, &n), PT_OK);
        assert_int_equal(n, len);
        assert_memory_equal(in, out, len);
    }
    assert_string_equal(b64s("Username:"), "VXNlcm5hbWU6");
    assert_string_equal(b64s("f"), "Zg==");
    assert_string_equal(b64s("fo"), "Zm8=");

    static const char *const bad[] = {
        "Zg", "Zg=", "Zg===", "Z===", "====", "Zm9v\n", " Zm9v", "Zm 9v", "Zm9v====",
        "Zh==",      /* non-zero pad bits */
        "Zm9=",      /* non-zero pad bits */
        "Zg==Zm9v",  /* padding in the middle */
        "Zm-v", "Zm_v", "Zm9\x80", "=Zm9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (base64_decode(bad[i], strlen(bad[i]), BASE64_CANONICAL, out, sizeof out, &n) != PT_INVALID)
            fail_msg("accepted bad base64 '%s'", bad[i]);
    assert_int_equal(base64_decode("Zm9vYmFy", 8, BASE64_CANONICAL, out, 5, &n), PT_TOOLONG);
    assert_int_equal(base64_encode("foo", 3, enc, 4), PT_TOOLONG);
    assert_int_equal(base64_decode("", 0, BASE64_CANONICAL, out, sizeof out, &n), PT_OK);
    assert_int_equal(n, 0);
}

/* ---- PLAIN --------------------------------------------------------------------------- */

static void test_plain_success(void **state)
{
    (void)state;
    struct sasl s;
    char out[SASL_OUT_MAX];
    assert_int_equal(start(&s, "PLAIN", plain("", "alice", "alicepw"), out), PT_OK);
    assert_string_equal(sasl_user(&s), "alice");
    assert_false(sasl_in_progress(&s));
    assert_int_equal(start(&s, "plain", plain("", "bob", "bobpw"), out), PT_OK);
    assert_string_equal(sasl_user(&s), "bob");
    assert_int_equal(start(&s, "Plain", plain("carol", "carol", "carolpw"), out), PT_OK);
    assert_string_equal(sasl_user(&s), "carol");

    /* without an initial response: empty challenge, then the message */
    assert_int_equal(start(&s, "PLAIN", NULL, out), PT_AGAIN);
    assert_string_equal(out, "");
    assert_true(sasl_in_progress(&s));
    assert_null(sasl_user(&s));
    assert_int_equal(step(&s, plain("", "carol", "carolpw"), out), PT_OK);
    assert_string_equal(sasl_user(&s), "carol");

    /* sasl_reset forgets the user and wipes it */
    sasl_reset(&s);
    assert_null(sasl_user(&s));
    for (size_t i = 0; i < sizeof s.user; i++)
        assert_int_equal(s.user[i], 0);
}

static void test_plain_failures(void **state)
{
    (void)state;
    struct sasl s;
    char out[SASL_OUT_MAX];
    assert_int_equal(start(&s, "PLAIN", plain("", "alice", "wrong"), out), PT_ERROR);
    assert_null(sasl_user(&s));
    assert_int_equal(start(&s, "PLAIN", plain("", "bob", "alicepw"), out), PT_ERROR);
    assert_int_equal(start(&s, "PLAIN", plain("", "carol", "carolpw "), out), PT_ERROR);
    /* unknown user: the same answer as a wrong password */
    assert_int_equal(start(&s, "PLAIN", plain("", "mallory", "alicepw"), out), PT_ERROR);
    /* authzid must be empty or the authcid: no proxy authorization */
    assert_int_equal(start(&s, "PLAIN", plain("bob", "alice", "alicepw"), out), PT_ERROR);
    assert_int_equal(start(&s, "PLAIN", plain("alicex", "alice", "alicepw"), out), PT_ERROR);
    /* empty user or password */
    assert_int_equal(start(&s, "PLAIN", plain("", "", ""), out), PT_ERROR);
    assert_int_equal(start(&s, "PLAIN", plain("", "alice", ""), out), PT_ERROR);
    assert_int_equal(start(&s, "PLAIN", plain("", "", "alicepw"), out), PT_ERROR);
    assert_null(sasl_user(&s));
}

static void test_plain_malformed(void **state)
{
    (void)state;
    struct sasl s;
    char out[SASL_OUT_MAX];
    assert_int_equal(start(&s, "PLAIN", "=", out), PT_INVALID);              /* empty */
    assert_int_equal(start(&s, "PLAIN", b64s("alice alicepw"), out), PT_INVALID);
    assert_int_equal(start(&s, "PLAIN", b64("alice\0alicepw", 13), out), PT_INVALID);
    assert_int_equal(start(&s, "PLAIN", b64("\0alice\0alice\0pw", 15), out), PT_INVALID);
    assert_int_equal(start(&s, "PLAIN", "AGFsaWNlAGFsaWNlcHc", out), PT_INVALID);  /* no pad */
    assert_int_equal(start(&s, "PLAIN", "AGFsaWNl!GFsaWNlcHc=", out), PT_INVALID);
    assert_int_equal(start(&s, "PLAIN", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, "not base64", out), PT_INVALID);
    assert_false(sasl_in_progress(&s));
    assert_int_equal(step(&s, plain("", "alice", "alicepw"), out), PT_INVALID);  /* no exchange */
    assert_null(sasl_user(&s));
}

static void test_plain_limits(void **state)
{
    (void)state;
    struct sasl s;
    char out[SASL_OUT_MAX];
    char name[USERS_NAME_MAX + 2], pass[USERS_PASS_MAX + 2];
    memset(name, 'u', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    memset(pass, 'p', sizeof pass - 1);
    pass[sizeof pass - 1] = '\0';
    /* over the caps: malformed */
    assert_int_equal(start(&s, "PLAIN", plain("", name, "x"), out), PT_INVALID);
    assert_int_equal(start(&s, "PLAIN", plain("", "alice", pass), out), PT_INVALID);
    assert_int_equal(start(&s, "PLAIN", plain(name, "alice", "x"), out), PT_INVALID);
    /* at the caps: well-formed, just wrong */
    name[USERS_NAME_MAX] = '\0';
    pass[USERS_PASS_MAX] = '\0';
    assert_int_equal(start(&s, "PLAIN", plain(name, name, pass), out), PT_ERROR);
    /* a line longer than SASL_LINE_MAX never gets decoded */
    char *huge = malloc(SASL_LINE_MAX * 4 + 1);
    assert_non_null(huge);
    memset(huge, 'A', SASL_LINE_MAX * 4);
    huge[SASL_LINE_MAX * 4] = '\0';
    assert_int_equal(start(&s, "PLAIN", huge, out), PT_INVALID);
    assert_int_equal(start(&s, "PLAIN", NULL, out), PT_AGAIN);
    assert_int_equal(sasl_step(&s, huge, SASL_LINE_MAX + 4, out, SASL_OUT_MAX), PT_INVALID);
    assert_int_equal(start(&s, "LOGIN", NULL, out), PT_AGAIN);
    assert_int_equal(sasl_step(&s, huge, SASL_LINE_MAX * 4, out, SASL_OUT_MAX), PT_INVALID);
    free(huge);
}

/* ---- LOGIN --------------------------------------------------------------------------- */

static void login_ok(const char *user, const char *pass)
{
    struct sasl s;
    char out[SASL_OUT_MAX];
    assert_int_equal(start(&s, "LOGIN", NULL, out), PT_AGAIN);
    assert_string_equal(out, "VXNlcm5hbWU6");
    assert_int_equal(step(&s, b64s(user), out), PT_AGAIN);
    assert_string_equal(out, "UGFzc3dvcmQ6");
    assert_null(sasl_user(&s));
    assert_int_equal(step(&s, b64s(pass), out), PT_OK);
    assert_string_equal(sasl_user(&s), user);
}

static void test_login(void **state)
{
    (void)state;
    login_ok("alice", "alicepw");
    login_ok("bob", "bobpw");
    login_ok("carol", "carolpw");

    struct sasl s;
    char out[SASL_OUT_MAX];
    /* initial response = the user name */
    assert_int_equal(start(&s, "login", b64s("carol"), out), PT_AGAIN);
    assert_string_equal(out, "UGFzc3dvcmQ6");
    assert_int_equal(step(&s, b64s("carolpw"), out), PT_OK);
    assert_string_equal(sasl_user(&s), "carol");

    assert_int_equal(start(&s, "LOGIN", b64s("alice"), out), PT_AGAIN);
    assert_int_equal(step(&s, b64s("nope"), out), PT_ERROR);
    assert_null(sasl_user(&s));
    assert_int_equal(start(&s, "LOGIN", b64s("nobody"), out), PT_AGAIN);
    assert_int_equal(step(&s, b64s("alicepw"), out), PT_ERROR);
    /* empty user or password */
    assert_int_equal(start(&s, "LOGIN", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, "", out), PT_ERROR);
    assert_int_equal(start(&s, "LOGIN", "=", out), PT_ERROR);
    assert_int_equal(start(&s, "LOGIN", b64s("alice"), out), PT_AGAIN);
    assert_int_equal(step(&s, "", out), PT_ERROR);
    /* a NUL would truncate the password for crypt(3): malformed */
    assert_int_equal(start(&s, "LOGIN", b64s("alice"), out), PT_AGAIN);
    assert_int_equal(step(&s, b64("alicepw\0x", 9), out), PT_INVALID);
    assert_int_equal(start(&s, "LOGIN", b64("al\0ice", 6), out), PT_INVALID);
    assert_int_equal(start(&s, "LOGIN", "%%%%", out), PT_INVALID);
    assert_null(sasl_user(&s));
}

/* ---- CRAM-MD5 ------------------------------------------------------------------------ */

/* base64 of "user hexdigest" for the challenge in out (base64). */
static char *cram_answer(const char *out, const char *user, const char *pass, bool upper)
{
    char chal[SASL_OUT_MAX];
    snprintf(chal, sizeof chal, "%s", decode(out));
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    assert_non_null(HMAC(EVP_md5(), pass, (int)strlen(pass), (unsigned char *)chal,
                         strlen(chal), mac, &n));
    char line[400];
    int len = snprintf(line, sizeof line, "%s ", user);
    for (unsigned int i = 0; i < n; i++)
        len += snprintf(line + len, sizeof line - (size_t)len, upper ? "%02X" : "%02x", mac[i]);
    return b64s(line);
}

static void test_cram(void **state)
{
    (void)state;
    struct sasl s;
    char out[SASL_OUT_MAX], first[SASL_OUT_MAX];
    assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
    const char *chal = decode(out);
    assert_true(chal[0] == '<' && chal[strlen(chal) - 1] == '>');
    assert_non_null(strstr(chal, "@relay.example.com>"));
    assert_non_null(strchr(chal, '.'));
    assert_int_equal(step(&s, cram_answer(out, "carol", "carolpw", false), out), PT_OK);
    assert_string_equal(sasl_user(&s), "carol");

    /* every exchange has a fresh challenge */
    assert_int_equal(start(&s, "cram-md5", NULL, first), PT_AGAIN);
    assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
    assert_string_not_equal(first, out);
    assert_int_equal(step(&s, cram_answer(out, "carol", "carolpw", true), out), PT_OK);

    /* an answer for another challenge fails */
    assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, cram_answer(first, "carol", "carolpw", false), out), PT_ERROR);
    /* wrong password, unknown user, crypt(3) users (no CRAM secret): all PT_ERROR */
    assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, cram_answer(out, "carol", "carolpx", false), out), PT_ERROR);
    assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, cram_answer(out, "mallory", "carolpw", false), out), PT_ERROR);
    assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, cram_answer(out, "bob", "bobpw", false), out), PT_ERROR);
    assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, cram_answer(out, "", "carolpw", false), out), PT_ERROR);
    assert_null(sasl_user(&s));

    /* malformed answers */
    static const char *const bad[] = {
        "carol", "carol 0123", "carol0123456789abcdef0123456789abcdef",
        "carol 0123456789abcdef0123456789abcdeg", "carol 0123456789abcdef0123456789abcdef0",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
        if (step(&s, b64s(bad[i]), out) != PT_INVALID)
            fail_msg("accepted CRAM-MD5 answer '%s'", bad[i]);
    }
    assert_int_equal(start(&s, "CRAM-MD5", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, b64("carol\0 0123456789abcdef0123456789abcdef", 39), out),
                     PT_INVALID);
    /* the server speaks first: an initial response is a protocol error */
    assert_int_equal(start(&s, "CRAM-MD5", b64s("carol 00"), out), PT_INVALID);
    assert_false(sasl_in_progress(&s));
}

/* ---- mechanisms, cancel, state --------------------------------------------------------- */

static void test_mechanisms(void **state)
{
    (void)state;
    struct sasl s;
    char out[SASL_OUT_MAX];
    sasl_init(&s, t_users, "h");
    assert_int_equal(sasl_start(&s, "XOAUTH2", NULL, NULL, out, sizeof out), PT_NOTFOUND);
    assert_int_equal(sasl_start(&s, "PLAINX", NULL, NULL, out, sizeof out), PT_NOTFOUND);
    assert_int_equal(sasl_start(&s, "", NULL, NULL, out, sizeof out), PT_NOTFOUND);
    assert_int_equal(sasl_start(&s, NULL, NULL, NULL, out, sizeof out), PT_NOTFOUND);
    assert_int_equal(sasl_start(&s, "CRAM-MD5", NULL, "PLAIN LOGIN", out, sizeof out),
                     PT_NOTFOUND);
    assert_int_equal(sasl_start(&s, "LOGIN", NULL, "", out, sizeof out), PT_NOTFOUND);
    assert_int_equal(sasl_start(&s, "login", NULL, "  plain  Login ", out, sizeof out), PT_AGAIN);
    assert_int_equal(sasl_start(&s, "CRAM-MD5", NULL, NULL, out, sizeof out), PT_AGAIN);
    assert_int_equal(sasl_start(&s, "PLAIN", plain("", "carol", "carolpw"), "PLAIN", out,
                                sizeof out), PT_OK);
    /* without a users table nothing is offered */
    sasl_init(&s, NULL, "h");
    assert_int_equal(sasl_start(&s, "PLAIN", plain("", "carol", "carolpw"), NULL, out,
                                sizeof out), PT_NOTFOUND);
    assert_null(sasl_user(&s));
}

static void test_cancel(void **state)
{
    (void)state;
    struct sasl s;
    char out[SASL_OUT_MAX];
    static const char *const mechs[] = { "PLAIN", "LOGIN", "CRAM-MD5" };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(start(&s, mechs[i], NULL, out), PT_AGAIN);
        assert_int_equal(step(&s, "*", out), PT_INVALID);
        assert_true(sasl_was_cancelled(&s));
        assert_false(sasl_in_progress(&s));
        assert_null(sasl_user(&s));
        assert_int_equal(step(&s, plain("", "carol", "carolpw"), out), PT_INVALID);
    }
    /* cancel in the middle of LOGIN forgets the name */
    assert_int_equal(start(&s, "LOGIN", b64s("carol"), out), PT_AGAIN);
    assert_int_equal(step(&s, "*", out), PT_INVALID);
    assert_int_equal(s.user[0], 0);
    /* a malformed line is not a cancel */
    assert_int_equal(start(&s, "PLAIN", NULL, out), PT_AGAIN);
    assert_int_equal(step(&s, "**", out), PT_INVALID);
    assert_false(sasl_was_cancelled(&s));
    /* a new AUTH after a cancel works */
    assert_int_equal(start(&s, "PLAIN", plain("", "carol", "carolpw"), out), PT_OK);
    assert_false(sasl_was_cancelled(&s));
}

static void test_restart_and_hostname(void **state)
{
    (void)state;
    struct sasl s;
    char out[SASL_OUT_MAX];
    sasl_init(&s, t_users, "bad host<name>\r\n");
    assert_int_equal(sasl_start(&s, "CRAM-MD5", NULL, NULL, out, sizeof out), PT_AGAIN);
    const char *chal = decode(out);
    assert_non_null(strstr(chal, "@badhostname>"));
    /* a new AUTH abandons the exchange in progress */
    assert_int_equal(sasl_start(&s, "LOGIN", NULL, NULL, out, sizeof out), PT_AGAIN);
    assert_int_equal(step(&s, b64s("carol"), out), PT_AGAIN);
    assert_int_equal(step(&s, b64s("carolpw"), out), PT_OK);
    /* a too small out buffer fails safely */
    char tiny[4];
    assert_int_equal(sasl_start(&s, "CRAM-MD5", NULL, NULL, tiny, sizeof tiny), PT_ERROR);
    assert_false(sasl_in_progress(&s));
    assert_null(sasl_user(&s));
    sasl_init(&s, t_users, NULL);
    assert_int_equal(sasl_start(&s, "CRAM-MD5", NULL, NULL, out, sizeof out), PT_AGAIN);
    assert_non_null(strstr(decode(out), "@localhost>"));
}

/* ---- authban ------------------------------------------------------------------------- */

static void test_ban_after_n(void **state)
{
    (void)state;
    struct authban *b = authban_new(5, 600, 600);
    assert_non_null(b);
    for (int i = 0; i < 4; i++) {
        assert_false(authban_failure(b, "192.0.2.1", 100 + i));
        assert_false(authban_is_banned(b, "192.0.2.1", 100 + i));
    }
    assert_false(authban_failure(b, "192.0.2.2", 104));
    assert_true(authban_failure(b, "192.0.2.1", 104));          /* the 5th: ban */
    assert_true(authban_is_banned(b, "192.0.2.1", 105));
    assert_true(authban_is_banned(b, "::ffff:192.0.2.1", 105)); /* same client */
    assert_false(authban_is_banned(b, "192.0.2.2", 105));
    /* failures while banned do not start or extend the ban */
    assert_false(authban_failure(b, "192.0.2.1", 600));
    assert_true(authban_is_banned(b, "192.0.2.1", 703.9));
    assert_false(authban_is_banned(b, "192.0.2.1", 704));       /* expired at 104 + 600 */
    /* after expiry the count starts over */
    for (int i = 0; i < 4; i++)
        assert_false(authban_failure(b, "192.0.2.1", 710 + i));
    assert_true(authban_failure(b, "192.0.2.1", 714));
    assert_true(authban_is_banned(b, "192.0.2.1", 715));
    authban_free(b);
}

/* A failure taken back (failure then success in one session) never adds up. */
static void test_ban_forgive(void **state)
{
    (void)state;
    struct authban *b = authban_new(5, 600, 600);
    assert_non_null(b);
    for (int i = 0; i < 20; i++) {
        assert_false(authban_failure(b, "192.0.2.9", 100 + i));
        authban_forgive(b, "192.0.2.9", 1, 100 + i);
    }
    assert_false(authban_is_banned(b, "192.0.2.9", 200));
    assert_int_equal(authban_count(b), 0);                     /* nothing left to count */
    /* only the newest failures go: 3 counted, 2 taken back, 1 left + 4 more = ban */
    for (int i = 0; i < 3; i++)
        assert_false(authban_failure(b, "192.0.2.9", 300 + i));
    authban_forgive(b, "192.0.2.9", 2, 303);
    for (int i = 0; i < 3; i++)
        assert_false(authban_failure(b, "192.0.2.9", 310 + i));
    assert_true(authban_failure(b, "192.0.2.9", 314));
    /* a ban is never lifted by forgiving */
    authban_forgive(b, "192.0.2.9", 5, 315);
    assert_true(authban_is_banned(b, "192.0.2.9", 316));
    authban_forgive(b, "not an address", 1, 316);
    authban_forgive(NULL, "192.0.2.9", 1, 316);
    authban_free(b);
}

static void test_ban_window(void **state)
{
    (void)state;
    struct authban *b = authban_new(5, 600, 600);
    assert_non_null(b);
    /* one failure every 200 s: never 5 within 600 s */
    for (int i = 0; i < 50; i++)
        assert_false(authban_failure(b, "2001:db8::1", 1000 + 200.0 * i));
    assert_false(authban_is_banned(b, "2001:db8::1", 1000 + 200.0 * 50));
    /* 5 within 600 s, not consecutive with older ones: ban */
    struct authban *c = authban_new(3, 60, 30);
    assert_false(authban_failure(c, "198.51.100.7", 0));
    assert_false(authban_failure(c, "198.51.100.7", 59));
    assert_false(authban_failure(c, "198.51.100.7", 60));        /* t=0 left the window */
    assert_true(authban_failure(c, "198.51.100.7", 61));         /* 59, 60, 61 */
    assert_true(authban_is_banned(c, "198.51.100.7", 90.5));
    assert_false(authban_is_banned(c, "198.51.100.7", 91));
    authban_free(b);
    authban_free(c);
}

static void test_ban_keys(void **state)
{
    (void)state;
    struct authban *b = authban_new(2, 60, 60);
    assert_non_null(b);
    /* IPv6 counts per /64 */
    assert_false(authban_failure(b, "2001:db8:1:2::1", 1));
    assert_true(authban_failure(b, "2001:db8:1:2:ffff::9", 2));
    assert_true(authban_is_banned(b, "2001:db8:1:2::abcd", 3));
    assert_true(authban_is_banned(b, "fe80::1%eth0", 3) == false);
    assert_false(authban_is_banned(b, "2001:db8:1:3::1", 3));
    /* IPv4 and its mapped form are one client */
    assert_false(authban_failure(b, "::ffff:203.0.113.5", 1));
    assert_true(authban_failure(b, "203.0.113.5", 2));
    /* zone ids are ignored */
    assert_false(authban_failure(b, "fe80::1%eth0", 1));
    assert_true(authban_failure(b, "fe80::2%eth1", 2));
    /* not addresses: never tracked */
    static const char *const junk[] = { "", "host.example", "1.2.3.4.5", "300.1.1.1",
                                        "%eth0", "[::1]" };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        for (int k = 0; k < 5; k++)
            assert_false(authban_failure(b, junk[i], 1 + k));
        assert_false(authban_is_banned(b, junk[i], 6));
    }
    assert_false(authban_failure(b, NULL, 1));
    assert_false(authban_is_banned(NULL, "1.2.3.4", 1));
    assert_int_equal(authban_count(b), 3);
    authban_free(b);
    authban_free(NULL);

    assert_null(authban_new(0, 60, 60));
    assert_null(authban_new(AUTHBAN_MAX_FAILURES + 1, 60, 60));
    assert_null(authban_new(5, 0, 60));
    assert_null(authban_new(5, 60, -1));
    assert_null(authban_new_cap(5, 60, 60, 0));
}

static void test_ban_bounded(void **state)
{
    (void)state;
    struct authban *b = authban_new_cap(3, 600, 600, 100);
    assert_non_null(b);
    char ip[64];
    /* ban one address, then flood with many fresh ones */
    for (int i = 0; i < 3; i++)
        authban_failure(b, "192.0.2.200", 1);
    assert_true(authban_is_banned(b, "192.0.2.200", 2));
    for (int i = 0; i < 50; i++) {
        snprintf(ip, sizeof ip, "10.0.%d.%d", i / 250, i % 250);
        authban_failure(b, ip, 2);
    }
    assert_true(authban_is_banned(b, "192.0.2.200", 3));       /* 51 <= 100: kept */
    for (int i = 0; i < 10000; i++) {
        snprintf(ip, sizeof ip, "10.1.%d.%d", i / 250, i % 250);
        authban_failure(b, ip, 3);
        assert_true(authban_count(b) <= 100);
    }
    assert_int_equal(authban_count(b), 100);
    /* the most recent ones are still counted */
    snprintf(ip, sizeof ip, "10.1.%d.%d", 9999 / 250, 9999 % 250);
    authban_failure(b, ip, 4);
    assert_true(authban_failure(b, ip, 4));
    /* records with nothing left to count age out */
    for (int i = 0; i < 200; i++)
        authban_failure(b, "192.0.2.77", 2000 + i * 0.001);
    assert_true(authban_count(b) < 10);
    authban_free(b);

    /* the default bound */
    b = authban_new(5, 600, 600);
    for (int i = 0; i < AUTHBAN_MAX_IPS + 1000; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
        authban_failure(b, ip, 1);
    }
    assert_int_equal(authban_count(b), AUTHBAN_MAX_IPS);
    authban_free(b);
}

#define BAN_THREADS 8
#define BAN_IPS 64
#define BAN_ROUNDS 2000

struct ban_worker {
    struct authban *b;
    int id, bans;
};

static void *ban_thread(void *arg)
{
    struct ban_worker *w = arg;
    char ip[64];
    for (int i = 0; i < BAN_ROUNDS; i++) {
        snprintf(ip, sizeof ip, "172.16.0.%d", (i * 7 + w->id) % BAN_IPS);
        if (authban_failure(w->b, ip, 10.0))
            w->bans++;
        authban_is_banned(w->b, ip, 10.0);
        snprintf(ip, sizeof ip, "172.17.%d.%d", w->id, i % 250);   /* churn the LRU */
        authban_failure(w->b, ip, 10.0);
    }
    return NULL;
}

/* Many threads: each shared address is banned exactly once, memory stays bounded. */
static void test_ban_threads(void **state)
{
    (void)state;
    struct authban *b = authban_new_cap(5, 600, 600, 4096);
    assert_non_null(b);
    pthread_t t[BAN_THREADS];
    struct ban_worker w[BAN_THREADS];
    for (int i = 0; i < BAN_THREADS; i++) {
        w[i] = (struct ban_worker){ .b = b, .id = i };
        assert_int_equal(pthread_create(&t[i], NULL, ban_thread, &w[i]), 0);
    }
    int bans = 0;
    for (int i = 0; i < BAN_THREADS; i++) {
        pthread_join(t[i], NULL);
        bans += w[i].bans;
    }
    assert_int_equal(bans, BAN_IPS);
    for (int i = 0; i < BAN_IPS; i++) {
        char ip[64];
        snprintf(ip, sizeof ip, "172.16.0.%d", i);
        assert_true(authban_is_banned(b, ip, 11));
    }
    assert_true(authban_count(b) <= 4096);
    authban_free(b);
}

/* Cluster sharing: a ban started here is reported once; a ban made elsewhere
 * refuses here until its end, and never shortens a longer one. */
static int ban_seen;
static double ban_until;

static void ban_observer(void *arg, const char *ip, double until)
{
    (void)arg;
    assert_string_equal(ip, "192.0.2.7");
    ban_seen++;
    ban_until = until;
}

static void test_ban_shared(void **state)
{
    struct authban *b = authban_new(2, 600, 300);
    authban_set_observer(b, ban_observer, NULL);
    assert_false(authban_failure(b, "192.0.2.7", 10.0));
    assert_int_equal(ban_seen, 0);
    assert_true(authban_failure(b, "192.0.2.7", 11.0));
    assert_int_equal(ban_seen, 1);
    assert_true(ban_until > 310.9 && ban_until < 311.1);
    authban_ban(b, "198.51.100.9", 50.0);
    assert_true(authban_is_banned(b, "198.51.100.9", 49.0));
    assert_false(authban_is_banned(b, "198.51.100.9", 50.5));
    authban_ban(b, "192.0.2.7", 20.0);          /* shorter: the local ban stays */
    assert_true(authban_is_banned(b, "192.0.2.7", 300.0));
    authban_ban(b, "2001:db8::1", 100.0);       /* per /64 as local bans */
    assert_true(authban_is_banned(b, "2001:db8::2", 99.0));
    authban_ban(b, "not an address", 100.0);
    assert_false(authban_is_banned(b, "not an address", 99.0));
    authban_set_observer(b, NULL, NULL);
    authban_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_plain_success),
        cmocka_unit_test(test_plain_failures),
        cmocka_unit_test(test_plain_malformed),
        cmocka_unit_test(test_plain_limits),
        cmocka_unit_test(test_login),
        cmocka_unit_test(test_cram),
        cmocka_unit_test(test_mechanisms),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_restart_and_hostname),
        cmocka_unit_test(test_ban_after_n),
        cmocka_unit_test(test_ban_window),
        cmocka_unit_test(test_ban_forgive),
        cmocka_unit_test(test_ban_keys),
        cmocka_unit_test(test_ban_bounded),
        cmocka_unit_test(test_ban_threads),
        cmocka_unit_test(test_ban_shared),
    };
    return cmocka_run_group_tests(tests, setup_users, teardown_users);
}
