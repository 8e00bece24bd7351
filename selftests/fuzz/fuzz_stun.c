// SPDX-License-Identifier: MIT
/*
 * fuzz_stun.c - libFuzzer harness for the userspace STUN message code.
 *
 * Every input goes through both parsers. An input accepted as a request must
 * also survive the server's next step: a response built for an IPv4 and an
 * IPv6 peer must parse back to the same transaction id and address, and a
 * response is never itself a request. Each input is tried a second time
 * with a valid trailing FINGERPRINT, so mutations reach the accepting path
 * without having to guess a CRC.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "stun_msg.h"

static void check_round_trip(const uint8_t txid[KDERP_STUN_TXID_LEN], int family,
			     const uint8_t *seed, size_t seed_len)
{
	struct sockaddr_storage peer = {0}, got;
	uint8_t out[KDERP_STUN_RESPONSE_MAX];
	int n;

	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&peer;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(seed_len);
		memcpy(&s4->sin_addr, seed, seed_len < 4 ? seed_len : 4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&peer;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(seed_len ^ 0xffff);
		memcpy(&s6->sin6_addr, seed, seed_len < 16 ? seed_len : 16);
	}
	n = kderp_stun_build_response(out, sizeof(out), txid, (struct sockaddr *)&peer);
	if (n != 32 && n != 44)
		abort();
	if (kderp_stun_parse_response(out, (size_t)n, txid, &got))
		abort();
	if (got.ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&got;

		if (n != 32)
			abort();
		if (family == AF_INET && memcmp(a, &peer, sizeof(*a)))
			abort();
	} else if (family != AF_INET6 || memcmp(&got, &peer, sizeof(struct sockaddr_in6))) {
		abort();
	}
	if (!kderp_stun_parse_request(out, (size_t)n, NULL))
		abort();
}

static void one(const uint8_t *pkt, size_t size)
{
	uint8_t txid[KDERP_STUN_TXID_LEN];
	struct sockaddr_storage ss;

	if (!kderp_stun_parse_request(pkt, size, txid)) {
		if (size < KDERP_STUN_HDR_LEN + 8 || memcmp(txid, pkt + 8, sizeof(txid)))
			abort();
		check_round_trip(txid, AF_INET, pkt, size);
		check_round_trip(txid, AF_INET6, pkt, size);
	}
	kderp_stun_parse_response(pkt, size, NULL, &ss);
	if (size >= KDERP_STUN_HDR_LEN)
		kderp_stun_parse_response(pkt, size, pkt + 8, &ss);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the parsers take the exact datagram length: copy to an exact heap block */
	uint8_t *pkt = malloc(size ? size : 1);
	uint32_t fp;

	if (!pkt)
		return 0;
	memcpy(pkt, data, size);
	one(pkt, size);
	if (size >= KDERP_STUN_HDR_LEN + 8) {
		pkt[size - 8] = 0x80;
		pkt[size - 7] = 0x28;
		pkt[size - 6] = 0;
		pkt[size - 5] = 4;
		fp = (uint32_t)crc32(0, pkt, (uInt)(size - 8)) ^ 0x5354554eu;
		pkt[size - 4] = fp >> 24;
		pkt[size - 3] = fp >> 16;
		pkt[size - 2] = fp >> 8;
		pkt[size - 1] = fp;
		one(pkt, size);
	}
	free(pkt);
	return 0;
}
