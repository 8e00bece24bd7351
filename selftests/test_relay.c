// SPDX-License-Identifier: MIT
/*
 * test_relay.c - what a well-behaved client sees: the upgrade response byte
 * for byte, ServerInfo, packet relay with the source key, ping/pong, the
 * PeerGone rules, frames sent before ServerInfo, fast start, and the small
 * HTTP endpoints (426, probe, generate_204, home page).
 *
 * Each test runs against its own server (lib/derp_daemon.h); the expected
 * values are Go derper's behaviour (run with KDERP_DAEMON=path/to/derper to
 * check). Every case runs once per transport, the fixture's variants:
 * relay.plain.* over TCP and relay.tls.* over TLS (user-space TLS on a host
 * without CONFIG_TLS, kTLS in the guests of `make vm-test`). The few
 * TLS-only cases SKIP on plain.
 */
#include <pthread.h>

#include <sodium.h>

#include "harness.h"
#include "derpc.h"
#include "derp_daemon.h"

#define WAIT_MS 3000

FIXTURE(relay)
{
	struct derp_daemon d;
	struct derpc a, b;
};

/*
 * Every relay case runs over each transport. A transport is one variant
 * here and whatever dd_start/dd_opts (lib/derp_daemon.c) need to set it up.
 */
FIXTURE_VARIANT(relay)
{
	bool tls; /* manual cert mode, self-signed for 127.0.0.1 (kTLS where the kernel has it) */
};

FIXTURE_VARIANT_ADD(relay, plain){
	.tls = false,
};

FIXTURE_VARIANT_ADD(relay, tls){
	.tls = true,
};

FIXTURE_SETUP(relay)
{
	derpc_init(&self->a, NULL);
	derpc_init(&self->b, NULL);
	self->d.tls = variant->tls;
	dd_setup(_metadata, &self->d, NULL);
	dd_client(_metadata, &self->d, &self->a);
	dd_client(_metadata, &self->d, &self->b);
}

FIXTURE_TEARDOWN(relay)
{
	derpc_close(&self->a);
	derpc_close(&self->b);
	dd_teardown(_metadata, &self->d);
}

/*
 * Read frames until one of the wanted type arrives (0 and its payload) or
 * the time is up. Frames of other types are skipped; a PeerGone among them
 * is reported through *saw_gone when asked.
 */
static int recv_type(struct derpc *c, uint8_t want, uint8_t *buf, size_t cap, size_t *len,
		     int timeout_ms)
{
	int64_t deadline = derpc_now_ms() + timeout_ms;

	for (;;) {
		int64_t left = deadline - derpc_now_ms();
		uint8_t type;
		int err;

		if (left <= 0)
			return -ETIMEDOUT;
		err = derpc_recv_frame(c, &type, buf, cap, len, (int)left);
		if (err)
			return err;
		if (type == want)
			return 0;
	}
}

TEST_F(relay, server_info_is_version_2)
{
	ASSERT_STREQ("{\"version\":2}", self->a.server_info);
	ASSERT_EQ(13, self->a.server_info_len);
}

TEST_F(relay, upgrade_response_exact)
{
	char hex[2 * DERP_KEY_LEN + 1], want[512];

	derpc_key_hex(self->a.server_pub, hex);
	snprintf(want, sizeof(want),
		 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
		 "Derp-Version: 2\r\nDerp-Public-Key: %s\r\n\r\n",
		 hex);
	ASSERT_EQ(101, self->a.http_status);
	ASSERT_STREQ(want, self->a.http_head);
	/* same server key for everybody */
	ASSERT_EQ(0, memcmp(self->a.server_pub, self->b.server_pub, DERP_KEY_LEN));
}

TEST_F(relay, a_to_b_with_source_key)
{
	uint8_t pkt[1200], got[1300], src[DERP_KEY_LEN];
	size_t n = 0;

	randombytes_buf(pkt, sizeof(pkt));
	ASSERT_EQ(0, derpc_send_packet(&self->a, self->b.key.pub, pkt, sizeof(pkt)));
	ASSERT_EQ(0, derpc_recv_packet(&self->b, src, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(sizeof(pkt), n);
	ASSERT_EQ(0, memcmp(src, self->a.key.pub, DERP_KEY_LEN));
	ASSERT_EQ(0, memcmp(got, pkt, n));
}

TEST_F(relay, largest_packet_b_to_a)
{
	size_t big = DERP_MAX_PACKET_SIZE, n = 0;
	uint8_t *p = malloc(big), *q = malloc(big);
	uint8_t src[DERP_KEY_LEN];

	ASSERT_NE(NULL, p);
	ASSERT_NE(NULL, q);
	randombytes_buf(p, big);
	ASSERT_EQ(0, derpc_send_packet(&self->b, self->a.key.pub, p, big));
	ASSERT_EQ(0, derpc_recv_packet(&self->a, src, q, big, &n, WAIT_MS));
	ASSERT_EQ(big, n);
	ASSERT_EQ(0, memcmp(src, self->b.key.pub, DERP_KEY_LEN));
	ASSERT_EQ(0, memcmp(p, q, big));
	free(p);
	free(q);
}

TEST_F(relay, unknown_frame_types_are_skipped)
{
	uint8_t junk[3000], pkt[64], got[128], src[DERP_KEY_LEN];
	size_t n = 0;

	randombytes_buf(junk, sizeof(junk));
	randombytes_buf(pkt, sizeof(pkt));
	ASSERT_EQ(0, derpc_write_frame(&self->a, 0x30, junk, sizeof(junk), WAIT_MS));
	ASSERT_EQ(0, derpc_write_frame(&self->a, 0x30, NULL, 0, WAIT_MS));
	ASSERT_EQ(0, derpc_write_frame(&self->a, 0xff, junk, 77, WAIT_MS));
	/* a client Pong is just another unknown frame to the server */
	ASSERT_EQ(0, derpc_write_frame(&self->a, DERP_FRAME_PONG, junk, 8, WAIT_MS));
	ASSERT_EQ(0, derpc_send_packet(&self->a, self->b.key.pub, pkt, sizeof(pkt)));
	ASSERT_EQ(0, derpc_recv_packet(&self->b, src, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(sizeof(pkt), n);
	ASSERT_EQ(0, memcmp(got, pkt, n));
	ASSERT_EQ(0, memcmp(src, self->a.key.pub, DERP_KEY_LEN));
}

TEST_F(relay, ping_8_bytes_gets_pong)
{
	static const uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 42};
	uint8_t got[16];
	size_t n = 0;

	ASSERT_EQ(0, derpc_ping(&self->a, data));
	ASSERT_EQ(0, recv_type(&self->a, DERP_FRAME_PONG, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(8, n);
	ASSERT_EQ(0, memcmp(got, data, 8));
}

TEST_F(relay, ping_100_bytes_pong_has_first_8)
{
	uint8_t data[100], got[128];
	size_t n = 0;

	randombytes_buf(data, sizeof(data));
	ASSERT_EQ(0, derpc_write_frame(&self->a, DERP_FRAME_PING, data, sizeof(data), WAIT_MS));
	ASSERT_EQ(0, recv_type(&self->a, DERP_FRAME_PONG, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(8, n);
	ASSERT_EQ(0, memcmp(got, data, 8));
	/* the 92 extra bytes were consumed, not parsed as frames: still usable */
	data[0] ^= 0xff;
	ASSERT_EQ(0, derpc_ping(&self->a, data));
	ASSERT_EQ(0, recv_type(&self->a, DERP_FRAME_PONG, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(0, memcmp(got, data, 8));
}

TEST_F(relay, ping_burst_pongs_are_echoes)
{
	uint8_t buf[20 * (DERP_FRAME_HEADER_LEN + 8)], got[16];
	int64_t deadline;
	int pongs = 0, last = -1;

	/* 20 pings in one write: some may be dropped while a pong is pending */
	for (int i = 0; i < 20; i++) {
		uint8_t *f = buf + i * (DERP_FRAME_HEADER_LEN + 8);

		derpc_put_header(f, DERP_FRAME_PING, 8);
		memcpy(f + DERP_FRAME_HEADER_LEN, "pingNNNN", 8);
		f[DERP_FRAME_HEADER_LEN + 7] = (uint8_t)i;
	}
	ASSERT_EQ(0, derpc_write_raw(&self->a, buf, sizeof(buf), WAIT_MS));
	deadline = derpc_now_ms() + 1000;
	for (;;) {
		int64_t left = deadline - derpc_now_ms();
		size_t n = 0;
		int err;

		if (left <= 0)
			break;
		err = recv_type(&self->a, DERP_FRAME_PONG, got, sizeof(got), &n, (int)left);
		if (err == -ETIMEDOUT)
			break;
		ASSERT_EQ(0, err);
		ASSERT_EQ(8, n);
		ASSERT_EQ(0, memcmp(got, "pingNNN", 7));
		/* each pong answers a distinct ping, in order */
		ASSERT_LT(last, (int)got[7]);
		ASSERT_GT(20, (int)got[7]);
		last = got[7];
		pongs++;
	}
	TH_LOG("%d pongs for 20 pings", pongs);
	ASSERT_LE(1, pongs);
	ASSERT_LE(0, dd_relay_once(&self->a, &self->b, WAIT_MS));
}

TEST_F(relay, frames_before_server_info_are_processed)
{
	uint8_t buf[1024], pkt[40], got[64], src[DERP_KEY_LEN], ping[8];
	struct derpc_opts o;
	struct derpc c;
	size_t off = 0, n = 0;
	int ci;

	dd_opts(&self->d, &o);
	ASSERT_EQ(0, dd_upgraded(&self->d, &c));
	randombytes_buf(pkt, sizeof(pkt));
	randombytes_buf(ping, sizeof(ping));
	/* ClientInfo, NotePreferred, SendPacket and Ping in one write */
	ci = derpc_build_client_info(&c.key, c.server_pub, DERPC_CLIENT_INFO_JSON,
				     buf + DERP_FRAME_HEADER_LEN, 512);
	ASSERT_LT(0, ci);
	derpc_put_header(buf, DERP_FRAME_CLIENT_INFO, (uint32_t)ci);
	off = DERP_FRAME_HEADER_LEN + (size_t)ci;
	derpc_put_header(buf + off, DERP_FRAME_NOTE_PREFERRED, 1);
	buf[off + DERP_FRAME_HEADER_LEN] = 1;
	off += DERP_FRAME_HEADER_LEN + 1;
	derpc_put_header(buf + off, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + sizeof(pkt));
	memcpy(buf + off + DERP_FRAME_HEADER_LEN, self->b.key.pub, DERP_KEY_LEN);
	memcpy(buf + off + DERP_FRAME_HEADER_LEN + DERP_KEY_LEN, pkt, sizeof(pkt));
	off += DERP_FRAME_HEADER_LEN + DERP_KEY_LEN + sizeof(pkt);
	derpc_put_header(buf + off, DERP_FRAME_PING, 8);
	memcpy(buf + off + DERP_FRAME_HEADER_LEN, ping, 8);
	off += DERP_FRAME_HEADER_LEN + 8;
	ASSERT_EQ(0, derpc_write_raw(&c, buf, off, WAIT_MS));
	/* ServerInfo is still the first frame after ServerKey */
	ASSERT_EQ(0, derpc_read_server_info(&c, WAIT_MS));
	ASSERT_STREQ("{\"version\":2}", c.server_info);
	ASSERT_EQ(0, recv_type(&c, DERP_FRAME_PONG, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(0, memcmp(got, ping, 8));
	ASSERT_EQ(0, derpc_recv_packet(&self->b, src, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(sizeof(pkt), n);
	ASSERT_EQ(0, memcmp(src, c.key.pub, DERP_KEY_LEN));
	ASSERT_EQ(0, memcmp(got, pkt, n));
	derpc_close(&c);
}

TEST_F(relay, not_here_only_for_disco)
{
	struct derpc_keypair k1, k2;
	uint8_t plain[100], disco[DERP_DISCO_MIN_LEN], got[64], ping[8];
	int64_t deadline;
	bool gone_k2 = false;

	derpc_keygen(&k1);
	derpc_keygen(&k2);
	memset(plain, 0x11, sizeof(plain));
	derpc_fill_disco(disco, sizeof(disco));
	randombytes_buf(ping, sizeof(ping));
	/* non-disco to an unknown key: dropped, nothing comes back */
	ASSERT_EQ(0, derpc_send_packet(&self->a, k1.pub, plain, sizeof(plain)));
	ASSERT_EQ(0, derpc_ping(&self->a, ping));
	ASSERT_EQ(0, derpc_send_packet(&self->a, k2.pub, disco, sizeof(disco)));
	deadline = derpc_now_ms() + WAIT_MS;
	while (!gone_k2 || derpc_now_ms() < deadline - WAIT_MS + 500) {
		int64_t left = deadline - derpc_now_ms();
		uint8_t type;
		size_t n = 0;
		int err;

		if (left <= 0)
			break;
		err = derpc_recv_frame(&self->a, &type, got, sizeof(got), &n, (int)left);
		if (err == -ETIMEDOUT)
			break;
		ASSERT_EQ(0, err);
		if (type != DERP_FRAME_PEER_GONE)
			continue;
		ASSERT_EQ(DERP_KEY_LEN + 1, n);
		ASSERT_NE(0, memcmp(got, k1.pub, DERP_KEY_LEN)); /* never for non-disco */
		ASSERT_EQ(0, memcmp(got, k2.pub, DERP_KEY_LEN));
		ASSERT_EQ(DERP_PEER_GONE_NOT_HERE, got[DERP_KEY_LEN]);
		gone_k2 = true;
	}
	ASSERT_TRUE(gone_k2);
}

TEST_F(relay, peer_gone_to_former_correspondent)
{
	uint8_t pkt[32], got[64], src[DERP_KEY_LEN], a_pub[DERP_KEY_LEN];
	struct derpc c;
	size_t n = 0;
	int64_t deadline;
	int err;

	derpc_init(&c, NULL);
	ASSERT_EQ(0, dd_connect(&self->d, &c));
	memcpy(a_pub, self->a.key.pub, DERP_KEY_LEN);
	randombytes_buf(pkt, sizeof(pkt));
	ASSERT_EQ(0, derpc_send_packet(&self->a, self->b.key.pub, pkt, sizeof(pkt)));
	ASSERT_EQ(0, derpc_recv_packet(&self->b, src, got, sizeof(got), &n, WAIT_MS));
	derpc_close(&self->a);
	ASSERT_EQ(0, recv_type(&self->b, DERP_FRAME_PEER_GONE, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(DERP_KEY_LEN + 1, n);
	ASSERT_EQ(0, memcmp(got, a_pub, DERP_KEY_LEN));
	ASSERT_EQ(DERP_PEER_GONE_DISCONNECTED, got[DERP_KEY_LEN]);
	/* C never heard from A: no PeerGone for it */
	deadline = derpc_now_ms() + 500;
	for (;;) {
		int64_t left = deadline - derpc_now_ms();
		uint8_t type;

		if (left <= 0)
			break;
		err = derpc_recv_frame(&c, &type, got, sizeof(got), &n, (int)left);
		if (err == -ETIMEDOUT)
			break;
		ASSERT_EQ(0, err);
		ASSERT_NE(DERP_FRAME_PEER_GONE, type);
	}
	derpc_close(&c);
}

TEST_F(relay, fast_start_has_no_101)
{
	struct derpc_opts o;
	struct derpc c;
	const uint8_t *rest;
	size_t n;

	dd_opts(&self->d, &o);
	o.fast_start = true;
	derpc_init(&c, NULL);
	ASSERT_EQ(0, derpc_dial(&c, &o));
	ASSERT_EQ(0, derpc_send_upgrade(&c, &o));
	/* the very first bytes are the ServerKey frame, not "HTTP/1.1" */
	ASSERT_EQ(0, derpc_read_server_key(&c, WAIT_MS));
	ASSERT_EQ(0, memcmp(c.server_pub, self->a.server_pub, DERP_KEY_LEN));
	ASSERT_EQ(0, derpc_send_client_info(&c, NULL));
	ASSERT_EQ(0, derpc_read_server_info(&c, WAIT_MS));
	ASSERT_STREQ("{\"version\":2}", c.server_info);
	rest = derpc_buffered(&c, &n);
	(void)rest;
	ASSERT_EQ(0, n);
	ASSERT_LE(0, dd_relay_once(&c, &self->a, WAIT_MS));
	derpc_close(&c);
}

/* Upgrade with a hand-written request; the DERP handshake must then work. */
static int upgrade_with(const struct derp_daemon *d, struct derpc *c, const char *req)
{
	struct derpc_opts o;
	int err;

	dd_opts(d, &o);
	derpc_init(c, NULL);
	err = derpc_dial(c, &o);
	if (!err)
		err = derpc_write_raw(c, req, strlen(req), WAIT_MS);
	if (!err)
		err = derpc_read_upgrade(c, WAIT_MS);
	if (!err)
		err = derpc_read_server_key(c, WAIT_MS);
	if (!err)
		err = derpc_send_client_info(c, NULL);
	if (!err)
		err = derpc_read_server_info(c, WAIT_MS);
	return err;
}

TEST_F(relay, upgrade_header_variants)
{
	static const char *const reqs[] = {
		/* the Upgrade value is matched case-insensitively */
		"GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: derp\r\n\r\n",
		/* neither the method nor Connection is checked */
		"POST /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nContent-Length: 0\r\n\r\n",
		/* legacy clients said "websocket" but spoke raw DERP */
		"GET /derp HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: "
		"websocket\r\n\r\n",
		/* fast start only for exactly "1" */
		"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nDerp-Fast-Start: true\r\n\r\n",
		/* header names in any case, extra headers ignored */
		"GET /derp HTTP/1.1\r\nhost: x\r\nUPGRADE: DERP\r\nconnection: upgrade\r\n"
		"User-Agent: Go-http-client/1.1\r\nIdeal-Node: 900a\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
		struct derpc c;
		int err = upgrade_with(&self->d, &c, reqs[i]);

		if (err)
			TH_LOG("request %zu: %s", i, strerror(-err));
		ASSERT_EQ(0, err);
		ASSERT_EQ(101, c.http_status);
		ASSERT_LE(0, dd_relay_once(&c, &self->a, WAIT_MS));
		derpc_close(&c);
	}
}

/*
 * A client that already knows the server key writes the request, its
 * ClientInfo and a packet in one go: the bytes behind the header
 * terminator must reach the DERP parser (with and without fast start).
 */
static void everything_in_one_write(struct __test_metadata *_metadata, FIXTURE_DATA(relay) * self,
				    bool fast)
{
	uint8_t buf[2048], pkt[64], got[128], src[DERP_KEY_LEN];
	struct derpc_opts o;
	struct derpc c;
	size_t off, n = 0;
	int ci;

	dd_opts(&self->d, &o);
	derpc_init(&c, NULL);
	ASSERT_EQ(0, derpc_dial(&c, &o));
	off = (size_t)snprintf((char *)buf, sizeof(buf),
			       "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
			       "%sUpgrade: DERP\r\n\r\n",
			       fast ? "Derp-Fast-Start: 1\r\n" : "");
	ci = derpc_build_client_info(&c.key, self->a.server_pub, DERPC_CLIENT_INFO_JSON,
				     buf + off + DERP_FRAME_HEADER_LEN, 512);
	ASSERT_LT(0, ci);
	derpc_put_header(buf + off, DERP_FRAME_CLIENT_INFO, (uint32_t)ci);
	off += DERP_FRAME_HEADER_LEN + (size_t)ci;
	randombytes_buf(pkt, sizeof(pkt));
	derpc_put_header(buf + off, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + sizeof(pkt));
	memcpy(buf + off + DERP_FRAME_HEADER_LEN, self->b.key.pub, DERP_KEY_LEN);
	memcpy(buf + off + DERP_FRAME_HEADER_LEN + DERP_KEY_LEN, pkt, sizeof(pkt));
	off += DERP_FRAME_HEADER_LEN + DERP_KEY_LEN + sizeof(pkt);
	ASSERT_EQ(0, derpc_write_raw(&c, buf, off, WAIT_MS));
	if (!fast)
		ASSERT_EQ(0, derpc_read_upgrade(&c, WAIT_MS));
	ASSERT_EQ(0, derpc_read_server_key(&c, WAIT_MS));
	ASSERT_EQ(0, derpc_read_server_info(&c, WAIT_MS));
	ASSERT_EQ(0, derpc_recv_packet(&self->b, src, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(sizeof(pkt), n);
	ASSERT_EQ(0, memcmp(got, pkt, n));
	ASSERT_EQ(0, memcmp(src, c.key.pub, DERP_KEY_LEN));
	derpc_close(&c);
}

TEST_F(relay, request_and_client_info_in_one_write)
{
	everything_in_one_write(_metadata, self, false);
}

TEST_F(relay, fast_start_request_and_client_info_in_one_write)
{
	everything_in_one_write(_metadata, self, true);
}

/* Wait for one packet from src with the given first byte; others are skipped. */
static int recv_tagged(struct derpc *c, const uint8_t src[DERP_KEY_LEN], uint8_t tag,
		       int timeout_ms)
{
	int64_t deadline = derpc_now_ms() + timeout_ms;
	uint8_t got[64], from[DERP_KEY_LEN];

	for (;;) {
		int64_t left = deadline - derpc_now_ms();
		size_t n = 0;
		int err;

		if (left <= 0)
			return -ETIMEDOUT;
		err = derpc_recv_packet(c, from, got, sizeof(got), &n, (int)left);
		if (err)
			return err;
		if (n && got[0] == tag && !memcmp(from, src, DERP_KEY_LEN))
			return 0;
	}
}

/* No packet with that tag shows up on c within ms. */
static bool silent_for(struct derpc *c, uint8_t tag, int ms)
{
	int64_t deadline = derpc_now_ms() + ms;
	uint8_t got[64];

	for (;;) {
		int64_t left = deadline - derpc_now_ms();
		size_t n = 0;

		if (left <= 0)
			return true;
		if (derpc_recv_packet(c, NULL, got, sizeof(got), &n, (int)left))
			return true;
		if (n && got[0] == tag)
			return false;
	}
}

TEST_F(relay, duplicate_key_last_active_wins)
{
	struct derpc_opts o;
	struct derpc a2, a3;
	uint8_t pkt[32] = {0};
	uint8_t ping[8] = {0};
	uint8_t got[64];
	size_t n;

	/* a second and third connection with A's key */
	dd_opts(&self->d, &o);
	derpc_init(&a2, &self->a.key);
	derpc_init(&a3, &self->a.key);
	ASSERT_EQ(0, derpc_connect(&a2, &o));
	ASSERT_EQ(0, derpc_connect(&a3, &o));
	/* the newest (a3) gets B's packets */
	pkt[0] = 1;
	ASSERT_EQ(0, derpc_send_packet(&self->b, self->a.key.pub, pkt, sizeof(pkt)));
	ASSERT_EQ(0, recv_tagged(&a3, self->b.key.pub, 1, WAIT_MS));
	/* any frame from a2 makes it the active one */
	ASSERT_EQ(0, derpc_ping(&a2, ping));
	ASSERT_EQ(0, recv_type(&a2, DERP_FRAME_PONG, got, sizeof(got), &n, WAIT_MS));
	pkt[0] = 2;
	ASSERT_EQ(0, derpc_send_packet(&self->b, self->a.key.pub, pkt, sizeof(pkt)));
	ASSERT_EQ(0, recv_tagged(&a2, self->b.key.pub, 2, WAIT_MS));
	ASSERT_TRUE(silent_for(&a3, 2, 200));
	/* a2 leaves: delivery falls back to a remaining connection; no PeerGone(A) */
	derpc_close(&a2);
	usleep(100000);
	pkt[0] = 3;
	ASSERT_EQ(0, derpc_send_packet(&self->a, self->b.key.pub, pkt, sizeof(pkt)));
	ASSERT_EQ(0, recv_tagged(&self->b, self->a.key.pub, 3, WAIT_MS));
	pkt[0] = 4;
	ASSERT_EQ(0, derpc_ping(&a3, ping));
	ASSERT_EQ(0, recv_type(&a3, DERP_FRAME_PONG, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(0, derpc_send_packet(&self->b, self->a.key.pub, pkt, sizeof(pkt)));
	ASSERT_EQ(0, recv_tagged(&a3, self->b.key.pub, 4, WAIT_MS));
	derpc_close(&a3);
	/* B heard from A, but A is still connected (self->a): no PeerGone */
	for (;;) {
		uint8_t type;
		int err = derpc_recv_frame(&self->b, &type, got, sizeof(got), &n, 300);

		if (err == -ETIMEDOUT)
			break;
		ASSERT_EQ(0, err);
		ASSERT_NE(DERP_FRAME_PEER_GONE, type);
	}
}

TEST_F(relay, send_to_self_is_delivered)
{
	ASSERT_LE(0, dd_relay_once(&self->a, &self->a, WAIT_MS));
}

TEST_F(relay, not_here_is_rate_limited)
{
	uint8_t disco[DERP_DISCO_MIN_LEN], got[64];
	int64_t deadline;
	int gone = 0;

	/* 8 disco packets to unknown keys at once: a burst of 3 answers */
	for (int i = 0; i < 8; i++) {
		struct derpc_keypair k;

		derpc_keygen(&k);
		derpc_fill_disco(disco, sizeof(disco));
		ASSERT_EQ(0, derpc_send_packet(&self->a, k.pub, disco, sizeof(disco)));
	}
	deadline = derpc_now_ms() + 700;
	for (;;) {
		int64_t left = deadline - derpc_now_ms();
		uint8_t type;
		size_t n = 0;
		int err;

		if (left <= 0)
			break;
		err = derpc_recv_frame(&self->a, &type, got, sizeof(got), &n, (int)left);
		if (err == -ETIMEDOUT)
			break;
		ASSERT_EQ(0, err);
		if (type == DERP_FRAME_PEER_GONE && got[DERP_KEY_LEN] == DERP_PEER_GONE_NOT_HERE)
			gone++;
	}
	TH_LOG("%d NotHere for 8 disco packets", gone);
	ASSERT_EQ(3, gone);
}

TEST_F(relay, packets_arrive_in_order)
{
	uint8_t pkt[1000], got[1100], src[DERP_KEY_LEN];
	uint32_t next = 0, seen = 0;
	int64_t deadline;

	memset(pkt, 0x77, sizeof(pkt));
	for (uint32_t i = 0; i < 2000; i++) {
		memcpy(pkt, &i, sizeof(i));
		ASSERT_EQ(0, derpc_send_packet(&self->a, self->b.key.pub, pkt, sizeof(pkt)));
		/* B drains as we go so queues stay short */
		for (;;) {
			size_t n = 0;
			uint32_t seq;

			if (derpc_recv_packet(&self->b, src, got, sizeof(got), &n, 0))
				break;
			memcpy(&seq, got, sizeof(seq));
			ASSERT_LE(next, seq);
			next = seq + 1;
			seen++;
		}
	}
	deadline = derpc_now_ms() + WAIT_MS;
	while (next < 2000 && derpc_now_ms() < deadline) {
		size_t n = 0;
		uint32_t seq;

		if (derpc_recv_packet(&self->b, src, got, sizeof(got), &n, 500))
			break;
		memcpy(&seq, got, sizeof(seq));
		ASSERT_LE(next, seq);
		next = seq + 1;
		seen++;
	}
	/* derper may drop the oldest queued packets, never reorder or lose the newest */
	TH_LOG("B saw %u of 2000, in order", seen);
	ASSERT_EQ(2000, next);
}

/*
 * ClientInfo JSON the server must accept: Go's encoding/json rules (keys
 * matched case-insensitively, unknown keys ignored, anything up to 256 KiB).
 */
static int handshake_with_json(const struct derp_daemon *d, struct derpc *c, const char *json)
{
	size_t cap = strlen(json) + 256;
	uint8_t *buf = malloc(cap);
	int n, err;

	if (!buf)
		return -ENOMEM;
	err = dd_upgraded(d, c);
	if (err)
		goto out;
	n = derpc_build_client_info(&c->key, c->server_pub, json, buf, cap);
	err = n < 0 ? n : derpc_write_frame(c, DERP_FRAME_CLIENT_INFO, buf, (size_t)n, WAIT_MS);
	if (!err)
		err = derpc_read_server_info(c, WAIT_MS);
out:
	free(buf);
	return err;
}

TEST_F(relay, client_info_json_accepted)
{
	static const char *const jsons[] = {
		"{}",
		"{\"Version\":2,\"CANACKPINGS\":false}",
		" \t\n{ \"version\" : 2 ,\n \"CanAckPings\" : true } \n",
		"{\"version\":2,\"CanAckPings\":true,\"AppName\":\"x\",\"foo\":[1,{\"y\":null}]}",
		"{\"version\":2,\"IsProber\":true,\"CanAckPings\":false}",
		/* a well-formed mesh key that is not this server's: a regular client */
		("{\"meshKey\":"
		 "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\","
		 "\"version\":2,\"CanAckPings\":true}"),
	};
	size_t pad = 200 << 10;
	char *big = malloc(pad + 64);
	struct derpc c;

	ASSERT_NE(NULL, big);
	for (size_t i = 0; i < sizeof(jsons) / sizeof(jsons[0]) + 1; i++) {
		const char *json = jsons[i < sizeof(jsons) / sizeof(jsons[0]) ? i : 0];
		int err;

		if (i == sizeof(jsons) / sizeof(jsons[0])) {
			/* 200 KiB of an unknown key: still under the 256 KiB limit */
			int n = sprintf(big, "{\"version\":2,\"pad\":\"");

			memset(big + n, 'p', pad);
			strcpy(big + n + pad, "\"}");
			json = big;
		}
		err = handshake_with_json(&self->d, &c, json);
		if (err)
			TH_LOG("json %zu: %s", i, strerror(-err));
		ASSERT_EQ(0, err);
		ASSERT_STREQ("{\"version\":2}", c.server_info);
		ASSERT_LE(0, dd_relay_once(&c, &self->a, WAIT_MS));
		derpc_close(&c);
	}
	free(big);
}

TEST_F(relay, boundary_sizes_are_accepted)
{
	uint8_t ping[1000], got[64], src[DERP_KEY_LEN], v;
	size_t n = 9;

	/* NotePreferred 0, 1 and any non-zero byte: fine, connection stays */
	for (v = 0; v < 3; v++)
		ASSERT_EQ(0,
			  derpc_write_frame(&self->a, DERP_FRAME_NOTE_PREFERRED, &v, 1, WAIT_MS));
	/* the largest allowed ping */
	randombytes_buf(ping, sizeof(ping));
	ASSERT_EQ(0, derpc_write_frame(&self->a, DERP_FRAME_PING, ping, sizeof(ping), WAIT_MS));
	ASSERT_EQ(0, recv_type(&self->a, DERP_FRAME_PONG, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(8, n);
	ASSERT_EQ(0, memcmp(got, ping, 8));
	/* a SendPacket of just the key: an empty packet is relayed */
	ASSERT_EQ(0, derpc_send_packet(&self->a, self->b.key.pub, NULL, 0));
	ASSERT_EQ(0, derpc_recv_packet(&self->b, src, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(0, n);
	ASSERT_EQ(0, memcmp(src, self->a.key.pub, DERP_KEY_LEN));
}

TEST_F(relay, client_frames_split_bytewise)
{
	uint8_t frame[DERP_FRAME_HEADER_LEN + DERP_KEY_LEN + 40], got[64], src[DERP_KEY_LEN];
	size_t n = 0;

	derpc_put_header(frame, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + 40);
	memcpy(frame + DERP_FRAME_HEADER_LEN, self->b.key.pub, DERP_KEY_LEN);
	randombytes_buf(frame + DERP_FRAME_HEADER_LEN + DERP_KEY_LEN, 40);
	for (size_t i = 0; i < sizeof(frame); i++) {
		ASSERT_EQ(0, derpc_write_raw(&self->a, frame + i, 1, WAIT_MS));
		usleep(1000);
	}
	ASSERT_EQ(0, derpc_recv_packet(&self->b, src, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(40, n);
	ASSERT_EQ(0, memcmp(got, frame + DERP_FRAME_HEADER_LEN + DERP_KEY_LEN, 40));
}

TEST_F(relay, many_frames_in_one_write)
{
	enum { N = 30, PLEN = 100, FLEN = DERP_FRAME_HEADER_LEN + DERP_KEY_LEN + PLEN };
	uint8_t buf[N * FLEN], got[PLEN + 8], src[DERP_KEY_LEN];

	for (int i = 0; i < N; i++) {
		uint8_t *f = buf + i * FLEN;

		derpc_put_header(f, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + PLEN);
		memcpy(f + DERP_FRAME_HEADER_LEN, self->b.key.pub, DERP_KEY_LEN);
		memset(f + DERP_FRAME_HEADER_LEN + DERP_KEY_LEN, i, PLEN);
	}
	ASSERT_EQ(0, derpc_write_raw(&self->a, buf, sizeof(buf), WAIT_MS));
	for (int i = 0; i < N; i++) {
		size_t n = 0;

		ASSERT_EQ(0, derpc_recv_packet(&self->b, src, got, sizeof(got), &n, WAIT_MS));
		ASSERT_EQ(PLEN, n);
		ASSERT_EQ(i, got[0]);
		ASSERT_EQ(i, got[PLEN - 1]);
	}
}

struct key_flood {
	struct derpc *from;
	const uint8_t *to;
	volatile bool stop;
	int err;
};

static void *key_flood_loop(void *arg)
{
	struct key_flood *f = arg;
	uint8_t pkt[100];

	memset(pkt, 0x33, sizeof(pkt));
	while (!f->stop && !f->err) {
		f->err = derpc_send_packet(f->from, f->to, pkt, sizeof(pkt));
		usleep(100);
	}
	return NULL;
}

/*
 * Packets aimed at a key while it (re)connects: ServerInfo is still the
 * first frame after ServerKey, every time.
 */
TEST_F(relay, server_info_first_under_traffic)
{
	struct derpc_keypair k;
	struct key_flood f = {0};
	struct derpc_opts o;
	pthread_t th;
	int got_packets = 0;

	derpc_keygen(&k);
	dd_opts(&self->d, &o);
	f.from = &self->a;
	f.to = k.pub;
	ASSERT_EQ(0, pthread_create(&th, NULL, key_flood_loop, &f));
	for (int i = 0; i < 40; i++) {
		uint8_t got[128], src[DERP_KEY_LEN];
		struct derpc c;
		size_t n;
		int err;

		derpc_init(&c, &k);
		err = derpc_connect(&c, &o); /* fails unless ServerInfo comes first */
		if (err)
			TH_LOG("connect %d: %s", i, strerror(-err));
		EXPECT_EQ(0, err);
		if (!err && derpc_recv_packet(&c, src, got, sizeof(got), &n, 1000) == 0)
			got_packets++;
		derpc_close(&c);
		if (_metadata->failed)
			break;
	}
	f.stop = true;
	pthread_join(th, NULL);
	TH_LOG("%d of 40 connections then received a packet", got_packets);
	ASSERT_EQ(0, f.err);
	ASSERT_LT(0, got_packets);
}

#define RING 100

/* 100 clients in a ring: each sends to the next and hears from the previous. */
TEST_F(relay, ring_of_100_clients)
{
	struct derpc *c = calloc(RING, sizeof(*c));

	ASSERT_NE(NULL, c);
	for (int i = 0; i < RING; i++)
		ASSERT_EQ(0, dd_connect(&self->d, &c[i]));
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < RING; i++) {
			uint8_t pkt[8] = {(uint8_t)round, (uint8_t)i};

			ASSERT_EQ(0,
				  derpc_send_packet(&c[i], c[(i + 1) % RING].key.pub, pkt,
						    sizeof(pkt)));
		}
		for (int i = 0; i < RING; i++) {
			int prev = (i + RING - 1) % RING;
			uint8_t got[16], src[DERP_KEY_LEN];
			size_t n = 0;

			ASSERT_EQ(0, derpc_recv_packet(&c[i], src, got, sizeof(got), &n, WAIT_MS));
			ASSERT_EQ(8, n);
			ASSERT_EQ(round, got[0]);
			ASSERT_EQ(prev, got[1]);
			ASSERT_EQ(0, memcmp(src, c[prev].key.pub, DERP_KEY_LEN));
		}
	}
	for (int i = 0; i < RING; i++)
		derpc_close(&c[i]);
	free(c);
}

/* ---- plain HTTP endpoints ---- */

static int http_get(struct __test_metadata *_metadata, const struct derp_daemon *d,
		    const char *method, const char *path, const char *headers,
		    struct derpc_http_resp *r)
{
	struct derpc_opts o;
	char req[1024];

	dd_opts(d, &o);
	snprintf(req, sizeof(req),
		 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n%sConnection: close\r\n\r\n", method,
		 path, d->port, headers ? headers : "");
	return derpc_http_request(&o, req, r);
}

TEST_F(relay, derp_without_upgrade_is_426)
{
	struct derpc_http_resp r;
	char v[128];

	ASSERT_EQ(0, http_get(_metadata, &self->d, "GET", "/derp", NULL, &r));
	EXPECT_EQ(426, r.status);
	EXPECT_STREQ("DERP requires connection upgrade\n", r.body);
	EXPECT_EQ(0, derpc_http_header(r.head, "Content-Type", v, sizeof(v)));
	EXPECT_STREQ("text/plain; charset=utf-8", v);
	EXPECT_EQ(0, derpc_http_header(r.head, "X-Content-Type-Options", v, sizeof(v)));
	EXPECT_STREQ("nosniff", v);
	derpc_http_resp_free(&r);
}

TEST_F(relay, probe_endpoints)
{
	static const char *const paths[] = {"/derp/probe", "/derp/latency-check"};
	struct derpc_http_resp r;
	char v[64];

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		ASSERT_EQ(0, http_get(_metadata, &self->d, "GET", paths[i], NULL, &r));
		EXPECT_EQ(200, r.status);
		EXPECT_EQ(0, r.body_len);
		EXPECT_EQ(0,
			  derpc_http_header(r.head, "Access-Control-Allow-Origin", v, sizeof(v)));
		EXPECT_STREQ("*", v);
		derpc_http_resp_free(&r);
		ASSERT_EQ(0, http_get(_metadata, &self->d, "HEAD", paths[i], NULL, &r));
		EXPECT_EQ(200, r.status);
		derpc_http_resp_free(&r);
		ASSERT_EQ(0,
			  http_get(_metadata, &self->d, "POST", paths[i], "Content-Length: 0\r\n",
				   &r));
		EXPECT_EQ(405, r.status);
		EXPECT_STREQ("bogus probe method\n", r.body);
		derpc_http_resp_free(&r);
	}
}

TEST_F(relay, generate_204_challenge)
{
	static const struct {
		const char *challenge; /* NULL: no header */
		bool answered;
	} cases[] = {
		{NULL, false},
		{"ts_127.0.0.1", true},
		{"A-Za-z0-9._:-", true},
		{"bad challenge", false},
		{"bad/slash", false},
		{"0123456789012345678901234567890123456789012345678901234567890123", true},
		{"01234567890123456789012345678901234567890123456789012345678901234", false},
	};
	struct derpc_http_resp r;
	char hdr[256], v[256], want[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		hdr[0] = 0;
		if (cases[i].challenge)
			snprintf(hdr, sizeof(hdr), "X-Tailscale-Challenge: %s\r\n",
				 cases[i].challenge);
		ASSERT_EQ(0, http_get(_metadata, &self->d, "GET", "/generate_204", hdr, &r));
		EXPECT_EQ(204, r.status);
		EXPECT_EQ(0, r.body_len);
		EXPECT_EQ(0, derpc_http_header(r.head, "Cache-Control", v, sizeof(v)));
		EXPECT_STREQ("no-cache, no-store, must-revalidate, no-transform, max-age=0", v);
		if (cases[i].answered) {
			snprintf(want, sizeof(want), "response %s", cases[i].challenge);
			EXPECT_EQ(0,
				  derpc_http_header(r.head, "X-Tailscale-Response", v, sizeof(v)));
			EXPECT_STREQ(want, v);
		} else {
			EXPECT_EQ(-ENOENT,
				  derpc_http_header(r.head, "X-Tailscale-Response", v, sizeof(v)));
		}
		if (_metadata->failed)
			TH_LOG("case %zu: challenge %s", i,
			       cases[i].challenge ? cases[i].challenge : "(none)");
		derpc_http_resp_free(&r);
		ASSERT_FALSE(_metadata->failed);
	}
}

TEST_F(relay, unknown_path_is_home_page)
{
	static const char *const paths[] = {"/", "/no/such/page", "/derp/", "/derp/foo"};
	struct derpc_http_resp r;
	char v[512];

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		ASSERT_EQ(0, http_get(_metadata, &self->d, "GET", paths[i], NULL, &r));
		if (r.status != 200)
			TH_LOG("%s: status %d", paths[i], r.status);
		EXPECT_EQ(200, r.status);
		EXPECT_LT(0, r.body_len);
		/* browser security headers on the home page */
		EXPECT_EQ(0, derpc_http_header(r.head, "X-Frame-Options", v, sizeof(v)));
		EXPECT_STREQ("DENY", v);
		EXPECT_EQ(0, derpc_http_header(r.head, "X-Content-Type-Options", v, sizeof(v)));
		EXPECT_STREQ("nosniff", v);
		EXPECT_EQ(0, derpc_http_header(r.head, "Content-Security-Policy", v, sizeof(v)));
		derpc_http_resp_free(&r);
	}
}

/* ---- both transports: the basics again, and the largest frames ---- */

TEST_F(relay, relay_and_ping)
{
	static const uint8_t data[8] = {8, 7, 6, 5, 4, 3, 2, 1};
	uint8_t got[16];
	size_t n = 0;

	/* the connection is on the variant's transport */
	ASSERT_EQ(variant->tls, derpc_ssl(&self->a) != NULL);
	ASSERT_STREQ("{\"version\":2}", self->a.server_info);
	ASSERT_LE(0, dd_relay_once(&self->a, &self->b, WAIT_MS));
	ASSERT_LE(0, dd_relay_once(&self->b, &self->a, WAIT_MS));
	ASSERT_EQ(0, derpc_ping(&self->a, data));
	ASSERT_EQ(0, recv_type(&self->a, DERP_FRAME_PONG, got, sizeof(got), &n, WAIT_MS));
	ASSERT_EQ(0, memcmp(got, data, 8));
}

TEST_F(relay, largest_packets_both_ways)
{
	size_t big = DERP_MAX_PACKET_SIZE, n = 0;
	uint8_t *p = malloc(big), *q = malloc(big);
	uint8_t src[DERP_KEY_LEN];

	ASSERT_NE(NULL, p);
	ASSERT_NE(NULL, q);
	for (int i = 0; i < 8; i++) {
		struct derpc *from = i & 1 ? &self->b : &self->a;
		struct derpc *to = i & 1 ? &self->a : &self->b;

		randombytes_buf(p, big);
		ASSERT_EQ(0, derpc_send_packet(from, to->key.pub, p, big));
		ASSERT_EQ(0, derpc_recv_packet(to, src, q, big, &n, WAIT_MS));
		ASSERT_EQ(big, n);
		ASSERT_EQ(0, memcmp(src, from->key.pub, DERP_KEY_LEN));
		ASSERT_EQ(0, memcmp(p, q, big));
	}
	free(p);
	free(q);
}

/* ---- TLS only ---- */

TEST_F(relay, wrong_ca_is_refused)
{
	struct derp_daemon other = {0};
	char missing[300];
	struct derpc_opts o;
	struct derpc c;
	int err;

	if (!variant->tls)
		SKIP(return, "TLS only: the plain server has no certificate");
	/* an unreadable CA file fails that connect only, not the others in this thread */
	dd_opts(&self->d, &o);
	snprintf(missing, sizeof(missing), "%s/missing.crt", self->d.dir);
	o.ca_file = missing;
	derpc_init(&c, NULL);
	EXPECT_EQ(-EINVAL, derpc_connect(&c, &o));
	ASSERT_LE(0, dd_relay_once(&self->a, &self->b, WAIT_MS));
	/* trusting another server's self-signed certificate must fail verification */
	other.tls = true;
	ASSERT_EQ(0, dd_start(&other, NULL));
	dd_opts(&self->d, &o);
	o.ca_file = other.crt_path;
	derpc_init(&c, NULL);
	err = derpc_connect(&c, &o);
	dd_stop(&other);
	EXPECT_NE(0, err);
	/* the server's own certificate is fine, with and without verification */
	dd_opts(&self->d, &o);
	derpc_init(&c, NULL);
	EXPECT_EQ(0, derpc_connect(&c, &o));
	derpc_close(&c);
	o.ca_file = NULL;
	derpc_init(&c, NULL);
	EXPECT_EQ(0, derpc_connect(&c, &o));
	derpc_close(&c);
	/* and a plain HTTP client on the TLS port gets nowhere, the server lives on */
	dd_opts(&self->d, &o);
	o.tls = false;
	derpc_init(&c, NULL);
	ASSERT_EQ(0, derpc_dial(&c, &o));
	ASSERT_EQ(0, derpc_send_upgrade(&c, &o));
	EXPECT_NE(0, derpc_read_upgrade(&c, WAIT_MS));
	derpc_close(&c);
	ASSERT_TRUE(dd_alive(&self->d));
	ASSERT_LE(0, dd_relay_once(&self->a, &self->b, WAIT_MS));
}

TEST_HARNESS_MAIN
