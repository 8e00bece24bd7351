/* SPDX-License-Identifier: MIT */
/*
 * stun.h - Tailscale-flavoured STUN: the userspace server, and the pure
 * message functions it is built on (also used by tests, the fuzzer and
 * clients).
 *
 * A request is answered only if it is a binding request carrying SOFTWARE
 * "tailnode" and ending with a valid FINGERPRINT (derp-protocol 4.5); the
 * answer is a binding success response with exactly one XOR-MAPPED-ADDRESS.
 */
#ifndef KDERP_STUN_H
#define KDERP_STUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define KDERP_STUN_HDR_LEN 20
#define KDERP_STUN_TXID_LEN 12
#define KDERP_STUN_MAGIC 0x2112a442u
#define KDERP_STUN_REQUEST_LEN 40 /* header + SOFTWARE(8) + FINGERPRINT */
#define KDERP_STUN_RESPONSE_MAX 44 /* header + XOR-MAPPED-ADDRESS (IPv6) */
#define KDERP_STUN_DEFAULT_PORT 3478

/**
 * kderp_stun_parse_request() - check a datagram the way derper does.
 * @pkt: datagram bytes; @len: its length
 * @txid: out, the 12-byte transaction id (only written on success)
 *
 * Return: 0 for a Tailscale binding request, -EINVAL (not STUN / not a
 * binding request / malformed attributes), -EPROTO (no SOFTWARE "tailnode"),
 * -EBADMSG (FINGERPRINT missing, not last, or wrong).
 */
int kderp_stun_parse_request(const uint8_t *pkt, size_t len, uint8_t txid[KDERP_STUN_TXID_LEN]);

/**
 * kderp_stun_build_response() - binding success for @txid, mapped to @addr.
 * @out: buffer of @cap bytes (KDERP_STUN_RESPONSE_MAX is always enough)
 * @addr: AF_INET or AF_INET6 source of the request; an IPv4-mapped IPv6
 *        address is answered as IPv4 (family 1), like the XDP path does.
 *
 * Return: the response length (32 or 44), -ENOSPC, or -EAFNOSUPPORT.
 */
int kderp_stun_build_response(uint8_t *out, size_t cap, const uint8_t txid[KDERP_STUN_TXID_LEN],
			      const struct sockaddr *addr);

/**
 * kderp_stun_build_request() - Tailscale's 40-byte binding request
 * (SOFTWARE "tailnode" first, FINGERPRINT last), for clients and tests.
 *
 * Return: KDERP_STUN_REQUEST_LEN or -ENOSPC.
 */
int kderp_stun_build_request(uint8_t *out, size_t cap, const uint8_t txid[KDERP_STUN_TXID_LEN]);

/**
 * kderp_stun_parse_response() - client side: a binding success for @txid.
 * Accepts XOR-MAPPED-ADDRESS (0x0020 or 0x8020), else MAPPED-ADDRESS.
 * @addr: out, AF_INET or AF_INET6 with the mapped address and port
 *
 * Return: 0, -EINVAL (not a success response for @txid) or -ENOENT (no
 * usable address attribute).
 */
int kderp_stun_parse_response(const uint8_t *pkt, size_t len,
			      const uint8_t txid[KDERP_STUN_TXID_LEN],
			      struct sockaddr_storage *addr);

/* The userspace STUN server (one thread, one or two UDP sockets). */
struct kderp_stun;

/*
 * Start the userspace STUN server thread on host:port ("" or NULL host = all,
 * dual-stack). NULL + errno on failure (logged by caller).
 */
struct kderp_stun *kderp_stun_start(const char *host, int port);

/* Joins the thread, closes the sockets; NULL ok. */
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
