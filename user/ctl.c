// SPDX-License-Identifier: MIT
/*
 * ctl.c - the control socket: one thread, one short request per connection,
 * only from root (or the daemon's own user). The socket is a path in a
 * directory only root may write (include/kderp_abi.h), bound and listened on
 * before the daemon drops privileges, so that its clients see uid 0 and the
 * daemon's pid in SO_PEERCRED. Requests never touch the relay
 * directly: close-peer calls the callback main.c registered, which marks
 * the connections and wakes their owners (server_close_peer), exactly as a
 * mesh peer's ClosePeer does.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "ctl.h"
#include "log.h"
#include "util.h"

struct kderp_ctl {
	kderp_ctl_close_fn close_peer;
	void *arg;
	int lfd, evfd, lock_fd;
	bool bound, running;
	pthread_t thread;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char lock_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
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

/*
 * The socket's directory must be one only root or this user may write
 * (created 0700 when missing): then nobody else can have put anything at the
 * path. 0 or -errno (logged).
 */
static int check_dir(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *slash = strrchr(path, '/');
	struct stat st;
	int e;

	if (!slash || slash == path) {
		log_err("control socket %s: give an absolute path in a directory of its own", path);
		return -EINVAL;
	}
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	if (mkdir(dir, 0700) == 0) {
		log_info("control socket: created %s (0700)", dir);
	} else if (errno != EEXIST) {
		e = errno;
		log_err("control socket %s: creating %s: %s", path, dir, strerror(e));
		return -e;
	}
	if (stat(dir, &st)) {
		e = errno;
		log_err("control socket %s: %s: %s", path, dir, strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_err("control socket %s: %s is not a directory", path, dir);
		return -ENOTDIR;
	}
	if (!stat_private(&st)) {
		log_err("control socket %s: %s (owner uid %u, mode %04o) may be written by "
			"others; use a directory only root may write",
			path, dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

/* Who serves the socket at path now: its pid, or 0. */
static pid_t live_owner(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct ucred cr = {0};
	socklen_t cl = sizeof(cr);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	pid_t pid = 0;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0)
		pid = cr.pid;
	if (fd >= 0)
		close(fd);
	return pid;
}

/*
 * Take path + ".lock" for the daemon's lifetime: two daemons never share a
 * socket, and a socket left by one that died is told from a live one.
 * 0, or -errno (logged).
 */
static int take_lock(struct kderp_ctl *ctl)
{
	struct stat a, b;
	pid_t pid;
	int fd, e;

	snprintf(ctl->lock_path, sizeof(ctl->lock_path), "%s.lock", ctl->path);
	/*
	 * ctl->lock_fd is set only once the lock is ours: ctl_free removes the
	 * lock file of a lock_fd, and must never remove another daemon's.
	 */
	for (int tries = 0; tries < 3; tries++) {
		fd = open(ctl->lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
			  0600);
		if (fd < 0) {
			e = errno;
			log_err("control socket %s: opening %s: %s", ctl->path, ctl->lock_path,
				strerror(e));
			return -e;
		}
		if (fstat(fd, &a) || !S_ISREG(a.st_mode)) {
			log_err("control socket %s: %s is not a regular file", ctl->path,
				ctl->lock_path);
			close(fd);
			return -EINVAL;
		}
		if (flock(fd, LOCK_EX | LOCK_NB)) {
			e = errno;
			close(fd);
			if (e != EWOULDBLOCK) {
				log_err("control socket %s: locking %s: %s", ctl->path,
					ctl->lock_path, strerror(e));
				return -e;
			}
			pid = live_owner(ctl->path);
			if (pid)
				log_err("control socket %s is in use by kderpd pid %d; stop it, or "
					"give this one another --bpffs-dir or --ctl",
					ctl->path, (int)pid);
			else
				log_err("control socket %s is in use by another kderpd (%s is "
					"locked); stop it, or give this one another --bpffs-dir or "
					"--ctl",
					ctl->path, ctl->lock_path);
			return -EADDRINUSE;
		}
		/* Locked; unless its owner removed the file meanwhile (then again). */
		if (stat(ctl->lock_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			ctl->lock_fd = fd;
			return 0;
		}
		close(fd);
	}
	log_err("control socket %s: %s keeps changing", ctl->path, ctl->lock_path);
	return -EAGAIN;
}

/* Bind the socket at ctl->path (0600) and listen. 0 or -errno (logged). */
static int ctl_listen(struct kderp_ctl *ctl)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	mode_t old;
	int r;

	if (strlen(ctl->path) >= sizeof(sun.sun_path)) {
		log_err("control socket %s: %s (at most %zu bytes)", ctl->path,
			strerror(ENAMETOOLONG), sizeof(sun.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	r = check_dir(ctl->path);
	if (r == 0)
		r = take_lock(ctl);
	if (r)
		return r;
	memcpy(sun.sun_path, ctl->path, strlen(ctl->path) + 1);
	ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	ctl->evfd = eventfd(0, EFD_CLOEXEC);
	if (ctl->lfd < 0 || ctl->evfd < 0) {
		r = -errno;
		log_err("control socket %s: %s", ctl->path, strerror(-r));
		return r;
	}
	/* We hold the lock: what is at the path was left by a daemon that is gone. */
	if (unlink(ctl->path) == 0)
		log_info("control socket: replaced a stale %s", ctl->path);
	/* Single-threaded here: the umask change is seen by no one else. */
	old = umask(0177);
	r = bind(ctl->lfd, (struct sockaddr *)&sun, sizeof(sun)) ? -errno : 0;
	umask(old);
	if (r == 0)
		ctl->bound = true;
	if (r == 0 && listen(ctl->lfd, 16))
		r = -errno;
	if (r)
		log_err("control socket %s: %s", ctl->path, strerror(-r));
	return r;
}

static void ctl_free(struct kderp_ctl *ctl)
{
	if (ctl->lfd >= 0)
		close(ctl->lfd);
	if (ctl->evfd >= 0)
		close(ctl->evfd);
	/*
	 * The socket first, then the lock. After a drop of privileges the
	 * directory may no longer be ours to write: the files stay, and the
	 * next start replaces them.
	 */
	if (ctl->bound && unlink(ctl->path) && errno != ENOENT)
		log_debug("control socket: leaving %s: %s", ctl->path, strerror(errno));
	if (ctl->lock_fd >= 0) {
		if (unlink(ctl->lock_path) && errno != ENOENT)
			log_debug("control socket: leaving %s: %s", ctl->lock_path,
				  strerror(errno));
		close(ctl->lock_fd);
	}
	free(ctl);
}

void kderp_ctl_sweep(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name), digits = strspn(e->d_name + 4, "0123456789");
		char name[NAME_MAX + 1];
		int fd;

		/* ctl-<pid>.sock.lock, and nothing else */
		if (strncmp(e->d_name, "ctl-", 4) || !digits || n != 4 + digits + 10 ||
		    strcmp(e->d_name + 4 + digits, ".sock.lock"))
			continue;
		fd = openat(dirfd(d), e->d_name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0)
			continue;
		/* Unlocked: its daemon is gone. Removed while we hold it. */
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			snprintf(name, sizeof(name), "%.*s", (int)(n - 5), e->d_name);
			if (unlinkat(dirfd(d), name, 0) == 0)
				log_info("control socket: removed a stale %s/%s", dir, name);
			unlinkat(dirfd(d), e->d_name, 0);
		}
		close(fd);
	}
	closedir(d);
}

struct kderp_ctl *kderp_ctl_open(const char *path, kderp_ctl_close_fn close_peer, void *arg,
				 int *err)
{
	struct kderp_ctl *ctl = calloc(1, sizeof(*ctl));
	int r;

	if (!ctl) {
		*err = -ENOMEM;
		return NULL;
	}
	ctl->close_peer = close_peer;
	ctl->arg = arg;
	ctl->lfd = ctl->evfd = ctl->lock_fd = -1;
	snprintf(ctl->path, sizeof(ctl->path), "%s", path);
	r = ctl_listen(ctl);
	if (r) {
		ctl_free(ctl);
		*err = r;
		return NULL;
	}
	log_info("control socket: %s", ctl->path);
	return ctl;
}

int kderp_ctl_run(struct kderp_ctl *ctl)
{
	sigset_t all, old;
	int r;

	/* The main thread takes signals with sigwait: this thread blocks them. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = -pthread_create(&ctl->thread, NULL, ctl_main, ctl);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r == 0)
		ctl->running = true;
	return r;
}

const char *kderp_ctl_path(const struct kderp_ctl *ctl)
{
	return ctl->path;
}

void kderp_ctl_stop(struct kderp_ctl *ctl)
{
	uint64_t one = 1;
	ssize_t r;

	if (!ctl)
		return;
	if (ctl->running) {
		r = write(ctl->evfd, &one, sizeof(one));
		(void)r;
		pthread_join(ctl->thread, NULL);
	}
	ctl_free(ctl);
}
