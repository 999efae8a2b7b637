/* MTA-STS policy fetch over HTTPS with libcurl; see sts_fetch.h. Runs on worker
 * threads only; never follows a redirect, never speaks plain HTTP.
 * SPDX-License-Identifier: Apache-2.0 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "delivery/mtasts.h"
#include "delivery/sts_fetch.h"
#include "util/idna.h"
#include "util/result.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void sts_fetch_global_init(void)
{
    pthread_once(&once, global_init);
}

struct sink {
    struct buf *body;
    bool toolong;
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct sink *s = arg;
    size_t len = size * n;
    if (s->body->len + len > MTASTS_POLICY_MAX) {
        s->toolong = true;
        return 0;                       /* aborts the transfer */
    }
    return buf_append(s->body, p, len) == PT_OK ? len : 0;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    atomic_bool *stop = arg;
    return stop && atomic_load(stop) ? 1 : 0;
}

void *sts_https_handle(const char *url, const void *resolve, const char *ca_file,
                       long timeout_ms, char *ebuf)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (resolve)
        curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
    return c;
}

int sts_fetch(const char *domain, const char *ip, const char *ca_file, atomic_bool *stop,
              struct buf *body, char *err, size_t errlen)
{
    sts_fetch_global_init();
    char url[400], host[300], resolve[400], alabel[300];
    /* the HTTPS host of an internationalized policy domain is its A-label form */
    if (idna_to_ascii(domain, alabel, sizeof alabel, err, errlen) != PT_OK)
        return PT_ERROR;
    snprintf(host, sizeof host, "mta-sts.%s", alabel);
    snprintf(url, sizeof url, "https://%s/.well-known/mta-sts.txt", host);
    bool v6 = strchr(ip, ':') != NULL;
    snprintf(resolve, sizeof resolve, v6 ? "%s:443:[%s]" : "%s:443:%s", host, ip);
    struct curl_slist *res = curl_slist_append(NULL, resolve);
    char ebuf[CURL_ERROR_SIZE] = "";
    CURL *c = res ? sts_https_handle(url, res, ca_file, STS_FETCH_TIMEOUT_MS, ebuf) : NULL;
    if (!c) {
        curl_slist_free_all(res);
        snprintf(err, errlen, "out of memory");
        return PT_NOMEM;
    }
    struct sink sink = { body, false };
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MTASTS_POLICY_MAX);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, stop);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "petrel-mta-sts");
    CURLcode rc = curl_easy_perform(c);
    int out = PT_OK;
    long status = 0;
    char *ctype = NULL;
    if (sink.toolong || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(err, errlen, "%s: policy larger than %d bytes", url, MTASTS_POLICY_MAX);
        out = PT_TOOLONG;
    } else if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", url, ebuf[0] ? ebuf : curl_easy_strerror(rc));
        out = PT_ERROR;
    } else if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status), status != 200) {
        snprintf(err, errlen, "%s: HTTP status %ld (redirects are not followed)", url, status);
        out = PT_ERROR;
    } else if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype), !ctype ||
               strncasecmp(ctype, "text/plain", 10) != 0 ||
               (ctype[10] != '\0' && ctype[10] != ';' && ctype[10] != ' ')) {
        snprintf(err, errlen, "%s: media type %s, not text/plain", url, ctype ? ctype : "missing");
        out = PT_ERROR;
    }
    curl_easy_cleanup(c);
    curl_slist_free_all(res);
    return out;
}
