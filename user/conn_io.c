// SPDX-License-Identifier: MIT
/*
 * conn_io.c - a connection's socket (conn_io.h): reads, writes, close.
 *
 * Writes go out from the in-flight array: plain TCP and kTLS TX hand the
 * kernel plaintext with one writev; user-space TLS gathers whole frames
 * into the worker's buffer so that one SSL_write makes few records.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "conn.h"
#include "conn_io.h"
#include "derp_frame.h"
#include "log.h"
#include "names.h"
#include "peers.h"
#include "pkt.h"
#include "queue.h"
#include "server.h"
#include "tls.h"
#include "util.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TLS_GET_RECORD_TYPE
#define TLS_GET_RECORD_TYPE 2
#endif
#define TLS_RECORD_ALERT 21
#define TLS_RECORD_HANDSHAKE 22

void conn_set_epollout(struct conn *c, bool on)
{
	struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};

	if (c->epollout == on)
		return;
	c->epollout = on;
	epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* ---- writing ---- */

static void account_written(struct conn *c, const struct pkt *p)
{
	struct worker *w = c->w;

	switch (p->kind) {
	case PKT_OTHER:
	case PKT_DISCO:
		STAT_ADD(w->stats->c[CTR_PACKETS_SENT], 1);
		STAT_ADD(w->stats->c[CTR_BYTES_SENT], p->len - DERP_RECV_OVERHEAD);
		STAT_ADD(c->st->pkts_out, 1);
		STAT_ADD(c->st->bytes_out, p->len - DERP_RECV_OVERHEAD);
		break;
	case PKT_PONG:
		STAT_ADD(w->stats->c[CTR_SENT_PONG], 1);
		c->pong_queued = false;
		break;
	case PKT_PEER_GONE_DISC:
		STAT_ADD(w->stats->c[CTR_PEER_GONE_DISCONNECTED], 1);
		break;
	case PKT_PEER_GONE_NOT_HERE:
		STAT_ADD(w->stats->c[CTR_PEER_GONE_NOT_HERE], 1);
		break;
	default:
		break;
	}
}

/* The frame at if_head is written: count it, free it, move on. */
static void inflight_done(struct conn *c)
{
	struct pkt *p = c->inflight[c->if_head];

	account_written(c, p);
	pkt_free(p);
	c->if_head++;
	c->if_off = 0;
}

/* Plain TCP and kTLS TX: the kernel takes plaintext, one writev. */
static int write_iov(struct conn *c)
{
	struct iovec iov[INFLIGHT_MAX];
	int niov = 0;
	ssize_t r;

	for (int i = c->if_head; i < c->if_n; i++) {
		uint32_t off = i == c->if_head ? c->if_off : 0;

		iov[niov].iov_base = c->inflight[i]->data + off;
		iov[niov].iov_len = c->inflight[i]->len - off;
		niov++;
	}
	r = writev(c->fd, iov, niov);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	while (r > 0 && c->if_head < c->if_n) {
		size_t left = c->inflight[c->if_head]->len - c->if_off;

		if ((size_t)r < left) {
			c->if_off += r;
			break;
		}
		r -= left;
		inflight_done(c);
	}
	return c->if_head == c->if_n ? 1 : 0;
}

/* Keep TLS bytes OpenSSL has not accepted yet for the next try. */
static int tls_stage(struct conn *c, const uint8_t *buf, size_t n)
{
	c->tlsbuf = malloc(n);
	if (!c->tlsbuf)
		return -ENOMEM;
	memcpy(c->tlsbuf, buf, n);
	c->tlsbuf_len = n;
	return 0;
}

/* Write the staged bytes: 1 when all are out, 0 blocked, < 0 error. */
static int tls_send_staged(struct conn *c)
{
	while (c->tlsbuf_len) {
		ssize_t r = tls_write(c->ssl, c->tlsbuf, c->tlsbuf_len);

		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return (int)r;
		memmove(c->tlsbuf, c->tlsbuf + r, c->tlsbuf_len - r);
		c->tlsbuf_len -= r;
	}
	free(c->tlsbuf);
	c->tlsbuf = NULL;
	return 1;
}

/* Copy whole frames into the worker's gather buffer; returns the bytes. */
static size_t tls_gather(struct conn *c)
{
	struct worker *w = c->w;
	size_t n = 0;

	while (c->if_head < c->if_n) {
		const struct pkt *p = c->inflight[c->if_head];

		if (n + p->len > w->wbuf_cap)
			break;
		memcpy(w->wbuf + n, p->data, p->len);
		n += p->len;
		inflight_done(c);
	}
	return n;
}

/* Send n gathered bytes; what OpenSSL does not take yet is staged. */
static int tls_send_gathered(struct conn *c, size_t n)
{
	const uint8_t *buf = c->w->wbuf;

	for (size_t off = 0; off < n;) {
		ssize_t r = tls_write(c->ssl, buf + off, n - off);

		if (r == -EAGAIN)
			return tls_stage(c, buf + off, n - off);
		if (r < 0)
			return (int)r;
		off += r;
	}
	return 0;
}

/* User-space TLS. Returns 1 when all is written, 0 blocked, < 0 error. */
static int write_tls(struct conn *c)
{
	int r;

	if (!c->tlsbuf) {
		const struct pkt *p = c->inflight[c->if_head];

		if (p->len > c->w->wbuf_cap) {
			/* Larger than the gather buffer: written on its own. */
			r = tls_stage(c, p->data, p->len);
			if (r == 0)
				inflight_done(c);
		} else {
			r = tls_send_gathered(c, tls_gather(c));
		}
		if (r < 0)
			return r;
	}
	if (c->tlsbuf) {
		r = tls_send_staged(c);
		if (r <= 0)
			return r;
	}
	return c->if_head == c->if_n ? 1 : 0;
}

static int write_inflight(struct conn *c)
{
	if (!c->ssl || c->tls_mode >= KDERP_TLS_KTLS_TX)
		return write_iov(c);
	return write_tls(c);
}

/* Nothing is queued any more: stop watching for EPOLLOUT. */
static void flush_idle(struct conn *c)
{
	if (!c->inflight)
		atomic_store(&c->flush_pending, true); /* no memory yet: the tick retries */
	conn_set_epollout(c, false);
	__atomic_store_n(&c->blocked_since, 0, __ATOMIC_RELAXED);
	if (c->state == CS_HTTP_DONE)
		conn_close(c, NULL);
}

void conn_flush(struct conn *c)
{
	struct worker *w = c->w;

	if (c->state == CS_CLOSED || c->state == CS_TLS_HANDSHAKE)
		return;
	atomic_store(&c->flush_pending, false);
	for (int round = 0; round < 16; round++) {
		int r;

		if (!c->tlsbuf && c->if_head == c->if_n) {
			queue_refill_inflight(c);
			if (c->if_n == 0) {
				flush_idle(c);
				return;
			}
		}
		r = write_inflight(c);
		if (r < 0) {
			char why[96];

			snprintf(why, sizeof(why), "write error: %s", strerror(-r));
			conn_close(c, why);
			return;
		}
		if (r == 0) {
			if (!c->blocked_since)
				__atomic_store_n(&c->blocked_since, w->now ? w->now : 1,
						 __ATOMIC_RELAXED);
			conn_set_epollout(c, true);
			return;
		}
		__atomic_store_n(&c->blocked_since, 0, __ATOMIC_RELAXED);
	}
	/* Still more to write: come back next iteration, others go first. */
	atomic_store(&c->flush_pending, true);
	conn_flush_push(c);
}

/* ---- reading ---- */

/*
 * kTLS RX read errors. EIO: the next record is not application data, and
 * its type comes with recvmsg as a control message. EBADMSG: a record failed
 * authentication. EMSGSIZE: not a valid record at all.
 */
static void ktls_read_error(struct conn *c, int err)
{
	union {
		char buf[CMSG_SPACE(sizeof(unsigned char))];
		struct cmsghdr align;
	} cbuf;
	unsigned char data[64];
	struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = cbuf.buf,
			     .msg_controllen = sizeof(cbuf.buf)};
	struct cmsghdr *cm;
	char why[96];
	int type = -1;

	if (err == EBADMSG) {
		conn_close(c, "TLS record failed authentication (bad tag)");
		return;
	}
	if (err != EIO) {
		conn_close(c, "invalid TLS record (not a record header)");
		return;
	}
	if (recvmsg(c->fd, &msg, MSG_DONTWAIT) >= 0) {
		cm = CMSG_FIRSTHDR(&msg);
		if (cm && cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
			type = *(unsigned char *)CMSG_DATA(cm);
	}
	if (type == TLS_RECORD_ALERT)
		snprintf(why, sizeof(why), "TLS alert on a kTLS socket");
	else if (type == TLS_RECORD_HANDSHAKE)
		snprintf(why, sizeof(why),
			 "TLS handshake message (renegotiation) on a kTLS socket");
	else
		snprintf(why, sizeof(why), "TLS control record (type %d) on a kTLS socket", type);
	conn_close(c, why);
}

/* The peer closed its side: name what it left unfinished. */
static void close_on_eof(struct conn *c)
{
	const char *why = "client closed";

	if (c->state == CS_WAIT_CLIENTINFO) {
		STAT_ADD(c->w->stats->c[CTR_HANDSHAKE_FAILURES], 1);
		STAT_ADD(c->w->stats->c[CTR_HS_FAIL_CLOSED], 1);
		why = "client closed before its ClientInfo was complete";
	} else if (c->state == CS_HTTP) {
		why = "client closed before a complete request";
	}
	conn_close(c, why);
}

/* User-space TLS (and kTLS TX, whose receive side is OpenSSL's). */
static ssize_t read_tls(struct conn *c, uint8_t *buf, size_t room)
{
	char why[160];
	size_t got = 0;

	while (got < room) {
		ssize_t n = tls_read(c->ssl, buf + got, room - got, why, sizeof(why));

		if (n > 0) {
			got += n;
			continue;
		}
		if (!got && n == TLS_READ_EOF) {
			close_on_eof(c);
			return -1;
		}
		if (!got && n == TLS_READ_FAILED) {
			conn_close(c, why);
			return -1;
		}
		break;
	}
	/*
	 * A TLS 1.3 KeyUpdate asking us to update too: OpenSSL 3.0 cannot
	 * hand the kernel a new send key, so a kTLS sender would go on with
	 * the old one and the peer would reject every record. Close cleanly.
	 */
	if (c->tls_mode == KDERP_TLS_KTLS_TX && tls_key_update_requested(c->ssl)) {
		conn_close(c, "TLS 1.3 KeyUpdate requested on a kTLS send socket");
		return -1;
	}
	/* Decrypted bytes may remain inside OpenSSL: read again next round. */
	if (got && (tls_pending(c->ssl) || got == room))
		conn_reread_push(c, false);
	return (ssize_t)got;
}

/* Plain TCP, or kTLS RX: the kernel hands over decrypted bytes. */
static ssize_t read_sock(struct conn *c, uint8_t *buf, size_t room)
{
	ssize_t r = read(c->fd, buf, room);
	char why[96];

	if (r > 0)
		return r;
	if (r == 0) {
		close_on_eof(c);
		return -1;
	}
	if (errno == EAGAIN || errno == EINTR)
		return 0;
	if (c->tls_mode == KDERP_TLS_KTLS_TXRX &&
	    (errno == EIO || errno == EBADMSG || errno == EMSGSIZE)) {
		ktls_read_error(c, errno);
		return -1;
	}
	snprintf(why, sizeof(why), "read error: %s", strerror(errno));
	conn_close(c, why);
	return -1;
}

ssize_t conn_read_some(struct conn *c, uint8_t *buf, size_t room)
{
	if (c->ssl && c->tls_mode != KDERP_TLS_KTLS_TXRX)
		return read_tls(c, buf, room);
	return read_sock(c, buf, room);
}

void conn_drop_carry(struct conn *c)
{
	free(c->carry);
	c->carry = NULL;
	c->carry_len = 0;
}

void conn_store_carry(struct conn *c, const uint8_t *p, size_t n)
{
	conn_drop_carry(c);
	if (!n)
		return;
	c->carry = malloc(n);
	if (!c->carry) {
		conn_close(c, "out of memory");
		return;
	}
	memcpy(c->carry, p, n);
	c->carry_len = n;
}

/* ---- closing ---- */

static void log_close(const struct conn *c, const char *reason)
{
	if (c->key_hex8[0])
		log_info("conn %llu close: key %s from %s (%s): %s", (unsigned long long)c->id,
			 c->key_hex8, c->addr_str, tls_mode_name(c->tls_mode),
			 reason ? reason : "done");
	else if (reason)
		log_info("conn %llu close: %s (%s): %s", (unsigned long long)c->id, c->addr_str,
			 c->ssl ? "tls" : "plain", reason);
}

/* Free the socket and the owner-only buffers. */
static void release_io(struct conn *c)
{
	epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	tls_conn_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	conn_drop_carry(c);
	free(c->tlsbuf);
	c->tlsbuf = NULL;
	free(c->req);
	c->req = NULL;
}

void conn_close(struct conn *c, const char *reason)
{
	struct keyset gone_to = {0};
	struct worker *w = c->w;

	if (c->state == CS_CLOSED)
		return;
	peers_batch_unlock(w);
	if (c->registered)
		peers_state_close(c);
	if (peers_unregister(c->srv, c, &gone_to))
		peers_notify_gone(c->srv, w, c->key, &gone_to);
	keyset_free(&gone_to);
	log_close(c, reason);
	c->state = CS_CLOSED;
	queue_free_all(c);
	release_io(c);
	/* Unlink; free after the next drain of the remote flush list. */
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	w->accept_resume_ns = 0; /* a descriptor is free: accept again if paused */
	c->zombie_next = w->zombies;
	w->zombies = c;
}

void conn_protocol_error(struct conn *c, const char *why)
{
	STAT_ADD(c->w->stats->c[CTR_PROTOCOL_ERRORS], 1);
	conn_close(c, why);
}

void conn_free(struct conn *c)
{
	pthread_mutex_destroy(&c->qlock);
	free(c);
}
