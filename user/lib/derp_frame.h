/* SPDX-License-Identifier: MIT */
/*
 * derp_frame.h - every DERP frame the server reads or writes: the header
 * split, the per-type header checks, the decoding of client frames and the
 * encoding of server frames. Pure functions on byte buffers (fuzzed by
 * selftests/fuzz/fuzz_frames.c); the handshake's crypto is in
 * derp_handshake.h.
 */
#ifndef KDERP_DERP_FRAME_H
#define KDERP_DERP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "derp_wire.h"
#include "kderp_bytes.h"

/* A RecvPacket's header and source key: 5 + 32 bytes before the payload. */
#define DERP_RECV_OVERHEAD (DERP_FRAME_HDR_LEN + DERP_KEY_LEN)
/* The ServerKey frame: 5 + 8 + 32 = 45 bytes. */
#define DERP_SERVER_KEY_FRAME_LEN (DERP_FRAME_HDR_LEN + DERP_MAGIC_LEN + DERP_KEY_LEN)
#define DERP_PEER_GONE_LEN (DERP_KEY_LEN + 1)

static inline void derp_frame_put_header(uint8_t *out, uint8_t type, uint32_t len)
{
	out[0] = type;
	put_be32(out + 1, len);
}

/*
 * The header of the frame at buf: false when fewer than 5 bytes are there.
 * *flen is the payload length the header claims (any uint32 value).
 */
static inline bool derp_frame_header(const uint8_t *buf, size_t len, uint8_t *type, uint32_t *flen)
{
	if (len < DERP_FRAME_HDR_LEN)
		return false;
	*type = buf[0];
	*flen = get_be32(buf + 1);
	return true;
}

/* Where a connection is in the protocol, for the header checks. */
enum derp_phase {
	DERP_PHASE_CLIENT_INFO, /* only a ClientInfo frame is acceptable */
	DERP_PHASE_RUN, /* after ServerInfo */
};

/*
 * Check a frame header before its payload is read: the type is allowed in
 * this phase (mesh-only frames need @can_mesh) and the length fits the type.
 * Returns NULL when acceptable, else a short reason for the log. Unknown
 * types are acceptable (they are skipped, as derper does).
 */
const char *derp_check_header(enum derp_phase phase, bool can_mesh, uint8_t type, uint32_t len);

/* Types a server acts on (all others are skipped while they stream in). */
bool derp_frame_is_handled(uint8_t type);

/* A decoded client frame; pointers point into the frame's payload. */
struct derp_frame {
	uint8_t type;
	const uint8_t *dst; /* SendPacket, ForwardPacket: destination key */
	const uint8_t *src; /* ForwardPacket: source key */
	const uint8_t *key; /* ClosePeer */
	const uint8_t *data; /* packet bytes (Send/ForwardPacket), Ping data */
	uint32_t data_len;
	bool preferred; /* NotePreferred: any non-zero byte */
};

/*
 * Decode a payload whose header derp_check_header accepted in the run phase.
 * Returns 0, or -EINVAL when the length does not fit the type (possible only
 * when the header was not checked).
 */
int derp_frame_decode(uint8_t type, const uint8_t *payload, uint32_t len, struct derp_frame *f);

/* Does the payload look like a disco packet? */
static inline bool derp_is_disco(const uint8_t *p, size_t len)
{
	return len >= DERP_DISCO_MIN_LEN &&
		__builtin_memcmp(p, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN) == 0;
}

/* ---- server frames ---- */

/* ServerKey: magic and the server's public key (out: 45 bytes). */
void derp_server_key_frame(const uint8_t server_pub[DERP_KEY_LEN], uint8_t *out);

/* PeerGone payload: key + reason (out: 33 bytes). */
void derp_peer_gone_payload(const uint8_t key[DERP_KEY_LEN], enum derp_peer_gone_reason reason,
			    uint8_t out[DERP_PEER_GONE_LEN]);

/*
 * PeerPresent payload: key, 16-byte address (IPv4 as v4-mapped), big-endian
 * port, flags (DERP_PEER_PRESENT_*; 0 becomes REGULAR). out: 51 bytes.
 */
void derp_peer_present_payload(const uint8_t key[DERP_KEY_LEN], const struct sockaddr_storage *addr,
			       uint8_t flags, uint8_t out[DERP_PEER_PRESENT_LEN]);

#endif /* KDERP_DERP_FRAME_H */
