// SPDX-License-Identifier: MIT
/*
 * ctl.c - the control socket: one thread, one short request per connection,
 * only from root (or the daemon's own user). Requests never touch the relay
 * directly: close-peer marks the connections and wakes their owners
 * (server_close_peer), exactly as a mesh peer's ClosePeer does.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "ctl.h"
#include "kderp_abi.h"
#include "log.h"
#include "server.h"

static struct {
	struct server *srv;
	int lfd, evfd;
	bool running;
	pthread_t thread;
} ctl = {.lfd = -1, .evfd = -1};

static void handle(int fd)
{
	struct ucred cr;
	socklen_t cl = sizeof(cr);
	struct timeval tv = {.tv_sec = 1};
	char req[256], resp[128];
	uint8_t key[32];
	size_t n = 0;
	ssize_t r;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) ||
	    (cr.uid != 0 && cr.uid != geteuid())) {
		snprintf(resp, sizeof(resp), "err permission denied\n");
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (n < sizeof(req) - 1) {
		r = read(fd, req + n, sizeof(req) - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (memchr(req, '\n', n))
			break;
	}
	req[n] = 0;
	req[strcspn(req, "\r\n")] = 0;
	if (strcmp(req, "ping") == 0) {
		snprintf(resp, sizeof(resp), "ok %d\n", (int)getpid());
	} else if (strncmp(req, "close-peer ", 11) == 0) {
		size_t bin_len = 0;
		const char *end = NULL;

		if (strlen(req + 11) != 64 ||
		    sodium_hex2bin(key, sizeof(key), req + 11, 64, NULL, &bin_len, &end) ||
		    bin_len != 32) {
			snprintf(resp, sizeof(resp), "err bad key (want 64 hex digits)\n");
		} else {
			int k = server_close_peer(ctl.srv, key);

			log_info("control socket: close-peer %.8s...: %d connection(s)", req + 11,
				 k);
			snprintf(resp, sizeof(resp), "ok %d\n", k);
		}
	} else {
		snprintf(resp, sizeof(resp), "err unknown request\n");
	}
out:
	r = write(fd, resp, strlen(resp));
	(void)r;
}

static void *ctl_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct pollfd pf[2] = {{.fd = ctl.lfd, .events = POLLIN},
				       {.fd = ctl.evfd, .events = POLLIN}};
		int fd;

		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents)
			break;
		fd = accept4(ctl.lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		handle(fd);
		close(fd);
	}
	return NULL;
}

int ctl_start(struct server *s, const char *dir)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t plen = strlen(KDERP_CTL_PREFIX), dlen = strlen(dir);
	sigset_t all, old;
	int r;

	if (ctl.running)
		return -EBUSY;
	if (1 + plen + dlen > sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path + 1, KDERP_CTL_PREFIX, plen);
	memcpy(sun.sun_path + 1 + plen, dir, dlen);
	ctl.srv = s;
	ctl.lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ctl.evfd = eventfd(0, EFD_CLOEXEC);
	if (ctl.lfd < 0 || ctl.evfd < 0) {
		r = -errno;
		goto fail;
	}
	if (bind(ctl.lfd, (struct sockaddr *)&sun,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + plen + dlen)) ||
	    listen(ctl.lfd, 16)) {
		r = -errno;
		goto fail;
	}
	/* The main thread takes signals with sigwait: this thread blocks them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&ctl.thread, NULL, ctl_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		goto fail;
	ctl.running = true;
	return 0;
fail:
	if (ctl.lfd >= 0)
		close(ctl.lfd);
	if (ctl.evfd >= 0)
		close(ctl.evfd);
	ctl.lfd = ctl.evfd = -1;
	return r;
}

void ctl_stop(void)
{
	uint64_t one = 1;
	ssize_t r;

	if (!ctl.running)
		return;
	r = write(ctl.evfd, &one, sizeof(one));
	(void)r;
	pthread_join(ctl.thread, NULL);
	close(ctl.lfd);
	close(ctl.evfd);
	ctl.lfd = ctl.evfd = -1;
	ctl.running = false;
}
