/* petrelctl's operator commands kept apart from the admin-API commands:
 * `report` (pflogsumm-style summary of the JSON log), `dkim-keygen` and `top`.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_TOOLS_CTL_OPS_H
#define PETREL_TOOLS_CTL_OPS_H

#include <jansson.h>

/* argv[0] is the command name; each returns the process exit code (0 ok, 1 error,
 * 2 usage) after printing to stdout/stderr. */
int ctl_ops_report(int argc, char **argv);
int ctl_ops_dkim_keygen(int argc, char **argv);
int ctl_ops_top(const char *url, const char *key, int argc, char **argv);

/* From petrelctl.c: GET (json NULL) or POST json to url+path; the parsed JSON
 * body of a 200 (the caller owns it) or NULL with a message on stderr. */
json_t *ctl_fetch(const char *url, const char *key, const char *path, const char *json);
/* From petrelctl.c: the raw body of GET url+path into body (caller frees with
 * buf_free); returns the HTTP status or -1. */
struct buf;
int ctl_get_raw(const char *url, const char *key, const char *path, struct buf *body);

#endif
