/* Fuzz target for the DKIM signer: arbitrary bytes as a message to dkim_from_domain
 * and to dkim_sign (RSA-1024 and Ed25519 keys made once). No crash; a found domain
 * is a lowercase host name; a signature is one field "DKIM-Signature: ..." with CRLF
 * line ends only, continuation lines, and no line over 78 octets.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "dkim/dkim.h"
#include "util/buf.h"
#include "util/result.h"

static struct dkim_key *make_key(const char *type, size_t bits, const char *alg)
{
    static const char *const names[] = { "To", "Subject", "Date", "Message-ID", "Received",
                                         "Cc" };
    char path[] = "/tmp/petrel_fuzz_dkim_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    EVP_PKEY *pk = bits ? EVP_PKEY_Q_keygen(NULL, NULL, type, bits)
                        : EVP_PKEY_Q_keygen(NULL, NULL, type);
    if (!f || !pk || PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) != 1)
        abort();
    fclose(f);
    EVP_PKEY_free(pk);
    char err[256];
    struct dkim_key *k = dkim_key_load("example.com", "fuzz", path, alg, names, 6, err, sizeof err);
    unlink(path);
    if (!k)
        abort();
    return k;
}

static void check_field(const char *s, size_t n)
{
    if (n < 18 || memcmp(s, "DKIM-Signature: ", 16) != 0 || memcmp(s + n - 2, "\r\n", 2) != 0)
        abort();
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            if (i + 1 >= n || s[i + 1] != '\n' || col > DKIM_FOLD_AT)
                abort();
            if (i + 2 < n && s[i + 2] != ' ' && s[i + 2] != '\t')
                abort();
            i++;
            col = 0;
        } else if (s[i] == '\n' || s[i] == 0) {
            abort();
        } else {
            col++;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dkim_key *rsa, *ed;
    if (!rsa) {
        rsa = make_key("RSA", 1024, "rsa-sha256");
        ed = make_key("ED25519", 0, "ed25519-sha256");
    }
    const char *msg = (const char *)data;

    char dom[256];
    if (dkim_from_domain(msg, size, dom)) {
        size_t n = strnlen(dom, sizeof dom);
        if (n == 0 || n == sizeof dom)
            abort();
        for (size_t i = 0; i < n; i++)
            if (dom[i] >= 'A' && dom[i] <= 'Z')
                abort();
        if (!dkim_domain_covers(dom, dom))
            abort();
    }

    struct buf out;
    buf_init(&out, 0);
    int rc = dkim_sign(size % 2 ? rsa : ed, msg, size, 1700000000.0, &out);
    if (rc == PT_OK)
        check_field(out.data, out.len);
    else if (rc != PT_INVALID || out.len != 0)
        abort();
    buf_free(&out);
    return 0;
}
