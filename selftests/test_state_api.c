// SPDX-License-Identifier: MIT
/*
 * test_state_api.c - the state plane's counters API in process: several
 * threads update their own worker rows and one connection's slot at once
 * (plain stores and atomic drops, as the relay does); no increment is lost,
 * the kernel's view of the mapped arrays agrees, closing folds the slot into
 * the totals, and fini unpins. With BPF (root, bpffs) and in memory.
 */
#include <pthread.h>

#include <bpf/bpf.h>
#include <sodium.h>

#include "harness.h"
#include "bpffs.h"

#include "config.h"
#include "server.h"
#include "statemap.h"

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
	struct worker *w;
	struct conn *shared;
};

static void *api_worker(void *p)
{
	struct api_arg *a = p;

	for (int i = 0; i < ITERS; i++) {
		STAT_ADD(a->w->stats->c[CTR_PACKETS_SENT], 1);
		STAT_ADD(a->w->stats->drop_pkts[DROP_QUEUE_HEAD][KIND_OTHER], 2);
		/* what other workers do to a destination's slot when they drop */
		__atomic_fetch_add(&a->shared->st->drops, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void api_run(struct __test_metadata *_metadata, const char *dir)
{
	struct config cfg = {.bpffs_dir = dir};
	struct server s;
	struct worker ws[NW];
	struct conn c;
	struct api_arg args[NW];
	pthread_t th[NW];
	struct worker_stats sum;
	const struct kderp_peer_stats *closed;
	uint32_t slot;

	memset(&s, 0, sizeof(s));
	memset(ws, 0, sizeof(ws));
	memset(&c, 0, sizeof(c));
	ASSERT_EQ(0, server_init(&s, &cfg));
	s.workers = ws;
	s.nworkers = NW;
	for (int i = 0; i < NW; i++) {
		ws[i].srv = &s;
		ws[i].idx = i;
	}
	ASSERT_EQ(0, statemap_init(&s));
	c.srv = &s;
	c.w = &ws[0];
	c.st = &c.st_local;
	c.id = 1;
	randombytes_buf(c.key, sizeof(c.key));
	c.addr.ss_family = AF_INET;
	statemap_conn_open(&c);
	slot = c.slot;
	EXPECT_NE(0, slot);
	for (int i = 0; i < NW; i++) {
		args[i] = (struct api_arg){&ws[i], &c};
		ASSERT_EQ(0, pthread_create(&th[i], NULL, api_worker, &args[i]));
	}
	for (int i = 0; i < NW; i++)
		pthread_join(th[i], NULL);
	server_sum_stats(&s, &sum);
	EXPECT_EQ((uint64_t)NW * ITERS, sum.c[CTR_PACKETS_SENT]);
	EXPECT_EQ((uint64_t)NW * ITERS * 2, sum.drop_pkts[DROP_QUEUE_HEAD][KIND_OTHER]);
	EXPECT_EQ((uint64_t)NW * ITERS, c.st->drops);
	if (dir[0]) {
		/* The kernel's view of the same memory. */
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
	statemap_conn_close(&c);
	closed = statemap_closed_totals();
	ASSERT_NE(NULL, closed);
	EXPECT_EQ((uint64_t)NW * ITERS, closed->drops);
	statemap_fini(&s);
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
