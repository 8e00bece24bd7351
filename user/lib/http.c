// SPDX-License-Identifier: MIT
/* http.c - request heads parsed with the http_parser library; response heads. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "http.h"

enum { H_NONE, H_UPGRADE, H_FAST_START, H_IDEAL_NODE, H_CHALLENGE, H_HOST, H_WS_PROTO, H_XFF };

static const struct {
	const char *name;
	int id;
} wanted[] = {
	{"Upgrade", H_UPGRADE},
	{"Derp-Fast-Start", H_FAST_START},
	{"Ideal-Node", H_IDEAL_NODE},
	{"X-Tailscale-Challenge", H_CHALLENGE},
	{"Host", H_HOST},
	{"Sec-WebSocket-Protocol", H_WS_PROTO},
	{"X-Forwarded-For", H_XFF},
};

long http_head_len(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		/* A blank line: "\n\n" or "\n\r\n". */
		if (i + 1 < len && buf[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

static void copy_field(char *dst, size_t cap, const char *at, size_t len)
{
	size_t cur = strlen(dst);

	if (cur + len >= cap)
		len = cap - 1 - cur;
	memcpy(dst + cur, at, len);
	dst[cur + len] = 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http_req *r = p->data;
	size_t cur = strlen(r->path) + strlen(r->query);

	/* The URL may arrive in pieces; keep the raw text in path for now. */
	if (cur + len >= sizeof(r->path))
		return -1;
	copy_field(r->path, sizeof(r->path), at, len);
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_req *r = p->data;

	r->cur = H_NONE;
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
		if (strlen(wanted[i].name) == len && strncasecmp(wanted[i].name, at, len) == 0) {
			r->cur = wanted[i].id;
			break;
		}
	}
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_req *r = p->data;

	switch (r->cur) {
	case H_UPGRADE:
		copy_field(r->upgrade, sizeof(r->upgrade), at, len);
		break;
	case H_FAST_START:
		copy_field(r->fast_start, sizeof(r->fast_start), at, len);
		break;
	case H_IDEAL_NODE:
		copy_field(r->ideal_node, sizeof(r->ideal_node), at, len);
		break;
	case H_CHALLENGE:
		if (strlen(r->challenge) + len >= sizeof(r->challenge))
			r->challenge_too_long = true;
		copy_field(r->challenge, sizeof(r->challenge), at, len);
		break;
	case H_HOST:
		copy_field(r->host, sizeof(r->host), at, len);
		break;
	case H_WS_PROTO:
		copy_field(r->ws_protocol, sizeof(r->ws_protocol), at, len);
		break;
	case H_XFF:
		r->has_xff = true;
		break;
	}
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_req *r = p->data;

	r->http_major = p->http_major;
	r->http_minor = p->http_minor;
	r->has_body = (p->flags & F_CHUNKED) ||
		(p->content_length > 0 && p->content_length != ULLONG_MAX);
	/* No body is ever read: 1 tells the parser to skip it. */
	return 1;
}

bool http_prefix_ok(const uint8_t *buf, size_t len)
{
	/* http_parser checks what it has as it streams: a byte that cannot
	 * start a request line (a TLS record's 0x16) is an error at once. */
	static const http_parser_settings none;
	http_parser p;

	http_parser_init(&p, HTTP_REQUEST);
	http_parser_execute(&p, &none, (const char *)buf, len);
	return HTTP_PARSER_ERRNO(&p) == HPE_OK;
}

int http_parse_request(const uint8_t *head, size_t len, struct http_req *req)
{
	static const http_parser_settings settings = {
		.on_url = on_url,
		.on_header_field = on_header_field,
		.on_header_value = on_header_value,
		.on_headers_complete = on_headers_complete,
	};
	http_parser p;
	size_t n;
	char *q;

	memset(req, 0, sizeof(*req));
	http_parser_init(&p, HTTP_REQUEST);
	p.data = req;
	n = http_parser_execute(&p, &settings, (const char *)head, len);
	if (HTTP_PARSER_ERRNO(&p) != HPE_OK && HTTP_PARSER_ERRNO(&p) != HPE_CB_headers_complete)
		return -EINVAL;
	if (n == 0 || !req->path[0])
		return -EINVAL;
	snprintf(req->method, sizeof(req->method), "%s", http_method_str(p.method));
	/* Absolute-form URLs keep only the path. */
	if (strncasecmp(req->path, "http://", 7) == 0 ||
	    strncasecmp(req->path, "https://", 8) == 0) {
		char *s = strchr(strstr(req->path, "//") + 2, '/');

		if (s)
			memmove(req->path, s, strlen(s) + 1);
		else
			strcpy(req->path, "/");
	}
	q = strchr(req->path, '?');
	if (q) {
		snprintf(req->query, sizeof(req->query), "%s", q + 1);
		*q = 0;
	}
	q = strchr(req->path, '#');
	if (q)
		*q = 0;
	/* Trim optional whitespace around values (http_parser keeps trailing). */
	for (char *v = req->upgrade; *v; v++)
		if (*v == ' ' || *v == '\t')
			*v = 0;
	for (char *v = req->fast_start; *v; v++)
		if (*v == ' ' || *v == '\t')
			*v = 0;
	return 0;
}

bool http_challenge_ok(const char *c)
{
	size_t n = strlen(c);

	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = c[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' || ch == '-'))
			return false;
	}
	return true;
}

int http_format_head(char *out, size_t cap, int status, const char *reason, const char *headers,
		     size_t body_len)
{
	return snprintf(out, cap,
			"HTTP/1.1 %d %s\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
			status, reason, headers, body_len);
}

int http_format_text(char *out, size_t cap, int status, const char *reason, const char *body)
{
	return snprintf(out, cap,
			"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
			"X-Content-Type-Options: nosniff\r\nContent-Length: %zu\r\n"
			"Connection: close\r\n\r\n%s",
			status, reason, strlen(body), body);
}

int http_format_upgrade(char *out, size_t cap, int derp_version, const char *pub_hex)
{
	return snprintf(out, cap,
			"HTTP/1.1 101 Switching Protocols\r\n"
			"Upgrade: DERP\r\n"
			"Connection: Upgrade\r\n"
			"Derp-Version: %d\r\n"
			"Derp-Public-Key: %s\r\n\r\n",
			derp_version, pub_hex);
}
