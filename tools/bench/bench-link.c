// SPDX-License-Identifier: MIT
/*
 * bench-link.c - kderp-bench's connection layer: address resolution, TLS
 * DERP client handshake (through derpc) and hand-over of the socket.
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
#include "derpc.h"

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
	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium init failed");
		return -EIO;
	}
	return 0;
}

void bench_target_fini(struct bench_target *t)
{
}

static const char *step_error(int err)
{
	if (err == -ECONNRESET)
		return "connection closed by the server";
	if (err == -ETIMEDOUT)
		return "timed out";
	return strerror(-err);
}

/*
 * The handshake is derpc's, step by step, so a failure can say which step
 * the server refused.
 */
int bench_dial(struct bench_target *t, struct bench_link *l, char *err, size_t errlen)
{
	struct derpc_opts dopt = {
		.host = t->host,
		.port = (uint16_t)atoi(t->port),
		.tls = t->tls,
		.ca_file = t->ca_file,
		.sni = t->sni[0] ? t->sni : NULL,
		.client_info_json = "{\"version\":2,\"CanAckPings\":false}",
		.timeout_ms = 10000,
	};
	struct derpc *c;
	size_t nbuf;
	int ret;

	memset(l, 0, sizeof(*l));
	l->fd = -1;
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	derpc_init(c, NULL);
	ret = derpc_dial(c, &dopt);
	if (ret) {
		snprintf(err, errlen, "%s to %s:%s: %s", t->tls ? "TLS connect" : "connect",
			 t->host, t->port, step_error(ret));
		goto fail;
	}
	ret = derpc_send_upgrade(c, &dopt);
	if (!ret)
		ret = derpc_read_upgrade(c, dopt.timeout_ms);
	if (ret) {
		if (c->http_status && c->http_status != 101)
			snprintf(err, errlen, "server refused the DERP upgrade (HTTP %d)",
				 c->http_status);
		else
			snprintf(err, errlen, "HTTP upgrade: %s", step_error(ret));
		goto fail;
	}
	ret = derpc_read_server_key(c, dopt.timeout_ms);
	if (ret) {
		snprintf(err, errlen, "invalid server greeting (ServerKey): %s", step_error(ret));
		goto fail;
	}
	ret = derpc_send_client_info(c, dopt.client_info_json);
	if (!ret)
		ret = derpc_read_server_info(c, dopt.timeout_ms);
	if (ret) {
		snprintf(err, errlen, "server refused the handshake (ClientInfo/ServerInfo): %s",
			 step_error(ret));
		goto fail;
	}
	if (derpc_buffered(c, &nbuf) && nbuf) {
		/* The bench sends nothing before every client is connected. */
		snprintf(err, errlen, "unexpected %zu bytes after ServerInfo", nbuf);
		ret = -EPROTO;
		goto fail;
	}
	l->fd = derpc_fd(c);
	l->ssl = derpc_ssl(c);
	memcpy(l->pub, c->key.pub, BENCH_KEY_LEN);
	l->priv = c;
	return 0;
fail:
	derpc_close(c);
	free(c);
	return ret;
}

void bench_link_close(struct bench_link *l)
{
	struct derpc *c;

	if (!l || !l->priv)
		return;
	c = l->priv;
	derpc_close(c);
	free(c);
	l->priv = NULL;
	l->ssl = NULL;
	l->fd = -1;
}
