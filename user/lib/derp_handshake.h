/* SPDX-License-Identifier: MIT */
/*
 * derp_handshake.h - the DERP handshake: ClientInfo opening and JSON,
 * ServerInfo sealing, the server key file and the mesh key (pure functions,
 * fuzzed by selftests/fuzz/fuzz_derp.c). Frames are in derp_frame.h.
 */
#ifndef KDERP_DERP_HANDSHAKE_H
#define KDERP_DERP_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "derp_wire.h"

struct client_info {
	uint8_t key[DERP_KEY_LEN];
	uint8_t mesh_key[32];
	bool has_mesh_key;
	bool can_ack_pings;
	bool is_prober;
	long long version;
	/* The X25519 shared key, kept so ServerInfo can be sealed without a
	 * second scalar multiplication. Wipe it after use. */
	uint8_t shared[32];
};

/*
 * Open a ClientInfo payload (client key, nonce, box) with the server's
 * private key and parse its JSON. Returns 0, or -EINVAL with a short reason
 * (no secrets) in *why.
 */
int derp_open_client_info(const uint8_t server_priv[32], const uint8_t *payload, size_t len,
			  struct client_info *ci, const char **why)
	__attribute__((warn_unused_result));

/* Parse the ClientInfo JSON (keys case-insensitive, unknown keys ignored). */
int derp_parse_client_info_json(const char *json, size_t len, struct client_info *ci,
				const char **why) __attribute__((warn_unused_result));

/*
 * Build a whole ServerInfo frame (header included) sealed to the client.
 * out must hold DERP_SERVER_INFO_FRAME_LEN bytes.
 */
#define DERP_SERVER_INFO_JSON "{\"version\":2}"
#define DERP_SERVER_INFO_FRAME_LEN                                                                 \
	(DERP_FRAME_HDR_LEN + DERP_NONCE_LEN + DERP_BOX_OVERHEAD + sizeof(DERP_SERVER_INFO_JSON) - \
	 1)
int derp_seal_server_info(const uint8_t server_priv[32], const uint8_t client_pub[32], uint8_t *out)
	__attribute__((warn_unused_result));
/* The same with the shared key from derp_open_client_info. */
int derp_seal_server_info_afternm(const uint8_t shared[32], uint8_t *out)
	__attribute__((warn_unused_result));

/* Server key file: derper's JSON {"PrivateKey":"privkey:<hex>"}. Created
 * atomically with mode 0600 when absent. */
int derp_load_or_create_key(const char *path, uint8_t priv[32], uint8_t pub[32])
	__attribute__((warn_unused_result));
void derp_new_key(uint8_t priv[32], uint8_t pub[32]);
int derp_parse_mesh_key(const char *text, uint8_t key[32]);

#endif
