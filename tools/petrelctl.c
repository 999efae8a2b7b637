/* petrelctl: the admin client. `hash-password` prints a users_file HASH for a
 * password read from stdin; never echoes the password, never takes it as an
 * argument (argv is visible to every user). Queue commands await the HTTP API.
 * SPDX-License-Identifier: Apache-2.0 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/users.h"
#include "util/result.h"

#define PETRELCTL_VERSION "0.1.0"

static const char petrelctl_usage[] =
    "usage: petrelctl --version\n"
    "       petrelctl hash-password [--cram-md5]   (reads one password line from stdin)\n"
    "       petrelctl queue | show ID | suspend DOMAIN | resume DOMAIN | flush |\n"
    "                 bounce ID | delete ID        (need the HTTP admin API)\n";

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
    for (int i = 0; api_commands[i]; i++)
        if (strcmp(argv[1], api_commands[i]) == 0) {
            fputs("not available: the HTTP admin API is not built yet\n", stderr);
            return 2;
        }
    fprintf(stderr, "petrelctl: unknown command '%s'\n%s", argv[1], petrelctl_usage);
    return 2;
}
