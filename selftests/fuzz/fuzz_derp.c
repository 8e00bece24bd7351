// SPDX-License-Identifier: MIT
/*
 * fuzz_derp.c - libFuzzer harness for kderpd's network-facing parsers other
 * than STUN: the HTTP request head (our own head-length scan, the early
 * prefix check, then http_parser), the ClientInfo JSON and the ClientInfo
 * box.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "derp_handshake.h"
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t priv[32], pub[32];
	static int init;
	struct client_info ci;
	struct http_req req;
	const char *why = NULL;
	long hl;

	if (!init) {
		if (sodium_init() < 0)
			return 0;
		derp_new_key(priv, pub);
		init = 1;
	}
	hl = http_head_len(data, size);
	if (hl < 0 || (size_t)hl > size)
		__builtin_trap();
	if (hl > 0 && http_parse_request(data, hl, &req) == 0) {
		/* A head that parses was a fine prefix while it came in. */
		if (!http_prefix_ok(data, hl - 1))
			__builtin_trap();
		if (strlen(req.path) >= sizeof(req.path) ||
		    strlen(req.upgrade) >= sizeof(req.upgrade))
			__builtin_trap();
	}
	memset(&ci, 0, sizeof(ci));
	if (derp_parse_client_info_json((const char *)data, size, &ci, &why) != 0 && !why)
		__builtin_trap();
	if (size >= DERP_MIN_CLIENTINFO_LEN) {
		why = NULL;
		if (derp_open_client_info(priv, data, size, &ci, &why) != 0 && !why)
			__builtin_trap();
	}
	return 0;
}
