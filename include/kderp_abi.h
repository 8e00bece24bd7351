/* SPDX-License-Identifier: MIT */
/*
 * kderp_abi.h - the one ABI between kderp's BPF programs (kern/) and user
 * space (user/, tools/, selftests/).
 *
 * Rules for this file:
 *  - only <linux/types.h> types; every padding byte is an explicit field;
 *  - every key and value is pinned with _Static_assert on size and offsets,
 *    so the BPF build (clang -target bpf) and the user build agree;
 *  - map names are macros: BPF code declares the map with the macro as its
 *    identifier, user code reaches it as skel->maps.KDERP_MAP_xxx or by the
 *    string KDERP_MAP_NAME(KDERP_MAP_xxx);
 *  - any layout change bumps KDERP_ABI_VERSION and the _vN suffix of the
 *    map concerned.
 *
 * Sections: common, STUN XDP (kern/stun_xdp.bpf.c), state plane
 * (kern/state.bpf.c). New units append a
 * section of their own below the last one.
 */
#ifndef KDERP_ABI_H
#define KDERP_ABI_H

#include <linux/types.h>
#include <linux/bpf.h> /* enum xdp_action, for kderp_stun_outcome_of() */

/* ---- common ---------------------------------------------------------- */

#define KDERP_ABI_MAGIC 0x4b44 /* "KD" */
#define KDERP_ABI_VERSION 1

#define __KDERP_STR(x) #x
/* KDERP_MAP_NAME(KDERP_MAP_STUN_CFG) -> "kd_stun_cfg_v1"; kernel map names hold at most 15 chars. */
#define KDERP_MAP_NAME(m) __KDERP_STR(m)

#define KDERP_ABI_ASSERT(cond, msg) _Static_assert(cond, msg)
#define KDERP_ABI_SIZE(type, n) KDERP_ABI_ASSERT(sizeof(type) == (n), "size of " #type)
#define KDERP_ABI_OFF(type, field, n) \
	KDERP_ABI_ASSERT(__builtin_offsetof(type, field) == (n), "offset of " #type "." #field)

/* ---- STUN XDP (kern/stun_xdp.bpf.c) -------------------------------------- */

/* ARRAY, 1 entry (key 0): struct kderp_stun_cfg, written by user space. */
#define KDERP_MAP_STUN_CFG kd_stun_cfg_v1
/* PERCPU_ARRAY, KDERP_STUN_NR_COUNTERS entries: struct kderp_stun_counter. */
#define KDERP_MAP_STUN_CNT kd_stun_cnt_v1

/* The XDP program, section "xdp". */
#define KDERP_PROG_STUN_XDP kderp_xdp_stun

/*
 * Configuration. The program answers nothing (XDP_PASS, counted) unless the
 * entry carries the right magic and version, so a half-written or stale map
 * never turns into replies.
 */
struct kderp_stun_cfg {
	__u16 magic; /* KDERP_ABI_MAGIC */
	__u8 abi_version; /* KDERP_ABI_VERSION */
	__u8 drop_stun; /* non-zero: XDP_DROP every STUN packet to dst_port */
	__u16 dst_port; /* UDP port answered, host byte order */
	__u16 reserved; /* zero */
};
KDERP_ABI_SIZE(struct kderp_stun_cfg, 8);
KDERP_ABI_OFF(struct kderp_stun_cfg, magic, 0);
KDERP_ABI_OFF(struct kderp_stun_cfg, abi_version, 2);
KDERP_ABI_OFF(struct kderp_stun_cfg, drop_stun, 3);
KDERP_ABI_OFF(struct kderp_stun_cfg, dst_port, 4);
KDERP_ABI_OFF(struct kderp_stun_cfg, reserved, 6);

/* Address family of a counted packet (derper's COUNTER_KEY_AF_*). */
enum kderp_stun_af {
	KDERP_STUN_AF_UNKNOWN = 0,
	KDERP_STUN_AF_IPV4 = 1,
	KDERP_STUN_AF_IPV6 = 2,
	KDERP_STUN_NR_AF,
};

/* What the program returned for the packet. */
enum kderp_stun_outcome {
	KDERP_STUN_OUT_PASS = 0,
	KDERP_STUN_OUT_ABORTED = 1,
	KDERP_STUN_OUT_TX = 2,
	KDERP_STUN_OUT_DROP = 3,
	KDERP_STUN_NR_OUT,
};

/* Where the program decided, when it is worth a label (derper's PROG_END_*). */
enum kderp_stun_end {
	KDERP_STUN_END_UNSPECIFIED = 0,
	KDERP_STUN_END_UNEXPECTED_FIRST_STUN_ATTR = 1,
	KDERP_STUN_END_INVALID_UDP_CSUM = 2,
	KDERP_STUN_END_INVALID_IP_CSUM = 3,
	KDERP_STUN_END_NOT_STUN_PORT = 4,
	KDERP_STUN_END_INVALID_SW_ATTR_VAL = 5,
	KDERP_STUN_END_DROP_STUN = 6,
	KDERP_STUN_NR_END,
};

#define KDERP_STUN_NR_COUNTERS (KDERP_STUN_NR_AF * KDERP_STUN_NR_OUT * KDERP_STUN_NR_END)

/* One slot per (af, outcome, end): packets and bytes (frame length at exit). */
struct kderp_stun_counter {
	__u64 packets;
	__u64 bytes;
};
KDERP_ABI_SIZE(struct kderp_stun_counter, 16);
KDERP_ABI_OFF(struct kderp_stun_counter, packets, 0);
KDERP_ABI_OFF(struct kderp_stun_counter, bytes, 8);

/* Index of the counter slot for (af, outcome, end); both sides use this. */
static inline __u32 kderp_stun_counter_idx(__u32 af, __u32 outcome, __u32 end)
{
	return (af * KDERP_STUN_NR_OUT + outcome) * KDERP_STUN_NR_END + end;
}

/* The outcome counted for an XDP action (enum xdp_action); both sides use this. */
static inline __u32 kderp_stun_outcome_of(int action)
{
	switch (action) {
	case XDP_TX:
		return KDERP_STUN_OUT_TX;
	case XDP_DROP:
		return KDERP_STUN_OUT_DROP;
	case XDP_PASS:
		return KDERP_STUN_OUT_PASS;
	default:
		return KDERP_STUN_OUT_ABORTED;
	}
}

/* ---- state plane (kern/state.bpf.c, user/statemap.c, tools/kderpctl) ---- */

/*
 * Pinned under the daemon's --bpffs-dir as <dir>/<map name>. The daemon is
 * the only writer; kderpctl and bpftool only read. Everything else (field
 * meaning, pin lifetime) is in Documentation/bpf-abi.md.
 */
#define KDERP_STATE_VERSION 1

/* ARRAY, 1 entry (key 0): struct kderp_state_meta. */
#define KDERP_MAP_STATE_META kd_meta_v1
/* HASH (no prealloc), key struct kderp_peer_key, value struct kderp_peer_info. */
#define KDERP_MAP_PEERS kd_peers_v1
/* ARRAY, BPF_F_MMAPABLE, KDERP_STATE_SLOTS entries: struct kderp_peer_stats. */
#define KDERP_MAP_PEER_STATS kd_peer_st_v1
/* ARRAY, BPF_F_MMAPABLE, one row per worker: struct kderp_worker_stats. */
#define KDERP_MAP_STATS kd_stats_v1

/* Pinned object names, as they appear in the pin directory. */
#define KDERP_PIN_STATE_META KDERP_MAP_NAME(KDERP_MAP_STATE_META)
#define KDERP_PIN_PEERS KDERP_MAP_NAME(KDERP_MAP_PEERS)
#define KDERP_PIN_PEER_STATS KDERP_MAP_NAME(KDERP_MAP_PEER_STATS)
#define KDERP_PIN_STATS KDERP_MAP_NAME(KDERP_MAP_STATS)

#define KDERP_STATE_SLOTS 16384 /* peer_stats entries; slot 0 holds closed conns' totals */
#define KDERP_SLOT_CLOSED 0 /* counters of connections that are gone, folded in */
#define KDERP_SLOT_NONE 0xffffffffu /* no slot free: counted in the daemon only */
#define KDERP_PEERS_MAX 65536
#define KDERP_MAX_WORKERS 256

/* Who owns the pins: written once by the daemon before it pins. */
struct kderp_state_meta {
	__u16 magic; /* KDERP_ABI_MAGIC */
	__u16 version; /* KDERP_STATE_VERSION */
	__u32 owner_pid; /* the kderpd that pinned the maps */
	__u64 owner_start; /* its start time, /proc/PID/stat field 22 (clock ticks) */
	__u64 started_unix_ns; /* CLOCK_REALTIME when the daemon started */
	__u32 nr_workers; /* rows of KDERP_MAP_STATS in use */
	__u32 nr_slots; /* entries of KDERP_MAP_PEER_STATS */
	__u16 nr_counters; /* KDERP_NR_COUNTERS at build time */
	__u16 nr_drop_reasons; /* KDERP_NR_DROP_REASONS */
	__u16 nr_rtt_buckets; /* KDERP_NR_RTT_BUCKETS */
	__u16 reserved0;
	__u32 reserved1;
	__u32 reserved2;
};
KDERP_ABI_SIZE(struct kderp_state_meta, 48);
KDERP_ABI_OFF(struct kderp_state_meta, magic, 0);
KDERP_ABI_OFF(struct kderp_state_meta, version, 2);
KDERP_ABI_OFF(struct kderp_state_meta, owner_pid, 4);
KDERP_ABI_OFF(struct kderp_state_meta, owner_start, 8);
KDERP_ABI_OFF(struct kderp_state_meta, started_unix_ns, 16);
KDERP_ABI_OFF(struct kderp_state_meta, nr_workers, 24);
KDERP_ABI_OFF(struct kderp_state_meta, nr_slots, 28);
KDERP_ABI_OFF(struct kderp_state_meta, nr_counters, 32);
KDERP_ABI_OFF(struct kderp_state_meta, nr_drop_reasons, 34);
KDERP_ABI_OFF(struct kderp_state_meta, nr_rtt_buckets, 36);
KDERP_ABI_OFF(struct kderp_state_meta, reserved0, 38);
KDERP_ABI_OFF(struct kderp_state_meta, reserved1, 40);
KDERP_ABI_OFF(struct kderp_state_meta, reserved2, 44);

/* A client's 32-byte public key (Curve25519), as on the wire. */
struct kderp_peer_key {
	__u8 key[32];
};
KDERP_ABI_SIZE(struct kderp_peer_key, 32);

/* kderp_peer_info.flags */
#define KDERP_PEER_PREFERRED 0x01 /* NotePreferred(true): this is the client's home */
#define KDERP_PEER_MESH 0x02 /* presented the mesh key */
#define KDERP_PEER_PROBER 0x04 /* ClientInfo IsProber */
#define KDERP_PEER_DUP 0x08 /* the key has more than one connection */

/* kderp_peer_info.tls_mode (user/server.h enum tls_mode has the same values) */
enum kderp_tls_mode {
	KDERP_TLS_PLAIN = 0,
	KDERP_TLS_USER = 1, /* OpenSSL in user space */
	KDERP_TLS_KTLS_TX = 2, /* kernel encrypts, user space decrypts */
	KDERP_TLS_KTLS_TXRX = 3, /* kernel does both directions */
};

/*
 * One connected key (its newest connection). Written on connect, on
 * NotePreferred and on disconnect, never per packet.
 */
struct kderp_peer_info {
	__u32 slot; /* index into KDERP_MAP_PEER_STATS, or KDERP_SLOT_NONE */
	__u16 worker; /* worker thread that owns the connection */
	__u8 flags; /* KDERP_PEER_* */
	__u8 tls_mode; /* enum kderp_tls_mode */
	__u64 conn_id; /* the daemon's connection number (as in its logs) */
	__u64 connected_unix_ns; /* CLOCK_REALTIME at registration */
	__u8 addr[16]; /* remote IP; IPv4 as ::ffff:a.b.c.d */
	__u16 port; /* remote TCP port, host byte order */
	__u16 nr_conns; /* connections with this key (> 1: duplicates) */
	__u32 reserved;
};
KDERP_ABI_SIZE(struct kderp_peer_info, 48);
KDERP_ABI_OFF(struct kderp_peer_info, slot, 0);
KDERP_ABI_OFF(struct kderp_peer_info, worker, 4);
KDERP_ABI_OFF(struct kderp_peer_info, flags, 6);
KDERP_ABI_OFF(struct kderp_peer_info, tls_mode, 7);
KDERP_ABI_OFF(struct kderp_peer_info, conn_id, 8);
KDERP_ABI_OFF(struct kderp_peer_info, connected_unix_ns, 16);
KDERP_ABI_OFF(struct kderp_peer_info, addr, 24);
KDERP_ABI_OFF(struct kderp_peer_info, port, 40);
KDERP_ABI_OFF(struct kderp_peer_info, nr_conns, 42);
KDERP_ABI_OFF(struct kderp_peer_info, reserved, 44);

/* Drop reasons (derper's label values), in index order. Append only. */
#define KDERP_DROP_REASONS(X)                         \
	X(UNKNOWN_DEST, "unknown_dest")               \
	X(UNKNOWN_DEST_ON_FWD, "unknown_dest_on_fwd") \
	X(GONE_DISCONNECTED, "gone_disconnected")     \
	X(QUEUE_HEAD, "queue_head")                   \
	X(QUEUE_TAIL, "queue_tail")                   \
	X(WRITE_ERROR, "write_error")                 \
	X(DUP_CLIENT, "dup_client")

enum kderp_drop_reason {
#define KDERP_X_(e, s) KDERP_DROP_##e,
	KDERP_DROP_REASONS(KDERP_X_)
#undef KDERP_X_
		KDERP_NR_DROP_REASONS
};

/* Drop kinds: derper's "disco" and "other". */
enum kderp_drop_kind { KDERP_KIND_DISCO = 0, KDERP_KIND_OTHER = 1, KDERP_NR_KINDS };

/*
 * Per-connection counters, one slot each. pkts/bytes are payload counts of
 * SendPacket read from (in) and RecvPacket written to (out) this client. The
 * owning worker writes them with plain stores; other workers add to drops
 * atomically (packets to this client they dropped).
 */
struct kderp_peer_stats {
	__u64 pkts_in;
	__u64 bytes_in;
	__u64 pkts_out;
	__u64 bytes_out;
	__u64 drops; /* all reasons */
	__u64 reserved[3];
	__u64 drops_reason[8]; /* by enum kderp_drop_reason */
};
KDERP_ABI_SIZE(struct kderp_peer_stats, 128);
KDERP_ABI_OFF(struct kderp_peer_stats, pkts_in, 0);
KDERP_ABI_OFF(struct kderp_peer_stats, bytes_in, 8);
KDERP_ABI_OFF(struct kderp_peer_stats, pkts_out, 16);
KDERP_ABI_OFF(struct kderp_peer_stats, bytes_out, 24);
KDERP_ABI_OFF(struct kderp_peer_stats, drops, 32);
KDERP_ABI_OFF(struct kderp_peer_stats, drops_reason, 64);
KDERP_ABI_ASSERT(KDERP_NR_DROP_REASONS <= 8, "drops_reason too small");

/* Global counters: index, name (derper's, without "derp_"), help. Append only. */
#define KDERP_COUNTERS(X)                                                                         \
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
	X(CTL_DROPS, "control_frames_dropped", "control frames dropped (queue full)")             \
	X(HANDSHAKES, "handshakes", "DERP handshakes completed (ClientInfo accepted)")            \
	X(HS_FAIL_CLIENT_INFO, "handshake_failures_client_info",                                  \
	  "handshakes failed: ClientInfo could not be opened or parsed")                          \
	X(HS_FAIL_PROTOCOL, "handshake_failures_protocol",                                        \
	  "handshakes failed: a bad frame before ClientInfo")                                     \
	X(HS_FAIL_CLOSED, "handshake_failures_closed",                                            \
	  "handshakes failed: the client closed before its ClientInfo was complete")              \
	X(HS_FAIL_TIMEOUT, "handshake_failures_timeout",                                          \
	  "connections closed by the 10 s setup deadline (TLS, request or ClientInfo)")           \
	X(HS_FAIL_TLS, "handshake_failures_tls", "TLS handshakes that failed")                    \
	X(HS_FAIL_INTERNAL, "handshake_failures_internal",                                        \
	  "handshakes failed on the server's side (sealing ServerInfo, memory)")                  \
	X(ACCEPT_ERRORS, "accept_errors",                                                         \
	  "accept() failures for lack of file descriptors or memory (accepting pauses briefly)")

enum kderp_counter {
#define KDERP_X_(e, n, h) KDERP_CTR_##e,
	KDERP_COUNTERS(KDERP_X_)
#undef KDERP_X_
		KDERP_NR_COUNTERS
};

/* derp_tcp_rtt buckets: 10, 20, 50, 100, 150, 250, 500 ms, inf, error. */
#define KDERP_NR_RTT_BUCKETS 9

/*
 * One worker's counters (one row of KDERP_MAP_STATS per worker thread, only
 * that worker writes it). Totals are the sum of the rows in use
 * (kderp_state_meta.nr_workers).
 */
struct kderp_worker_stats {
	__u64 c[32]; /* by enum kderp_counter */
	__u64 drop_pkts[8][2]; /* [enum kderp_drop_reason][enum kderp_drop_kind] */
	__u64 drop_bytes[8][2];
	__u64 rtt[16]; /* derp_tcp_rtt buckets, KDERP_NR_RTT_BUCKETS used */
};
KDERP_ABI_SIZE(struct kderp_worker_stats, 640);
KDERP_ABI_OFF(struct kderp_worker_stats, c, 0);
KDERP_ABI_OFF(struct kderp_worker_stats, drop_pkts, 256);
KDERP_ABI_OFF(struct kderp_worker_stats, drop_bytes, 384);
KDERP_ABI_OFF(struct kderp_worker_stats, rtt, 512);
KDERP_ABI_ASSERT(KDERP_NR_COUNTERS <= 32, "kderp_worker_stats.c too small");
KDERP_ABI_ASSERT(KDERP_NR_KINDS == 2, "drop kinds");

/* Where kderpd pins the state maps unless told otherwise (--bpffs-dir). */
#define KDERP_PIN_DIR_DEFAULT "/sys/fs/bpf/kderp"

/*
 * The daemon's control socket: a unix stream socket at a path in a
 * directory only root (or the daemon's own user) may write, never an
 * abstract name (anyone may bind one of those first). The daemon binds and
 * listens as root before it drops privileges, so SO_PEERCRED shows its
 * clients uid 0 and the daemon's pid: kderpctl talks only to such a server
 * whose pid is the owner_pid of the pins.
 *
 * The path is --ctl when given, else in the run directory ($RUNTIME_DIRECTORY,
 * else KDERP_CTL_RUNDIR for root, else $XDG_RUNTIME_DIR/kderpd, else
 * /tmp/kderpd-UID): KDERP_CTL_NAME for the default pin directory,
 * "ctl-" + the pin directory with '/' as '+' (leading ones dropped) and
 * bytes other than [A-Za-z0-9._-] as %XX + ".sock" for another, and
 * "ctl-PID.sock" when nothing is pinned (--bpffs-dir="", or no BPF). A
 * lock file, the path + ".lock", tells a live owner from a stale socket.
 *
 * One request line, one reply line: "ping" -> "ok PID"; "close-peer HEX64"
 * -> "ok N" (N connections asked to close); errors -> "err TEXT".
 */
#define KDERP_CTL_RUNDIR "/run/kderpd"
#define KDERP_CTL_NAME "ctl.sock"

#endif /* KDERP_ABI_H */
