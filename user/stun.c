// SPDX-License-Identifier: MIT
/*
 * stun.c - userspace STUN server (derp-protocol.md 4.5).
 *
 * One thread serves one UDP socket (dual-stack IPv6 when no host is given,
 * else a socket of the host's family), reading with recvmmsg and answering a
 * whole batch with one sendmmsg. The message functions at the top are pure:
 * no I/O, no allocation, safe on any input (they are fuzzed).
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

#include <zlib.h>

#include "log.h"
#include "util.h"
#include "stun.h"
#include "kderp_bytes.h"

#define STUN_BINDING_REQUEST 0x0001
#define STUN_BINDING_SUCCESS 0x0101
#define STUN_ATTR_MAPPED_ADDRESS 0x0001
#define STUN_ATTR_XOR_MAPPED_ADDRESS 0x0020
#define STUN_ATTR_XOR_MAPPED_ADDRESS_ALT 0x8020
#define STUN_ATTR_SOFTWARE 0x8022
#define STUN_ATTR_FINGERPRINT 0x8028
#define STUN_FINGERPRINT_XOR 0x5354554eu
#define STUN_SOFTWARE "tailnode"
#define STUN_SOFTWARE_LEN 8
#define STUN_FAMILY_IPV4 0x01
#define STUN_FAMILY_IPV6 0x02

static uint32_t stun_fingerprint(const uint8_t *p, size_t len)
{
	return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)len) ^ STUN_FINGERPRINT_XOR;
}

static void put_header(uint8_t *out, uint16_t type, uint16_t len, const uint8_t *txid)
{
	put_be16(out, type);
	put_be16(out + 2, len);
	put_be32(out + 4, KDERP_STUN_MAGIC);
	memcpy(out + 8, txid, KDERP_STUN_TXID_LEN);
}

/*
 * Walk the attributes after the header: each is type, length, value padded
 * to 4 bytes, running to the end of the datagram (the header's length field
 * is not consulted, as in derper). Returns 1 with the next attribute, 0 at
 * the end, -EINVAL if one does not fit.
 */
static int next_attr(const uint8_t *pkt, size_t len, size_t *off, uint16_t *type, uint16_t *alen,
		     const uint8_t **val)
{
	size_t padded;

	if (*off >= len)
		return 0;
	if (len - *off < 4)
		return -EINVAL;
	*type = get_be16(pkt + *off);
	*alen = get_be16(pkt + *off + 2);
	padded = ((size_t)*alen + 3) & ~(size_t)3;
	if (padded > len - *off - 4)
		return -EINVAL;
	*val = pkt + *off + 4;
	*off += 4 + padded;
	return 1;
}

int kderp_stun_parse_request(const uint8_t *pkt, size_t len, uint8_t txid[KDERP_STUN_TXID_LEN])
{
	bool software_ok = false;
	uint16_t last_type = 0, type = 0, alen = 0;
	const uint8_t *val = NULL;
	uint32_t got_fp = 0;
	size_t off;
	int r;

	if (!pkt || len < KDERP_STUN_HDR_LEN)
		return -EINVAL;
	/* top two bits zero, magic cookie: "is this STUN at all" */
	if ((pkt[0] & 0xc0) || get_be32(pkt + 4) != KDERP_STUN_MAGIC)
		return -EINVAL;
	if (get_be16(pkt) != STUN_BINDING_REQUEST)
		return -EINVAL;

	for (off = KDERP_STUN_HDR_LEN; (r = next_attr(pkt, len, &off, &type, &alen, &val)) > 0;) {
		last_type = type;
		if (type == STUN_ATTR_SOFTWARE && alen == STUN_SOFTWARE_LEN &&
		    !memcmp(val, STUN_SOFTWARE, STUN_SOFTWARE_LEN))
			software_ok = true;
		if (type == STUN_ATTR_FINGERPRINT && alen == 4)
			got_fp = get_be32(val);
	}
	if (r < 0)
		return r;
	if (!software_ok)
		return -EPROTO;
	/* The FINGERPRINT attribute (4 + 4 bytes) ends the message. */
	if (last_type != STUN_ATTR_FINGERPRINT)
		return -EBADMSG;
	if (got_fp != stun_fingerprint(pkt, len - 8))
		return -EBADMSG;
	if (txid)
		memcpy(txid, pkt + 8, KDERP_STUN_TXID_LEN);
	return 0;
}

int kderp_stun_build_response(uint8_t *out, size_t cap, const uint8_t txid[KDERP_STUN_TXID_LEN],
			      const struct sockaddr *addr)
{
	const struct sockaddr_in6 *sin6;
	const struct sockaddr_in *sin;
	const uint8_t *ip;
	uint16_t port;
	size_t alen;
	uint8_t fam;

	switch (addr ? addr->sa_family : AF_UNSPEC) {
	case AF_INET:
		sin = (const struct sockaddr_in *)addr;
		ip = (const uint8_t *)&sin->sin_addr;
		port = ntohs(sin->sin_port);
		fam = STUN_FAMILY_IPV4;
		break;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)addr;
		ip = sin6->sin6_addr.s6_addr;
		port = ntohs(sin6->sin6_port);
		fam = STUN_FAMILY_IPV6;
		/* dual-stack sockets see IPv4 clients as ::ffff:a.b.c.d */
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			ip += 12;
			fam = STUN_FAMILY_IPV4;
		}
		break;
	default:
		return -EAFNOSUPPORT;
	}
	alen = fam == STUN_FAMILY_IPV4 ? 4 : 16;
	if (cap < KDERP_STUN_HDR_LEN + 4 + 4 + alen)
		return -ENOSPC;

	put_header(out, STUN_BINDING_SUCCESS, (uint16_t)(4 + 4 + alen), txid);
	put_be16(out + 20, STUN_ATTR_XOR_MAPPED_ADDRESS);
	put_be16(out + 22, (uint16_t)(4 + alen));
	out[24] = 0;
	out[25] = fam;
	put_be16(out + 26, port ^ (KDERP_STUN_MAGIC >> 16));
	/* the address is XORed with the cookie followed by the transaction id */
	for (size_t i = 0; i < alen; i++)
		out[28 + i] = ip[i] ^ out[4 + i];
	return (int)(KDERP_STUN_HDR_LEN + 8 + alen);
}

int kderp_stun_build_request(uint8_t *out, size_t cap, const uint8_t txid[KDERP_STUN_TXID_LEN])
{
	if (cap < KDERP_STUN_REQUEST_LEN)
		return -ENOSPC;
	put_header(out, STUN_BINDING_REQUEST, KDERP_STUN_REQUEST_LEN - KDERP_STUN_HDR_LEN, txid);
	put_be16(out + 20, STUN_ATTR_SOFTWARE);
	put_be16(out + 22, STUN_SOFTWARE_LEN);
	memcpy(out + 24, STUN_SOFTWARE, STUN_SOFTWARE_LEN);
	put_be16(out + 32, STUN_ATTR_FINGERPRINT);
	put_be16(out + 34, 4);
	put_be32(out + 36, stun_fingerprint(out, 32));
	return KDERP_STUN_REQUEST_LEN;
}

/* Decode a (XOR-)MAPPED-ADDRESS value into @addr. */
static int decode_address(const uint8_t *pkt, const uint8_t *v, size_t vlen, bool xor,
			  struct sockaddr_storage *addr)
{
	uint16_t port;
	size_t alen;

	if (vlen < 4)
		return -EINVAL;
	if (v[1] == STUN_FAMILY_IPV4)
		alen = 4;
	else if (v[1] == STUN_FAMILY_IPV6)
		alen = 16;
	else
		return -EINVAL;
	if (vlen < 4 + alen)
		return -EINVAL;
	port = get_be16(v + 2);
	if (xor)
		port ^= KDERP_STUN_MAGIC >> 16;

	memset(addr, 0, sizeof(*addr));
	if (alen == 4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)addr;
		uint8_t *ip = (uint8_t *)&sin->sin_addr;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		for (size_t i = 0; i < 4; i++)
			ip[i] = v[4 + i] ^ (xor? pkt[4 + i] : 0);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)addr;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		for (size_t i = 0; i < 16; i++)
			sin6->sin6_addr.s6_addr[i] = v[4 + i] ^ (xor? pkt[4 + i] : 0);
	}
	return 0;
}

int kderp_stun_parse_response(const uint8_t *pkt, size_t len,
			      const uint8_t txid[KDERP_STUN_TXID_LEN],
			      struct sockaddr_storage *addr)
{
	const uint8_t *mapped = NULL, *xmapped = NULL;
	size_t mapped_len = 0, xmapped_len = 0;
	uint16_t type = 0, alen = 0;
	const uint8_t *val = NULL;
	size_t off;
	int r;

	if (!pkt || len < KDERP_STUN_HDR_LEN || (pkt[0] & 0xc0) ||
	    get_be32(pkt + 4) != KDERP_STUN_MAGIC || get_be16(pkt) != STUN_BINDING_SUCCESS)
		return -EINVAL;
	if (txid && memcmp(pkt + 8, txid, KDERP_STUN_TXID_LEN))
		return -EINVAL;
	for (off = KDERP_STUN_HDR_LEN; (r = next_attr(pkt, len, &off, &type, &alen, &val)) > 0;) {
		if (type == STUN_ATTR_XOR_MAPPED_ADDRESS ||
		    type == STUN_ATTR_XOR_MAPPED_ADDRESS_ALT) {
			xmapped = val;
			xmapped_len = alen;
		} else if (type == STUN_ATTR_MAPPED_ADDRESS) {
			mapped = val;
			mapped_len = alen;
		}
	}
	if (r < 0)
		return r;
	if (xmapped && !decode_address(pkt, xmapped, xmapped_len, true, addr))
		return 0;
	if (mapped && !decode_address(pkt, mapped, mapped_len, false, addr))
		return 0;
	return -ENOENT;
}

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

struct kderp_stun *kderp_stun_start(const char *host, int port)
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
	ret = -pthread_create(&s->thread, NULL, stun_thread, s);
	if (ret)
		goto close_stop;
	return s;

close_stop:
	close(s->stop_fd);
close_fd:
	close(s->fd);
free_s:
	free(s->rx_buf);
	free(s);
	errno = -ret;
	return NULL;
}

void kderp_stun_stop(struct kderp_stun *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one))
		log_warn("stun: cannot signal the server thread: %s", strerror(errno));
	pthread_join(s->thread, NULL);
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
