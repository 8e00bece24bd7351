/* SPDX-License-Identifier: MIT */
/* web.h - kderpd's HTTP routes (derper's mux) and /debug/. */
#ifndef KDERP_WEB_H
#define KDERP_WEB_H

struct conn;
struct http_req;
struct pkt;
struct server;

enum web_result { WEB_RESPONSE, WEB_UPGRADE };

/* Route a request. WEB_UPGRADE: start DERP. WEB_RESPONSE: *resp is set. */
enum web_result web_route(struct conn *c, const struct http_req *req, struct pkt **resp);

struct pkt *web_simple_response(int status, const char *reason, const char *ctype,
				const char *body);

/* Prometheus text for /debug/varz; caller frees. */
char *web_varz(struct server *s, size_t *len);

/* Extra /debug/varz sections registered by optional subsystems (STUN, XDP). */
typedef int (*web_varz_fn)(const void *arg, char *buf, size_t len);
void web_add_varz(web_varz_fn fn, const void *arg);

#include <stdbool.h>

/* /debug/drop-stun-on|off call fn (the XDP STUN program's drop switch). */
void web_set_drop_stun(int (*fn)(void *arg, bool drop), void *arg);

/* Parse --debug-allow (comma-separated CIDRs). */
int web_set_debug_allow(const char *cidrs);

#endif
