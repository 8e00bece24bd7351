// SPDX-License-Identifier: MIT
/*
 * test_xdp_stun.c - the XDP STUN program under BPF_PROG_TEST_RUN.
 *
 * The first 28 variants are derper's XDP test table (derp-protocol 5.6): the
 * same mutations, actions and prog_end labels. Every case checks the action,
 * the exact output frame (for TX: the reply written out here byte by byte,
 * with TTL / hop limit 64 and fresh checksums), and that exactly one counter
 * slot moved, by one packet and by the frame length at exit. The remaining
 * variants are extra bad-input cases. Needs root (BPF); SKIPs otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include <linux/bpf.h>
#include <bpf/bpf.h>

#include "harness.h"
#include "stun.h"
#include "stun_xdp.h"

#define STUN_PORT 3478
#define CLIENT_PORT 1025
#define L3 14

static const uint8_t mac_cli[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
static const uint8_t mac_srv[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
static const uint8_t ip4_cli[4] = {192, 0, 2, 1};
static const uint8_t ip4_srv[4] = {192, 0, 2, 2};
static const uint8_t ip6_cli[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
static const uint8_t ip6_srv[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2};
static const uint8_t txid[12] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8};

struct frame {
	uint8_t b[512];
	size_t len;
	bool v6;
	size_t l4, l7; /* offsets of UDP and STUN */
};

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

/* One's complement sum of big-endian 16-bit words, odd byte zero-padded. */
static uint32_t sum16(const uint8_t *p, size_t n)
{
	uint32_t s = 0;

	for (size_t i = 0; i + 1 < n; i += 2)
		s += get16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void fix_ip(struct frame *f)
{
	uint8_t *ip = f->b + L3;

	if (f->v6)
		return;
	put16(ip + 10, 0);
	put16(ip + 10, fold(sum16(ip, 20)));
}

static void fix_udp(struct frame *f)
{
	uint8_t *ip = f->b + L3, *udp = f->b + f->l4;
	uint16_t ulen = get16(udp + 4);
	uint32_t s;
	uint16_t c;

	put16(udp + 6, 0);
	if (f->v6)
		s = sum16(ip + 8, 32) + ulen + IPPROTO_UDP;
	else
		s = sum16(ip + 12, 8) + ulen + IPPROTO_UDP;
	s += sum16(udp, f->len - f->l4);
	c = fold(s);
	put16(udp + 6, c ? c : 0xffff);
}

/* Ethernet + IP + UDP around @stun_len bytes already at f->l7. */
static void wrap(struct frame *f, size_t stun_len, bool v6, bool fwd)
{
	uint8_t *ip = f->b + L3, *udp;

	memcpy(f->b, fwd ? mac_srv : mac_cli, 6);
	memcpy(f->b + 6, fwd ? mac_cli : mac_srv, 6);
	f->v6 = v6;
	if (v6) {
		put16(f->b + 12, 0x86dd);
		memset(ip, 0, 40);
		ip[0] = 0x60;
		put16(ip + 4, (uint16_t)(8 + stun_len));
		ip[6] = IPPROTO_UDP;
		ip[7] = 64;
		memcpy(ip + 8, fwd ? ip6_cli : ip6_srv, 16);
		memcpy(ip + 24, fwd ? ip6_srv : ip6_cli, 16);
	} else {
		put16(f->b + 12, 0x0800);
		memset(ip, 0, 20);
		ip[0] = 0x45;
		put16(ip + 2, (uint16_t)(20 + 8 + stun_len));
		put16(ip + 4, 0x1234); /* id */
		put16(ip + 6, 0x4000); /* DF */
		ip[8] = 64;
		ip[9] = IPPROTO_UDP;
		memcpy(ip + 12, fwd ? ip4_cli : ip4_srv, 4);
		memcpy(ip + 16, fwd ? ip4_srv : ip4_cli, 4);
	}
	udp = f->b + f->l4;
	put16(udp, fwd ? CLIENT_PORT : STUN_PORT);
	put16(udp + 2, fwd ? STUN_PORT : CLIENT_PORT);
	put16(udp + 4, (uint16_t)(8 + stun_len));
	f->len = f->l7 + stun_len;
	fix_ip(f);
	fix_udp(f);
}

static void set_offsets(struct frame *f, bool v6)
{
	memset(f, 0, sizeof(*f));
	f->l4 = L3 + (v6 ? 40 : 20);
	f->l7 = f->l4 + 8;
}

/* Tailscale's 40-byte binding request from client to server. */
static void build_request(struct frame *f, bool v6)
{
	set_offsets(f, v6);
	kderp_stun_build_request(f->b + f->l7, sizeof(f->b) - f->l7, txid);
	wrap(f, KDERP_STUN_REQUEST_LEN, v6, true);
}

/* The reply the program must produce (TTL / hop limit 64, ports swapped). */
static void build_reply(struct frame *f, bool v6)
{
	/* written out by hand (per derp-protocol 4.5), not with the code under test */
	static const uint8_t cookie[4] = {0x21, 0x12, 0xa4, 0x42};
	const uint8_t *ip = v6 ? ip6_cli : ip4_cli;
	size_t alen = v6 ? 16 : 4;
	uint8_t *m;

	set_offsets(f, v6);
	m = f->b + f->l7;
	put16(m, 0x0101);
	put16(m + 2, (uint16_t)(8 + alen));
	memcpy(m + 4, cookie, 4);
	memcpy(m + 8, txid, 12);
	put16(m + 20, 0x0020);
	put16(m + 22, (uint16_t)(4 + alen));
	m[24] = 0;
	m[25] = v6 ? 2 : 1;
	put16(m + 26, CLIENT_PORT ^ 0x2112);
	for (size_t i = 0; i < alen; i++)
		m[28 + i] = ip[i] ^ (i < 4 ? cookie[i] : txid[i - 4]);
	wrap(f, 28 + alen, v6, false);
}

/* ---- mutations ----------------------------------------------------------- */

enum { FIX_NONE = 0, FIX_IP = 1, FIX_UDP = 2 };

static void m_none(struct frame *f)
{
}

static void m_ip_csum(struct frame *f)
{
	f->b[L3 + 11] ^= 0x5a;
}

static void m_ihl(struct frame *f)
{
	f->b[L3] = 0x46;
}

static void m_ip_version(struct frame *f)
{
	f->b[L3] = (uint8_t)((f->v6 ? 0x40 : 0x50) | (f->b[L3] & 0x0f));
}

static void m_ip_proto(struct frame *f)
{
	f->b[L3 + (f->v6 ? 6 : 9)] = IPPROTO_TCP;
}

static void m_frag_offset(struct frame *f)
{
	put16(f->b + L3 + 6, 0x0001);
}

static void m_flags_mf(struct frame *f)
{
	put16(f->b + L3 + 6, 0x2000);
}

static void m_ip_len(struct frame *f)
{
	uint8_t *p = f->b + L3 + (f->v6 ? 4 : 2);

	put16(p, get16(p) + 1);
}

static void m_udp_csum(struct frame *f)
{
	uint8_t *c = f->b + f->l4 + 6;

	c[1] ^= 0x01;
	if (!get16(c))
		c[1] ^= 0x03;
}

static void m_udp_zero_csum(struct frame *f)
{
	put16(f->b + f->l4 + 6, 0);
}

static void m_stun_type(struct frame *f)
{
	put16(f->b + f->l7, 0x0111);
}

static void m_stun_magic(struct frame *f)
{
	f->b[f->l7 + 4] ^= 0xff;
}

static void m_stun_len(struct frame *f)
{
	put16(f->b + f->l7 + 2, get16(f->b + f->l7 + 2) + 4);
}

static void m_sw_val(struct frame *f)
{
	f->b[f->l7 + 31] = 'f';
}

static void m_first_attr(struct frame *f)
{
	put16(f->b + f->l7 + 20, 0x8023);
}

static void m_huge_attr(struct frame *f)
{
	put16(f->b + f->l7 + 22, 0xfff8);
}

static void m_bad_fingerprint(struct frame *f)
{
	f->b[f->len - 1] ^= 0xff;
}

static void m_other_port(struct frame *f)
{
	put16(f->b + f->l4 + 2, STUN_PORT + 1);
}

static void m_eth_padding(struct frame *f)
{
	/* 6 trailing pad bytes a NIC might leave: IP length no longer matches */
	memset(f->b + f->len, 0, 6);
	f->len += 6;
}

static void m_ip_options(struct frame *f)
{
	uint8_t *ip = f->b + L3;

	/* a real 4-byte option block (four NOPs) between IP and UDP */
	memmove(ip + 24, ip + 20, f->len - (L3 + 20));
	memset(ip + 20, 1, 4);
	ip[0] = 0x46;
	put16(ip + 2, get16(ip + 2) + 4);
	f->len += 4;
	f->l4 += 4;
	f->l7 += 4;
}

static void m_v6_ext_header(struct frame *f)
{
	f->b[L3 + 6] = 0; /* hop-by-hop options first */
}

static void m_trunc_after_eth(struct frame *f)
{
	f->len = L3;
}

static void m_trunc_in_ip(struct frame *f)
{
	f->len = L3 + 10;
}

static void m_trunc_in_udp(struct frame *f)
{
	f->len = f->l4 + 4;
}

static void m_arp(struct frame *f)
{
	put16(f->b + 12, 0x0806);
}

static void m_extra_attrs(struct frame *f)
{
	/* one more attribute after FINGERPRINT: XDP does not care, replies */
	uint8_t *s = f->b + f->l7;

	put16(s + 40, 0x8023);
	put16(s + 42, 4);
	memcpy(s + 44, "abcd", 4);
	put16(s + 2, get16(s + 2) + 8);
	f->len += 8;
	put16(f->b + f->l4 + 4, get16(f->b + f->l4 + 4) + 8);
	if (f->v6)
		put16(f->b + L3 + 4, get16(f->b + L3 + 4) + 8);
	else
		put16(f->b + L3 + 2, get16(f->b + L3 + 2) + 8);
}

static void m_no_fingerprint(struct frame *f)
{
	/* SOFTWARE only (32-byte STUN): the IPv6 reply must grow by 12 */
	uint8_t *s = f->b + f->l7;

	put16(s + 2, 12);
	f->len -= 8;
	put16(f->b + f->l4 + 4, get16(f->b + f->l4 + 4) - 8);
	if (f->v6)
		put16(f->b + L3 + 4, get16(f->b + L3 + 4) - 8);
	else
		put16(f->b + L3 + 2, get16(f->b + L3 + 2) - 8);
}

/* ---- fixture --------------------------------------------------------------- */

FIXTURE(xdp)
{
	struct kderp_xdp *x;
};

FIXTURE_VARIANT(xdp)
{
	bool v6;
	void (*mutate)(struct frame * f);
	int fix;
	bool drop_stun;
	int action;
	unsigned int end;
	bool af_unknown; /* not IPv4/IPv6: counted with af "unknown" */
};

#define V4 .v6 = false
#define V6 .v6 = true
#define PASS(e) .action = XDP_PASS, .end = KDERP_STUN_END_##e
#define TX .action = XDP_TX, .end = KDERP_STUN_END_UNSPECIFIED

/* derper's table */
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_Drop_STUN){V4, .mutate = m_none,
							      .drop_stun = true, .action = XDP_DROP,
							      .end = KDERP_STUN_END_DROP_STUN};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_TX){V4, .mutate = m_none, TX};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_invalid_ip_csum_PASS){V4, .mutate = m_ip_csum,
									 PASS(INVALID_IP_CSUM)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_ihl_PASS){V4, .mutate = m_ihl, .fix = FIX_IP,
							     PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_ip_version_PASS){
	V4, .mutate = m_ip_version, .fix = FIX_IP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_ip_proto_PASS){V4, .mutate = m_ip_proto,
								  .fix = FIX_IP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_frag_offset_PASS){
	V4, .mutate = m_frag_offset, .fix = FIX_IP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_flags_mf_PASS){V4, .mutate = m_flags_mf,
								  .fix = FIX_IP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_tot_len_PASS){V4, .mutate = m_ip_len,
								 .fix = FIX_IP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_UDP_csum_PASS){V4, .mutate = m_udp_csum,
								  PASS(INVALID_UDP_CSUM)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_STUN_type_PASS){
	V4, .mutate = m_stun_type, .fix = FIX_UDP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_STUN_magic_PASS){
	V4, .mutate = m_stun_magic, .fix = FIX_UDP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_STUN_attrs_len_PASS){
	V4, .mutate = m_stun_len, .fix = FIX_UDP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_STUN_SW_val_PASS){
	V4, .mutate = m_sw_val, .fix = FIX_UDP, PASS(INVALID_SW_ATTR_VAL)};
FIXTURE_VARIANT_ADD(xdp, ipv4_STUN_Binding_Request_STUN_first_attr_PASS){
	V4, .mutate = m_first_attr, .fix = FIX_UDP, PASS(UNEXPECTED_FIRST_STUN_ATTR)};
FIXTURE_VARIANT_ADD(xdp, ipv4_UDP_zero_csum_TX){V4, .mutate = m_udp_zero_csum, TX};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_Drop_STUN){V6, .mutate = m_none,
							      .drop_stun = true, .action = XDP_DROP,
							      .end = KDERP_STUN_END_DROP_STUN};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_TX){V6, .mutate = m_none, TX};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_ip_version_PASS){V6, .mutate = m_ip_version,
								    PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_next_hdr_PASS){V6, .mutate = m_ip_proto,
								  PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_payload_len_PASS){V6, .mutate = m_ip_len,
								     PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_UDP_csum_PASS){V6, .mutate = m_udp_csum,
								  PASS(INVALID_UDP_CSUM)};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_STUN_type_PASS){
	V6, .mutate = m_stun_type, .fix = FIX_UDP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_STUN_magic_PASS){
	V6, .mutate = m_stun_magic, .fix = FIX_UDP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_STUN_attrs_len_PASS){
	V6, .mutate = m_stun_len, .fix = FIX_UDP, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_STUN_SW_val_PASS){
	V6, .mutate = m_sw_val, .fix = FIX_UDP, PASS(INVALID_SW_ATTR_VAL)};
FIXTURE_VARIANT_ADD(xdp, ipv6_STUN_Binding_Request_STUN_first_attr_PASS){
	V6, .mutate = m_first_attr, .fix = FIX_UDP, PASS(UNEXPECTED_FIRST_STUN_ATTR)};
FIXTURE_VARIANT_ADD(xdp, ipv6_UDP_zero_csum_PASS){V6, .mutate = m_udp_zero_csum,
						  PASS(INVALID_UDP_CSUM)};

/* extra bad input */
FIXTURE_VARIANT_ADD(xdp, ipv4_not_stun_port_PASS){V4, .mutate = m_other_port, .fix = FIX_UDP,
						  PASS(NOT_STUN_PORT)};
FIXTURE_VARIANT_ADD(xdp, ipv6_not_stun_port_PASS){V6, .mutate = m_other_port, .fix = FIX_UDP,
						  PASS(NOT_STUN_PORT)};
FIXTURE_VARIANT_ADD(xdp, ipv4_eth_padding_PASS){V4, .mutate = m_eth_padding, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_eth_padding_PASS){V6, .mutate = m_eth_padding, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_ip_options_PASS){V4, .mutate = m_ip_options, .fix = FIX_IP | FIX_UDP,
					       PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_ext_header_PASS){V6, .mutate = m_v6_ext_header, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_huge_attr_len_PASS){V4, .mutate = m_huge_attr, .fix = FIX_UDP,
						  PASS(UNEXPECTED_FIRST_STUN_ATTR)};
FIXTURE_VARIANT_ADD(xdp, ipv6_huge_attr_len_PASS){V6, .mutate = m_huge_attr, .fix = FIX_UDP,
						  PASS(UNEXPECTED_FIRST_STUN_ATTR)};
FIXTURE_VARIANT_ADD(xdp, ipv4_trunc_after_eth_PASS){V4, .mutate = m_trunc_after_eth,
						    PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_trunc_in_ip_PASS){V4, .mutate = m_trunc_in_ip, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv6_trunc_in_ip_PASS){V6, .mutate = m_trunc_in_ip, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, ipv4_trunc_in_udp_PASS){V4, .mutate = m_trunc_in_udp, PASS(UNSPECIFIED)};
FIXTURE_VARIANT_ADD(xdp, arp_PASS){V4, .mutate = m_arp, PASS(UNSPECIFIED), .af_unknown = true};
/* XDP checks SOFTWARE only; FINGERPRINT and later attributes are user space's business */
FIXTURE_VARIANT_ADD(xdp, ipv4_bad_fingerprint_TX){V4, .mutate = m_bad_fingerprint, .fix = FIX_UDP,
						  TX};
FIXTURE_VARIANT_ADD(xdp, ipv6_bad_fingerprint_TX){V6, .mutate = m_bad_fingerprint, .fix = FIX_UDP,
						  TX};
FIXTURE_VARIANT_ADD(xdp, ipv4_extra_attrs_TX){V4, .mutate = m_extra_attrs, .fix = FIX_IP | FIX_UDP,
					      TX};
FIXTURE_VARIANT_ADD(xdp, ipv6_extra_attrs_TX){V6, .mutate = m_extra_attrs, .fix = FIX_UDP, TX};
FIXTURE_VARIANT_ADD(xdp, ipv4_no_fingerprint_TX){V4, .mutate = m_no_fingerprint,
						 .fix = FIX_IP | FIX_UDP, TX};
FIXTURE_VARIANT_ADD(xdp, ipv6_no_fingerprint_TX){V6, .mutate = m_no_fingerprint, .fix = FIX_UDP,
						 TX};

FIXTURE_SETUP(xdp)
{
	self->x = kderp_xdp_load(STUN_PORT);
	if (!self->x && (errno == EPERM || errno == EACCES || errno == ENOSYS))
		SKIP(return, "cannot load BPF programs (%s): needs root", strerror(errno));
	ASSERT_NE(NULL, self->x);
}

FIXTURE_TEARDOWN(xdp)
{
	kderp_xdp_detach(self->x);
}

static int run(int prog_fd, const struct frame *in, struct frame *out, __u32 *retval)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in->b, .data_size_in = (__u32)in->len,
		    .data_out = out->b, .data_size_out = sizeof(out->b), .repeat = 1);
	int ret;

	ret = bpf_prog_test_run_opts(prog_fd, &opts);
	if (ret)
		return ret;
	*retval = opts.retval;
	out->len = opts.data_size_out;
	return 0;
}

TEST_F(xdp, table)
{
	struct kderp_stun_counter before[KDERP_STUN_NR_COUNTERS], after[KDERP_STUN_NR_COUNTERS];
	struct frame in, out, want;
	unsigned int af, slot;
	__u32 retval = 0;

	build_request(&in, variant->v6);
	variant->mutate(&in);
	if (variant->fix & FIX_IP)
		fix_ip(&in);
	if (variant->fix & FIX_UDP)
		fix_udp(&in);
	if (variant->action == XDP_TX)
		build_reply(&want, variant->v6);
	else
		want = in;

	if (variant->drop_stun)
		ASSERT_EQ(0, kderp_xdp_set_drop(self->x, true));
	ASSERT_EQ(0, kderp_xdp_read_counters(self->x, before));
	ASSERT_EQ(0, run(kderp_xdp_prog_fd(self->x), &in, &out, &retval));
	ASSERT_EQ(0, kderp_xdp_read_counters(self->x, after));

	ASSERT_EQ(variant->action, (int)retval);
	ASSERT_EQ(want.len, out.len);
	for (size_t i = 0; i < want.len; i++) {
		if (want.b[i] != out.b[i])
			TH_LOG("byte %zu: want %02x got %02x", i, want.b[i], out.b[i]);
		ASSERT_EQ(want.b[i], out.b[i]);
	}

	af = variant->af_unknown ? KDERP_STUN_AF_UNKNOWN
		: variant->v6	 ? KDERP_STUN_AF_IPV6
				 : KDERP_STUN_AF_IPV4;
	slot = kderp_stun_counter_idx(af, kderp_stun_outcome_of(variant->action), variant->end);
	for (unsigned int i = 0; i < KDERP_STUN_NR_COUNTERS; i++) {
		__u64 dp = after[i].packets - before[i].packets;
		__u64 db = after[i].bytes - before[i].bytes;

		if (i == slot) {
			ASSERT_EQ(1, dp);
			ASSERT_EQ(want.len, db);
		} else {
			if (dp || db)
				TH_LOG("unexpected counter slot %u moved", i);
			ASSERT_EQ(0, dp);
			ASSERT_EQ(0, db);
		}
	}
}

TEST(labels_match_enums)
{
	/* derper's label tables, in enum order */
	static const char *const af[] = {"unknown", "ipv4", "ipv6"};
	static const char *const out[] = {"pass", "aborted", "tx", "drop"};
	static const char *const end[] = {"unspecified",      "unexpected_first_stun_attr",
					  "invalid_udp_csum", "invalid_ip_csum",
					  "not_stun_port",    "invalid_sw_attr_val",
					  "drop_stun"};

	ASSERT_EQ(3, KDERP_STUN_NR_AF);
	ASSERT_EQ(4, KDERP_STUN_NR_OUT);
	ASSERT_EQ(7, KDERP_STUN_NR_END);
	for (unsigned int i = 0; i < 3; i++)
		ASSERT_STREQ(af[i], kderp_xdp_af_name(i));
	for (unsigned int i = 0; i < 4; i++)
		ASSERT_STREQ(out[i], kderp_xdp_outcome_name(i));
	for (unsigned int i = 0; i < 7; i++)
		ASSERT_STREQ(end[i], kderp_xdp_end_name(i));
	ASSERT_NULL(kderp_xdp_af_name(3));
	ASSERT_NULL(kderp_xdp_outcome_name(4));
	ASSERT_NULL(kderp_xdp_end_name(7));
	/* every slot index is distinct and in range */
	ASSERT_EQ(KDERP_STUN_NR_COUNTERS - 1, kderp_stun_counter_idx(2, 3, 6));
	ASSERT_EQ(1, kderp_stun_counter_idx(0, 0, 1));
	ASSERT_EQ(7, kderp_stun_counter_idx(0, 1, 0));
}

TEST(drop_switch_and_varz)
{
	struct kderp_xdp *x = kderp_xdp_load(STUN_PORT);
	struct frame in, out;
	__u32 retval;
	char text[4096];
	int n;

	if (!x && (errno == EPERM || errno == EACCES))
		SKIP(return, "cannot load BPF programs: needs root");
	ASSERT_NE(NULL, x);
	build_request(&in, false);
	ASSERT_EQ(0, run(kderp_xdp_prog_fd(x), &in, &out, &retval));
	ASSERT_EQ(XDP_TX, retval);
	ASSERT_EQ(0, kderp_xdp_set_drop(x, true));
	ASSERT_EQ(0, run(kderp_xdp_prog_fd(x), &in, &out, &retval));
	ASSERT_EQ(XDP_DROP, retval);
	ASSERT_EQ(0, run(kderp_xdp_prog_fd(x), &in, &out, &retval));
	ASSERT_EQ(0, kderp_xdp_set_drop(x, false));
	ASSERT_EQ(0, run(kderp_xdp_prog_fd(x), &in, &out, &retval));
	ASSERT_EQ(XDP_TX, retval);

	n = kderp_xdp_varz(x, text, sizeof(text));
	ASSERT_LT(0, n);
	ASSERT_GT((int)sizeof(text), n);
	ASSERT_NE(NULL, strstr(text, "# TYPE xdp_stun_server_packets_total counter\n"));
	ASSERT_NE(NULL,
		  strstr(text,
			 "xdp_stun_server_packets_total{address_family=\"ipv4\","
			 "prog_end=\"unspecified\",xdp_outcome=\"tx\"} 2\n"));
	ASSERT_NE(NULL,
		  strstr(text,
			 "xdp_stun_server_packets_total{address_family=\"ipv4\","
			 "prog_end=\"drop_stun\",xdp_outcome=\"drop\"} 2\n"));
	/* 2 replies of 74 bytes, 2 dropped requests of 82 */
	ASSERT_NE(NULL,
		  strstr(text,
			 "xdp_stun_server_bytes_total{address_family=\"ipv4\","
			 "prog_end=\"unspecified\",xdp_outcome=\"tx\"} 148\n"));
	ASSERT_NE(NULL,
		  strstr(text,
			 "xdp_stun_server_bytes_total{address_family=\"ipv4\","
			 "prog_end=\"drop_stun\",xdp_outcome=\"drop\"} 164\n"));
	ASSERT_EQ(NULL, strstr(text, "ipv6"));
	ASSERT_EQ(n, kderp_xdp_varz(x, NULL, 0));
	kderp_xdp_detach(x);

	/* no program: TYPE lines only */
	n = kderp_xdp_varz(NULL, text, sizeof(text));
	ASSERT_LT(0, n);
	ASSERT_EQ(NULL, strstr(text, "{"));
}

TEST(unconfigured_passes)
{
	struct kderp_xdp *x = kderp_xdp_load(STUN_PORT + 7);
	struct frame in, out;
	__u32 retval;

	if (!x && (errno == EPERM || errno == EACCES))
		SKIP(return, "cannot load BPF programs: needs root");
	ASSERT_NE(NULL, x);
	/* a request to 3478 is not for a program told to answer 3485 */
	build_request(&in, true);
	ASSERT_EQ(0, run(kderp_xdp_prog_fd(x), &in, &out, &retval));
	ASSERT_EQ(XDP_PASS, retval);
	ASSERT_EQ(in.len, out.len);
	ASSERT_EQ(0, memcmp(in.b, out.b, in.len));
	kderp_xdp_detach(x);
	errno = 0;
	ASSERT_NULL(kderp_xdp_load(0));
	ASSERT_EQ(EINVAL, errno);
}

TEST_HARNESS_MAIN
