// SPDX-License-Identifier: MIT
/*
 * test_state_api.c - the state plane's API in process (user/state.c, no
 * daemon): several threads update their own worker rows and one
 * connection's slot at once (plain stores and atomic drops, as the relay
 * does); no increment is lost, the kernel's view of the mapped arrays
 * agrees, closing folds the slot into the totals and frees it, and close
 * unpins. With BPF (root, bpffs) and in memory.
 */
#include <pthread.h>

#include <bpf/bpf.h>

#include "harness.h"
#include "bpffs.h"

#include "server.h"
#include "state.h"
#include "stats.h"

static bool path_exists(const char *dir, const char *name)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

/* ---- the counters API: several workers, no lost increments ---- */

#define NW 4
#define ITERS 300000

struct api_arg {
	struct kderp_worker_stats *row;
	struct kderp_peer_stats *shared;
};

static void *api_worker(void *p)
{
	struct api_arg *a = p;

	for (int i = 0; i < ITERS; i++) {
		STAT_ADD(a->row->c[CTR_PACKETS_SENT], 1);
		STAT_ADD(a->row->drop_pkts[DROP_QUEUE_HEAD][KIND_OTHER], 2);
		/* what other workers do to a destination's slot when they drop */
		__atomic_fetch_add(&a->shared->drops, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* The kernel's view of the same memory: each worker row and the slot. */
static void check_maps(struct __test_metadata *_metadata, const char *dir, uint32_t slot)
{
	char p[300];
	struct kderp_worker_stats row;
	struct kderp_peer_stats ps;
	uint64_t total = 0;
	int fd;

	snprintf(p, sizeof(p), "%s/%s", dir, KDERP_PIN_STATS);
	fd = bpf_obj_get(p);
	ASSERT_LE(0, fd);
	for (__u32 w = 0; w < NW; w++) {
		ASSERT_EQ(0, bpf_map_lookup_elem(fd, &w, &row));
		EXPECT_EQ(ITERS, row.c[CTR_PACKETS_SENT]);
		total += row.c[CTR_PACKETS_SENT];
	}
	close(fd);
	EXPECT_EQ((uint64_t)NW * ITERS, total);
	snprintf(p, sizeof(p), "%s/%s", dir, KDERP_PIN_PEER_STATS);
	fd = bpf_obj_get(p);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, bpf_map_lookup_elem(fd, &slot, &ps));
	EXPECT_EQ((uint64_t)NW * ITERS, ps.drops);
	close(fd);
}

static void api_run(struct __test_metadata *_metadata, const char *dir)
{
	struct kderp_worker_stats local[NW], *rows;
	struct server_hooks h = {0};
	struct kderp_peer_stats *slot;
	struct api_arg args[NW];
	pthread_t th[NW];
	struct kderp_state *st;
	uint64_t sent = 0, drops = 0;
	uint32_t slot_idx = 0, again = 0;
	int err = 0;

	st = kderp_state_open(dir, NW, &err);
	ASSERT_NE(NULL, st) TH_LOG("kderp_state_open: %s", strerror(-err));
	EXPECT_EQ(dir[0] != 0, kderp_state_bpf(st));
	rows = kderp_state_rows(st);
	if (!rows) {
		memset(local, 0, sizeof(local));
		rows = local;
	}
	/* The engine's side of a connection's life: a slot, then back. */
	kderp_state_hooks(st, NULL, &h);
	slot = h.slot_open(h.state_arg, &slot_idx);
	ASSERT_NE(NULL, slot);
	EXPECT_NE(0, slot_idx);
	memset(slot, 0, sizeof(*slot));
	for (int i = 0; i < NW; i++) {
		args[i] = (struct api_arg){&rows[i], slot};
		ASSERT_EQ(0, pthread_create(&th[i], NULL, api_worker, &args[i]));
	}
	for (int i = 0; i < NW; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < NW; i++) {
		sent += rows[i].c[CTR_PACKETS_SENT];
		drops += rows[i].drop_pkts[DROP_QUEUE_HEAD][KIND_OTHER];
	}
	EXPECT_EQ((uint64_t)NW * ITERS, sent);
	EXPECT_EQ((uint64_t)NW * ITERS * 2, drops);
	EXPECT_EQ((uint64_t)NW * ITERS, slot->drops);
	if (dir[0])
		check_maps(_metadata, dir, slot_idx);
	/* Closing folds the slot into the totals and frees it for reuse. */
	h.slot_close(h.state_arg, slot_idx);
	ASSERT_NE(NULL, kderp_state_closed_totals(st));
	EXPECT_EQ((uint64_t)NW * ITERS, kderp_state_closed_totals(st)->drops);
	EXPECT_EQ(0, slot->drops);
	EXPECT_EQ(slot, h.slot_open(h.state_arg, &again));
	EXPECT_EQ(slot_idx, again);
	h.slot_close(h.state_arg, again);
	kderp_state_close(st);
	if (dir[0])
		EXPECT_FALSE(path_exists(dir, KDERP_PIN_STATS));
}

TEST(api_concurrent_workers_bpf)
{
	char dir[200], why[100];

	if (!have_bpffs(why, sizeof(why)))
		SKIP(return, "%s", why);
	snprintf(dir, sizeof(dir), "/sys/fs/bpf/kderp-test-api-%d", (int)getpid());
	api_run(_metadata, dir);
}

TEST(api_concurrent_workers_memory)
{
	api_run(_metadata, "");
}

TEST_HARNESS_MAIN
