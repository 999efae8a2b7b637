/* LD_PRELOAD fault shim for tests: while the file named by $FAILSYNC_FLAG exists,
 * fsync and fdatasync fail with EIO (what a dying disk or a lost NFS/iSCSI path
 * reports); otherwise they pass through. sync_file_range is left alone: librocksdb
 * probes it on every new file and asserts (aborts) on any error but ENOSYS.
 * Test-only; never linked into petrel.
 * SPDX-License-Identifier: Apache-2.0 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int failsync_on(void)
{
    const char *flag = getenv("FAILSYNC_FLAG");
    return flag && access(flag, F_OK) == 0;
}

int fsync(int fd)
{
    static int (*real)(int);
    if (failsync_on()) {
        errno = EIO;
        return -1;
    }
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (failsync_on()) {
        errno = EIO;
        return -1;
    }
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
