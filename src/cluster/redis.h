/* A blocking Redis connection for petrel's own threads (spool thread, cluster
 * thread, per-thread readers): redis:// and rediss:// URLs, AUTH, SELECT, pipelined
 * commands with deadlines. Never used on an event loop; never waits past its timeout.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_CLUSTER_REDIS_H
#define PETREL_CLUSTER_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define REDIS_HOST_MAX 255
#define REDIS_CRED_MAX 255
#define REDIS_PATH_MAX 1023

struct redis_url {
    char host[REDIS_HOST_MAX + 1];   /* name or address, brackets of IPv6 removed */
    uint16_t port;                   /* 6379 */
    bool tls;                        /* rediss:// */
    char user[REDIS_CRED_MAX + 1];   /* "" = none (AUTH password only, or no AUTH) */
    char password[REDIS_CRED_MAX + 1];
    int db;                          /* 0..1000000 */
    char ca_file[REDIS_PATH_MAX + 1]; /* rediss: ?ca_file=PATH; "" = the system store */
};

/* Parses "redis[s]://[[user]:password@]host[:port][/db][?ca_file=PATH]" (percent
 * escapes in user and password). Pure; PT_OK, or PT_INVALID with a reason in err. */
int redis_url_parse(const char *url, struct redis_url *out, char *err, size_t errlen);
/* The URL with the password masked, for logs. */
void redis_url_text(const struct redis_url *u, char *out, size_t outlen);

struct redis_conn;

/* Connects (TCP, TLS for rediss, AUTH, SELECT), each step within timeout_s.
 * NULL with the reason in err. The connection is for one thread at a time. */
struct redis_conn *redis_connect(const struct redis_url *u, double timeout_s, char *err,
                                 size_t errlen);
void redis_close(struct redis_conn *c);           /* NULL ok */

/* Buffers one command (argv borrowed for the call; lens NULL = strlen). */
int redis_append(struct redis_conn *c, int argc, const char **argv, const size_t *lens);
/* Buffers one printf-style command (hiredis format: %s, %b). */
int redis_appendf(struct redis_conn *c, const char *fmt, ...);
/* Sends everything buffered. PT_OK, or PT_ERROR (the connection is dead). */
int redis_flush(struct redis_conn *c);
/* Reads the next reply (flushes first). PT_OK with *out (caller frees with
 * freeReplyObject; an error reply is a REDIS_REPLY_ERROR object), or PT_ERROR on
 * an I/O error, a timeout or a protocol error: the connection is dead then. */
int redis_read(struct redis_conn *c, redisReply **out);
/* One command and its reply; NULL when the connection failed (then dead). */
redisReply *redis_cmdf(struct redis_conn *c, const char *fmt, ...);
redisReply *redis_cmdv(struct redis_conn *c, int argc, const char **argv, const size_t *lens);
/* Deadline of each later read or write (connect_timeout until then). */
void redis_set_timeout(struct redis_conn *c, double timeout_s);
/* true once an I/O error happened: close and reconnect. */
bool redis_dead(const struct redis_conn *c);
/* The last error, for logs. */
const char *redis_error(const struct redis_conn *c);

#endif
