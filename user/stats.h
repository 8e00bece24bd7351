/* SPDX-License-Identifier: MIT */
/*
 * stats.h - counters. Each worker owns a struct worker_stats and is its only
 * writer (relaxed loads and stores, no locked instructions on the hot path);
 * /debug/varz sums the workers. Gauges change under the server's write lock.
 */
#ifndef KDERP_STATS_H
#define KDERP_STATS_H

#include <stdint.h>

/* Drop reasons and kinds, with derper's label values. */
#define DROP_REASONS(X)                               \
	X(UNKNOWN_DEST, "unknown_dest")               \
	X(UNKNOWN_DEST_ON_FWD, "unknown_dest_on_fwd") \
	X(GONE_DISCONNECTED, "gone_disconnected")     \
	X(QUEUE_HEAD, "queue_head")                   \
	X(QUEUE_TAIL, "queue_tail")                   \
	X(WRITE_ERROR, "write_error")                 \
	X(DUP_CLIENT, "dup_client")

enum drop_reason {
#define X(e, s) DROP_##e,
	DROP_REASONS(X)
#undef X
		NDROP_REASONS
};

enum drop_kind { KIND_DISCO = 0, KIND_OTHER = 1, NKINDS };

extern const char *const drop_reason_names[NDROP_REASONS];
extern const char *const drop_kind_names[NKINDS];

/* Monotonic counters: name (derper's, without the derp_ prefix), help. */
#define COUNTERS(X)                                                                               \
	X(ACCEPTS, "accepts", "connections upgraded to DERP")                                     \
	X(PACKETS_RECEIVED, "packets_received", "SendPacket frames read")                         \
	X(BYTES_RECEIVED, "bytes_received", "SendPacket payload bytes read")                      \
	X(PACKETS_RECEIVED_DISCO, "packets_received_disco", "disco SendPackets read")             \
	X(PACKETS_RECEIVED_OTHER, "packets_received_other", "non-disco SendPackets read")         \
	X(PACKETS_SENT, "packets_sent", "RecvPacket frames written")                              \
	X(BYTES_SENT, "bytes_sent", "RecvPacket payload bytes written")                           \
	X(GOT_PING, "got_ping", "Ping frames read")                                               \
	X(SENT_PONG, "sent_pong", "Pong frames written")                                          \
	X(PEER_GONE_DISCONNECTED, "peer_gone_disconnected_frames",                                \
	  "PeerGone(Disconnected) frames written")                                                \
	X(PEER_GONE_NOT_HERE, "peer_gone_not_here_frames", "PeerGone(NotHere) frames written")    \
	X(HOME_MOVES_IN, "home_moves_in", "NotePreferred(true) more than 5 s after connect")      \
	X(HOME_MOVES_OUT, "home_moves_out", "NotePreferred(false) more than 5 s after connect")   \
	X(TOTAL_DUP_CLIENT_CONNS, "total_dup_client_conns",                                       \
	  "connections accepted while their key was already connected")                           \
	X(WRITE_TIMEOUTS, "sclient_write_timeouts", "connections closed by the write timeout")    \
	X(UNKNOWN_FRAMES, "unknown_frames", "unknown frame types skipped")                        \
	X(PACKETS_FORWARDED_IN, "packets_forwarded_in", "ForwardPacket frames from mesh peers")   \
	X(PACKETS_FORWARDED_OUT, "packets_forwarded_out", "packets forwarded to mesh peers")      \
	X(HANDSHAKE_FAILURES, "handshake_failures", "connections that failed the DERP handshake") \
	X(PROTOCOL_ERRORS, "protocol_errors", "connections closed for a protocol violation")      \
	X(HTTP_REQUESTS, "http_requests", "HTTP requests parsed")                                 \
	X(HTTP_BAD_REQUESTS, "http_bad_requests", "HTTP requests rejected as malformed")          \
	X(CTL_DROPS, "control_frames_dropped", "control frames dropped (queue full)")

enum counter {
#define X(e, n, h) CTR_##e,
	COUNTERS(X)
#undef X
		NCOUNTERS
};

struct counter_desc {
	const char *name;
	const char *help;
};
extern const struct counter_desc counter_descs[NCOUNTERS];

/* derp_tcp_rtt buckets: 10, 20, 50, 100, 150, 250, 500 ms, inf, error. */
#define NRTT_BUCKETS 9

struct worker_stats {
	uint64_t c[NCOUNTERS];
	uint64_t drop_pkts[NDROP_REASONS][NKINDS];
	uint64_t drop_bytes[NDROP_REASONS][NKINDS];
	uint64_t rtt[NRTT_BUCKETS];
};

/* Per-connection counters (kderpctl-style per-peer view). */
struct peer_stats {
	uint64_t pkts_in, bytes_in;
	uint64_t pkts_out, bytes_out;
	uint64_t drops; /* atomically updated: other workers drop to us */
};

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
