// SPDX-License-Identifier: MIT
/*
 * test_stun.c - userspace STUN: message parse/build functions and the
 * server on loopback (no privileges needed).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "stun.h"

static const uint8_t txid_a[12] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
				   0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c};

/* Bitwise CRC-32 (IEEE, reflected), independent of the zlib one under test. */
static uint32_t ref_crc32(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;

	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return ~c;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* Rewrite the trailing FINGERPRINT of a @len-byte message after an edit. */
static void refingerprint(uint8_t *m, size_t len)
{
	put32(m + len - 4, ref_crc32(m, len - 8) ^ 0x5354554eu);
}

TEST(request_bytes)
{
	uint8_t m[64];
	uint8_t want[40] = {
		0x00, 0x01, 0x00, 0x14, 0x21, 0x12, 0xa4, 0x42, 1,    2,    3,	  4,
		5,    6,    7,	  8,	9,    10,   11,	  12,	0x80, 0x22, 0x00, 0x08,
		't',  'a',  'i',  'l',	'n',  'o',  'd',  'e',	0x80, 0x28, 0x00, 0x04,
	};

	ASSERT_EQ(-ENOSPC, kderp_stun_build_request(m, 39, txid_a));
	ASSERT_EQ(40, kderp_stun_build_request(m, sizeof(m), txid_a));
	put32(want + 36, ref_crc32(want, 32) ^ 0x5354554eu);
	ASSERT_EQ(0, memcmp(want, m, 40));
}

TEST(parse_accepts_tailscale_request)
{
	uint8_t m[40], txid[12] = {0};

	kderp_stun_build_request(m, sizeof(m), txid_a);
	ASSERT_EQ(0, kderp_stun_parse_request(m, sizeof(m), txid));
	ASSERT_EQ(0, memcmp(txid_a, txid, 12));
}

TEST(parse_rejects_every_truncation)
{
	uint8_t m[40];

	kderp_stun_build_request(m, sizeof(m), txid_a);
	for (size_t n = 0; n < sizeof(m); n++)
		EXPECT_NE(0, kderp_stun_parse_request(m, n, NULL));
	EXPECT_EQ(-EINVAL, kderp_stun_parse_request(NULL, 40, NULL));
}

TEST(parse_rejects_header_errors)
{
	uint8_t m[40];

	/* wrong magic cookie (fingerprint recomputed so only the cookie is wrong) */
	kderp_stun_build_request(m, sizeof(m), txid_a);
	m[7] ^= 1;
	refingerprint(m, sizeof(m));
	EXPECT_EQ(-EINVAL, kderp_stun_parse_request(m, sizeof(m), NULL));
	/* top bits of byte 0 set */
	kderp_stun_build_request(m, sizeof(m), txid_a);
	m[0] |= 0x40;
	refingerprint(m, sizeof(m));
	EXPECT_EQ(-EINVAL, kderp_stun_parse_request(m, sizeof(m), NULL));
	/* not a binding request (an indication) */
	kderp_stun_build_request(m, sizeof(m), txid_a);
	m[1] = 0x11;
	refingerprint(m, sizeof(m));
	EXPECT_EQ(-EINVAL, kderp_stun_parse_request(m, sizeof(m), NULL));
	/* a binding success is not a request */
	kderp_stun_build_request(m, sizeof(m), txid_a);
	m[0] = 0x01;
	m[1] = 0x01;
	refingerprint(m, sizeof(m));
	EXPECT_EQ(-EINVAL, kderp_stun_parse_request(m, sizeof(m), NULL));
}

TEST(parse_rejects_bad_fingerprint_anywhere)
{
	uint8_t m[40];

	/* flipping any bit outside the header checks breaks the fingerprint */
	for (size_t i = 8; i < sizeof(m); i++) {
		kderp_stun_build_request(m, sizeof(m), txid_a);
		m[i] ^= 0x10;
		EXPECT_NE(0, kderp_stun_parse_request(m, sizeof(m), NULL));
	}
	kderp_stun_build_request(m, sizeof(m), txid_a);
	m[39] ^= 1;
	EXPECT_EQ(-EBADMSG, kderp_stun_parse_request(m, sizeof(m), NULL));
}

TEST(parse_rejects_wrong_software)
{
	uint8_t m[40];

	kderp_stun_build_request(m, sizeof(m), txid_a);
	memcpy(m + 24, "tailnodf", 8);
	refingerprint(m, sizeof(m));
	EXPECT_EQ(-EPROTO, kderp_stun_parse_request(m, sizeof(m), NULL));
	/* no SOFTWARE at all: header + FINGERPRINT */
	kderp_stun_build_request(m, sizeof(m), txid_a);
	memmove(m + 20, m + 32, 8);
	m[3] = 8;
	refingerprint(m, 28);
	EXPECT_EQ(-EPROTO, kderp_stun_parse_request(m, 28, NULL));
}

TEST(parse_fingerprint_must_be_last)
{
	uint8_t m[48];

	kderp_stun_build_request(m, sizeof(m), txid_a);
	/* an extra empty attribute after FINGERPRINT */
	m[40] = 0x80;
	m[41] = 0x23;
	m[42] = 0;
	m[43] = 0;
	EXPECT_EQ(-EBADMSG, kderp_stun_parse_request(m, 44, NULL));
}

TEST(parse_rejects_huge_and_partial_attributes)
{
	uint8_t m[48];

	kderp_stun_build_request(m, sizeof(m), txid_a);
	m[22] = 0xff; /* SOFTWARE length 0xff08 */
	EXPECT_EQ(-EINVAL, kderp_stun_parse_request(m, 40, NULL));
	kderp_stun_build_request(m, sizeof(m), txid_a);
	m[34] = 0xff; /* FINGERPRINT length 0xff04 */
	m[35] = 0xff;
	EXPECT_EQ(-EINVAL, kderp_stun_parse_request(m, 40, NULL));
	/* 1..3 stray bytes after the last attribute */
	for (size_t extra = 1; extra < 4; extra++) {
		kderp_stun_build_request(m, sizeof(m), txid_a);
		memset(m + 40, 0, extra);
		EXPECT_EQ(-EINVAL, kderp_stun_parse_request(m, 40 + extra, NULL));
	}
}

TEST(parse_accepts_software_not_first)
{
	/* user space follows derper: attribute order is free, padding honoured */
	uint8_t m[52] = {0x00, 0x01, 0x00, 0x20, 0x21, 0x12, 0xa4, 0x42};

	memcpy(m + 8, txid_a, 12);
	m[20] = 0x80; /* unknown comprehension-optional attribute, 3 bytes + 1 pad */
	m[21] = 0x30;
	m[23] = 3;
	m[24] = 'x';
	m[28] = 0x80;
	m[29] = 0x22;
	m[31] = 8;
	memcpy(m + 32, "tailnode", 8);
	m[40] = 0x80;
	m[41] = 0x28;
	m[43] = 4;
	refingerprint(m, 48);
	EXPECT_EQ(0, kderp_stun_parse_request(m, 48, NULL));
}

TEST(response_ipv4_bytes)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(1025)};
	uint8_t out[64];
	const uint8_t want[32] = {
		0x01,
		0x01,
		0x00,
		0x0c,
		0x21,
		0x12,
		0xa4,
		0x42,
		1,
		2,
		3,
		4,
		5,
		6,
		7,
		8,
		9,
		10,
		11,
		12,
		0x00,
		0x20,
		0x00,
		0x08,
		0x00,
		0x01,
		0x04 ^ 0x21,
		0x01 ^ 0x12,
		/* 192.0.2.1 ^ 21 12 a4 42 */
		192 ^ 0x21,
		0 ^ 0x12,
		2 ^ 0xa4,
		1 ^ 0x42,
	};

	inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
	ASSERT_EQ(-ENOSPC, kderp_stun_build_response(out, 31, txid_a, (void *)&sin));
	ASSERT_EQ(32, kderp_stun_build_response(out, sizeof(out), txid_a, (void *)&sin));
	ASSERT_EQ(0, memcmp(want, out, 32));
}

TEST(response_ipv6_bytes)
{
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(257)};
	uint8_t out[64], want[44] = {0x01, 0x01, 0x00, 0x18, 0x21, 0x12, 0xa4, 0x42};
	uint8_t ip[16];

	inet_pton(AF_INET6, "2001:db8::1:2", ip);
	sin6.sin6_addr = *(struct in6_addr *)ip;
	memcpy(want + 8, txid_a, 12);
	want[20] = 0x00;
	want[21] = 0x20;
	want[23] = 20;
	want[25] = 0x02;
	want[26] = 0x01 ^ 0x21;
	want[27] = 0x01 ^ 0x12;
	for (int i = 0; i < 16; i++)
		want[28 + i] = ip[i] ^ want[4 + i];
	ASSERT_EQ(-ENOSPC, kderp_stun_build_response(out, 43, txid_a, (void *)&sin6));
	ASSERT_EQ(44, kderp_stun_build_response(out, sizeof(out), txid_a, (void *)&sin6));
	ASSERT_EQ(0, memcmp(want, out, 44));
}

TEST(response_v4mapped_is_ipv4)
{
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(4242)};
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(4242)};
	uint8_t a[64], b[64];

	inet_pton(AF_INET6, "::ffff:198.51.100.7", &sin6.sin6_addr);
	inet_pton(AF_INET, "198.51.100.7", &sin.sin_addr);
	ASSERT_EQ(32, kderp_stun_build_response(a, sizeof(a), txid_a, (void *)&sin6));
	ASSERT_EQ(32, kderp_stun_build_response(b, sizeof(b), txid_a, (void *)&sin));
	ASSERT_EQ(0, memcmp(a, b, 32));
	sin.sin_family = AF_UNIX;
	ASSERT_EQ(-EAFNOSUPPORT, kderp_stun_build_response(b, sizeof(b), txid_a, (void *)&sin));
}

TEST(response_round_trip)
{
	static const char *const addrs[] = {"10.1.2.3", "255.255.255.255", "::1", "fe80::1"};
	static const int ports[] = {254, 257, 65535, 1};

	for (size_t i = 0; i < 4; i++) {
		struct sockaddr_storage in = {0}, got;
		uint8_t out[64];
		int n;

		if (strchr(addrs[i], ':')) {
			struct sockaddr_in6 *s6 = (void *)&in;

			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons(ports[i]);
			inet_pton(AF_INET6, addrs[i], &s6->sin6_addr);
		} else {
			struct sockaddr_in *s4 = (void *)&in;

			s4->sin_family = AF_INET;
			s4->sin_port = htons(ports[i]);
			inet_pton(AF_INET, addrs[i], &s4->sin_addr);
		}
		n = kderp_stun_build_response(out, sizeof(out), txid_a, (void *)&in);
		ASSERT_LT(0, n);
		ASSERT_EQ(0, kderp_stun_parse_response(out, n, txid_a, &got));
		ASSERT_EQ(in.ss_family, got.ss_family);
		ASSERT_EQ(0,
			  memcmp(&in, &got,
				 in.ss_family == AF_INET ? sizeof(struct sockaddr_in)
							 : sizeof(struct sockaddr_in6)));
		/* a different transaction id is not our answer */
		uint8_t other[12] = {9};
		EXPECT_EQ(-EINVAL, kderp_stun_parse_response(out, n, other, &got));
		/* a request is not a response */
		EXPECT_NE(0, kderp_stun_parse_request(out, n, NULL));
	}
}

TEST(response_parse_alternatives)
{
	struct sockaddr_in *sin;
	struct sockaddr_storage got;
	uint8_t m[32] = {0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42};

	memcpy(m + 8, txid_a, 12);
	/* plain MAPPED-ADDRESS 0x0001, no XOR */
	m[21] = 0x01;
	m[23] = 8;
	m[25] = 1;
	m[26] = 0x12;
	m[27] = 0x34;
	m[28] = 203;
	m[29] = 0;
	m[30] = 113;
	m[31] = 9;
	ASSERT_EQ(0, kderp_stun_parse_response(m, 32, txid_a, &got));
	sin = (void *)&got;
	ASSERT_EQ(0x1234, ntohs(sin->sin_port));
	ASSERT_EQ(htonl(0xcb007109), sin->sin_addr.s_addr);
	/* 0x8020 is XOR-MAPPED-ADDRESS too */
	m[20] = 0x80;
	m[21] = 0x20;
	ASSERT_EQ(0, kderp_stun_parse_response(m, 32, txid_a, &got));
	ASSERT_EQ(0x1234 ^ 0x2112, ntohs(sin->sin_port));
	/* unknown attribute only */
	m[21] = 0x33;
	ASSERT_EQ(-ENOENT, kderp_stun_parse_response(m, 32, txid_a, &got));
	/* bad family */
	m[21] = 0x20;
	m[25] = 3;
	ASSERT_EQ(-ENOENT, kderp_stun_parse_response(m, 32, txid_a, &got));
}

TEST(varz_null_and_truncation)
{
	const char *want = "# TYPE stun_addrfamily counter\n"
			   "stun_addrfamily{family=\"ipv4\"} 0\n"
			   "stun_addrfamily{family=\"ipv6\"} 0\n"
			   "# TYPE stun_requests counter\n"
			   "stun_requests{disposition=\"not_stun\"} 0\n"
			   "stun_requests{disposition=\"read_error\"} 0\n"
			   "stun_requests{disposition=\"success\"} 0\n"
			   "stun_requests{disposition=\"write_error\"} 0\n";
	char buf[1024], small[16];
	int n;

	n = kderp_stun_varz(NULL, buf, sizeof(buf));
	ASSERT_EQ((int)strlen(want), n);
	ASSERT_STREQ(want, buf);
	memset(small, 'x', sizeof(small));
	ASSERT_EQ(n, kderp_stun_varz(NULL, small, sizeof(small)));
	ASSERT_EQ('\0', small[15]);
	ASSERT_EQ(0, strncmp(want, small, 15));
	ASSERT_EQ(n, kderp_stun_varz(NULL, NULL, 0));
}

/* ---- server on loopback ------------------------------------------------ */

static int client_socket(int family, struct sockaddr_storage *self)
{
	socklen_t sl = sizeof(*self);
	struct sockaddr_storage any = {.ss_family = family};
	int fd = socket(family, SOCK_DGRAM, 0);

	if (fd < 0)
		return -1;
	if (family == AF_INET)
		inet_pton(AF_INET, "127.0.0.1", &((struct sockaddr_in *)&any)->sin_addr);
	else
		inet_pton(AF_INET6, "::1", &((struct sockaddr_in6 *)&any)->sin6_addr);
	if (bind(fd, (void *)&any,
		 family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) ||
	    getsockname(fd, (void *)self, &sl)) {
		close(fd);
		return -1;
	}
	return fd;
}

static int send_to(int fd, int family, int port, const void *m, size_t n)
{
	struct sockaddr_storage to = {.ss_family = family};
	socklen_t tl;

	if (family == AF_INET) {
		struct sockaddr_in *s = (void *)&to;

		inet_pton(AF_INET, "127.0.0.1", &s->sin_addr);
		s->sin_port = htons(port);
		tl = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (void *)&to;

		inet_pton(AF_INET6, "::1", &s->sin6_addr);
		s->sin6_port = htons(port);
		tl = sizeof(*s);
	}
	return sendto(fd, m, n, 0, (void *)&to, tl) == (ssize_t)n ? 0 : -1;
}

static ssize_t recv_wait(int fd, void *buf, size_t cap, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	if (poll(&p, 1, ms) != 1)
		return -1;
	return recv(fd, buf, cap, 0);
}

/* Wait until the server's counters reach @want successes (the thread is async). */
static void wait_counts(struct kderp_stun *s, struct kderp_stun_counts *c, uint64_t not_stun)
{
	for (int i = 0; i < 200; i++) {
		kderp_stun_get_counts(s, c);
		if (c->not_stun >= not_stun)
			return;
		usleep(5000);
	}
}

FIXTURE(server)
{
	struct kderp_stun *s;
	int port;
};

FIXTURE_VARIANT(server)
{
	const char *host;
	int client_family;
	int want_family; /* family in XOR-MAPPED-ADDRESS */
};

FIXTURE_VARIANT_ADD(server,
		    v4){.host = "127.0.0.1", .client_family = AF_INET, .want_family = AF_INET};
FIXTURE_VARIANT_ADD(server, v6){.host = "::1", .client_family = AF_INET6, .want_family = AF_INET6};
FIXTURE_VARIANT_ADD(server, v6_brackets){
	.host = "[::1]", .client_family = AF_INET6, .want_family = AF_INET6};
FIXTURE_VARIANT_ADD(server, dual_v4){.host = "", .client_family = AF_INET, .want_family = AF_INET};
FIXTURE_VARIANT_ADD(server,
		    dual_v6){.host = NULL, .client_family = AF_INET6, .want_family = AF_INET6};

FIXTURE_SETUP(server)
{
	if (variant->client_family == AF_INET6) {
		struct sockaddr_storage me;
		int fd = client_socket(AF_INET6, &me);

		if (fd < 0)
			SKIP(return, "no IPv6 loopback");
		close(fd);
	}
	self->s = kderp_stun_start(variant->host, 0);
	ASSERT_NE(NULL, self->s);
	self->port = kderp_stun_port(self->s);
	ASSERT_LT(0, self->port);
}

FIXTURE_TEARDOWN(server)
{
	kderp_stun_stop(self->s);
}

TEST_F(server, answers_and_counts)
{
	struct sockaddr_storage me, got;
	struct kderp_stun_counts c;
	uint8_t req[40], buf[1500];
	char text[1024], line[128];
	int fd;
	ssize_t n;

	fd = client_socket(variant->client_family, &me);
	ASSERT_LE(0, fd);
	kderp_stun_build_request(req, sizeof(req), txid_a);
	ASSERT_EQ(0, send_to(fd, variant->client_family, self->port, req, sizeof(req)));
	n = recv_wait(fd, buf, sizeof(buf), 2000);
	ASSERT_EQ(variant->want_family == AF_INET ? 32 : 44, n);
	ASSERT_EQ(0, kderp_stun_parse_response(buf, n, txid_a, &got));
	ASSERT_EQ(variant->want_family, got.ss_family);
	ASSERT_EQ(0,
		  memcmp(&me, &got,
			 got.ss_family == AF_INET ? sizeof(struct sockaddr_in)
						  : sizeof(struct sockaddr_in6)));

	/* garbage and a generic STUN request (no SOFTWARE) get no answer */
	ASSERT_EQ(0, send_to(fd, variant->client_family, self->port, "hello", 5));
	req[24] = 'T';
	ASSERT_EQ(0, send_to(fd, variant->client_family, self->port, req, sizeof(req)));
	ASSERT_EQ(-1, recv_wait(fd, buf, sizeof(buf), 200));
	wait_counts(self->s, &c, 2);
	ASSERT_EQ(2, c.not_stun);
	ASSERT_EQ(1, c.success);
	ASSERT_EQ(0, c.read_error);
	ASSERT_EQ(0, c.write_error);
	ASSERT_EQ(variant->want_family == AF_INET, c.ipv4);
	ASSERT_EQ(variant->want_family == AF_INET6, c.ipv6);

	ASSERT_LT(0, kderp_stun_varz(self->s, text, sizeof(text)));
	snprintf(line, sizeof(line), "stun_addrfamily{family=\"%s\"} 1\n",
		 variant->want_family == AF_INET ? "ipv4" : "ipv6");
	ASSERT_NE(NULL, strstr(text, line));
	ASSERT_NE(NULL, strstr(text, "stun_requests{disposition=\"success\"} 1\n"));
	ASSERT_NE(NULL, strstr(text, "stun_requests{disposition=\"not_stun\"} 2\n"));
	close(fd);
}

TEST_F(server, batch_of_requests)
{
	enum { N = 200 };
	struct sockaddr_storage me;
	struct kderp_stun_counts c;
	uint8_t req[40], buf[64];
	int fd, got = 0, rcvbuf = 1 << 20;
	bool seen[N] = {false};

	fd = client_socket(variant->client_family, &me);
	ASSERT_LE(0, fd);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	for (int i = 0; i < N; i++) {
		uint8_t txid[12] = {0xaa};

		txid[10] = i >> 8;
		txid[11] = i & 0xff;
		kderp_stun_build_request(req, sizeof(req), txid);
		ASSERT_EQ(0, send_to(fd, variant->client_family, self->port, req, sizeof(req)));
	}
	while (got < N) {
		ssize_t n = recv_wait(fd, buf, sizeof(buf), 2000);
		int i;

		if (n < 0)
			break;
		ASSERT_LE(32, n);
		i = buf[18] << 8 | buf[19];
		ASSERT_GT(N, i);
		ASSERT_FALSE(seen[i]);
		seen[i] = true;
		got++;
	}
	ASSERT_EQ(N, got);
	/* the thread counts after sendmmsg returns: give it a moment */
	for (int i = 0; i < 200; i++) {
		kderp_stun_get_counts(self->s, &c);
		if (c.success >= N)
			break;
		usleep(5000);
	}
	ASSERT_EQ(N, c.success);
	ASSERT_EQ(0, c.not_stun);
	close(fd);
}

TEST(start_errors)
{
	struct kderp_stun *s;

	errno = 0;
	ASSERT_NULL(kderp_stun_start("127.0.0.1", 70000));
	ASSERT_EQ(EINVAL, errno);
	ASSERT_NULL(kderp_stun_start("192.0.2.55", 0)); /* not a local address */
	ASSERT_NE(0, errno);
	/* the same port twice: the second bind fails */
	s = kderp_stun_start("127.0.0.1", 0);
	ASSERT_NE(NULL, s);
	char host[] = "127.0.0.1";
	ASSERT_NULL(kderp_stun_start(host, kderp_stun_port(s)));
	ASSERT_EQ(EADDRINUSE, errno);
	kderp_stun_stop(s);
	kderp_stun_stop(NULL);
}

TEST_HARNESS_MAIN
