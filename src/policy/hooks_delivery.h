/* The smtp_delivery_result event on a delivery thread: one Lua state per thread,
 * built from the config like the SMTP workers' (config_lua_worker + hooks_install),
 * whose handlers run after every delivery attempt with result and meta, and the
 * adjust_domain_rate(domain, fraction) action that calls back into the thread's
 * shaping. Runs on the thread that owns the state; every run has an instruction
 * budget; a failing handler is logged and never changes the attempt's outcome.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_POLICY_HOOKS_DELIVERY_H
#define PETREL_POLICY_HOOKS_DELIVERY_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct hooks_delivery;

/* What the handlers see (strings borrowed for the call; NULL = nil). */
struct hooks_delivery_result {
    int code;                   /* result.code (0 = no reply: network error) */
    const char *enhanced;       /* result.enhanced, "4.7.0" */
    const char *response;       /* result.response, the whole reply */
    const char *domain, *id, *site, *tenant;   /* meta.* */
    uint32_t attempts;          /* meta.attempts, this one included */
};

/* adjust_domain_rate(domain, fraction), fraction in [-1, 1], on the thread. */
typedef void (*hooks_rate_fn)(void *arg, const char *domain, double fraction);

/* A thread's state, or NULL: when the config registers no smtp_delivery_result
 * handler (err empty: nothing to run), or on failure (err says why). cfg is
 * borrowed for the life of the state (a config generation builds one per delivery
 * thread and owns them). Reads and runs the config file: off the event loops. */
struct hooks_delivery *hooks_delivery_new(const struct config *cfg, char *err, size_t errlen);
void hooks_delivery_free(struct hooks_delivery *hd);   /* NULL ok */
/* Runs every smtp_delivery_result handler, in order, as handler(result, meta). An
 * error (raised, over budget, a yield) is logged naming the hook and its line.
 * adjust_domain_rate calls fn(arg, ...) during the run. */
void hooks_delivery_run(struct hooks_delivery *hd, const struct hooks_delivery_result *r,
                        hooks_rate_fn fn, void *arg);

#endif
