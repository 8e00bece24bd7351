// SPDX-License-Identifier: MIT
/*
 * handshake.c - from an accepted socket to a registered key (handshake.h):
 * TLS_HANDSHAKE -> HTTP -> WAIT_CLIENTINFO -> RUN.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include <sodium.h>

#include "conn.h"
#include "conn_io.h"
#include "derp_frame.h"
#include "derp_handshake.h"
#include "handshake.h"
#include "http.h"
#include "log.h"
#include "names.h"
#include "peers.h"
#include "pkt.h"
#include "queue.h"
#include "relay.h"
#include "server.h"
#include "tls.h"
#include "util.h"

void handshake_tls(struct conn *c)
{
	char why[160];

	switch (tls_accept(c->ssl, why, sizeof(why))) {
	case TLS_DONE:
		c->tls_mode = tls_conn_mode(c->ssl);
		c->state = CS_HTTP;
		conn_set_epollout(c, false);
		break;
	case TLS_WANT_READ:
		conn_set_epollout(c, false);
		break;
	case TLS_WANT_WRITE:
		conn_set_epollout(c, true);
		break;
	case TLS_FAILED:
		STAT_ADD(c->w->stats->c[CTR_HS_FAIL_TLS], 1);
		conn_close(c, why);
		break;
	}
}

/* ---- HTTP ---- */

/* Send one response, stop reading, close once it is written. */
static void http_done(struct conn *c, struct pkt *resp)
{
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};

	conn_drop_carry(c);
	c->state = CS_HTTP_DONE;
	c->epollout = true;
	epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	if (resp)
		conn_queue_ctl(c->w, c, resp);
	else
		worker_wake_flush(c->w, c);
}

/* The upgrade: 101 (unless fast start), ServerKey, then wait for ClientInfo. */
static void start_derp(struct conn *c, const struct http_req *req)
{
	struct worker *w = c->w;
	uint8_t sk[DERP_SERVER_KEY_FRAME_LEN];

	STAT_ADD(w->stats->c[CTR_ACCEPTS], 1);
	c->fast_start = strcmp(req->fast_start, "1") == 0;
	c->not_ideal = req->ideal_node[0] != 0;
	if (!c->fast_start) {
		char resp[256];
		int n = http_format_upgrade(resp, sizeof(resp), DERP_PROTOCOL_VERSION,
					    c->srv->pub_hex);

		if (n > 0 && n < (int)sizeof(resp))
			conn_queue_ctl(w, c, pkt_copy(resp, (uint32_t)n, PKT_RAW));
	}
	derp_server_key_frame(c->srv->pub, sk);
	conn_queue_ctl(w, c, pkt_copy(sk, sizeof(sk), PKT_CTL));
	c->state = CS_WAIT_CLIENTINFO;
	c->deadline_ns = w->now + SETUP_TIMEOUT_NS;
}

static enum http_route route(struct conn *c, const struct http_req *req, struct pkt **resp)
{
	const struct server_hooks *h = &c->srv->hooks;
	struct http_from from = {
		.addr = &c->addr, .addr_str = c->addr_str, .conn_id = c->id, .port80 = c->port80};

	*resp = NULL;
	if (!h->http_route) {
		*resp = pkt_http_text(404, "Not Found", "404 page not found\n");
		return HTTP_ROUTE_RESPONSE;
	}
	return h->http_route(h->http_arg, &from, req, resp);
}

static void bad_request(struct conn *c, const uint8_t *buf, size_t len)
{
	STAT_ADD(c->w->stats->c[CTR_HTTP_BAD_REQUESTS], 1);
	log_info("conn %llu: bad HTTP request from %s (%zu bytes%s), closing",
		 (unsigned long long)c->id, c->addr_str, len,
		 len && buf[0] == 0x16 ? ", a TLS handshake on the plain-HTTP port" : "");
	http_done(c, pkt_http_text(400, "Bad Request", "400 Bad Request\n"));
}

static void client_info_input(struct conn *c, uint8_t *buf, size_t len);

static void http_input(struct conn *c, uint8_t *buf, size_t len)
{
	long hl = http_head_len(buf, len);
	struct pkt *resp = NULL;

	if (hl == 0) {
		if (len >= HTTP_MAX_HEADER || !http_prefix_ok(buf, len))
			bad_request(c, buf, len);
		else
			conn_store_carry(c, buf, len);
		return;
	}
	if (!c->req && !(c->req = calloc(1, sizeof(*c->req)))) {
		conn_close(c, "out of memory");
		return;
	}
	if (http_parse_request(buf, hl, c->req) < 0) {
		bad_request(c, buf, len);
		return;
	}
	STAT_ADD(c->w->stats->c[CTR_HTTP_REQUESTS], 1);
	if (c->req->http_major != 1 || c->req->http_minor > 1) {
		log_info("conn %llu: HTTP/%u.%u request from %s, answering 505",
			 (unsigned long long)c->id, c->req->http_major, c->req->http_minor,
			 c->addr_str);
		resp = pkt_http_text(505, "HTTP Version Not Supported",
				     "505 HTTP Version Not Supported\n");
	} else if (route(c, c->req, &resp) == HTTP_ROUTE_UPGRADE) {
		start_derp(c, c->req);
		free(c->req);
		c->req = NULL;
		client_info_input(c, buf + hl, len - hl);
		return;
	}
	free(c->req);
	c->req = NULL;
	http_done(c, resp);
}

/* ---- ClientInfo ---- */

static void handshake_failed(struct conn *c, int counter, const char *why)
{
	STAT_ADD(c->w->stats->c[CTR_HANDSHAKE_FAILURES], 1);
	STAT_ADD(c->w->stats->c[counter], 1);
	conn_close(c, why);
}

/* The key is known and ServerInfo is queued: the connection starts running. */
static void start_run(struct conn *c)
{
	struct worker *w = c->w;

	c->state = CS_RUN;
	c->deadline_ns = 0;
	c->nothere_tokens = 3;
	c->nothere_last = w->now;
	c->next_keepalive = w->now + DERP_KEEPALIVE_SEC * NSEC_PER_SEC +
		randombytes_uniform(5000) * NSEC_PER_MSEC;
	c->next_rtt = w->now;
	if (peers_register(c->srv, c) < 0) {
		conn_close(c, "out of memory registering client");
		return;
	}
	peers_state_open(c);
	log_info("conn %llu open: key %s from %s (%s%s%s%s)", (unsigned long long)c->id,
		 c->key_hex8, c->addr_str, tls_mode_name(c->tls_mode),
		 c->fast_start ? ", fast start" : "", c->can_mesh ? ", mesh peer" : "",
		 c->is_prober ? ", prober" : "");
}

static void handle_client_info(struct conn *c, const uint8_t *payload, uint32_t len)
{
	struct server *s = c->srv;
	struct client_info ci;
	uint8_t si[DERP_SERVER_INFO_FRAME_LEN];
	const char *why = "";
	struct pkt *p;
	int r;

	if (derp_open_client_info(s->priv, payload, len, &ci, &why) < 0) {
		handshake_failed(c, CTR_HS_FAIL_CLIENT_INFO, why);
		return;
	}
	memcpy(c->key, ci.key, DERP_KEY_LEN);
	key_short(c->key, c->key_hex8);
	c->is_prober = ci.is_prober;
	if (ci.has_mesh_key && s->have_mesh_key &&
	    sodium_memcmp(ci.mesh_key, s->mesh_key, sizeof(s->mesh_key)) == 0)
		c->can_mesh = true;
	sodium_memzero(ci.mesh_key, sizeof(ci.mesh_key));
	r = derp_seal_server_info_afternm(ci.shared, si);
	sodium_memzero(ci.shared, sizeof(ci.shared));
	if (r < 0) {
		handshake_failed(c, CTR_HS_FAIL_INTERNAL, "cannot seal ServerInfo");
		return;
	}
	/* ServerInfo is queued before the key becomes visible to senders. */
	p = pkt_copy(si, sizeof(si), PKT_CTL);
	if (!p) {
		conn_close(c, "out of memory");
		return;
	}
	conn_queue_ctl(c->w, c, p);
	start_run(c);
}

static void client_info_input(struct conn *c, uint8_t *buf, size_t len)
{
	uint8_t type;
	uint32_t flen;
	const char *bad;

	if (!derp_frame_header(buf, len, &type, &flen)) {
		conn_store_carry(c, buf, len);
		return;
	}
	bad = derp_check_header(DERP_PHASE_CLIENT_INFO, false, type, flen);
	if (bad) {
		STAT_ADD(c->w->stats->c[CTR_HANDSHAKE_FAILURES], 1);
		STAT_ADD(c->w->stats->c[CTR_HS_FAIL_PROTOCOL], 1);
		conn_protocol_error(c, bad);
		return;
	}
	if ((uint64_t)flen + DERP_FRAME_HDR_LEN > len) {
		conn_store_carry(c, buf, len);
		return;
	}
	handle_client_info(c, buf + DERP_FRAME_HDR_LEN, flen);
	if (c->state == CS_RUN)
		relay_input(c, buf + DERP_FRAME_HDR_LEN + flen, len - DERP_FRAME_HDR_LEN - flen);
}

void handshake_input(struct conn *c, uint8_t *buf, size_t len)
{
	if (c->state == CS_HTTP)
		http_input(c, buf, len);
	else if (c->state == CS_WAIT_CLIENTINFO)
		client_info_input(c, buf, len);
}
