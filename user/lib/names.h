/* SPDX-License-Identifier: MIT */
/*
 * names.h - the names of the state plane's numbers, one copy for kderpd's
 * /debug/varz and kderpctl: counters, drop reasons and kinds, RTT buckets,
 * TLS modes (all from the X-macros and enums of include/kderp_abi.h), and
 * the process start time that tells a live owner from PID reuse.
 */
#ifndef KDERP_NAMES_H
#define KDERP_NAMES_H

#include <stdint.h>
#include <sys/types.h>

#include "kderp_abi.h"

struct counter_desc {
	const char *name; /* derp_<name> in /debug/varz */
	const char *help;
};

extern const struct counter_desc counter_descs[KDERP_NR_COUNTERS];
extern const char *const drop_reason_names[KDERP_NR_DROP_REASONS];
extern const char *const drop_kind_names[KDERP_NR_KINDS];

/* A connection's traffic counters (kderp_peer_stats pkts_in, bytes_in,
 * pkts_out, bytes_out) in /debug/varz: kderp_peer_<name>, kderp_closed_conns_<name>. */
extern const char *const peer_counter_names[4];

/* derp_tcp_rtt buckets: label of each, and the upper limits (ms) of the first 7. */
#define KDERP_RTT_LIMITED_BUCKETS 7
#define KDERP_RTT_BUCKET_INF 7
#define KDERP_RTT_BUCKET_ERROR 8
extern const char *const rtt_bucket_names[KDERP_NR_RTT_BUCKETS];
extern const unsigned rtt_bucket_limits_ms[KDERP_RTT_LIMITED_BUCKETS];
/* The bucket of a smoothed RTT in microseconds. */
int rtt_bucket(uint32_t rtt_us);

/* "plain", "tls", "ktls-tx", "ktls-txrx" for enum kderp_tls_mode, "?" otherwise. */
const char *tls_mode_name(unsigned mode);

/* Start time of a process (/proc/PID/stat field 22, clock ticks), 0 if unknown. */
uint64_t proc_start(pid_t pid);

#endif /* KDERP_NAMES_H */
