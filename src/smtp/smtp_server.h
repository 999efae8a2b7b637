/* SMTP server session (RFC 5321 ESMTP): the per-connection state machine from
 * greeting to QUIT. Talks to the network only through struct conn, hands accepted
 * messages to ingest, and never replies 250 to DATA before the spool is durable.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_SMTP_SERVER_H
#define PETREL_SMTP_SERVER_H

#include <stdbool.h>
#include <uv.h>

struct worker;
struct mbox_msg;

/* Starts a session of worker w on fd, a connection the worker accepted on the
 * listener at index li of gen's config (listener slot slot). The session takes
 * fd and the reference to gen and keeps them until it ends (also when it cannot
 * start: then both are released at once). */
struct cfg_gen;
void smtp_server_accept(struct worker *w, struct cfg_gen *gen, int li, int slot, int fd);
/* Handles a spool completion posted to the worker's mailbox. */
void smtp_server_on_spooled(struct worker *w, struct mbox_msg *msg);
/* Graceful stop: idle sessions get 421 and close; sessions in DATA finish it
 * first unless force. A session waiting for the spool always gets its reply. */
void smtp_server_stop_all(struct worker *w, bool force);

#endif
