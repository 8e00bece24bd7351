// SPDX-License-Identifier: MIT
/*
 * stun_xdp.bpf.c - answer Tailscale STUN binding requests in XDP.
 *
 * Behaviour matches derper's XDP STUN server (derp-protocol.md 4.6): a
 * binding request to the configured UDP port whose first attribute is
 * SOFTWARE "tailnode" is turned, in place, into a binding success response
 * carrying only XOR-MAPPED-ADDRESS and sent back out of the interface it came
 * in on (XDP_TX). Everything else goes to the kernel (XDP_PASS) untouched.
 * FINGERPRINT is not checked here; user space checks it.
 *
 * Every packet is counted once, by (address family, outcome, where the
 * program ended), in packets and in bytes of the frame at exit.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "kderp_abi.h"
#include "stun_wire.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* key 0 -> struct kderp_stun_cfg (port answered, drop switch) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kderp_stun_cfg);
} KDERP_MAP_STUN_CFG SEC(".maps");

/* kderp_stun_counter_idx(af, outcome, end) -> packets and bytes, per CPU */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KDERP_STUN_NR_COUNTERS);
	__type(key, __u32);
	__type(value, struct kderp_stun_counter);
} KDERP_MAP_STUN_CNT SEC(".maps");

#define IPV4_MF 0x2000
#define IPV4_OFFSET 0x1fff

/* Largest UDP datagram (header included) whose checksum is verified. */
#define UDP_CSUM_MAX_V4 1480
#define UDP_CSUM_MAX_V6 1460

#define REPLY_TTL 64

struct stun_hdr {
	__be16 type;
	__be16 len;
	__be32 cookie;
	__be32 txid[3];
};

struct stun_attr {
	__be16 type;
	__be16 len;
};

/* Binding success with one XOR-MAPPED-ADDRESS, IPv4: 32 bytes. */
struct stun_reply4 {
	struct stun_hdr hdr;
	struct stun_attr attr;
	__u8 zero;
	__u8 family;
	__be16 port;
	__be32 addr;
};

/* The same for IPv6: 44 bytes. */
struct stun_reply6 {
	struct stun_hdr hdr;
	struct stun_attr attr;
	__u8 zero;
	__u8 family;
	__be16 port;
	__be32 addr[4];
};

_Static_assert(sizeof(struct stun_hdr) == 20, "STUN header");
_Static_assert(sizeof(struct stun_reply4) == 32, "IPv4 reply");
_Static_assert(sizeof(struct stun_reply6) == 44, "IPv6 reply");

#define REPLY4_LEN                                                              \
	(sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr) + \
	 sizeof(struct stun_reply4))
#define REPLY6_LEN                                                                \
	(sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + sizeof(struct udphdr) + \
	 sizeof(struct stun_reply6))

struct verdict {
	__u32 af;
	__u32 end;
};

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* One's complement sum of a fixed number of 16-bit words (memory order). */
#define SUM_WORDS(ptr, nwords)                                                              \
	({                                                                                  \
		const __u16 *__w = (const void *)(ptr);                                     \
		__u64 __s = 0;                                                              \
		_Pragma("unroll") for (int __i = 0; __i < (nwords); __i++) __s += __w[__i]; \
		__s;                                                                        \
	})

/*
 * One's complement sum (memory order, not folded to 16 bits) of the UDP
 * datagram at @udp_off to the end of the frame, at most @max bytes; an odd
 * last byte counts as the high byte of a zero-padded word.
 *
 * A global function: the verifier checks it once, on its own, instead of
 * walking the rest of the program from every iteration of the loop for each
 * caller (this keeps loading fast, also on slow machines).
 */
__noinline int kderp_udp_sum(struct xdp_md *ctx, __u32 udp_off, __u32 max)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const __u16 *p;
	__u64 sum = 0;

	if (udp_off > 64)
		return 0;
	p = data + udp_off;
#pragma clang loop unroll(disable)
	for (int i = 0; i < UDP_CSUM_MAX_V4 / 2; i++) {
		if (i >= (int)(max / 2) || (const void *)(p + 1) > data_end)
			break;
		sum += *p;
		p++;
	}
	if ((const void *)p + 1 <= data_end && (const void *)p + 2 > data_end)
		sum += *(const __u8 *)p;
	/* fold to 17 bits at most so it fits the int return value */
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (int)sum;
}

static __always_inline __u64 pseudo4(const struct iphdr *ip, __be16 udp_len)
{
	return (__u64)ip->saddr + ip->daddr + bpf_htons(IPPROTO_UDP) + udp_len;
}

static __always_inline __u64 pseudo6(const struct ipv6hdr *ip6, __be16 udp_len)
{
	const __u32 *a = (const void *)&ip6->saddr;
	__u64 sum = bpf_htons(IPPROTO_UDP) + udp_len;

	/* saddr and daddr are adjacent: 8 words of 32 bits */
	for (int i = 0; i < 8; i++)
		sum += a[i];
	return sum;
}

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
}

static __always_inline void swap_ports(struct udphdr *udp)
{
	__be16 port = udp->source;

	udp->source = udp->dest;
	udp->dest = port;
}

static __always_inline void fill_stun_header(struct stun_hdr *hdr, __u16 len)
{
	hdr->type = bpf_htons(STUN_BINDING_SUCCESS);
	hdr->len = bpf_htons(len);
	/* cookie and transaction id stay as they came */
}

static __always_inline int reply4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	struct stun_reply4 *r = (void *)(udp + 1);
	__be32 addr;
	__u16 csum;

	if ((void *)(r + 1) > data_end)
		return XDP_ABORTED;

	swap_macs(eth);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*udp) + sizeof(*r));
	ip->ttl = REPLY_TTL;
	ip->check = 0;
	ip->check = csum_fold(SUM_WORDS(ip, sizeof(*ip) / 2));

	swap_ports(udp);
	udp->len = bpf_htons(sizeof(*udp) + sizeof(*r));
	udp->check = 0;

	fill_stun_header(&r->hdr, sizeof(r->attr) + 8);
	r->attr.type = bpf_htons(STUN_ATTR_XOR_MAPPED_ADDRESS);
	r->attr.len = bpf_htons(8);
	r->zero = 0;
	r->family = STUN_FAMILY_IPV4;
	r->port = udp->dest ^ bpf_htons(STUN_PORT_XOR);
	r->addr = ip->daddr ^ bpf_htonl(STUN_MAGIC);

	csum = csum_fold(pseudo4(ip, udp->len) + SUM_WORDS(udp, (sizeof(*udp) + sizeof(*r)) / 2));
	udp->check = csum ? csum : 0xffff;
	return XDP_TX;
}

static __always_inline int reply6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip6 + 1);
	struct stun_reply6 *r = (void *)(udp + 1);
	struct in6_addr addr;
	__u16 csum;

	if ((void *)(r + 1) > data_end)
		return XDP_ABORTED;

	swap_macs(eth);
	__builtin_memcpy(&addr, &ip6->saddr, sizeof(addr));
	__builtin_memcpy(&ip6->saddr, &ip6->daddr, sizeof(addr));
	__builtin_memcpy(&ip6->daddr, &addr, sizeof(addr));
	ip6->payload_len = bpf_htons(sizeof(*udp) + sizeof(*r));
	ip6->hop_limit = REPLY_TTL;

	swap_ports(udp);
	udp->len = bpf_htons(sizeof(*udp) + sizeof(*r));
	udp->check = 0;

	fill_stun_header(&r->hdr, sizeof(r->attr) + 20);
	r->attr.type = bpf_htons(STUN_ATTR_XOR_MAPPED_ADDRESS);
	r->attr.len = bpf_htons(20);
	r->zero = 0;
	r->family = STUN_FAMILY_IPV6;
	r->port = udp->dest ^ bpf_htons(STUN_PORT_XOR);
	r->addr[0] = addr.in6_u.u6_addr32[0] ^ bpf_htonl(STUN_MAGIC);
	r->addr[1] = addr.in6_u.u6_addr32[1] ^ r->hdr.txid[0];
	r->addr[2] = addr.in6_u.u6_addr32[2] ^ r->hdr.txid[1];
	r->addr[3] = addr.in6_u.u6_addr32[3] ^ r->hdr.txid[2];

	csum = csum_fold(pseudo6(ip6, udp->len) + SUM_WORDS(udp, (sizeof(*udp) + sizeof(*r)) / 2));
	udp->check = csum ? csum : 0xffff;
	return XDP_TX;
}

static __always_inline int stun_handle(struct xdp_md *ctx, struct verdict *v)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	static const char software[STUN_SOFTWARE_LEN] = "tailnode";
	struct ethhdr *eth = data;
	struct iphdr *ip = data;
	struct ipv6hdr *ip6 = data;
	struct kderp_stun_cfg *cfg;
	struct stun_hdr *sh;
	struct stun_attr *sa;
	struct udphdr *udp;
	int check_udp, is_v4;
	__u32 zero = 0;
	__u8 *sw;
	int delta;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		v->af = KDERP_STUN_AF_IPV4;
		is_v4 = 1;
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		if (ip->ihl != 5 || ip->version != 4 || ip->protocol != IPPROTO_UDP)
			return XDP_PASS;
		if (ip->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET))
			return XDP_PASS;
		if (csum_fold(SUM_WORDS(ip, sizeof(*ip) / 2)) != 0) {
			v->end = KDERP_STUN_END_INVALID_IP_CSUM;
			return XDP_PASS;
		}
		if (bpf_ntohs(ip->tot_len) != data_end - (void *)ip)
			return XDP_PASS;
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > data_end)
			return XDP_PASS;
		/* IPv4 allows a zero ("none") UDP checksum */
		check_udp = udp->check != 0;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		v->af = KDERP_STUN_AF_IPV6;
		is_v4 = 0;
		ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return XDP_PASS;
		if (bpf_ntohs(ip6->payload_len) != data_end - (void *)(ip6 + 1))
			return XDP_PASS;
		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end)
			return XDP_PASS;
		/* IPv6 has no "no checksum": zero fails validation below */
		check_udp = 1;
	} else {
		return XDP_PASS;
	}

	cfg = bpf_map_lookup_elem(&KDERP_MAP_STUN_CFG, &zero);
	if (!cfg || cfg->magic != KDERP_ABI_MAGIC || cfg->abi_version != KDERP_ABI_VERSION)
		return XDP_PASS;
	if (bpf_ntohs(udp->len) != data_end - (void *)udp)
		return XDP_PASS;
	if (bpf_ntohs(udp->dest) != cfg->dst_port) {
		v->end = KDERP_STUN_END_NOT_STUN_PORT;
		return XDP_PASS;
	}
	if (cfg->drop_stun) {
		v->end = KDERP_STUN_END_DROP_STUN;
		return XDP_DROP;
	}

	if (check_udp) {
		__u64 sum;

		/* a scalar flag, not pointer tests: the verifier follows scalars */
		if (is_v4)
			sum = pseudo4(ip, udp->len) +
				(__u32)kderp_udp_sum(ctx, (void *)udp - data, UDP_CSUM_MAX_V4);
		else
			sum = pseudo6(ip6, udp->len) +
				(__u32)kderp_udp_sum(ctx, (void *)udp - data, UDP_CSUM_MAX_V6);
		if (csum_fold(sum) != 0) {
			v->end = KDERP_STUN_END_INVALID_UDP_CSUM;
			return XDP_PASS;
		}
	}

	sh = (void *)(udp + 1);
	if ((void *)(sh + 1) > data_end)
		return XDP_PASS;
	if (sh->type != bpf_htons(STUN_BINDING_REQUEST) || sh->cookie != bpf_htonl(STUN_MAGIC))
		return XDP_PASS;
	if (bpf_ntohs(sh->len) != data_end - (void *)(sh + 1))
		return XDP_PASS;
	sa = (void *)(sh + 1);
	if ((void *)(sa + 1) > data_end)
		return XDP_PASS;
	if (sa->type != bpf_htons(STUN_ATTR_SOFTWARE) || sa->len != bpf_htons(STUN_SOFTWARE_LEN)) {
		v->end = KDERP_STUN_END_UNEXPECTED_FIRST_STUN_ATTR;
		return XDP_PASS;
	}
	sw = (void *)(sa + 1);
	if ((void *)(sw + STUN_SOFTWARE_LEN) > data_end)
		return XDP_PASS;
	for (int i = 0; i < STUN_SOFTWARE_LEN; i++) {
		if (sw[i] != software[i]) {
			v->end = KDERP_STUN_END_INVALID_SW_ATTR_VAL;
			return XDP_PASS;
		}
	}

	/* From here on the packet is ours: a bounds failure is an abort. */
	if (is_v4)
		delta = (int)REPLY4_LEN - (int)(data_end - data);
	else
		delta = (int)REPLY6_LEN - (int)(data_end - data);
	if (bpf_xdp_adjust_tail(ctx, delta))
		return XDP_ABORTED;
	if (is_v4)
		return reply4(ctx);
	return reply6(ctx);
}

SEC("xdp")
int KDERP_PROG_STUN_XDP(struct xdp_md *ctx)
{
	struct verdict v = {.af = KDERP_STUN_AF_UNKNOWN, .end = KDERP_STUN_END_UNSPECIFIED};
	struct kderp_stun_counter *c;
	int action;
	__u32 idx;

	action = stun_handle(ctx, &v);

	idx = kderp_stun_counter_idx(v.af, kderp_stun_outcome_of(action), v.end);
	c = bpf_map_lookup_elem(&KDERP_MAP_STUN_CNT, &idx);
	if (c) {
		/* per-CPU slot: XDP does not nest on one CPU, plain adds suffice */
		c->packets += 1;
		c->bytes += ctx->data_end - ctx->data;
	}
	return action;
}
