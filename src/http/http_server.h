/* HTTP listeners (DESIGN §5) on libmicrohttpd: POST /v1/message and /api/inject/v1
 * (message injection), the queue API (GET /api/queue, /api/message/ID; POST
 * /api/queue/suspend, resume, flush, bounce, delete), GET /metrics, /healthz,
 * /readyz, behind the trusted_hosts / Bearer key rule. Each listener runs in MHD's own
 * polling thread and never touches a worker loop: injections go through ingest (the
 * connection is suspended until the fsync), queue calls through the delivery
 * threads' mailboxes (a bounded wait).
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_HTTP_HTTP_SERVER_H
#define PETREL_HTTP_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

struct runtime;
struct cfg_http_listener;
struct http_server;

/* Tunables of every HTTP listener. */
#define HTTP_MAX_CONNECTIONS 256          /* concurrent connections per listener */
#define HTTP_CONNECTION_TIMEOUT_S 30      /* idle connection is closed after this */
#define HTTP_MAX_BODY (1024 * 1024)       /* request body above it: 413 */
#define HTTP_MAX_INJECT ((size_t)64 << 20) /* body of an injection (base64 attachments) */
#define HTTP_MAX_PEM (1024 * 1024)        /* cert_file / key_file size cap */

/* Binds l->host:l->port and starts serving in a thread of its own. rt and l are
 * borrowed and must outlive the server. Returns NULL with a message naming the
 * listen address (or the TLS file) in err on failure: bind error, unreadable
 * cert/key, an MHD built without TLS when tls is configured. Call before
 * dropping privileges (the port may be privileged, the key root-only). */
/* index is the listener's position in the config: its Lua state in each
 * generation (requests run the hooks of the generation they started with). */
struct http_server *http_start(struct runtime *rt, const struct cfg_http_listener *l, int index,
                               char *err, size_t errlen);

/* /readyz answers 503 until this is called with true: main calls it once every
 * listener is bound. Thread-safe. */
void http_set_ready(struct http_server *s, bool ready);

/* "http" or "https", for log lines. */
const char *http_scheme(const struct http_server *s);

/* Stops accepting, closes every connection, joins the thread, frees s.
 * http_stop(NULL) is a no-op. */
void http_stop(struct http_server *s);

#endif
