/* Unit tests for the DKIM signer: relaxed canonicalization (RFC 6376 3.4.5), the
 * From domain, key loading errors, the shape of the field, and signatures checked
 * by an independent verifier (python3-dkim) — which must also reject tampering.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dkim/dkim.h"
#include "util/buf.h"
#include "util/headers.h"
#include "util/result.h"

#define T_DOMAIN "example.com"
static const char *const t_headers[] = { "To", "Subject", "Date", "Message-ID", "Received",
                                         "Cc" };
#define T_NHEADERS 6

/* The group fixture: a temp dir with keys, their DNS TXT records. */
static char t_dir[] = "/tmp/petrel_dkim_XXXXXX";
static char t_rsa[64], t_ed[64], t_rsa512[64];
static char *t_rsa_txt, *t_ed_txt;
static struct dkim_key *t_krsa, *t_ked;

static char *b64(const unsigned char *p, size_t n)
{
    char *s = malloc(4 * ((n + 2) / 3) + 1);
    assert_non_null(s);
    EVP_EncodeBlock((unsigned char *)s, p, (int)n);
    return s;
}

static void write_key(EVP_PKEY *k, const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
}

static int setup(void **state)
{
    if (!mkdtemp(t_dir))
        return -1;
    snprintf(t_rsa, sizeof t_rsa, "%s/rsa.pem", t_dir);
    snprintf(t_ed, sizeof t_ed, "%s/ed.pem", t_dir);
    snprintf(t_rsa512, sizeof t_rsa512, "%s/rsa512.pem", t_dir);
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512);
    if (!rsa || !ed || !small)
        return -1;
    write_key(rsa, t_rsa);
    write_key(ed, t_ed);
    write_key(small, t_rsa512);

    unsigned char *der = NULL;
    int n = i2d_PUBKEY(rsa, &der);
    char *p = b64(der, (size_t)n);
    OPENSSL_free(der);
    assert_true(asprintf(&t_rsa_txt, "v=DKIM1; k=rsa; p=%s", p) > 0);
    free(p);
    unsigned char raw[32];
    size_t rl = sizeof raw;
    assert_int_equal(EVP_PKEY_get_raw_public_key(ed, raw, &rl), 1);
    p = b64(raw, rl);
    assert_true(asprintf(&t_ed_txt, "v=DKIM1; k=ed25519; p=%s", p) > 0);
    free(p);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(small);

    char err[256];
    t_krsa = dkim_key_load(T_DOMAIN, "rsa", t_rsa, "rsa-sha256", t_headers, T_NHEADERS, err,
                           sizeof err);
    t_ked = dkim_key_load(T_DOMAIN, "ed", t_ed, "ed25519-sha256", t_headers, T_NHEADERS, err,
                          sizeof err);
    return t_krsa && t_ked ? 0 : -1;
}

static int teardown(void **state)
{
    dkim_key_free(t_krsa);
    dkim_key_free(t_ked);
    free(t_rsa_txt);
    free(t_ed_txt);
    unlink(t_rsa);
    unlink(t_ed);
    unlink(t_rsa512);
    rmdir(t_dir);
    return 0;
}

/* ---- oracles ---- */

/* Checks the field's shape: name, CRLF line ends only, lines of <= 78 octets,
 * continuation lines start with WSP, one field. */
static void assert_field_shape(const char *s, size_t n)
{
    assert_true(n > 18);
    assert_memory_equal(s, "DKIM-Signature: ", 16);
    assert_memory_equal(s + n - 2, "\r\n", 2);
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            assert_true(i + 1 < n && s[i + 1] == '\n');
            assert_true(col <= DKIM_FOLD_AT);
            if (i + 2 < n)
                assert_true(s[i + 2] == ' ' || s[i + 2] == '\t');
            i++;
            col = 0;
            continue;
        }
        assert_true(s[i] != '\n' && s[i] != 0);
        col++;
    }
}

/* The value of tag name in the field s, unfolded, all white space removed
 * (malloc'd), or NULL. */
static char *tag(const char *s, const char *name)
{
    char *flat = malloc(strlen(s) + 1);
    size_t k = 0;
    for (const char *p = strchr(s, ':') + 1; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            flat[k++] = *p;
    flat[k] = 0;
    char *res = NULL;
    size_t nl = strlen(name);
    for (char *t = flat; t && *t;) {
        char *end = strchr(t, ';');
        if (strncmp(t, name, nl) == 0 && t[nl] == '=') {
            res = end ? strndup(t + nl + 1, (size_t)(end - t - nl - 1)) : strdup(t + nl + 1);
            break;
        }
        t = end ? end + 1 : NULL;
    }
    free(flat);
    return res;
}

/* The tag names of the field in order, ';'-joined ("v;a;c;..."). */
static void tag_order(const char *s, char *out, size_t n)
{
    out[0] = 0;
    const char *p = strchr(s, ':') + 1;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        const char *eq = strchr(p, '=');
        if (!eq)
            break;
        if (*out)
            strncat(out, ";", n - strlen(out) - 1);
        strncat(out, p, (size_t)(eq - p) < n - strlen(out) - 1 ? (size_t)(eq - p)
                                                              : n - strlen(out) - 1);
        const char *semi = strchr(eq, ';');
        if (!semi)
            break;
        p = semi + 1;
    }
}

static char *sign_str(const struct dkim_key *k, const char *msg, int want_rc)
{
    struct buf out;
    buf_init(&out, 0);
    int rc = dkim_sign(k, msg, strlen(msg), (double)time(NULL), &out);
    assert_int_equal(rc, want_rc);
    if (rc != PT_OK) {
        buf_free(&out);
        return NULL;
    }
    assert_field_shape(out.data, out.len);
    return buf_steal(&out, NULL);
}

/* ---- canonicalization ---- */

static void canon_h(const char *name, const char *value, const char *want)
{
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(dkim_canon_header(name, strlen(name), value, strlen(value), &b), PT_OK);
    assert_string_equal(b.data, want);
    buf_free(&b);
}

static void canon_b(const char *body, const char *want)
{
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(dkim_canon_body(body, strlen(body), &b), PT_OK);
    assert_int_equal(b.len, strlen(want));
    if (b.len)
        assert_memory_equal(b.data, want, b.len);
    buf_free(&b);
}

static void test_canon_header(void **state)
{
    canon_h("SUBJect", " AbC\r\n\tdef  ", "subject:AbC def\r\n");
    canon_h("X", "", "x:\r\n");
    canon_h("X", " \t \r\n  ", "x:\r\n");
    canon_h("To", "\ta \t\t b\r\n c\t", "to:a b c\r\n");
    canon_h("Message-ID", "<1@x>", "message-id:<1@x>\r\n");

    /* RFC 6376 3.4.5, through the header walker (WSP before the colon) */
    const char *msg = "A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
    size_t pos = 0;
    struct hdr_field f;
    struct buf b;
    buf_init(&b, 0);
    while (hdr_next(msg, strlen(msg), &pos, &f))
        assert_int_equal(dkim_canon_header(f.name, f.name_len, f.value, f.value_len, &b), PT_OK);
    assert_string_equal(b.data, "a:X\r\nb:Y Z\r\n");
    buf_free(&b);
    assert_memory_equal(msg + pos, "\r\n", 2);
    canon_b(msg + pos + 2, " C\r\nD E\r\n");
}

static void test_canon_body(void **state)
{
    canon_b("", "");
    canon_b("\r\n", "");
    canon_b("\r\n\r\n\r\n", "");
    canon_b(" \t \r\n\t\r\n", "");
    canon_b("x", "x\r\n");
    canon_b("x \t", "x\r\n");
    canon_b("a  b \t\r\n\r\n c\r\n\r\n", "a b\r\n\r\n c\r\n");
    canon_b("\r\n\r\nx\r\n", "\r\n\r\nx\r\n");
    canon_b("a\r\n \r\nb", "a\r\n\r\nb\r\n");
    canon_b("a\rb\n c\r\n", "a\rb\n c\r\n");   /* bare CR/LF are not line ends */
}

static void test_empty_body_hash(void **state)
{
    static const char want[] = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    unsigned char h[32];
    assert_int_equal(EVP_Digest("", 0, h, NULL, EVP_sha256(), NULL), 1);
    char *s = b64(h, sizeof h);
    assert_string_equal(s, want);
    free(s);
    static const char *const msgs[] = {
        "From: a@example.com\r\nSubject: x\r\n",
        "From: a@example.com\r\nSubject: x\r\n\r\n",
        "From: a@example.com\r\n\r\n\r\n \t\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof msgs / sizeof *msgs; i++) {
        char *sig = sign_str(t_ked, msgs[i], PT_OK);
        char *bh = tag(sig, "bh");
        assert_string_equal(bh, want);
        free(bh);
        free(sig);
    }
}

/* ---- addresses ---- */

static void from_is(const char *msg, const char *want)
{
    char out[256];
    bool ok = dkim_from_domain(msg, strlen(msg), out);
    if (!want) {
        if (ok)
            fail_msg("expected no domain for %s, got %s", msg, out);
        return;
    }
    if (!ok)
        fail_msg("no domain for %s", msg);
    assert_string_equal(out, want);
}

static void test_from_domain(void **state)
{
    from_is("From: a@B.Example\r\n\r\n", "b.example");
    from_is("Subject: x\r\nFROM: Joe <joe@Mail.Example.COM>\r\n\r\nbody\r\n", "mail.example.com");
    from_is("From: \"Doe, John\" <j@x.example>\r\n\r\n", "x.example");
    from_is("From: \"a@evil.example\"@good.example\r\n\r\n", "good.example");
    from_is("From: \"q<@x>\" <u@y.example>\r\n\r\n", "y.example");
    from_is("From: joe@x.example (Joe @ work <j@evil.example>)\r\n\r\n", "x.example");
    from_is("From: (c) Joe (n(ested)) <joe (c) @ (c) x.example (c)>\r\n\r\n", "x.example");
    from_is("From: Joe\r\n  Public\r\n\t<joe@\r\n folded.example>\r\n\r\n", "folded.example");
    from_is("From: a@one.example, b@two.example\r\n\r\n", "one.example");
    from_is("From: Team: a@team.example, b@x.example;\r\n\r\n", "team.example");
    from_is("From: <@route.example:u@real.example>\r\n\r\n", "real.example");
    from_is("From: \\@x <u@bs.example>\r\n\r\n", "bs.example");
    from_is("From: u@a . b.example\r\n\r\n", "a.b.example");
    from_is("From: a@x.example\r\nFrom: b@y.example\r\n\r\n", "x.example");
    from_is("To: a@x.example\r\n\r\nFrom: a@b.example\r\n", NULL);   /* in the body */
    from_is("From: undisclosed\r\n\r\n", NULL);
    from_is("From: a@[192.0.2.1]\r\n\r\n", NULL);
    from_is("From: a@\r\n\r\n", NULL);
    from_is("From: a@b..example\r\n\r\n", NULL);
    from_is("From: a@b.example junk\r\n\r\n", NULL);
    from_is("From: <a@b.example.>\r\n\r\n", NULL);
    from_is("From: undisclosed-recipients:;\r\n\r\n", NULL);
    from_is("", NULL);
    from_is("From: \"unterminated <a@b.example>\r\n\r\n", NULL);
}

static void test_domain_covers(void **state)
{
    assert_true(dkim_domain_covers("example.com", "example.com"));
    assert_true(dkim_domain_covers("Example.COM", "example.com"));
    assert_true(dkim_domain_covers("example.com", "mail.EXAMPLE.com"));
    assert_true(dkim_domain_covers("example.com", "a.b.example.com"));
    assert_true(dkim_domain_covers("example.com.", "example.com"));
    assert_false(dkim_domain_covers("example.com", "badexample.com"));
    assert_false(dkim_domain_covers("example.com", "example.com.evil"));
    assert_false(dkim_domain_covers("mail.example.com", "example.com"));
    assert_false(dkim_domain_covers("example.com", "com"));
    assert_false(dkim_domain_covers("", "example.com"));
    assert_false(dkim_domain_covers("example.com", ""));
    assert_false(dkim_domain_covers(NULL, "example.com"));
    assert_false(dkim_domain_covers("example.com", NULL));
}

/* ---- keys ---- */

static void load_fails(const char *domain, const char *sel, const char *file, const char *alg,
                       const char *const *h, int nh, const char *want)
{
    char err[256] = "";
    struct dkim_key *k = dkim_key_load(domain, sel, file, alg, h, nh, err, sizeof err);
    if (k)
        fail_msg("loaded; expected \"%s\"", want);
    if (!strstr(err, want))
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void test_key_load(void **state)
{
    char want[128], missing[96], garbage[96];
    snprintf(missing, sizeof missing, "%s/none.pem", t_dir);
    snprintf(want, sizeof want, "key_file %s: cannot open", missing);
    load_fails(T_DOMAIN, "s", missing, "rsa-sha256", NULL, 0, want);
    snprintf(want, sizeof want, "key_file %s: not an Ed25519 key", t_rsa);
    load_fails(T_DOMAIN, "s", t_rsa, "ed25519-sha256", NULL, 0, want);
    snprintf(want, sizeof want, "key_file %s: not an RSA key", t_ed);
    load_fails(T_DOMAIN, "s", t_ed, "rsa-sha256", NULL, 0, want);
    snprintf(want, sizeof want, "key_file %s: RSA key of 512 bits", t_rsa512);
    load_fails(T_DOMAIN, "s", t_rsa512, "rsa-sha256", NULL, 0, want);
    snprintf(garbage, sizeof garbage, "%s/garbage.pem", t_dir);
    FILE *f = fopen(garbage, "w");
    fputs("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    snprintf(want, sizeof want, "key_file %s: not a PEM private key", garbage);
    load_fails(T_DOMAIN, "s", garbage, "rsa-sha256", NULL, 0, want);
    unlink(garbage);
    load_fails(T_DOMAIN, "s", t_rsa, "rsa-sha1", NULL, 0, "algorithm rsa-sha1: unknown");
    load_fails("bad domain", "s", t_rsa, "rsa-sha256", NULL, 0, "domain bad domain");
    load_fails("a..b", "s", t_rsa, "rsa-sha256", NULL, 0, "domain a..b");
    load_fails(T_DOMAIN, "", t_rsa, "rsa-sha256", NULL, 0, "selector");
    static const char *const bad[] = { "To", "X;Y" };
    load_fails(T_DOMAIN, "s", t_rsa, "rsa-sha256", bad, 2, "header X;Y");

    /* From is added once, first when not listed, and duplicates count once */
    static const char *const dup[] = { "subject", "From", "Subject" };
    char err[256];
    struct dkim_key *k = dkim_key_load("Mail.Example.COM", "s1", t_ed, "ed25519-sha256", dup, 3,
                                       err, sizeof err);
    assert_non_null(k);
    assert_string_equal(dkim_key_domain(k), "mail.example.com");
    char *sig = sign_str(k, "Subject: a\r\nFrom: b@c.example\r\n\r\n", PT_OK);
    char *h = tag(sig, "h");
    assert_string_equal(h, "subject:From");
    free(h);
    free(sig);
    dkim_key_free(k);
    dkim_key_free(NULL);
}

/* ---- the field ---- */

static void test_sign_shape(void **state)
{
    const char *msg = "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                      "Received: from c by d; Mon, 1 Jan 2024 00:00:01 +0000\r\n"
                      "From: Joe <joe@example.com>\r\n"
                      "To: x@y.example\r\n"
                      "Subject: hi\r\n"
                      "X-Other: not signed\r\n\r\nbody\r\n";
    char *sig = sign_str(t_krsa, msg, PT_OK);
    char order[128];
    tag_order(sig, order, sizeof order);
    assert_string_equal(order, "v;a;c;d;s;t;h;bh;b");
    char *v;
    assert_string_equal(v = tag(sig, "a"), "rsa-sha256");
    free(v);
    assert_string_equal(v = tag(sig, "c"), "relaxed/relaxed");
    free(v);
    assert_string_equal(v = tag(sig, "d"), T_DOMAIN);
    free(v);
    assert_string_equal(v = tag(sig, "s"), "rsa");
    free(v);
    assert_string_equal(v = tag(sig, "h"), "From:To:Subject:Received:Received");
    free(v);
    assert_int_equal(strlen(v = tag(sig, "b")), 344);     /* 2048 bits */
    free(v);
    assert_null(tag(sig, "x"));
    assert_null(tag(sig, "l"));
    assert_null(tag(sig, "i"));
    free(sig);

    /* t= is the integer part of now */
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(dkim_sign(t_ked, msg, strlen(msg), 1700000000.9, &out), PT_OK);
    assert_string_equal(v = tag(out.data, "t"), "1700000000");
    free(v);
    assert_string_equal(v = tag(out.data, "a"), "ed25519-sha256");
    free(v);
    assert_int_equal(strlen(v = tag(out.data, "b")), 88);  /* 64 octets */
    free(v);
    /* appends, and Ed25519/PKCS#1 v1.5 are deterministic */
    size_t first = out.len;
    assert_int_equal(dkim_sign(t_ked, msg, strlen(msg), 1700000000.2, &out), PT_OK);
    assert_int_equal(out.len, 2 * first);
    assert_memory_equal(out.data, out.data + first, first);
    buf_free(&out);

    assert_null(sign_str(t_krsa, "To: a@b.example\r\n\r\nFrom: x@example.com\r\n", PT_INVALID));
    assert_null(sign_str(t_krsa, "", PT_INVALID));
    assert_null(sign_str(t_krsa, "\r\nFrom: a@b\r\n", PT_INVALID));
    assert_null(sign_str(t_krsa, "not a header\r\n\r\n", PT_INVALID));
    assert_null(sign_str(t_krsa, "From: a@example.com\r\nnot a field\r\n\r\nx\r\n", PT_INVALID));
    assert_null(sign_str(t_krsa, "From: a@example.com\n\nx\n", PT_INVALID));
}

/* Long names and many instances still fold to <= 78 octets. */
static void test_sign_folding(void **state)
{
    static const char *const names[] = {
        "X-A-Very-Long-Header-Field-Name-That-Goes-On-And-On-For-Sixty-Fo",
        "Received",
    };
    char err[256];
    char dom[DKIM_DOMAIN_MAX + 1];
    memset(dom, 'a', DKIM_DOMAIN_MAX);
    memcpy(dom + DKIM_DOMAIN_MAX - 8, ".example", 8);
    dom[DKIM_DOMAIN_MAX] = 0;
    struct dkim_key *k = dkim_key_load(dom, "a-selector-of-sixty-three-octets-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                       t_rsa, "rsa-sha256", names, 2, err, sizeof err);
    if (!k)
        fail_msg("%s", err);
    struct buf m;
    buf_init(&m, 0);
    for (int i = 0; i < 40; i++)
        buf_appendf(&m, "Received: %d\r\n%s: v\r\n", i, names[0]);
    buf_appends(&m, "From: a@b.example\r\n\r\n");
    char *sig = sign_str(k, m.data, PT_OK);
    char *h = tag(sig, "h");
    assert_int_equal(strlen(h), 4 + 40 * (strlen(names[0]) + 1) + 40 * 9);
    free(h);
    free(sig);
    buf_free(&m);
    dkim_key_free(k);
}

struct sign_job {
    const char *msg;
    char *sig;
};

static void *sign_thread(void *arg)
{
    struct sign_job *j = arg;
    for (int i = 0; i < 40; i++) {
        struct buf out;
        buf_init(&out, 0);
        if (dkim_sign(i % 2 ? t_krsa : t_ked, j->msg, strlen(j->msg), 1700000000, &out) != PT_OK)
            abort();
        if (i == 0)
            j->sig = buf_steal(&out, NULL);
        else if (i % 2 == 0 && strcmp(out.data, j->sig) != 0)
            abort();
        buf_free(&out);
    }
    return NULL;
}

static void test_sign_threads(void **state)
{
    pthread_t th[4];
    struct sign_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct sign_job){ .msg = "From: a@example.com\r\nTo: b@c\r\n\r\nhi\r\n" };
        assert_int_equal(pthread_create(&th[i], NULL, sign_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 1; i < 4; i++)
        assert_string_equal(jobs[i].sig, jobs[0].sig);
    for (int i = 0; i < 4; i++)
        free(jobs[i].sig);
}

/* ---- an independent verifier ---- */

static const char py_verify[] =
    "import sys, dkim\n"
    "rec = {b'rsa._domainkey.example.com': open(sys.argv[1], 'rb').read().strip(),\n"
    "       b'ed._domainkey.example.com': open(sys.argv[2], 'rb').read().strip()}\n"
    "def dnsfunc(name, timeout=5):\n"
    "    return rec.get(name.rstrip(b'.'))\n"
    "bad = 0\n"
    "for arg in sys.argv[3:]:\n"
    "    want, path = arg.split(':', 1)\n"
    "    got = dkim.verify(open(path, 'rb').read(), dnsfunc=dnsfunc)\n"
    "    if got != (want == '1'):\n"
    "        print('dkim.verify gave', got, 'for', path, file=sys.stderr)\n"
    "        bad += 1\n"
    "sys.exit(1 if bad else 0)\n";

static const char *const py_msgs[] = {
    "From: \"Joe Q. Public\" <joe@example.com>\r\n"
    "To: bob@x.example\r\n"
    "Subject: hello\r\n"
    "Date: Mon, 23 Nov 2026 23:38:02 +0000\r\n"
    "Message-ID: <1@example.com>\r\n"
    "\r\n"
    "Hello, Bob.\r\n",

    "From: Joe\r\n\t<joe@example.com>\r\n"
    "To: bob@x.example,\r\n   carol@y.example  \r\n"
    "Subject:   a long subject that\r\n\tis   folded\t \r\n over three lines \r\n"
    "Date: Mon, 23 Nov 2026 23:38:02 +0000\r\n"
    "\r\n"
    "  leading and \t\t inner   blanks \t \r\n"
    "\t\r\n"
    "\r\n"
    "last line\t\r\n"
    "\r\n"
    "\r\n"
    " \r\n",

    "Received: from a.example by relay.example; Mon, 23 Nov 2026 23:38:00 +0000\r\n"
    "Received: from b.example\r\n  by a.example; Mon, 23 Nov 2026 23:37:59 +0000\r\n"
    "From: joe@example.com\r\n"
    "Subject: two received\r\n"
    "X-Unsigned: whatever\r\n"
    "\r\n"
    "body without a final line end",

    "From: joe@example.com\r\n"
    "subject: empty body\r\n"
    "\r\n",
};

static void write_file(const char *path, const char *a, size_t an, const char *b, size_t bn)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(a, 1, an, f), an);
    assert_int_equal(fwrite(b, 1, bn, f), bn);
    fclose(f);
}

static void test_python_verifies(void **state)
{
    if (access("/usr/bin/python3", X_OK) != 0 ||
        system("cd /tmp && /usr/bin/python3 -c 'import dkim' >/dev/null 2>&1") != 0) {
        skip();
        return;
    }
    bool have_nacl = system("cd /tmp && /usr/bin/python3 -c 'import nacl' >/dev/null 2>&1") == 0;
    char path[128];
    struct buf cmd;
    buf_init(&cmd, 0);
    snprintf(path, sizeof path, "%s/verify.py", t_dir);
    write_file(path, py_verify, strlen(py_verify), "", 0);
    buf_appendf(&cmd, "cd /tmp && /usr/bin/python3 %s %s/rsa.txt %s/ed.txt", path, t_dir, t_dir);
    snprintf(path, sizeof path, "%s/rsa.txt", t_dir);
    write_file(path, t_rsa_txt, strlen(t_rsa_txt), "", 0);
    snprintf(path, sizeof path, "%s/ed.txt", t_dir);
    write_file(path, t_ed_txt, strlen(t_ed_txt), "", 0);

    int nfiles = 0;
    const struct dkim_key *keys[] = { t_krsa, t_ked };
    for (int ki = 0; ki < (have_nacl ? 2 : 1); ki++) {
        for (size_t mi = 0; mi < sizeof py_msgs / sizeof *py_msgs; mi++) {
            const char *m = py_msgs[mi];
            size_t n = strlen(m);
            char *sig = sign_str(keys[ki], m, PT_OK);
            /* as signed: must verify */
            snprintf(path, sizeof path, "%s/m%d.eml", t_dir, nfiles++);
            write_file(path, sig, strlen(sig), m, n);
            buf_appendf(&cmd, " 1:%s", path);
            /* body changed: must not */
            struct buf t;
            buf_init(&t, 0);
            buf_append(&t, m, n);
            buf_appends(&t, "tampered\r\n");
            snprintf(path, sizeof path, "%s/m%d.eml", t_dir, nfiles++);
            write_file(path, sig, strlen(sig), t.data, t.len);
            buf_appendf(&cmd, " 0:%s", path);
            /* a signed header changed: must not */
            char *s = strstr(t.data, "joe@");
            assert_non_null(s);
            s[0] = 'J';
            t.len -= 10;
            snprintf(path, sizeof path, "%s/m%d.eml", t_dir, nfiles++);
            write_file(path, sig, strlen(sig), t.data, t.len);
            buf_appendf(&cmd, " 0:%s", path);
            buf_free(&t);
            free(sig);
        }
    }
    int st = system(cmd.data);
    for (int i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "%s/m%d.eml", t_dir, i);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/verify.py", t_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/rsa.txt", t_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/ed.txt", t_dir);
    unlink(path);
    buf_free(&cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    if (!have_nacl)
        skip();           /* rsa checked; ed25519 needs python3-nacl */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canon_header),
        cmocka_unit_test(test_canon_body),
        cmocka_unit_test(test_empty_body_hash),
        cmocka_unit_test(test_from_domain),
        cmocka_unit_test(test_domain_covers),
        cmocka_unit_test(test_key_load),
        cmocka_unit_test(test_sign_shape),
        cmocka_unit_test(test_sign_folding),
        cmocka_unit_test(test_sign_threads),
        cmocka_unit_test(test_python_verifies),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
