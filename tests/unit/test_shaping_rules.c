/* Unit tests for delivery/site (site globs) and delivery/shaping_rules (rate
 * parsing, most-specific rule lookup, reply flattening for automation).
 * SPDX-License-Identifier: Apache-2.0 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "delivery/shaping_rules.h"
#include "delivery/site.h"
#include "util/result.h"

static void test_glob_match(void **state)
{
    (void)state;
    assert_true(site_glob_match("*.google.com", "aspmx.l.google.com"));
    assert_true(site_glob_match("*.google.com", "ASPMX.L.GOOGLE.COM."));
    assert_false(site_glob_match("*.google.com", "google.com"));
    assert_false(site_glob_match("*.google.com", "mx.google.com.evil.example"));
    assert_true(site_glob_match("mx?.example.com", "mx1.example.com"));
    assert_false(site_glob_match("mx?.example.com", "mx12.example.com"));
    assert_true(site_glob_match("*-mail.*.outlook.com", "x-mail.protection.outlook.com"));
    assert_true(site_glob_match("a*b*c", "abbbc"));
    assert_false(site_glob_match("a*b*c", "abbbd"));
}

static void test_glob_valid(void **state)
{
    (void)state;
    char why[200];
    assert_true(site_glob_valid("*.google.com", why, sizeof why));
    assert_true(site_glob_valid("mta?.am0.yahoodns.net", why, sizeof why));
    assert_false(site_glob_valid("", why, sizeof why));
    assert_false(site_glob_valid("*", why, sizeof why));
    assert_false(site_glob_valid("*.*", why, sizeof why));
    assert_false(site_glob_valid("*.go ogle.com", why, sizeof why));
    assert_false(site_glob_valid("[a-z].com", why, sizeof why));
    assert_false(site_glob_valid("a..com", why, sizeof why));
}

static void test_hosts_all_match(void **state)
{
    (void)state;
    char hosts[3][256] = { "alt1.aspmx.l.google.com", "aspmx.l.google.com", "mx.other.net" };
    assert_true(site_hosts_match("*.google.com", hosts[0], sizeof hosts[0], 2));
    assert_false(site_hosts_match("*.google.com", hosts[0], sizeof hosts[0], 3));
    assert_false(site_hosts_match("*.google.com", hosts[0], sizeof hosts[0], 0));
}

static void test_rate_parse(void **state)
{
    (void)state;
    double r;
    assert_int_equal(shaping_rate_parse("10/s", &r), PT_OK);
    assert_true(fabs(r - 10) < 1e-12);
    assert_int_equal(shaping_rate_parse("300/min", &r), PT_OK);
    assert_true(fabs(r - 5) < 1e-12);
    assert_int_equal(shaping_rate_parse("3600/h", &r), PT_OK);
    assert_true(fabs(r - 1) < 1e-12);
    assert_int_equal(shaping_rate_parse("86400/d", &r), PT_OK);
    assert_true(fabs(r - 1) < 1e-12);
    assert_int_equal(shaping_rate_parse("0.5/s", &r), PT_OK);
    assert_int_equal(shaping_rate_parse("10/fortnight", &r), PT_INVALID);
    assert_int_equal(shaping_rate_parse("10", &r), PT_INVALID);
    assert_int_equal(shaping_rate_parse("0/s", &r), PT_INVALID);
    assert_int_equal(shaping_rate_parse("-1/s", &r), PT_INVALID);
    assert_int_equal(shaping_rate_parse("/s", &r), PT_INVALID);
    assert_int_equal(shaping_rate_parse("10/s ", &r), PT_INVALID);
    assert_int_equal(shaping_rate_parse("nan/s", &r), PT_INVALID);
}

static void test_most_specific(void **state)
{
    (void)state;
    struct shaping_rule rules[3] = {
        { .key = "site:*.google.com", .connection_limit = 20, .message_rate = 10,
          .connection_rate = -1, .max_deliveries_per_connection = -1, .connect_timeout = -1 },
        { .key = "gmail.com", .connection_limit = -1, .message_rate = 5,
          .connection_rate = -1, .max_deliveries_per_connection = -1, .connect_timeout = -1 },
        { .key = "site:*.outlook.com", .connection_limit = 3, .message_rate = -1,
          .connection_rate = -1, .max_deliveries_per_connection = 7, .connect_timeout = -1 },
    };
    rules[0].glob = rules[0].key + 5;
    rules[2].glob = rules[2].key + 5;
    struct shaping_rules sr = {
        .dflt = { .key = "default", .connection_limit = 10, .message_rate = 0,
                  .connection_rate = 0, .max_deliveries_per_connection = 100,
                  .connect_timeout = 30 },
        .rules = rules, .n_rules = 3, .has_sites = true,
    };
    const struct shaping_rule *r = shaping_rules_domain(&sr, "gmail.com");
    assert_ptr_equal(r, &rules[1]);
    assert_int_equal(shaping_rule_conn_limit(&sr, r), 10);     /* from default */
    assert_true(shaping_rule_rate(&sr, r) == 5);
    assert_null(shaping_rules_domain(&sr, "example.com"));
    assert_null(shaping_rules_domain(&sr, "*.google.com"));    /* site keys are not domains */
    char hosts[2][256] = { "a.mail.protection.outlook.com", "b.mail.protection.outlook.com" };
    r = shaping_rules_site(&sr, hosts[0], sizeof hosts[0], 2);
    assert_ptr_equal(r, &rules[2]);
    assert_int_equal(shaping_rule_conn_limit(&sr, r), 3);
    assert_true(shaping_rule_rate(&sr, r) == 0);               /* default: unlimited */
    assert_int_equal(shaping_rule_max_deliveries(&sr, r), 7);
    assert_true(shaping_rule_connect_timeout(&sr, r) == 30);
    assert_int_equal(shaping_rule_conn_limit(&sr, NULL), 10);
    /* tls: the rule's, else the default rule's; none set = 0 (the route's level) */
    sr.dflt.tls = -1;
    rules[1].tls = 3;
    rules[2].tls = -1;
    assert_int_equal(shaping_rule_tls(&sr, &rules[1]), 3);
    assert_int_equal(shaping_rule_tls(&sr, &rules[2]), 0);
    assert_int_equal(shaping_rule_tls(&sr, NULL), 0);
    sr.dflt.tls = 2;
    assert_int_equal(shaping_rule_tls(&sr, &rules[2]), 2);
    assert_int_equal(shaping_rule_tls(&sr, &rules[1]), 3);
}

static void test_flatten(void **state)
{
    (void)state;
    char out[128];
    shaping_reply_flatten("421-4.7.0 first\r\n421 4.7.0 rate limited\r\n", out, sizeof out);
    assert_string_equal(out, "421-4.7.0 first 421 4.7.0 rate limited");
    shaping_reply_flatten("550 5.7.1 blocked", out, sizeof out);
    assert_string_equal(out, "550 5.7.1 blocked");
    shaping_reply_flatten(NULL, out, sizeof out);
    assert_string_equal(out, "");
    shaping_reply_flatten("0123456789", out, 5);
    assert_string_equal(out, "0123");
}

static void test_actions(void **state)
{
    (void)state;
    for (int a = 0; a < SHAPING__N; a++)
        assert_int_equal(shaping_action_parse(shaping_action_name((enum shaping_action)a)), a);
    assert_int_equal(shaping_action_parse("explode"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_glob_match),    cmocka_unit_test(test_glob_valid),
        cmocka_unit_test(test_hosts_all_match), cmocka_unit_test(test_rate_parse),
        cmocka_unit_test(test_most_specific), cmocka_unit_test(test_flatten),
        cmocka_unit_test(test_actions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
