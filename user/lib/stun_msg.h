/* SPDX-License-Identifier: MIT */
/*
 * stun_msg.h - Tailscale-flavoured STUN messages: pure functions used by the
 * userspace server (user/stun.c), tests, the fuzzer and clients.
 *
 * A request is answered only if it is a binding request carrying SOFTWARE
 * "tailnode" and ending with a valid FINGERPRINT (derp-protocol 4.5); the
 * answer is a binding success response with exactly one XOR-MAPPED-ADDRESS.
 */
#ifndef KDERP_STUN_MSG_H
#define KDERP_STUN_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "stun_wire.h"

#define KDERP_STUN_HDR_LEN STUN_HDR_LEN
#define KDERP_STUN_TXID_LEN STUN_TXID_LEN
#define KDERP_STUN_MAGIC STUN_MAGIC
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

#endif /* KDERP_STUN_MSG_H */
