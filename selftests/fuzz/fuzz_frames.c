// SPDX-License-Identifier: MIT
/*
 * fuzz_frames.c - libFuzzer harness for the DERP frame parser, the code
 * most exposed to untrusted bytes: the input is a client's byte stream
 * after the upgrade, split into frames the way the relay splits one read
 * (user/lib/derp_frame.c). The first frame is checked as ClientInfo; the
 * rest in the run phase, with and without mesh rights. Every accepted
 * header must decode, and every decoded pointer must stay inside its frame.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "derp_frame.h"

static void check_inside(const uint8_t *p, size_t n, const uint8_t *lo, size_t len)
{
	if (p && (p < lo || p + n > lo + len))
		__builtin_trap();
}

static void check_frame(uint8_t type, const uint8_t *payload, uint32_t flen)
{
	struct derp_frame f;

	if (derp_frame_decode(type, payload, flen, &f) != 0)
		__builtin_trap(); /* the header check accepted it */
	check_inside(f.dst, DERP_KEY_LEN, payload, flen);
	check_inside(f.src, DERP_KEY_LEN, payload, flen);
	check_inside(f.key, DERP_KEY_LEN, payload, flen);
	check_inside(f.data, f.data_len, payload, flen);
	if ((type == DERP_FRAME_SEND_PACKET || type == DERP_FRAME_FORWARD_PACKET) &&
	    (!f.dst || f.data_len > DERP_MAX_PACKET_SIZE))
		__builtin_trap();
	(void)derp_is_disco(f.data, f.data_len);
}

/* Walk the stream as the server would; returns when it would close or wait. */
static void walk(const uint8_t *data, size_t size, bool can_mesh)
{
	enum derp_phase phase = DERP_PHASE_CLIENT_INFO;
	size_t off = 0;
	uint8_t type;
	uint32_t flen;

	while (derp_frame_header(data + off, size - off, &type, &flen)) {
		if (derp_check_header(phase, can_mesh, type, flen))
			return; /* the server closes the connection */
		if ((uint64_t)flen + DERP_FRAME_HDR_LEN > size - off)
			return; /* incomplete: waits for more (or skips an unknown type) */
		if (phase == DERP_PHASE_RUN)
			check_frame(type, data + off + DERP_FRAME_HDR_LEN, flen);
		phase = DERP_PHASE_RUN;
		off += DERP_FRAME_HDR_LEN + flen;
	}
	if (off > size)
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[DERP_PEER_PRESENT_LEN];
	struct sockaddr_storage ss;

	walk(data, size, false);
	walk(data, size, true);
	/* The encoders on whatever bytes came in. */
	if (size >= DERP_KEY_LEN + sizeof(ss)) {
		memcpy(&ss, data + DERP_KEY_LEN, sizeof(ss));
		derp_peer_present_payload(data, &ss, data[0], out);
		if (out[DERP_PEER_PRESENT_LEN - 1] == 0)
			__builtin_trap();
	}
	return 0;
}
