/* Logging: the JSON-lines event log (one record per recipient per event, DESIGN
 * §6), written by a log thread so callers never block on disk; and the human
 * diagnostic log on stderr.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_OBS_LOG_H
#define PETREL_OBS_LOG_H

#include <stddef.h>
#include <stdint.h>

/* Record types, as written in "type". */
#define LOG_RECEPTION "Reception"
#define LOG_DELIVERY "Delivery"
#define LOG_TRANSIENT "TransientFailure"
#define LOG_BOUNCE "Bounce"
#define LOG_EXPIRATION "Expiration"
#define LOG_REJECTION "Rejection"
#define LOG_ADMIN "Admin"
#define LOG_AUTH_FAILURE "AuthFailure"   /* DESIGN §11: read by contrib/fail2ban */
#define LOG_SHAPING "Shaping"            /* DESIGN §9: an automation rule triggered */

/* Every field is written; NULL strings and negative numbers become JSON null.
 * Strings are escaped (invalid UTF-8 replaced by U+FFFD). Borrowed. */
struct log_record {
    const char *type;
    const char *id;
    double timestamp;          /* 0 = now */
    const char *sender, *recipient, *queue, *site, *peer_address;
    int code;                  /* <0 = null */
    const char *response;
    int64_t size;              /* <0 = null */
    double delay;              /* <0 = null */
    int attempts;              /* <0 = null */
    const char *tls;
    const char *protocol;      /* "smtp" | "http" | NULL */
    const char *tenant;        /* DESIGN §9: meta.tenant, NULL = none (always written) */
    const char *egress_source; /* the egress source the message goes out by, NULL = the
                                  host's default address (always written) */
    const char *user;          /* AuthFailure: the user name tried; the key is written
                                  only when set */
    const char *action;        /* Shaping: the action; "action" and "until" (RFC 3339,
                                  null when until is 0) are written only when set */
    double until;
};

/* Opens path for appending (creating parent dirs) and starts the writer thread. */
int log_open(const char *path, char *err, size_t errlen);
/* Formats the record into one line and queues it. Thread-safe, never blocks on I/O. */
void log_event(const struct log_record *r);
/* Formats a record as one JSON line (with '\n') into out; used by log_event and tests. */
struct buf;
int log_format(const struct log_record *r, struct buf *out);
/* Flushes queued records and stops the writer thread. */
void log_close(void);
/* Asks the writer to reopen the path (after logrotate moved the file; e.g. on SIGHUP). */
void log_reopen(void);
/* The same, switching to path when it differs (a reload changed configure_logging).
 * Records queued before the call go to the old file, later ones to the new. */
void log_reopen_path(const char *path);
/* Queue cap in bytes for the next log_open (0 = default 4 MiB). Over it, records are
 * dropped, counted and warned about on stderr; callers never wait. */
void log_set_queue_max(size_t bytes);
/* Records dropped since log_open (queue full, record too long, write errors). */
uint64_t log_dropped(void);

enum log_level { LOG_L_DEBUG = 0, LOG_L_INFO, LOG_L_WARN, LOG_L_ERROR };
void log_set_level(enum log_level l);
int log_level_parse(const char *s, enum log_level *out); /* "debug"|"info"|"warn"|"error" */
/* Human diagnostic line on stderr: "2026-11-23T23:38:02.123Z warn: ...". Thread-safe. */
void log_diag(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Notes the name of the file stderr writes to, if it is a regular file (call at
 * start); log_diag_reopen opens that name again on stderr (logrotate: the file
 * was moved). PT_OK when there is nothing to reopen. */
void log_diag_track_stderr(void);
int log_diag_reopen(void);
/* A line every level shows, labelled "notice": what an operator asked for and must
 * see answered (e.g. "reload ok"). Thread-safe. */
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define log_debug(...) log_diag(LOG_L_DEBUG, __VA_ARGS__)
#define log_info(...) log_diag(LOG_L_INFO, __VA_ARGS__)
#define log_warn(...) log_diag(LOG_L_WARN, __VA_ARGS__)
#define log_error(...) log_diag(LOG_L_ERROR, __VA_ARGS__)

#endif
