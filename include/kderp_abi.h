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
 * Sections: common, STUN XDP (kern/stun_xdp.bpf.c). New units append a
 * section of their own below the last one.
 */
#ifndef KDERP_ABI_H
#define KDERP_ABI_H

#include <linux/types.h>

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

#endif /* KDERP_ABI_H */
