// SPDX-License-Identifier: MIT
/*
 * stun.c - userspace STUN server (derp-protocol.md 4.5).
 *
 * One thread serves one UDP socket (dual-stack IPv6 when no host is given,
 * else a socket of the host's family), reading with recvmmsg and answering a
 * whole batch with one sendmmsg. The messages are built and checked by
 * user/lib/stun_msg.c.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "stun.h"
#include "kderp_bytes.h"

/* ---- server ------------------------------------------------------------- */

#define STUN_BATCH 32
#define STUN_READ_BUF 65536
#define STUN_READ_ERROR_PAUSE_MS 1000

enum stun_counter {
	STUN_C_NOT_STUN,
	STUN_C_READ_ERROR,
	STUN_C_SUCCESS,
	STUN_C_WRITE_ERROR,
	STUN_C_IPV4,
	STUN_C_IPV6,
	STUN_NR_COUNTERS,
};

struct kderp_stun {
	int fd;
	int stop_fd; /* eventfd: written once by kderp_stun_stop() */
	int port;
	bool running; /* the thread was started */
	pthread_t thread;
	_Atomic uint64_t counters[STUN_NR_COUNTERS];
	/* recvmmsg/sendmmsg state, owned by the thread */
	struct mmsghdr rx[STUN_BATCH];
	struct iovec rx_iov[STUN_BATCH];
	struct sockaddr_storage peer[STUN_BATCH];
	struct mmsghdr tx[STUN_BATCH];
	struct iovec tx_iov[STUN_BATCH];
	uint8_t reply[STUN_BATCH][KDERP_STUN_RESPONSE_MAX];
	uint8_t *rx_buf; /* STUN_BATCH * STUN_READ_BUF */
};

static void count(struct kderp_stun *s, enum stun_counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&s->counters[c], n, memory_order_relaxed);
}

static bool peer_is_ipv4(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

	return ss->ss_family == AF_INET ||
		(ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr));
}

/* Send the @n replies queued in s->tx; a message that fails is skipped. */
static void send_replies(struct kderp_stun *s, int n)
{
	int off = 0;

	while (off < n) {
		int sent = sendmmsg(s->fd, s->tx + off, (unsigned int)(n - off), 0);

		if (sent < 0) {
			if (errno == EINTR)
				continue;
			log_debug("stun: sendmmsg: %s", strerror(errno));
			count(s, STUN_C_WRITE_ERROR, 1);
			off++;
			continue;
		}
		count(s, STUN_C_SUCCESS, (uint64_t)sent);
		off += sent;
	}
}

/* Serve what is queued on the socket. Returns -errno on a read error. */
static int serve_batch(struct kderp_stun *s)
{
	int n, nreply = 0;

	for (int i = 0; i < STUN_BATCH; i++) {
		s->rx[i].msg_hdr.msg_namelen = sizeof(s->peer[i]);
		s->rx[i].msg_hdr.msg_flags = 0;
	}
	n = recvmmsg(s->fd, s->rx, STUN_BATCH, MSG_DONTWAIT, NULL);
	if (n < 0)
		return -errno;

	for (int i = 0; i < n; i++) {
		const uint8_t *pkt = s->rx_iov[i].iov_base;
		uint8_t txid[KDERP_STUN_TXID_LEN];
		int len;

		if (kderp_stun_parse_request(pkt, s->rx[i].msg_len, txid)) {
			count(s, STUN_C_NOT_STUN, 1);
			continue;
		}
		count(s, peer_is_ipv4(&s->peer[i]) ? STUN_C_IPV4 : STUN_C_IPV6, 1);
		len = kderp_stun_build_response(s->reply[nreply], sizeof(s->reply[nreply]), txid,
						(const struct sockaddr *)&s->peer[i]);
		if (len < 0) {
			count(s, STUN_C_WRITE_ERROR, 1);
			continue;
		}
		s->tx_iov[nreply].iov_base = s->reply[nreply];
		s->tx_iov[nreply].iov_len = (size_t)len;
		s->tx[nreply].msg_hdr.msg_name = &s->peer[i];
		s->tx[nreply].msg_hdr.msg_namelen = s->rx[i].msg_hdr.msg_namelen;
		s->tx[nreply].msg_hdr.msg_iov = &s->tx_iov[nreply];
		s->tx[nreply].msg_hdr.msg_iovlen = 1;
		nreply++;
	}
	if (nreply)
		send_replies(s, nreply);
	return n;
}

static void *stun_thread(void *arg)
{
	struct kderp_stun *s = arg;
	struct pollfd pfd[2] = {
		{.fd = s->fd, .events = POLLIN},
		{.fd = s->stop_fd, .events = POLLIN},
	};

	for (;;) {
		int ret = poll(pfd, 2, -1);

		if (ret < 0) {
			if (errno == EINTR)
				continue;
			log_err("stun: poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents)
			break;
		if (!pfd[0].revents)
			continue;
		/* drain, but give the stop fd a look every few batches */
		for (int round = 0; round < 8; round++) {
			ret = serve_batch(s);
			if (ret == -EAGAIN || ret == -EWOULDBLOCK)
				break;
			if (ret == -EINTR)
				continue;
			if (ret < 0) {
				count(s, STUN_C_READ_ERROR, 1);
				log_warn("stun: read: %s", strerror(-ret));
				/* like derper: back off for a second after a read error */
				if (poll(&pfd[1], 1, STUN_READ_ERROR_PAUSE_MS) > 0)
					return NULL;
				break;
			}
			if (ret < STUN_BATCH)
				break;
		}
	}
	return NULL;
}

static int open_socket(const char *host, int port, int *fd_out)
{
	struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_PASSIVE};
	char hostbuf[256], portbuf[16];
	struct addrinfo *res = NULL;
	int fd, ret, one = 1, zero = 0;
	size_t hl;

	if (host && host[0]) {
		/* accept "[v6]" as written in -a */
		hl = strlen(host);
		if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
			if (hl - 2 >= sizeof(hostbuf))
				return -EINVAL;
			memcpy(hostbuf, host + 1, hl - 2);
			hostbuf[hl - 2] = '\0';
			host = hostbuf;
		}
		snprintf(portbuf, sizeof(portbuf), "%d", port);
		ret = getaddrinfo(host, portbuf, &hints, &res);
		if (ret)
			return ret == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
		fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			ret = -errno;
			freeaddrinfo(res);
			return ret;
		}
		if (res->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		ret = bind(fd, res->ai_addr, res->ai_addrlen) ? -errno : 0;
		freeaddrinfo(res);
	} else {
		struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
					    .sin6_port = htons((uint16_t)port),
					    .sin6_addr = IN6ADDR_ANY_INIT};
		struct sockaddr_in sin = {.sin_family = AF_INET,
					  .sin_port = htons((uint16_t)port),
					  .sin_addr.s_addr = htonl(INADDR_ANY)};

		fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		ret = fd < 0 ? -errno : 0;
		if (fd >= 0) {
			/* one dual-stack socket serves IPv4 and IPv6 */
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
			ret = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) ? -errno : 0;
			if (ret == -EADDRNOTAVAIL || ret == -EAFNOSUPPORT) {
				close(fd);
				fd = -1;
			}
		}
		if (fd < 0 && (ret == -EAFNOSUPPORT || ret == -EADDRNOTAVAIL)) {
			/* no IPv6 on this host (or disabled): IPv4 only */
			fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
			if (fd < 0)
				return -errno;
			ret = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) ? -errno : 0;
		}
		if (fd < 0)
			return ret;
	}
	if (ret) {
		close(fd);
		return ret;
	}
	*fd_out = fd;
	return 0;
}

static int local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -errno;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

struct kderp_stun *kderp_stun_open(const char *host, int port)
{
	struct kderp_stun *s;
	int ret;

	if (port < 0 || port > 65535) {
		errno = EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->fd = -1;
	s->stop_fd = -1;
	s->rx_buf = malloc((size_t)STUN_BATCH * STUN_READ_BUF);
	if (!s->rx_buf) {
		ret = -ENOMEM;
		goto free_s;
	}
	for (int i = 0; i < STUN_BATCH; i++) {
		s->rx_iov[i].iov_base = s->rx_buf + (size_t)i * STUN_READ_BUF;
		s->rx_iov[i].iov_len = STUN_READ_BUF;
		s->rx[i].msg_hdr.msg_name = &s->peer[i];
		s->rx[i].msg_hdr.msg_iov = &s->rx_iov[i];
		s->rx[i].msg_hdr.msg_iovlen = 1;
	}

	ret = open_socket(host, port, &s->fd);
	if (ret)
		goto free_s;
	s->port = local_port(s->fd);
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0) {
		ret = -errno;
		goto close_fd;
	}
	return s;

close_fd:
	close(s->fd);
free_s:
	free(s->rx_buf);
	free(s);
	errno = -ret;
	return NULL;
}

int kderp_stun_run(struct kderp_stun *s)
{
	int ret = -pthread_create(&s->thread, NULL, stun_thread, s);

	if (!ret)
		s->running = true;
	return ret;
}

struct kderp_stun *kderp_stun_start(const char *host, int port)
{
	struct kderp_stun *s = kderp_stun_open(host, port);
	int ret;

	if (!s)
		return NULL;
	ret = kderp_stun_run(s);
	if (ret) {
		kderp_stun_stop(s);
		errno = -ret;
		return NULL;
	}
	return s;
}

void kderp_stun_stop(struct kderp_stun *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (s->running) {
		if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one))
			log_warn("stun: cannot signal the server thread: %s", strerror(errno));
		pthread_join(s->thread, NULL);
	}
	close(s->stop_fd);
	close(s->fd);
	free(s->rx_buf);
	free(s);
}

int kderp_stun_port(const struct kderp_stun *s)
{
	return s ? s->port : -EINVAL;
}

void kderp_stun_get_counts(const struct kderp_stun *s, struct kderp_stun_counts *out)
{
	uint64_t v[STUN_NR_COUNTERS] = {0};

	if (s) {
		for (int i = 0; i < STUN_NR_COUNTERS; i++)
			v[i] = atomic_load_explicit(&s->counters[i], memory_order_relaxed);
	}
	out->not_stun = v[STUN_C_NOT_STUN];
	out->read_error = v[STUN_C_READ_ERROR];
	out->success = v[STUN_C_SUCCESS];
	out->write_error = v[STUN_C_WRITE_ERROR];
	out->ipv4 = v[STUN_C_IPV4];
	out->ipv6 = v[STUN_C_IPV6];
}

int kderp_stun_varz(const struct kderp_stun *s, char *buf, size_t len)
{
	struct kderp_stun_counts c;
	size_t off = 0;

	if (buf && len)
		buf[0] = '\0';
	else
		len = 0;
	kderp_stun_get_counts(s, &c);
	/* sorted by name, then by label value, as derper's varz prints them */
	appendf(buf, len, &off, "# TYPE stun_addrfamily counter\n");
	appendf(buf, len, &off, "stun_addrfamily{family=\"ipv4\"} %llu\n",
		(unsigned long long)c.ipv4);
	appendf(buf, len, &off, "stun_addrfamily{family=\"ipv6\"} %llu\n",
		(unsigned long long)c.ipv6);
	appendf(buf, len, &off, "# TYPE stun_requests counter\n");
	appendf(buf, len, &off, "stun_requests{disposition=\"not_stun\"} %llu\n",
		(unsigned long long)c.not_stun);
	appendf(buf, len, &off, "stun_requests{disposition=\"read_error\"} %llu\n",
		(unsigned long long)c.read_error);
	appendf(buf, len, &off, "stun_requests{disposition=\"success\"} %llu\n",
		(unsigned long long)c.success);
	appendf(buf, len, &off, "stun_requests{disposition=\"write_error\"} %llu\n",
		(unsigned long long)c.write_error);
	return (int)off;
}
