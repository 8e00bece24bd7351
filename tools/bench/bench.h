/* SPDX-License-Identifier: MIT */
/*
 * bench.h - kderp-bench internals shared between the load generator and its
 * connection layer.
 */
#ifndef KDERP_BENCH_H
#define KDERP_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#define BENCH_KEY_LEN 32

/* Where the load goes: one resolved address, optional TLS. */
struct bench_target {
	char host[256]; /* as given on the command line */
	char port[16];
	char sni[256]; /* TLS server name, defaults to host */
	bool tls;
	const char *ca_file; /* verify the server against this CA; NULL = no verification */
	struct sockaddr_storage addr;
	socklen_t addrlen;
};

/* One DERP client connection after the handshake. */
struct bench_link {
	int fd;
	SSL *ssl; /* NULL for plain HTTP */
	uint8_t pub[BENCH_KEY_LEN];
	void *priv; /* connection-layer state, freed by bench_link_close() */
};

/**
 * bench_target_init() - resolve @host:@port (for the loopback check).
 * Returns 0 or -errno; @err gets a message on failure.
 */
int bench_target_init(struct bench_target *t, char *err, size_t errlen);
void bench_target_fini(struct bench_target *t);

/**
 * bench_dial() - connect, upgrade to DERP and complete the handshake
 * (ServerKey, ClientInfo, ServerInfo) with a fresh key, using derpc. The
 * socket is non-blocking. Returns 0 or -errno with
 * a message in @err.
 */
int bench_dial(struct bench_target *t, struct bench_link *l, char *err, size_t errlen);

/* bench_link_close() - close the connection and free its state; NULL-safe. */
void bench_link_close(struct bench_link *l);

/**
 * bench_stun_run() - `kderp-bench stun`: STUN binding load against @t's
 * host (UDP), @rate requests per second (0 = as fast as possible) for @secs,
 * checking each answer's XOR-MAPPED-ADDRESS; appends result objects to @out
 * (a JSON array, may be NULL). Returns 0 or -errno.
 *
 * Hook for the STUN load: kderp-bench declares it weak, so a source file in
 * tools/bench/ that defines it (and is listed in BENCH_SRCS) turns the mode
 * on; without one, `kderp-bench stun` says it is not built and exits 4.
 */
struct json_t;
int bench_stun_run(const struct bench_target *t, double rate, double secs, struct json_t *out)
	__attribute__((weak));

#endif /* KDERP_BENCH_H */
