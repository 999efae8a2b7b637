/* petrelctl: the admin client. This build knows `--version`; the queue commands
 * arrive with the HTTP admin API.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("petrelctl 0.1.0\n");
        return 0;
    }
    fprintf(stderr, "usage: petrelctl --version\n"
                    "(queue, show, suspend, resume, flush, bounce, delete and hash-password\n"
                    " are not available in this build yet)\n");
    return 2;
}
