// SPDX-License-Identifier: MIT
/*
 * test_state.c - the state plane (Documentation/bpf-abi.md): pinned peer
 * records and counters against a real kderpd and real clients, checked three
 * ways (bpftool, the maps themselves, /debug/varz) plus kderpctl; the same
 * varz numbers without BPF; pin lifetime (unpinned on a clean exit, stale
 * pins replaced, a second daemon refused); kderpctl's errors.
 * test_state_api.c covers the counters API itself.
 *
 * BPF cases need root and a bpffs at /sys/fs/bpf; they SKIP otherwise.
 */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <bpf/bpf.h>
#include <jansson.h>
#include <sodium.h>

#include "derp_daemon.h"
#include "derpc.h"
#include "harness.h"
#include "bpffs.h"

#include "kderp_abi.h"

#define WAIT_MS 3000
#define NPKTS 200
#define PKT_LEN 300

/* A fresh pin directory name (not created); bpffs names take no dots. */
static void pin_dir(char *out, size_t len, const char *tag)
{
	static int seq;

	snprintf(out, len, "/sys/fs/bpf/kderp-test-%s-%d-%d", tag, (int)getpid(), seq++);
}

static bool path_exists(const char *dir, const char *name)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

/* Remove what a failed case may have left in a pin directory. */
static void remove_pins(const char *dir)
{
	static const char *const names[] = {KDERP_PIN_STATE_META, KDERP_PIN_PEERS,
					    KDERP_PIN_PEER_STATS, KDERP_PIN_STATS};
	char p[512];

	if (!dir[0])
		return;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

/* Run a shell command, return its exit status and stdout (malloc'd). */
static int run(const char *cmd, char **out)
{
	char buf[4096];
	size_t n, len = 0;
	FILE *f = popen(cmd, "r");
	char *s = NULL;
	int st;

	if (!f)
		return -1;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		char *t = realloc(s, len + n + 1);

		if (!t)
			break;
		s = t;
		memcpy(s + len, buf, n);
		len += n;
		s[len] = 0;
	}
	st = pclose(f);
	if (out)
		*out = s ? s : strdup("");
	else
		free(s);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void key_hex(const uint8_t *k, char out[65])
{
	derpc_key_hex(k, out);
}

/* GET /debug/varz; the value of the first line starting with @metric + ' '. */
static long long varz_get(const struct derp_daemon *d, const char *metric)
{
	struct derpc_opts o;
	struct derpc_http_resp r = {0};
	long long v = -1;
	size_t ml = strlen(metric);

	dd_opts(d, &o);
	if (derpc_http_request(
		    &o, "GET /debug/varz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &r))
		return -1;
	for (char *l = r.body; l && *l;) {
		char *nl = strchr(l, '\n');

		if (strncmp(l, metric, ml) == 0 && l[ml] == ' ') {
			v = strtoll(l + ml + 1, NULL, 10);
			break;
		}
		l = nl ? nl + 1 : NULL;
	}
	derpc_http_resp_free(&r);
	return v;
}

/* Wait until @metric reads @want (counters are updated after the write). */
static long long varz_wait(const struct derp_daemon *d, const char *metric, long long want)
{
	long long v = -1;

	for (int i = 0; i < 100; i++) {
		v = varz_get(d, metric);
		if (v == want)
			break;
		usleep(20000);
	}
	return v;
}

static int kderpctl_path(char *out, size_t len)
{
	const char *o = getenv("KDERP_OUTPUT");

	snprintf(out, len, "%s/kderpctl", o && *o ? o : ".output");
	return access(out, X_OK) ? -ENOENT : 0;
}

/* bpftool -j map dump of the peers map: the entry whose key is @key, or NULL.
 */
static json_t *bpftool_peer(const char *dir, const uint8_t *key, json_t **all)
{
	char cmd[512], *out = NULL;
	json_error_t je;
	json_t *arr, *e, *found = NULL;
	size_t i;

	snprintf(cmd, sizeof(cmd), "bpftool -j map dump pinned %s/%s 2>&1", dir, KDERP_PIN_PEERS);
	if (run(cmd, &out) != 0) {
		printf("# bpftool: %s\n", out);
		free(out);
		return NULL;
	}
	arr = json_loads(out, 0, &je);
	free(out);
	if (!json_is_array(arr)) {
		json_decref(arr);
		return NULL;
	}
	json_array_foreach(arr, i, e)
	{
		/* bpftool -j puts the BTF view of an entry under "formatted" */
		json_t *f = json_object_get(e, "formatted") ?: e;
		json_t *k = json_object_get(json_object_get(f, "key"), "key");
		size_t j;
		json_t *b;
		int match = json_array_size(k) == DERP_KEY_LEN;

		json_array_foreach(k, j, b)
		{
			long long v = json_is_integer(b) ? json_integer_value(b)
				: json_is_string(b)	 ? strtoll(json_string_value(b), NULL, 0)
							 : -1;

			if (v != key[j])
				match = 0;
		}
		if (match)
			found = json_object_get(f, "value");
	}
	*all = arr;
	return found;
}

static long long jint(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* ---- relay counters, with and without BPF ---- */

FIXTURE(state)
{
	struct derp_daemon d;
	struct derpc a, b;
	char dir[200];
	char nobpf[200];
};

FIXTURE_VARIANT(state)
{
	bool bpf;
};

FIXTURE_VARIANT_ADD(state, bpf){
	.bpf = true,
};

FIXTURE_VARIANT_ADD(state, memory){
	.bpf = false,
};

FIXTURE_SETUP(state)
{
	char arg[260], why[100], line[1100];
	const char *extra[3] = {arg, "--varz-peers", NULL};

	derpc_init(&self->a, NULL);
	derpc_init(&self->b, NULL);
	if (variant->bpf) {
		if (!have_bpffs(why, sizeof(why)))
			SKIP(return, "%s", why);
		pin_dir(self->dir, sizeof(self->dir), "relay");
		snprintf(arg, sizeof(arg), "--bpffs-dir=%s", self->dir);
	} else {
		/* A directory that is not on bpffs: kderpd must fall back. */
		snprintf(self->nobpf, sizeof(self->nobpf), "/tmp/kderp-state.XXXXXX");
		ASSERT_NE(NULL, mkdtemp(self->nobpf));
		snprintf(arg, sizeof(arg), "--bpffs-dir=%s", self->nobpf);
	}
	dd_setup(_metadata, &self->d, extra);
	if (variant->bpf &&
	    !dd_log_line(&self->d, 0, "maps pinned", NULL, line, sizeof(line), 3000)) {
		dd_dump_log(&self->d, 10);
		SKIP(return, "kderpd could not load the state maps here (see its log)");
	}
	dd_client(_metadata, &self->d, &self->a);
	dd_client(_metadata, &self->d, &self->b);
}

FIXTURE_TEARDOWN(state)
{
	derpc_close(&self->a);
	derpc_close(&self->b);
	dd_teardown(_metadata, &self->d);
	remove_pins(self->dir);
	if (self->nobpf[0])
		rmdir(self->nobpf);
}

/* A sends exactly NPKTS packets to B and B reads them all. */
static int send_n(struct derpc *a, struct derpc *b)
{
	uint8_t pkt[PKT_LEN], got[PKT_LEN + 16], src[DERP_KEY_LEN];
	size_t n;

	for (int i = 0; i < NPKTS; i++) {
		randombytes_buf(pkt, sizeof(pkt));
		pkt[0] = 0; /* not disco */
		if (derpc_send_packet(a, b->key.pub, pkt, sizeof(pkt)))
			return -EIO;
	}
	for (int i = 0; i < NPKTS; i++) {
		if (derpc_recv_packet(b, src, got, sizeof(got), &n, WAIT_MS))
			return -ETIMEDOUT;
		if (n != PKT_LEN || memcmp(src, a->key.pub, DERP_KEY_LEN))
			return -EBADMSG;
	}
	return 0;
}

TEST_F(state, exact_counts_everywhere)
{
	char m[200], ha[65], hb[65];
	struct derpc q;

	key_hex(self->a.key.pub, ha);
	key_hex(self->b.key.pub, hb);
	ASSERT_EQ(0, send_n(&self->a, &self->b));

	/* /debug/varz: global and per-peer series (--varz-peers). */
	EXPECT_EQ(NPKTS, varz_wait(&self->d, "derp_packets_received", NPKTS));
	EXPECT_EQ(NPKTS, varz_wait(&self->d, "derp_packets_sent", NPKTS));
	EXPECT_EQ(NPKTS * PKT_LEN, varz_get(&self->d, "derp_bytes_received"));
	EXPECT_EQ(NPKTS * PKT_LEN, varz_get(&self->d, "derp_bytes_sent"));
	EXPECT_EQ(2, varz_get(&self->d, "derp_current_connections"));
	EXPECT_EQ(variant->bpf ? 1 : 0, varz_get(&self->d, "kderp_state_bpf"));
	snprintf(m, sizeof(m), "kderp_peer_packets_in{peer=\"%.16s\",conn=\"1\"}", ha);
	if (varz_get(&self->d, m) < 0) /* conn numbers depend on the readiness probe */
		snprintf(m, sizeof(m), "kderp_peer_packets_in{peer=\"%.16s\",conn=\"2\"}", ha);
	EXPECT_EQ(NPKTS, varz_get(&self->d, m));

	/* Handshakes, and failures by cause: one client leaves before ClientInfo. */
	EXPECT_EQ(2, varz_get(&self->d, "derp_handshakes"));
	ASSERT_EQ(0, dd_upgraded(&self->d, &q));
	derpc_close(&q);
	EXPECT_EQ(1, varz_wait(&self->d, "derp_handshake_failures_closed", 1));
	EXPECT_EQ(1, varz_get(&self->d, "derp_handshake_failures"));
	EXPECT_EQ(0, varz_get(&self->d, "derp_handshake_failures_client_info"));
	EXPECT_EQ(2, varz_get(&self->d, "derp_handshakes"));
}

TEST_F(state, maps_show_peers_and_counters)
{
	char ha[65], hb[65], cmd[700], ctl[300], *out = NULL;
	struct kderp_peer_stats ps, zero = {0};
	struct kderp_peer_info pb;
	json_t *all_a = NULL, *all_b = NULL, *va, *vb, *addr, *j;
	struct kderp_peer_info pa;
	struct kderp_worker_stats row, sum = {0};
	int pfd, sfd, stfd;
	__u32 slot_b, k0 = 0;
	struct sockaddr_in la;
	socklen_t sl = sizeof(la);

	if (!variant->bpf)
		SKIP(return, "no maps without BPF");
	key_hex(self->a.key.pub, ha);
	key_hex(self->b.key.pub, hb);
	ASSERT_EQ(0, send_n(&self->a, &self->b));
	ASSERT_EQ(NPKTS, varz_wait(&self->d, "derp_packets_sent", NPKTS));

	/* bpftool prints both keys with named fields (BTF). */
	/* Each dump owns the entry it returns: keep both until both are read. */
	va = bpftool_peer(self->dir, self->a.key.pub, &all_a);
	ASSERT_NE(NULL, va);
	vb = bpftool_peer(self->dir, self->b.key.pub, &all_b);
	ASSERT_NE(NULL, vb);
	ASSERT_EQ(0, getsockname(derpc_fd(&self->a), (struct sockaddr *)&la, &sl));
	EXPECT_EQ(ntohs(la.sin_port), jint(va, "port"));
	EXPECT_EQ(KDERP_TLS_PLAIN, jint(va, "tls_mode"));
	EXPECT_EQ(0, jint(va, "flags"));
	EXPECT_EQ(1, jint(va, "nr_conns"));
	EXPECT_NE(KDERP_SLOT_NONE, jint(va, "slot"));
	EXPECT_NE(jint(va, "slot"), jint(vb, "slot"));
	addr = json_object_get(va, "addr");
	{
		ASSERT_EQ(16, json_array_size(addr));
		EXPECT_EQ(0xff, json_integer_value(json_array_get(addr, 10)));
		EXPECT_EQ(127, json_integer_value(json_array_get(addr, 12)));
		EXPECT_EQ(1, json_integer_value(json_array_get(addr, 15)));
	}
	json_decref(all_a);
	json_decref(all_b);

	/* The counters, read from the pinned arrays. */
	snprintf(cmd, sizeof(cmd), "%s/%s", self->dir, KDERP_PIN_PEERS);
	pfd = bpf_obj_get(cmd);
	snprintf(cmd, sizeof(cmd), "%s/%s", self->dir, KDERP_PIN_PEER_STATS);
	sfd = bpf_obj_get(cmd);
	snprintf(cmd, sizeof(cmd), "%s/%s", self->dir, KDERP_PIN_STATS);
	stfd = bpf_obj_get(cmd);
	ASSERT_LE(0, pfd);
	ASSERT_LE(0, sfd);
	ASSERT_LE(0, stfd);
	sum.c[0] = 0;
	{
		ASSERT_EQ(0, bpf_map_lookup_elem(pfd, self->a.key.pub, &pa));
		ASSERT_EQ(0, bpf_map_lookup_elem(sfd, &pa.slot, &ps));
		EXPECT_EQ(NPKTS, ps.pkts_in); /* A sent them */
		EXPECT_EQ(NPKTS * PKT_LEN, ps.bytes_in);
		EXPECT_EQ(0, ps.pkts_out);
		for (__u32 w = 0; bpf_map_lookup_elem(stfd, &w, &row) == 0; w++)
			sum.c[KDERP_CTR_PACKETS_RECEIVED] += row.c[KDERP_CTR_PACKETS_RECEIVED];
		EXPECT_EQ(NPKTS, sum.c[KDERP_CTR_PACKETS_RECEIVED]);
	}
	ASSERT_EQ(0, bpf_map_lookup_elem(pfd, self->b.key.pub, &pb));
	slot_b = pb.slot;
	ASSERT_EQ(0, bpf_map_lookup_elem(sfd, &slot_b, &ps));
	EXPECT_EQ(NPKTS, ps.pkts_out); /* B got them */
	EXPECT_EQ(NPKTS * PKT_LEN, ps.bytes_out);
	EXPECT_EQ(0, ps.pkts_in);

	/* kderpctl lists both, and shows A's numbers. */
	if (kderpctl_path(ctl, sizeof(ctl)) == 0) {
		snprintf(cmd, sizeof(cmd), "%s --bpffs-dir %s peers", ctl, self->dir);
		EXPECT_EQ(0, run(cmd, &out));
		EXPECT_NE(NULL, strstr(out, (ha[16] = 0, ha)));
		EXPECT_NE(NULL, strstr(out, (hb[16] = 0, hb)));
		free(out);
		key_hex(self->a.key.pub, ha);
		snprintf(cmd, sizeof(cmd), "%s --bpffs-dir %s --json peer %s", ctl, self->dir, ha);
		EXPECT_EQ(0, run(cmd, &out));
		j = json_loads(out, 0, NULL);
		{
			EXPECT_EQ(NPKTS, jint(j, "packets_in"));
			EXPECT_EQ(NPKTS * PKT_LEN, jint(j, "bytes_in"));
			json_decref(j);
		}
		free(out);
	} else {
		TH_LOG("kderpctl not built: its part is not checked");
	}

	/* B leaves: gone from the map, slot cleared, folded into the totals. */
	derpc_close(&self->b);
	for (int i = 0; i < 150 && bpf_map_lookup_elem(pfd, self->b.key.pub, &pb) == 0; i++)
		usleep(20000);
	EXPECT_NE(0, bpf_map_lookup_elem(pfd, self->b.key.pub, &pb));
	ASSERT_EQ(0, bpf_map_lookup_elem(sfd, &slot_b, &ps));
	EXPECT_EQ(0, memcmp(&ps, &zero, sizeof(ps)));
	ASSERT_EQ(0, bpf_map_lookup_elem(sfd, &k0, &ps));
	EXPECT_EQ(NPKTS, ps.pkts_out);
	EXPECT_EQ(NPKTS * PKT_LEN, ps.bytes_out);
	EXPECT_EQ(0, bpf_map_lookup_elem(pfd, self->a.key.pub, &pb));
	close(pfd);
	close(sfd);
	close(stfd);
}

TEST_F(state, note_preferred_and_close_peer)
{
	char ctl[300], cmd[700], ha[65], *out = NULL;
	struct kderp_peer_info pa;
	int pfd;

	if (!variant->bpf)
		SKIP(return, "no maps without BPF");
	if (kderpctl_path(ctl, sizeof(ctl)))
		SKIP(return, "kderpctl not built");
	snprintf(cmd, sizeof(cmd), "%s/%s", self->dir, KDERP_PIN_PEERS);
	pfd = bpf_obj_get(cmd);
	ASSERT_LE(0, pfd);
	ASSERT_EQ(0, derpc_note_preferred(&self->a, true));
	for (int i = 0; i < 100; i++) {
		if (bpf_map_lookup_elem(pfd, self->a.key.pub, &pa) == 0 &&
		    (pa.flags & KDERP_PEER_PREFERRED))
			break;
		usleep(20000);
	}
	ASSERT_EQ(0, bpf_map_lookup_elem(pfd, self->a.key.pub, &pa));
	EXPECT_EQ(KDERP_PEER_PREFERRED, pa.flags & KDERP_PEER_PREFERRED);

	/* close-peer by a unique prefix, through the control socket */
	key_hex(self->a.key.pub, ha);
	ha[12] = 0;
	snprintf(cmd, sizeof(cmd), "%s --bpffs-dir %s close-peer %s 2>&1", ctl, self->dir, ha);
	EXPECT_EQ(0, run(cmd, &out));
	out[strcspn(out, "\n")] = 0;
	TH_LOG("kderpctl: %s", out);
	free(out);
	EXPECT_EQ(0, derpc_wait_closed(&self->a, WAIT_MS));
	for (int i = 0; i < 100 && bpf_map_lookup_elem(pfd, self->a.key.pub, &pa) == 0; i++)
		usleep(20000);
	EXPECT_NE(0, bpf_map_lookup_elem(pfd, self->a.key.pub, &pa));
	close(pfd);
}

/* Two connections with one key: one entry, flagged, that survives either close. */
TEST_F(state, duplicate_key_entry)
{
	struct derpc a2;
	struct derpc_opts o;
	struct kderp_peer_info pa;
	char path[300];
	uint64_t first;
	int pfd;

	if (!variant->bpf)
		SKIP(return, "no maps without BPF");
	snprintf(path, sizeof(path), "%s/%s", self->dir, KDERP_PIN_PEERS);
	pfd = bpf_obj_get(path);
	ASSERT_LE(0, pfd);
	ASSERT_EQ(0, bpf_map_lookup_elem(pfd, self->a.key.pub, &pa));
	first = pa.conn_id;
	EXPECT_EQ(1, pa.nr_conns);

	dd_opts(&self->d, &o);
	derpc_init(&a2, &self->a.key);
	ASSERT_EQ(0, derpc_connect(&a2, &o));
	for (int i = 0; i < 100; i++) {
		if (bpf_map_lookup_elem(pfd, self->a.key.pub, &pa) == 0 && pa.nr_conns == 2)
			break;
		usleep(20000);
	}
	EXPECT_EQ(2, pa.nr_conns);
	EXPECT_EQ(KDERP_PEER_DUP, pa.flags & KDERP_PEER_DUP);
	EXPECT_NE(first, pa.conn_id); /* the newest is active */

	/* The newer one leaves: the entry now describes the first, alone. */
	derpc_close(&a2);
	for (int i = 0; i < 100; i++) {
		if (bpf_map_lookup_elem(pfd, self->a.key.pub, &pa) == 0 && pa.nr_conns == 1)
			break;
		usleep(20000);
	}
	ASSERT_EQ(0, bpf_map_lookup_elem(pfd, self->a.key.pub, &pa));
	EXPECT_EQ(1, pa.nr_conns);
	EXPECT_EQ(first, pa.conn_id);
	EXPECT_EQ(0, pa.flags & KDERP_PEER_DUP);
	close(pfd);
}

/* ---- pin lifetime ---- */

/*
 * The listener opens before the maps are pinned: wait (up to 3 s) for the
 * daemon to say it pinned them, or to exit.
 */
static bool wait_pinned(const struct derp_daemon *d)
{
	char line[1100];

	for (int i = 0; i < 150; i++) {
		if (dd_log_line(d, 0, "maps pinned", NULL, line, sizeof(line), 0))
			return true;
		if (!dd_alive(d))
			return false;
		usleep(20000);
	}
	return false;
}

static int start_on(struct derp_daemon *d, const char *dir)
{
	char arg[260];
	const char *extra[2] = {arg, NULL};
	int err;

	memset(d, 0, sizeof(*d));
	snprintf(arg, sizeof(arg), "--bpffs-dir=%s", dir);
	err = dd_start(d, extra);
	/* A refused daemon may still have answered dd_start's probe. */
	if (!err && !wait_pinned(d) && !dd_alive(d))
		err = -ECHILD;
	return err;
}

TEST(unpinned_on_clean_exit)
{
	struct derp_daemon d;
	char dir[200], why[100];

	if (!have_bpffs(why, sizeof(why)))
		SKIP(return, "%s", why);
	pin_dir(dir, sizeof(dir), "clean");
	ASSERT_EQ(0, start_on(&d, dir));
	if (!path_exists(dir, KDERP_PIN_STATE_META)) {
		dd_stop(&d);
		SKIP(return, "kderpd could not load the state maps here");
	}
	EXPECT_TRUE(path_exists(dir, KDERP_PIN_PEERS));
	EXPECT_TRUE(path_exists(dir, KDERP_PIN_STATS));
	kill(d.pid, SIGTERM);
	for (int i = 0; i < 250 && dd_alive(&d); i++)
		usleep(20000);
	EXPECT_FALSE(path_exists(dir, KDERP_PIN_STATE_META));
	EXPECT_FALSE(path_exists(dir, KDERP_PIN_PEERS));
	EXPECT_FALSE(path_exists(dir, KDERP_PIN_PEER_STATS));
	EXPECT_FALSE(path_exists(dir, KDERP_PIN_STATS));
	EXPECT_NE(0, access(dir, F_OK)); /* the empty directory goes too */
	dd_stop(&d);
}

TEST(second_daemon_refused_stale_pins_replaced)
{
	struct derp_daemon d1, d2;
	char dir[200], why[100], line[1100], ctl[300], cmd[600], *out = NULL;
	struct kderp_state_meta m;
	__u32 k = 0;
	int fd;

	if (!have_bpffs(why, sizeof(why)))
		SKIP(return, "%s", why);
	pin_dir(dir, sizeof(dir), "owner");
	ASSERT_EQ(0, start_on(&d1, dir));
	if (!path_exists(dir, KDERP_PIN_STATE_META)) {
		dd_stop(&d1);
		SKIP(return, "kderpd could not load the state maps here");
	}

	/* A live owner: the second daemon exits with a clear message. */
	EXPECT_EQ(-ECHILD, start_on(&d2, dir));
	EXPECT_TRUE(dd_log_line(&d2, 0, "in use by kderpd pid", NULL, line, sizeof(line), 1000));
	TH_LOG("second daemon: %s", line);
	dd_stop(&d2);
	EXPECT_TRUE(dd_alive(&d1));

	/* A crash leaves the pins; kderpctl says nobody is there. */
	kill(d1.pid, SIGKILL);
	waitpid(d1.pid, NULL, 0);
	d1.pid = 0;
	EXPECT_TRUE(path_exists(dir, KDERP_PIN_STATE_META));
	if (kderpctl_path(ctl, sizeof(ctl)) == 0) {
		snprintf(cmd, sizeof(cmd), "%s --bpffs-dir %s peers 2>&1", ctl, dir);
		EXPECT_EQ(1, run(cmd, &out));
		EXPECT_NE(NULL, strstr(out, "no kderpd is running"));
		free(out);
	}

	/* The next daemon replaces them and owns the directory. */
	ASSERT_EQ(0, start_on(&d2, dir));
	EXPECT_TRUE(dd_log_line(&d2, 0, "replacing stale pins", NULL, line, sizeof(line), 1000));
	snprintf(cmd, sizeof(cmd), "%s/%s", dir, KDERP_PIN_STATE_META);
	fd = bpf_obj_get(cmd);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, bpf_map_lookup_elem(fd, &k, &m));
	EXPECT_EQ(d2.pid, (pid_t)m.owner_pid);
	EXPECT_EQ(KDERP_STATE_VERSION, m.version);
	close(fd);
	dd_stop(&d2);
	dd_stop(&d1);
	EXPECT_FALSE(path_exists(dir, KDERP_PIN_STATE_META));
	remove_pins(dir);
}

TEST(kderpctl_errors)
{
	char ctl[300], cmd[700], dir[200], why[100], path[300], *out = NULL;
	struct kderp_state_meta m = {.magic = KDERP_ABI_MAGIC, .version = KDERP_STATE_VERSION + 7};
	__u32 k = 0;
	int fd;

	if (kderpctl_path(ctl, sizeof(ctl)))
		SKIP(return, "kderpctl not built");
	/* Nothing pinned there. */
	snprintf(cmd, sizeof(cmd), "%s --bpffs-dir /sys/fs/bpf/kderp-test-none-%d stats 2>&1", ctl,
		 (int)getpid());
	EXPECT_EQ(1, run(cmd, &out));
	EXPECT_NE(NULL, strstr(out, "no kderpd is running"));
	free(out);
	snprintf(cmd, sizeof(cmd), "%s frobnicate 2>&1", ctl);
	EXPECT_EQ(2, run(cmd, &out));
	free(out);

	/* Maps of another ABI version. */
	if (!have_bpffs(why, sizeof(why)))
		SKIP(return, "%s", why);
	pin_dir(dir, sizeof(dir), "abi");
	ASSERT_EQ(0, mkdir(dir, 0700));
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "kd_meta_v1", 4, sizeof(m), 1, NULL);
	ASSERT_LE(0, fd);
	m.owner_pid = (__u32)getpid();
	ASSERT_EQ(0, bpf_map_update_elem(fd, &k, &m, BPF_ANY));
	snprintf(path, sizeof(path), "%s/%s", dir, KDERP_PIN_STATE_META);
	ASSERT_EQ(0, bpf_obj_pin(fd, path));
	close(fd);
	snprintf(cmd, sizeof(cmd), "%s --bpffs-dir %s peers 2>&1", ctl, dir);
	EXPECT_EQ(1, run(cmd, &out));
	EXPECT_NE(NULL, strstr(out, "ABI version differs"));
	free(out);
	unlink(path);
	rmdir(dir);
}

TEST_HARNESS_MAIN
