/* The backend table behind spool.h (not an API for the rest of petrel): each
 * backend (spool_rocksdb.c, spool_redis.c) fills one; spool.c dispatches to it.
 * Types are the backend's own, passed as void *.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_QUEUE_SPOOL_BACKEND_H
#define PETREL_QUEUE_SPOOL_BACKEND_H

#include "queue/spool.h"

struct spool_ops {
    const char *name;
    void *(*batch_new)(void);
    void (*batch_free)(void *b);
    int (*batch_put_content)(void *b, const char *id, const void *data, size_t len);
    int (*batch_put_entry)(void *b, const char *id, const char *domain, const void *rec,
                           size_t len);
    int (*batch_del_entry)(void *b, const char *id, const char *domain);
    int (*batch_del_content)(void *b, const char *id);
    int (*commit_durable)(void *s, void *b, spool_done_cb cb, void *arg);
    int (*commit_nosync)(void *s, void *b);
    /* optional (NULL: spool.c composes it from del_entry, has_entries, del_content) */
    int (*remove_entry)(void *s, const char *id, const char *domain);
    int (*writable)(void *s);
    int (*get_content)(void *s, const char *id, struct buf *out);
    int (*has_entries)(void *s, const char *id);
    int (*scan_entries)(void *s, spool_scan_cb cb, void *arg);
    int (*scan_id)(void *s, const char *id, spool_scan_cb cb, void *arg);
    int (*batch_put_suspension)(void *b, const char *dest, double until);
    int (*batch_del_suspension)(void *b, const char *dest);
    int (*scan_suspensions)(void *s, spool_suspension_cb cb, void *arg);
    void (*stats)(void *s, struct spool_stats *out);
    void (*close)(void *s);
};

extern const struct spool_ops spool_rocksdb_ops;
extern const struct spool_ops spool_redis_ops;

/* Wraps a backend's opened store (taken) into a struct spool and makes ops the
 * process's batch backend. NULL when out of memory (then impl is closed). */
struct spool *spool_wrap(const struct spool_ops *ops, void *impl);
/* The backend's store under s (spool_redis.c's extra API). */
void *spool_impl(struct spool *s, const struct spool_ops *ops);
/* rocksdb backend's open (spool_open calls it) */
void *spool_rocksdb_open(const char *dir, char *err, size_t errlen);

#endif
