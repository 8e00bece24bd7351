// SPDX-License-Identifier: MIT
/*
 * state.bpf.c - the state plane's maps (no programs). kderpd creates them
 * from this object's skeleton, pins them under --bpffs-dir and is their only
 * writer: peer records on connect, NotePreferred and disconnect; counters
 * through memory mappings of the two BPF_F_MMAPABLE arrays. BTF comes with
 * the object, so `bpftool map dump pinned` prints field names.
 *
 * Sizes that depend on the daemon's configuration (rows = workers) are set
 * before the load; the values here are the maxima. Layouts: kderp_abi.h.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "kderp_abi.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kderp_state_meta);
} KDERP_MAP_STATE_META SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, KDERP_PEERS_MAX);
	__type(key, struct kderp_peer_key);
	__type(value, struct kderp_peer_info);
} KDERP_MAP_PEERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, KDERP_STATE_SLOTS);
	__type(key, __u32);
	__type(value, struct kderp_peer_stats);
} KDERP_MAP_PEER_STATS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, KDERP_MAX_WORKERS);
	__type(key, __u32);
	__type(value, struct kderp_worker_stats);
} KDERP_MAP_STATS SEC(".maps");
