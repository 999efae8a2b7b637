/* Unit tests for the TLS engine: client and server sessions paired in memory (bytes
 * pumped whole, in chunks or one at a time). Certificates are made at run time with
 * the openssl command in a temp dir; nothing is committed and no socket is opened.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "tls/tls.h"
#include "util/buf.h"
#include "util/result.h"

static char dir[64];
static char ca_pem[128], mx_pem[128], mx_key[128], self_pem[128], self_key[128];

static const char cnf[] =
    "[req]\n"
    "distinguished_name = dn\n"
    "prompt = no\n"
    "[dn]\n"
    "CN = unused\n"
    "[ca_ext]\n"
    "basicConstraints = critical,CA:TRUE\n"
    "keyUsage = critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier = hash\n"
    "[leaf_ext]\n"
    "basicConstraints = critical,CA:FALSE\n"
    "keyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = DNS:mx.test\n"
    "subjectKeyIdentifier = hash\n"
    "authorityKeyIdentifier = keyid\n"
    "[self_ext]\n"
    "basicConstraints = critical,CA:FALSE\n"
    "keyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = DNS:mx.test\n";

/* A CA, a leaf for mx.test signed by it, and a self-signed leaf for mx.test. */
static int make_certs(void **state)
{
    char path[128], cmd[2048];
    strcpy(dir, "/tmp/petrel-tls-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/openssl.cnf", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(cnf, f);
    fclose(f);
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    snprintf(cmd, sizeof cmd,
             "(cd %s && "
             "openssl req -config openssl.cnf -x509 %s -keyout ca.key -out ca.pem -days 2 "
             "-subj '/CN=petrel test CA' -extensions ca_ext && "
             "openssl req -config openssl.cnf -new %s -keyout mx.key -out mx.csr "
             "-subj '/CN=mx.test' && "
             "openssl x509 -req -in mx.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out mx.pem -days 2 -extfile openssl.cnf -extensions leaf_ext && "
             "openssl req -config openssl.cnf -x509 %s -keyout self.key -out self.pem -days 2 "
             "-subj '/CN=mx.test' -extensions self_ext) >/dev/null 2>&1",
             dir, ec, ec, ec);
    if (system(cmd) != 0)
        return -1;
    snprintf(ca_pem, sizeof ca_pem, "%s/ca.pem", dir);
    snprintf(mx_pem, sizeof mx_pem, "%s/mx.pem", dir);
    snprintf(mx_key, sizeof mx_key, "%s/mx.key", dir);
    snprintf(self_pem, sizeof self_pem, "%s/self.pem", dir);
    snprintf(self_key, sizeof self_key, "%s/self.key", dir);
    return 0;
}

static int remove_certs(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------ the harness */

struct end {
    struct tls_session *s;
    struct buf plain; /* decrypted so far */
    int rc;           /* first non-PT_OK result of feed/read */
};

struct pair {
    struct tls_ctx *sctx, *cctx;
    struct end srv, cli;
    struct buf wire;
};

static struct tls_ctx *server_ctx(const char *cert, const char *key, const char *min,
                                  const char *ciphers, bool prefer)
{
    char err[512] = "";
    struct tls_ctx *c = tls_server_ctx_new(cert, key, min, ciphers, prefer, err, sizeof err);
    if (!c)
        fail_msg("server ctx: %s", err);
    return c;
}

static struct tls_ctx *client_ctx(const char *max, const char *ca)
{
    char err[512] = "";
    struct tls_ctx *c = tls_client_ctx_new(NULL, NULL, ca, err, sizeof err);
    if (!c)
        fail_msg("client ctx: %s", err);
    if (max)
        assert_int_equal(tls_client_ctx_set_max_version(c, max), PT_OK);
    return c;
}

static void pair_open(struct pair *p, struct tls_ctx *sctx, struct tls_ctx *cctx,
                      const char *verify_host)
{
    memset(p, 0, sizeof *p);
    p->sctx = sctx;
    p->cctx = cctx;
    p->srv.s = tls_session_new(sctx, true, NULL, NULL);
    p->cli.s = tls_session_new(cctx, false, NULL, verify_host);
    assert_non_null(p->srv.s);
    assert_non_null(p->cli.s);
    buf_init(&p->srv.plain, 0);
    buf_init(&p->cli.plain, 0);
    buf_init(&p->wire, 0);
}

static void pair_close(struct pair *p)
{
    tls_session_free(p->srv.s);
    tls_session_free(p->cli.s);
    tls_ctx_free(p->sctx);
    tls_ctx_free(p->cctx);
    buf_free(&p->srv.plain);
    buf_free(&p->cli.plain);
    buf_free(&p->wire);
}

/* Moves what `from` has to send into `to`, chunk bytes per feed (0 = as a socket
 * would deliver it, up to 64 KB a read), reading after every feed. Returns the number
 * of bytes moved. */
static size_t xfer(struct pair *p, struct end *from, struct end *to, size_t chunk)
{
    buf_reset(&p->wire);
    assert_int_equal(tls_take_output(from->s, &p->wire), PT_OK);
    size_t n = p->wire.len;
    for (size_t off = 0; off < n;) {
        size_t max = chunk ? chunk : 65536;
        size_t k = max < n - off ? max : n - off;
        int rc = tls_feed(to->s, p->wire.data + off, k);
        if (rc == PT_OK)
            rc = tls_read(to->s, &to->plain);
        if (rc != PT_OK && to->rc == PT_OK)
            to->rc = rc;
        off += k;
    }
    return n;
}

static void pump(struct pair *p, size_t chunk)
{
    for (int round = 0; round < 10000; round++)
        if (xfer(p, &p->cli, &p->srv, chunk) + xfer(p, &p->srv, &p->cli, chunk) == 0)
            return;
    fail_msg("pump did not settle");
}

static void fill(char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        b[i] = (char)(seed >> 16);
    }
}

/* ------------------------------------------------------------ handshakes */

static void handshake_and_hello(const char *max, size_t chunk, const char *want_version)
{
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, NULL, true), client_ctx(max, NULL), NULL);
    assert_false(tls_handshake_done(p.cli.s));
    assert_null(tls_describe(p.cli.s));
    pump(&p, chunk);
    assert_int_equal(p.srv.rc, PT_OK);
    assert_int_equal(p.cli.rc, PT_OK);
    assert_true(tls_handshake_done(p.srv.s));
    assert_true(tls_handshake_done(p.cli.s));
    assert_string_equal(tls_state_name(p.srv.s), "open");
    assert_non_null(strstr(tls_describe(p.srv.s), want_version));
    assert_string_equal(tls_describe(p.srv.s), tls_describe(p.cli.s));
    assert_string_equal(tls_error(p.srv.s), "");

    assert_int_equal(tls_write(p.cli.s, "EHLO client.test\r\n", 18), PT_OK);
    assert_int_equal(tls_write(p.srv.s, "250 mx.test\r\n", 13), PT_OK);
    pump(&p, chunk);
    assert_string_equal(p.srv.plain.data, "EHLO client.test\r\n");
    assert_string_equal(p.cli.plain.data, "250 mx.test\r\n");
    pair_close(&p);
}

static void test_handshake_tls13(void **state)
{
    handshake_and_hello(NULL, 0, "TLSv1.3:TLS_");
}

static void test_handshake_tls12(void **state)
{
    handshake_and_hello("1.2", 0, "TLSv1.2:ECDHE-");
}

static void test_handshake_byte_at_a_time(void **state)
{
    handshake_and_hello(NULL, 1, "TLSv1.3:");
    handshake_and_hello("1.2", 1, "TLSv1.2:");
    handshake_and_hello(NULL, 7, "TLSv1.3:");
}

/* Data written before the handshake ends is queued, then leaves in the same flight as
 * its writer's last handshake message (client Finished in TLS 1.3, server Finished in
 * TLS 1.2): the side that completes second gets both in one feed and returns the
 * plaintext from the read that completes its handshake. */
static void app_data_with_finished(const char *max)
{
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, NULL, true), client_ctx(max, NULL), NULL);
    assert_int_equal(tls_write(p.cli.s, "EHLO early\r\n", 12), PT_OK);
    assert_int_equal(tls_write(p.srv.s, "220 early\r\n", 11), PT_OK);
    struct end *ends[2] = { &p.srv, &p.cli };
    int seen = 0;
    for (int i = 0; i < 10 && seen < 2; i++) {
        struct end *to = ends[i % 2], *from = ends[1 - i % 2];
        bool before = tls_handshake_done(to->s);
        assert_true(xfer(&p, from, to, 0) > 0);
        if (!before && tls_handshake_done(to->s)) {
            if (seen == 1) /* the second to finish: the peer's data came along */
                assert_string_equal(to->plain.data, to == &p.srv ? "EHLO early\r\n"
                                                                 : "220 early\r\n");
            seen++;
        }
    }
    assert_int_equal(seen, 2);
    pump(&p, 0);
    assert_string_equal(p.srv.plain.data, "EHLO early\r\n");
    assert_string_equal(p.cli.plain.data, "220 early\r\n");
    pair_close(&p);
}

static void test_app_data_right_after_handshake(void **state)
{
    app_data_with_finished(NULL);
    app_data_with_finished("1.2");
}

static void test_several_records_one_feed(void **state)
{
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, NULL, true), client_ctx(NULL, NULL), NULL);
    pump(&p, 0);
    assert_int_equal(tls_write(p.cli.s, "MAIL FROM:<a@x>\r\n", 17), PT_OK);
    assert_int_equal(tls_write(p.cli.s, "RCPT TO:<b@y>\r\n", 15), PT_OK);
    assert_int_equal(tls_write(p.cli.s, "DATA\r\n", 6), PT_OK);
    assert_int_equal(xfer(&p, &p.cli, &p.srv, 0) > 3 * 22, true); /* three records */
    assert_string_equal(p.srv.plain.data, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
    pair_close(&p);
}

/* Output lands after what the caller already queued, and a bounded output buffer
 * that cannot take it all leaves the ciphertext waiting. */
static void test_take_output_appends(void **state)
{
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, NULL, true), client_ctx(NULL, NULL), NULL);
    pump(&p, 0);
    struct buf out, tiny;
    buf_init(&out, 0);
    buf_init(&tiny, 10);
    assert_int_equal(buf_appends(&out, "queued"), PT_OK);
    assert_int_equal(tls_write(p.cli.s, "NOOP\r\n", 6), PT_OK);
    assert_int_equal(tls_take_output(p.cli.s, &tiny), PT_TOOLONG);
    assert_int_equal(tiny.len, 0);
    assert_int_equal(tls_take_output(p.cli.s, &out), PT_OK);
    assert_memory_equal(out.data, "queued", 6);
    assert_int_equal(out.data[6], 0x17); /* application data record */
    assert_int_equal(tls_feed(p.srv.s, out.data + 6, out.len - 6), PT_OK);
    assert_int_equal(tls_read(p.srv.s, &p.srv.plain), PT_OK);
    assert_string_equal(p.srv.plain.data, "NOOP\r\n");
    buf_free(&out);
    buf_free(&tiny);
    pair_close(&p);
}

/* ------------------------------------------------------------ bulk data */

static void bulk(const char *max, size_t chunk, bool before_handshake)
{
    enum { N = 1024 * 1024 };
    char *a = malloc(N), *b = malloc(N);
    assert_non_null(a);
    assert_non_null(b);
    fill(a, N, 1);
    fill(b, N, 2);
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, NULL, true), client_ctx(max, NULL), NULL);
    if (!before_handshake)
        pump(&p, 0);
    assert_int_equal(tls_write(p.cli.s, a, N), PT_OK);
    if (before_handshake)
        pump(&p, chunk);
    assert_int_equal(tls_write(p.srv.s, b, N), PT_OK);
    pump(&p, chunk);
    assert_int_equal(p.srv.rc, PT_OK);
    assert_int_equal(p.cli.rc, PT_OK);
    assert_int_equal(p.srv.plain.len, N);
    assert_int_equal(p.cli.plain.len, N);
    assert_memory_equal(p.srv.plain.data, a, N);
    assert_memory_equal(p.cli.plain.data, b, N);
    pair_close(&p);
    free(a);
    free(b);
}

static void test_one_megabyte_both_ways(void **state)
{
    bulk(NULL, 0, false);
    bulk(NULL, 1000, true);
    bulk("1.2", 16384 + 29, false);
}

/* A bounded plaintext buffer: the read stops at its max, the rest waits. */
static void test_read_respects_plain_max(void **state)
{
    enum { N = 50000, MAX = 1000 };
    char *a = malloc(N);
    assert_non_null(a);
    fill(a, N, 3);
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, NULL, true), client_ctx(NULL, NULL), NULL);
    pump(&p, 0);
    assert_int_equal(tls_write(p.cli.s, a, N), PT_OK);
    buf_reset(&p.wire);
    assert_int_equal(tls_take_output(p.cli.s, &p.wire), PT_OK);
    assert_int_equal(tls_feed(p.srv.s, p.wire.data, p.wire.len), PT_OK);

    struct buf small, all;
    buf_init(&small, MAX);
    buf_init(&all, 0);
    for (int i = 0; i < 1000 && all.len < N; i++) {
        assert_int_equal(tls_read(p.srv.s, &small), PT_OK);
        assert_true(small.len <= MAX);
        assert_int_equal(buf_append(&all, small.data, small.len), PT_OK);
        buf_reset(&small);
    }
    assert_int_equal(all.len, N);
    assert_memory_equal(all.data, a, N);
    buf_free(&small);
    buf_free(&all);
    pair_close(&p);
    free(a);
}

/* ------------------------------------------------------------ verification */

static void verify_case(const char *cert, const char *key, const char *ca,
                        const char *host, const char *want_err)
{
    struct pair p;
    pair_open(&p, server_ctx(cert, key, NULL, NULL, true), client_ctx(NULL, ca), host);
    pump(&p, 0);
    if (!want_err) {
        assert_int_equal(p.cli.rc, PT_OK);
        assert_int_equal(p.srv.rc, PT_OK);
        assert_true(tls_handshake_done(p.cli.s));
        assert_string_equal(tls_error(p.cli.s), "");
    } else {
        assert_int_equal(p.cli.rc, PT_ERROR);
        assert_true(tls_failed(p.cli.s));
        assert_false(tls_handshake_done(p.cli.s));
        if (!strstr(tls_error(p.cli.s), want_err))
            fail_msg("error \"%s\" lacks \"%s\"", tls_error(p.cli.s), want_err);
        assert_non_null(strstr(tls_error(p.cli.s), "certificate verify failed"));
        assert_int_equal(p.srv.rc, PT_ERROR); /* the client's alert reached it */
        assert_int_equal(tls_write(p.cli.s, "x", 1), PT_ERROR);
        assert_int_equal(tls_read(p.cli.s, &p.cli.plain), PT_ERROR);
        assert_int_equal(tls_shutdown(p.cli.s), PT_OK);
    }
    pair_close(&p);
}

static void test_verify_ok_against_ca(void **state)
{
    verify_case(mx_pem, mx_key, ca_pem, "mx.test", NULL);
    verify_case(mx_pem, mx_key, ca_pem, "MX.Test", NULL);
}

static void test_verify_wrong_name(void **state)
{
    verify_case(mx_pem, mx_key, ca_pem, "other.test", "hostname mismatch (expected other.test)");
    verify_case(mx_pem, mx_key, ca_pem, "127.0.0.1", "IP address mismatch (expected 127.0.0.1)");
}

static void test_verify_self_signed(void **state)
{
    verify_case(self_pem, self_key, ca_pem, "mx.test", "self-signed");
}

static void test_verify_unknown_ca_with_system_store(void **state)
{
    verify_case(mx_pem, mx_key, NULL, "mx.test", "unable to get local issuer");
}

static void test_no_verify_accepts_self_signed(void **state)
{
    verify_case(self_pem, self_key, NULL, NULL, NULL);
    verify_case(self_pem, self_key, ca_pem, NULL, NULL);
}

/* ------------------------------------------------------------ versions, ciphers */

/* A TLS 1.1-only peer built directly on OpenSSL (security level 0 lets it try). */
static void test_tls11_client_refused(void **state)
{
    SSL_CTX *old = SSL_CTX_new(TLS_client_method());
    assert_non_null(old);
    assert_int_equal(SSL_CTX_set_min_proto_version(old, TLS1_1_VERSION), 1);
    assert_int_equal(SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION), 1);
    assert_int_equal(SSL_CTX_set_cipher_list(old, "DEFAULT:@SECLEVEL=0"), 1);
    SSL *ssl = SSL_new(old);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    SSL_set_connect_state(ssl);
    assert_int_equal(SSL_do_handshake(ssl), -1);

    struct tls_ctx *sctx = server_ctx(mx_pem, mx_key, NULL, NULL, true);
    struct tls_session *srv = tls_session_new(sctx, true, NULL, NULL);
    struct buf plain, out;
    buf_init(&plain, 0);
    buf_init(&out, 0);
    char hello[4096];
    int n = BIO_read(wb, hello, sizeof hello);
    assert_true(n > 5);
    assert_int_equal(hello[0], 0x16);
    assert_int_equal(tls_feed(srv, hello, (size_t)n), PT_OK);
    assert_int_equal(tls_read(srv, &plain), PT_ERROR);
    if (!strstr(tls_error(srv), "unsupported protocol"))
        fail_msg("error: %s", tls_error(srv));
    assert_int_equal(tls_take_output(srv, &out), PT_OK); /* the protocol_version alert */
    assert_true(out.len > 0);
    BIO_write(rb, out.data, (int)out.len);
    assert_true(SSL_do_handshake(ssl) <= 0);
    assert_int_equal(plain.len, 0);

    buf_free(&plain);
    buf_free(&out);
    tls_session_free(srv);
    tls_ctx_free(sctx);
    SSL_free(ssl);
    SSL_CTX_free(old);
}

static void test_min_13_server_refuses_12_client(void **state)
{
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, "1.3", NULL, true), client_ctx("1.2", NULL), NULL);
    pump(&p, 0);
    assert_int_equal(p.srv.rc, PT_ERROR);
    assert_int_equal(p.cli.rc, PT_ERROR);
    assert_non_null(strstr(tls_error(p.srv.s), "TLS handshake failed"));
    assert_non_null(strstr(tls_error(p.cli.s), "protocol version"));
    pair_close(&p);
}

static void negotiated(const char *srv_ciphers, bool prefer, const char *max, const char *want)
{
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, srv_ciphers, prefer),
              client_ctx(max, NULL), NULL);
    pump(&p, 0);
    assert_int_equal(p.srv.rc, PT_OK);
    assert_string_equal(tls_describe(p.srv.s), want);
    pair_close(&p);
}

static void test_cipher_configuration(void **state)
{
    const char *mixed = "ECDHE-ECDSA-AES128-GCM-SHA256:TLS_CHACHA20_POLY1305_SHA256";
    negotiated(mixed, true, NULL, "TLSv1.3:TLS_CHACHA20_POLY1305_SHA256");
    negotiated(mixed, true, "1.2", "TLSv1.2:ECDHE-ECDSA-AES128-GCM-SHA256");
    /* OpenSSL's client prefers AES-256; the server's order wins only when asked. */
    const char *order = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
    negotiated(order, true, NULL, "TLSv1.3:TLS_AES_128_GCM_SHA256");
    negotiated(order, false, NULL, "TLSv1.3:TLS_AES_256_GCM_SHA384");
    negotiated("HIGH:!aNULL:!MD5", true, "1.2", "TLSv1.2:ECDHE-ECDSA-AES256-GCM-SHA384");
}

static void ctx_error(const char *cert, const char *key, const char *min, const char *ciphers,
                      const char *want)
{
    char err[512] = "";
    struct tls_ctx *c = tls_server_ctx_new(cert, key, min, ciphers, true, err, sizeof err);
    assert_null(c);
    if (!strstr(err, want))
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void test_context_errors(void **state)
{
    char missing[160], err[512] = "";
    snprintf(missing, sizeof missing, "%s/missing.pem", dir);
    ctx_error(mx_pem, mx_key, "1.1", NULL, "\"1.1\" is not allowed");
    ctx_error(mx_pem, mx_key, "1.0", NULL, "\"1.0\" is not allowed");
    ctx_error(mx_pem, mx_key, "2", NULL, "not a TLS version");
    ctx_error(mx_pem, mx_key, NULL, "HIGH:BOGUS-CIPHER", "\"BOGUS-CIPHER\" matches no cipher");
    ctx_error(mx_pem, mx_key, NULL, "TLS_AES_128_GCM_SHA256:TLS_NOPE", "\"TLS_NOPE\"");
    ctx_error(mx_pem, mx_key, NULL, "!aNULL", "selects no TLS 1.2 cipher");
    ctx_error(missing, mx_key, NULL, NULL, missing);
    ctx_error(mx_pem, missing, NULL, NULL, missing);
    ctx_error(mx_pem, self_key, NULL, NULL, "key values mismatch");
    ctx_error(mx_pem, ca_pem, NULL, NULL, "key_file"); /* a certificate is no key */

    assert_null(tls_client_ctx_new(NULL, NULL, missing, err, sizeof err));
    assert_non_null(strstr(err, missing));
    assert_null(tls_client_ctx_new("1.1", NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "1.1"));

    struct tls_ctx *cc = tls_client_ctx_new("1.3", NULL, NULL, err, sizeof err);
    assert_non_null(cc);
    assert_int_equal(tls_client_ctx_set_max_version(cc, "1.1"), PT_INVALID);
    assert_int_equal(tls_client_ctx_set_max_version(cc, "1.3"), PT_OK);
    assert_null(tls_session_new(cc, true, NULL, NULL)); /* a client ctx cannot serve */
    tls_ctx_free(cc);
    tls_ctx_free(NULL);
    tls_session_free(NULL);
}

/* ------------------------------------------------------------ bad input, closing */

static void test_garbage_to_server(void **state)
{
    static const char *const junk[] = {
        "EHLO plain.text.client\r\n",
        "\x16\x03\x01\xff\xff",                  /* oversized handshake record */
        "\x17\x03\x03\x00\x05hello",             /* application data before hello */
        "\x16\x03\x01\x00\x04\x01\x00\x00\x00",  /* empty ClientHello */
        "\x80\x2e\x01\x00\x02\x00\x15\x00\x00",  /* SSLv2-style hello */
    };
    struct tls_ctx *sctx = server_ctx(mx_pem, mx_key, NULL, NULL, true);
    struct buf plain, out;
    buf_init(&plain, 0);
    buf_init(&out, 0);
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        for (size_t chunk = 0; chunk <= 1; chunk++) {
            struct tls_session *s = tls_session_new(sctx, true, NULL, NULL);
            const char *j = junk[i];
            size_t n = i == 0 ? strlen(j) : (size_t[]){5, 10, 9, 9}[i - 1];
            int rc = PT_OK;
            for (size_t off = 0; off < n && rc == PT_OK; off += chunk ? 1 : n) {
                rc = tls_feed(s, j + off, chunk ? 1 : n);
                if (rc == PT_OK)
                    rc = tls_read(s, &plain);
            }
            if (rc == PT_OK) { /* a plausible header: send a body of zeros, then it fails */
                static char zeros[65535 + 5];
                assert_int_equal(tls_feed(s, zeros, sizeof zeros), PT_OK);
                rc = tls_read(s, &plain);
            }
            assert_int_equal(rc, PT_ERROR);
            assert_true(tls_failed(s));
            assert_string_not_equal(tls_error(s), "");
            assert_int_equal(tls_feed(s, "more", 4), PT_ERROR);
            assert_int_equal(tls_read(s, &plain), PT_ERROR);
            assert_int_equal(tls_write(s, "x", 1), PT_ERROR);
            assert_int_equal(tls_shutdown(s), PT_OK);
            assert_int_equal(tls_take_output(s, &out), PT_OK);
            assert_int_equal(plain.len, 0);
            tls_session_free(s);
        }
    }
    buf_free(&plain);
    buf_free(&out);
    tls_ctx_free(sctx);
}

static void test_feed_is_bounded(void **state)
{
    struct tls_ctx *sctx = server_ctx(mx_pem, mx_key, NULL, NULL, true);
    struct tls_session *s = tls_session_new(sctx, true, NULL, NULL);
    static char big[TLS_IN_MAX];
    assert_int_equal(tls_feed(s, big, sizeof big), PT_OK);
    assert_int_equal(tls_feed(s, "x", 1), PT_TOOLONG);
    tls_session_free(s);
    tls_ctx_free(sctx);
}

static void test_close_notify(void **state)
{
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, NULL, true), client_ctx(NULL, NULL), NULL);
    pump(&p, 0);
    assert_int_equal(tls_write(p.cli.s, "QUIT\r\n", 6), PT_OK);
    assert_int_equal(tls_shutdown(p.cli.s), PT_OK);
    assert_string_equal(tls_state_name(p.cli.s), "shutdown");
    assert_int_equal(tls_write(p.cli.s, "late", 4), PT_ERROR);
    xfer(&p, &p.cli, &p.srv, 1);
    assert_int_equal(p.srv.rc, PT_NOTFOUND);
    assert_string_equal(p.srv.plain.data, "QUIT\r\n"); /* data before close_notify kept */
    assert_true(tls_peer_closed(p.srv.s));
    assert_int_equal(tls_read(p.srv.s, &p.srv.plain), PT_NOTFOUND);
    assert_int_equal(tls_feed(p.srv.s, "ignored", 7), PT_OK);

    /* Half-closed: the server may still answer, then closes its side. */
    assert_int_equal(tls_write(p.srv.s, "221 bye\r\n", 9), PT_OK);
    assert_int_equal(tls_shutdown(p.srv.s), PT_OK);
    assert_string_equal(tls_state_name(p.srv.s), "closed");
    xfer(&p, &p.srv, &p.cli, 0);
    assert_int_equal(p.cli.rc, PT_NOTFOUND);
    assert_string_equal(p.cli.plain.data, "221 bye\r\n");
    assert_true(tls_peer_closed(p.cli.s));
    assert_string_equal(tls_state_name(p.cli.s), "closed");
    assert_int_equal(tls_shutdown(p.cli.s), PT_OK);
    buf_reset(&p.wire);
    assert_int_equal(tls_take_output(p.cli.s, &p.wire), PT_OK);
    assert_int_equal(p.wire.len, 0); /* close_notify goes out once */
    pair_close(&p);
}

static void test_shutdown_before_handshake(void **state)
{
    struct tls_ctx *cctx = client_ctx(NULL, NULL);
    struct tls_session *c = tls_session_new(cctx, false, "mx.test", NULL);
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(tls_take_output(c, &out), PT_OK);
    assert_true(out.len > 0 && out.data[0] == 0x16); /* ClientHello ready on creation */
    assert_non_null(memmem(out.data, out.len, "mx.test", 7)); /* SNI */
    assert_int_equal(tls_shutdown(c), PT_OK);
    buf_reset(&out);
    assert_int_equal(tls_take_output(c, &out), PT_OK);
    assert_int_equal(out.len, 0);
    assert_int_equal(tls_write(c, "x", 1), PT_ERROR);
    buf_free(&out);
    tls_session_free(c);
    tls_ctx_free(cctx);
}

/* The context may go before its sessions (config reload with live connections). */
static void test_ctx_freed_before_sessions(void **state)
{
    struct pair p;
    pair_open(&p, server_ctx(mx_pem, mx_key, NULL, NULL, true), client_ctx(NULL, ca_pem),
              "mx.test");
    tls_ctx_free(p.sctx);
    tls_ctx_free(p.cctx);
    p.sctx = p.cctx = NULL;
    pump(&p, 0);
    assert_true(tls_handshake_done(p.srv.s));
    assert_true(tls_handshake_done(p.cli.s));
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_tls13),
        cmocka_unit_test(test_handshake_tls12),
        cmocka_unit_test(test_handshake_byte_at_a_time),
        cmocka_unit_test(test_app_data_right_after_handshake),
        cmocka_unit_test(test_several_records_one_feed),
        cmocka_unit_test(test_take_output_appends),
        cmocka_unit_test(test_one_megabyte_both_ways),
        cmocka_unit_test(test_read_respects_plain_max),
        cmocka_unit_test(test_verify_ok_against_ca),
        cmocka_unit_test(test_verify_wrong_name),
        cmocka_unit_test(test_verify_self_signed),
        cmocka_unit_test(test_verify_unknown_ca_with_system_store),
        cmocka_unit_test(test_no_verify_accepts_self_signed),
        cmocka_unit_test(test_tls11_client_refused),
        cmocka_unit_test(test_min_13_server_refuses_12_client),
        cmocka_unit_test(test_cipher_configuration),
        cmocka_unit_test(test_context_errors),
        cmocka_unit_test(test_garbage_to_server),
        cmocka_unit_test(test_feed_is_bounded),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_shutdown_before_handshake),
        cmocka_unit_test(test_ctx_freed_before_sessions),
    };
    return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
