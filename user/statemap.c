// SPDX-License-Identifier: MIT
/*
 * statemap.c - the state plane: where kderpd's counters and peer records
 * live (Documentation/bpf-abi.md).
 *
 * With BPF, the maps of kern/state.bpf.c are created from its skeleton (this
 * is the only user file that includes state.skel.h), pinned under
 * --bpffs-dir, and the two counter arrays are memory-mapped: each worker's
 * w->stats points at its row and each registered connection's c->st at its
 * slot, so the relay updates them with plain stores and no system call. The
 * peers hash is written here on connect, NotePreferred and disconnect only.
 *
 * Without BPF (no privilege, no bpffs, an old kernel, or --bpffs-dir=""),
 * one line is logged and the same counters live in ordinary memory.
 *
 * Pin ownership: the daemon holds an exclusive flock on the pin directory
 * for its lifetime. A second daemon finds it locked and refuses to start; a
 * directory that is unlocked but holds pins was left by a crash, and the
 * pins are replaced. A clean exit removes them.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>

#include "config.h"
#include "ctl.h"
#include "log.h"
#include "server.h"
#include "statemap.h"
#include "util.h"
#include "state.skel.h"

#define DEFAULT_BPFFS_DIR "/sys/fs/bpf/kderp"

static const char *const pin_names[] = {KDERP_PIN_STATE_META, KDERP_PIN_PEERS, KDERP_PIN_PEER_STATS,
					KDERP_PIN_STATS};

struct statemap {
	struct server *srv;
	bool bpf; /* maps loaded, pinned and mapped */
	struct state_bpf *skel;
	int dirfd; /* the pin directory, flocked */
	char dir[PATH_MAX];
	int peers_fd;
	struct kderp_worker_stats *rows;
	size_t rows_len;
	struct kderp_peer_stats *slots; /* KDERP_STATE_SLOTS, mapped or calloc'd */
	size_t slots_len;
	pthread_mutex_t lock; /* slot stack and peer map writes */
	uint32_t *free_slots;
	uint32_t nfree;
};

static struct statemap sm = {.dirfd = -1, .peers_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static size_t page_round(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return (n + pg - 1) / pg * pg;
}

/* Field 22 of /proc/PID/stat: the start time, to tell a live owner from PID reuse. */
uint64_t statemap_proc_start(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long v = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* after ")": field 3 (state) ... field 22 (starttime) */
	if (sscanf(p + 1,
		   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d "
		   "%llu",
		   &v) != 1)
		return 0;
	return v;
}

/* The pin directory's meta entry, or -errno. */
static int read_meta(const char *dir, struct kderp_state_meta *m)
{
	char path[PATH_MAX + 32];
	__u32 k = 0;
	int fd, r;

	snprintf(path, sizeof(path), "%s/%s", dir, KDERP_PIN_STATE_META);
	fd = bpf_obj_get(path);
	if (fd < 0)
		return -errno;
	r = bpf_map_lookup_elem(fd, &k, m) ? -errno : 0;
	close(fd);
	return r;
}

/* Fallback: the same counters in ordinary memory. */
static void use_local(struct server *s)
{
	for (int i = 0; i < s->nworkers; i++)
		s->workers[i].stats = &s->workers[i].stats_local;
}

static int mkdir_p(const char *dir)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

static void unpin_all(void)
{
	char path[PATH_MAX + 32];

	for (size_t i = 0; i < ARRAY_SIZE(pin_names); i++) {
		snprintf(path, sizeof(path), "%s/%s", sm.dir, pin_names[i]);
		unlink(path);
	}
}

static void bpf_teardown(void)
{
	if (sm.rows)
		munmap(sm.rows, sm.rows_len);
	if (sm.bpf && sm.slots)
		munmap(sm.slots, sm.slots_len);
	else
		free(sm.slots);
	sm.rows = NULL;
	sm.slots = NULL;
	state_bpf__destroy(sm.skel);
	sm.skel = NULL;
	sm.peers_fd = -1;
	sm.bpf = false;
}

/*
 * Take the pin directory: 0, -EEXIST (a live kderpd owns it, logged), or
 * another -errno (not usable: fall back).
 */
static int take_dir(void)
{
	struct kderp_state_meta m;
	struct statfs sfs;
	int r;

	r = mkdir_p(sm.dir);
	if (r)
		return r;
	if (statfs(sm.dir, &sfs))
		return -errno;
	if (sfs.f_type != BPF_FS_MAGIC)
		return -ENOTSUP;
	sm.dirfd = open(sm.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sm.dirfd < 0)
		return -errno;
	if (flock(sm.dirfd, LOCK_EX | LOCK_NB)) {
		r = -errno;
		close(sm.dirfd);
		sm.dirfd = -1;
		if (r != -EWOULDBLOCK)
			return r;
		if (read_meta(sm.dir, &m) == 0)
			log_err("state plane: %s is in use by kderpd pid %u; stop it or give this "
				"one another --bpffs-dir",
				sm.dir, m.owner_pid);
		else
			log_err("state plane: %s is in use by another kderpd; stop it or give this "
				"one another --bpffs-dir",
				sm.dir);
		return -EEXIST;
	}
	if (read_meta(sm.dir, &m) == 0)
		log_warn("state plane: replacing stale pins in %s (left by pid %u)", sm.dir,
			 m.owner_pid);
	unpin_all();
	return 0;
}

static int bpf_setup(struct server *s)
{
	struct kderp_state_meta meta = {0};
	char path[PATH_MAX + 32];
	struct bpf_map *maps[4];
	struct timespec ts;
	__u32 k = 0;
	int r;

	libbpf_set_print(NULL);
	sm.skel = state_bpf__open();
	if (!sm.skel)
		return -errno ? -errno : -EINVAL;
	r = bpf_map__set_max_entries(sm.skel->maps.KDERP_MAP_STATS, (__u32)s->nworkers);
	if (r)
		return r;
	r = state_bpf__load(sm.skel);
	if (r)
		return r;
	sm.rows_len = page_round((size_t)s->nworkers * sizeof(struct kderp_worker_stats));
	sm.rows = mmap(NULL, sm.rows_len, PROT_READ | PROT_WRITE, MAP_SHARED,
		       bpf_map__fd(sm.skel->maps.KDERP_MAP_STATS), 0);
	if (sm.rows == MAP_FAILED) {
		sm.rows = NULL;
		return -errno;
	}
	sm.slots_len = page_round((size_t)KDERP_STATE_SLOTS * sizeof(struct kderp_peer_stats));
	sm.slots = mmap(NULL, sm.slots_len, PROT_READ | PROT_WRITE, MAP_SHARED,
			bpf_map__fd(sm.skel->maps.KDERP_MAP_PEER_STATS), 0);
	if (sm.slots == MAP_FAILED) {
		sm.slots = NULL;
		return -errno;
	}
	sm.bpf = true;
	sm.peers_fd = bpf_map__fd(sm.skel->maps.KDERP_MAP_PEERS);

	clock_gettime(CLOCK_REALTIME, &ts);
	meta.magic = KDERP_ABI_MAGIC;
	meta.version = KDERP_STATE_VERSION;
	meta.owner_pid = (__u32)getpid();
	meta.owner_start = statemap_proc_start(getpid());
	meta.started_unix_ns = (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
	meta.nr_workers = (__u32)s->nworkers;
	meta.nr_slots = KDERP_STATE_SLOTS;
	meta.nr_counters = KDERP_NR_COUNTERS;
	meta.nr_drop_reasons = KDERP_NR_DROP_REASONS;
	meta.nr_rtt_buckets = KDERP_NR_RTT_BUCKETS;
	if (bpf_map_update_elem(bpf_map__fd(sm.skel->maps.KDERP_MAP_STATE_META), &k, &meta,
				BPF_ANY))
		return -errno;

	maps[0] = sm.skel->maps.KDERP_MAP_STATE_META;
	maps[1] = sm.skel->maps.KDERP_MAP_PEERS;
	maps[2] = sm.skel->maps.KDERP_MAP_PEER_STATS;
	maps[3] = sm.skel->maps.KDERP_MAP_STATS;
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/%s", sm.dir, pin_names[i]);
		r = bpf_obj_pin(bpf_map__fd(maps[i]), path);
		if (r) {
			r = -errno;
			unpin_all();
			return r;
		}
	}
	return 0;
}

/*
 * The pin directory: --bpffs-dir, except that when the flag is left at its
 * default and KDERP_BPFFS_BASE is set, each daemon takes
 * $KDERP_BPFFS_BASE/kderpd-PID (the selftests run many daemons at once).
 */
static const char *state_dir(const struct config *cfg, char *buf, size_t len)
{
	const char *base = getenv("KDERP_BPFFS_BASE");

	if (!cfg)
		return NULL;
	if (cfg->bpffs_dir && strcmp(cfg->bpffs_dir, DEFAULT_BPFFS_DIR) == 0 && base && *base) {
		snprintf(buf, len, "%s/kderpd-%d", base, (int)getpid());
		return buf;
	}
	return cfg->bpffs_dir;
}

int statemap_init(struct server *s)
{
	char dbuf[PATH_MAX - 64];
	const char *dir = state_dir(s->cfg, dbuf, sizeof(dbuf));
	size_t n;
	int r;

	sm.srv = s;
	use_local(s);
	sm.free_slots = calloc(KDERP_STATE_SLOTS, sizeof(*sm.free_slots));
	if (!sm.free_slots)
		return -ENOMEM;
	/* A stack: the lowest slots are reused first, so few pages are ever touched. */
	sm.nfree = 0;
	for (uint32_t i = KDERP_STATE_SLOTS - 1; i > KDERP_SLOT_CLOSED; i--)
		sm.free_slots[sm.nfree++] = i;

	if (!dir || !*dir) {
		log_info("state plane: BPF maps off (--bpffs-dir is empty); counters in memory");
		goto local;
	}
	n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (n >= sizeof(sm.dir) - 32) {
		r = -ENAMETOOLONG;
		goto fail;
	}
	memcpy(sm.dir, dir, n);
	sm.dir[n] = 0;

	r = take_dir();
	if (r == -EEXIST)
		goto fail;
	if (r) {
		log_warn("state plane: no BPF maps (%s: %s); counters in memory", sm.dir,
			 r == -ENOTSUP ? "not a bpffs mount" : strerror(-r));
		goto local;
	}
	r = bpf_setup(s);
	if (r) {
		log_warn("state plane: no BPF maps (loading into %s: %s); counters in memory",
			 sm.dir, strerror(-r));
		bpf_teardown();
		rmdir(sm.dir); /* only if this start left it empty */
		close(sm.dirfd);
		sm.dirfd = -1;
		goto local;
	}
	for (int i = 0; i < s->nworkers; i++)
		s->workers[i].stats = &sm.rows[i];
	log_info("state plane: maps pinned in %s (%d worker rows, %u peer slots)", sm.dir,
		 s->nworkers, KDERP_STATE_SLOTS);
	goto ctl;

local:
	sm.slots_len = (size_t)KDERP_STATE_SLOTS * sizeof(struct kderp_peer_stats);
	sm.slots = calloc(KDERP_STATE_SLOTS, sizeof(struct kderp_peer_stats));
	if (!sm.slots) {
		r = -ENOMEM;
		goto fail;
	}
ctl:
	if (!sm.dir[0])
		snprintf(sm.dir, sizeof(sm.dir), "%s", dir && *dir ? dir : "");
	r = ctl_start(s, sm.dir);
	if (r)
		log_warn("control socket for %s not started: %s", sm.dir[0] ? sm.dir : "\"\"",
			 strerror(-r));
	return 0;

fail:
	free(sm.free_slots);
	sm.free_slots = NULL;
	sm.dir[0] = 0;
	return r;
}

bool statemap_bpf_active(void)
{
	return sm.bpf;
}

const char *statemap_dir(void)
{
	return sm.dir;
}

const struct kderp_peer_stats *statemap_closed_totals(void)
{
	return sm.slots ? &sm.slots[KDERP_SLOT_CLOSED] : NULL;
}

/* A CLOCK_MONOTONIC time (now_ns()) as CLOCK_REALTIME. */
static uint64_t mono_to_unix_ns(uint64_t mono)
{
	struct timespec ts;
	uint64_t now_real, now_mono = now_ns();

	clock_gettime(CLOCK_REALTIME, &ts);
	now_real = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	return now_real - (now_mono > mono ? now_mono - mono : 0);
}

static void fill_info(const struct conn *c, unsigned nconns, struct kderp_peer_info *pi)
{
	const struct sockaddr_storage *ss = &c->addr;

	memset(pi, 0, sizeof(*pi));
	pi->slot = c->slot ? c->slot : KDERP_SLOT_NONE;
	pi->worker = (__u16)c->w->idx;
	pi->flags = (c->preferred ? KDERP_PEER_PREFERRED : 0) |
		(c->can_mesh ? KDERP_PEER_MESH : 0) | (c->is_prober ? KDERP_PEER_PROBER : 0) |
		(nconns > 1 ? KDERP_PEER_DUP : 0);
	pi->tls_mode = c->tls_mode;
	pi->conn_id = c->id;
	pi->connected_unix_ns = mono_to_unix_ns(c->created_ns);
	pi->nr_conns = (__u16)(nconns > 0xffff ? 0xffff : nconns);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		pi->addr[10] = 0xff;
		pi->addr[11] = 0xff;
		memcpy(pi->addr + 12, &sin->sin_addr, 4);
		pi->port = ntohs(sin->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		memcpy(pi->addr, &sin6->sin6_addr, 16);
		pi->port = ntohs(sin6->sin6_port);
	}
}

/*
 * Rewrite the peers entry for c's key from the table: the key's active
 * connection (else any other), skipping @gone; delete it when none is left.
 * Caller holds sm.lock.
 */
static void publish_key(struct conn *c, const struct conn *gone)
{
	struct server *s = c->srv;
	struct kderp_peer_info pi;
	struct conn *pick = NULL;
	unsigned nconns = 0;
	struct peer *p;

	if (sm.peers_fd < 0)
		return;
	pthread_rwlock_rdlock(&s->lock);
	p = server_peer_lookup(s, c->key);
	if (p) {
		struct conn *a = atomic_load(&p->active);

		for (unsigned i = 0; i < p->nconns; i++)
			if (p->conns[i] != gone)
				nconns++;
		if (a && a != gone)
			pick = a;
		for (unsigned i = 0; !pick && i < p->nconns; i++)
			if (p->conns[i] != gone)
				pick = p->conns[i];
	} else if (c != gone) {
		pick = c;
		nconns = 1;
	}
	if (pick)
		fill_info(pick, nconns, &pi);
	pthread_rwlock_unlock(&s->lock);
	if (pick)
		bpf_map_update_elem(sm.peers_fd, c->key, &pi, BPF_ANY);
	else
		bpf_map_delete_elem(sm.peers_fd, c->key);
}

void statemap_conn_open(struct conn *c)
{
	struct kderp_peer_stats *slot = NULL;

	STAT_ADD(c->w->stats->c[CTR_HANDSHAKES], 1);
	pthread_mutex_lock(&sm.lock);
	if (sm.slots && sm.nfree) {
		c->slot = sm.free_slots[--sm.nfree];
		slot = &sm.slots[c->slot];
		memset(slot, 0, sizeof(*slot));
		/* Anything counted since registration moves along. */
		slot->pkts_in = c->st_local.pkts_in;
		slot->bytes_in = c->st_local.bytes_in;
		slot->pkts_out = c->st_local.pkts_out;
		slot->bytes_out = c->st_local.bytes_out;
		slot->drops = c->st_local.drops;
		__atomic_store_n(&c->st, slot, __ATOMIC_RELEASE);
	}
	publish_key(c, NULL);
	pthread_mutex_unlock(&sm.lock);
}

void statemap_conn_update(struct conn *c)
{
	pthread_mutex_lock(&sm.lock);
	publish_key(c, NULL);
	pthread_mutex_unlock(&sm.lock);
}

static void fold(struct kderp_peer_stats *dst, const struct kderp_peer_stats *src)
{
	/* Several workers close connections: the totals slot takes atomic adds. */
	__atomic_fetch_add(&dst->pkts_in, STAT_READ(src->pkts_in), __ATOMIC_RELAXED);
	__atomic_fetch_add(&dst->bytes_in, STAT_READ(src->bytes_in), __ATOMIC_RELAXED);
	__atomic_fetch_add(&dst->pkts_out, STAT_READ(src->pkts_out), __ATOMIC_RELAXED);
	__atomic_fetch_add(&dst->bytes_out, STAT_READ(src->bytes_out), __ATOMIC_RELAXED);
	__atomic_fetch_add(&dst->drops, STAT_READ(src->drops), __ATOMIC_RELAXED);
	for (int r = 0; r < 8; r++)
		__atomic_fetch_add(&dst->drops_reason[r], STAT_READ(src->drops_reason[r]),
				   __ATOMIC_RELAXED);
}

void statemap_conn_close(struct conn *c)
{
	pthread_mutex_lock(&sm.lock);
	publish_key(c, c);
	if (c->slot && sm.slots) {
		struct kderp_peer_stats *slot = &sm.slots[c->slot];

		memset(&c->st_local, 0, sizeof(c->st_local));
		__atomic_store_n(&c->st, &c->st_local, __ATOMIC_RELEASE);
		fold(&sm.slots[KDERP_SLOT_CLOSED], slot);
		memset(slot, 0, sizeof(*slot));
		sm.free_slots[sm.nfree++] = c->slot;
		c->slot = 0;
	}
	pthread_mutex_unlock(&sm.lock);
}

void statemap_fini(struct server *s)
{
	ctl_stop();
	/* Keep the last values readable in memory after the maps go away. */
	for (int i = 0; s && i < s->nworkers; i++) {
		if (s->workers[i].stats != &s->workers[i].stats_local) {
			s->workers[i].stats_local = *s->workers[i].stats;
			s->workers[i].stats = &s->workers[i].stats_local;
		}
	}
	if (sm.bpf) {
		unpin_all();
		/* Removed when empty; left alone when it holds anything else. */
		if (rmdir(sm.dir) == 0)
			log_debug("state plane: removed %s", sm.dir);
	}
	bpf_teardown();
	if (sm.dirfd >= 0) {
		close(sm.dirfd);
		sm.dirfd = -1;
	}
	free(sm.free_slots);
	sm.free_slots = NULL;
	sm.nfree = 0;
	sm.dir[0] = 0;
	sm.srv = NULL;
}
