/* IDNA conversion of lookup names with libidn2 (see idna.h); pure, no I/O.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <idn2.h>

#include "util/idna.h"
#include "util/result.h"

bool idna_is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

static int fail(char *err, size_t errlen, int rc, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "IDNA conversion failed: %s", why);
    return rc;
}

int idna_to_ascii(const char *in, char *out, size_t outlen, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!in || !out || outlen == 0)
        return fail(err, errlen, PT_INVALID, "no name");
    if (idna_is_ascii(in)) {
        size_t n = strlen(in);
        if (n >= outlen)
            return fail(err, errlen, PT_TOOLONG, "name too long");
        memcpy(out, in, n + 1);
        return PT_OK;
    }
    char *res = NULL;
    int rc = idn2_to_ascii_8z(in, &res, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc == IDN2_DISALLOWED) {
        /* as curl and browsers do: symbols UTS #46 still maps (U+2603 and the like) */
        idn2_free(res);
        res = NULL;
        rc = idn2_to_ascii_8z(in, &res, IDN2_NFC_INPUT | IDN2_TRANSITIONAL);
    }
    if (rc != IDN2_OK || !res) {
        idn2_free(res);
        return fail(err, errlen, PT_INVALID, rc != IDN2_OK ? idn2_strerror(rc) : "no result");
    }
    size_t n = strlen(res);
    if (n >= outlen) {
        idn2_free(res);
        return fail(err, errlen, PT_TOOLONG, "name too long");
    }
    memcpy(out, res, n + 1);
    idn2_free(res);
    return PT_OK;
}
