// SPDX-License-Identifier: MIT
/*
 * web.c - derper's HTTP mux: /derp, probes, /generate_204, home, /debug/
 * and /debug/varz. The engine calls web_route through its http_route hook;
 * the numbers come through server.h's read API and registered sections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "pkt.h"
#include "server.h"
#include "util.h"
#include "web.h"

#define BROWSER_HEADERS                                                                     \
	"Strict-Transport-Security: max-age=63072000; includeSubDomains\r\n"                \
	"Content-Security-Policy: default-src 'self'; frame-ancestors 'none'; form-action " \
	"'self'; base-uri 'self'; block-all-mixed-content; object-src 'none'\r\n"           \
	"X-Frame-Options: DENY\r\n"                                                         \
	"X-Content-Type-Options: nosniff\r\n"

struct strbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct strbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->p && (size_t)n < room) {
			b->len += n;
			return;
		}
		size_t ncap = b->cap ? b->cap * 2 : 4096;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
}

struct cidr {
	int family;
	uint8_t addr[16];
	int bits;
};

struct varz_ext {
	web_varz_fn fn;
	const void *arg;
};

struct web {
	const struct config *cfg;
	struct server *srv;
	struct cidr debug_allow[32];
	int ndebug_allow;
	struct varz_ext varz_exts[8];
	int nvarz_exts;
	int (*drop_stun_fn)(void *arg, bool drop);
	void *drop_stun_arg;
};

struct web *web_new(const struct config *cfg, struct server *srv)
{
	struct web *w = calloc(1, sizeof(*w));

	if (w) {
		w->cfg = cfg;
		w->srv = srv;
	}
	return w;
}

void web_free(struct web *w)
{
	free(w);
}

static struct pkt *response(int status, const char *reason, const char *headers, const char *body,
			    size_t blen, bool head_only)
{
	char hdr[2048];
	int n = http_format_head(hdr, sizeof(hdr), status, reason, headers, blen);
	struct pkt *p;

	if (n < 0 || n >= (int)sizeof(hdr))
		return NULL;
	if (head_only)
		blen = 0;
	p = pkt_new((uint32_t)(n + blen), PKT_RAW);
	if (!p)
		return NULL;
	memcpy(p->data, hdr, n);
	if (blen)
		memcpy(p->data + n, body, blen);
	return p;
}

/* ---- /debug access ---- */

/* "ip" or "ip/bits", spaces around allowed. 0 or -EINVAL. */
static int parse_cidr(char *tok, struct cidr *c)
{
	char *slash, *end;
	long bits;
	int max;

	while (*tok == ' ')
		tok++;
	for (end = tok + strlen(tok); end > tok && end[-1] == ' ';)
		*--end = 0;
	slash = strchr(tok, '/');
	if (slash)
		*slash = 0;
	if (inet_pton(AF_INET, tok, c->addr) == 1)
		c->family = AF_INET;
	else if (inet_pton(AF_INET6, tok, c->addr) == 1)
		c->family = AF_INET6;
	else
		return -EINVAL; /* an empty item too */
	max = c->family == AF_INET ? 32 : 128;
	if (!slash) {
		c->bits = max;
		return 0;
	}
	errno = 0;
	bits = strtol(slash + 1, &end, 10);
	if (errno || end == slash + 1 || *end || bits < 0 || bits > max)
		return -EINVAL;
	c->bits = (int)bits;
	return 0;
}

int web_set_debug_allow(struct web *w, const char *cidrs)
{
	char buf[1024], *rest = buf, *tok;

	if (!cidrs || !*cidrs)
		return 0;
	if (snprintf(buf, sizeof(buf), "%s", cidrs) >= (int)sizeof(buf))
		return -E2BIG;
	/* strsep, not strtok: "a,,b" and a trailing comma are errors, not skipped. */
	while ((tok = strsep(&rest, ","))) {
		if (w->ndebug_allow == (int)ARRAY_SIZE(w->debug_allow))
			return -E2BIG;
		if (parse_cidr(tok, &w->debug_allow[w->ndebug_allow]) < 0)
			return -EINVAL;
		w->ndebug_allow++;
	}
	return 0;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, full) != 0)
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));

		return (a[full] & mask) == (b[full] & mask);
	}
	return true;
}

static bool debug_allowed(const struct web *w, const struct http_from *from,
			  const struct http_req *req)
{
	const struct sockaddr_storage *addr = from->addr;
	uint8_t v4[4], v6[16];
	bool is4 = false;

	if (addr->ss_family == AF_INET) {
		memcpy(v4, &((const struct sockaddr_in *)addr)->sin_addr, 4);
		is4 = true;
	} else {
		memcpy(v6, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16);
		if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)v6)) {
			memcpy(v4, v6 + 12, 4);
			is4 = true;
		}
	}
	if (!req->has_xff) {
		if (is4 && v4[0] == 127)
			return true;
		if (!is4 && IN6_IS_ADDR_LOOPBACK((struct in6_addr *)v6))
			return true;
	}
	for (int i = 0; i < w->ndebug_allow; i++) {
		const struct cidr *a = &w->debug_allow[i];

		if (a->family == AF_INET && is4 && prefix_match(a->addr, v4, a->bits))
			return true;
		if (a->family == AF_INET6 && !is4 && prefix_match(a->addr, v6, a->bits))
			return true;
	}
	return false;
}

/* ---- /debug/varz ---- */

void web_set_drop_stun(struct web *w, int (*fn)(void *arg, bool drop), void *arg)
{
	w->drop_stun_fn = fn;
	w->drop_stun_arg = arg;
}

void web_add_varz(struct web *w, web_varz_fn fn, const void *arg)
{
	if (w->nvarz_exts < (int)ARRAY_SIZE(w->varz_exts))
		w->varz_exts[w->nvarz_exts++] = (struct varz_ext){fn, arg};
}

static long count_fds(void)
{
	long n = dir_entries("/proc/self/fd");

	return n < 0 ? n : n - 1; /* the directory's own fd */
}

static long rss_bytes(void)
{
	char *s = read_file("/proc/self/statm", 256, NULL);
	long pages = 0, rss = 0;

	if (!s)
		return 0;
	if (sscanf(s, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	free(s);
	return rss * sysconf(_SC_PAGESIZE);
}

static void varz_peer(void *arg, const uint8_t key[32], uint64_t conn_id,
		      const struct kderp_peer_stats *st)
{
	const uint64_t v[4] = {STAT_READ(st->pkts_in), STAT_READ(st->bytes_in),
			       STAT_READ(st->pkts_out), STAT_READ(st->bytes_out)};
	struct strbuf *b = arg;
	char hex[17];

	hex_encode(hex, key, 8);
	for (int k = 0; k < 4; k++)
		sb_printf(b, "kderp_peer_%s{peer=\"%s\",conn=\"%llu\"} %llu\n",
			  peer_counter_names[k], hex, (unsigned long long)conn_id,
			  (unsigned long long)v[k]);
	sb_printf(b, "kderp_peer_drops{peer=\"%s\",conn=\"%llu\"} %llu\n", hex,
		  (unsigned long long)conn_id, (unsigned long long)STAT_READ(st->drops));
}

/* --varz-peers: one series per connected key, from the same per-slot
 * counters kderpctl reads. */
static void varz_peers(struct web *w, struct strbuf *b)
{
	if (!w->cfg || !w->cfg->varz_peers)
		return;
	for (int i = 0; i < 4; i++)
		sb_printf(b, "# TYPE kderp_peer_%s counter\n", peer_counter_names[i]);
	sb_printf(b, "# TYPE kderp_peer_drops counter\n");
	server_for_each_conn(w->srv, varz_peer, b);
}

/* The sections registered by other subsystems; they report their full
 * length, like snprintf. */
static void varz_exts(struct web *w, struct strbuf *b)
{
	for (int i = 0; i < w->nvarz_exts; i++) {
		const struct varz_ext *e = &w->varz_exts[i];
		size_t cap = 16384;
		char *ext = malloc(cap);
		int n = ext ? e->fn(e->arg, ext, cap) : -1;

		if (n >= (int)cap) {
			char *bigger = realloc(ext, n + 1);

			n = bigger ? e->fn(e->arg, bigger, n + 1) : -1;
			ext = bigger ? bigger : ext;
		}
		if (n > 0)
			sb_printf(b, "%.*s", n, ext);
		free(ext);
	}
}

static void varz_gauge(struct strbuf *b, const char *name, long long v)
{
	sb_printf(b, "# TYPE %s gauge\n%s %lld\n", name, name, v);
}

static void varz_drops(struct strbuf *b, const char *what, const __u64 v[8][2])
{
	sb_printf(b, "# TYPE derp_%s_dropped counter\n", what);
	sb_printf(b, "# HELP derp_%s_dropped DERP %s dropped by reason and by kind\n", what, what);
	for (int r = 0; r < NDROP_REASONS; r++)
		for (int k = 0; k < NKINDS; k++)
			sb_printf(b, "derp_%s_dropped{reason=\"%s\",kind=\"%s\"} %llu\n", what,
				  drop_reason_names[r], drop_kind_names[k],
				  (unsigned long long)v[r][k]);
}

/* Counters with derper's names, in derper's order, and kderp's additions. */
static void varz_derp(struct strbuf *b, const struct server_snapshot *snap)
{
	const struct worker_stats *st = &snap->st;
	const struct server_gauges *g = &snap->g;

	sb_printf(b, "# TYPE derp_accepts counter\nderp_accepts %llu\n",
		  (unsigned long long)st->c[CTR_ACCEPTS]);
	sb_printf(b,
		  "# TYPE derp_average_queue_duration_ms gauge\n"
		  "derp_average_queue_duration_ms %f\n",
		  snap->avg_queue_ms);
	varz_drops(b, "bytes", st->drop_bytes);
	sb_printf(b, "# TYPE derp_bytes_received counter\nderp_bytes_received %llu\n",
		  (unsigned long long)st->c[CTR_BYTES_RECEIVED]);
	sb_printf(b, "# TYPE derp_bytes_sent counter\nderp_bytes_sent %llu\n",
		  (unsigned long long)st->c[CTR_BYTES_SENT]);
	varz_gauge(b, "derp_clients_local", g->clients_local);
	varz_gauge(b, "derp_clients_remote", 0);
	varz_gauge(b, "derp_clients_total", g->clients_local);
	varz_gauge(b, "derp_current_connections", g->current_connections);
	varz_gauge(b, "derp_current_dup_client_conns", g->current_dup_client_conns);
	varz_gauge(b, "derp_current_dup_client_keys", g->current_dup_client_keys);
	varz_gauge(b, "derp_current_file_descriptors", count_fds());
	varz_gauge(b, "derp_current_home_connections", g->current_home_connections);
	varz_gauge(b, "derp_current_notideal_connections", g->current_notideal_connections);
	for (int i = 0; i < NCOUNTERS; i++) {
		if (i == CTR_ACCEPTS || i == CTR_BYTES_RECEIVED || i == CTR_BYTES_SENT ||
		    i == CTR_PACKETS_RECEIVED_DISCO || i == CTR_PACKETS_RECEIVED_OTHER)
			continue;
		sb_printf(b, "# HELP derp_%s %s\n# TYPE derp_%s counter\nderp_%s %llu\n",
			  counter_descs[i].name, counter_descs[i].help, counter_descs[i].name,
			  counter_descs[i].name, (unsigned long long)st->c[i]);
	}
	varz_drops(b, "packets", st->drop_pkts);
	sb_printf(b,
		  "# TYPE derp_packets_received_kind counter\n"
		  "derp_packets_received_kind{kind=\"disco\"} %llu\n"
		  "derp_packets_received_kind{kind=\"other\"} %llu\n",
		  (unsigned long long)st->c[CTR_PACKETS_RECEIVED_DISCO],
		  (unsigned long long)st->c[CTR_PACKETS_RECEIVED_OTHER]);
	sb_printf(b, "# TYPE derp_tcp_rtt counter\n");
	for (int i = 0; i < NRTT_BUCKETS; i++)
		sb_printf(b, "derp_tcp_rtt{le=\"%s\"} %llu\n", rtt_bucket_names[i],
			  (unsigned long long)st->rtt[i]);
	varz_gauge(b, "derp_watchers", g->watchers);
}

char *web_varz(struct web *w, size_t *len)
{
	struct server_snapshot snap;
	struct strbuf b = {0};

	server_stats_snapshot(w->srv, &snap);
	varz_gauge(&b, "process_resident_memory_bytes", rss_bytes());
	varz_gauge(&b, "process_open_fds", count_fds());
	varz_derp(&b, &snap);
	varz_exts(w, &b);
	varz_peers(w, &b);
	sb_printf(&b, "# TYPE uptime_sec counter\nuptime_sec %llu\n",
		  (unsigned long long)((now_ns() - w->srv->start_ns) / NSEC_PER_SEC));
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}

/* ---- routes ---- */

static struct pkt *home_page(struct web *w, const struct http_from *from,
			     const struct http_req *req, bool head)
{
	const struct config *cfg = w->cfg;
	char body[2048];

	if (cfg->home && strcmp(cfg->home, "blank") == 0)
		return response(200, "OK",
				"Content-Type: text/html; charset=utf-8\r\n" BROWSER_HEADERS, "", 0,
				head);
	if (cfg->home &&
	    (strncmp(cfg->home, "http://", 7) == 0 || strncmp(cfg->home, "https://", 8) == 0)) {
		char h[1200];

		snprintf(h, sizeof(h), "Location: %s\r\n" BROWSER_HEADERS, cfg->home);
		return response(302, "Found", h, "", 0, head);
	}
	snprintf(body, sizeof(body),
		 "<html><body>\n<h1>DERP</h1>\n"
		 "<p>\n  This is a <a href=\"https://tailscale.com/\">Tailscale</a> DERP server"
		 " (kderp).\n</p>\n"
		 "<p>\n  It provides STUN, interactive connectivity establishment, and relaying of "
		 "end-to-end encrypted traffic\n  for Tailscale clients.\n</p>\n"
		 "<p>Status: %s</p>\n%s</body></html>\n",
		 cfg->derp ? "enabled" : "disabled",
		 debug_allowed(w, from, req) ? "<p><a href=\"/debug/\">Debug info</a></p>\n" : "");
	return response(200, "OK", "Content-Type: text/html; charset=utf-8\r\n" BROWSER_HEADERS,
			body, strlen(body), head);
}

static struct pkt *generate_204(const struct http_req *req)
{
	char h[300];
	int n = snprintf(h, sizeof(h),
			 "Cache-Control: no-cache, no-store, must-revalidate, no-transform, "
			 "max-age=0\r\n");

	if (!req->challenge_too_long && http_challenge_ok(req->challenge))
		snprintf(h + n, sizeof(h) - n, "X-Tailscale-Response: response %s\r\n",
			 req->challenge);
	/* 204 carries no body and no Content-Length. */
	{
		char hdr[512];
		int hl = snprintf(hdr, sizeof(hdr),
				  "HTTP/1.1 204 No Content\r\n%sConnection: close\r\n\r\n", h);
		return hl > 0 && hl < (int)sizeof(hdr) ? pkt_copy(hdr, (uint32_t)hl, PKT_RAW)
						       : NULL;
	}
}

static struct pkt *debug_route(struct web *w, const struct http_from *from,
			       const struct http_req *req, bool head)
{
	struct server *s = w->srv;

	if (!debug_allowed(w, from, req))
		return pkt_http_text(403, "Forbidden", "debug access denied\n");
	if (strcmp(req->path, "/debug/varz") == 0 || strcmp(req->path, "/debug/metrics") == 0) {
		size_t len = 0;
		char *v = web_varz(w, &len);
		struct pkt *p;

		if (!v)
			return pkt_http_text(500, "Internal Server Error", "out of memory\n");
		p = response(200, "OK", "Content-Type: text/plain;version=0.0.4;charset=utf-8\r\n",
			     v, len, head);
		free(v);
		return p;
	}
	if (strcmp(req->path, "/debug/drop-stun-on") == 0 ||
	    strcmp(req->path, "/debug/drop-stun-off") == 0) {
		bool on = strcmp(req->path, "/debug/drop-stun-on") == 0;

		/* xdpderper's switch: drop STUN in XDP instead of answering. */
		if (!w->drop_stun_fn || w->drop_stun_fn(w->drop_stun_arg, on) < 0)
			return pkt_http_text(503, "Service Unavailable",
					     "XDP STUN is not attached\n");
		log_info("debug: drop STUN %s", on ? "on" : "off");
		return pkt_http_text(200, "OK", on ? "STUN dropping on\n" : "STUN dropping off\n");
	}
	if (strcmp(req->path, "/debug/") == 0 || strcmp(req->path, "/debug") == 0) {
		char body[1024];

		snprintf(body, sizeof(body),
			 "<html><body><h1>kderpd debug</h1><ul>"
			 "<li>Uptime: %llus</li><li>Version: %s</li><li>TLS hostname: %s</li>"
			 "<li>Mesh key: %s</li><li>Workers: %d</li></ul>"
			 "<p><a href=\"/debug/varz\">/debug/varz</a></p></body></html>\n",
			 (unsigned long long)((now_ns() - s->start_ns) / NSEC_PER_SEC),
			 KDERP_VERSION, w->cfg->hostname, s->have_mesh_key ? "true" : "false",
			 s->nworkers);
		return response(200, "OK", "Content-Type: text/html; charset=utf-8\r\n", body,
				strlen(body), head);
	}
	return pkt_http_text(404, "Not Found", "404 page not found\n");
}

/* TLS mode's port 80: only the captive-portal check and redirects. */
static struct pkt *port80_route(struct web *w, const struct http_req *req, bool get_or_head,
				bool head)
{
	char loc[2600];

	if (!get_or_head)
		return pkt_http_text(400, "Bad Request", "Use HTTPS\n");
	if (snprintf(loc, sizeof(loc), "Location: https://%.255s%.1023s%s%.1023s\r\n",
		     req->host[0] ? req->host : w->cfg->hostname, req->path,
		     req->query[0] ? "?" : "", req->query) < 0)
		loc[0] = 0;
	return response(302, "Found", loc, "", 0, head);
}

/* /derp: the upgrade, or why not. */
static enum http_route derp_route(struct web *w, const struct http_from *from,
				  const struct http_req *req, struct pkt **resp)
{
	if (!w->cfg->derp) {
		*resp = pkt_http_text(404, "Not Found", "derp server disabled\n");
		return HTTP_ROUTE_RESPONSE;
	}
	if (req->has_body && req->upgrade[0]) {
		/* The bytes after the head would be taken for frames. */
		log_info("conn %llu: upgrade request with a body from %s, answering 400",
			 (unsigned long long)from->conn_id, from->addr_str);
		*resp = pkt_http_text(400, "Bad Request", "upgrade request with a body\n");
		return HTTP_ROUTE_RESPONSE;
	}
	if (strcasecmp(req->upgrade, "derp") == 0)
		return HTTP_ROUTE_UPGRADE;
	if (strcasecmp(req->upgrade, "websocket") == 0) {
		if (!strstr(req->ws_protocol, "derp"))
			return HTTP_ROUTE_UPGRADE;
		/* DERP over WebSocket framing is not implemented yet. */
		*resp = pkt_http_text(501, "Not Implemented",
				      "DERP over WebSocket is not supported\n");
		return HTTP_ROUTE_RESPONSE;
	}
	if (req->upgrade[0])
		log_info("conn %llu: weird upgrade header from %s, answering 426",
			 (unsigned long long)from->conn_id, from->addr_str);
	*resp = pkt_http_text(426, "Upgrade Required", "DERP requires connection upgrade\n");
	return HTTP_ROUTE_RESPONSE;
}

static const char robots_txt[] = "User-agent: *\nDisallow: /\n";

enum http_route web_route(void *arg, const struct http_from *from, const struct http_req *req,
			  struct pkt **resp)
{
	struct web *w = arg;
	bool get_or_head = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
	bool head = strcmp(req->method, "HEAD") == 0;
	const char *p = req->path;

	*resp = NULL;
	if (strcmp(p, "/generate_204") == 0)
		*resp = generate_204(req);
	else if (strncmp(p, "/debug", 6) == 0 && (p[6] == 0 || p[6] == '/'))
		*resp = debug_route(w, from, req, head);
	else if (from->port80)
		*resp = port80_route(w, req, get_or_head, head);
	else if (strcmp(p, "/derp/probe") == 0 || strcmp(p, "/derp/latency-check") == 0)
		*resp = get_or_head
			? response(200, "OK", "Access-Control-Allow-Origin: *\r\n", "", 0, head)
			: pkt_http_text(405, "Method Not Allowed", "bogus probe method\n");
	else if (strcmp(p, "/derp") == 0)
		return derp_route(w, from, req, resp);
	else if (strcmp(p, "/robots.txt") == 0)
		*resp = response(200, "OK",
				 "Content-Type: text/plain; charset=utf-8\r\n" BROWSER_HEADERS,
				 robots_txt, sizeof(robots_txt) - 1, head);
	else if (strcmp(p, "/bootstrap-dns") == 0)
		/* No names configured: derper answers an empty body. */
		*resp = response(200, "OK", "Content-Type: application/json\r\n" BROWSER_HEADERS,
				 "", 0, head);
	else
		*resp = home_page(w, from, req, head);
	return HTTP_ROUTE_RESPONSE;
}
