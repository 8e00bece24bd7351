// SPDX-License-Identifier: MIT
/*
 * netns.c - a veth pair between two fresh network namespaces (see netns.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "netns.h"

int netns_sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd) == 0 ? 0 : -1;
}

bool have_netns(char *why, size_t len)
{
	if (geteuid() != 0) {
		snprintf(why, len, "needs root (network namespaces)");
		return false;
	}
	if (netns_sh("ip -V >/dev/null 2>&1")) {
		snprintf(why, len, "needs iproute2");
		return false;
	}
	return true;
}

int netns_enter(int nsfd)
{
	return setns(nsfd, CLONE_NEWNET) ? -errno : 0;
}

/*
 * A process outside the test's process group that deletes the namespaces
 * once the test closes its end of a pipe (or dies).
 */
static pid_t start_watchdog(struct netns_pair *p)
{
	int fds[2];
	pid_t pid;

	if (pipe(fds))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char c;
		int devnull = open("/dev/null", O_RDWR);

		setsid();
		dup2(devnull, 0);
		dup2(devnull, 1);
		dup2(devnull, 2);
		for (int fd = 3; fd < 1024; fd++)
			if (fd != fds[0])
				close(fd);
		while (read(fds[0], &c, 1) < 0 && errno == EINTR)
			;
		netns_sh("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", p->ns_srv,
			 p->ns_cli);
		_exit(0);
	}
	close(fds[0]);
	p->watchdog_pipe = fds[1];
	return pid;
}

static void addrs_add(struct __test_metadata *_metadata, const char *ns, const char *ifname,
		      const char *const *addrs)
{
	for (int i = 0; addrs && addrs[i]; i++)
		ASSERT_EQ(0,
			  netns_sh("ip -n %s addr add %s dev %s%s", ns, addrs[i], ifname,
				   strchr(addrs[i], ':') ? " nodad" : ""));
}

void netns_veth_add(struct __test_metadata *_metadata, struct netns_pair *p,
		    const char *const *srv_addrs, const char *const *cli_addrs)
{
	ASSERT_EQ(0,
		  netns_sh("ip -n %s link add %s type veth peer name %s netns %s", p->ns_srv,
			   p->if_srv, p->if_cli, p->ns_cli));
	addrs_add(_metadata, p->ns_srv, p->if_srv, srv_addrs);
	addrs_add(_metadata, p->ns_cli, p->if_cli, cli_addrs);
	ASSERT_EQ(0, netns_sh("ip -n %s link set %s up", p->ns_srv, p->if_srv));
	ASSERT_EQ(0, netns_sh("ip -n %s link set %s up", p->ns_cli, p->if_cli));
}

static int open_ns(const char *name)
{
	char path[64];

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

void netns_pair_up(struct __test_metadata *_metadata, struct netns_pair *p, const char *tag,
		   const char *const *srv_addrs, const char *const *cli_addrs)
{
	uint8_t rnd[3];

	ASSERT_GE(4, strlen(tag));
	ASSERT_EQ(sizeof(rnd), getrandom(rnd, sizeof(rnd), 0));
	p->fd_srv = p->fd_cli = p->fd_orig = -1;
	snprintf(p->ns_srv, sizeof(p->ns_srv), "%sS%02x%02x%02x", tag, rnd[0], rnd[1], rnd[2]);
	snprintf(p->ns_cli, sizeof(p->ns_cli), "%sC%02x%02x%02x", tag, rnd[0], rnd[1], rnd[2]);
	snprintf(p->if_srv, sizeof(p->if_srv), "%ss%02x%02x%02x", tag, rnd[0], rnd[1], rnd[2]);
	snprintf(p->if_cli, sizeof(p->if_cli), "%sc%02x%02x%02x", tag, rnd[0], rnd[1], rnd[2]);
	p->watchdog = start_watchdog(p);
	ASSERT_LT(0, p->watchdog);
	ASSERT_EQ(0, netns_sh("ip netns add %s && ip netns add %s", p->ns_srv, p->ns_cli));
	ASSERT_EQ(0,
		  netns_sh("ip -n %s link set lo up && ip -n %s link set lo up", p->ns_srv,
			   p->ns_cli));
	netns_veth_add(_metadata, p, srv_addrs, cli_addrs);
	p->fd_orig = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	p->fd_srv = open_ns(p->ns_srv);
	p->fd_cli = open_ns(p->ns_cli);
	ASSERT_LE(0, p->fd_orig);
	ASSERT_LE(0, p->fd_srv);
	ASSERT_LE(0, p->fd_cli);
}

static void close_fd(int *fd)
{
	if (*fd > 0)
		close(*fd);
	*fd = -1;
}

void netns_pair_down(struct netns_pair *p)
{
	if (p->fd_orig > 0)
		netns_enter(p->fd_orig);
	close_fd(&p->fd_srv);
	close_fd(&p->fd_cli);
	close_fd(&p->fd_orig);
	if (p->watchdog > 0) {
		close(p->watchdog_pipe);
		waitpid(p->watchdog, NULL, 0);
		p->watchdog = 0;
	}
}
