/* SPDX-License-Identifier: MIT */
/*
 * conn_io.h - a connection's socket: reading over plain TCP, user-space TLS
 * or kTLS; writing what is in flight with one writev (plain, kTLS) or one
 * gathered SSL_write (user-space TLS); closing and freeing. Engine only.
 */
#ifndef KDERP_CONN_IO_H
#define KDERP_CONN_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct conn;

/*
 * Read what the transport has into buf (room bytes at most). Returns the
 * count (> 0), 0 when nothing is there now, or -1 when c was closed (EOF or
 * an error, logged with its reason).
 */
ssize_t conn_read_some(struct conn *c, uint8_t *buf, size_t room);

/* Write what is queued, up to 16 refills; re-arm EPOLLOUT when blocked. */
void conn_flush(struct conn *c);

/* Arm or disarm EPOLLOUT. */
void conn_set_epollout(struct conn *c, bool on);

/* Keep the unparsed tail of a read for the next one (closes c on OOM). */
void conn_store_carry(struct conn *c, const uint8_t *p, size_t n);
void conn_drop_carry(struct conn *c);

/*
 * Close c (owner only): unregister its key, tell watchers and former
 * correspondents, drop its queues, close the socket. reason: NULL for a
 * normal end. c is freed by the owner's loop after the next remote drain.
 */
void conn_close(struct conn *c, const char *reason);
/* A protocol violation: counted, then closed. */
void conn_protocol_error(struct conn *c, const char *why);
void conn_free(struct conn *c);

#endif /* KDERP_CONN_IO_H */
