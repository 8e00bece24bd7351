// SPDX-License-Identifier: MIT
/*
 * kderpctl - look at a running kderpd through its pinned state maps
 * (Documentation/bpf-abi.md) and ask it to close a peer through its control
 * socket.
 *
 *   kderpctl [--bpffs-dir DIR] [--json] peers
 *   kderpctl [--bpffs-dir DIR] [--json] peer KEY
 *   kderpctl [--bpffs-dir DIR] [--json] stats
 *   kderpctl [--bpffs-dir DIR] [--ctl PATH] [--json] close-peer KEY
 *   kderpctl [--bpffs-dir DIR] [--ctl PATH] [--json] ping
 *
 * KEY is a public key in hex (64 digits, or a unique prefix of a connected
 * key); "nodekey:" in front is accepted. The control socket is trusted only
 * when its server is root (SO_PEERCRED) and, with the pins, their owner.
 * Exit status: 0, 1 on errors, 2 on usage errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <jansson.h>

#include "ctl_path.h"
#include "kderp_abi.h"
#include "names.h"
#include "util.h"

#define DEFAULT_DIR KDERP_PIN_DIR_DEFAULT

struct state {
	const char *dir;
	const char *ctl; /* --ctl, or NULL for the default */
	bool json;
	bool have_meta; /* the pins were read: meta.owner_pid is the daemon */
	struct kderp_state_meta meta;
	int peers_fd, slots_fd, stats_fd;
};

static int obj_get(const struct state *st, const char *name)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/%s", st->dir, name);
	return bpf_obj_get(path);
}

/* Open the pinned maps and check who wrote them. 0 or 1 (message printed). */
static int open_state(struct state *st)
{
	__u32 k = 0;
	int fd;

	fd = obj_get(st, KDERP_PIN_STATE_META);
	if (fd < 0) {
		fprintf(stderr,
			"kderpctl: no kderpd is running with its state in %s (%s: %s)\n"
			"kderpctl: start kderpd as root, or pass its --bpffs-dir\n",
			st->dir, KDERP_PIN_STATE_META, strerror(errno));
		return 1;
	}
	if (bpf_map_lookup_elem(fd, &k, &st->meta)) {
		fprintf(stderr, "kderpctl: reading %s/%s: %s\n", st->dir, KDERP_PIN_STATE_META,
			strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	if (st->meta.magic != KDERP_ABI_MAGIC || st->meta.version != KDERP_STATE_VERSION) {
		fprintf(stderr,
			"kderpctl: ABI version differs: the maps in %s are state version %u "
			"(magic 0x%04x); this kderpctl reads version %u. Use the kderpctl built "
			"with that kderpd.\n",
			st->dir, st->meta.version, st->meta.magic, (unsigned)KDERP_STATE_VERSION);
		return 1;
	}
	if (kill((pid_t)st->meta.owner_pid, 0) && errno == ESRCH) {
		fprintf(stderr, "kderpctl: no kderpd is running: pins in %s are stale (pid %u)\n",
			st->dir, st->meta.owner_pid);
		return 1;
	}
	if (st->meta.owner_start && proc_start((pid_t)st->meta.owner_pid) != st->meta.owner_start) {
		fprintf(stderr,
			"kderpctl: no kderpd is running: pins in %s are stale (pid %u is another "
			"process now)\n",
			st->dir, st->meta.owner_pid);
		return 1;
	}
	st->have_meta = true;
	st->peers_fd = obj_get(st, KDERP_PIN_PEERS);
	st->slots_fd = obj_get(st, KDERP_PIN_PEER_STATS);
	st->stats_fd = obj_get(st, KDERP_PIN_STATS);
	if (st->peers_fd < 0 || st->slots_fd < 0 || st->stats_fd < 0) {
		fprintf(stderr, "kderpctl: %s is incomplete (%s)\n", st->dir, strerror(errno));
		return 1;
	}
	return 0;
}

static void addr_str(const struct kderp_peer_info *pi, char *out, size_t len)
{
	static const __u8 v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	char ip[INET6_ADDRSTRLEN];

	if (memcmp(pi->addr, v4mapped, 12) == 0) {
		inet_ntop(AF_INET, pi->addr + 12, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, pi->port);
	} else {
		inet_ntop(AF_INET6, pi->addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, pi->port);
	}
}

static double age_s(const struct kderp_peer_info *pi)
{
	struct timespec ts;
	double now;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (double)ts.tv_sec + ts.tv_nsec / 1e9;
	return now - pi->connected_unix_ns / 1e9;
}

struct peer_row {
	struct kderp_peer_key key;
	struct kderp_peer_info info;
	struct kderp_peer_stats ps;
};

static void read_slot(const struct state *st, __u32 slot, struct kderp_peer_stats *ps)
{
	memset(ps, 0, sizeof(*ps));
	if (slot != KDERP_SLOT_NONE && slot < st->meta.nr_slots)
		bpf_map_lookup_elem(st->slots_fd, &slot, ps);
}

/* All peers; *n rows. NULL + errno on failure. */
static struct peer_row *read_peers(const struct state *st, size_t *n)
{
	struct kderp_peer_key k, next;
	struct peer_row *rows = NULL;
	size_t cap = 0;
	void *prev = NULL;

	*n = 0;
	while (bpf_map_get_next_key(st->peers_fd, prev, &next) == 0) {
		k = next;
		prev = &k;
		if (*n == cap) {
			size_t ncap = cap ? 2 * cap : 64;
			struct peer_row *r = realloc(rows, ncap * sizeof(*r));

			if (!r) {
				free(rows);
				return NULL;
			}
			rows = r;
			cap = ncap;
		}
		if (bpf_map_lookup_elem(st->peers_fd, &k, &rows[*n].info))
			continue; /* gone meanwhile */
		rows[*n].key = k;
		read_slot(st, rows[*n].info.slot, &rows[*n].ps);
		(*n)++;
	}
	if (!rows)
		rows = calloc(1, sizeof(*rows));
	return rows;
}

static json_t *peer_json(const struct peer_row *r)
{
	char k[65], a[64];
	json_t *drops = json_object();

	hex_encode(k, r->key.key, 32);
	addr_str(&r->info, a, sizeof(a));
	for (int i = 0; i < KDERP_NR_DROP_REASONS; i++)
		json_object_set_new(drops, drop_reason_names[i],
				    json_integer((json_int_t)r->ps.drops_reason[i]));
	return json_pack("{s:s, s:s, s:f, s:I, s:i, s:b, s:b, s:b, s:b, s:s, s:i, s:I, s:I, s:I, "
			 "s:I, s:I, s:o}",
			 "key", k, "addr", a, "age_s", age_s(&r->info), "conn_id",
			 (json_int_t)r->info.conn_id, "worker", r->info.worker, "preferred",
			 !!(r->info.flags & KDERP_PEER_PREFERRED), "mesh",
			 !!(r->info.flags & KDERP_PEER_MESH), "prober",
			 !!(r->info.flags & KDERP_PEER_PROBER), "dup",
			 !!(r->info.flags & KDERP_PEER_DUP), "tls", tls_mode_name(r->info.tls_mode),
			 "conns", r->info.nr_conns, "packets_in", (json_int_t)r->ps.pkts_in,
			 "bytes_in", (json_int_t)r->ps.bytes_in, "packets_out",
			 (json_int_t)r->ps.pkts_out, "bytes_out", (json_int_t)r->ps.bytes_out,
			 "drops", (json_int_t)r->ps.drops, "drops_by_reason", drops);
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(j);
}

static void peer_line(const struct peer_row *r)
{
	char k[65], a[64], fl[8];
	int n = 0;

	hex_encode(k, r->key.key, 32);
	k[16] = 0;
	addr_str(&r->info, a, sizeof(a));
	if (r->info.flags & KDERP_PEER_PREFERRED)
		fl[n++] = 'P';
	if (r->info.flags & KDERP_PEER_MESH)
		fl[n++] = 'M';
	if (r->info.flags & KDERP_PEER_PROBER)
		fl[n++] = 'R';
	if (r->info.flags & KDERP_PEER_DUP)
		fl[n++] = 'D';
	if (!n)
		fl[n++] = '-';
	fl[n] = 0;
	printf("%-16s  %-40s %8.0f  %-5s %-9s %10llu %12llu %10llu %12llu %8llu\n", k, a,
	       age_s(&r->info), fl, tls_mode_name(r->info.tls_mode),
	       (unsigned long long)r->ps.pkts_in, (unsigned long long)r->ps.bytes_in,
	       (unsigned long long)r->ps.pkts_out, (unsigned long long)r->ps.bytes_out,
	       (unsigned long long)r->ps.drops);
}

static void peer_header(void)
{
	printf("%-16s  %-40s %8s  %-5s %-9s %10s %12s %10s %12s %8s\n", "KEY", "ADDR", "AGE_S",
	       "FLAGS", "TLS", "PKTS_IN", "BYTES_IN", "PKTS_OUT", "BYTES_OUT", "DROPS");
}

static int cmd_peers(struct state *st, int argc, char **argv)
{
	struct peer_row *rows;
	size_t n;

	if (argc != 0)
		return 2;
	rows = read_peers(st, &n);
	if (!rows) {
		fprintf(stderr, "kderpctl: reading peers: %s\n", strerror(errno));
		return 1;
	}
	if (st->json) {
		json_t *a = json_array();

		for (size_t i = 0; i < n; i++)
			json_array_append_new(a, peer_json(&rows[i]));
		print_json(a);
	} else {
		peer_header();
		for (size_t i = 0; i < n; i++)
			peer_line(&rows[i]);
	}
	free(rows);
	return 0;
}

/* Parse KEY: 64 hex digits, or a prefix matching exactly one connected key. */
static int find_key(struct state *st, const char *arg, struct kderp_peer_key *out)
{
	struct peer_row *rows;
	size_t n, len, found = 0;
	char k[65];

	if (strncasecmp(arg, "nodekey:", 8) == 0)
		arg += 8;
	len = strlen(arg);
	if (len == 0 || len > 64 || strspn(arg, "0123456789abcdefABCDEF") != len) {
		fprintf(stderr, "kderpctl: bad key \"%s\" (want hex digits)\n", arg);
		return 2;
	}
	if (len != 64 && st->peers_fd < 0) {
		fprintf(stderr,
			"kderpctl: without the pinned maps KEY must be all 64 hex digits\n");
		return 2;
	}
	if (len == 64) {
		for (int i = 0; i < 32; i++) {
			unsigned v;

			sscanf(arg + 2 * i, "%2x", &v);
			out->key[i] = (__u8)v;
		}
		return 0;
	}
	rows = read_peers(st, &n);
	if (!rows)
		return 1;
	for (size_t i = 0; i < n; i++) {
		hex_encode(k, rows[i].key.key, 32);
		if (strncasecmp(k, arg, len) == 0) {
			*out = rows[i].key;
			found++;
		}
	}
	free(rows);
	if (found != 1) {
		fprintf(stderr, "kderpctl: %s connected key starts with %s\n",
			found ? "more than one" : "no", arg);
		return 1;
	}
	return 0;
}

static int cmd_peer(struct state *st, int argc, char **argv)
{
	struct peer_row r;
	char k[65];
	int e;

	if (argc != 1)
		return 2;
	e = find_key(st, argv[0], &r.key);
	if (e)
		return e;
	if (bpf_map_lookup_elem(st->peers_fd, &r.key, &r.info)) {
		hex_encode(k, r.key.key, 32);
		fprintf(stderr, "kderpctl: %.16s... is not connected\n", k);
		return 1;
	}
	read_slot(st, r.info.slot, &r.ps);
	if (st->json) {
		print_json(peer_json(&r));
		return 0;
	}
	{
		char a[64];

		hex_encode(k, r.key.key, 32);
		addr_str(&r.info, a, sizeof(a));
		printf("key        %s\naddr       %s\nage        %.0f s\nconn       %llu (worker "
		       "%u, %u connection%s)\n",
		       k, a, age_s(&r.info), (unsigned long long)r.info.conn_id, r.info.worker,
		       r.info.nr_conns, r.info.nr_conns == 1 ? "" : "s");
		printf("flags      %s%s%s%s\ntls        %s\n",
		       r.info.flags & KDERP_PEER_PREFERRED ? "preferred " : "",
		       r.info.flags & KDERP_PEER_MESH ? "mesh " : "",
		       r.info.flags & KDERP_PEER_PROBER ? "prober " : "",
		       r.info.flags & KDERP_PEER_DUP ? "duplicate " : "",
		       tls_mode_name(r.info.tls_mode));
		printf("in         %llu packets, %llu bytes\nout        %llu packets, %llu bytes\n"
		       "drops      %llu\n",
		       (unsigned long long)r.ps.pkts_in, (unsigned long long)r.ps.bytes_in,
		       (unsigned long long)r.ps.pkts_out, (unsigned long long)r.ps.bytes_out,
		       (unsigned long long)r.ps.drops);
		for (int i = 0; i < KDERP_NR_DROP_REASONS; i++)
			if (r.ps.drops_reason[i])
				printf("  %-20s %llu\n", drop_reason_names[i],
				       (unsigned long long)r.ps.drops_reason[i]);
	}
	return 0;
}

static int cmd_stats(struct state *st, int argc, char **argv)
{
	struct kderp_worker_stats sum = {0}, row;
	struct kderp_peer_stats closed;
	unsigned nc =
		st->meta.nr_counters < KDERP_NR_COUNTERS ? st->meta.nr_counters : KDERP_NR_COUNTERS;

	if (argc != 0)
		return 2;
	for (__u32 w = 0; w < st->meta.nr_workers; w++) {
		if (bpf_map_lookup_elem(st->stats_fd, &w, &row)) {
			fprintf(stderr, "kderpctl: reading stats row %u: %s\n", w, strerror(errno));
			return 1;
		}
		for (int i = 0; i < 32; i++)
			sum.c[i] += row.c[i];
		for (int r = 0; r < 8; r++)
			for (int k = 0; k < 2; k++) {
				sum.drop_pkts[r][k] += row.drop_pkts[r][k];
				sum.drop_bytes[r][k] += row.drop_bytes[r][k];
			}
		for (int i = 0; i < 16; i++)
			sum.rtt[i] += row.rtt[i];
	}
	read_slot(st, KDERP_SLOT_CLOSED, &closed);
	if (st->json) {
		json_t *j = json_object(), *c = json_object(), *d = json_array(),
		       *r = json_object();

		json_object_set_new(j, "pid", json_integer(st->meta.owner_pid));
		json_object_set_new(j, "workers", json_integer(st->meta.nr_workers));
		for (unsigned i = 0; i < nc; i++)
			json_object_set_new(c, counter_descs[i].name,
					    json_integer((json_int_t)sum.c[i]));
		json_object_set_new(j, "counters", c);
		for (int i = 0; i < KDERP_NR_DROP_REASONS; i++)
			for (int k = 0; k < 2; k++)
				json_array_append_new(d,
						      json_pack("{s:s, s:s, s:I, s:I}", "reason",
								drop_reason_names[i], "kind",
								k ? "other" : "disco", "packets",
								(json_int_t)sum.drop_pkts[i][k],
								"bytes",
								(json_int_t)sum.drop_bytes[i][k]));
		json_object_set_new(j, "drops", d);
		for (int i = 0; i < KDERP_NR_RTT_BUCKETS; i++)
			json_object_set_new(r, rtt_bucket_names[i],
					    json_integer((json_int_t)sum.rtt[i]));
		json_object_set_new(j, "tcp_rtt", r);
		json_object_set_new(j, "closed_conns",
				    json_pack("{s:I, s:I, s:I, s:I}", "packets_in",
					      (json_int_t)closed.pkts_in, "bytes_in",
					      (json_int_t)closed.bytes_in, "packets_out",
					      (json_int_t)closed.pkts_out, "bytes_out",
					      (json_int_t)closed.bytes_out));
		print_json(j);
		return 0;
	}
	printf("kderpd pid %u, %u workers\n", st->meta.owner_pid, st->meta.nr_workers);
	for (unsigned i = 0; i < nc; i++)
		printf("%-32s %llu\n", counter_descs[i].name, (unsigned long long)sum.c[i]);
	for (int i = 0; i < KDERP_NR_DROP_REASONS; i++)
		for (int k = 0; k < 2; k++)
			if (sum.drop_pkts[i][k])
				printf("dropped{%s,%s}%*s %llu packets, %llu bytes\n",
				       drop_reason_names[i], k ? "other" : "disco",
				       (int)(20 - strlen(drop_reason_names[i]) - (k ? 5 : 5)), "",
				       (unsigned long long)sum.drop_pkts[i][k],
				       (unsigned long long)sum.drop_bytes[i][k]);
	for (int i = 0; i < KDERP_NR_RTT_BUCKETS; i++)
		printf("tcp_rtt{le=%s}%*s %llu\n", rtt_bucket_names[i],
		       (int)(23 - strlen(rtt_bucket_names[i])), "", (unsigned long long)sum.rtt[i]);
	printf("closed connections: in %llu packets %llu bytes, out %llu packets %llu bytes\n",
	       (unsigned long long)closed.pkts_in, (unsigned long long)closed.bytes_in,
	       (unsigned long long)closed.pkts_out, (unsigned long long)closed.bytes_out);
	return 0;
}

/* The control socket's path: --ctl, else the daemon's default for st->dir. 0 or 1. */
static int ctl_path(const struct state *st, char *out, size_t len)
{
	int r;

	if (st->ctl) {
		if (snprintf(out, len, "%s", st->ctl) >= (int)len) {
			fprintf(stderr, "kderpctl: --ctl %s: %s\n", st->ctl,
				strerror(ENAMETOOLONG));
			return 1;
		}
		return 0;
	}
	if (!st->dir[0]) {
		fprintf(stderr,
			"kderpctl: with nothing pinned kderpd names its control socket "
			"after its pid (ctl-PID.sock, logged at start): pass it with --ctl "
			"PATH\n");
		return 1;
	}
	r = ctl_default_path(st->dir, 0, out, len);
	if (r) {
		fprintf(stderr,
			"kderpctl: the control socket for %s: %s; pass it with --ctl PATH\n",
			st->dir, strerror(-r));
		return 1;
	}
	return 0;
}

/*
 * Connect to kderpd's control socket, and make sure that kderpd is what
 * answers before saying anything: the server must be root (or, when we
 * are not root, ourselves), as kderpd is when it listens, and when the
 * state plane is there, the pid that owns the pins. An fd, or -1 (message
 * printed).
 */
static int ctl_connect(const struct state *st, char *path, size_t len)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	uid_t me = geteuid();
	int fd;

	if (ctl_path(st, path, len < sizeof(sun.sun_path) ? len : sizeof(sun.sun_path)))
		return -1;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		fprintf(stderr, "kderpctl: cannot reach kderpd's control socket %s: %s%s\n", path,
			strerror(errno),
			errno == ECONNREFUSED || errno == ENOENT ? " (is kderpd running?)" : "");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl)) {
		fprintf(stderr, "kderpctl: control socket %s: SO_PEERCRED: %s\n", path,
			strerror(errno));
		close(fd);
		return -1;
	}
	if (cr.uid != 0 && (me == 0 || cr.uid != me)) {
		fprintf(stderr,
			"kderpctl: refusing the control socket %s: it is served by uid %u (pid "
			"%d), "
			"not by root as kderpd's is; something else holds it. Nothing was sent.\n",
			path, (unsigned)cr.uid, (int)cr.pid);
		close(fd);
		return -1;
	}
	if (st->have_meta && (__u32)cr.pid != st->meta.owner_pid) {
		fprintf(stderr,
			"kderpctl: refusing the control socket %s: it is served by pid %d, but the "
			"kderpd that owns %s is pid %u. Nothing was sent.\n",
			path, (int)cr.pid, st->dir, st->meta.owner_pid);
		close(fd);
		return -1;
	}
	return fd;
}

/* One request line to the verified control socket; its reply line in resp. 0 or 1. */
static int ctl_request(const struct state *st, const char *req, char *resp, size_t len, char *path,
		       size_t plen)
{
	int fd = ctl_connect(st, path, plen);
	ssize_t n;

	if (fd < 0)
		return 1;
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		fprintf(stderr, "kderpctl: control socket %s: %s\n", path, strerror(errno));
		close(fd);
		return 1;
	}
	n = read(fd, resp, len - 1);
	close(fd);
	if (n <= 0) {
		fprintf(stderr, "kderpctl: control socket %s: no reply\n", path);
		return 1;
	}
	resp[n] = 0;
	resp[strcspn(resp, "\n")] = 0;
	return 0;
}

static int cmd_close_peer(struct state *st, int argc, char **argv)
{
	struct kderp_peer_key key;
	char k[65], req[128], resp[128], path[128];
	int e, closed;

	if (argc != 1)
		return 2;
	e = find_key(st, argv[0], &key);
	if (e)
		return e;
	hex_encode(k, key.key, 32);
	snprintf(req, sizeof(req), "close-peer %s\n", k);
	if (ctl_request(st, req, resp, sizeof(resp), path, sizeof(path)))
		return 1;
	if (sscanf(resp, "ok %d", &closed) != 1) {
		fprintf(stderr, "kderpctl: kderpd: %s\n", resp);
		return 1;
	}
	if (st->json)
		print_json(json_pack("{s:s, s:i}", "key", k, "closed", closed));
	else
		printf("%.16s...: %d connection%s closing\n", k, closed, closed == 1 ? "" : "s");
	return closed > 0 ? 0 : 1;
}

static int cmd_ping(struct state *st, int argc, char **argv)
{
	char resp[128], path[128];
	int pid;

	if (argc != 0)
		return 2;
	if (ctl_request(st, "ping\n", resp, sizeof(resp), path, sizeof(path)))
		return 1;
	if (sscanf(resp, "ok %d", &pid) != 1) {
		fprintf(stderr, "kderpctl: kderpd: %s\n", resp);
		return 1;
	}
	if (st->json)
		print_json(json_pack("{s:i, s:s}", "pid", pid, "ctl", path));
	else
		printf("kderpd pid %d answers on %s\n", pid, path);
	return 0;
}

static const struct command {
	const char *name;
	const char *args;
	const char *help;
	int (*fn)(struct state *st, int argc, char **argv);
	bool ctl_only; /* works without the pinned maps (--bpffs-dir "") */
} commands[] = {
	{"peers", "", "one line per connected key", cmd_peers, false},
	{"peer", "KEY", "everything known about one key", cmd_peer, false},
	{"stats", "", "global counters (all workers) and closed connections' totals", cmd_stats,
	 false},
	{"close-peer", "KEY", "ask kderpd to close a key's connections", cmd_close_peer, true},
	{"ping", "", "ask kderpd's control socket for its pid", cmd_ping, true},
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kderpctl [--bpffs-dir DIR] [--ctl PATH] [--json] COMMAND [ARGS]\n\n"
		"Reads the state maps a running kderpd pinned in DIR (default " DEFAULT_DIR
		"),\nand talks to its control socket (default: in " KDERP_CTL_RUNDIR
		", named after DIR).\nWith --bpffs-dir \"\" only close-peer (a whole key) and ping "
		"work, with --ctl.\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %-4s  %s\n", commands[i].name, commands[i].args,
			commands[i].help);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"bpffs-dir", required_argument, NULL, 'd'},
		{"ctl", required_argument, NULL, 'c'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct state st = {.dir = DEFAULT_DIR, .peers_fd = -1, .slots_fd = -1, .stats_fd = -1};
	const struct command *cmd = NULL;
	char dir[4096];
	size_t n;
	int o, r;

	while ((o = getopt_long(argc, argv, "+d:c:jh", opts, NULL)) != -1) {
		switch (o) {
		case 'd':
			st.dir = optarg;
			break;
		case 'c':
			st.ctl = optarg;
			break;
		case 'j':
			st.json = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			cmd = &commands[i];
	if (!cmd) {
		fprintf(stderr, "kderpctl: unknown command \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	/* The daemon names its control socket after the directory without a trailing '/'. */
	n = strlen(st.dir);
	while (n > 1 && st.dir[n - 1] == '/')
		n--;
	if (n >= sizeof(dir))
		return 2;
	memcpy(dir, st.dir, n);
	dir[n] = 0;
	st.dir = dir;
	if (st.dir[0]) {
		r = open_state(&st);
		if (r)
			return r;
	} else if (!cmd->ctl_only) {
		fprintf(stderr,
			"kderpctl: %s reads the pinned maps, and --bpffs-dir \"\" has none\n",
			cmd->name);
		return 1;
	}
	r = cmd->fn(&st, argc - optind - 1, argv + optind + 1);
	if (r == 2)
		fprintf(stderr, "usage: kderpctl %s %s\n", cmd->name, cmd->args);
	return r;
}
