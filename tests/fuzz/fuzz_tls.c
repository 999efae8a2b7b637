/* libFuzzer target for the TLS engine: arbitrary bytes as ciphertext to a server (or
 * client) session, whole or split, must never crash, leak or break the tls.h contract;
 * errors are expected. The certificate is generated in memory at start-up.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tls/tls.h"
#include "util/buf.h"
#include "util/result.h"

static struct tls_ctx *server_ctx, *client_ctx;
static struct buf hello;   /* a genuine ClientHello, to reach past the first parser */
static struct buf scratch; /* the input as the session sees it */

/* A throw-away self-signed P-256 certificate for the server context. */
static int write_cert(const char *cert_path, const char *key_path)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f;
    int ok = key && x && X509_set_version(x, 2)
             && ASN1_INTEGER_set(X509_get_serialNumber(x), 1)
             && X509_gmtime_adj(X509_getm_notBefore(x), 0)
             && X509_gmtime_adj(X509_getm_notAfter(x), 86400)
             && X509_set_pubkey(x, key)
             && X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                           (const unsigned char *)"fuzz.test", -1, -1, 0)
             && X509_set_issuer_name(x, X509_get_subject_name(x))
             && X509_sign(x, key, EVP_sha256()) > 0;
    if (ok && (f = fopen(cert_path, "w"))) {
        ok = PEM_write_X509(f, x);
        fclose(f);
    } else {
        ok = 0;
    }
    if (ok && (f = fopen(key_path, "w"))) {
        ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
        fclose(f);
    } else {
        ok = 0;
    }
    X509_free(x);
    EVP_PKEY_free(key);
    return ok ? 0 : -1;
}

static void setup(void)
{
    char dir[] = "/tmp/petrel-fuzz-tls-XXXXXX", cert[64], key[64], err[256];
    if (!mkdtemp(dir))
        abort();
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    if (write_cert(cert, key) != 0)
        abort();
    server_ctx = tls_server_ctx_new(cert, key, NULL, NULL, true, err, sizeof err);
    client_ctx = tls_client_ctx_new(NULL, NULL, cert, err, sizeof err);
    if (!server_ctx || !client_ctx)
        abort();
    remove(cert);
    remove(key);
    remove(dir);
    struct tls_session *c = tls_session_new(client_ctx, false, "fuzz.test", NULL);
    buf_init(&hello, 0);
    buf_init(&scratch, 0);
    if (!c || tls_take_output(c, &hello) != PT_OK || hello.len == 0)
        abort();
    tls_session_free(c);
}

/* Server input modes: the bytes as they are, XORed onto the genuine ClientHello
 * (mutated hellos), or appended to it (whatever a client sends next). */
static void shape_input(int mode, const uint8_t *data, size_t size)
{
    buf_reset(&scratch);
    if (mode == 0 || buf_append(&scratch, hello.data, hello.len) != PT_OK) {
        if (buf_append(&scratch, data, size) != PT_OK)
            abort();
        return;
    }
    if (mode == 1) {
        size_t n = size < scratch.len ? size : scratch.len;
        for (size_t i = 0; i < n; i++)
            scratch.data[i] ^= (char)data[i];
        data += n, size -= n;
    }
    if (buf_append(&scratch, data, size) != PT_OK)
        abort();
}

static void check(const struct tls_session *s, int rc)
{
    if (rc != PT_OK && rc != PT_ERROR && rc != PT_NOTFOUND && rc != PT_TOOLONG)
        abort();
    if (rc == PT_ERROR && (!tls_failed(s) || tls_error(s)[0] == '\0'))
        abort();
    if ((tls_describe(s) != NULL) != tls_handshake_done(s))
        abort();
}

/* Byte 0: bit 0 picks the client role (the bytes then play a server's answer); bits
 * 1-2 ask the client to verify "fuzz.test", or pick the server's input mode (see
 * shape_input); bits 3-7 pick the feed size (0 = all at once). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct buf plain, out;
    if (!server_ctx)
        setup();
    if (size < 1)
        return 0;
    bool client = data[0] & 1;
    int mode = (data[0] >> 1) & 3;
    size_t chunk = data[0] >> 3;
    data++, size--;

    struct tls_session *s = client
        ? tls_session_new(client_ctx, false, NULL, mode ? "fuzz.test" : NULL)
        : tls_session_new(server_ctx, true, NULL, NULL);
    if (!s)
        return 0;
    buf_init(&plain, 4096);
    buf_init(&out, 0);
    if (tls_take_output(s, &out) != PT_OK)
        abort();
    if (!client && mode) {
        shape_input(mode % 3, data, size);
        data = (const uint8_t *)scratch.data;
        size = scratch.len;
    }
    for (size_t off = 0; off < size;) {
        size_t k = chunk && chunk < size - off ? chunk : size - off;
        int rc = tls_feed(s, data + off, k);
        check(s, rc);
        off += k;
        do {
            buf_reset(&plain);
            rc = tls_read(s, &plain);
            check(s, rc);
        } while (rc == PT_OK && plain.len == plain.max);
        if (tls_handshake_done(s))
            check(s, tls_write(s, "250 ok\r\n", 8));
        buf_reset(&out);
        if (tls_take_output(s, &out) != PT_OK)
            abort();
        if (rc == PT_ERROR)
            break;
    }
    check(s, tls_shutdown(s));
    if (tls_take_output(s, &out) != PT_OK)
        abort();
    tls_session_free(s);
    buf_free(&plain);
    buf_free(&out);
    return 0;
}
