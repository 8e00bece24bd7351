/* SPDX-License-Identifier: MIT */
/*
 * derp_daemon.h - start a private DERP server for one test and talk to it.
 *
 * The server is $KDERP_DAEMON if set (any derper-compatible binary, e.g. to
 * check that a test encodes Go derper's behaviour), else $KDERP_OUTPUT/kderpd,
 * else kderpd next to the selftests directory the test runs from. It runs on
 * a free 127.0.0.1 port with a key file and a stderr log in a fresh temporary
 * directory:
 *
 *   SERVER -a 127.0.0.1:PORT -c DIR/key --stun=false [--bpffs-dir=...] [extra args]
 *
 * The dd_*() functions return 0 or -errno; the ones that take _metadata
 * ASSERT instead, for fixture setups. Part of libselftest.a.
 */
#ifndef KDERP_SELFTESTS_DERP_DAEMON_H
#define KDERP_SELFTESTS_DERP_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "derpc.h"

struct __test_metadata;

struct derp_daemon {
	bool tls; /* set before dd_start: manual certs for 127.0.0.1, self-signed */
	bool is_kderpd; /* the server is kderpd (not e.g. a derper for comparison) */
	pid_t pid;
	uint16_t port;
	char dir[200];
	char log_path[240];
	char key_path[240];
	char crt_path[240]; /* TLS: the server's self-signed cert, to trust */
	char bpffs[200]; /* kderpd's pin directory, private to this instance */
	char bin[512];
};

/* Is the server still running? */
bool dd_alive(const struct derp_daemon *d);

/*
 * Start the server and wait until it accepts connections (up to 10 s),
 * retried with a new port if another process took the free port between the
 * probe and the server's bind. extra is a NULL-terminated list of additional
 * arguments, or NULL. -ENOENT: no server binary.
 */
int dd_start(struct derp_daemon *d, const char *const *extra);

/* Print the tail of the server log as TAP comments. */
void dd_dump_log(const struct derp_daemon *d, int max_lines);

/*
 * SIGTERM (SIGKILL after 2 s), then remove the server's pins and temporary
 * directory. Does nothing on a zeroed or already stopped daemon.
 */
void dd_stop(struct derp_daemon *d);

/* A /proc/PID/status field in kB (VmRSS, VmHWM, ...), or -1. */
long dd_status_kb(const struct derp_daemon *d, const char *field);

/* The server's resident set size in kB, or -1. */
long dd_rss_kb(const struct derp_daemon *d);

/*
 * Is the server built with AddressSanitizer? Its allocator keeps freed
 * memory in quarantine and per-thread caches, so RSS limits get slack, and
 * every packet costs a few times more.
 */
bool dd_is_asan(const struct derp_daemon *d);

/* An RSS growth limit in kB for this server (x4 under ASan). */
long dd_rss_slack_kb(const struct derp_daemon *d, long kb);

/* Number of open file descriptors of the server, or -1. */
int dd_fd_count(const struct derp_daemon *d);

/* Current size of the server log, to look only at what comes later. */
long dd_log_size(const struct derp_daemon *d);

/*
 * Find a line of the log, from byte offset since on, that contains needle
 * and, if not NULL, also needle2 (case-insensitive); copy it to out. Waits up
 * to wait_ms for it to appear.
 */
bool dd_log_line(const struct derp_daemon *d, long since, const char *needle, const char *needle2,
		 char *out, size_t cap, int wait_ms);

/* "127.0.0.1:PORT" of our end of a connection, as the server logs its peer. */
void dd_local_addr(const struct derpc *c, char *out, size_t cap);

/* Client options for this server: 127.0.0.1:port, over TLS trusting its cert. */
void dd_opts(const struct derp_daemon *d, struct derpc_opts *o);

/* Full DERP client with a fresh key. */
int dd_connect(const struct derp_daemon *d, struct derpc *c);

/* Connected and upgraded, ServerKey read; nothing sent after the request. */
int dd_upgraded(const struct derp_daemon *d, struct derpc *c);

/* Plain TCP connection, nothing sent. */
int dd_dial(const struct derp_daemon *d, struct derpc *c);

/*
 * Send one random packet from a to b and wait until b gets it with source a
 * (other packets are skipped). Returns the delivery time in ms or -errno.
 */
int dd_relay_once(struct derpc *a, struct derpc *b, int timeout_ms);

/*
 * For fixture setups: ignore SIGPIPE and start the server (dd_start), or fail
 * the test, with a hint when there is no server binary.
 */
void dd_setup(struct __test_metadata *_metadata, struct derp_daemon *d, const char *const *extra);

/* For fixture teardowns: print the log's tail if the test failed, then stop. */
void dd_teardown(struct __test_metadata *_metadata, struct derp_daemon *d);

/* dd_connect, or fail the test. */
void dd_client(struct __test_metadata *_metadata, const struct derp_daemon *d, struct derpc *c);

#endif /* KDERP_SELFTESTS_DERP_DAEMON_H */
