/* Unit tests for delivery/tlsrpt: the _smtp._tls TXT record (RFC 8460 §3), the §4
 * aggregate report (parsed back with jansson: every required key), gzip round trip
 * through zlib, and the §5.3 file name.
 * SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <zlib.h>

#include "delivery/tlsrpt.h"
#include "delivery/tlsrpt_agg.h"
#include "util/result.h"

static int txt(const char *s, struct tlsrpt_rua *r)
{
    return tlsrpt_parse_txt(s, strlen(s), r);
}

static void test_txt(void **state)
{
    (void)state;
    struct tlsrpt_rua r;
    assert_int_equal(txt("v=TLSRPTv1; rua=mailto:reports@example.com", &r), PT_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.uri[0], "mailto:reports@example.com");
    assert_int_equal(txt("v=TLSRPTv1;rua=mailto:a@b.test, https://rpt.b.test/v1;ext=1;", &r), PT_OK);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.uri[1], "https://rpt.b.test/v1");
    /* an unknown scheme is skipped, not fatal, as long as one is usable */
    assert_int_equal(txt("v=TLSRPTv1; rua=ftp://x,mailto:a@b.test", &r), PT_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(txt("v=spf1 -all", &r), PT_NOTFOUND);
    assert_int_equal(txt("v=TLSRPTv1", &r), PT_INVALID);
    assert_int_equal(txt("v=TLSRPTv1; rua=ftp://x", &r), PT_INVALID);
    assert_int_equal(txt("v=TLSRPTv1; rua=mailto:nobody", &r), PT_INVALID);
    assert_int_equal(txt("v=TLSRPTv1; rua=mailto:a@b; rua=mailto:c@d", &r), PT_INVALID);
    assert_int_equal(txt("v=TLSRPTv1 rua=mailto:a@b", &r), PT_INVALID);
    assert_int_equal(txt("v=TLSRPTv1; =x", &r), PT_INVALID);
}

static void test_report(void **state)
{
    (void)state;
    const char *mx[] = { "*.mail.example" };
    const char *ps[] = { "version: STSv1", "mode: enforce", "mx: *.mail.example",
                         "max_age: 86400" };
    struct tlsrpt_failure f[] = {
        { "certificate-host-mismatch", "192.0.2.1", "mx1.mail.example", "198.51.100.7", 3,
          NULL },
        { "starttls-not-supported", NULL, "mx2.mail.example", NULL, 1, "no STARTTLS" },
    };
    struct tlsrpt_policy p = { "sts", "example.com", ps, 4, mx, 1, 10, 4, f, 2 };
    struct buf out;
    buf_init(&out, 0);
    assert_int_equal(tlsrpt_build_json("petrel.test", "mailto:postmaster@petrel.test",
                                       "2026-12-05T00:00:00Z_example.com", 1764892800,
                                       1764979200, &p, 1, &out), PT_OK);
    json_error_t err;
    json_t *root = json_loadb(out.data, out.len, 0, &err);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "organization-name")),
                        "petrel.test");
    json_t *dr = json_object_get(root, "date-range");
    assert_string_equal(json_string_value(json_object_get(dr, "start-datetime")),
                        "2025-12-05T00:00:00Z");
    assert_non_null(json_object_get(root, "contact-info"));
    assert_non_null(json_object_get(root, "report-id"));
    json_t *pol = json_array_get(json_object_get(root, "policies"), 0);
    json_t *pp = json_object_get(pol, "policy");
    assert_string_equal(json_string_value(json_object_get(pp, "policy-type")), "sts");
    assert_string_equal(json_string_value(json_object_get(pp, "policy-domain")), "example.com");
    assert_int_equal(json_array_size(json_object_get(pp, "policy-string")), 4);
    json_t *sum = json_object_get(pol, "summary");
    assert_int_equal(json_integer_value(json_object_get(sum, "total-successful-session-count")), 10);
    assert_int_equal(json_integer_value(json_object_get(sum, "total-failure-session-count")), 4);
    json_t *fd = json_object_get(pol, "failure-details");
    assert_int_equal(json_array_size(fd), 2);
    json_t *f0 = json_array_get(fd, 0);
    assert_string_equal(json_string_value(json_object_get(f0, "result-type")),
                        "certificate-host-mismatch");
    assert_int_equal(json_integer_value(json_object_get(f0, "failed-session-count")), 3);
    assert_null(json_object_get(f0, "failure-reason-code"));
    json_decref(root);

    /* gzip round trip */
    struct buf gz;
    buf_init(&gz, 0);
    assert_int_equal(tlsrpt_gzip(out.data, out.len, &gz), PT_OK);
    assert_true(gz.len > 18 && (unsigned char)gz.data[0] == 0x1f &&
                (unsigned char)gz.data[1] == 0x8b);
    char *back = malloc(out.len + 1);
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (Bytef *)gz.data;
    z.avail_in = (uInt)gz.len;
    z.next_out = (Bytef *)back;
    z.avail_out = (uInt)out.len + 1;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    assert_int_equal(z.total_out, out.len);
    assert_memory_equal(back, out.data, out.len);
    inflateEnd(&z);
    free(back);
    buf_free(&gz);
    buf_free(&out);

    /* required strings */
    struct tlsrpt_policy bad = { NULL, "example.com", NULL, 0, NULL, 0, 0, 0, NULL, 0 };
    buf_init(&out, 0);
    assert_int_equal(tlsrpt_build_json("o", "c", "id", 0, 1, &bad, 1, &out), PT_INVALID);
    buf_free(&out);
    char name[256];
    assert_int_equal(tlsrpt_filename("petrel.test", "example.com", 1, 2, "r1", name, sizeof name),
                     PT_OK);
    assert_string_equal(name, "petrel.test!example.com!1!2!r1.json.gz");
}

/* The counters: notes, the saved form, a reload, the take that empties them. */
static void test_agg(void **state)
{
    (void)state;
    struct tlsrpt_agg *a = tlsrpt_agg_new();
    assert_non_null(a);
    const char *lines[] = { "3 1 1 abcd" };
    tlsrpt_agg_policy(a, "dest.test", "tlsa", lines, 1, NULL, 0);
    tlsrpt_agg_success(a, "dest.test", "tlsa");
    tlsrpt_agg_success(a, "dest.test", "tlsa");
    tlsrpt_agg_failure(a, "dest.test", "tlsa", "tlsa-invalid", "mx.dest.test", "192.0.2.1",
                       "192.0.2.25", "no match");
    tlsrpt_agg_failure(a, "dest.test", "tlsa", "tlsa-invalid", "mx.dest.test", "192.0.2.1",
                       "192.0.2.25", "no match");
    tlsrpt_agg_failure(a, "other.test", "sts", "starttls-not-supported", NULL, NULL, NULL, NULL);
    uint64_t gen;
    char *t = tlsrpt_agg_dump(a, 1000, &gen);
    assert_non_null(t);
    assert_int_equal(gen, tlsrpt_agg_gen(a));
    struct tlsrpt_agg *b = tlsrpt_agg_new();
    int64_t start = 0;
    assert_int_equal(tlsrpt_agg_load(b, t, strlen(t), &start), PT_OK);
    assert_int_equal(start, 1000);
    char *taken = tlsrpt_agg_take(b, start);
    assert_non_null(taken);
    assert_null(tlsrpt_agg_take(b, start));       /* emptied */
    json_error_t err;
    json_t *root = json_loads(taken, 0, &err);
    json_t *p = json_object_get(json_object_get(root, "policies"), "dest.test tlsa");
    assert_int_equal(json_integer_value(json_object_get(p, "success")), 2);
    assert_int_equal(json_integer_value(json_object_get(p, "failure")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(p, "strings"), 0)),
                        "3 1 1 abcd");
    json_t *d = json_object_get(json_object_get(p, "details"),
                                "tlsa-invalid mx.dest.test 192.0.2.1 192.0.2.25 no match");
    assert_int_equal(json_integer_value(json_object_get(d, "count")), 2);
    assert_string_equal(json_string_value(json_object_get(d, "sip")), "192.0.2.1");
    assert_string_equal(json_string_value(json_object_get(d, "rip")), "192.0.2.25");
    json_decref(root);
    free(taken);
    free(t);
    /* not a state file: refused, the counters empty */
    const char *v2 = "{\"version\":2}";
    const char *shape = "{\"version\":1,\"start\":1,\"policies\":{\"x\":{\"domain\":1}}}";
    assert_int_equal(tlsrpt_agg_load(b, v2, strlen(v2), &start), PT_INVALID);
    assert_int_equal(tlsrpt_agg_load(b, shape, strlen(shape), &start), PT_INVALID);
    assert_null(tlsrpt_agg_take(b, 0));
    /* an internationalized policy domain is counted under its A-label */
    tlsrpt_agg_success(b, "bücher.test", "sts");
    taken = tlsrpt_agg_take(b, 0);
    assert_non_null(taken);
    root = json_loads(taken, 0, &err);
    p = json_object_get(json_object_get(root, "policies"), "xn--bcher-kva.test sts");
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "domain")), "xn--bcher-kva.test");
    json_decref(root);
    free(taken);
    tlsrpt_agg_free(a);
    tlsrpt_agg_free(b);
    assert_string_equal(tlsrpt_agg_result_type("STARTTLS not offered", true),
                        "starttls-not-supported");
    assert_string_equal(tlsrpt_agg_result_type("certificate verify failed: no matching DANE "
                                               "TLSA records", true), "tlsa-invalid");
    assert_string_equal(tlsrpt_agg_result_type("certificate verify failed: certificate has "
                                               "expired", false), "certificate-expired");
    assert_string_equal(tlsrpt_agg_result_type("certificate verify failed: hostname mismatch",
                                               false), "certificate-host-mismatch");
    assert_string_equal(tlsrpt_agg_result_type("certificate verify failed: self-signed "
                                               "certificate", false), "certificate-not-trusted");
    assert_string_equal(tlsrpt_agg_result_type(NULL, false), "validation-failure");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agg),
        cmocka_unit_test(test_txt),
        cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
