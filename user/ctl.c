// SPDX-License-Identifier: MIT
/*
 * ctl.c - the control socket: one thread, one short request per connection,
 * only from root (or the daemon's own user). Requests never touch the relay
 * directly: close-peer calls the callback main.c registered, which marks
 * the connections and wakes their owners (server_close_peer), exactly as a
 * mesh peer's ClosePeer does.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
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

struct kderp_ctl {
	kderp_ctl_close_fn close_peer;
	void *arg;
	int lfd, evfd;
	pthread_t thread;
};

static void handle(struct kderp_ctl *ctl, int fd)
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
			int k = ctl->close_peer(ctl->arg, key);

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
	struct kderp_ctl *ctl = arg;

	for (;;) {
		struct pollfd pf[2] = {{.fd = ctl->lfd, .events = POLLIN},
				       {.fd = ctl->evfd, .events = POLLIN}};
		int fd;

		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents)
			break;
		fd = accept4(ctl->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		handle(ctl, fd);
		close(fd);
	}
	return NULL;
}

/* Bind the abstract socket @<prefix><dir> and listen. */
static int ctl_listen(struct kderp_ctl *ctl, const char *dir)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t plen = strlen(KDERP_CTL_PREFIX), dlen = strlen(dir);

	if (1 + plen + dlen > sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path + 1, KDERP_CTL_PREFIX, plen);
	memcpy(sun.sun_path + 1 + plen, dir, dlen);
	ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ctl->evfd = eventfd(0, EFD_CLOEXEC);
	if (ctl->lfd < 0 || ctl->evfd < 0)
		return -errno;
	if (bind(ctl->lfd, (struct sockaddr *)&sun,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + plen + dlen)) ||
	    listen(ctl->lfd, 16))
		return -errno;
	return 0;
}

static void ctl_free(struct kderp_ctl *ctl)
{
	if (ctl->lfd >= 0)
		close(ctl->lfd);
	if (ctl->evfd >= 0)
		close(ctl->evfd);
	free(ctl);
}

struct kderp_ctl *kderp_ctl_start(const char *dir, kderp_ctl_close_fn close_peer, void *arg,
				  int *err)
{
	struct kderp_ctl *ctl = calloc(1, sizeof(*ctl));
	sigset_t all, old;
	int r;

	if (!ctl) {
		*err = -ENOMEM;
		return NULL;
	}
	ctl->close_peer = close_peer;
	ctl->arg = arg;
	ctl->lfd = ctl->evfd = -1;
	r = ctl_listen(ctl, dir);
	if (r == 0) {
		/* The main thread takes signals with sigwait: this thread blocks them. */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		r = -pthread_create(&ctl->thread, NULL, ctl_main, ctl);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (r) {
		ctl_free(ctl);
		*err = r;
		return NULL;
	}
	return ctl;
}

void kderp_ctl_stop(struct kderp_ctl *ctl)
{
	uint64_t one = 1;
	ssize_t r;

	if (!ctl)
		return;
	r = write(ctl->evfd, &one, sizeof(one));
	(void)r;
	pthread_join(ctl->thread, NULL);
	ctl_free(ctl);
}
