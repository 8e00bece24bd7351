/* SPDX-License-Identifier: MIT */
/*
 * stun.h - the userspace STUN server: one thread answering Tailscale's
 * binding requests (the messages are in stun_msg.h, included here for the
 * tests and tools that use both).
 */
#ifndef KDERP_STUN_H
#define KDERP_STUN_H

#include <stdint.h>

#include "stun_msg.h"

/* The userspace STUN server (one thread, one or two UDP sockets). */
struct kderp_stun;

/*
 * Start the userspace STUN server thread on host:port ("" or NULL host = all,
 * dual-stack). NULL + errno on failure (logged by caller).
 */
struct kderp_stun *kderp_stun_start(const char *host, int port);

/*
 * kderp_stun_start in two steps, for a daemon that drops privileges in
 * between (threads started before the drop would keep them): open binds
 * the socket and starts nothing (NULL + errno), run starts the thread
 * (0 or -errno).
 */
struct kderp_stun *kderp_stun_open(const char *host, int port);
int kderp_stun_run(struct kderp_stun *s);

/* Joins the thread (if started), closes the sockets; NULL ok. */
void kderp_stun_stop(struct kderp_stun *s);

/*
 * Append Prometheus text (# TYPE lines + samples) for stun_requests and
 * stun_addrfamily. Returns the length of the full text like snprintf (so a
 * value >= len means it was truncated; buf is always NUL-terminated when
 * len > 0). s may be NULL (all zero series).
 */
int kderp_stun_varz(const struct kderp_stun *s, char *buf, size_t len);

/* Counter snapshot, for tests and tools. */
struct kderp_stun_counts {
	uint64_t not_stun;
	uint64_t read_error;
	uint64_t success;
	uint64_t write_error;
	uint64_t ipv4;
	uint64_t ipv6;
};

void kderp_stun_get_counts(const struct kderp_stun *s, struct kderp_stun_counts *out);

/* Local port of the server's (first) socket, useful when started on port 0. */
int kderp_stun_port(const struct kderp_stun *s);

#endif /* KDERP_STUN_H */
