// SPDX-License-Identifier: MIT
/*
 * bench-link.c - kderp-bench's connection layer: address resolution, TLS
 * context and the DERP client handshake.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sodium.h>

#include "bench.h"

#define FRAME_SERVER_KEY 0x01
#define FRAME_CLIENT_INFO 0x02
#define FRAME_SERVER_INFO 0x03
#define DERP_MAGIC "DERP\xf0\x9f\x94\x91"
#define DERP_MAGIC_LEN 8

int bench_target_init(struct bench_target *t, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int rc;

	rc = getaddrinfo(t->host, t->port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "cannot resolve `%s': %s", t->host, gai_strerror(rc));
		return -EINVAL;
	}
	memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
	t->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	if (!t->sni[0])
		snprintf(t->sni, sizeof(t->sni), "%s", t->host);
	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium init failed");
		return -EIO;
	}
	if (!t->tls)
		return 0;
	t->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!t->ssl_ctx) {
		snprintf(err, errlen, "SSL_CTX_new failed");
		return -ENOMEM;
	}
	SSL_CTX_set_min_proto_version(t->ssl_ctx, TLS1_2_VERSION);
	if (t->ca_file) {
		if (SSL_CTX_load_verify_locations(t->ssl_ctx, t->ca_file, NULL) != 1) {
			snprintf(err, errlen, "cannot load CA file `%s'", t->ca_file);
			return -EINVAL;
		}
		SSL_CTX_set_verify(t->ssl_ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(t->ssl_ctx, SSL_VERIFY_NONE, NULL);
	}
	SSL_CTX_set_mode(t->ssl_ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return 0;
}

void bench_target_fini(struct bench_target *t)
{
	SSL_CTX_free(t->ssl_ctx);
	t->ssl_ctx = NULL;
}

/* Blocking I/O helpers used only during the handshake. */
static int io_write_all(struct bench_link *l, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n;

		if (l->ssl)
			n = SSL_write(l->ssl, p, (int)len);
		else
			n = write(l->fd, p, len);
		if (n <= 0) {
			if (!l->ssl && n < 0 && errno == EINTR)
				continue;
			return n == 0 ? -EPIPE : -(errno ? errno : EIO);
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static ssize_t io_read(struct bench_link *l, void *buf, size_t len)
{
	ssize_t n;

	for (;;) {
		if (l->ssl)
			n = SSL_read(l->ssl, buf, (int)len);
		else
			n = read(l->fd, buf, len);
		if (n < 0 && !l->ssl && errno == EINTR)
			continue;
		return n;
	}
}

/* Handshake read buffer: holds the HTTP response and the first frames. */
struct hs_buf {
	uint8_t data[4096];
	size_t len;
};

static int hs_fill(struct bench_link *l, struct hs_buf *b)
{
	ssize_t n;

	if (b->len == sizeof(b->data))
		return -E2BIG;
	n = io_read(l, b->data + b->len, sizeof(b->data) - b->len);
	if (n <= 0)
		return n == 0 ? -ECONNRESET : -(errno ? errno : EIO);
	b->len += (size_t)n;
	return 0;
}

static void hs_consume(struct hs_buf *b, size_t n)
{
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

static int hs_read_frame(struct bench_link *l, struct hs_buf *b, uint8_t *type, uint8_t *payload,
			 size_t cap, size_t *plen)
{
	uint32_t flen;
	int ret;

	while (b->len < 5)
		if ((ret = hs_fill(l, b)))
			return ret;
	flen = (uint32_t)b->data[1] << 24 | (uint32_t)b->data[2] << 16 | (uint32_t)b->data[3] << 8 |
		b->data[4];
	if (flen > cap || flen + 5 > sizeof(b->data))
		return -EMSGSIZE;
	while (b->len < 5 + flen)
		if ((ret = hs_fill(l, b)))
			return ret;
	*type = b->data[0];
	memcpy(payload, b->data + 5, flen);
	*plen = flen;
	hs_consume(b, 5 + flen);
	return 0;
}

static int derp_handshake(struct bench_target *t, struct bench_link *l, char *err, size_t errlen)
{
	static const char info_json[] = "{\"version\":2,\"CanAckPings\":false}";
	uint8_t frame[5 + 32 + 24 + 16 + sizeof(info_json)];
	uint8_t priv[32], server_pub[32], payload[1024], type;
	char req[512];
	struct hs_buf *b;
	size_t plen;
	uint32_t flen;
	int ret, n;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	n = snprintf(req, sizeof(req),
		     "GET /derp HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n"
		     "Upgrade: DERP\r\nUser-Agent: kderp-bench\r\n\r\n",
		     t->sni);
	ret = io_write_all(l, req, (size_t)n);
	if (ret) {
		snprintf(err, errlen, "writing the upgrade request: %s", strerror(-ret));
		goto out;
	}
	/* HTTP response up to the blank line. */
	for (;;) {
		uint8_t *end = memmem(b->data, b->len, "\r\n\r\n", 4);

		if (end) {
			if (b->len < 12 || memcmp(b->data + 9, "101", 3)) {
				snprintf(err, errlen, "server refused the DERP upgrade: %.*s",
					 (int)(strcspn((char *)b->data, "\r\n") % 80),
					 (char *)b->data);
				ret = -ECONNREFUSED;
				goto out;
			}
			hs_consume(b, (size_t)(end + 4 - b->data));
			break;
		}
		ret = hs_fill(l, b);
		if (ret) {
			snprintf(err, errlen, "reading the upgrade response: %s", strerror(-ret));
			goto out;
		}
	}
	ret = hs_read_frame(l, b, &type, payload, sizeof(payload), &plen);
	if (ret || type != FRAME_SERVER_KEY || plen < 40 ||
	    memcmp(payload, DERP_MAGIC, DERP_MAGIC_LEN)) {
		snprintf(err, errlen, "invalid server greeting (%s)",
			 ret ? strerror(-ret) : "bad ServerKey frame");
		ret = ret ? ret : -EPROTO;
		goto out;
	}
	memcpy(server_pub, payload + 8, 32);

	crypto_box_keypair(l->pub, priv);
	flen = 32 + 24 + crypto_box_MACBYTES + (uint32_t)(sizeof(info_json) - 1);
	frame[0] = FRAME_CLIENT_INFO;
	frame[1] = (uint8_t)(flen >> 24);
	frame[2] = (uint8_t)(flen >> 16);
	frame[3] = (uint8_t)(flen >> 8);
	frame[4] = (uint8_t)flen;
	memcpy(frame + 5, l->pub, 32);
	randombytes_buf(frame + 37, 24);
	if (crypto_box_easy(frame + 61, (const uint8_t *)info_json, sizeof(info_json) - 1,
			    frame + 37, server_pub, priv)) {
		snprintf(err, errlen, "cannot seal ClientInfo");
		ret = -EINVAL;
		goto out;
	}
	ret = io_write_all(l, frame, 5 + flen);
	if (ret) {
		snprintf(err, errlen, "writing ClientInfo: %s", strerror(-ret));
		goto out;
	}
	ret = hs_read_frame(l, b, &type, payload, sizeof(payload), &plen);
	if (ret) {
		snprintf(err, errlen, "server closed the connection during the handshake (%s)",
			 strerror(-ret));
		goto out;
	}
	if (type != FRAME_SERVER_INFO || plen < 24 + crypto_box_MACBYTES) {
		snprintf(err, errlen, "expected ServerInfo, got frame type 0x%02x", type);
		ret = -EPROTO;
		goto out;
	}
	if (crypto_box_open_easy(payload + 24, payload + 24, plen - 24, payload, server_pub,
				 priv)) {
		snprintf(err, errlen, "cannot open the ServerInfo box");
		ret = -EBADMSG;
		goto out;
	}
	if (b->len) {
		/* The bench starts sending only after every client is connected. */
		snprintf(err, errlen, "unexpected %zu bytes after ServerInfo", b->len);
		ret = -EPROTO;
		goto out;
	}
	ret = 0;
out:
	sodium_memzero(priv, sizeof(priv));
	free(b);
	return ret;
}

int bench_dial(struct bench_target *t, struct bench_link *l, char *err, size_t errlen)
{
	struct timeval tv = {.tv_sec = 10};
	int one = 1, ret;

	memset(l, 0, sizeof(*l));
	l->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l->fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "socket: %s", strerror(-ret));
		return ret;
	}
	setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(l->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(l->fd, (struct sockaddr *)&t->addr, t->addrlen)) {
		ret = -errno;
		snprintf(err, errlen, "connect to %s:%s: %s", t->host, t->port, strerror(-ret));
		goto fail;
	}
	if (t->tls) {
		l->ssl = SSL_new(t->ssl_ctx);
		if (!l->ssl) {
			ret = -ENOMEM;
			snprintf(err, errlen, "SSL_new failed");
			goto fail;
		}
		SSL_set_fd(l->ssl, l->fd);
		SSL_set_tlsext_host_name(l->ssl, t->sni);
		if (SSL_connect(l->ssl) != 1) {
			unsigned long e = ERR_get_error();

			snprintf(err, errlen, "TLS handshake with %s:%s failed: %s", t->host,
				 t->port, e ? ERR_reason_error_string(e) : "connection closed");
			ret = -ECONNREFUSED;
			goto fail;
		}
	}
	ret = derp_handshake(t, l, err, errlen);
	if (ret)
		goto fail;
	tv.tv_sec = 0;
	setsockopt(l->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(l->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return 0;
fail:
	bench_link_close(l);
	return ret;
}

void bench_link_close(struct bench_link *l)
{
	if (!l)
		return;
	if (l->ssl)
		SSL_free(l->ssl);
	l->ssl = NULL;
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}
