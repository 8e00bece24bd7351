// SPDX-License-Identifier: MIT
/*
 * test_derpc.c - the C DERP client library against a scripted fake server.
 *
 * A server thread on a loopback socket speaks the server side of the
 * handshake and then writes a fixed list of frames, cutting its output into
 * pieces of a chosen size (whole, 1 byte, random small) so the client's frame
 * reader sees every split. The server also checks what the client sent: the
 * upgrade request and a ClientInfo that opens with the server's key.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>

#include <sodium.h>

#include "harness.h"
#include "derpc.h"

struct fake {
	int lfd;
	uint16_t port;
	int split; /* 0: whole writes, 1: one byte, else random 1..split */
	bool fast_start; /* no 101 response */
	bool stall_mid_header; /* write 2 bytes of a frame header, pause, then the rest */
	bool oversize; /* last frame announces more than 1 MiB */
	struct derpc_keypair key;
	uint8_t client_pub[DERP_KEY_LEN];
	uint8_t src[DERP_KEY_LEN]; /* source key of the RecvPacket it sends */
	uint8_t pkt[1000];
	char request[2048];
	char client_json[256];
	int result; /* 0 ok, else which check failed */
	pthread_t thr;
};

static int fake_write(struct fake *f, int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		size_t n = len;
		ssize_t w;

		if (f->split && len > 4096)
			n = 1 + randombytes_uniform(4096); /* big frames: coarser, no pauses */
		else if (f->split == 1)
			n = 1;
		else if (f->split > 1)
			n = 1 + randombytes_uniform((uint32_t)f->split);
		if (n > len)
			n = len;
		w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
		if (f->split && len && n < 4096)
			usleep(50);
	}
	return 0;
}

static int read_exact(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);

		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fake_frame(struct fake *f, int fd, uint8_t type, const void *payload, uint32_t len)
{
	uint8_t hdr[DERP_FRAME_HEADER_LEN];

	derpc_put_header(hdr, type, len);
	if (fake_write(f, fd, hdr, sizeof(hdr)))
		return -1;
	return len ? fake_write(f, fd, payload, len) : 0;
}

static void *fake_serve(void *arg)
{
	struct fake *f = arg;
	uint8_t buf[4096], hdr[DERP_FRAME_HEADER_LEN], nonce[DERP_NONCE_LEN];
	uint8_t big[70000];
	size_t got = 0;
	uint32_t len;
	char hex[65];
	int fd, one = 1;

	f->result = 1;
	fd = accept(f->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* the request, one byte at a time so nothing after it is consumed */
	while (got < sizeof(f->request) - 1) {
		if (read_exact(fd, f->request + got, 1))
			goto out;
		got++;
		f->request[got] = 0;
		if (got >= 4 && !memcmp(f->request + got - 4, "\r\n\r\n", 4))
			break;
	}
	f->result = 2;
	derpc_key_hex(f->key.pub, hex);
	if (!f->fast_start) {
		char resp[512];
		int n = snprintf(resp, sizeof(resp),
				 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\n"
				 "Connection: Upgrade\r\nDerp-Version: 2\r\n"
				 "Derp-Public-Key: %s\r\n\r\n",
				 hex);

		if (fake_write(f, fd, resp, (size_t)n))
			goto out;
	}
	memcpy(buf, DERP_MAGIC, DERP_MAGIC_LEN);
	memcpy(buf + DERP_MAGIC_LEN, f->key.pub, DERP_KEY_LEN);
	if (fake_frame(f, fd, DERP_FRAME_SERVER_KEY, buf, DERP_MAGIC_LEN + DERP_KEY_LEN))
		goto out;
	/* ClientInfo: key, nonce, box that must open with our key */
	f->result = 3;
	if (read_exact(fd, hdr, sizeof(hdr)))
		goto out;
	len = (uint32_t)hdr[1] << 24 | hdr[2] << 16 | hdr[3] << 8 | hdr[4];
	if (hdr[0] != DERP_FRAME_CLIENT_INFO || len > sizeof(buf) ||
	    len < DERP_KEY_LEN + DERP_NONCE_LEN + DERP_BOX_OVERHEAD)
		goto out;
	if (read_exact(fd, buf, len))
		goto out;
	f->result = 4;
	memcpy(f->client_pub, buf, DERP_KEY_LEN);
	if (crypto_box_open_easy((uint8_t *)f->client_json, buf + DERP_KEY_LEN + DERP_NONCE_LEN,
				 len - DERP_KEY_LEN - DERP_NONCE_LEN, buf + DERP_KEY_LEN,
				 f->client_pub, f->key.priv))
		goto out;
	f->client_json[len - DERP_KEY_LEN - DERP_NONCE_LEN - DERP_BOX_OVERHEAD] = 0;
	/* ServerInfo */
	f->result = 5;
	randombytes_buf(nonce, sizeof(nonce));
	memcpy(buf, nonce, sizeof(nonce));
	if (crypto_box_easy(buf + DERP_NONCE_LEN, (const uint8_t *)"{\"version\":2}", 13, nonce,
			    f->client_pub, f->key.priv))
		goto out;
	if (fake_frame(f, fd, DERP_FRAME_SERVER_INFO, buf, DERP_NONCE_LEN + DERP_BOX_OVERHEAD + 13))
		goto out;
	/* steady state: KeepAlive, RecvPacket, a big unknown frame, Pong, PeerGone */
	if (fake_frame(f, fd, DERP_FRAME_KEEP_ALIVE, NULL, 0))
		goto out;
	memcpy(buf, f->src, DERP_KEY_LEN);
	memcpy(buf + DERP_KEY_LEN, f->pkt, sizeof(f->pkt));
	if (fake_frame(f, fd, DERP_FRAME_RECV_PACKET, buf, DERP_KEY_LEN + sizeof(f->pkt)))
		goto out;
	memset(big, 0xab, sizeof(big));
	if (fake_frame(f, fd, 0x30, big, sizeof(big)))
		goto out;
	if (f->stall_mid_header) {
		derpc_put_header(hdr, DERP_FRAME_PONG, 8);
		if (send(fd, hdr, 2, MSG_NOSIGNAL) != 2)
			goto out;
		usleep(400000);
		if (send(fd, hdr + 2, 3, MSG_NOSIGNAL) != 3 ||
		    send(fd, "pongpong", 8, MSG_NOSIGNAL) != 8)
			goto out;
	} else if (fake_frame(f, fd, DERP_FRAME_PONG, "pongpong", 8)) {
		goto out;
	}
	memcpy(buf, f->src, DERP_KEY_LEN);
	buf[DERP_KEY_LEN] = DERP_PEER_GONE_NOT_HERE;
	if (fake_frame(f, fd, DERP_FRAME_PEER_GONE, buf, DERP_KEY_LEN + 1))
		goto out;
	if (f->oversize) {
		derpc_put_header(hdr, 0x31, DERP_MAX_FRAME_LEN + 1);
		if (fake_write(f, fd, hdr, sizeof(hdr)))
			goto out;
	}
	f->result = 0;
out:
	usleep(100000);
	close(fd);
	return NULL;
}

static int fake_start(struct fake *f)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);

	if (sodium_init() < 0)
		return -EIO;
	derpc_keygen(&f->key);
	randombytes_buf(f->src, sizeof(f->src));
	randombytes_buf(f->pkt, sizeof(f->pkt));
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(f->lfd, 4) ||
	    getsockname(f->lfd, (struct sockaddr *)&sa, &sl))
		return -errno;
	f->port = ntohs(sa.sin_port);
	return pthread_create(&f->thr, NULL, fake_serve, f) ? -EAGAIN : 0;
}

FIXTURE(derpc)
{
	struct fake f;
	struct derpc c;
};

FIXTURE_VARIANT(derpc)
{
	int split;
	bool fast_start;
	bool stall;
};

FIXTURE_VARIANT_ADD(derpc, whole){.split = 0};
FIXTURE_VARIANT_ADD(derpc, bytewise){.split = 1};
FIXTURE_VARIANT_ADD(derpc, random_split){.split = 7};
FIXTURE_VARIANT_ADD(derpc, fast_start){.split = 3, .fast_start = true};
FIXTURE_VARIANT_ADD(derpc, stall_mid_header){.split = 0, .stall = true};

FIXTURE_SETUP(derpc)
{
	signal(SIGPIPE, SIG_IGN);
	derpc_init(&self->c, NULL);
	self->f.split = variant->split;
	self->f.fast_start = variant->fast_start;
	self->f.stall_mid_header = variant->stall;
	ASSERT_EQ(0, fake_start(&self->f));
}

FIXTURE_TEARDOWN(derpc)
{
	derpc_close(&self->c);
	if (self->f.lfd > 0)
		close(self->f.lfd);
}

TEST_F(derpc, handshake_and_frames)
{
	struct derpc_opts o = {.host = "127.0.0.1", .port = self->f.port, .timeout_ms = 5000};
	uint8_t src[DERP_KEY_LEN], buf[2048], type;
	char want_req[512];
	size_t n = 0;
	int err;

	o.fast_start = variant->fast_start;
	ASSERT_EQ(0, derpc_connect(&self->c, &o));
	ASSERT_STREQ("{\"version\":2}", self->c.server_info);
	ASSERT_EQ(0, memcmp(self->c.server_pub, self->f.key.pub, DERP_KEY_LEN));
	if (o.fast_start) {
		ASSERT_EQ(0, self->c.http_status);
	} else {
		ASSERT_EQ(101, self->c.http_status);
		ASSERT_NE(NULL, strstr(self->c.http_head, "Derp-Version: 2\r\n"));
	}

	/* KeepAlive is skipped, the packet comes with its source key */
	ASSERT_EQ(0, derpc_recv_packet(&self->c, src, buf, sizeof(buf), &n, 5000));
	ASSERT_EQ(sizeof(self->f.pkt), n);
	ASSERT_EQ(0, memcmp(src, self->f.src, DERP_KEY_LEN));
	ASSERT_EQ(0, memcmp(buf, self->f.pkt, n));
	/* a frame larger than the buffer is truncated, its full length reported */
	memset(buf, 0, sizeof(buf));
	ASSERT_EQ(0, derpc_recv_frame(&self->c, &type, buf, 100, &n, 5000));
	ASSERT_EQ(0x30, type);
	ASSERT_EQ(70000, n);
	ASSERT_EQ(0xab, buf[99]);
	ASSERT_EQ(0, buf[100]);
	if (variant->stall) {
		/* two bytes of a header arrive, then nothing: a timeout, no desync */
		err = derpc_recv_frame(&self->c, &type, buf, sizeof(buf), &n, 150);
		ASSERT_EQ(-ETIMEDOUT, err);
	}
	ASSERT_EQ(0, derpc_recv_frame(&self->c, &type, buf, sizeof(buf), &n, 5000));
	ASSERT_EQ(DERP_FRAME_PONG, type);
	ASSERT_EQ(8, n);
	ASSERT_EQ(0, memcmp(buf, "pongpong", 8));
	ASSERT_EQ(0, derpc_recv_frame(&self->c, &type, buf, sizeof(buf), &n, 5000));
	ASSERT_EQ(DERP_FRAME_PEER_GONE, type);
	ASSERT_EQ(DERP_KEY_LEN + 1, n);
	ASSERT_EQ(DERP_PEER_GONE_NOT_HERE, buf[DERP_KEY_LEN]);
	/* the server closes: EOF, seen as a clean close */
	ASSERT_EQ(-ECONNRESET, derpc_recv_frame(&self->c, &type, buf, sizeof(buf), &n, 5000));
	ASSERT_TRUE(self->c.eof);

	pthread_join(self->f.thr, NULL);
	ASSERT_EQ(0, self->f.result);
	/* what the client sent */
	snprintf(want_req, sizeof(want_req),
		 "GET /derp HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: Upgrade\r\n%s"
		 "Upgrade: DERP\r\n\r\n",
		 self->f.port, o.fast_start ? "Derp-Fast-Start: 1\r\n" : "");
	ASSERT_STREQ(want_req, self->f.request);
	ASSERT_STREQ(DERPC_CLIENT_INFO_JSON, self->f.client_json);
	ASSERT_EQ(0, memcmp(self->f.client_pub, self->c.key.pub, DERP_KEY_LEN));
}

TEST(oversize_frame_is_refused)
{
	struct fake f = {.oversize = true};
	struct derpc c;
	struct derpc_opts o = {.host = "127.0.0.1", .timeout_ms = 5000};
	uint8_t type, buf[64];
	size_t n;
	int err;

	ASSERT_EQ(0, fake_start(&f));
	o.port = f.port;
	derpc_init(&c, NULL);
	ASSERT_EQ(0, derpc_connect(&c, &o));
	for (int i = 0; i < 10; i++) {
		err = derpc_recv_frame(&c, &type, buf, sizeof(buf), &n, 5000);
		if (err)
			break;
	}
	ASSERT_EQ(-EMSGSIZE, err);
	derpc_close(&c);
	pthread_join(f.thr, NULL);
	close(f.lfd);
}

TEST(bad_magic_is_refused)
{
	struct derpc c;
	int sv[2];
	uint8_t frame[DERP_FRAME_HEADER_LEN + 40];

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	derpc_init(&c, NULL);
	c.fd = sv[0];
	derpc_put_header(frame, DERP_FRAME_SERVER_KEY, 40);
	memcpy(frame + DERP_FRAME_HEADER_LEN, "DERP\xf0\x9f\x94\x92", 8); /* last byte off */
	memset(frame + DERP_FRAME_HEADER_LEN + 8, 7, 32);
	ASSERT_EQ(sizeof(frame), write(sv[1], frame, sizeof(frame)));
	ASSERT_EQ(-EPROTO, derpc_read_server_key(&c, 1000));
	ASSERT_FALSE(c.have_server_key);
	/* a good one right after is accepted */
	frame[DERP_FRAME_HEADER_LEN + 7] = 0x91;
	ASSERT_EQ(sizeof(frame), write(sv[1], frame, sizeof(frame)));
	ASSERT_EQ(0, derpc_read_server_key(&c, 1000));
	ASSERT_EQ(7, c.server_pub[31]);
	derpc_close(&c);
	close(sv[1]);
}

TEST(http_request_parses_response)
{
	static const char resp[] = "HTTP/1.1 426 Upgrade Required\r\n"
				   "Content-Type: text/plain; charset=utf-8\r\n"
				   "X-Thing:   spaced value  \r\n"
				   "Content-Length: 33\r\n\r\n"
				   "DERP requires connection upgrade\n";
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	struct derpc_opts o = {.host = "127.0.0.1", .timeout_ms = 3000};
	struct derpc_http_resp r;
	char v[64], req[256];
	int lfd, fd;
	pid_t pid;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	ASSERT_EQ(0, bind(lfd, (struct sockaddr *)&sa, sizeof(sa)));
	ASSERT_EQ(0, listen(lfd, 1));
	ASSERT_EQ(0, getsockname(lfd, (struct sockaddr *)&sa, &sl));
	o.port = ntohs(sa.sin_port);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		fd = accept(lfd, NULL, NULL);
		if (fd >= 0 && recv(fd, req, sizeof(req), 0) > 0) {
			/* in three pieces, the server keeps the connection open */
			send(fd, resp, 10, MSG_NOSIGNAL);
			usleep(20000);
			send(fd, resp + 10, 60, MSG_NOSIGNAL);
			usleep(20000);
			send(fd, resp + 70, sizeof(resp) - 71, MSG_NOSIGNAL);
			usleep(500000);
		}
		_exit(0);
	}
	ASSERT_EQ(0, derpc_http_request(&o, "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n", &r));
	ASSERT_EQ(426, r.status);
	ASSERT_TRUE(r.complete);
	ASSERT_STREQ("DERP requires connection upgrade\n", r.body);
	ASSERT_EQ(0, derpc_http_header(r.head, "x-thing", v, sizeof(v)));
	ASSERT_STREQ("spaced value", v);
	ASSERT_EQ(-ENOENT, derpc_http_header(r.head, "X-Missing", v, sizeof(v)));
	ASSERT_EQ(-ENOENT, derpc_http_header(r.head, "Content", v, sizeof(v)));
	derpc_http_resp_free(&r);
	waitpid(pid, NULL, 0);
	close(lfd);
}

TEST_HARNESS_MAIN
