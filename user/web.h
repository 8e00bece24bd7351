/* SPDX-License-Identifier: MIT */
/*
 * web.h - kderpd's HTTP routes (derper's mux) and /debug/, as a handle the
 * engine calls through its http_route hook (server.h).
 */
#ifndef KDERP_WEB_H
#define KDERP_WEB_H

#include <stdbool.h>
#include <stddef.h>

#include "server.h"

struct config;
struct http_req;
struct pkt;
struct web;

/* Routes for this configuration; numbers read from srv. NULL on OOM. */
struct web *web_new(const struct config *cfg, struct server *srv);
void web_free(struct web *w);

/* Parse --debug-allow (comma-separated CIDRs) into w. 0 or -EINVAL/-E2BIG. */
int web_set_debug_allow(struct web *w, const char *cidrs);

/* The http_route hook: arg is a struct web. */
enum http_route web_route(void *arg, const struct http_from *from, const struct http_req *req,
			  struct pkt **resp);

/* Prometheus text for /debug/varz; caller frees. NULL on OOM. */
char *web_varz(struct web *w, size_t *len);

/* Extra /debug/varz sections (STUN, XDP, the state plane). fn writes like
 * snprintf and returns the full length. */
typedef int (*web_varz_fn)(const void *arg, char *buf, size_t len);
void web_add_varz(struct web *w, web_varz_fn fn, const void *arg);

/* /debug/drop-stun-on|off call fn (the XDP STUN program's drop switch). */
void web_set_drop_stun(struct web *w, int (*fn)(void *arg, bool drop), void *arg);

#endif /* KDERP_WEB_H */
