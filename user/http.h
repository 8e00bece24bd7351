/* SPDX-License-Identifier: MIT */
/* http.h - the HTTP/1.1 side of kderpd: request parsing and routing. */
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
	/* parser scratch */
	int cur; /* header being read */
};

/*
 * Find the end of the request head in buf. Returns its length (through the
 * blank line), 0 if more bytes are needed, -1 if the head is malformed.
 */
long http_head_len(const uint8_t *buf, size_t len);

/* Parse a complete request head. Returns 0 or -EINVAL. */
int http_parse_request(const uint8_t *head, size_t len, struct http_req *req);

/* Is the /generate_204 challenge acceptable (non-empty, <= 64, [A-Za-z0-9._:-])? */
bool http_challenge_ok(const char *c);

#endif
