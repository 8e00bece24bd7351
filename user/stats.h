/* SPDX-License-Identifier: MIT */
/*
 * stats.h - counters. Each worker owns a struct worker_stats and is its only
 * writer (relaxed loads and stores, no locked instructions on the hot path);
 * /debug/varz sums the workers. Gauges change under the server's write lock.
 *
 * The layouts are the state plane's ABI (include/kderp_abi.h): with BPF the
 * rows and per-connection slots live in memory-mapped BPF arrays (see
 * user/state.c), without it in ordinary memory. Their names are in
 * user/lib/names.h.
 */
#ifndef KDERP_STATS_H
#define KDERP_STATS_H

#include <stdint.h>

#include "kderp_abi.h"
#include "names.h"

#define DROP_REASONS KDERP_DROP_REASONS
#define NDROP_REASONS KDERP_NR_DROP_REASONS
#define NKINDS KDERP_NR_KINDS
#define KIND_DISCO KDERP_KIND_DISCO
#define KIND_OTHER KDERP_KIND_OTHER
#define COUNTERS KDERP_COUNTERS
#define NCOUNTERS KDERP_NR_COUNTERS
#define NRTT_BUCKETS KDERP_NR_RTT_BUCKETS

/* Short names for the ABI's indices: DROP_QUEUE_HEAD, CTR_ACCEPTS, ... */
enum drop_reason {
#define X(e, s) DROP_##e = KDERP_DROP_##e,
	DROP_REASONS(X)
#undef X
};
enum counter {
#define X(e, n, h) CTR_##e = KDERP_CTR_##e,
	COUNTERS(X)
#undef X
};

/* The ABI structs under the names the daemon uses. */
#define worker_stats kderp_worker_stats /* one worker's counters */
#define peer_stats kderp_peer_stats /* one connection's counters */

struct server_gauges {
	int64_t current_connections;
	int64_t current_home_connections;
	int64_t current_notideal_connections;
	int64_t clients_local;
	int64_t current_dup_client_keys;
	int64_t current_dup_client_conns;
	int64_t watchers;
};

/* Single-writer counter update: plain add, but tear-free for readers. */
#define STAT_ADD(var, n) \
	__atomic_store_n(&(var), __atomic_load_n(&(var), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define STAT_READ(var) __atomic_load_n(&(var), __ATOMIC_RELAXED)

#endif
