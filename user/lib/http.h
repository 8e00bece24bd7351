/* SPDX-License-Identifier: MIT */
/*
 * http.h - the HTTP/1.1 side of kderpd: request heads (parsed with
 * http_parser) and the response heads kderpd writes. Routing is web.c's.
 */
#ifndef KDERP_HTTP_H
#define KDERP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_req {
	char method[16];
	char path[1024];
	char query[1024];
	char upgrade[64];
	char fast_start[8];
	char ideal_node[256];
	char challenge[128];
	bool challenge_too_long;
	char host[256];
	char ws_protocol[128];
	bool has_xff;
	unsigned short http_major, http_minor;
	bool has_body; /* Content-Length > 0 or chunked: a GET /derp must have none */
	/* parser scratch */
	int cur; /* header being read */
};

/*
 * Find the end of the request head in buf. Returns its length (through the
 * blank line), 0 if more bytes are needed, -1 if the head is malformed.
 */
long http_head_len(const uint8_t *buf, size_t len);

/*
 * Can buf (the first bytes of a connection, maybe incomplete) still become
 * an HTTP request line? false for what is surely something else, such as a
 * TLS ClientHello (0x16) sent to a plain-HTTP port: answer it at once
 * instead of waiting for a head that will never come.
 */
bool http_prefix_ok(const uint8_t *buf, size_t len);

/* Parse a complete request head. Returns 0 or -EINVAL. */
int http_parse_request(const uint8_t *head, size_t len, struct http_req *req);

/* Is the /generate_204 challenge acceptable (non-empty, <= 64, [A-Za-z0-9._:-])? */
bool http_challenge_ok(const char *c);

/*
 * A response head: status line, the extra header lines (each ending in
 * CRLF, may be ""), Content-Length: body_len, Connection: close, blank line.
 * Returns its length like snprintf (>= cap: truncated).
 */
int http_format_head(char *out, size_t cap, int status, const char *reason, const char *headers,
		     size_t body_len);

/* A whole response with a text/plain body. Returns its length like snprintf. */
int http_format_text(char *out, size_t cap, int status, const char *reason, const char *body);

/* DERP's 101 Switching Protocols, naming the protocol version and the
 * server's public key (64 hex digits). Returns its length like snprintf. */
int http_format_upgrade(char *out, size_t cap, int derp_version, const char *pub_hex);

#endif
