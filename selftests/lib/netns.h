/* SPDX-License-Identifier: MIT */
/*
 * netns.h - two fresh network namespaces, "server" and "client", joined by a
 * veth pair, for tests that need a real link (XDP, non-loopback peers).
 * Part of libselftest.a; netns.sh is the same for shell tests.
 *
 * The namespaces and interfaces get random names, so tests may run side by
 * side. netns_pair_down() removes them; if the test dies first, a watchdog
 * process outside the test's process group removes them.
 */
#ifndef KDERP_SELFTESTS_NETNS_H
#define KDERP_SELFTESTS_NETNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct __test_metadata;

struct netns_pair {
	char ns_srv[32], ns_cli[32]; /* names under /run/netns */
	char if_srv[16], if_cli[16]; /* the veth ends */
	int fd_srv, fd_cli, fd_orig; /* namespace fds; fd_orig: the test's own */
	int watchdog_pipe;
	pid_t watchdog;
};

/* Can this test make namespaces (root, iproute2)? If not, why, for SKIP. */
bool have_netns(char *why, size_t len);

/*
 * Create the pair: namespaces "<tag>S<hex>" and "<tag>C<hex>", veth ends
 * "<tag>s<hex>" (server) and "<tag>c<hex>" (client), lo and the veth up on
 * both sides. srv_addrs and cli_addrs are NULL-terminated lists of CIDRs for
 * the two veth ends (IPv6 ones without duplicate address detection). tag
 * is 1-4 characters. The test stays in its own namespace. Fails the test on
 * error.
 */
void netns_pair_up(struct __test_metadata *_metadata, struct netns_pair *p, const char *tag,
		   const char *const *srv_addrs, const char *const *cli_addrs);

/*
 * (Re)create the veth pair under the pair's names, with addresses, and set
 * it up: what netns_pair_up does after making the namespaces. For tests that
 * delete the link and bring it back. Fails the test on error.
 */
void netns_veth_add(struct __test_metadata *_metadata, struct netns_pair *p,
		    const char *const *srv_addrs, const char *const *cli_addrs);

/* Go back to the test's own namespace and remove the pair. Safe on a zeroed pair. */
void netns_pair_down(struct netns_pair *p);

/* Move the calling thread into a namespace (one of the pair's fds): 0 or -errno. */
int netns_enter(int nsfd);

/* Run a shell command (printf-style): 0 if it exited 0, else -1. */
int netns_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* KDERP_SELFTESTS_NETNS_H */
