// SPDX-License-Identifier: MIT
/*
 * test_unit.c - unit tests of kderpd's pure pieces: Go-style flags and
 * durations, ClientInfo JSON and crypto, HTTP request heads, the key file.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include <sodium.h>

#include "harness.h"

#include "derp_frame.h"
#include "derp_handshake.h"
#include "flags.h"
#include "http.h"
#include "util.h"

static bool b_flag = true, dev_flag;
static const char *s_flag = "default";
static int i_flag;
static int64_t d_flag;

static struct flag test_flags[] = {
	{"stun", FLAG_BOOL, &b_flag, ""},
	{"dev", FLAG_BOOL, &dev_flag, ""},
	{"a", FLAG_STRING, &s_flag, ""},
	{"http-port", FLAG_INT, &i_flag, ""},
	{"tcp-write-timeout", FLAG_DURATION, &d_flag, ""},
};

static int parse(int argc, char **argv)
{
	char err[256];

	return flags_parse(test_flags, ARRAY_SIZE(test_flags), argc, argv, err, sizeof(err));
}

TEST(flags_go_syntax)
{
	char *argv[] = {"kderpd",	  "--stun=false",	"-dev",	 "-a",	      ":8443",
			"--http-port=-1", "-tcp-write-timeout", "1m30s", "positional"};

	ASSERT_EQ(8, parse(ARRAY_SIZE(argv), argv));
	ASSERT_FALSE(b_flag);
	ASSERT_TRUE(dev_flag);
	ASSERT_STREQ(":8443", s_flag);
	ASSERT_EQ(-1, i_flag);
	ASSERT_EQ(90LL * 1000000000LL, d_flag);
}

TEST(flags_errors)
{
	char *unknown[] = {"kderpd", "--nope"};
	char *missing[] = {"kderpd", "-a"};
	char *badbool[] = {"kderpd", "--stun=maybe"};
	char *badint[] = {"kderpd", "--http-port=eighty"};
	char *boolspace[] = {"kderpd", "--stun", "false"};

	ASSERT_EQ(-1, parse(2, unknown));
	ASSERT_EQ(-1, parse(2, missing));
	ASSERT_EQ(-1, parse(2, badbool));
	ASSERT_EQ(-1, parse(2, badint));
	/* Go: a bool takes no separate value, "false" is the first argument. */
	b_flag = false;
	ASSERT_EQ(2, parse(3, boolspace));
	ASSERT_TRUE(b_flag);
}

TEST(durations)
{
	int64_t v;

	ASSERT_EQ(0, parse_duration_ns("15s", &v));
	ASSERT_EQ(15000000000LL, v);
	ASSERT_EQ(0, parse_duration_ns("10m0s", &v));
	ASSERT_EQ(600000000000LL, v);
	ASSERT_EQ(0, parse_duration_ns("500ms", &v));
	ASSERT_EQ(500000000LL, v);
	ASSERT_EQ(0, parse_duration_ns("1h2m3.5s", &v));
	ASSERT_EQ(3723500000000LL, v);
	ASSERT_EQ(0, parse_duration_ns("0", &v));
	ASSERT_EQ(0, v);
	ASSERT_NE(0, parse_duration_ns("15", &v));
	ASSERT_NE(0, parse_duration_ns("s", &v));
	ASSERT_NE(0, parse_duration_ns("", &v));
	ASSERT_NE(0, parse_duration_ns("5x", &v));
}

TEST(client_info_json)
{
	struct client_info ci;
	const char *why = NULL;
	char mk[200];

	memset(&ci, 0, sizeof(ci));
	ASSERT_EQ(0, derp_parse_client_info_json("{}", 2, &ci, &why));
	memset(&ci, 0, sizeof(ci));
	ASSERT_EQ(0,
		  derp_parse_client_info_json("{\"Version\":2,\"canackpings\":true,\"x\":[1]}", 40,
					      &ci, &why));
	ASSERT_EQ(2, ci.version);
	ASSERT_TRUE(ci.can_ack_pings);
	snprintf(mk, sizeof(mk), "{\"MeshKey\":\"%064d\",\"IsProber\":true}", 1);
	memset(&ci, 0, sizeof(ci));
	ASSERT_EQ(0, derp_parse_client_info_json(mk, strlen(mk), &ci, &why));
	ASSERT_TRUE(ci.has_mesh_key);
	ASSERT_TRUE(ci.is_prober);
	/* derper: 7- and 68-character mesh keys, "" and null are errors. */
	ASSERT_NE(0, derp_parse_client_info_json("{\"meshKey\":\"badf00d\"}", 21, &ci, &why));
	snprintf(mk, sizeof(mk), "{\"meshKey\":\"%068d\"}", 1);
	ASSERT_NE(0, derp_parse_client_info_json(mk, strlen(mk), &ci, &why));
	ASSERT_NE(0, derp_parse_client_info_json("{\"meshKey\":\"\"}", 14, &ci, &why));
	ASSERT_NE(0, derp_parse_client_info_json("{\"meshKey\":null}", 16, &ci, &why));
	ASSERT_NE(0, derp_parse_client_info_json("{\"version\":\"2\"}", 15, &ci, &why));
	ASSERT_NE(0, derp_parse_client_info_json("[1]", 3, &ci, &why));
	ASSERT_NE(0, derp_parse_client_info_json("{", 1, &ci, &why));
}

TEST(client_info_box)
{
	uint8_t spriv[32], spub[32], cpriv[32], cpub[32], payload[256],
		si[DERP_SERVER_INFO_FRAME_LEN];
	uint8_t plain[64];
	const char json[] = "{\"version\":2,\"CanAckPings\":true}";
	struct client_info ci;
	const char *why = NULL;
	size_t len = 32 + 24 + 16 + sizeof(json) - 1;

	ASSERT_EQ(0, sodium_init() < 0);
	derp_new_key(spriv, spub);
	derp_new_key(cpriv, cpub);
	memcpy(payload, cpub, 32);
	randombytes_buf(payload + 32, 24);
	ASSERT_EQ(0,
		  crypto_box_easy(payload + 56, (const uint8_t *)json, sizeof(json) - 1,
				  payload + 32, spub, cpriv));
	ASSERT_EQ(0, derp_open_client_info(spriv, payload, len, &ci, &why));
	ASSERT_EQ(0, memcmp(ci.key, cpub, 32));
	ASSERT_TRUE(ci.can_ack_pings);
	/* The kept shared key seals a ServerInfo the client can open. */
	ASSERT_EQ(0, derp_seal_server_info_afternm(ci.shared, si));
	ASSERT_EQ(0,
		  crypto_box_open_easy(plain, si + 5 + 24, DERP_SERVER_INFO_FRAME_LEN - 29, si + 5,
				       spub, cpriv));
	ASSERT_EQ(0, memcmp(plain, "{\"version\":2}", 13));
	/* One flipped bit: the box must not open. */
	payload[60] ^= 1;
	ASSERT_NE(0, derp_open_client_info(spriv, payload, len, &ci, &why));
	payload[60] ^= 1;
	ASSERT_NE(0, derp_open_client_info(spriv, payload, 71, &ci, &why));
	/* Zero and low-order keys are refused before any box is opened. */
	memset(payload, 0, 32);
	ASSERT_NE(0, derp_open_client_info(spriv, payload, len, &ci, &why));
	payload[0] = 1;
	ASSERT_NE(0, derp_open_client_info(spriv, payload, len, &ci, &why));
	ASSERT_STREQ("low-order client key", why);
	/* ServerInfo opens to exactly {"version":2}. */
	ASSERT_EQ(0, derp_seal_server_info(spriv, cpub, si));
	ASSERT_EQ(DERP_FRAME_SERVER_INFO, si[0]);
	ASSERT_EQ(DERP_SERVER_INFO_FRAME_LEN - 5, get_be32(si + 1));
	ASSERT_EQ(0,
		  crypto_box_open_easy(plain, si + 5 + 24, DERP_SERVER_INFO_FRAME_LEN - 29, si + 5,
				       spub, cpriv));
	ASSERT_EQ(0, memcmp(plain, "{\"version\":2}", 13));
}

TEST(http_heads)
{
	struct http_req r;
	const char req[] = "GET /derp?x=1 HTTP/1.1\r\nHost: derp1.test\r\nupgrade: DERP\r\n"
			   "Derp-Fast-Start: 1\r\nIdeal-Node: 900a\r\n\r\nAFTER";
	const char partial[] = "GET / HTTP/1.1\r\nHost: x\r\n";

	ASSERT_EQ(sizeof(req) - 1 - 5, http_head_len((const uint8_t *)req, sizeof(req) - 1));
	ASSERT_EQ(0, http_head_len((const uint8_t *)partial, sizeof(partial) - 1));
	ASSERT_EQ(0, http_parse_request((const uint8_t *)req, sizeof(req) - 1 - 5, &r));
	ASSERT_STREQ("GET", r.method);
	ASSERT_STREQ("/derp", r.path);
	ASSERT_STREQ("x=1", r.query);
	ASSERT_STREQ("DERP", r.upgrade);
	ASSERT_STREQ("1", r.fast_start);
	ASSERT_STREQ("900a", r.ideal_node);
	ASSERT_STREQ("derp1.test", r.host);
	ASSERT_EQ(1, r.http_major);
	ASSERT_EQ(1, r.http_minor);
	ASSERT_FALSE(r.has_body);
	ASSERT_NE(0, http_parse_request((const uint8_t *)"\x16\x03\x01\x00\n\n", 6, &r));
	/* Incomplete heads: still a request, or surely not one. */
	ASSERT_TRUE(http_prefix_ok((const uint8_t *)partial, sizeof(partial) - 1));
	ASSERT_TRUE(http_prefix_ok((const uint8_t *)"\r\nGE", 4));
	ASSERT_FALSE(http_prefix_ok((const uint8_t *)"\x16\x03\x01", 3));
	ASSERT_FALSE(http_prefix_ok((const uint8_t *)"GET / HTTP/9x", 13));
	ASSERT_TRUE(http_challenge_ok("ts_derp99b.tailscale.com"));
	ASSERT_FALSE(http_challenge_ok(""));
	ASSERT_FALSE(http_challenge_ok("a b"));
	ASSERT_FALSE(
		http_challenge_ok("0123456789012345678901234567890123456789012345678901234567890123"
				  "4"));
}

TEST(key_file)
{
	char dir[] = "/tmp/kderp-unit-XXXXXX", path[256];
	uint8_t priv[32], pub[32], priv2[32], pub2[32];
	struct stat st;
	char *text;
	int fd;

	ASSERT_NE(NULL, mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/sub/derper.key", dir);
	ASSERT_EQ(0, derp_load_or_create_key(path, priv, pub));
	ASSERT_EQ(0, stat(path, &st));
	ASSERT_EQ(0600, st.st_mode & 0777);
	text = read_file(path, 4096, NULL);
	ASSERT_NE(NULL, text);
	ASSERT_NE(NULL, strstr(text, "\"PrivateKey\": \"privkey:"));
	free(text);
	/* Loading again gives the same key. */
	ASSERT_EQ(0, derp_load_or_create_key(path, priv2, pub2));
	ASSERT_EQ(0, memcmp(priv, priv2, 32));
	ASSERT_EQ(0, memcmp(pub, pub2, 32));
	/* A corrupt file is an error, never silently replaced. */
	fd = open(path, O_WRONLY | O_TRUNC);
	ASSERT_LE(0, fd);
	ASSERT_EQ(5, write(fd, "{bad}", 5));
	close(fd);
	ASSERT_NE(0, derp_load_or_create_key(path, priv2, pub2));
	unlink(path);
	snprintf(path, sizeof(path), "%s/sub", dir);
	rmdir(path);
	rmdir(dir);
}

TEST_HARNESS_MAIN
