/* Unit tests of the DKIM key cache (dkim/dkim_cache.c): one load per key, RSA and
 * Ed25519 found by key type, errors naming the file, and threads sharing one key.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "dkim/dkim.h"
#include "dkim/dkim_cache.h"

static void write_key(const char *path, bool rsa)
{
    EVP_PKEY *k = rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                      : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(k);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    EVP_PKEY_free(k);
}

static char rsa[64], ed[64];

static void *getter(void *arg)
{
    char err[256];
    return (void *)dkim_key_cache_get("example.com", "s1", rsa, err, sizeof err);
}

static void test_cache(void **state)
{
    snprintf(rsa, sizeof rsa, "/tmp/petrel_test_cache_rsa_%d.pem", (int)getpid());
    snprintf(ed, sizeof ed, "/tmp/petrel_test_cache_ed_%d.pem", (int)getpid());
    write_key(rsa, true);
    write_key(ed, false);
    char err[256] = "";
    const struct dkim_key *a = dkim_key_cache_get("example.com", "s1", rsa, err, sizeof err);
    if (!a)
        fail_msg("%s", err);
    assert_string_equal(dkim_key_domain(a), "example.com");
    assert_ptr_equal(dkim_key_cache_get("example.com", "s1", rsa, err, sizeof err), a);
    const struct dkim_key *e = dkim_key_cache_get("example.com", "s2", ed, err, sizeof err);
    assert_non_null(e);
    assert_ptr_not_equal(e, a);
    /* the same file for another domain is another key (d= differs) */
    const struct dkim_key *o = dkim_key_cache_get("other.test", "s1", rsa, err, sizeof err);
    assert_non_null(o);
    assert_ptr_not_equal(o, a);
    /* the cached keys sign */
    const char *msg = "From: <a@example.com>\r\nSubject: x\r\n\r\nbody\r\n";
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(dkim_sign(a, msg, strlen(msg), 1700000000, &out), 0);
    assert_non_null(strstr(out.data, "a=rsa-sha256"));
    buf_reset(&out);
    assert_int_equal(dkim_sign(e, msg, strlen(msg), 1700000000, &out), 0);
    assert_non_null(strstr(out.data, "a=ed25519-sha256"));
    buf_free(&out);
    /* threads get the one key */
    pthread_t t[4];
    void *got[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, getter, NULL);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], &got[i]);
        assert_ptr_equal(got[i], a);
    }
    /* errors name the file */
    assert_null(dkim_key_cache_get("example.com", "s1", "/nonexistent/k.pem", err, sizeof err));
    assert_non_null(strstr(err, "key_file /nonexistent/k.pem"));
    FILE *f = fopen(ed, "w");
    assert_non_null(f);
    fputs("not a key\n", f);
    fclose(f);
    assert_null(dkim_key_cache_get("example.com", "s3", ed, err, sizeof err));
    assert_non_null(strstr(err, ed));
    assert_null(dkim_key_cache_get("bad domain!", "s1", rsa, err, sizeof err));
    unlink(rsa);
    unlink(ed);
    dkim_key_cache_clear();
}

/* peek: the cached key or NULL, never the file (it may be gone), and whether the
 * file's recheck is due */
static void test_peek(void **state)
{
    char path[64], err[256] = "";
    snprintf(path, sizeof path, "/tmp/petrel_test_peek_%d.pem", (int)getpid());
    write_key(path, true);
    bool due = true;
    assert_null(dkim_key_cache_peek("example.com", "p1", path, &due));
    assert_false(due);
    const struct dkim_key *k = dkim_key_cache_get("example.com", "p1", path, err, sizeof err);
    if (!k)
        fail_msg("%s", err);
    due = true;
    assert_ptr_equal(dkim_key_cache_peek("EXAMPLE.com", "p1", path, &due), k);
    assert_false(due);   /* just loaded: not due for DKIM_CACHE_RECHECK_S */
    assert_ptr_equal(dkim_key_cache_peek("example.com", "p1", path, NULL), k);
    /* no file access: the key stays visible after the file is gone */
    unlink(path);
    assert_ptr_equal(dkim_key_cache_peek("example.com", "p1", path, &due), k);
    /* other selector, domain or file: not cached */
    assert_null(dkim_key_cache_peek("example.com", "p2", path, &due));
    assert_null(dkim_key_cache_peek("other.test", "p1", path, &due));
    assert_null(dkim_key_cache_peek("example.com", "p1", "/tmp/other.pem", &due));
    assert_null(dkim_key_cache_peek(NULL, "p1", path, &due));
    assert_null(dkim_key_cache_peek("example.com", "p1", "", &due));
    /* a failed load leaves nothing to peek at */
    assert_null(dkim_key_cache_get("example.com", "p3", "/nonexistent/k.pem", err, sizeof err));
    assert_null(dkim_key_cache_peek("example.com", "p3", "/nonexistent/k.pem", &due));
    dkim_key_cache_clear();
    assert_null(dkim_key_cache_peek("example.com", "p1", path, &due));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_peek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
