/* The spool front: dispatches spool.h to the backend chosen at open (RocksDB by
 * default, Redis for backend = "redis"). One backend per process: batches are
 * built before a spool is named, so they follow the backend opened last.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>

#include "queue/spool.h"
#include "queue/spool_backend.h"
#include "util/result.h"

struct spool {
    const struct spool_ops *ops;
    void *impl;
};

static const struct spool_ops *batch_ops = &spool_rocksdb_ops;

struct spool *spool_wrap(const struct spool_ops *ops, void *impl)
{
    struct spool *s = malloc(sizeof *s);
    if (!s) {
        ops->close(impl);
        return NULL;
    }
    s->ops = ops;
    s->impl = impl;
    batch_ops = ops;
    return s;
}

void *spool_impl(struct spool *s, const struct spool_ops *ops)
{
    return s && s->ops == ops ? s->impl : NULL;
}

struct spool *spool_open(const char *dir, char *err, size_t errlen)
{
    void *impl = spool_rocksdb_open(dir, err, errlen);
    return impl ? spool_wrap(&spool_rocksdb_ops, impl) : NULL;
}

void spool_close(struct spool *s)
{
    if (!s)
        return;
    s->ops->close(s->impl);
    free(s);
}

const char *spool_backend_name(const struct spool *s)
{
    return s->ops->name;
}

int spool_shared(const struct spool *s)
{
    return s && s->ops == &spool_redis_ops;
}

struct spool_batch *spool_batch_new(void)
{
    return batch_ops->batch_new();
}

void spool_batch_free(struct spool_batch *b)
{
    if (b)
        batch_ops->batch_free(b);
}

int spool_batch_put_content(struct spool_batch *b, const char *id, const void *data, size_t len)
{
    return batch_ops->batch_put_content(b, id, data, len);
}

int spool_batch_put_entry(struct spool_batch *b, const char *id, const char *domain,
                          const void *rec, size_t len)
{
    return batch_ops->batch_put_entry(b, id, domain, rec, len);
}

int spool_batch_del_entry(struct spool_batch *b, const char *id, const char *domain)
{
    return batch_ops->batch_del_entry(b, id, domain);
}

int spool_batch_del_content(struct spool_batch *b, const char *id)
{
    return batch_ops->batch_del_content(b, id);
}

int spool_commit_durable(struct spool *s, struct spool_batch *b, spool_done_cb cb, void *arg)
{
    return s->ops->commit_durable(s->impl, b, cb, arg);
}

int spool_commit_nosync(struct spool *s, struct spool_batch *b)
{
    return s->ops->commit_nosync(s->impl, b);
}

int spool_remove_entry(struct spool *s, const char *id, const char *domain)
{
    if (s->ops->remove_entry)
        return s->ops->remove_entry(s->impl, id, domain);
    struct spool_batch *b = spool_batch_new();
    if (!b)
        return PT_NOMEM;
    int rc = spool_batch_del_entry(b, id, domain);
    if (rc != PT_OK) {
        spool_batch_free(b);
        return rc;
    }
    spool_commit_nosync(s, b);
    if (!spool_has_entries(s, id) && (b = spool_batch_new()) != NULL) {
        spool_batch_del_content(b, id);
        spool_commit_nosync(s, b);
    }
    return PT_OK;
}

int spool_writable(struct spool *s)
{
    return s->ops->writable(s->impl);
}

int spool_get_content(struct spool *s, const char *id, struct buf *out)
{
    return s->ops->get_content(s->impl, id, out);
}

int spool_has_entries(struct spool *s, const char *id)
{
    return s->ops->has_entries(s->impl, id);
}

int spool_scan_entries(struct spool *s, spool_scan_cb cb, void *arg)
{
    return s->ops->scan_entries(s->impl, cb, arg);
}

int spool_scan_id(struct spool *s, const char *id, spool_scan_cb cb, void *arg)
{
    return s->ops->scan_id(s->impl, id, cb, arg);
}

void spool_stats(struct spool *s, struct spool_stats *out)
{
    s->ops->stats(s->impl, out);
}

int spool_batch_put_suspension(struct spool_batch *b, const char *dest, double until)
{
    return batch_ops->batch_put_suspension(b, dest, until);
}

int spool_batch_del_suspension(struct spool_batch *b, const char *dest)
{
    return batch_ops->batch_del_suspension(b, dest);
}

int spool_scan_suspensions(struct spool *s, spool_suspension_cb cb, void *arg)
{
    if (!s || !cb)
        return PT_INVALID;
    return s->ops->scan_suspensions(s->impl, cb, arg);
}
