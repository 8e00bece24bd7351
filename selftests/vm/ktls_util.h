/* SPDX-License-Identifier: MIT */
/*
 * ktls_util.h - socket helpers shared by the kTLS guest tests: a loopback
 * TCP pair, whether the kernel has the "tls" ULP, and a private network
 * namespace (so /proc/net/tls_stat counts only the test's own sockets).
 */
#ifndef KDERP_KTLS_UTIL_H
#define KDERP_KTLS_UTIL_H

#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SOL_TCP
#define SOL_TCP 6
#endif

/* A connected TCP pair on 127.0.0.1: fds[0] client, fds[1] accepted server. */
static inline int tcp_pair(int fds[2])
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int lfd, ret = -1;

	fds[0] = fds[1] = -1;
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len))
		goto out;
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&sa, sizeof(sa)))
		goto out;
	fds[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fds[1] < 0)
		goto out;
	ret = 0;
out:
	if (ret)
		ret = -errno;
	close(lfd);
	return ret;
}

/* Can a TCP socket take the "tls" ULP (CONFIG_TLS, tls.ko loaded or loadable)? */
static inline bool have_tls_ulp(void)
{
	int fds[2];
	bool ok;

	if (tcp_pair(fds))
		return false;
	ok = setsockopt(fds[0], SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0;
	close(fds[0]);
	close(fds[1]);
	return ok;
}

/* A private network namespace with lo up: tls_stat then counts only this test. */
static inline int private_netns(void)
{
	struct ifreq ifr = {0};
	int fd, ret = 0;

	if (unshare(CLONE_NEWNET))
		return -errno;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr))
			ret = -errno;
	} else {
		ret = -errno;
	}
	close(fd);
	return ret;
}

#endif
