// SPDX-License-Identifier: MIT
/*
 * ceiling-relay - the cheapest relay that kderp-bench can talk to.
 *
 * It does the DERP handshake (so the same client works against it) and then
 * forwards SendPacket frames as RecvPacket frames with one open-addressing
 * lookup, no per-packet queues, no locks, no per-packet crypto and no
 * protocol checks beyond framing: one epoll thread, 256 KiB reads, one write
 * per destination per read batch. When a destination's 1 MiB output buffer
 * is full the relay stops reading from the sender until it drains (TCP
 * back-pressure), so it never drops. Whatever a real relay delivers on the
 * same machine, this is the number to compare it with. Plain HTTP only;
 * loopback use only.
 *
 * usage: ceiling-relay -a HOST:PORT [-d SECONDS]
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include "kderp_bytes.h"

#define HDR 5
#define KEY 32
#define RBUF (256 * 1024)
#define OBUF_CAP (1024 * 1024) /* beyond this the sender waits */
#define TABLE_SIZE (1u << 17)
#define MAX_FRAME (65536 + 64)

enum cstate { ST_HTTP, ST_CINFO, ST_RUN };

struct rconn {
	int fd;
	enum cstate st;
	uint8_t pub[KEY];
	bool registered;
	uint8_t *rbuf;
	size_t rlen;
	uint8_t *obuf;
	size_t olen, ooff;
	bool dirty; /* on the flush list */
	struct rconn *next_dirty;
	bool stalled; /* a destination is full: not reading */
	struct rconn *next_stalled;
};

static uint8_t srv_pub[KEY], srv_priv[KEY];
static struct rconn *table[TABLE_SIZE];
static struct rconn tombstone;
static struct rconn *dirty_list;
static struct rconn *stalled_list;
static unsigned long long drops, forwarded;
static volatile sig_atomic_t stop;

static uint32_t key_slot(const uint8_t *k)
{
	uint32_t h;

	memcpy(&h, k, 4); /* keys are random: their bytes are the hash */
	return h & (TABLE_SIZE - 1);
}

static void table_put(struct rconn *c)
{
	uint32_t i = key_slot(c->pub), n;

	for (n = 0; n < TABLE_SIZE; n++, i = (i + 1) & (TABLE_SIZE - 1)) {
		if (!table[i] || table[i] == &tombstone) {
			table[i] = c;
			c->registered = true;
			return;
		}
		if (!memcmp(table[i]->pub, c->pub, KEY)) {
			table[i] = c; /* newest connection wins */
			c->registered = true;
			return;
		}
	}
}

static struct rconn *table_get(const uint8_t *k)
{
	uint32_t i = key_slot(k), n;

	for (n = 0; n < TABLE_SIZE && table[i]; n++, i = (i + 1) & (TABLE_SIZE - 1))
		if (table[i] != &tombstone && !memcmp(table[i]->pub, k, KEY))
			return table[i];
	return NULL;
}

static void table_del(struct rconn *c)
{
	uint32_t i = key_slot(c->pub), n;

	for (n = 0; n < TABLE_SIZE && table[i]; n++, i = (i + 1) & (TABLE_SIZE - 1))
		if (table[i] == c) {
			table[i] = &tombstone;
			return;
		}
}

static void put_hdr(uint8_t *p, uint8_t type, uint32_t len)
{
	p[0] = type;
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
}

static void conn_free(int ep, struct rconn *c)
{
	struct rconn **pp;

	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->registered)
		table_del(c);
	for (pp = &dirty_list; *pp; pp = &(*pp)->next_dirty)
		if (*pp == c) {
			*pp = c->next_dirty;
			break;
		}
	for (pp = &stalled_list; *pp; pp = &(*pp)->next_stalled)
		if (*pp == c) {
			*pp = c->next_stalled;
			break;
		}
	free(c->rbuf);
	free(c->obuf);
	free(c);
}

/* Small handshake writes go straight out: the socket buffer is empty then. */
static int write_small(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int handshake(struct rconn *c)
{
	if (c->st == ST_HTTP) {
		static const char fmt[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n"
					  "Connection: Upgrade\r\nDerp-Version: 2\r\n"
					  "Derp-Public-Key: %s\r\n\r\n";
		char hex[2 * KEY + 1], resp[512];
		uint8_t sk[HDR + 8 + KEY];
		uint8_t *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
		size_t used;
		int n;

		if (!end)
			return c->rlen > 8192 ? -1 : 0;
		used = (size_t)(end + 4 - c->rbuf);
		memmove(c->rbuf, c->rbuf + used, c->rlen - used);
		c->rlen -= used;
		sodium_bin2hex(hex, sizeof(hex), srv_pub, KEY);
		n = snprintf(resp, sizeof(resp), fmt, hex);
		put_hdr(sk, 0x01, 8 + KEY);
		memcpy(sk + HDR, "DERP\xf0\x9f\x94\x91", 8);
		memcpy(sk + HDR + 8, srv_pub, KEY);
		if (write_small(c->fd, (uint8_t *)resp, (size_t)n) ||
		    write_small(c->fd, sk, sizeof(sk)))
			return -1;
		c->st = ST_CINFO;
	}
	if (c->st == ST_CINFO) {
		static const char info[] = "{\"version\":2}";
		uint8_t si[HDR + 24 + crypto_box_MACBYTES + sizeof(info) - 1];
		uint32_t flen;

		if (c->rlen < HDR)
			return 0;
		flen = get_be32(c->rbuf + 1);
		if (c->rbuf[0] != 0x02 || flen < KEY + 24 || flen > 4096)
			return -1;
		if (c->rlen < HDR + flen)
			return 0;
		/* The client key is in clear text; the box itself is not opened. */
		memcpy(c->pub, c->rbuf + HDR, KEY);
		memmove(c->rbuf, c->rbuf + HDR + flen, c->rlen - HDR - flen);
		c->rlen -= HDR + flen;
		put_hdr(si, 0x03, (uint32_t)(sizeof(si) - HDR));
		randombytes_buf(si + HDR, 24);
		if (crypto_box_easy(si + HDR + 24, (const uint8_t *)info, sizeof(info) - 1,
				    si + HDR, c->pub, srv_priv))
			return -1;
		if (write_small(c->fd, si, sizeof(si)))
			return -1;
		table_put(c);
		c->st = ST_RUN;
	}
	return 0;
}

static void mark_dirty(struct rconn *d)
{
	if (!d->dirty) {
		d->dirty = true;
		d->next_dirty = dirty_list;
		dirty_list = d;
	}
}

static int flush(struct rconn *c)
{
	while (c->ooff < c->olen) {
		ssize_t n = write(c->fd, c->obuf + c->ooff, c->olen - c->ooff);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -1;
		}
		c->ooff += (size_t)n;
	}
	c->ooff = c->olen = 0;
	return 0;
}

/* forward() - turn whole SendPacket frames in c->rbuf into RecvPacket frames. */
static void forward(struct rconn *c)
{
	size_t off = 0;

	while (c->rlen - off >= HDR) {
		uint8_t *f = c->rbuf + off;
		uint32_t flen = get_be32(f + 1);
		struct rconn *d;

		if (c->rlen - off < HDR + flen)
			break;
		if (f[0] != 0x04 || flen < KEY) {
			off += HDR + flen;
			continue;
		}
		d = table_get(f + HDR);
		if (!d) {
			off += HDR + flen;
			drops++;
			continue;
		}
		if (d->olen - d->ooff + HDR + flen > OBUF_CAP) {
			/* destination full: keep the rest, stop reading this sender */
			if (!c->stalled) {
				c->stalled = true;
				c->next_stalled = stalled_list;
				stalled_list = c;
			}
			break;
		}
		off += HDR + flen;
		if (d->ooff && d->olen + HDR + flen > OBUF_CAP - d->ooff) {
			memmove(d->obuf, d->obuf + d->ooff, d->olen - d->ooff);
			d->olen -= d->ooff;
			d->ooff = 0;
		}
		put_hdr(d->obuf + d->olen, 0x05, flen);
		memcpy(d->obuf + d->olen + HDR, c->pub, KEY);
		memcpy(d->obuf + d->olen + HDR + KEY, f + HDR + KEY, flen - KEY);
		d->olen += HDR + flen;
		forwarded++;
		mark_dirty(d);
	}
	memmove(c->rbuf, c->rbuf + off, c->rlen - off);
	c->rlen -= off;
}

static int conn_readable(struct rconn *c)
{
	if (c->stalled)
		return 0;
	for (;;) {
		ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);

		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		if (n == 0)
			return -1;
		c->rlen += (size_t)n;
		if (c->st != ST_RUN && handshake(c))
			return -1;
		if (c->st == ST_RUN)
			forward(c);
		if (c->rlen >= HDR && get_be32(c->rbuf + 1) > MAX_FRAME)
			return -1;
		if (c->stalled || (size_t)n < (RBUF - c->rlen) / 2)
			return 0;
	}
}

static void flush_dirty(void)
{
	while (dirty_list) {
		struct rconn *d = dirty_list;

		dirty_list = d->next_dirty;
		d->dirty = false;
		if (flush(d))
			d->olen = d->ooff = 0; /* its own EPOLLHUP will free it */
	}
}

static void on_signal(int sig)
{
	stop = 1;
}

int main(int argc, char **argv)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
	const char *addr = "127.0.0.1:3341";
	char host[256], *port;
	double max_secs = 3600;
	struct timespec t0, now;
	int lfd, ep, one = 1, c;

	while ((c = getopt(argc, argv, "a:d:")) != -1) {
		if (c == 'a') {
			addr = optarg;
		} else if (c == 'd') {
			max_secs = atof(optarg);
		} else {
			fprintf(stderr, "usage: ceiling-relay -a HOST:PORT [-d MAX_SECONDS]\n");
			return 1;
		}
	}
	snprintf(host, sizeof(host), "%s", addr);
	port = strrchr(host, ':');
	if (!port) {
		fprintf(stderr, "ceiling-relay: bad address `%s'\n", addr);
		return 1;
	}
	*port++ = 0;
	if (sodium_init() < 0 || getaddrinfo(host, port, &hints, &ai)) {
		fprintf(stderr, "ceiling-relay: cannot resolve `%s'\n", addr);
		return 1;
	}
	crypto_box_keypair(srv_pub, srv_priv);
	lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) || listen(lfd, 4096)) {
		perror("ceiling-relay: listen");
		return 1;
	}
	freeaddrinfo(ai);
	ep = epoll_create1(EPOLL_CLOEXEC);
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};

		epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	fprintf(stderr, "ceiling-relay: serving on %s\n", addr);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!stop) {
		struct epoll_event evs[256];
		int n, i;

		n = epoll_wait(ep, evs, 256, 1000);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((double)(now.tv_sec - t0.tv_sec) > max_secs)
			break;
		for (i = 0; i < n; i++) {
			struct rconn *rc = evs[i].data.ptr;

			if (!rc) {
				int fd;

				while ((fd = accept4(lfd, NULL, NULL,
						     SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT |
									 EPOLLRDHUP | EPOLLET};

					rc = calloc(1, sizeof(*rc));
					if (!rc) {
						close(fd);
						continue;
					}
					rc->fd = fd;
					rc->rbuf = malloc(RBUF);
					rc->obuf = malloc(OBUF_CAP);
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.data.ptr = rc;
					if (!rc->rbuf || !rc->obuf ||
					    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) {
						free(rc->rbuf);
						free(rc->obuf);
						free(rc);
						close(fd);
					}
				}
				continue;
			}
			if ((evs[i].events & EPOLLOUT) && rc->olen && flush(rc)) {
				conn_free(ep, rc);
				continue;
			}
			if ((evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
			    conn_readable(rc)) {
				conn_free(ep, rc);
				continue;
			}
		}
		flush_dirty();
		/*
		 * Senders that waited for a full destination: parse, then read on,
		 * for as long as that moves packets (a destination emptied by
		 * flush_dirty() raises no EPOLLOUT).
		 */
		while (stalled_list) {
			struct rconn *list = stalled_list, *next;
			unsigned long long before = forwarded;

			stalled_list = NULL;
			for (; list; list = next) {
				next = list->next_stalled;
				list->stalled = false;
				forward(list);
				if (!list->stalled && conn_readable(list))
					conn_free(ep, list);
			}
			flush_dirty();
			if (forwarded == before)
				break;
		}
	}
	fprintf(stderr, "ceiling-relay: forwarded %llu, dropped %llu\n", forwarded, drops);
	sodium_memzero(srv_priv, sizeof(srv_priv));
	return 0;
}
