// SPDX-License-Identifier: MIT
/*
 * state.c - the state plane: where kderpd's counters and peer records
 * live (Documentation/bpf-abi.md).
 *
 * With BPF, the maps of kern/state.bpf.c are created from its skeleton (this
 * is the only user file that includes state.skel.h), pinned under
 * --bpffs-dir, and the two counter arrays are memory-mapped: main.c hands
 * the worker rows to the engine (workers_set_stats) and the engine asks for
 * a connection's slot through its slot_open hook, so the relay updates them
 * with plain stores and no system call. The peers hash is written here,
 * through the peer_changed hook, on connect, NotePreferred and disconnect.
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

#include "log.h"
#include "names.h"
#include "server.h"
#include "state.h"
#include "util.h"
#include "state.skel.h"

static const char *const pin_names[] = {KDERP_PIN_STATE_META, KDERP_PIN_PEERS, KDERP_PIN_PEER_STATS,
					KDERP_PIN_STATS};

struct kderp_state {
	struct server *srv; /* read back through server_peer_info */
	int nworkers;
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

static size_t page_round(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return (n + pg - 1) / pg * pg;
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

static void unpin_all(struct kderp_state *st)
{
	char path[PATH_MAX + 32];

	for (size_t i = 0; i < ARRAY_SIZE(pin_names); i++) {
		snprintf(path, sizeof(path), "%s/%s", st->dir, pin_names[i]);
		unlink(path);
	}
}

static void bpf_teardown(struct kderp_state *st)
{
	if (st->rows)
		munmap(st->rows, st->rows_len);
	if (st->bpf && st->slots)
		munmap(st->slots, st->slots_len);
	else
		free(st->slots);
	st->rows = NULL;
	st->slots = NULL;
	state_bpf__destroy(st->skel);
	st->skel = NULL;
	st->peers_fd = -1;
	st->bpf = false;
}

/*
 * The pin directory must be ours alone (stat_private): one that another user
 * made, or that others may write to (bpffs' root is often world-writable), could be a trap
 * laid before kderpd started, where pins would be unlinked or replaced. Not
 * locked by a live kderpd (checked before), it is removed and made anew
 * (also what a crash of a daemon that ran as --user leaves). 0, or -EEXIST
 * (fatal, logged) when it cannot be.
 */
static int own_dir(struct kderp_state *st)
{
	struct stat sb;

	if (fstat(st->dirfd, &sb))
		return -errno;
	if (stat_private(&sb))
		return 0;
	log_warn("state plane: %s belongs to uid %u with mode %03o; making it anew", st->dir,
		 (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 0777));
	unpin_all(st);
	close(st->dirfd);
	st->dirfd = -1;
	if (rmdir(st->dir) || mkdir(st->dir, 0700)) {
		log_err("state plane: cannot replace %s (%s); remove it, or give --bpffs-dir "
			"another directory",
			st->dir, strerror(errno));
		return -EEXIST;
	}
	st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->dirfd < 0 || flock(st->dirfd, LOCK_EX | LOCK_NB)) {
		log_err("state plane: %s was taken while it was made anew", st->dir);
		return -EEXIST;
	}
	return 0;
}

/*
 * Take the pin directory: 0, -EEXIST (a live kderpd owns it, or it cannot
 * be made ours; logged), or another -errno (not usable: fall back).
 */
static int take_dir(struct kderp_state *st)
{
	struct kderp_state_meta m;
	struct statfs sfs;
	int r;

	r = mkdir_p(st->dir);
	if (r)
		return r;
	if (statfs(st->dir, &sfs))
		return -errno;
	if (sfs.f_type != BPF_FS_MAGIC)
		return -ENOTSUP;
	st->dirfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->dirfd < 0)
		return -errno;
	if (flock(st->dirfd, LOCK_EX | LOCK_NB)) {
		r = -errno;
		close(st->dirfd);
		st->dirfd = -1;
		if (r != -EWOULDBLOCK)
			return r;
		if (read_meta(st->dir, &m) == 0)
			log_err("state plane: %s is in use by kderpd pid %u; stop it or give this "
				"one another --bpffs-dir",
				st->dir, m.owner_pid);
		else
			log_err("state plane: %s is in use by another kderpd; stop it or give this "
				"one another --bpffs-dir",
				st->dir);
		return -EEXIST;
	}
	if (read_meta(st->dir, &m) == 0)
		log_warn("state plane: replacing stale pins in %s (left by pid %u)", st->dir,
			 m.owner_pid);
	unpin_all(st);
	return own_dir(st);
}

/* Map a BPF array of len bytes (rounded up to pages) read-write. */
static void *map_array(struct bpf_map *map, size_t *len, size_t bytes)
{
	void *p;

	*len = page_round(bytes);
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(map), 0);
	return p == MAP_FAILED ? NULL : p;
}

static int write_meta(struct kderp_state *st)
{
	struct kderp_state_meta meta = {0};
	struct timespec ts;
	__u32 k = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	meta.magic = KDERP_ABI_MAGIC;
	meta.version = KDERP_STATE_VERSION;
	meta.owner_pid = (__u32)getpid();
	meta.owner_start = proc_start(getpid());
	meta.started_unix_ns = (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
	meta.nr_workers = (__u32)st->nworkers;
	meta.nr_slots = KDERP_STATE_SLOTS;
	meta.nr_counters = KDERP_NR_COUNTERS;
	meta.nr_drop_reasons = KDERP_NR_DROP_REASONS;
	meta.nr_rtt_buckets = KDERP_NR_RTT_BUCKETS;
	if (bpf_map_update_elem(bpf_map__fd(st->skel->maps.KDERP_MAP_STATE_META), &k, &meta,
				BPF_ANY))
		return -errno;
	return 0;
}

static int pin_all(struct kderp_state *st)
{
	struct bpf_map *maps[4] = {
		st->skel->maps.KDERP_MAP_STATE_META,
		st->skel->maps.KDERP_MAP_PEERS,
		st->skel->maps.KDERP_MAP_PEER_STATS,
		st->skel->maps.KDERP_MAP_STATS,
	};
	char path[PATH_MAX + 32];

	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/%s", st->dir, pin_names[i]);
		if (bpf_obj_pin(bpf_map__fd(maps[i]), path)) {
			int r = -errno;

			unpin_all(st);
			return r;
		}
	}
	return 0;
}

static int bpf_setup(struct kderp_state *st)
{
	int r;

	st->skel = state_bpf__open();
	if (!st->skel)
		return -errno ? -errno : -EINVAL;
	r = bpf_map__set_max_entries(st->skel->maps.KDERP_MAP_STATS, (__u32)st->nworkers);
	if (r)
		return r;
	r = state_bpf__load(st->skel);
	if (r)
		return r;
	st->rows = map_array(st->skel->maps.KDERP_MAP_STATS, &st->rows_len,
			     (size_t)st->nworkers * sizeof(struct kderp_worker_stats));
	if (!st->rows)
		return -errno;
	st->slots = map_array(st->skel->maps.KDERP_MAP_PEER_STATS, &st->slots_len,
			      (size_t)KDERP_STATE_SLOTS * sizeof(struct kderp_peer_stats));
	if (!st->slots)
		return -errno;
	st->bpf = true;
	st->peers_fd = bpf_map__fd(st->skel->maps.KDERP_MAP_PEERS);
	r = write_meta(st);
	return r ? r : pin_all(st);
}

/*
 * The pin directory: bpffs_dir, except that when it is the default and
 * KDERP_BPFFS_BASE is set, each daemon takes $KDERP_BPFFS_BASE/kderpd-PID
 * (the selftests run many daemons at once).
 */
static const char *state_dir(const char *bpffs_dir, char *buf, size_t len)
{
	const char *base = getenv("KDERP_BPFFS_BASE");

	if (bpffs_dir && strcmp(bpffs_dir, KDERP_STATE_DEFAULT_DIR) == 0 && base && *base) {
		snprintf(buf, len, "%s/kderpd-%d", base, (int)getpid());
		return buf;
	}
	return bpffs_dir;
}

/* Load, pin and map into st->dir: 0, -EEXIST (fatal, logged) or -errno (fall back, logged). */
static int try_bpf(struct kderp_state *st)
{
	int r = take_dir(st);

	if (r == -EEXIST)
		return r;
	if (r) {
		log_warn("state plane: no BPF maps (%s: %s); counters in memory", st->dir,
			 r == -ENOTSUP ? "not a bpffs mount" : strerror(-r));
		return r;
	}
	r = bpf_setup(st);
	if (r) {
		log_warn("state plane: no BPF maps (loading into %s: %s); counters in memory",
			 st->dir, strerror(-r));
		bpf_teardown(st);
		rmdir(st->dir); /* only if this start left it empty */
		close(st->dirfd);
		st->dirfd = -1;
		return r;
	}
	log_info("state plane: maps pinned in %s (%d worker rows, %u peer slots)", st->dir,
		 st->nworkers, KDERP_STATE_SLOTS);
	return 0;
}

static int set_dir(struct kderp_state *st, const char *dir)
{
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (n >= sizeof(st->dir) - 32)
		return -ENAMETOOLONG;
	memcpy(st->dir, dir, n);
	st->dir[n] = 0;
	return 0;
}

struct kderp_state *kderp_state_open(const char *bpffs_dir, int nworkers, int *err)
{
	char dbuf[PATH_MAX - 64];
	const char *dir = state_dir(bpffs_dir, dbuf, sizeof(dbuf));
	struct kderp_state *st = calloc(1, sizeof(*st));
	int r = -ENOMEM;

	if (!st)
		goto fail;
	st->dirfd = st->peers_fd = -1;
	st->nworkers = nworkers;
	pthread_mutex_init(&st->lock, NULL);
	st->free_slots = calloc(KDERP_STATE_SLOTS, sizeof(*st->free_slots));
	if (!st->free_slots)
		goto fail;
	/* A stack: the lowest slots are reused first, so few pages are ever touched. */
	for (uint32_t i = KDERP_STATE_SLOTS - 1; i > KDERP_SLOT_CLOSED; i--)
		st->free_slots[st->nfree++] = i;
	if (!dir || !*dir) {
		log_info("state plane: BPF maps off (--bpffs-dir is empty); counters in memory");
	} else {
		r = set_dir(st, dir);
		if (r == 0)
			r = try_bpf(st);
		if (r == -EEXIST || r == -ENAMETOOLONG)
			goto fail;
	}
	if (!st->bpf) {
		r = -ENOMEM;
		st->slots_len = (size_t)KDERP_STATE_SLOTS * sizeof(struct kderp_peer_stats);
		st->slots = calloc(KDERP_STATE_SLOTS, sizeof(struct kderp_peer_stats));
		if (!st->slots)
			goto fail;
	}
	return st;
fail:
	kderp_state_close(st);
	*err = r;
	return NULL;
}

struct kderp_worker_stats *kderp_state_rows(const struct kderp_state *st)
{
	return st->bpf ? st->rows : NULL;
}

bool kderp_state_bpf(const struct kderp_state *st)
{
	return st->bpf;
}

const char *kderp_state_dir(const struct kderp_state *st)
{
	return st->dir;
}

const struct kderp_peer_stats *kderp_state_closed_totals(const struct kderp_state *st)
{
	return st->slots ? &st->slots[KDERP_SLOT_CLOSED] : NULL;
}

int kderp_state_chown(struct kderp_state *st, uid_t uid, gid_t gid)
{
	if (!st->bpf || st->dirfd < 0)
		return 0;
	return fchown(st->dirfd, uid, gid) ? -errno : 0;
}

int kderp_state_varz(const void *arg, char *buf, size_t len)
{
	const struct kderp_state *st = arg;
	const struct kderp_peer_stats *closed = kderp_state_closed_totals(st);
	size_t off = 0;

	appendf(buf, len, &off,
		"# HELP kderp_state_bpf 1 when counters live in pinned BPF maps\n"
		"# TYPE kderp_state_bpf gauge\nkderp_state_bpf %d\n",
		st->bpf ? 1 : 0);
	if (closed) {
		const uint64_t v[4] = {STAT_READ(closed->pkts_in), STAT_READ(closed->bytes_in),
				       STAT_READ(closed->pkts_out), STAT_READ(closed->bytes_out)};

		for (int i = 0; i < 4; i++)
			appendf(buf, len, &off,
				"# TYPE kderp_closed_conns_%s counter\nkderp_closed_conns_%s "
				"%llu\n",
				peer_counter_names[i], peer_counter_names[i],
				(unsigned long long)v[i]);
	}
	return (int)off;
}

/* ---- the engine's hooks ---- */

static struct kderp_peer_stats *hook_slot_open(void *arg, uint32_t *slot)
{
	struct kderp_state *st = arg;
	struct kderp_peer_stats *p = NULL;

	pthread_mutex_lock(&st->lock);
	if (st->slots && st->nfree) {
		*slot = st->free_slots[--st->nfree];
		p = &st->slots[*slot];
	}
	pthread_mutex_unlock(&st->lock);
	return p;
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

static void hook_slot_close(void *arg, uint32_t slot)
{
	struct kderp_state *st = arg;

	if (!slot || slot >= KDERP_STATE_SLOTS || !st->slots)
		return;
	pthread_mutex_lock(&st->lock);
	fold(&st->slots[KDERP_SLOT_CLOSED], &st->slots[slot]);
	memset(&st->slots[slot], 0, sizeof(st->slots[slot]));
	st->free_slots[st->nfree++] = slot;
	pthread_mutex_unlock(&st->lock);
}

/* Rewrite the peers entry of key from the engine's table, or delete it.
 * Serialised by st->lock so that the map ends as the table ends. */
static void hook_peer_changed(void *arg, const uint8_t key[32], uint64_t gone_id)
{
	struct kderp_state *st = arg;
	struct kderp_peer_info pi;

	if (st->peers_fd < 0 || !st->srv)
		return;
	pthread_mutex_lock(&st->lock);
	if (server_peer_info(st->srv, key, gone_id, &pi))
		bpf_map_update_elem(st->peers_fd, key, &pi, BPF_ANY);
	else
		bpf_map_delete_elem(st->peers_fd, key);
	pthread_mutex_unlock(&st->lock);
}

void kderp_state_hooks(struct kderp_state *st, struct server *srv, struct server_hooks *h)
{
	st->srv = srv;
	h->slot_open = hook_slot_open;
	h->slot_close = hook_slot_close;
	h->peer_changed = hook_peer_changed;
	h->state_arg = st;
}

void kderp_state_close(struct kderp_state *st)
{
	if (!st)
		return;
	if (st->bpf) {
		unpin_all(st);
		/* Removed when empty; left alone when it holds anything else. */
		if (rmdir(st->dir) == 0)
			log_debug("state plane: removed %s", st->dir);
	}
	bpf_teardown(st);
	if (st->dirfd >= 0)
		close(st->dirfd);
	free(st->free_slots);
	pthread_mutex_destroy(&st->lock);
	free(st);
}
