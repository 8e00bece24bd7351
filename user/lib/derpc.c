// SPDX-License-Identifier: MIT
/*
 * derpc.c - a small blocking DERP client (see derpc.h).
 *
 * The socket is non-blocking from the start; every wait is a poll() bounded
 * by an absolute deadline on the monotonic clock. Received bytes go through
 * one growable buffer so frames may arrive in any split, and bytes that follow
 * the HTTP response head are kept for the frame reader.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "derpc.h"

#define DERPC_DEFAULT_TIMEOUT_MS 5000
#define DERPC_RBUF_INIT (64 << 10)
#define DERPC_MAX_HEAD (16 << 10)

int64_t derpc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_in(int timeout_ms)
{
	return derpc_now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
}

static int opt_timeout(const struct derpc_opts *o)
{
	return o && o->timeout_ms > 0 ? o->timeout_ms : DERPC_DEFAULT_TIMEOUT_MS;
}

int derpc_keygen(struct derpc_keypair *kp)
{
	if (sodium_init() < 0)
		return -EIO;
	crypto_box_keypair(kp->pub, kp->priv);
	return 0;
}

void derpc_key_hex(const uint8_t key[DERP_KEY_LEN], char out[2 * DERP_KEY_LEN + 1])
{
	sodium_bin2hex(out, 2 * DERP_KEY_LEN + 1, key, DERP_KEY_LEN);
}

void derpc_init(struct derpc *c, const struct derpc_keypair *kp)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	if (kp)
		c->key = *kp;
	else
		derpc_keygen(&c->key);
}

void derpc_put_header(uint8_t hdr[DERP_FRAME_HEADER_LEN], uint8_t type, uint32_t plen)
{
	hdr[0] = type;
	hdr[1] = plen >> 24;
	hdr[2] = plen >> 16;
	hdr[3] = plen >> 8;
	hdr[4] = plen;
}

int derpc_parse_header(const uint8_t *buf, size_t len, uint8_t *type, uint32_t *plen)
{
	if (len < DERP_FRAME_HEADER_LEN)
		return -EAGAIN;
	*type = buf[0];
	*plen = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
	return 0;
}

void derpc_fill_disco(uint8_t *buf, size_t len)
{
	randombytes_buf(buf, len);
	memcpy(buf, DERP_DISCO_MAGIC, len < DERP_DISCO_MAGIC_LEN ? len : DERP_DISCO_MAGIC_LEN);
}

/* ---- socket I/O ---- */

static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = {.fd = fd, .events = events};

	for (;;) {
		int64_t left = deadline - derpc_now_ms();
		int r;

		if (left < 0)
			left = 0;
		r = poll(&p, 1, (int)left);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* One read of at most len bytes: > 0 bytes, or -errno (-ECONNRESET on close). */
static ssize_t io_read(struct derpc *c, void *buf, size_t len, int64_t deadline)
{
	for (;;) {
		short ev = POLLIN;
		int err;

		if (c->fd < 0)
			return -EBADF;
		if (c->ssl) {
			size_t n = 0;

			/* SSL_get_error() looks at the thread's error queue: start clean */
			ERR_clear_error();
			if (SSL_read_ex(c->ssl, buf, len, &n) == 1)
				return (ssize_t)n;
			switch (SSL_get_error(c->ssl, 0)) {
			case SSL_ERROR_WANT_READ:
				break;
			case SSL_ERROR_WANT_WRITE:
				ev = POLLOUT;
				break;
			case SSL_ERROR_ZERO_RETURN:
				c->eof = true;
				return -ECONNRESET;
			case SSL_ERROR_SYSCALL:
				if (errno == 0)
					c->eof = true;
				ERR_clear_error();
				return -ECONNRESET;
			default:
				ERR_clear_error();
				return -ECONNRESET;
			}
		} else {
			ssize_t n = recv(c->fd, buf, len, 0);

			if (n > 0)
				return n;
			if (n == 0) {
				c->eof = true;
				return -ECONNRESET;
			}
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return errno == EPIPE ? -ECONNRESET : -errno;
		}
		err = wait_fd(c->fd, ev, deadline);
		if (err)
			return err;
	}
}

static int io_write_all(struct derpc *c, const void *buf, size_t len, int64_t deadline)
{
	const uint8_t *p = buf;

	while (len) {
		short ev = POLLOUT;
		int err;

		if (c->fd < 0)
			return -EBADF;
		if (c->ssl) {
			size_t n = 0;

			ERR_clear_error();
			if (SSL_write_ex(c->ssl, p, len, &n) == 1) {
				p += n;
				len -= n;
				continue;
			}
			switch (SSL_get_error(c->ssl, 0)) {
			case SSL_ERROR_WANT_WRITE:
				break;
			case SSL_ERROR_WANT_READ:
				ev = POLLIN;
				break;
			default:
				ERR_clear_error();
				return -ECONNRESET;
			}
		} else {
			ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

			if (n > 0) {
				p += n;
				len -= (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
				return errno == EPIPE ? -ECONNRESET : -errno;
		}
		err = wait_fd(c->fd, ev, deadline);
		if (err)
			return err;
	}
	return 0;
}

/* Make sure at least need bytes are buffered. */
static int fill(struct derpc *c, size_t need, int64_t deadline)
{
	while (c->rend - c->rstart < need) {
		ssize_t n;

		if (c->rcap - c->rstart < need) {
			/* compact, then grow if still too small */
			if (c->rend > c->rstart)
				memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
			c->rend -= c->rstart;
			c->rstart = 0;
			if (c->rcap < need) {
				size_t ncap = c->rcap ? c->rcap : DERPC_RBUF_INIT;
				uint8_t *nb;

				while (ncap < need)
					ncap *= 2;
				nb = realloc(c->rbuf, ncap);
				if (!nb)
					return -ENOMEM;
				c->rbuf = nb;
				c->rcap = ncap;
			}
		}
		n = io_read(c, c->rbuf + c->rend, c->rcap - c->rend, deadline);
		if (n < 0)
			return (int)n;
		c->rend += (size_t)n;
	}
	return 0;
}

/* Next whole frame; payload points into the read buffer until the next read. */
static int next_frame(struct derpc *c, uint8_t *type, const uint8_t **payload, uint32_t *plen,
		      int64_t deadline)
{
	int err = fill(c, DERP_FRAME_HEADER_LEN, deadline);

	if (err)
		return err;
	derpc_parse_header(c->rbuf + c->rstart, DERP_FRAME_HEADER_LEN, type, plen);
	if (*plen > DERP_MAX_FRAME_LEN)
		return -EMSGSIZE;
	err = fill(c, DERP_FRAME_HEADER_LEN + (size_t)*plen, deadline);
	if (err)
		return err;
	*payload = c->rbuf + c->rstart + DERP_FRAME_HEADER_LEN;
	c->rstart += DERP_FRAME_HEADER_LEN + (size_t)*plen;
	if (c->rstart == c->rend)
		c->rstart = c->rend = 0;
	return 0;
}

/* ---- connection setup ---- */

static int tls_setup(struct derpc *c, const struct derpc_opts *o, int64_t deadline)
{
	int err;

	c->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ssl_ctx)
		return -ENOMEM;
	SSL_CTX_set_options(c->ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(c->ssl_ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (o->ca_file) {
		if (SSL_CTX_load_verify_locations(c->ssl_ctx, o->ca_file, NULL) != 1) {
			ERR_clear_error();
			return -EINVAL;
		}
		SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_NONE, NULL);
	}
	c->ssl = SSL_new(c->ssl_ctx);
	if (!c->ssl)
		return -ENOMEM;
	SSL_set_fd(c->ssl, c->fd);
	if (o->sni) {
		uint8_t ip[16];
		bool is_ip =
			inet_pton(AF_INET, o->sni, ip) == 1 || inet_pton(AF_INET6, o->sni, ip) == 1;

		/* no SNI for an address (RFC 6066), but verify the cert's IP SAN */
		if (!is_ip)
			SSL_set_tlsext_host_name(c->ssl, o->sni);
		if (o->ca_file && is_ip)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), o->sni);
		else if (o->ca_file)
			SSL_set1_host(c->ssl, o->sni);
	}
	for (;;) {
		int r;

		ERR_clear_error();
		r = SSL_connect(c->ssl);

		if (r == 1)
			return 0;
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			err = wait_fd(c->fd, POLLIN, deadline);
			break;
		case SSL_ERROR_WANT_WRITE:
			err = wait_fd(c->fd, POLLOUT, deadline);
			break;
		default:
			ERR_clear_error();
			return -ECONNREFUSED;
		}
		if (err)
			return err;
	}
}

int derpc_dial(struct derpc *c, const struct derpc_opts *o)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	int64_t deadline = deadline_in(opt_timeout(o));
	char port[8];
	int err, one = 1, soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (!o->host)
		return -EINVAL;
	snprintf(port, sizeof(port), "%u", o->port);
	if (strchr(o->host, ':'))
		snprintf(c->host_hdr, sizeof(c->host_hdr), "[%s]:%u", o->host, o->port);
	else
		snprintf(c->host_hdr, sizeof(c->host_hdr), "%s:%u", o->host, o->port);
	if (getaddrinfo(o->host, port, &hints, &ai) != 0 || !ai)
		return -EHOSTUNREACH;
	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		err = -errno;
		freeaddrinfo(ai);
		return err;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	err = connect(c->fd, ai->ai_addr, ai->ai_addrlen) ? -errno : 0;
	freeaddrinfo(ai);
	if (err == -EINPROGRESS) {
		err = wait_fd(c->fd, POLLOUT, deadline);
		if (!err && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr)
			err = -soerr;
	}
	if (!err && o->tls)
		err = tls_setup(c, o, deadline);
	if (err)
		derpc_close(c);
	return err;
}

int derpc_send_upgrade(struct derpc *c, const struct derpc_opts *o)
{
	char req[2048];
	int n;

	n = snprintf(req, sizeof(req),
		     "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n%sUpgrade: DERP\r\n"
		     "%s\r\n",
		     o->path ? o->path : "/derp", c->host_hdr,
		     o->fast_start ? "Derp-Fast-Start: 1\r\n" : "",
		     o->extra_headers ? o->extra_headers : "");
	if (n < 0 || (size_t)n >= sizeof(req))
		return -E2BIG;
	return io_write_all(c, req, (size_t)n, deadline_in(opt_timeout(o)));
}

static int parse_head_status(const char *head, size_t len, int *status)
{
	http_parser_settings settings;
	http_parser p;
	size_t n;

	http_parser_settings_init(&settings);
	http_parser_init(&p, HTTP_RESPONSE);
	n = http_parser_execute(&p, &settings, head, len);
	if (HTTP_PARSER_ERRNO(&p) != HPE_OK || n == 0 || p.status_code == 0)
		return -EPROTO;
	*status = p.status_code;
	return 0;
}

int derpc_read_upgrade(struct derpc *c, int timeout_ms)
{
	int64_t deadline = deadline_in(timeout_ms);
	const char *end;
	size_t hl;
	int err;

	for (;;) {
		size_t have = c->rend - c->rstart;

		end = memmem(c->rbuf ? (char *)c->rbuf + c->rstart : "", have, "\r\n\r\n", 4);
		if (end)
			break;
		if (have >= DERPC_MAX_HEAD)
			return -EMSGSIZE;
		err = fill(c, have + 1, deadline);
		if (err)
			return err;
	}
	hl = (size_t)(end - ((char *)c->rbuf + c->rstart)) + 4;
	free(c->http_head);
	c->http_head = malloc(hl + 1);
	if (!c->http_head)
		return -ENOMEM;
	memcpy(c->http_head, c->rbuf + c->rstart, hl);
	c->http_head[hl] = 0;
	c->http_head_len = hl;
	c->rstart += hl;
	err = parse_head_status(c->http_head, hl, &c->http_status);
	if (err)
		return err;
	return c->http_status == 101 ? 0 : -EPROTO;
}

int derpc_read_server_key(struct derpc *c, int timeout_ms)
{
	const uint8_t *p;
	uint32_t len;
	uint8_t type;
	int err;

	err = next_frame(c, &type, &p, &len, deadline_in(timeout_ms));
	if (err)
		return err;
	if (type != DERP_FRAME_SERVER_KEY || len < DERP_MAGIC_LEN + DERP_KEY_LEN || len > 1024 ||
	    memcmp(p, DERP_MAGIC, DERP_MAGIC_LEN) != 0)
		return -EPROTO;
	memcpy(c->server_pub, p + DERP_MAGIC_LEN, DERP_KEY_LEN);
	c->have_server_key = true;
	return 0;
}

int derpc_build_client_info(const struct derpc_keypair *kp, const uint8_t server_pub[DERP_KEY_LEN],
			    const char *json, uint8_t *out, size_t cap)
{
	size_t jlen = strlen(json);
	size_t total = DERP_KEY_LEN + DERP_NONCE_LEN + DERP_BOX_OVERHEAD + jlen;
	uint8_t *nonce = out + DERP_KEY_LEN;

	if (cap < total)
		return -ENOSPC;
	memcpy(out, kp->pub, DERP_KEY_LEN);
	randombytes_buf(nonce, DERP_NONCE_LEN);
	if (crypto_box_easy(nonce + DERP_NONCE_LEN, (const uint8_t *)json, jlen, nonce, server_pub,
			    kp->priv) != 0)
		return -EINVAL;
	return (int)total;
}

int derpc_send_client_info(struct derpc *c, const char *json)
{
	const char *j = json ? json : DERPC_CLIENT_INFO_JSON;
	size_t cap = DERP_FRAME_HEADER_LEN + DERP_KEY_LEN + DERP_NONCE_LEN + DERP_BOX_OVERHEAD +
		strlen(j);
	uint8_t *buf;
	int n, err;

	if (!c->have_server_key)
		return -EINVAL;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	n = derpc_build_client_info(&c->key, c->server_pub, j, buf + DERP_FRAME_HEADER_LEN,
				    cap - DERP_FRAME_HEADER_LEN);
	if (n < 0) {
		free(buf);
		return n;
	}
	derpc_put_header(buf, DERP_FRAME_CLIENT_INFO, (uint32_t)n);
	err = io_write_all(c, buf, DERP_FRAME_HEADER_LEN + (size_t)n,
			   deadline_in(DERPC_DEFAULT_TIMEOUT_MS));
	free(buf);
	return err;
}

int derpc_read_server_info(struct derpc *c, int timeout_ms)
{
	const uint8_t *p;
	uint32_t len;
	uint8_t type;
	size_t mlen;
	int err;

	err = next_frame(c, &type, &p, &len, deadline_in(timeout_ms));
	if (err)
		return err;
	if (type != DERP_FRAME_SERVER_INFO || len < DERP_NONCE_LEN + DERP_BOX_OVERHEAD)
		return -EPROTO;
	mlen = len - DERP_NONCE_LEN - DERP_BOX_OVERHEAD;
	if (mlen >= sizeof(c->server_info))
		return -EMSGSIZE;
	if (crypto_box_open_easy((uint8_t *)c->server_info, p + DERP_NONCE_LEN,
				 len - DERP_NONCE_LEN, p, c->server_pub, c->key.priv) != 0)
		return -EBADMSG;
	c->server_info[mlen] = 0;
	c->server_info_len = mlen;
	return 0;
}

int derpc_connect(struct derpc *c, const struct derpc_opts *o)
{
	int t = opt_timeout(o);
	int err;

	if (sodium_init() < 0)
		return -EIO;
	err = derpc_dial(c, o);
	if (!err)
		err = derpc_send_upgrade(c, o);
	if (!err && !o->fast_start)
		err = derpc_read_upgrade(c, t);
	if (!err)
		err = derpc_read_server_key(c, t);
	if (!err)
		err = derpc_send_client_info(c, o->client_info_json);
	if (!err)
		err = derpc_read_server_info(c, t);
	if (err)
		derpc_close(c);
	return err;
}

void derpc_close(struct derpc *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->ssl_ctx) {
		SSL_CTX_free(c->ssl_ctx);
		c->ssl_ctx = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	free(c->rbuf);
	c->rbuf = NULL;
	c->rcap = c->rstart = c->rend = 0;
	free(c->http_head);
	c->http_head = NULL;
	c->http_head_len = 0;
}

/* ---- frames ---- */

int derpc_write_raw(struct derpc *c, const void *buf, size_t len, int timeout_ms)
{
	return io_write_all(c, buf, len, deadline_in(timeout_ms));
}

int derpc_write_frame(struct derpc *c, uint8_t type, const void *payload, size_t len,
		      int timeout_ms)
{
	int64_t deadline = deadline_in(timeout_ms);
	uint8_t small[DERP_FRAME_HEADER_LEN + 2048];
	uint8_t hdr[DERP_FRAME_HEADER_LEN];
	int err;

	if (len > UINT32_MAX)
		return -EMSGSIZE;
	if (len <= sizeof(small) - DERP_FRAME_HEADER_LEN) {
		/* one write, so small frames go out in one segment */
		derpc_put_header(small, type, (uint32_t)len);
		if (len)
			memcpy(small + DERP_FRAME_HEADER_LEN, payload, len);
		return io_write_all(c, small, DERP_FRAME_HEADER_LEN + len, deadline);
	}
	derpc_put_header(hdr, type, (uint32_t)len);
	err = io_write_all(c, hdr, sizeof(hdr), deadline);
	if (!err)
		err = io_write_all(c, payload, len, deadline);
	return err;
}

int derpc_send_packet(struct derpc *c, const uint8_t dst[DERP_KEY_LEN], const void *pkt, size_t len)
{
	uint8_t *buf;
	int err;

	if (len > DERP_MAX_PACKET_SIZE)
		return -EMSGSIZE;
	buf = malloc(DERP_FRAME_HEADER_LEN + DERP_KEY_LEN + len);
	if (!buf)
		return -ENOMEM;
	derpc_put_header(buf, DERP_FRAME_SEND_PACKET, (uint32_t)(DERP_KEY_LEN + len));
	memcpy(buf + DERP_FRAME_HEADER_LEN, dst, DERP_KEY_LEN);
	if (len)
		memcpy(buf + DERP_FRAME_HEADER_LEN + DERP_KEY_LEN, pkt, len);
	err = io_write_all(c, buf, DERP_FRAME_HEADER_LEN + DERP_KEY_LEN + len,
			   deadline_in(DERPC_DEFAULT_TIMEOUT_MS));
	free(buf);
	return err;
}

int derpc_note_preferred(struct derpc *c, bool preferred)
{
	uint8_t v = preferred ? 1 : 0;

	return derpc_write_frame(c, DERP_FRAME_NOTE_PREFERRED, &v, 1, DERPC_DEFAULT_TIMEOUT_MS);
}

int derpc_ping(struct derpc *c, const uint8_t data[DERP_PING_LEN])
{
	return derpc_write_frame(c, DERP_FRAME_PING, data, DERP_PING_LEN, DERPC_DEFAULT_TIMEOUT_MS);
}

int derpc_recv_frame(struct derpc *c, uint8_t *type, void *buf, size_t cap, size_t *len,
		     int timeout_ms)
{
	const uint8_t *p;
	uint32_t plen;
	int err;

	err = next_frame(c, type, &p, &plen, deadline_in(timeout_ms));
	if (err)
		return err;
	if (buf && cap)
		memcpy(buf, p, plen < cap ? plen : cap);
	if (len)
		*len = plen;
	return 0;
}

int derpc_recv_packet(struct derpc *c, uint8_t src[DERP_KEY_LEN], void *buf, size_t cap,
		      size_t *len, int timeout_ms)
{
	int64_t deadline = deadline_in(timeout_ms);

	for (;;) {
		const uint8_t *p;
		uint32_t plen;
		uint8_t type;
		size_t n;
		int err;

		err = next_frame(c, &type, &p, &plen, deadline);
		if (err)
			return err;
		if (type != DERP_FRAME_RECV_PACKET || plen < DERP_KEY_LEN)
			continue;
		if (src)
			memcpy(src, p, DERP_KEY_LEN);
		n = plen - DERP_KEY_LEN;
		if (buf && cap)
			memcpy(buf, p + DERP_KEY_LEN, n < cap ? n : cap);
		if (len)
			*len = n;
		return 0;
	}
}

int derpc_wait_closed(struct derpc *c, int timeout_ms)
{
	int64_t deadline = deadline_in(timeout_ms);
	uint8_t sink[16384];

	/* what is already buffered does not count: only the socket state does */
	c->rstart = c->rend = 0;
	for (;;) {
		ssize_t n = io_read(c, sink, sizeof(sink), deadline);

		if (n == -ECONNRESET)
			return 0;
		if (n < 0)
			return (int)n;
	}
}

int derpc_fd(const struct derpc *c)
{
	return c->fd;
}

SSL *derpc_ssl(const struct derpc *c)
{
	return c->ssl;
}

const uint8_t *derpc_buffered(const struct derpc *c, size_t *len)
{
	*len = c->rend - c->rstart;
	return c->rbuf ? c->rbuf + c->rstart : NULL;
}

/* ---- one-shot HTTP ---- */

struct http_ctx {
	struct derpc_http_resp *r;
	int err;
};

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct http_ctx *x = p->data;
	struct derpc_http_resp *r = x->r;
	char *nb;

	if (r->body_len + len > (16u << 20)) {
		x->err = -EMSGSIZE;
		return 1;
	}
	nb = realloc(r->body, r->body_len + len + 1);
	if (!nb) {
		x->err = -ENOMEM;
		return 1;
	}
	memcpy(nb + r->body_len, at, len);
	r->body = nb;
	r->body_len += len;
	r->body[r->body_len] = 0;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_ctx *x = p->data;

	x->r->complete = true;
	return 0;
}

static int on_headers_complete_nobody(http_parser *p)
{
	(void)p;
	return 1; /* a HEAD response: no body follows */
}

/* Accumulate the response until the head is complete, then keep a copy of it. */
static int keep_head(struct derpc_http_resp *r, char **acc, size_t *total, const char *buf,
		     size_t n)
{
	char *na = realloc(*acc, *total + n + 1);
	char *end;

	if (!na)
		return -ENOMEM;
	*acc = na;
	memcpy(na + *total, buf, n);
	*total += n;
	na[*total] = 0;
	end = memmem(na, *total, "\r\n\r\n", 4);
	if (!end)
		return *total > DERPC_MAX_HEAD ? -EMSGSIZE : 0;
	r->head_len = (size_t)(end - na) + 4;
	r->head = strndup(na, r->head_len);
	return r->head ? 0 : -ENOMEM;
}

int derpc_http_request(const struct derpc_opts *o, const char *req, struct derpc_http_resp *r)
{
	int64_t deadline = deadline_in(opt_timeout(o));
	http_parser_settings settings;
	struct http_ctx x = {.r = r};
	struct derpc c;
	http_parser p;
	char buf[8192];
	char *acc = NULL;
	size_t total = 0;
	int err;

	memset(r, 0, sizeof(*r));
	derpc_init(&c, NULL);
	err = derpc_dial(&c, o);
	if (err)
		return err;
	err = io_write_all(&c, req, strlen(req), deadline);
	if (err)
		goto out;
	http_parser_settings_init(&settings);
	settings.on_body = on_body;
	settings.on_message_complete = on_message_complete;
	if (strncmp(req, "HEAD ", 5) == 0)
		settings.on_headers_complete = on_headers_complete_nobody;
	http_parser_init(&p, HTTP_RESPONSE);
	p.data = &x;
	while (!r->complete) {
		ssize_t n = io_read(&c, buf, sizeof(buf), deadline);
		size_t done;

		if (n == -ECONNRESET) {
			/* EOF ends a body delimited by the close */
			http_parser_execute(&p, &settings, NULL, 0);
			break;
		}
		if (n < 0) {
			err = (int)n;
			goto out;
		}
		if (!r->head) {
			err = keep_head(r, &acc, &total, buf, (size_t)n);
			if (err)
				goto out;
		}
		done = http_parser_execute(&p, &settings, buf, (size_t)n);
		if (x.err) {
			err = x.err;
			goto out;
		}
		if (HTTP_PARSER_ERRNO(&p) != HPE_OK || done != (size_t)n) {
			if (HTTP_PARSER_ERRNO(&p) == HPE_CB_headers_complete)
				break;
			err = -EPROTO;
			goto out;
		}
	}
	r->status = p.status_code;
	if (!r->status)
		err = -EPROTO;
out:
	derpc_close(&c);
	free(acc);
	if (err)
		derpc_http_resp_free(r);
	return err;
}

int derpc_http_header(const char *head, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *line = strstr(head, "\r\n");

	while (line && line[2] != '\r' && line[2] != 0) {
		const char *s = line + 2;
		const char *eol = strstr(s, "\r\n");

		if (!eol)
			break;
		if ((size_t)(eol - s) > nl && strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
			const char *v = s + nl + 1;
			size_t vl;

			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			vl = (size_t)(eol - v);
			while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
				vl--;
			if (vl >= cap)
				return -ENOSPC;
			memcpy(out, v, vl);
			out[vl] = 0;
			return 0;
		}
		line = eol;
	}
	return -ENOENT;
}

void derpc_http_resp_free(struct derpc_http_resp *r)
{
	free(r->head);
	free(r->body);
	memset(r, 0, sizeof(*r));
}
