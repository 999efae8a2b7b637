/* petrelctl: the admin client. `hash-password` prints a users_file HASH for a
 * password read from stdin; never echoes the password, never takes it as an
 * argument (argv is visible to every user). The queue commands talk to the HTTP
 * admin API over plain HTTP: `queue` and `show ID` read it (GET /api/queue,
 * /api/message/ID), suspend, resume, flush, bounce and delete POST to
 * /api/queue/ACTION.
 * SPDX-License-Identifier: Apache-2.0 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "util/buf.h"

#include "core/users.h"
#include "util/result.h"

#include "ctl_ops.h"

#define PETRELCTL_VERSION "0.1.0"

static const char petrelctl_usage[] =
    "usage: petrelctl --version\n"
    "       petrelctl hash-password [--cram-md5]   (reads one password line from stdin)\n"
    "       petrelctl [--url URL] [--key KEY] COMMAND\n"
    "         COMMAND: queue [--by domain|tenant] | show ID | suspend DOMAIN [DURATION] | resume DOMAIN |\n"
    "                  flush [DOMAIN] | bounce ID|DOMAIN | delete ID|DOMAIN | reload |\n"
    "                  top [--once] [--interval 2s]\n"
    "       petrelctl report [--since DURATION] [--json] LOGFILE\n"
    "       petrelctl dkim-keygen --domain D --selector S [--algorithm rsa-sha256|ed25519-sha256]\n"
    "                 [--bits 2048] --out DIR\n"
    "         URL: $PETREL_URL or http://127.0.0.1:8080; KEY: $PETREL_KEY (Bearer key)\n";

#define CTL_TIMEOUT_S 30
#define CTL_MAX_RESPONSE (64u << 20)

/* Reads one line of at most USERS_PASS_MAX bytes (newline stripped) into pass.
 * Returns its length, or -1 with a message on stderr. */
static long petrelctl_read_password(char pass[USERS_PASS_MAX + 2])
{
    if (!fgets(pass, USERS_PASS_MAX + 2, stdin)) {
        fprintf(stderr, "petrelctl: hash-password: no password on stdin\n");
        return -1;
    }
    size_t n = strlen(pass);
    if (n > 0 && pass[n - 1] == '\n')
        pass[--n] = '\0';
    else if (!feof(stdin)) {
        fprintf(stderr, "petrelctl: hash-password: password longer than %d bytes\n",
                USERS_PASS_MAX);
        return -1;
    }
    if (n > 0 && pass[n - 1] == '\r')
        pass[--n] = '\0';
    if (n == 0) {
        fprintf(stderr, "petrelctl: hash-password: empty password\n");
        return -1;
    }
    if (n > USERS_PASS_MAX) {
        fprintf(stderr, "petrelctl: hash-password: password longer than %d bytes\n",
                USERS_PASS_MAX);
        return -1;
    }
    return (long)n;
}

static int petrelctl_hash_password(int argc, char **argv)
{
    int cram = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--cram-md5") == 0) {
            cram = 1;
        } else {
            fprintf(stderr, "petrelctl: hash-password: unknown option '%s'\n%s", argv[i],
                    petrelctl_usage);
            return 2;
        }
    }
    char pass[USERS_PASS_MAX + 2], hash[USERS_HASH_MAX];
    long n = petrelctl_read_password(pass);
    int rc = PT_ERROR;
    if (n > 0)
        rc = cram ? users_cram_hash(pass, (size_t)n, hash, sizeof hash)
                  : users_crypt_hash(pass, hash, sizeof hash);
    OPENSSL_cleanse(pass, sizeof pass);
    if (n <= 0)
        return 1;
    if (rc != PT_OK) {
        fprintf(stderr, "petrelctl: hash-password: %s\n",
                rc == PT_NOMEM ? "out of memory" : "libcrypt could not hash the password");
        return 1;
    }
    printf("%s\n", hash);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- HTTP admin API client ---------------------------------------------------- */

/* GET path (or POST json when it is not NULL) to url ("http://host[:port]", a
 * trailing path is ignored) with an optional Bearer key. Returns the HTTP status
 * (body in *body) or -1 with a message on stderr. */
static int ctl_http(const char *url, const char *key, const char *path, const char *json,
                    struct buf *body)
{
    if (strncmp(url, "http://", 7) != 0) {
        fprintf(stderr, "petrelctl: %s: only http:// URLs are supported (for https use curl)\n",
                url);
        return -1;
    }
    char host[256], port[16] = "80";
    const char *h = url + 7, *end = h + strcspn(h, "/");
    const char *colon = NULL;
    if (*h == '[') {  /* [v6]:port */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb) {
            fprintf(stderr, "petrelctl: %s: bad URL\n", url);
            return -1;
        }
        snprintf(host, sizeof host, "%.*s", (int)(rb - h - 1), h + 1);
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        snprintf(host, sizeof host, "%.*s", (int)((colon ? colon : end) - h), h);
    }
    if (colon)
        snprintf(port, sizeof port, "%.*s", (int)(end - colon - 1), colon + 1);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "petrelctl: %s: %s\n", url, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        struct timeval tv = { CTL_TIMEOUT_S, 0 };
        if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
                        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
                        connect(fd, a->ai_addr, a->ai_addrlen) != 0)) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        fprintf(stderr, "petrelctl: cannot connect to %s\n", url);
        return -1;
    }
    struct buf req, resp;
    buf_init(&req, 0);
    buf_init(&resp, CTL_MAX_RESPONSE);
    buf_appendf(&req, "%s %s HTTP/1.0\r\nHost: %s\r\nAccept: application/json\r\n",
                json ? "POST" : "GET", path, host);
    if (key && *key)
        buf_appendf(&req, "Authorization: Bearer %s\r\n", key);
    if (json)
        buf_appendf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                    strlen(json));
    buf_appends(&req, "\r\n");
    if (json)
        buf_appends(&req, json);
    int status = -1;
    ssize_t w = write(fd, req.data, req.len);
    char chunk[16384];
    ssize_t r;
    while (w == (ssize_t)req.len && (r = read(fd, chunk, sizeof chunk)) > 0)
        if (buf_append(&resp, chunk, (size_t)r) != PT_OK)
            break;
    close(fd);
    const char *sep = resp.data ? strstr(resp.data, "\r\n\r\n") : NULL;
    if (sep && sscanf(resp.data, "HTTP/%*d.%*d %d", &status) == 1) {
        buf_append(body, sep + 4, resp.len - (size_t)(sep + 4 - resp.data));
    } else {
        fprintf(stderr, "petrelctl: no HTTP answer from %s\n", url);
        status = -1;
    }
    OPENSSL_cleanse(req.data, req.len);  /* it holds the key */
    buf_free(&req);
    buf_free(&resp);
    return status;
}

/* Fetches path (POSTing json if not NULL) and parses the JSON answer; prints the
 * API's error and returns NULL on anything but 200. */
json_t *ctl_fetch(const char *url, const char *key, const char *path, const char *json)
{
    struct buf body;
    buf_init(&body, 0);
    int status = ctl_http(url, key, path, json, &body);
    json_t *doc = status > 0 ? json_loadb(body.data ? body.data : "", body.len, 0, NULL) : NULL;
    buf_free(&body);
    if (status == 200 && json_is_object(doc))
        return doc;
    if (status > 0) {
        const char *e = json_string_value(json_object_get(doc, "error"));
        fprintf(stderr, "petrelctl: HTTP %d: %s\n", status, e ? e : "unexpected answer");
    }
    json_decref(doc);
    return NULL;
}

int ctl_get_raw(const char *url, const char *key, const char *path, struct buf *body)
{
    return ctl_http(url, key, path, NULL, body);
}

static const char *str_or(json_t *v, const char *dflt)
{
    const char *s = json_string_value(v);
    return s ? s : dflt;
}

static int ctl_queue(const char *url, const char *key)
{
    json_t *doc = ctl_fetch(url, key, "/api/queue", NULL);
    if (!doc)
        return 1;
    json_t *qs = json_object_get(doc, "queues");
    printf("%-40s %8s %10s  %-24s %5s  %-20s\n", "DESTINATION", "MESSAGES", "OLDEST",
           "NEXT ATTEMPT", "CONNS", "SITE");
    size_t i;
    json_t *q;
    json_array_foreach(qs, i, q) {
        char age[32] = "-";
        if (json_is_number(json_object_get(q, "oldest_age_s")))
            snprintf(age, sizeof age, "%.0fs", json_number_value(json_object_get(q, "oldest_age_s")));
        json_t *sh = json_object_get(q, "shaping");
        const char *reason = str_or(json_object_get(sh, "reason"), NULL);
        long long dead = (long long)json_integer_value(json_object_get(q, "dead"));
        char dl[48] = "";
        if (dead)
            snprintf(dl, sizeof dl, "  %lld dead", dead);
        printf("%-40s %8lld %10s  %-24s %5lld  %-20s%s%s%s%s\n",
               str_or(json_object_get(q, "domain"), "?"),
               (long long)json_integer_value(json_object_get(q, "count")), age,
               str_or(json_object_get(q, "next_attempt"), "-"),
               (long long)json_integer_value(json_object_get(q, "connections")),
               str_or(json_object_get(q, "site"), "-"),
               json_is_true(json_object_get(q, "suspended")) ? "  suspended" : "", dl,
               reason ? "  shaping: " : "", reason ? reason : "");
    }
    printf("-- %lld messages in %zu queues, %lld dead\n",
           (long long)json_integer_value(json_object_get(doc, "total")), json_array_size(qs),
           (long long)json_integer_value(json_object_get(doc, "dead")));
    json_decref(doc);
    return 0;
}

/* petrelctl queue --by tenant: GET /api/queue?by=tenant */
static int ctl_queue_tenants(const char *url, const char *key)
{
    json_t *doc = ctl_fetch(url, key, "/api/queue?by=tenant", NULL);
    if (!doc)
        return 1;
    json_t *ts = json_object_get(doc, "tenants");
    printf("%-32s %8s %10s  %-24s\n", "TENANT", "MESSAGES", "OLDEST", "NEXT ATTEMPT");
    size_t i;
    json_t *t;
    json_array_foreach(ts, i, t) {
        char age[32] = "-";
        if (json_is_number(json_object_get(t, "oldest_age_s")))
            snprintf(age, sizeof age, "%.0fs", json_number_value(json_object_get(t, "oldest_age_s")));
        printf("%-32s %8lld %10s  %-24s\n", str_or(json_object_get(t, "tenant"), "(none)"),
               (long long)json_integer_value(json_object_get(t, "count")), age,
               str_or(json_object_get(t, "next_attempt"), "-"));
    }
    printf("-- %lld messages of %zu tenants\n",
           (long long)json_integer_value(json_object_get(doc, "total")), json_array_size(ts));
    json_decref(doc);
    return 0;
}

static int ctl_show(const char *url, const char *key, const char *id)
{
    if (strspn(id, "0123456789abcdefABCDEF") != strlen(id) || strlen(id) != 16) {
        fprintf(stderr, "petrelctl: show: '%s' is not a message id (16 hex digits)\n", id);
        return 2;
    }
    char path[64];
    snprintf(path, sizeof path, "/api/message/%s", id);
    json_t *doc = ctl_fetch(url, key, path, NULL);
    if (!doc)
        return 1;
    printf("%s  from <%s>  received %s  %lld bytes  via %s\n", id,
           str_or(json_object_get(doc, "sender"), ""),
           str_or(json_object_get(doc, "received_at"), "?"),
           (long long)json_integer_value(json_object_get(doc, "size")),
           str_or(json_object_get(doc, "protocol"), "?"));
    size_t i, k;
    json_t *d, *r;
    json_array_foreach(json_object_get(doc, "destinations"), i, d) {
        if (json_is_true(json_object_get(d, "dead")))
            printf("  %s: %lld attempts, dead (expired %s)\n",
                   str_or(json_object_get(d, "domain"), "?"),
                   (long long)json_integer_value(json_object_get(d, "attempts")),
                   str_or(json_object_get(d, "expired_at"), "-"));
        else
            printf("  %s: %lld attempts, next %s\n", str_or(json_object_get(d, "domain"), "?"),
                   (long long)json_integer_value(json_object_get(d, "attempts")),
                   str_or(json_object_get(d, "next_attempt"), "-"));
        if (json_is_string(json_object_get(d, "last_response")))
            printf("    last response: %s\n", json_string_value(json_object_get(d, "last_response")));
        json_array_foreach(json_object_get(d, "recipients"), k, r)
            printf("    %-40s %s\n", str_or(json_object_get(r, "address"), "?"),
                   str_or(json_object_get(r, "state"), "?"));
    }
    json_decref(doc);
    return 0;
}

/* suspend DOMAIN [DURATION] | resume DOMAIN | flush [DOMAIN] | bounce ID | delete ID:
 * POST /api/queue/ACTION; prints the number of recipients affected. */
static int ctl_action(const char *url, const char *key, const char *action, int argc,
                      char **argv)
{
    json_t *req = json_object();
    bool ok;
    if (strcmp(action, "suspend") == 0) {
        ok = argc == 1 || argc == 2;
        if (ok)
            json_object_set_new(req, "domain", json_string(argv[0]));
        if (argc == 2)
            json_object_set_new(req, "duration", json_string(argv[1]));
    } else if (strcmp(action, "resume") == 0) {
        ok = argc == 1;
        if (ok)
            json_object_set_new(req, "domain", json_string(argv[0]));
    } else if (strcmp(action, "flush") == 0) {
        ok = argc <= 1;
        if (argc == 1)
            json_object_set_new(req, "domain", json_string(argv[0]));
    } else {  /* bounce, delete: an id, or a domain */
        ok = argc == 1;
        if (ok)
            json_object_set_new(req, strspn(argv[0], "0123456789abcdefABCDEF") == 16 &&
                                         strlen(argv[0]) == 16 ? "id" : "domain",
                                json_string(argv[0]));
    }
    if (!ok) {
        json_decref(req);
        fprintf(stderr, "petrelctl: %s: wrong arguments\n%s", action, petrelctl_usage);
        return 2;
    }
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char path[64];
    snprintf(path, sizeof path, "/api/queue/%s", action);
    json_t *doc = body ? ctl_fetch(url, key, path, body) : NULL;
    free(body);
    if (!doc)
        return 1;
    printf("%s: %lld recipient(s) affected\n", action,
           (long long)json_integer_value(json_object_get(doc, "affected")));
    json_decref(doc);
    return 0;
}

/* POST /api/reload: prints "reloaded", or the config error (exit 1). */
static int ctl_reload(const char *url, const char *key)
{
    json_t *doc = ctl_fetch(url, key, "/api/reload", "{}");
    if (!doc)
        return 1;
    bool ok = json_is_true(json_object_get(doc, "reloaded"));
    json_decref(doc);
    if (!ok) {
        fprintf(stderr, "petrelctl: reload: unexpected answer\n");
        return 1;
    }
    printf("reloaded\n");
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const api_commands[] = {
        "queue", "show", "suspend", "resume", "flush", "bounce", "delete", NULL,
    };
    if (argc < 2) {
        fputs(petrelctl_usage, stderr);
        return 2;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("petrelctl " PETRELCTL_VERSION "\n");
        return 0;
    }
    if (strcmp(argv[1], "hash-password") == 0)
        return petrelctl_hash_password(argc, argv);
    if (strcmp(argv[1], "report") == 0)
        return ctl_ops_report(argc - 1, argv + 1);
    if (strcmp(argv[1], "dkim-keygen") == 0)
        return ctl_ops_dkim_keygen(argc - 1, argv + 1);
    const char *url = getenv("PETREL_URL"), *key = getenv("PETREL_KEY");
    int a = 1;
    for (; a + 1 < argc && argv[a][0] == '-' && argv[a][1] == '-'; a += 2) {
        if (strcmp(argv[a], "--url") == 0)
            url = argv[a + 1];
        else if (strcmp(argv[a], "--key") == 0)
            key = argv[a + 1];
        else
            break;
    }
    if (!url || !*url)
        url = "http://127.0.0.1:8080";
    if (a < argc && strcmp(argv[a], "queue") == 0 && a + 1 == argc)
        return ctl_queue(url, key);
    if (a < argc && strcmp(argv[a], "queue") == 0 && a + 3 == argc &&
        strcmp(argv[a + 1], "--by") == 0) {
        if (strcmp(argv[a + 2], "tenant") == 0)
            return ctl_queue_tenants(url, key);
        if (strcmp(argv[a + 2], "domain") == 0)
            return ctl_queue(url, key);
        fprintf(stderr, "petrelctl: queue --by: '%s' is not domain or tenant\n", argv[a + 2]);
        return 2;
    }
    if (a < argc && strcmp(argv[a], "reload") == 0 && a + 1 == argc)
        return ctl_reload(url, key);
    if (a < argc && strcmp(argv[a], "top") == 0)
        return ctl_ops_top(url, key, argc - a, argv + a);
    if (a < argc && strcmp(argv[a], "show") == 0 && a + 2 == argc)
        return ctl_show(url, key, argv[a + 1]);
    if (a < argc && (strcmp(argv[a], "queue") == 0 || strcmp(argv[a], "show") == 0 ||
                     strcmp(argv[a], "reload") == 0)) {
        fprintf(stderr, "petrelctl: %s: wrong arguments\n%s", argv[a], petrelctl_usage);
        return 2;
    }
    for (int i = 2; a < argc && api_commands[i]; i++)
        if (strcmp(argv[a], api_commands[i]) == 0)
            return ctl_action(url, key, argv[a], argc - a - 1, argv + a + 1);
    fprintf(stderr, "petrelctl: unknown command '%s'\n%s", a < argc ? argv[a] : "",
            petrelctl_usage);
    return 2;
}
