// SPDX-License-Identifier: MIT
/*
 * test_badinput.c - hostile and broken clients must not hurt the relay.
 *
 * Every test starts its own server (lib/derp_daemon.h) with two healthy clients
 * A and B already relaying, sends one kind of bad input on another
 * connection, and then checks that
 *   (a) the offending connection is closed (EOF or reset) within a deadline,
 *   (b) A still relays to B, and two clients connected afterwards relay too,
 *   (c) the server process is still alive.
 * Resource tests also bound the server's RSS and open file descriptors.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <sodium.h>

#include "harness.h"
#include "derpc.h"
#include "derp_daemon.h"

#define CLOSE_DEADLINE_MS 5000 /* protocol errors close at once; allow slack */
#define SETUP_DEADLINE_MS 11500 /* the 10 s setup deadline plus slack */
#define RELAY_DEADLINE_MS 2000

struct env {
	struct derp_daemon d;
	struct derpc a, b;
};

/*
 * One fixture for every case: a server with A and B relaying. The test names
 * say which layer a case attacks: http_*, client_info_*, frame_*, load_*.
 */
FIXTURE(badinput)
{
	struct env e;
};

FIXTURE_SETUP(badinput)
{
	struct env *e = &self->e;

	derpc_init(&e->a, NULL);
	derpc_init(&e->b, NULL);
	dd_setup(_metadata, &e->d, NULL);
	dd_client(_metadata, &e->d, &e->a);
	dd_client(_metadata, &e->d, &e->b);
	ASSERT_LE(0, dd_relay_once(&e->a, &e->b, RELAY_DEADLINE_MS));
}

FIXTURE_TEARDOWN(badinput)
{
	derpc_close(&self->e.a);
	derpc_close(&self->e.b);
	dd_teardown(_metadata, &self->e.d);
}

/* (b) and (c): the old pair, a new pair, and the process are all fine. */
static void check_healthy(struct __test_metadata *_metadata, struct env *e)
{
	struct derpc c, d;
	int ms;

	ASSERT_TRUE(dd_alive(&e->d));
	ms = dd_relay_once(&e->a, &e->b, RELAY_DEADLINE_MS);
	ASSERT_LE(0, ms);
	ms = dd_relay_once(&e->b, &e->a, RELAY_DEADLINE_MS);
	ASSERT_LE(0, ms);
	derpc_init(&c, NULL);
	derpc_init(&d, NULL);
	ASSERT_EQ(0, dd_connect(&e->d, &c));
	ASSERT_EQ(0, dd_connect(&e->d, &d));
	ms = dd_relay_once(&c, &d, RELAY_DEADLINE_MS);
	EXPECT_LE(0, ms);
	ms = dd_relay_once(&e->a, &d, RELAY_DEADLINE_MS);
	EXPECT_LE(0, ms);
	derpc_close(&c);
	derpc_close(&d);
	ASSERT_TRUE(dd_alive(&e->d));
}

/*
 * Write bytes the server may refuse half-way: a reset or broken pipe is an
 * acceptable outcome (the server closed), anything else is not.
 */
static int write_tolerant(struct derpc *c, const void *buf, size_t len, int timeout_ms)
{
	int err = derpc_write_raw(c, buf, len, timeout_ms);

	return err == -ECONNRESET || err == -EPIPE ? 0 : err;
}

/*
 * The server must say in its log why it dropped the connection from addr
 * (kderpd: "conn N close: ADDR ...: reason"): a line with the address and
 * "close"/"closing"; the reason's wording stays free.
 */
static void check_logged(struct __test_metadata *_metadata, struct env *e, long since,
			 const char *addr)
{
	char line[1024];

	if (!e->d.is_kderpd)
		return; /* other servers word and filter their logs their own way */
	if (!dd_log_line(&e->d, since, addr, "clos", line, sizeof(line), 2000)) {
		TH_LOG("no log line about closing the connection from %s", addr);
		ASSERT_TRUE(false);
	}
	TH_LOG("log: %s", line);
}

/* ---- HTTP layer ---- */

/* Read a whole response head (or nothing) and the close; the status or 0. */
static int read_status_then_close(struct __test_metadata *_metadata, struct derpc *c,
				  int timeout_ms)
{
	int64_t deadline = derpc_now_ms() + timeout_ms;
	int err = derpc_read_upgrade(c, timeout_ms);
	int status = c->http_status;

	if (err == -ETIMEDOUT) {
		TH_LOG("no response and no close within %d ms", timeout_ms);
		return -ETIMEDOUT;
	}
	if (err == -ECONNRESET)
		return 0;
	/* a complete head: must not be a success, then the server must close */
	err = derpc_wait_closed(c, (int)(deadline - derpc_now_ms()));
	if (err) {
		TH_LOG("answered %d but did not close", status);
		return err;
	}
	return status;
}

TEST_F(badinput, http_not_http)
{
	uint8_t junk[4096];
	struct derpc c;
	char addr[32];
	long log0;
	int st;

	/* a TLS ClientHello-like start, then random bytes and line ends */
	randombytes_buf(junk, sizeof(junk));
	memcpy(junk, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
	memcpy(junk + 2048, "\r\n\r\n", 4);
	memcpy(junk + sizeof(junk) - 4, "\r\n\r\n", 4);
	log0 = dd_log_size(&self->e.d);
	ASSERT_EQ(0, dd_dial(&self->e.d, &c));
	dd_local_addr(&c, addr, sizeof(addr));
	ASSERT_EQ(0, write_tolerant(&c, junk, sizeof(junk), 5000));
	st = read_status_then_close(_metadata, &c, SETUP_DEADLINE_MS);
	derpc_close(&c);
	ASSERT_LE(0, st);
	if (st)
		ASSERT_EQ(4, st / 100);
	check_logged(_metadata, &self->e, log0, addr);
	check_healthy(_metadata, &self->e);
}

TEST_F(badinput, http_long_request_line)
{
	size_t len = 100 << 10;
	char *req = malloc(len + 256);
	struct derpc c;
	char addr[32];
	long log0;
	int st, n;

	ASSERT_NE(NULL, req);
	n = sprintf(req, "GET /");
	memset(req + n, 'a', len);
	n += (int)len;
	n += sprintf(req + n, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
	log0 = dd_log_size(&self->e.d);
	ASSERT_EQ(0, dd_dial(&self->e.d, &c));
	dd_local_addr(&c, addr, sizeof(addr));
	ASSERT_EQ(0, write_tolerant(&c, req, (size_t)n, SETUP_DEADLINE_MS));
	free(req);
	st = read_status_then_close(_metadata, &c, SETUP_DEADLINE_MS);
	derpc_close(&c);
	ASSERT_LE(0, st);
	if (st)
		ASSERT_EQ(4, st / 100);
	check_logged(_metadata, &self->e, log0, addr);
	check_healthy(_metadata, &self->e);
}

static const char huge_head_start[] = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\n";

/* GET /derp followed by 1 MiB of headers; returns the status (0: closed). */
static int send_huge_headers(struct __test_metadata *_metadata, struct env *e)
{
	const size_t total = 1 << 20;
	char line[1024];
	struct derpc c;
	size_t sent = 0;
	int err = 0, st, i = 0;

	if (dd_dial(&e->d, &c))
		return -ECONNREFUSED;
	derpc_write_raw(&c, huge_head_start, sizeof(huge_head_start) - 1, 1000);
	while (sent < total && !err) {
		int n = snprintf(line, sizeof(line), "X-Pad-%d: ", i++);

		memset(line + n, 'p', sizeof(line) - (size_t)n - 2);
		memcpy(line + sizeof(line) - 2, "\r\n", 2);
		err = derpc_write_raw(&c, line, sizeof(line), SETUP_DEADLINE_MS);
		sent += sizeof(line);
	}
	if (!err)
		err = derpc_write_raw(&c, "\r\n", 2, 1000);
	if (err && err != -ECONNRESET && err != -EPIPE) {
		TH_LOG("writing headers: %s after %zu bytes", strerror(-err), sent);
		derpc_close(&c);
		return err;
	}
	st = read_status_then_close(_metadata, &c, SETUP_DEADLINE_MS);
	derpc_close(&c);
	return st;
}

TEST_F(badinput, http_huge_headers)
{
	long rss0, rss1;
	int st;

	st = send_huge_headers(_metadata, &self->e); /* warm-up */
	ASSERT_LE(0, st);
	if (st)
		ASSERT_EQ(4, st / 100);
	rss0 = dd_rss_kb(&self->e.d);
	for (int i = 0; i < 6; i++) {
		st = send_huge_headers(_metadata, &self->e);
		ASSERT_LE(0, st);
		if (st)
			ASSERT_EQ(4, st / 100);
	}
	usleep(200000);
	rss1 = dd_rss_kb(&self->e.d);
	TH_LOG("RSS %ld kB -> %ld kB after 6 x 1 MiB of headers", rss0, rss1);
	ASSERT_LT(0, rss0);
	ASSERT_GT(dd_rss_slack_kb(&self->e.d, 4096), rss1 - rss0);
	check_healthy(_metadata, &self->e);
}

/*
 * Slow clients: n connections each send one more byte of msg per second.
 * All of them must be closed within the setup deadline; the healthy pair
 * keeps relaying meanwhile.
 */
#define SLOW_CONNS 20

static void slowloris(struct __test_metadata *_metadata, struct env *e, bool after_upgrade)
{
	static const char http_req[] = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: "
				       "Upgrade\r\nUpgrade: DERP\r\n\r\n";
	uint8_t ci[DERP_FRAME_HEADER_LEN + 256];
	struct derpc c[SLOW_CONNS];
	int64_t start[SLOW_CONNS], closed_at[SLOW_CONNS];
	const uint8_t *msg;
	size_t msg_len;
	int64_t t0, worst = 0;
	long rss0, rss1, log0;
	char addr0[32];
	int open_n = SLOW_CONNS;

	rss0 = dd_rss_kb(&e->d);
	log0 = dd_log_size(&e->d);
	for (int i = 0; i < SLOW_CONNS; i++) {
		if (after_upgrade)
			ASSERT_EQ(0, dd_upgraded(&e->d, &c[i]));
		else
			ASSERT_EQ(0, dd_dial(&e->d, &c[i]));
		start[i] = derpc_now_ms();
		if (i == 0)
			dd_local_addr(&c[0], addr0, sizeof(addr0));
		closed_at[i] = -1;
	}
	if (after_upgrade) {
		int n = derpc_build_client_info(&c[0].key, c[0].server_pub, DERPC_CLIENT_INFO_JSON,
						ci + DERP_FRAME_HEADER_LEN,
						sizeof(ci) - DERP_FRAME_HEADER_LEN);

		ASSERT_LT(0, n);
		derpc_put_header(ci, DERP_FRAME_CLIENT_INFO, (uint32_t)n);
		msg = ci;
		msg_len = DERP_FRAME_HEADER_LEN + (size_t)n;
	} else {
		msg = (const uint8_t *)http_req;
		msg_len = sizeof(http_req) - 1;
	}
	t0 = derpc_now_ms();
	for (int sec = 0; open_n && sec < 14 && (size_t)sec < msg_len; sec++) {
		for (int i = 0; i < SLOW_CONNS; i++) {
			if (closed_at[i] >= 0)
				continue;
			if (derpc_write_raw(&c[i], msg + sec, 1, 500)) {
				closed_at[i] = derpc_now_ms();
				open_n--;
			}
		}
		if (sec == 5)
			ASSERT_LE(0, dd_relay_once(&e->a, &e->b, RELAY_DEADLINE_MS));
		while (open_n && derpc_now_ms() < t0 + (sec + 1) * 1000) {
			for (int i = 0; i < SLOW_CONNS; i++) {
				if (closed_at[i] >= 0)
					continue;
				if (derpc_wait_closed(&c[i], 0) == 0) {
					closed_at[i] = derpc_now_ms();
					open_n--;
				}
			}
			usleep(20000);
		}
	}
	for (int i = 0; i < SLOW_CONNS; i++) {
		int64_t took = closed_at[i] < 0 ? -1 : closed_at[i] - start[i];

		if (took < 0 || took > worst)
			worst = took < 0 ? INT64_MAX : took;
		derpc_close(&c[i]);
	}
	TH_LOG("%d slow connections, still open: %d, slowest close after %lld ms", SLOW_CONNS,
	       open_n, worst == INT64_MAX ? -1LL : (long long)worst);
	ASSERT_EQ(0, open_n);
	ASSERT_GE(SETUP_DEADLINE_MS, worst);
	rss1 = dd_rss_kb(&e->d);
	ASSERT_GT(dd_rss_slack_kb(&e->d, 4096), rss1 - rss0);
	check_logged(_metadata, e, log0, addr0);
	check_healthy(_metadata, e);
}

TEST_F_TIMEOUT(badinput, http_slowloris_request, 40)
{
	slowloris(_metadata, &self->e, false);
}

TEST_F_TIMEOUT(badinput, http_slowloris_client_info, 40)
{
	slowloris(_metadata, &self->e, true);
}

/* ---- ClientInfo ---- */

enum ci_kind {
	CI_GARBAGE_BOX,
	CI_WRONG_KEY,
	CI_TRUNCATED,
	CI_TOO_BIG,
	CI_LEN_MAX,
	CI_ZERO_KEY,
	CI_LOW_ORDER_KEY,
	CI_BAD_JSON,
	CI_EMPTY_MESH_KEY,
	CI_NOT_CLIENT_INFO,
	CI_SHORT,
	CI_JSON, /* the case's JSON, sealed correctly */
	CI_DEEP_JSON, /* 100,000 nested arrays */
};

/* A Curve25519 point of order 8: X25519 with it gives the all-zero secret. */
static const uint8_t low_order_point[DERP_KEY_LEN] = {
	0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
	0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
	0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
};

/*
 * A box that opens for a server that does not reject low-order keys: the
 * shared secret is all zeros, so the box key is HSalsa20(0, 0).
 */
static size_t seal_with_zero_secret(uint8_t *out, const char *json)
{
	static const uint8_t zero32[32], zero16[16];
	uint8_t k[crypto_box_BEFORENMBYTES];
	uint8_t *nonce = out + DERP_KEY_LEN;
	size_t jlen = strlen(json);

	memcpy(out, low_order_point, DERP_KEY_LEN);
	randombytes_buf(nonce, DERP_NONCE_LEN);
	crypto_core_hsalsa20(k, zero16, zero32, NULL);
	crypto_box_easy_afternm(nonce + DERP_NONCE_LEN, (const uint8_t *)json, jlen, nonce, k);
	return DERP_KEY_LEN + DERP_NONCE_LEN + DERP_BOX_OVERHEAD + jlen;
}

struct ci_case {
	enum ci_kind kind;
	const char *json;
};

/* A bad ClientInfo (or none) after the upgrade: closed, logged, nobody else hurt. */
static void client_info_closes(struct __test_metadata *_metadata, struct env *e,
			       const struct ci_case *v)
{
	enum ci_kind kind = v->kind;
	size_t cap = 300 << 10;
	uint8_t *buf = malloc(DERP_FRAME_HEADER_LEN + cap);
	uint8_t *p = buf + DERP_FRAME_HEADER_LEN;
	struct derpc_keypair other;
	char *deep;
	uint32_t hdr_len;
	size_t len = 0;
	struct derpc c;
	char addr[32];
	long log0;
	int n, err;

	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, dd_upgraded(&e->d, &c));
	log0 = dd_log_size(&e->d);
	dd_local_addr(&c, addr, sizeof(addr));
	switch (kind) {
	case CI_JSON:
		n = derpc_build_client_info(&c.key, c.server_pub, v->json, p, cap);
		ASSERT_LT(0, n);
		len = (size_t)n;
		break;
	case CI_DEEP_JSON:
		deep = malloc(200001);
		ASSERT_NE(NULL, deep);
		memset(deep, '[', 100000);
		memset(deep + 100000, ']', 100000);
		deep[200000] = 0;
		n = derpc_build_client_info(&c.key, c.server_pub, deep, p, cap);
		ASSERT_LT(0, n);
		len = (size_t)n;
		free(deep);
		break;
	case CI_GARBAGE_BOX:
		n = derpc_build_client_info(&c.key, c.server_pub, DERPC_CLIENT_INFO_JSON, p, cap);
		ASSERT_LT(0, n);
		p[n - 5] ^= 0x40; /* flip a ciphertext bit: the tag no longer matches */
		len = (size_t)n;
		break;
	case CI_WRONG_KEY:
		/* claims key A but is sealed with B's private key */
		derpc_keygen(&other);
		memcpy(other.pub, c.key.pub, DERP_KEY_LEN);
		n = derpc_build_client_info(&other, c.server_pub, DERPC_CLIENT_INFO_JSON, p, cap);
		ASSERT_LT(0, n);
		len = (size_t)n;
		break;
	case CI_TRUNCATED:
	case CI_TOO_BIG:
	case CI_LEN_MAX:
		n = derpc_build_client_info(&c.key, c.server_pub, DERPC_CLIENT_INFO_JSON, p, cap);
		ASSERT_LT(0, n);
		len = (size_t)n;
		break;
	case CI_ZERO_KEY:
		memset(p, 0, DERP_KEY_LEN);
		randombytes_buf(p + DERP_KEY_LEN, DERP_NONCE_LEN + DERP_BOX_OVERHEAD + 32);
		len = DERP_KEY_LEN + DERP_NONCE_LEN + DERP_BOX_OVERHEAD + 32;
		break;
	case CI_LOW_ORDER_KEY:
		len = seal_with_zero_secret(p, DERPC_CLIENT_INFO_JSON);
		break;
	case CI_BAD_JSON:
		n = derpc_build_client_info(&c.key, c.server_pub, "{\"version\":2,", p, cap);
		ASSERT_LT(0, n);
		len = (size_t)n;
		break;
	case CI_EMPTY_MESH_KEY:
		n = derpc_build_client_info(&c.key, c.server_pub,
					    "{\"meshKey\":\"\",\"version\":2,\"CanAckPings\":true}",
					    p, cap);
		ASSERT_LT(0, n);
		len = (size_t)n;
		break;
	case CI_NOT_CLIENT_INFO:
		/* a well-formed SendPacket where ClientInfo must come */
		memcpy(p, e->b.key.pub, DERP_KEY_LEN);
		memset(p + DERP_KEY_LEN, 0x55, 16);
		len = DERP_KEY_LEN + 16;
		break;
	case CI_SHORT:
		memcpy(p, c.key.pub, DERP_KEY_LEN);
		randombytes_buf(p + DERP_KEY_LEN, 23);
		len = DERP_KEY_LEN + 23;
		break;
	}
	hdr_len = (uint32_t)len;
	if (kind == CI_TRUNCATED)
		hdr_len = (uint32_t)len + 40;
	else if (kind == CI_TOO_BIG)
		hdr_len = DERP_MAX_CLIENT_INFO_LEN + 1;
	else if (kind == CI_LEN_MAX)
		hdr_len = 0xffffffffu;
	derpc_put_header(
		buf, kind == CI_NOT_CLIENT_INFO ? DERP_FRAME_SEND_PACKET : DERP_FRAME_CLIENT_INFO,
		hdr_len);
	err = write_tolerant(&c, buf, DERP_FRAME_HEADER_LEN + len, 2000);
	ASSERT_EQ(0, err);
	if (kind == CI_TRUNCATED) {
		/* fewer bytes than announced, then our side is done */
		ASSERT_EQ(0, shutdown(derpc_fd(&c), SHUT_WR));
	} else if (kind == CI_TOO_BIG) {
		/* keep feeding the announced 256 KiB + 1: the server must not wait for it */
		uint8_t *fill = calloc(1, DERP_MAX_CLIENT_INFO_LEN + 1);

		ASSERT_NE(NULL, fill);
		err = write_tolerant(&c, fill, DERP_MAX_CLIENT_INFO_LEN + 1 - len, 3000);
		free(fill);
		if (err != -ETIMEDOUT)
			ASSERT_EQ(0, err);
	}
	err = derpc_wait_closed(&c, CLOSE_DEADLINE_MS);
	if (err == -ETIMEDOUT)
		TH_LOG("connection still open after %d ms: the server accepted or ignored it",
		       CLOSE_DEADLINE_MS);
	derpc_close(&c);
	free(buf);
	ASSERT_EQ(0, err);
	check_logged(_metadata, e, log0, addr);
	check_healthy(_metadata, e);
}

/* One test per bad ClientInfo: badinput.client_info_NAME. */
#define CLIENT_INFO_CASE(name_, ...)                           \
	TEST_F(badinput, client_info_##name_)                  \
	{                                                      \
		static const struct ci_case c = {__VA_ARGS__}; \
		client_info_closes(_metadata, &self->e, &c);   \
	}

CLIENT_INFO_CASE(garbage_box, .kind = CI_GARBAGE_BOX)
CLIENT_INFO_CASE(wrong_key, .kind = CI_WRONG_KEY)
CLIENT_INFO_CASE(truncated, .kind = CI_TRUNCATED)
CLIENT_INFO_CASE(over_256k, .kind = CI_TOO_BIG)
CLIENT_INFO_CASE(len_ffffffff, .kind = CI_LEN_MAX)
CLIENT_INFO_CASE(zero_key, .kind = CI_ZERO_KEY)
CLIENT_INFO_CASE(low_order_key, .kind = CI_LOW_ORDER_KEY)
CLIENT_INFO_CASE(bad_json, .kind = CI_BAD_JSON)
CLIENT_INFO_CASE(empty_mesh_key, .kind = CI_EMPTY_MESH_KEY)
CLIENT_INFO_CASE(not_client_info, .kind = CI_NOT_CLIENT_INFO)
CLIENT_INFO_CASE(under_56, .kind = CI_SHORT)
CLIENT_INFO_CASE(json_string_version, .kind = CI_JSON,
		 .json = "{\"version\":\"2\",\"CanAckPings\":true}")
CLIENT_INFO_CASE(json_trailing_garbage, .kind = CI_JSON,
		 .json = "{\"version\":2,\"CanAckPings\":true} x")
CLIENT_INFO_CASE(json_array, .kind = CI_JSON, .json = "[2,true]")
CLIENT_INFO_CASE(json_mesh_key_short, .kind = CI_JSON,
		 .json = "{\"meshKey\":\"badf00d\",\"version\":2,\"CanAckPings\":true}")
CLIENT_INFO_CASE(json_mesh_key_null, .kind = CI_JSON,
		 .json = "{\"meshKey\":null,\"version\":2,\"CanAckPings\":true}")
CLIENT_INFO_CASE(json_deep_nesting, .kind = CI_DEEP_JSON)

/* ---- frames after the handshake ---- */

/* A frame a regular client may not send, or with a bad length: closed, logged. */
static void frame_closes(struct __test_metadata *_metadata, struct env *e, uint8_t type,
			 uint32_t len)
{
	uint8_t *payload = calloc(1, len + 1);
	struct derpc x;
	char addr[32];
	long log0;
	int err;

	ASSERT_NE(NULL, payload);
	log0 = dd_log_size(&e->d);
	ASSERT_EQ(0, dd_connect(&e->d, &x));
	dd_local_addr(&x, addr, sizeof(addr));
	/* address B where a key goes, so a wrongly accepted frame would touch it */
	if (len >= DERP_KEY_LEN)
		memcpy(payload, e->b.key.pub, DERP_KEY_LEN);
	if (type == DERP_FRAME_FORWARD_PACKET) {
		memcpy(payload, x.key.pub, DERP_KEY_LEN);
		memcpy(payload + DERP_KEY_LEN, e->b.key.pub, DERP_KEY_LEN);
	}
	if (type == DERP_FRAME_NOTE_PREFERRED && len)
		memset(payload, 1, len);
	err = derpc_write_frame(&x, type, payload, len, 3000);
	free(payload);
	ASSERT_TRUE(err == 0 || err == -ECONNRESET);
	err = derpc_wait_closed(&x, CLOSE_DEADLINE_MS);
	derpc_close(&x);
	ASSERT_EQ(0, err);
	check_logged(_metadata, e, log0, addr);
	check_healthy(_metadata, e);
}

/* One test per bad frame: badinput.frame_NAME. */
#define FRAME_CASE(name_, type_, len_)                          \
	TEST_F(badinput, frame_##name_)                         \
	{                                                       \
		frame_closes(_metadata, &self->e, type_, len_); \
	}

FRAME_CASE(send_packet_31, DERP_FRAME_SEND_PACKET, 31)
FRAME_CASE(send_packet_65569, DERP_FRAME_SEND_PACKET, 65569)
FRAME_CASE(note_preferred_0, DERP_FRAME_NOTE_PREFERRED, 0)
FRAME_CASE(note_preferred_2, DERP_FRAME_NOTE_PREFERRED, 2)
FRAME_CASE(ping_7, DERP_FRAME_PING, 7)
FRAME_CASE(ping_1001, DERP_FRAME_PING, 1001)
FRAME_CASE(watch_conns_not_mesh, DERP_FRAME_WATCH_CONNS, 0)
FRAME_CASE(close_peer_not_mesh, DERP_FRAME_CLOSE_PEER, 32)
FRAME_CASE(forward_packet_not_mesh, DERP_FRAME_FORWARD_PACKET, 64 + 100)

/* ---- resource exhaustion ---- */

/*
 * Probe whether key is registered: a disco packet to an unknown key makes
 * the server answer PeerGone(key, NotHere). Returns ms until that happened,
 * or -ETIMEDOUT.
 */
static int peer_gone_not_here(struct env *e, const uint8_t key[DERP_KEY_LEN], int timeout_ms)
{
	int64_t t0 = derpc_now_ms(), deadline = t0 + timeout_ms;
	uint8_t disco[DERP_DISCO_MIN_LEN], got[64];
	struct derpc p;
	int ret = -ETIMEDOUT;

	if (dd_connect(&e->d, &p))
		return -ECONNREFUSED;
	while (ret < 0 && derpc_now_ms() < deadline) {
		int64_t until = derpc_now_ms() + 1000; /* NotHere is limited to 1/s */

		derpc_fill_disco(disco, sizeof(disco));
		if (derpc_send_packet(&p, key, disco, sizeof(disco)))
			break;
		while (derpc_now_ms() < until) {
			uint8_t type;
			size_t n = 0;

			if (derpc_recv_frame(&p, &type, got, sizeof(got), &n,
					     (int)(until - derpc_now_ms())))
				break;
			if (type == DERP_FRAME_PEER_GONE && n >= DERP_KEY_LEN + 1 &&
			    !memcmp(got, key, DERP_KEY_LEN) && got[DERP_KEY_LEN] == 1) {
				ret = (int)(derpc_now_ms() - t0);
				break;
			}
		}
	}
	derpc_close(&p);
	return ret;
}

#define FLOOD_PACKETS 40000
#define FLOOD_SIZE 1200
#define FLOOD_MAX_RTT_MS 500
#define FLOOD_MAX_GROWTH_KB (8 << 10)

/*
 * R connects and never reads; S sends it 48 MB. The server may queue only
 * a few dozen packets per receiver, so its RSS must stay far below what was
 * sent, and A->B must keep flowing with a short delay all along.
 */
struct flooder {
	struct derpc *s;
	const uint8_t *dst;
	int sent;
	int err;
	volatile bool done;
};

static void *flood_loop(void *arg)
{
	struct flooder *f = arg;
	uint8_t pkt[FLOOD_SIZE];
	int64_t t0 = derpc_now_ms();

	randombytes_buf(pkt, sizeof(pkt));
	for (; f->sent < FLOOD_PACKETS && derpc_now_ms() - t0 < 60000; f->sent++) {
		f->err = derpc_send_packet(f->s, f->dst, pkt, sizeof(pkt));
		if (f->err)
			break;
	}
	f->done = true;
	return NULL;
}

/*
 * After the flood: a packet to R every 2 ms (for at most 10 s, or until
 * stopped), so that the server always has something to write to R. Without
 * it, a kernel send buffer that grew enough to take the last queued packets
 * leaves R with nothing pending, and an idle receiver is never timed out
 * (derper's rule too: the write timeout is for writes).
 */
static void *trickle_loop(void *arg)
{
	struct flooder *f = arg;
	uint8_t pkt[FLOOD_SIZE];
	int64_t t0 = derpc_now_ms();

	randombytes_buf(pkt, sizeof(pkt));
	while (!f->done && derpc_now_ms() - t0 < 10000) {
		f->err = derpc_send_packet(f->s, f->dst, pkt, sizeof(pkt));
		if (f->err)
			break;
		f->sent++;
		usleep(2000);
	}
	return NULL;
}

TEST_F_TIMEOUT(badinput, load_receiver_never_reads, 90)
{
	struct env *e = &self->e;
	struct flooder f = {0};
	struct derpc s, r;
	long rss0, peak = 0;
	int worst = 0, checks = 0, rcvbuf = 4096, gone_ms;
	pthread_t th;
	int64_t t0;

	ASSERT_EQ(0, dd_connect(&e->d, &s));
	ASSERT_EQ(0, dd_connect(&e->d, &r));
	setsockopt(derpc_fd(&r), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	for (int i = 0; i < 20; i++)
		ASSERT_LE(0, dd_relay_once(&e->a, &e->b, RELAY_DEADLINE_MS));
	rss0 = dd_rss_kb(&e->d);
	ASSERT_LT(0, rss0);
	f.s = &s;
	f.dst = r.key.pub;
	t0 = derpc_now_ms();
	ASSERT_EQ(0, pthread_create(&th, NULL, flood_loop, &f));
	/* while the flood runs: A->B round trips and the server's RSS */
	while (!f.done) {
		int ms = dd_relay_once(&e->a, &e->b, RELAY_DEADLINE_MS);
		long rss = dd_rss_kb(&e->d);

		if (ms < 0 || ms > worst)
			worst = ms < 0 ? INT32_MAX : ms;
		if (rss > peak)
			peak = rss;
		checks++;
		usleep(5000);
	}
	pthread_join(th, NULL);
	TH_LOG("%d x %d B in %lld ms; %d A->B checks during it, worst %d ms; RSS %ld kB, "
	       "peak %ld kB (+%ld)",
	       f.sent, FLOOD_SIZE, (long long)(derpc_now_ms() - t0), checks, worst, rss0, peak,
	       peak - rss0);
	ASSERT_EQ(0, f.err);
	ASSERT_EQ(FLOOD_PACKETS, f.sent);
	ASSERT_LT(0, checks);
	EXPECT_GE(FLOOD_MAX_RTT_MS, worst);
	EXPECT_GT(dd_rss_slack_kb(&e->d, FLOOD_MAX_GROWTH_KB), peak - rss0);
	/*
	 * A receiver that blocks a write for the write timeout (2 s) is dropped:
	 * once it is, a disco packet to its key gets PeerGone(NotHere) back.
	 */
	f = (struct flooder){.s = &s, .dst = r.key.pub};
	ASSERT_EQ(0, pthread_create(&th, NULL, trickle_loop, &f));
	gone_ms = peer_gone_not_here(e, r.key.pub, 6000);
	f.done = true;
	pthread_join(th, NULL);
	TH_LOG("non-reading receiver unregistered %d ms after the flood (%d packets to it since)",
	       gone_ms, f.sent);
	EXPECT_LE(0, gone_ms);
	derpc_close(&s);
	derpc_close(&r);
	check_healthy(_metadata, e);
}

/*
 * One sender, two receivers: R reads slowly (a frame every 2 ms), B reads
 * at once. S floods R and now and then sends B a packet stamped with the
 * send time. A slow receiver must not stall its sender's other traffic
 * (derper's TestSendFreeze): B gets every packet, each within 1 s.
 */
#define SLOW_TOTAL 20000
#define SLOW_B_EVERY 100
/*
 * B's packets queue behind the flood in S's socket and the server's read
 * batch, and the reader threads compete for 2 cores: a stall caused by the
 * slow reader would last seconds (up to the 2 s write timeout).
 */
#define SLOW_MAX_DELAY_MS 1000

struct slow_reader {
	struct derpc *c;
	int burst; /* frames read between 2 ms pauses */
	volatile bool stop;
	int frames;
	/* B side */
	int want, got, worst_ms;
	int err;
};

static void *slow_read_loop(void *arg)
{
	struct slow_reader *r = arg;
	uint8_t buf[64];

	while (!r->stop) {
		uint8_t type;
		size_t n;
		int err = derpc_recv_frame(r->c, &type, buf, sizeof(buf), &n, 200);

		if (err && err != -ETIMEDOUT)
			break;
		if (!err && ++r->frames % r->burst == 0)
			usleep(2000);
	}
	return NULL;
}

static void *fast_read_loop(void *arg)
{
	struct slow_reader *r = arg;
	uint8_t buf[FLOOD_SIZE], src[DERP_KEY_LEN];

	while (r->got < r->want) {
		int64_t sent;
		size_t n = 0;
		int err = derpc_recv_packet(r->c, src, buf, sizeof(buf), &n, 3000);
		int ms;

		if (err) {
			r->err = err;
			break;
		}
		if (n < sizeof(sent))
			continue;
		memcpy(&sent, buf, sizeof(sent));
		ms = (int)(derpc_now_ms() - sent);
		if (ms > r->worst_ms)
			r->worst_ms = ms;
		r->got++;
	}
	return NULL;
}

static void slow_reader_run(struct __test_metadata *_metadata, struct env *e, int burst)
{
	struct slow_reader rs = {0}, bs = {0};
	uint8_t pkt[FLOOD_SIZE];
	pthread_t rt, bt;
	struct derpc s, r;
	int64_t t0;

	ASSERT_EQ(0, dd_connect(&e->d, &s));
	ASSERT_EQ(0, dd_connect(&e->d, &r));
	rs.c = &r;
	rs.burst = burst;
	bs.c = &e->b;
	bs.want = SLOW_TOTAL / SLOW_B_EVERY;
	ASSERT_EQ(0, pthread_create(&rt, NULL, slow_read_loop, &rs));
	ASSERT_EQ(0, pthread_create(&bt, NULL, fast_read_loop, &bs));
	memset(pkt, 0x5a, sizeof(pkt));
	t0 = derpc_now_ms();
	for (int i = 0; i < SLOW_TOTAL; i++) {
		int err;

		if (i % SLOW_B_EVERY == 0) {
			int64_t now = derpc_now_ms();

			memcpy(pkt, &now, sizeof(now));
			err = derpc_send_packet(&s, e->b.key.pub, pkt, sizeof(pkt));
		} else {
			err = derpc_send_packet(&s, r.key.pub, pkt, sizeof(pkt));
		}
		if (err) {
			TH_LOG("send %d failed: %s", i, strerror(-err));
			break;
		}
		if (derpc_now_ms() - t0 > 60000)
			break;
	}
	pthread_join(bt, NULL);
	rs.stop = true;
	pthread_join(rt, NULL);
	TH_LOG("%d packets in %lld ms; B got %d/%d, worst %d ms; R (%d per 2 ms) read %d",
	       SLOW_TOTAL, (long long)(derpc_now_ms() - t0), bs.got, bs.want, bs.worst_ms, burst,
	       rs.frames);
	derpc_close(&s);
	derpc_close(&r);
	EXPECT_EQ(bs.want, bs.got);
	EXPECT_GE(SLOW_MAX_DELAY_MS, bs.worst_ms);
	check_healthy(_metadata, e);
}

TEST_F_TIMEOUT(badinput, load_slow_reader_does_not_stall_sender, 90)
{
	slow_reader_run(_metadata, &self->e, 1);
}

/* R keeps up part of the time, so its socket is often writable */
TEST_F_TIMEOUT(badinput, load_half_speed_reader_does_not_stall_sender, 90)
{
	slow_reader_run(_metadata, &self->e, 64);
}

#define BIG_UNKNOWN (16u << 20)

/*
 * Unknown frame types have no size limit: a 16 MiB one must be skipped as
 * it streams in, not buffered, and the connection stays usable.
 */
TEST_F_TIMEOUT(badinput, load_huge_unknown_frame_is_skipped, 60)
{
	struct env *e = &self->e;
	uint8_t hdr[DERP_FRAME_HEADER_LEN], chunk[64 << 10];
	long rss0, peak = 0;
	struct derpc x;

	ASSERT_EQ(0, dd_connect(&e->d, &x));
	rss0 = dd_rss_kb(&e->d);
	ASSERT_LT(0, rss0);
	memset(chunk, 0xee, sizeof(chunk));
	derpc_put_header(hdr, 0x30, BIG_UNKNOWN);
	ASSERT_EQ(0, derpc_write_raw(&x, hdr, sizeof(hdr), 2000));
	for (size_t sent = 0; sent < BIG_UNKNOWN; sent += sizeof(chunk)) {
		long rss;

		ASSERT_EQ(0, derpc_write_raw(&x, chunk, sizeof(chunk), 5000));
		rss = dd_rss_kb(&e->d);
		if (rss > peak)
			peak = rss;
	}
	ASSERT_LE(0, dd_relay_once(&x, &e->b, RELAY_DEADLINE_MS));
	TH_LOG("16 MiB unknown frame: RSS %ld kB, peak %ld kB (+%ld)", rss0, peak, peak - rss0);
	EXPECT_GT(dd_rss_slack_kb(&e->d, 4096), peak - rss0);
	derpc_close(&x);
	check_healthy(_metadata, e);
}

#define CHURN_CONNS 5000
#define CHURN_WINDOW 32

/*
 * 5,000 connections opened and closed, some bare, some after the upgrade,
 * some after the full handshake; the server's fd count must come back.
 */
TEST_F_TIMEOUT(badinput, load_connection_churn, 90)
{
	struct env *e = &self->e;
	struct derpc ring[CHURN_WINDOW];
	int base, now = -1, peak = 0;
	int64_t t0, t1;

	for (int i = 0; i < CHURN_WINDOW; i++)
		derpc_init(&ring[i], NULL);
	base = dd_fd_count(&e->d);
	ASSERT_LT(0, base);
	t0 = derpc_now_ms();
	for (int i = 0; i < CHURN_CONNS; i++) {
		struct derpc *c = &ring[i % CHURN_WINDOW];
		int err;

		derpc_close(c);
		switch (i % 5) {
		case 0:
		case 1:
			err = dd_dial(&e->d, c);
			break;
		case 2:
		case 3:
			err = dd_upgraded(&e->d, c);
			break;
		default:
			err = dd_connect(&e->d, c);
			break;
		}
		ASSERT_EQ(0, err);
		if (i % 1000 == 999) {
			int n = dd_fd_count(&e->d);

			if (n > peak)
				peak = n;
		}
		ASSERT_GT(60000, derpc_now_ms() - t0);
	}
	for (int i = 0; i < CHURN_WINDOW; i++)
		derpc_close(&ring[i]);
	t1 = derpc_now_ms();
	for (int i = 0; i < 250; i++) {
		now = dd_fd_count(&e->d);
		if (now <= base)
			break;
		usleep(20000);
	}
	TH_LOG("%d connections in %lld ms; server fds: %d before, peak %d, %d after (%lld ms)",
	       CHURN_CONNS, (long long)(t1 - t0), base, peak, now,
	       (long long)(derpc_now_ms() - t1));
	ASSERT_GE(base, now);
	check_healthy(_metadata, e);
}

/* Close with a reset (SO_LINGER 0) instead of a FIN. */
static void reset_close(struct derpc *c)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	if (derpc_fd(c) >= 0)
		setsockopt(derpc_fd(c), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	derpc_close(c);
}

#define RESET_ROUNDS 300

static const char partial_request[] = "GET /derp HTTP/1.1\r\nHost: 1";

/*
 * Connections reset at every stage of their life: right after connect, in
 * the middle of the request, after the upgrade, in the middle of ClientInfo,
 * right after it (with a packet queued behind it), and in the middle of a
 * SendPacket. No fd may leak and the pair must keep relaying.
 */
TEST_F_TIMEOUT(badinput, load_resets_at_every_stage, 60)
{
	struct env *e = &self->e;
	uint8_t buf[DERP_FRAME_HEADER_LEN + 512], pkt[200];
	int base, now = -1;

	base = dd_fd_count(&e->d);
	ASSERT_LT(0, base);
	memset(pkt, 0x42, sizeof(pkt));
	for (int i = 0; i < RESET_ROUNDS; i++) {
		struct derpc c;
		int n;

		switch (i % 6) {
		case 0:
			ASSERT_EQ(0, dd_dial(&e->d, &c));
			break;
		case 1:
			ASSERT_EQ(0, dd_dial(&e->d, &c));
			derpc_write_raw(&c, partial_request, sizeof(partial_request) - 1, 1000);
			break;
		case 2:
			ASSERT_EQ(0, dd_upgraded(&e->d, &c));
			break;
		case 3:
		case 4:
			ASSERT_EQ(0, dd_upgraded(&e->d, &c));
			n = derpc_build_client_info(&c.key, c.server_pub, DERPC_CLIENT_INFO_JSON,
						    buf + DERP_FRAME_HEADER_LEN,
						    sizeof(buf) - DERP_FRAME_HEADER_LEN);
			ASSERT_LT(0, n);
			derpc_put_header(buf, DERP_FRAME_CLIENT_INFO, (uint32_t)n);
			if (i % 6 == 3) {
				derpc_write_raw(&c, buf, DERP_FRAME_HEADER_LEN + (size_t)n / 2,
						1000);
			} else {
				derpc_write_raw(&c, buf, DERP_FRAME_HEADER_LEN + (size_t)n, 1000);
				derpc_send_packet(&c, e->b.key.pub, pkt, sizeof(pkt));
			}
			break;
		default:
			ASSERT_EQ(0, dd_connect(&e->d, &c));
			derpc_put_header(buf, DERP_FRAME_SEND_PACKET, DERP_KEY_LEN + 100);
			memcpy(buf + DERP_FRAME_HEADER_LEN, e->b.key.pub, DERP_KEY_LEN);
			derpc_write_raw(&c, buf, DERP_FRAME_HEADER_LEN + 20, 1000);
			break;
		}
		reset_close(&c);
		if (i % 50 == 49)
			ASSERT_LE(0, dd_relay_once(&e->a, &e->b, RELAY_DEADLINE_MS));
	}
	for (int i = 0; i < 250; i++) {
		now = dd_fd_count(&e->d);
		if (now <= base)
			break;
		usleep(20000);
	}
	TH_LOG("%d resets; server fds %d before, %d after", RESET_ROUNDS, base, now);
	ASSERT_GE(base, now);
	check_healthy(_metadata, e);
}

TEST_HARNESS_MAIN
