// SPDX-License-Identifier: MIT
/*
 * ktls_sockmap.c - the kernel refuses to combine kTLS and a sockmap.
 *
 * kderp uses kTLS (through OpenSSL) for TLS links and keeps the sockmap
 * splice for plain TCP only. This test pins the kernel behaviour that makes
 * that split necessary, so a kernel that ever changes it fails loudly:
 *
 *  - a socket with the "tls" ULP and TLS_TX keys cannot be inserted into a
 *    BPF_MAP_TYPE_SOCKMAP (sk_psock_init() rejects ULP sockets): EINVAL;
 *  - a socket already in a sockmap with a stream verdict program cannot get
 *    TLS_TX or TLS_RX keys (Debian 6.1.192+, "tls: reject the combination of
 *    TLS and sockmap", CVE-2026-93824): EINVAL.
 *
 * Each case has a positive control (a plain TCP socket is accepted by the
 * same map, TLS keys are accepted on a socket outside any map), so an
 * EINVAL caused by a broken setup cannot pass for the expected refusal.
 *
 * Needs root (BPF maps and programs) and CONFIG_TLS; SKIPs without them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/tls.h>

#include <bpf/bpf.h>

#include "harness.h"
#include "ktls_util.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static int set_ulp(int fd)
{
	return setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) ? -errno : 0;
}

/* Fixed, throwaway TLS 1.2 AES-GCM-128 keys: only the kernel's answer matters. */
static int set_keys(int fd, int dir)
{
	struct tls12_crypto_info_aes_gcm_128 ci;

	memset(&ci, 0, sizeof(ci));
	ci.info.version = TLS_1_2_VERSION;
	ci.info.cipher_type = TLS_CIPHER_AES_GCM_128;
	memset(ci.key, 0x11, sizeof(ci.key));
	memset(ci.iv, 0x22, sizeof(ci.iv));
	memset(ci.salt, 0x33, sizeof(ci.salt));
	memset(ci.rec_seq, 0, sizeof(ci.rec_seq));
	return setsockopt(fd, SOL_TLS, dir, &ci, sizeof(ci)) ? -errno : 0;
}

/* sk_skb programs that need no BPF object file: "return skb->len" and "return SK_PASS". */
static int load_parser(void)
{
	struct bpf_insn insns[] = {
		{.code = BPF_LDX | BPF_MEM | BPF_W,
		 .dst_reg = BPF_REG_0,
		 .src_reg = BPF_REG_1,
		 .off = offsetof(struct __sk_buff, len)},
		{.code = BPF_JMP | BPF_EXIT},
	};

	return bpf_prog_load(BPF_PROG_TYPE_SK_SKB, "kderp_parser", "GPL", insns, 2, NULL);
}

static int load_verdict(void)
{
	struct bpf_insn insns[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = SK_PASS},
		{.code = BPF_JMP | BPF_EXIT},
	};

	return bpf_prog_load(BPF_PROG_TYPE_SK_SKB, "kderp_verdict", "GPL", insns, 2, NULL);
}

static int map_insert(int map, __u32 key, int fd)
{
	__u32 val = fd;

	return bpf_map_update_elem(map, &key, &val, BPF_ANY) ? -errno : 0;
}

FIXTURE(ktls_sockmap)
{
	int map;
	int parser;
	int verdict;
	int a[2]; /* the socket pair under test */
	int b[2]; /* the positive control */
};

FIXTURE_VARIANT(ktls_sockmap)
{
	bool parser; /* attach a stream parser */
	bool verdict; /* attach a stream verdict */
};

FIXTURE_VARIANT_ADD(ktls_sockmap, no_progs){
	.parser = false,
	.verdict = false,
};

FIXTURE_VARIANT_ADD(ktls_sockmap, verdict){
	.parser = false,
	.verdict = true,
};

FIXTURE_VARIANT_ADD(ktls_sockmap, parser_verdict){
	.parser = true,
	.verdict = true,
};

FIXTURE_SETUP(ktls_sockmap)
{
	self->map = self->parser = self->verdict = -1;
	self->a[0] = self->a[1] = self->b[0] = self->b[1] = -1;

	if (geteuid() != 0)
		SKIP(return, "needs root for BPF maps and programs");
	if (!have_tls_ulp())
		SKIP(return, "kernel has no TLS ULP (CONFIG_TLS unset or tls.ko not loaded)");

	self->map = bpf_map_create(BPF_MAP_TYPE_SOCKMAP, "kderp_tlsmap", 4, 4, 4, NULL);
	if (self->map < 0)
		SKIP(return, "cannot create a sockmap: %s", strerror(errno));
	if (variant->parser) {
		self->parser = load_parser();
		ASSERT_LE(0, self->parser) TH_LOG("load parser: %s", strerror(errno));
		ASSERT_EQ(0, bpf_prog_attach(self->parser, self->map, BPF_SK_SKB_STREAM_PARSER, 0))
		TH_LOG("attach parser: %s", strerror(errno));
	}
	if (variant->verdict) {
		self->verdict = load_verdict();
		ASSERT_LE(0, self->verdict) TH_LOG("load verdict: %s", strerror(errno));
		ASSERT_EQ(0,
			  bpf_prog_attach(self->verdict, self->map, BPF_SK_SKB_STREAM_VERDICT, 0))
		TH_LOG("attach verdict: %s", strerror(errno));
	}
	ASSERT_EQ(0, tcp_pair(self->a));
	ASSERT_EQ(0, tcp_pair(self->b));
}

FIXTURE_TEARDOWN(ktls_sockmap)
{
	int *fds[] = {&self->a[0], &self->a[1],	  &self->b[0],	 &self->b[1],
		      &self->map,  &self->parser, &self->verdict};

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
}

/* (a) TLS first: ULP + TLS_TX, then the sockmap insert is refused. */
TEST_F(ktls_sockmap, tls_tx_then_insert)
{
	/* Control: a plain TCP socket goes into this very map. */
	ASSERT_EQ(0, map_insert(self->map, 1, self->b[1]));

	ASSERT_EQ(0, set_ulp(self->a[1]));
	ASSERT_EQ(0, set_keys(self->a[1], TLS_TX));
	ASSERT_EQ(-EINVAL, map_insert(self->map, 0, self->a[1]))
	TH_LOG("a kTLS socket was accepted into a sockmap: kderp's kTLS/sockmap split is stale");
}

/* The ULP alone (no keys yet) already makes the socket unacceptable. */
TEST_F(ktls_sockmap, ulp_then_insert)
{
	ASSERT_EQ(0, map_insert(self->map, 1, self->b[1]));

	ASSERT_EQ(0, set_ulp(self->a[1]));
	ASSERT_EQ(-EINVAL, map_insert(self->map, 0, self->a[1]));
}

/* (b) sockmap first: the TLS keys are refused (TX and RX). */
TEST_F(ktls_sockmap, insert_then_tls)
{
	int ret;

	/* Control: the same keys are accepted on a socket in no map. */
	ASSERT_EQ(0, set_ulp(self->b[1]));
	ASSERT_EQ(0, set_keys(self->b[1], TLS_TX));
	ASSERT_EQ(0, set_keys(self->b[1], TLS_RX));

	ASSERT_EQ(0, map_insert(self->map, 0, self->a[1]));
	/*
	 * Whether the ULP itself is refused depends on the kernel; the keys
	 * must be. If the ULP is refused, kTLS is impossible too, which is
	 * the property kderp relies on.
	 */
	ret = set_ulp(self->a[1]);
	if (ret) {
		TH_LOG("TCP_ULP tls on a sockmap socket: %s", strerror(-ret));
		ASSERT_EQ(-EINVAL, ret);
		return;
	}
	ASSERT_EQ(-EINVAL, set_keys(self->a[1], TLS_TX))
	TH_LOG("TLS_TX accepted on a sockmap socket: kernel lacks the TLS/sockmap exclusion");
	ASSERT_EQ(-EINVAL, set_keys(self->a[1], TLS_RX))
	TH_LOG("TLS_RX accepted on a sockmap socket: kernel lacks the TLS/sockmap exclusion");
}

/* After removal from the map the socket is an ordinary TCP socket again. */
TEST_F(ktls_sockmap, delete_then_tls)
{
	__u32 key = 0;

	ASSERT_EQ(0, map_insert(self->map, 0, self->a[1]));
	ASSERT_EQ(0, bpf_map_delete_elem(self->map, &key));
	ASSERT_EQ(0, set_ulp(self->a[1]));
	ASSERT_EQ(0, set_keys(self->a[1], TLS_TX));
}

TEST_HARNESS_MAIN
