// SPDX-License-Identifier: MIT
/* derp_frame.c - DERP frame checks, decoding and encoding (derp_frame.h). */
#include <errno.h>
#include <string.h>

#include "derp_frame.h"
#include "util.h"

static const char *check_client_info(uint8_t type, uint32_t len)
{
	if (type != DERP_FRAME_CLIENT_INFO)
		return "first frame is not ClientInfo";
	if (len < DERP_MIN_CLIENTINFO_LEN)
		return "ClientInfo too short";
	if (len > DERP_MAX_CLIENTINFO_LEN)
		return "ClientInfo too long";
	return NULL;
}

const char *derp_check_header(enum derp_phase phase, bool can_mesh, uint8_t type, uint32_t len)
{
	if (phase == DERP_PHASE_CLIENT_INFO)
		return check_client_info(type, len);
	switch (type) {
	case DERP_FRAME_SEND_PACKET:
		if (len < DERP_KEY_LEN)
			return "SendPacket shorter than a key";
		if (len > DERP_MAX_SENDPACKET_LEN)
			return "SendPacket too long";
		break;
	case DERP_FRAME_FORWARD_PACKET:
		if (!can_mesh)
			return "ForwardPacket from a non-mesh client: insufficient permissions";
		if (len < 2 * DERP_KEY_LEN)
			return "ForwardPacket too short";
		if (len > DERP_MAX_FWDPACKET_LEN)
			return "ForwardPacket too long";
		break;
	case DERP_FRAME_NOTE_PREFERRED:
		if (len != 1)
			return "NotePreferred of the wrong size";
		break;
	case DERP_FRAME_PING:
		if (len < DERP_PING_LEN || len > DERP_MAX_PING_LEN)
			return "Ping of the wrong size";
		break;
	case DERP_FRAME_WATCH_CONNS:
		if (!can_mesh)
			return "WatchConns from a non-mesh client: insufficient permissions";
		if (len != 0)
			return "WatchConns with a payload";
		break;
	case DERP_FRAME_CLOSE_PEER:
		if (!can_mesh)
			return "ClosePeer from a non-mesh client: insufficient permissions";
		if (len != DERP_KEY_LEN)
			return "ClosePeer of the wrong size";
		break;
	default:
		break;
	}
	return NULL;
}

bool derp_frame_is_handled(uint8_t type)
{
	switch (type) {
	case DERP_FRAME_SEND_PACKET:
	case DERP_FRAME_FORWARD_PACKET:
	case DERP_FRAME_PING:
	case DERP_FRAME_NOTE_PREFERRED:
	case DERP_FRAME_CLOSE_PEER:
	case DERP_FRAME_WATCH_CONNS:
		return true;
	default:
		return false;
	}
}

int derp_frame_decode(uint8_t type, const uint8_t *payload, uint32_t len, struct derp_frame *f)
{
	memset(f, 0, sizeof(*f));
	f->type = type;
	switch (type) {
	case DERP_FRAME_SEND_PACKET:
		if (len < DERP_KEY_LEN)
			return -EINVAL;
		f->dst = payload;
		f->data = payload + DERP_KEY_LEN;
		f->data_len = len - DERP_KEY_LEN;
		break;
	case DERP_FRAME_FORWARD_PACKET:
		if (len < 2 * DERP_KEY_LEN)
			return -EINVAL;
		f->src = payload;
		f->dst = payload + DERP_KEY_LEN;
		f->data = payload + 2 * DERP_KEY_LEN;
		f->data_len = len - 2 * DERP_KEY_LEN;
		break;
	case DERP_FRAME_NOTE_PREFERRED:
		if (len != 1)
			return -EINVAL;
		f->preferred = payload[0] != 0;
		break;
	case DERP_FRAME_PING:
		if (len < DERP_PING_LEN)
			return -EINVAL;
		/* Only the first 8 bytes are echoed, as derper does. */
		f->data = payload;
		f->data_len = DERP_PING_LEN;
		break;
	case DERP_FRAME_CLOSE_PEER:
		if (len != DERP_KEY_LEN)
			return -EINVAL;
		f->key = payload;
		break;
	default:
		break;
	}
	return 0;
}

void derp_server_key_frame(const uint8_t server_pub[DERP_KEY_LEN], uint8_t *out)
{
	derp_frame_put_header(out, DERP_FRAME_SERVER_KEY, DERP_MAGIC_LEN + DERP_KEY_LEN);
	memcpy(out + DERP_FRAME_HDR_LEN, DERP_MAGIC, DERP_MAGIC_LEN);
	memcpy(out + DERP_FRAME_HDR_LEN + DERP_MAGIC_LEN, server_pub, DERP_KEY_LEN);
}

void derp_peer_gone_payload(const uint8_t key[DERP_KEY_LEN], enum derp_peer_gone_reason reason,
			    uint8_t out[DERP_PEER_GONE_LEN])
{
	memcpy(out, key, DERP_KEY_LEN);
	out[DERP_KEY_LEN] = (uint8_t)reason;
}

void derp_peer_present_payload(const uint8_t key[DERP_KEY_LEN], const struct sockaddr_storage *addr,
			       uint8_t flags, uint8_t out[DERP_PEER_PRESENT_LEN])
{
	uint16_t port = 0;

	memcpy(out, key, DERP_KEY_LEN);
	sockaddr_to_mapped16(addr, out + DERP_KEY_LEN, &port);
	put_be16(out + DERP_KEY_LEN + 16, port);
	out[DERP_KEY_LEN + 18] = flags ? flags : DERP_PEER_PRESENT_REGULAR;
}
