// SPDX-License-Identifier: MIT
/*
 * test_xdp_netns.c - STUN end to end over a veth pair between two network
 * namespaces: userspace STUN and XDP STUN give the client the right mapped
 * address and byte-identical replies; with XDP attached the userspace socket
 * sees nothing, and the XDP counters move instead.
 *
 * The namespaces (and so the veth pair) get random names and are removed by
 * teardown, or, if the test dies, by a watchdog process that outlives it.
 * Needs root and iproute2; SKIPs otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <linux/udp.h>
#include <zlib.h>

#include "harness.h"
#include "netns.h"
#include "stun.h"
#include "stun_xdp.h"

#define SRV4 "10.77.0.1"
#define CLI4 "10.77.0.2"
#define SRV6 "fd77::1"
#define CLI6 "fd77::2"
#define STUN_PORT 3478

static const char *const srv_addrs[] = {SRV4 "/24", SRV6 "/64", NULL};
static const char *const cli_addrs[] = {CLI4 "/24", CLI6 "/64", NULL};
static const char *const srv4_addrs[] = {SRV4 "/24", NULL};
static const char *const cli4_addrs[] = {CLI4 "/24", NULL};

/*
 * veth offloads checksums: a locally sent datagram crosses it with only the
 * pseudo-header sum in place (CHECKSUM_PARTIAL), which XDP, like derper's,
 * rejects as invalid_udp_csum. Make the client side compute full checksums,
 * as a packet from a real wire has them.
 */
static int client_tx_csum_off(struct netns_pair *e)
{
	struct ethtool_value ev = {.cmd = ETHTOOL_STXCSUM, .data = 0};
	struct ifreq ifr = {0};
	int fd, ret;

	if (netns_enter(e->fd_cli))
		return -1;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", e->if_cli);
	ifr.ifr_data = (void *)&ev;
	ret = fd < 0 ? -1 : ioctl(fd, SIOCETHTOOL, &ifr);
	if (fd >= 0)
		close(fd);
	netns_enter(e->fd_orig);
	return ret;
}

/* The pair of namespaces (netns.h), with full checksums from the client. */
static void env_up(struct __test_metadata *_metadata, struct netns_pair *e)
{
	netns_pair_up(_metadata, e, "kdx", srv_addrs, cli_addrs);
	ASSERT_EQ(0, client_tx_csum_off(e));
}

/* A UDP socket in the client namespace, bound to @ip. */
static int client_socket(struct netns_pair *e, const char *ip)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	int fd;

	if (netns_enter(e->fd_cli))
		return -1;
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (void *)&ss;

		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (void *)&ss;

		s4->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s4->sin_addr);
		sl = sizeof(*s4);
	}
	fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && bind(fd, (void *)&ss, sl)) {
		close(fd);
		fd = -1;
	}
	netns_enter(e->fd_orig);
	return fd;
}

static void make_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (void *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
		*sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (void *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		inet_pton(AF_INET, ip, &s4->sin_addr);
		*sl = sizeof(*s4);
	}
}

/*
 * Send @req to the server and wait for one reply (its payload in @reply and
 * the sender in @from). Returns the reply length, or -1 on timeout. The
 * first packets may meet neighbour resolution, so a lost try is retried.
 */
static ssize_t exchange(int fd, const char *srv, const uint8_t *req, size_t len, uint8_t *reply,
			size_t cap, struct sockaddr_storage *from, int tries, int ms)
{
	struct sockaddr_storage to;
	socklen_t tl, fl;

	make_addr(srv, STUN_PORT, &to, &tl);
	while (tries-- > 0) {
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (sendto(fd, req, len, 0, (void *)&to, tl) != (ssize_t)len)
			return -1;
		if (poll(&p, 1, ms) == 1) {
			fl = sizeof(*from);
			return recvfrom(fd, reply, cap, 0, (void *)from, &fl);
		}
	}
	return -1;
}

static __u64 xdp_slot(struct kderp_xdp *x, unsigned int af, unsigned int out, unsigned int end)
{
	struct kderp_stun_counter c[KDERP_STUN_NR_COUNTERS];

	if (kderp_xdp_read_counters(x, c))
		return (__u64)-1;
	return c[kderp_stun_counter_idx(af, out, end)].packets;
}

/*
 * Counters as soon as they reach @not_stun / @success (bounded wait: the
 * server counts a reply after sendmmsg returns, which can be after the
 * client already has it).
 */
static void counts_at_least(struct kderp_stun *s, struct kderp_stun_counts *c, uint64_t not_stun,
			    uint64_t success)
{
	for (int i = 0; i < 100; i++) {
		kderp_stun_get_counts(s, c);
		if (c->not_stun >= not_stun && c->success >= success)
			return;
		usleep(10000);
	}
}

FIXTURE(netns)
{
	struct netns_pair e;
	struct kderp_stun *stun;
	struct kderp_xdp *xdp, *peer_xdp;
};

FIXTURE_VARIANT(netns)
{
	const char *srv, *cli;
	const char *mode; /* iface suffix: ":generic", ":native", or "" for auto */
	bool v6;
};

FIXTURE_VARIANT_ADD(netns, ipv4_generic){.srv = SRV4, .cli = CLI4, .mode = ":generic"};
FIXTURE_VARIANT_ADD(netns, ipv6_generic){.srv = SRV6, .cli = CLI6, .mode = ":generic", .v6 = true};
FIXTURE_VARIANT_ADD(netns, ipv4_native){.srv = SRV4, .cli = CLI4, .mode = ":native"};
FIXTURE_VARIANT_ADD(netns, ipv6_native){.srv = SRV6, .cli = CLI6, .mode = ":native", .v6 = true};
FIXTURE_VARIANT_ADD(netns, ipv4_auto){.srv = SRV4, .cli = CLI4, .mode = ""};

FIXTURE_SETUP(netns)
{
	char why[64];

	if (!have_netns(why, sizeof(why)))
		SKIP(return, "%s", why);
	env_up(_metadata, &self->e);
	/* userspace STUN on the server address, in the server namespace */
	ASSERT_EQ(0, netns_enter(self->e.fd_srv));
	self->stun = kderp_stun_start(variant->srv, STUN_PORT);
	netns_enter(self->e.fd_orig);
	ASSERT_NE(NULL, self->stun);
}

FIXTURE_TEARDOWN(netns)
{
	if (self->e.fd_srv > 0)
		netns_enter(self->e.fd_srv);
	kderp_xdp_detach(self->xdp);
	kderp_stun_stop(self->stun);
	if (self->e.fd_cli > 0)
		netns_enter(self->e.fd_cli);
	kderp_xdp_detach(self->peer_xdp);
	netns_pair_down(&self->e);
}

TEST_F_TIMEOUT(netns, user_then_xdp, 60)
{
	uint8_t txid[12] = {0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
	uint8_t req[40], bad[40], user_reply[128], xdp_reply[128];
	struct sockaddr_storage from, mapped, me, srv;
	unsigned int af = variant->v6 ? KDERP_STUN_AF_IPV6 : KDERP_STUN_AF_IPV4;
	struct kderp_stun_counts c;
	char ifspec[64], cmd[256];
	ssize_t nu, nx;
	socklen_t ml = sizeof(me), sl;
	const char *mode;
	int fd;

	fd = client_socket(&self->e, variant->cli);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, getsockname(fd, (void *)&me, &ml));
	kderp_stun_build_request(req, sizeof(req), txid);

	/* 1. no XDP: user space answers with the client's address */
	nu = exchange(fd, variant->srv, req, sizeof(req), user_reply, sizeof(user_reply), &from, 5,
		      1000);
	ASSERT_EQ(variant->v6 ? 44 : 32, nu);
	ASSERT_EQ(0, kderp_stun_parse_response(user_reply, nu, txid, &mapped));
	ASSERT_EQ(0, memcmp(&me, &mapped, ml));
	make_addr(variant->srv, STUN_PORT, &srv, &sl);
	ASSERT_EQ(0, memcmp(&srv, &from, sl));
	counts_at_least(self->stun, &c, 0, 1);
	ASSERT_EQ(1, c.success);

	/* 2. XDP on the server's veth */
	snprintf(ifspec, sizeof(ifspec), "%s%s", *variant->mode ? self->e.if_srv : "auto",
		 variant->mode);
	ASSERT_EQ(0, netns_enter(self->e.fd_srv));
	self->xdp = kderp_xdp_attach(ifspec, variant->srv, STUN_PORT);
	if (!self->xdp && !strcmp(variant->mode, ":native")) {
		netns_enter(self->e.fd_orig);
		SKIP(close(fd); return, "native XDP on veth unavailable: %s", strerror(errno));
	}
	ASSERT_NE(NULL, self->xdp);
	mode = kderp_xdp_mode(self->xdp, self->e.if_srv);
	ASSERT_NE(NULL, mode);
	if (!strcmp(variant->mode, ":native"))
		ASSERT_STREQ("native", mode);
	if (!strcmp(variant->mode, ":generic"))
		ASSERT_STREQ("generic", mode);
	/* the kernel agrees: ip link shows the program in that mode */
	snprintf(cmd, sizeof(cmd), "ip -n %s link show dev %s | grep -q '%s'", self->e.ns_srv,
		 self->e.if_srv, !strcmp(mode, "native") ? "xdp " : "xdpgeneric");
	ASSERT_EQ(0, netns_sh("%s", cmd));
	netns_enter(self->e.fd_orig);
	if (!strcmp(mode, "native")) {
		/* veth delivers XDP_TX frames to a peer only if it runs XDP too:
		 * give the client side an instance (its packets all PASS) */
		ASSERT_EQ(0, netns_enter(self->e.fd_cli));
		self->peer_xdp = kderp_xdp_attach(self->e.if_cli, "", STUN_PORT);
		netns_enter(self->e.fd_orig);
		ASSERT_NE(NULL, self->peer_xdp);
	}

	nx = exchange(fd, variant->srv, req, sizeof(req), xdp_reply, sizeof(xdp_reply), &from, 3,
		      1000);
	ASSERT_EQ(nu, nx);
	ASSERT_EQ(0, memcmp(user_reply, xdp_reply, nu));
	ASSERT_EQ(0, memcmp(&srv, &from, sl));
	ASSERT_EQ(1, xdp_slot(self->xdp, af, KDERP_STUN_OUT_TX, KDERP_STUN_END_UNSPECIFIED));
	kderp_stun_get_counts(self->stun, &c);
	ASSERT_EQ(1, c.success); /* user space saw nothing */
	ASSERT_EQ(0, c.not_stun);

	/* 3. wrong SOFTWARE: XDP passes it up, user space counts not_stun, no reply */
	memcpy(bad, req, sizeof(bad));
	bad[31] = 'x';
	nx = exchange(fd, variant->srv, bad, sizeof(bad), xdp_reply, sizeof(xdp_reply), &from, 1,
		      300);
	ASSERT_EQ(-1, nx);
	ASSERT_EQ(1,
		  xdp_slot(self->xdp, af, KDERP_STUN_OUT_PASS, KDERP_STUN_END_INVALID_SW_ATTR_VAL));
	counts_at_least(self->stun, &c, 1, 1);
	ASSERT_EQ(1, c.not_stun);
	ASSERT_EQ(1, c.success);

	/* 4. bad FINGERPRINT: XDP (like derper's) does not check it and answers */
	memcpy(bad, req, sizeof(bad));
	bad[39] ^= 0xff;
	nx = exchange(fd, variant->srv, bad, sizeof(bad), xdp_reply, sizeof(xdp_reply), &from, 3,
		      1000);
	ASSERT_EQ(nu, nx);
	ASSERT_EQ(2, xdp_slot(self->xdp, af, KDERP_STUN_OUT_TX, KDERP_STUN_END_UNSPECIFIED));

	/* 5. drop switch: nothing comes back, nothing reaches user space */
	ASSERT_EQ(0, kderp_xdp_set_drop(self->xdp, true));
	nx = exchange(fd, variant->srv, req, sizeof(req), xdp_reply, sizeof(xdp_reply), &from, 1,
		      300);
	ASSERT_EQ(-1, nx);
	ASSERT_EQ(1, xdp_slot(self->xdp, af, KDERP_STUN_OUT_DROP, KDERP_STUN_END_DROP_STUN));
	ASSERT_EQ(0, kderp_xdp_set_drop(self->xdp, false));

	/* 6. detached: user space answers again, identically */
	ASSERT_EQ(0, netns_enter(self->e.fd_srv));
	kderp_xdp_detach(self->xdp);
	self->xdp = NULL;
	netns_enter(self->e.fd_orig);
	nu = exchange(fd, variant->srv, req, sizeof(req), xdp_reply, sizeof(xdp_reply), &from, 3,
		      1000);
	ASSERT_EQ(nx > 0 ? nx : (variant->v6 ? 44 : 32), nu);
	ASSERT_EQ(0, memcmp(user_reply, xdp_reply, nu));
	counts_at_least(self->stun, &c, 1, 2);
	ASSERT_EQ(2, c.success);
	ASSERT_EQ(variant->v6 ? 0 : 2, c.ipv4);
	ASSERT_EQ(variant->v6 ? 2 : 0, c.ipv6);
	close(fd);
}

TEST_TIMEOUT(reattach_after_interface_returns, 60)
{
	uint8_t txid[12] = {0x77}, req[40], reply[128];
	struct sockaddr_storage from;
	struct netns_pair env = {0}, *e = &env;
	char why[64];
	struct kderp_xdp *x;
	const char *mode = NULL;
	char ifspec[64];
	ssize_t n;
	int fd;

	/* on failure the watchdog removes the namespaces, and the process
	 * exit closes the XDP link */
	if (!have_netns(why, sizeof(why)))
		SKIP(return, "%s", why);
	env_up(_metadata, e);
	ASSERT_EQ(0, netns_enter(e->fd_srv));
	snprintf(ifspec, sizeof(ifspec), "%s:generic", e->if_srv);
	x = kderp_xdp_attach(ifspec, SRV4, STUN_PORT);
	netns_enter(e->fd_orig);
	ASSERT_NE(NULL, x);

	/* delete the pair and build it again under the same names */
	ASSERT_EQ(0, netns_sh("ip -n %s link del %s", e->ns_srv, e->if_srv));
	netns_veth_add(_metadata, e, srv4_addrs, cli4_addrs);
	ASSERT_EQ(0, client_tx_csum_off(e));
	/* the watcher reacts to the link event (bounded wait: 10 s) */
	for (int i = 0; i < 100 && !mode; i++) {
		usleep(100000);
		ASSERT_EQ(0, netns_enter(e->fd_srv));
		mode = kderp_xdp_mode(x, e->if_srv);
		netns_enter(e->fd_orig);
	}
	ASSERT_NE(NULL, mode);

	fd = client_socket(e, CLI4);
	ASSERT_LE(0, fd);
	kderp_stun_build_request(req, sizeof(req), txid);
	n = exchange(fd, SRV4, req, sizeof(req), reply, sizeof(reply), &from, 5, 1000);
	ASSERT_EQ(32, n);
	ASSERT_EQ(1,
		  xdp_slot(x, KDERP_STUN_AF_IPV4, KDERP_STUN_OUT_TX, KDERP_STUN_END_UNSPECIFIED));
	close(fd);
	ASSERT_EQ(0, netns_enter(e->fd_srv));
	kderp_xdp_detach(x);
	netns_pair_down(e);
}

/* A valid request of @total bytes: SOFTWARE first, a padding attribute, FINGERPRINT. */
static size_t big_request(uint8_t *m, size_t total, const uint8_t txid[12])
{
	size_t pad = total - 40 - 4;
	uint32_t fp;

	kderp_stun_build_request(m, 40, txid);
	/* move FINGERPRINT behind a padding attribute (type 0x8030, optional) */
	m[32] = 0x80;
	m[33] = 0x30;
	m[34] = (uint8_t)(pad >> 8);
	m[35] = (uint8_t)pad;
	memset(m + 36, 0xab, pad);
	m[36 + pad] = 0x80;
	m[37 + pad] = 0x28;
	m[38 + pad] = 0;
	m[39 + pad] = 4;
	m[2] = (uint8_t)((total - 20) >> 8);
	m[3] = (uint8_t)(total - 20);
	fp = (uint32_t)crc32(0, m, (uInt)(total - 8)) ^ 0x5354554eu;
	m[total - 4] = fp >> 24;
	m[total - 3] = fp >> 16;
	m[total - 2] = fp >> 8;
	m[total - 1] = fp;
	return total;
}

/* Wait (bounded) until the userspace server counted @success replies. */
static uint64_t user_success(struct kderp_stun *s, uint64_t want)
{
	struct kderp_stun_counts c;

	counts_at_least(s, &c, 0, want);
	return c.success;
}

/*
 * What XDP must leave to the kernel, end to end: fragments (IPv4 and IPv6)
 * and IPv4 options reach the userspace server and are answered there; a zero
 * UDP checksum is fine on IPv4 (XDP answers) and not on IPv6 (XDP passes it
 * as invalid_udp_csum and the kernel drops it: no answer at all).
 */
TEST_TIMEOUT(bad_input_end_to_end, 60)
{
	uint8_t txid[12] = {0xb0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
	uint8_t big[2000], req[40], reply[256];
	static const uint8_t nops[4] = {1, 1, 1, 0};
	struct sockaddr_storage from, mapped, me;
	struct netns_pair env = {0}, *e = &env;
	char why[64];
	struct kderp_stun *stun;
	struct kderp_xdp *x;
	char ifspec[64];
	socklen_t ml;
	int fd, one = 1;
	ssize_t n;

	if (!have_netns(why, sizeof(why)))
		SKIP(return, "%s", why);
	env_up(_metadata, e);
	ASSERT_EQ(0, netns_enter(e->fd_srv));
	stun = kderp_stun_start("", STUN_PORT);
	snprintf(ifspec, sizeof(ifspec), "%s:generic", e->if_srv);
	x = kderp_xdp_attach(ifspec, "", STUN_PORT);
	netns_enter(e->fd_orig);
	ASSERT_NE(NULL, stun);
	ASSERT_NE(NULL, x);
	big_request(big, sizeof(big), txid);
	ASSERT_EQ(0, kderp_stun_parse_request(big, sizeof(big), NULL));
	kderp_stun_build_request(req, sizeof(req), txid);

	/* IPv4 fragments: passed by XDP, reassembled, answered by user space */
	fd = client_socket(e, CLI4);
	ASSERT_LE(0, fd);
	n = exchange(fd, SRV4, big, sizeof(big), reply, sizeof(reply), &from, 5, 1000);
	ASSERT_EQ(32, n);
	ASSERT_EQ(0, kderp_stun_parse_response(reply, n, txid, &mapped));
	ASSERT_EQ(1, user_success(stun, 1));
	ASSERT_EQ(0,
		  xdp_slot(x, KDERP_STUN_AF_IPV4, KDERP_STUN_OUT_TX, KDERP_STUN_END_UNSPECIFIED));
	ASSERT_LE(2,
		  xdp_slot(x, KDERP_STUN_AF_IPV4, KDERP_STUN_OUT_PASS, KDERP_STUN_END_UNSPECIFIED));

	/* IPv4 options (four NOPs): passed by XDP, answered by user space */
	ASSERT_EQ(0, setsockopt(fd, IPPROTO_IP, IP_OPTIONS, nops, sizeof(nops)));
	n = exchange(fd, SRV4, req, sizeof(req), reply, sizeof(reply), &from, 3, 1000);
	ASSERT_EQ(32, n);
	ASSERT_EQ(2, user_success(stun, 2));
	ASSERT_EQ(0,
		  xdp_slot(x, KDERP_STUN_AF_IPV4, KDERP_STUN_OUT_TX, KDERP_STUN_END_UNSPECIFIED));
	ASSERT_EQ(0, setsockopt(fd, IPPROTO_IP, IP_OPTIONS, NULL, 0));

	/* IPv4 without UDP checksum: XDP answers */
	ASSERT_EQ(0, setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof(one)));
	n = exchange(fd, SRV4, req, sizeof(req), reply, sizeof(reply), &from, 3, 1000);
	ASSERT_EQ(32, n);
	ASSERT_EQ(1,
		  xdp_slot(x, KDERP_STUN_AF_IPV4, KDERP_STUN_OUT_TX, KDERP_STUN_END_UNSPECIFIED));
	ASSERT_EQ(2, user_success(stun, 2));
	close(fd);

	/* IPv6 fragments: same as IPv4 */
	fd = client_socket(e, CLI6);
	ASSERT_LE(0, fd);
	ml = sizeof(me);
	ASSERT_EQ(0, getsockname(fd, (void *)&me, &ml));
	n = exchange(fd, SRV6, big, sizeof(big), reply, sizeof(reply), &from, 5, 1000);
	ASSERT_EQ(44, n);
	ASSERT_EQ(0, kderp_stun_parse_response(reply, n, txid, &mapped));
	ASSERT_EQ(0, memcmp(&me, &mapped, ml));
	ASSERT_EQ(3, user_success(stun, 3));
	ASSERT_EQ(0,
		  xdp_slot(x, KDERP_STUN_AF_IPV6, KDERP_STUN_OUT_TX, KDERP_STUN_END_UNSPECIFIED));

	/* IPv6 with a zero UDP checksum: passed as invalid, dropped by the kernel */
	ASSERT_EQ(0, setsockopt(fd, IPPROTO_UDP, UDP_NO_CHECK6_TX, &one, sizeof(one)));
	n = exchange(fd, SRV6, req, sizeof(req), reply, sizeof(reply), &from, 1, 500);
	ASSERT_EQ(-1, n);
	ASSERT_EQ(1,
		  xdp_slot(x, KDERP_STUN_AF_IPV6, KDERP_STUN_OUT_PASS,
			   KDERP_STUN_END_INVALID_UDP_CSUM));
	ASSERT_EQ(0,
		  xdp_slot(x, KDERP_STUN_AF_IPV6, KDERP_STUN_OUT_TX, KDERP_STUN_END_UNSPECIFIED));
	ASSERT_EQ(3, user_success(stun, 3));
	close(fd);

	ASSERT_EQ(0, netns_enter(e->fd_srv));
	kderp_xdp_detach(x);
	kderp_stun_stop(stun);
	netns_pair_down(e);
}

TEST(attach_errors)
{
	errno = 0;
	ASSERT_NULL(kderp_xdp_attach("", "", STUN_PORT));
	ASSERT_EQ(EINVAL, errno);
	if (geteuid() != 0)
		SKIP(return, "needs root");
	ASSERT_NULL(kderp_xdp_attach("kdx-no-such-if0", "", STUN_PORT));
	ASSERT_EQ(ENODEV, errno);
	ASSERT_NULL(kderp_xdp_attach("lo:turbo", "", STUN_PORT));
	ASSERT_EQ(EINVAL, errno);
	/* auto with an address nobody holds */
	ASSERT_NULL(kderp_xdp_attach("auto", "192.0.2.123", STUN_PORT));
	ASSERT_EQ(ENODEV, errno);
}

TEST(busy_interface_and_auto_loopback)
{
	struct kderp_xdp *a, *b;

	if (geteuid() != 0)
		SKIP(return, "needs root");
	/* a private namespace: XDP on its lo disturbs nobody */
	ASSERT_EQ(0, unshare(CLONE_NEWNET));
	ASSERT_EQ(0, netns_sh("ip link set lo up"));
	/* auto follows the listen address: 127.0.0.1 lives on lo */
	a = kderp_xdp_attach("auto", "127.0.0.1", STUN_PORT);
	ASSERT_NE(NULL, a);
	ASSERT_STREQ("generic", kderp_xdp_mode(a, "lo"));
	/* a second program cannot take the interface from the first */
	b = kderp_xdp_attach("lo", "", STUN_PORT);
	ASSERT_NULL(b);
	ASSERT_EQ(EBUSY, errno);
	ASSERT_STREQ("generic", kderp_xdp_mode(a, "lo"));
	kderp_xdp_detach(a);
	ASSERT_NE(0, netns_sh("ip link show dev lo | grep -q xdp"));
	/* once it is gone, the interface is free again */
	b = kderp_xdp_attach("lo:generic", "", STUN_PORT);
	ASSERT_NE(NULL, b);
	kderp_xdp_detach(b);
}

TEST_HARNESS_MAIN
