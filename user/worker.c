// SPDX-License-Identifier: MIT
/*
 * worker.c - the relay engine. One epoll loop per worker thread. A worker
 * owns the connections it accepted: it alone reads them, writes them and
 * frees them. Other workers only enqueue into a connection's bounded queues
 * (under its qlock) and ask the owner to flush.
 *
 * Path of a packet (Documentation/architecture.md): one large read into the
 * worker's buffer -> frames parsed in place -> SendPacket rewritten in place
 * to RecvPacket(src) -> copied into the destination's queue (drop-oldest) ->
 * the destination's owner gathers everything queued and writes it with one
 * writev (or one SSL_write) per flush.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>
#include <sodium.h>

#include "config.h"
#include "derp.h"
#include "http.h"
#include "log.h"
#include "server.h"
#include "statemap.h"
#include "tls.h"
#include "util.h"
#include "web.h"

#define RBUF_CAP (1024 * 1024)
#define READ_BUDGET (256 * 1024)
#define WBUF_CAP (64 * 1024)
#define TICK_NS (250 * NSEC_PER_MSEC)
#define EV_LISTENER_BASE 1
#define EV_EVENTFD 16

static __thread struct worker *cur_worker;

struct pkt *pkt_new(uint32_t len, uint8_t kind)
{
	struct pkt *p = malloc(sizeof(*p) + len);

	if (!p)
		return NULL;
	p->next = NULL;
	p->len = len;
	p->kind = kind;
	p->enq_ns = 0;
	return p;
}

void pkt_free(struct pkt *p)
{
	free(p);
}

struct pkt *frame_new(uint8_t type, const void *a, uint32_t alen, const void *b, uint32_t blen,
		      uint8_t kind)
{
	struct pkt *p = pkt_new(DERP_FRAME_HDR_LEN + alen + blen, kind);

	if (!p)
		return NULL;
	p->data[0] = type;
	put_be32(p->data + 1, alen + blen);
	if (alen)
		memcpy(p->data + 5, a, alen);
	if (blen)
		memcpy(p->data + 5 + alen, b, blen);
	return p;
}

static inline int drop_kind(uint8_t pkind)
{
	return pkind == PKT_DISCO ? KIND_DISCO : KIND_OTHER;
}

static void count_drop(struct worker *w, struct conn *dst, struct pkt *p, enum drop_reason r)
{
	uint32_t payload = p->len > 37 ? p->len - 37 : 0;
	int k = drop_kind(p->kind);

	STAT_ADD(w->stats->drop_pkts[r][k], 1);
	STAT_ADD(w->stats->drop_bytes[r][k], payload);
	if (dst) {
		struct peer_stats *st = __atomic_load_n(&dst->st, __ATOMIC_ACQUIRE);

		__atomic_fetch_add(&st->drops, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&st->drops_reason[r], 1, __ATOMIC_RELAXED);
	}
}

/* Ask dst's owner to flush it. Cheap when a flush is already pending. */
void worker_wake_flush(struct worker *from, struct conn *dst)
{
	struct worker *ow = dst->w;

	if (atomic_load_explicit(&dst->flush_pending, memory_order_relaxed) ||
	    atomic_exchange(&dst->flush_pending, true))
		return;
	if (ow == from) {
		if (!dst->in_local_flush) {
			dst->in_local_flush = true;
			dst->flush_next = ow->flush;
			ow->flush = dst;
		}
		return;
	}
	pthread_mutex_lock(&ow->remote_lock);
	if (ow->nremote == ow->remote_cap) {
		unsigned ncap = ow->remote_cap ? ow->remote_cap * 2 : 64;
		struct conn **n = realloc(ow->remote, ncap * sizeof(*n));

		if (!n) {
			pthread_mutex_unlock(&ow->remote_lock);
			/* The owner's periodic tick flushes anything left pending. */
			return;
		}
		ow->remote = n;
		ow->remote_cap = ncap;
	}
	ow->remote[ow->nremote++] = dst;
	pthread_mutex_unlock(&ow->remote_lock);
	if (!atomic_exchange(&ow->woken, true)) {
		uint64_t one = 1;
		ssize_t r = write(ow->evfd, &one, sizeof(one));

		(void)r;
	}
}

/* Queue a control frame (any thread). Takes ownership of p (NULL ok). */
void conn_queue_ctl(struct conn *c, struct pkt *p)
{
	struct worker *w = cur_worker;

	if (!p)
		return;
	pthread_mutex_lock(&c->qlock);
	if (c->dead || c->nctl >= CTL_MAX) {
		pthread_mutex_unlock(&c->qlock);
		if (w)
			STAT_ADD(w->stats->c[CTR_CTL_DROPS], 1);
		pkt_free(p);
		return;
	}
	if (c->ctl_tail)
		c->ctl_tail->next = p;
	else
		c->ctl_head = p;
	c->ctl_tail = p;
	c->nctl++;
	pthread_mutex_unlock(&c->qlock);
	if (w)
		worker_wake_flush(w, c);
	else
		atomic_store(&c->flush_pending, true); /* the owner's tick picks it up */
}

/* Enqueue a RecvPacket for dst with derper's drop-oldest policy. */
bool conn_enqueue_packet(struct worker *w, struct conn *dst, struct pkt *p)
{
	struct pkt *old = NULL;
	int q = p->kind == PKT_DISCO ? 1 : 0;

	p->enq_ns = w->now;
	pthread_mutex_lock(&dst->qlock);
	if (unlikely(dst->dead)) {
		pthread_mutex_unlock(&dst->qlock);
		count_drop(w, NULL, p, DROP_GONE_DISCONNECTED);
		pkt_free(p);
		return false;
	}
	if (dst->rcount[q] == QDEPTH) {
		old = dst->ring[q][dst->rhead[q]];
		dst->rhead[q] = (dst->rhead[q] + 1) % QDEPTH;
		dst->rcount[q]--;
	}
	dst->ring[q][(dst->rhead[q] + dst->rcount[q]) % QDEPTH] = p;
	dst->rcount[q]++;
	pthread_mutex_unlock(&dst->qlock);
	if (old) {
		double ms = (double)(w->now - old->enq_ns) / 1e6;

		w->avg_queue_ms = w->avg_queue_ms * 0.9 + ms * 0.1;
		count_drop(w, dst, old, DROP_QUEUE_HEAD);
		pkt_free(old);
	}
	worker_wake_flush(w, dst);
	return true;
}

static void set_epollout(struct conn *c, bool on)
{
	struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};

	if (c->epollout == on)
		return;
	c->epollout = on;
	epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void account_written(struct conn *c, struct pkt *p)
{
	struct worker *w = c->w;

	switch (p->kind) {
	case PKT_OTHER:
	case PKT_DISCO:
		STAT_ADD(w->stats->c[CTR_PACKETS_SENT], 1);
		STAT_ADD(w->stats->c[CTR_BYTES_SENT], p->len - 37);
		STAT_ADD(c->st->pkts_out, 1);
		STAT_ADD(c->st->bytes_out, p->len - 37);
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

/* Move queued frames into the in-flight array: control first, then data. */
static void refill_inflight(struct conn *c)
{
	struct worker *w = c->w;
	int n = 0;

	c->if_head = c->if_n = 0;
	c->if_off = 0;
	if (!c->inflight) {
		/* Idle connections hold no in-flight array (RSS per idle client). */
		c->inflight = malloc(INFLIGHT_MAX * sizeof(*c->inflight));
		if (!c->inflight)
			return; /* the tick retries while flush_pending stays set */
	}
	pthread_mutex_lock(&c->qlock);
	while (c->ctl_head && n < INFLIGHT_MAX) {
		struct pkt *p = c->ctl_head;

		c->ctl_head = p->next;
		c->nctl--;
		c->inflight[n++] = p;
	}
	if (!c->ctl_head)
		c->ctl_tail = NULL;
	for (int q = 0; q < 2; q++) {
		while (c->rcount[q] && n < INFLIGHT_MAX) {
			struct pkt *p = c->ring[q][c->rhead[q]];

			c->rhead[q] = (c->rhead[q] + 1) % QDEPTH;
			c->rcount[q]--;
			c->inflight[n++] = p;
		}
	}
	pthread_mutex_unlock(&c->qlock);
	for (int i = 0; i < n; i++) {
		struct pkt *p = c->inflight[i];

		if (p->kind <= PKT_DISCO) {
			double ms = (double)(w->now - p->enq_ns) / 1e6;

			w->avg_queue_ms = w->avg_queue_ms * 0.9 + ms * 0.1;
		}
	}
	c->if_head = 0;
	c->if_n = n;
	c->if_off = 0;
}

/* Returns bytes accepted (>= 0), -EAGAIN, or another -errno. */
static ssize_t conn_send(struct conn *c, const void *buf, size_t len)
{
	int r;

	ERR_clear_error();
	r = SSL_write(c->ssl, buf, (int)len);
	if (r > 0)
		return r;
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_WRITE:
	case SSL_ERROR_WANT_READ:
		return -EAGAIN;
	case SSL_ERROR_SYSCALL:
		return errno ? -errno : -EPIPE;
	default:
		return -EPROTO;
	}
}

/* Write what is in flight. Returns 1 when all done, 0 when blocked, <0 on error. */
static int write_inflight(struct conn *c)
{
	struct worker *w = c->w;

	if (!c->ssl || c->tls_mode >= TLS_MODE_KTLS_TX) {
		struct iovec iov[INFLIGHT_MAX];
		int niov = 0;
		ssize_t r;

		/* Plain TCP and kTLS TX: the kernel takes plaintext, one writev. */
		for (int i = c->if_head; i < c->if_n; i++) {
			iov[niov].iov_base =
				c->inflight[i]->data + (i == c->if_head ? c->if_off : 0);
			iov[niov].iov_len = c->inflight[i]->len - (i == c->if_head ? c->if_off : 0);
			niov++;
		}
		r = writev(c->fd, iov, niov);
		if (r < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		while (r > 0 && c->if_head < c->if_n) {
			struct pkt *p = c->inflight[c->if_head];
			size_t left = p->len - c->if_off;

			if ((size_t)r >= left) {
				r -= left;
				account_written(c, p);
				pkt_free(p);
				c->if_head++;
				c->if_off = 0;
			} else {
				c->if_off += r;
				r = 0;
			}
		}
		return c->if_head == c->if_n ? 1 : 0;
	}

	/* User-space TLS: gather into one buffer so one SSL_write makes few records. */
	if (!c->tlsbuf) {
		size_t n = 0;

		while (c->if_head < c->if_n) {
			struct pkt *p = c->inflight[c->if_head];

			if (n && n + p->len > w->wbuf_cap)
				break;
			if (p->len > w->wbuf_cap) {
				/* Larger than the gather buffer: write it on its own. */
				c->tlsbuf = malloc(p->len);
				if (!c->tlsbuf)
					return -ENOMEM;
				memcpy(c->tlsbuf, p->data, p->len);
				c->tlsbuf_len = p->len;
				account_written(c, p);
				pkt_free(p);
				c->if_head++;
				goto write_tlsbuf;
			}
			memcpy(w->wbuf + n, p->data, p->len);
			n += p->len;
			account_written(c, p);
			pkt_free(p);
			c->if_head++;
		}
		for (size_t off = 0; off < n;) {
			ssize_t r = conn_send(c, w->wbuf + off, n - off);

			if (r == -EAGAIN) {
				/* Keep the rest; OpenSSL accepts a moved buffer on retry. */
				c->tlsbuf = malloc(n - off);
				if (!c->tlsbuf)
					return -ENOMEM;
				memcpy(c->tlsbuf, w->wbuf + off, n - off);
				c->tlsbuf_len = n - off;
				return 0;
			}
			if (r < 0)
				return (int)r;
			off += r;
		}
		return c->if_head == c->if_n ? 1 : 0;
	}
write_tlsbuf:
	while (c->tlsbuf_len) {
		ssize_t r = conn_send(c, c->tlsbuf, c->tlsbuf_len);

		if (r == -EAGAIN)
			return 0;
		if (r < 0)
			return (int)r;
		memmove(c->tlsbuf, c->tlsbuf + r, c->tlsbuf_len - r);
		c->tlsbuf_len -= r;
	}
	free(c->tlsbuf);
	c->tlsbuf = NULL;
	return c->if_head == c->if_n ? 1 : 0;
}

static void conn_flush(struct conn *c)
{
	struct worker *w = c->w;

	if (c->state == CS_CLOSED || c->state == CS_TLS_HANDSHAKE)
		return;
	atomic_store(&c->flush_pending, false);
	for (int round = 0; round < 16; round++) {
		int r;

		if (!c->tlsbuf && c->if_head == c->if_n) {
			refill_inflight(c);
			if (c->if_n == 0) {
				if (!c->inflight)
					atomic_store(&c->flush_pending, true);
				set_epollout(c, false);
				__atomic_store_n(&c->blocked_since, 0, __ATOMIC_RELAXED);
				if (c->state == CS_HTTP_DONE)
					conn_close(c, NULL);
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
			set_epollout(c, true);
			return;
		}
		__atomic_store_n(&c->blocked_since, 0, __ATOMIC_RELAXED);
	}
	/* Still more to write: come back next iteration, others go first. */
	atomic_store(&c->flush_pending, true);
	if (!c->in_local_flush) {
		c->in_local_flush = true;
		c->flush_next = w->flush;
		w->flush = c;
	}
}

static void free_queues(struct conn *c)
{
	struct worker *w = c->w;

	pthread_mutex_lock(&c->qlock);
	c->dead = true;
	for (int q = 0; q < 2; q++) {
		while (c->rcount[q]) {
			struct pkt *p = c->ring[q][c->rhead[q]];

			c->rhead[q] = (c->rhead[q] + 1) % QDEPTH;
			c->rcount[q]--;
			count_drop(w, NULL, p, DROP_GONE_DISCONNECTED);
			pkt_free(p);
		}
	}
	while (c->ctl_head) {
		struct pkt *p = c->ctl_head;

		c->ctl_head = p->next;
		pkt_free(p);
	}
	c->ctl_tail = NULL;
	c->nctl = 0;
	pthread_mutex_unlock(&c->qlock);
	for (int i = c->if_head; i < c->if_n; i++) {
		struct pkt *p = c->inflight[i];

		if (p->kind <= PKT_DISCO)
			count_drop(w, NULL, p, DROP_WRITE_ERROR);
		pkt_free(p);
	}
	c->if_head = c->if_n = 0;
	free(c->inflight);
	c->inflight = NULL;
}

static __thread bool rd_locked; /* this thread holds the table's read lock */

static void batch_unlock(struct server *s)
{
	if (rd_locked) {
		pthread_rwlock_unlock(&s->lock);
		rd_locked = false;
	}
}

static void batch_lock(struct server *s)
{
	if (!rd_locked) {
		pthread_rwlock_rdlock(&s->lock);
		rd_locked = true;
	}
}

/* Tell every former correspondent that c's key is gone (derper §3.10). */
static void send_peer_gone_to_correspondents(struct conn *c)
{
	struct server *s = c->srv;
	uint8_t pg[DERP_KEY_LEN + 1];

	if (!c->sent_to.n)
		return;
	memcpy(pg, c->key, DERP_KEY_LEN);
	pg[DERP_KEY_LEN] = DERP_PEER_GONE_DISCONNECTED;
	pthread_rwlock_rdlock(&s->lock);
	/* Only if the key did not come back in the meantime. */
	if (!server_peer_lookup(s, c->key)) {
		for (uint32_t i = 0; i < c->sent_to.cap; i++) {
			struct peer *p;
			struct conn *d;

			if (sodium_is_zero(c->sent_to.keys[i], 32))
				continue;
			p = server_peer_lookup(s, c->sent_to.keys[i]);
			d = p ? atomic_load(&p->active) : NULL;
			if (d)
				conn_queue_ctl(d,
					       frame_new(DERP_FRAME_PEER_GONE, pg, sizeof(pg), NULL,
							 0, PKT_PEER_GONE_DISC));
		}
	}
	pthread_rwlock_unlock(&s->lock);
}

void conn_close(struct conn *c, const char *reason)
{
	struct worker *w = c->w;
	bool final;

	if (c->state == CS_CLOSED)
		return;
	batch_unlock(c->srv);
	if (c->registered)
		statemap_conn_close(c);
	final = server_unregister(c->srv, c);
	if (final)
		send_peer_gone_to_correspondents(c);
	if (c->key_hex8[0])
		log_info("conn %llu close: key %s from %s (%s): %s", (unsigned long long)c->id,
			 c->key_hex8, c->addr_str, tls_mode_name(c->tls_mode),
			 reason ? reason : "done");
	else if (reason)
		log_info("conn %llu close: %s (%s): %s", (unsigned long long)c->id, c->addr_str,
			 c->ssl ? "tls" : "plain", reason);
	c->state = CS_CLOSED;
	free_queues(c);
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	close(c->fd);
	c->fd = -1;
	free(c->carry);
	c->carry = NULL;
	free(c->tlsbuf);
	c->tlsbuf = NULL;
	free(c->req);
	c->req = NULL;
	keyset_free(&c->sent_to);
	/* Unlink; free after the next drain of the remote flush list. */
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->nconns--;
	c->zombie_next = w->zombies;
	w->zombies = c;
}

static void conn_free(struct conn *c)
{
	pthread_mutex_destroy(&c->qlock);
	free(c);
}

static void store_carry(struct conn *c, const uint8_t *p, size_t n)
{
	free(c->carry);
	c->carry = NULL;
	c->carry_len = 0;
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

static void protocol_error(struct conn *c, const char *why)
{
	STAT_ADD(c->w->stats->c[CTR_PROTOCOL_ERRORS], 1);
	conn_close(c, why);
}

static bool nothere_allow(struct conn *c)
{
	double el = (double)(c->w->now - c->nothere_last) / 1e9;

	c->nothere_tokens += el;
	if (c->nothere_tokens > 3)
		c->nothere_tokens = 3;
	c->nothere_last = c->w->now;
	if (c->nothere_tokens < 1)
		return false;
	c->nothere_tokens -= 1;
	return true;
}

/* The 10 s setup deadline and the writer timeout, keepalives, RTT samples. */
static void conn_tick(struct conn *c)
{
	struct worker *w = c->w;
	int64_t wt = c->can_mesh ? (int64_t)MESH_WRITE_TIMEOUT_NS : c->srv->write_timeout_ns;

	if (c->deadline_ns && w->now > c->deadline_ns) {
		STAT_ADD(w->stats->c[CTR_HS_FAIL_TIMEOUT], 1);
		conn_close(c,
			   c->state == CS_TLS_HANDSHAKE		    ? "TLS handshake timeout"
				   : c->state == CS_WAIT_CLIENTINFO ? "ClientInfo timeout"
								    : "request timeout");
		return;
	}
	if (c->blocked_since && wt > 0 && w->now - c->blocked_since > (uint64_t)wt) {
		STAT_ADD(w->stats->c[CTR_WRITE_TIMEOUTS], 1);
		conn_close(c, "write timeout");
		return;
	}
	if (c->inflight && c->if_head == c->if_n && !c->tlsbuf) {
		free(c->inflight);
		c->inflight = NULL;
	}
	if (c->state != CS_RUN)
		return;
	if (w->now >= c->next_keepalive) {
		conn_queue_ctl(c, frame_new(DERP_FRAME_KEEP_ALIVE, NULL, 0, NULL, 0, PKT_CTL));
		c->next_keepalive = w->now + DERP_KEEPALIVE_SEC * NSEC_PER_SEC +
			randombytes_uniform(5000) * NSEC_PER_MSEC;
	}
	if (w->now >= c->next_rtt) {
		struct tcp_info ti;
		socklen_t tl = sizeof(ti);
		static const unsigned lim[] = {10, 20, 50, 100, 150, 250, 500};
		int b;

		c->next_rtt = w->now + 10 * NSEC_PER_SEC;
		if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0) {
			STAT_ADD(w->stats->rtt[8], 1);
		} else {
			for (b = 0; b < 7 && ti.tcpi_rtt / 1000 > lim[b]; b++)
				;
			STAT_ADD(w->stats->rtt[b], 1);
		}
	}
}

/* ---- DERP frames ---- */

static void start_derp(struct conn *c, const struct http_req *req)
{
	struct worker *w = c->w;
	uint8_t sk[DERP_SERVER_KEY_FRAME_LEN];

	STAT_ADD(w->stats->c[CTR_ACCEPTS], 1);
	c->fast_start = strcmp(req->fast_start, "1") == 0;
	c->not_ideal = req->ideal_node[0] != 0;
	if (!c->fast_start) {
		char resp[256];
		int n = snprintf(resp, sizeof(resp),
				 "HTTP/1.1 101 Switching Protocols\r\n"
				 "Upgrade: DERP\r\n"
				 "Connection: Upgrade\r\n"
				 "Derp-Version: %d\r\n"
				 "Derp-Public-Key: %s\r\n\r\n",
				 DERP_PROTOCOL_VERSION, c->srv->pub_hex);
		struct pkt *p = pkt_new(n, PKT_RAW);

		if (p) {
			memcpy(p->data, resp, n);
			conn_queue_ctl(c, p);
		}
	}
	derp_server_key_frame(c->srv->pub, sk);
	conn_queue_ctl(c, frame_new(sk[0], sk + 5, sizeof(sk) - 5, NULL, 0, PKT_CTL));
	c->state = CS_WAIT_CLIENTINFO;
	c->deadline_ns = w->now + SETUP_TIMEOUT_NS;
}

static void handle_client_info(struct conn *c, const uint8_t *payload, uint32_t len)
{
	struct server *s = c->srv;
	struct worker *w = c->w;
	struct client_info ci;
	uint8_t si[DERP_SERVER_INFO_FRAME_LEN];
	const char *why = "";
	struct pkt *p;
	int r;

	if (derp_open_client_info(s->priv, payload, len, &ci, &why) < 0) {
		STAT_ADD(w->stats->c[CTR_HANDSHAKE_FAILURES], 1);
		STAT_ADD(w->stats->c[CTR_HS_FAIL_CLIENT_INFO], 1);
		conn_close(c, why);
		return;
	}
	memcpy(c->key, ci.key, DERP_KEY_LEN);
	key_short(c->key, c->key_hex8);
	c->is_prober = ci.is_prober;
	if (ci.has_mesh_key && s->have_mesh_key &&
	    sodium_memcmp(ci.mesh_key, s->mesh_key, sizeof(s->mesh_key)) == 0)
		c->can_mesh = true;
	sodium_memzero(ci.mesh_key, sizeof(ci.mesh_key));
	r = derp_seal_server_info_afternm(ci.shared, si);
	sodium_memzero(ci.shared, sizeof(ci.shared));
	if (r < 0) {
		STAT_ADD(w->stats->c[CTR_HANDSHAKE_FAILURES], 1);
		STAT_ADD(w->stats->c[CTR_HS_FAIL_INTERNAL], 1);
		conn_close(c, "cannot seal ServerInfo");
		return;
	}
	/* ServerInfo is queued before the key becomes visible to senders. */
	p = pkt_new(sizeof(si), PKT_CTL);
	if (!p) {
		conn_close(c, "out of memory");
		return;
	}
	memcpy(p->data, si, sizeof(si));
	conn_queue_ctl(c, p);
	c->state = CS_RUN;
	c->deadline_ns = 0;
	c->nothere_tokens = 3;
	c->nothere_last = w->now;
	c->next_keepalive = w->now + DERP_KEEPALIVE_SEC * NSEC_PER_SEC +
		randombytes_uniform(5000) * NSEC_PER_MSEC;
	c->next_rtt = w->now;
	server_register(s, c);
	if (c->state == CS_RUN)
		statemap_conn_open(c);
	if (c->state == CS_RUN)
		log_info("conn %llu open: key %s from %s (%s%s%s%s)", (unsigned long long)c->id,
			 c->key_hex8, c->addr_str, tls_mode_name(c->tls_mode),
			 c->fast_start ? ", fast start" : "", c->can_mesh ? ", mesh peer" : "",
			 c->is_prober ? ", prober" : "");
}

/* Validate a frame header before its payload is read. NULL if acceptable. */
static const char *check_header(struct conn *c, uint8_t type, uint32_t len)
{
	if (c->state == CS_WAIT_CLIENTINFO) {
		if (type != DERP_FRAME_CLIENT_INFO)
			return "first frame is not ClientInfo";
		if (len < DERP_MIN_CLIENTINFO_LEN)
			return "ClientInfo too short";
		if (len > DERP_MAX_CLIENTINFO_LEN)
			return "ClientInfo too long";
		return NULL;
	}
	switch (type) {
	case DERP_FRAME_SEND_PACKET:
		if (len < DERP_KEY_LEN)
			return "SendPacket shorter than a key";
		if (len > DERP_MAX_SENDPACKET_LEN)
			return "SendPacket too long";
		break;
	case DERP_FRAME_FORWARD_PACKET:
		if (!c->can_mesh)
			return "ForwardPacket from a non-mesh client: insufficient permissions";
		if (len < 2 * DERP_KEY_LEN)
			return "ForwardPacket too short";
		if (len > DERP_MAX_FWDPACKET_LEN)
			return "ForwardPacket too long";
		break;
	case DERP_FRAME_NOTE_PREFERRED:
		if (len != 1)
			return "NotePreferred of the wrong size";
		break;
	case DERP_FRAME_PING:
		if (len < DERP_PING_LEN || len > DERP_MAX_PING_LEN)
			return "Ping of the wrong size";
		break;
	case DERP_FRAME_WATCH_CONNS:
		if (!c->can_mesh)
			return "WatchConns from a non-mesh client: insufficient permissions";
		if (len != 0)
			return "WatchConns with a payload";
		break;
	case DERP_FRAME_CLOSE_PEER:
		if (!c->can_mesh)
			return "ClosePeer from a non-mesh client: insufficient permissions";
		if (len != DERP_KEY_LEN)
			return "ClosePeer of the wrong size";
		break;
	default:
		break;
	}
	return NULL;
}

/* One read batch: the last destination looked up, valid while the table's
 * read lock is held. */
struct batch {
	uint8_t last_key_buf[DERP_KEY_LEN];
	struct conn *last_dst;
	bool last_valid;
};

static struct conn *lookup_dst(struct conn *c, struct batch *b, const uint8_t *key,
			       unsigned *nconns)
{
	struct peer *p;

	if (b->last_valid && memcmp(b->last_key_buf, key, DERP_KEY_LEN) == 0) {
		*nconns = 1;
		return b->last_dst;
	}
	batch_lock(c->srv);
	p = server_peer_lookup(c->srv, key);
	*nconns = p ? p->nconns : 0;
	b->last_dst = p ? atomic_load(&p->active) : NULL;
	memcpy(b->last_key_buf, key, DERP_KEY_LEN);
	b->last_valid = b->last_dst != NULL;
	/* Remember correspondents for PeerGone; most batches repeat the last one. */
	if (b->last_dst && memcmp(c->last_sent_to, key, DERP_KEY_LEN) != 0) {
		keyset_add(&c->sent_to, key);
		memcpy(c->last_sent_to, key, DERP_KEY_LEN);
	}
	return b->last_dst;
}

/*
 * A full queue at a destination that is writing normally only means this
 * batch outran its owner by more than QDEPTH packets: flush it now if we own
 * it, else pause this sender until the owner has drained it. A destination
 * whose writes are blocked is a slow reader and gets derper's drop-oldest.
 * Returns true to pause.
 */
static bool need_pause(struct conn *c, struct batch *b, struct conn *dst, int q)
{
	if (__atomic_load_n(&dst->rcount[q], __ATOMIC_RELAXED) < QDEPTH ||
	    __atomic_load_n(&dst->blocked_since, __ATOMIC_RELAXED))
		return false;
	if (dst->w == c->w) {
		conn_flush(dst);
		b->last_valid = false;
		return false;
	}
	return true;
}

/* Returns false when the sender must pause (nothing was consumed). */
static bool deliver(struct conn *c, struct batch *b, const uint8_t *dstkey, const uint8_t *src,
		    const uint8_t *payload, uint32_t plen, uint8_t *frame_inplace, bool fwd)
{
	struct worker *w = c->w;
	bool disco = derp_is_disco(payload, plen);
	uint8_t kind = disco ? PKT_DISCO : PKT_OTHER;
	unsigned nconns = 0;
	struct conn *dst = lookup_dst(c, b, dstkey, &nconns);
	struct pkt *p;

	if (dst && need_pause(c, b, dst, disco ? 1 : 0))
		return false;
	if (frame_inplace) {
		STAT_ADD(w->stats->c[CTR_PACKETS_RECEIVED], 1);
		STAT_ADD(w->stats->c[CTR_BYTES_RECEIVED], plen);
		STAT_ADD(c->st->pkts_in, 1);
		STAT_ADD(c->st->bytes_in, plen);
		STAT_ADD(w->stats->c[disco ? CTR_PACKETS_RECEIVED_DISCO
					   : CTR_PACKETS_RECEIVED_OTHER],
			 1);
	} else {
		STAT_ADD(w->stats->c[CTR_PACKETS_FORWARDED_IN], 1);
	}
	if (!dst) {
		enum drop_reason r = nconns > 1 ? DROP_DUP_CLIENT
			: fwd			? DROP_UNKNOWN_DEST_ON_FWD
						: DROP_UNKNOWN_DEST;
		int k = disco ? KIND_DISCO : KIND_OTHER;

		STAT_ADD(w->stats->drop_pkts[r][k], 1);
		STAT_ADD(w->stats->drop_bytes[r][k], plen);
		if (r != DROP_DUP_CLIENT && disco && nothere_allow(c)) {
			uint8_t pg[DERP_KEY_LEN + 1];

			memcpy(pg, dstkey, DERP_KEY_LEN);
			pg[DERP_KEY_LEN] = DERP_PEER_GONE_NOT_HERE;
			conn_queue_ctl(c,
				       frame_new(DERP_FRAME_PEER_GONE, pg, sizeof(pg), NULL, 0,
						 PKT_PEER_GONE_NOT_HERE));
		}
		return true;
	}
	if (frame_inplace) {
		/* SendPacket -> RecvPacket: same length, new type and key. */
		frame_inplace[0] = DERP_FRAME_RECV_PACKET;
		memcpy(frame_inplace + 5, src, DERP_KEY_LEN);
		p = pkt_new(5 + DERP_KEY_LEN + plen, kind);
		if (p)
			memcpy(p->data, frame_inplace, 5 + DERP_KEY_LEN + plen);
	} else {
		p = frame_new(DERP_FRAME_RECV_PACKET, src, DERP_KEY_LEN, payload, plen, kind);
	}
	if (!p) {
		STAT_ADD(w->stats->drop_pkts[DROP_QUEUE_TAIL][drop_kind(kind)], 1);
		return true;
	}
	conn_enqueue_packet(w, dst, p);
	return true;
}

/* Dispatch one complete frame. The payload may be rewritten in place.
 * Returns false if the frame was not consumed (the sender pauses). */
static bool handle_frame(struct conn *c, struct batch *b, uint8_t *f, uint32_t len)
{
	struct worker *w = c->w;
	struct server *s = c->srv;
	uint8_t *payload = f + 5;

	if (c->state == CS_WAIT_CLIENTINFO) {
		handle_client_info(c, payload, len);
		return true;
	}
	if (unlikely(c->is_dup)) {
		batch_unlock(s);
		b->last_valid = false;
		server_note_activity(s, c);
	}
	switch (f[0]) {
	case DERP_FRAME_SEND_PACKET: {
		uint8_t dstkey[DERP_KEY_LEN];

		memcpy(dstkey, payload, DERP_KEY_LEN);
		return deliver(c, b, dstkey, c->key, payload + DERP_KEY_LEN, len - DERP_KEY_LEN, f,
			       false);
	}
	case DERP_FRAME_FORWARD_PACKET:
		return deliver(c, b, payload + 32, payload, payload + 64, len - 64, NULL, true);
	case DERP_FRAME_PING:
		STAT_ADD(w->stats->c[CTR_GOT_PING], 1);
		if (!c->pong_queued) {
			c->pong_queued = true;
			conn_queue_ctl(c,
				       frame_new(DERP_FRAME_PONG, payload, DERP_PING_LEN, NULL, 0,
						 PKT_PONG));
		}
		break;
	case DERP_FRAME_NOTE_PREFERRED:
		batch_unlock(s);
		b->last_valid = false;
		server_set_preferred(s, c, payload[0] != 0);
		statemap_conn_update(c);
		break;
	case DERP_FRAME_WATCH_CONNS:
		batch_unlock(s);
		b->last_valid = false;
		server_add_watcher(s, c);
		break;
	case DERP_FRAME_CLOSE_PEER: {
		struct peer *p;
		char kh[16];

		batch_lock(s);
		p = server_peer_lookup(s, payload);
		if (!p) {
			log_info("conn %llu: ClosePeer for unknown key %s",
				 (unsigned long long)c->id, key_short(payload, kh));
			break;
		}
		for (unsigned i = 0; i < p->nconns; i++) {
			atomic_store(&p->conns[i]->close_requested, true);
			worker_wake_flush(w, p->conns[i]);
		}
		break;
	}
	default:
		/* Unknown types (and a client's Pong) are skipped, as derper does;
		 * unlike derper, derp_unknown_frames counts them. */
		STAT_ADD(w->stats->c[CTR_UNKNOWN_FRAMES], 1);
		break;
	}
	return true;
}

/* Parse and handle every complete frame in buf; keep the incomplete tail. */
static void process_frames(struct conn *c, uint8_t *buf, size_t len)
{
	struct batch b = {0};
	size_t off = 0;

	if (c->skip) {
		size_t n = c->skip < len ? c->skip : len;

		c->skip -= n;
		off = n;
	}
	while (c->state == CS_RUN || c->state == CS_WAIT_CLIENTINFO) {
		uint8_t type;
		uint32_t flen;
		const char *bad;

		if (len - off < DERP_FRAME_HDR_LEN)
			break;
		type = buf[off];
		flen = get_be32(buf + off + 1);
		bad = check_header(c, type, flen);
		if (bad) {
			if (c->state == CS_WAIT_CLIENTINFO) {
				STAT_ADD(c->w->stats->c[CTR_HANDSHAKE_FAILURES], 1);
				STAT_ADD(c->w->stats->c[CTR_HS_FAIL_PROTOCOL], 1);
			}
			protocol_error(c, bad);
			return;
		}
		if ((uint64_t)flen + DERP_FRAME_HDR_LEN > len - off) {
			/* Incomplete. An unknown type can be skipped as it streams in. */
			if (c->state == CS_RUN && type != DERP_FRAME_SEND_PACKET &&
			    type != DERP_FRAME_FORWARD_PACKET && type != DERP_FRAME_PING &&
			    type != DERP_FRAME_NOTE_PREFERRED && type != DERP_FRAME_CLOSE_PEER &&
			    type != DERP_FRAME_WATCH_CONNS) {
				c->skip = (uint64_t)flen + DERP_FRAME_HDR_LEN - (len - off);
				off = len;
				STAT_ADD(c->w->stats->c[CTR_UNKNOWN_FRAMES], 1);
			}
			break;
		}
		if (!handle_frame(c, &b, buf + off, flen)) {
			/* Come back next iteration, after the destination's owner ran. */
			c->paused = true;
			if (!c->in_reread) {
				c->in_reread = true;
				c->reread_next = c->w->reread_later;
				c->w->reread_later = c;
			}
			break;
		}
		off += DERP_FRAME_HDR_LEN + flen;
	}
	batch_unlock(c->srv);
	if (c->state == CS_RUN || c->state == CS_WAIT_CLIENTINFO)
		store_carry(c, buf + off, len - off);
}

/* ---- HTTP ---- */

/* Send one response, stop reading, close once it is written. */
static void http_done(struct conn *c, struct pkt *resp)
{
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};

	free(c->carry);
	c->carry = NULL;
	c->carry_len = 0;
	c->state = CS_HTTP_DONE;
	c->epollout = true;
	epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	if (resp)
		conn_queue_ctl(c, resp);
	else
		worker_wake_flush(c->w, c);
}

static void handle_http(struct conn *c, uint8_t *buf, size_t len)
{
	struct worker *w = c->w;
	struct http_req *req;
	struct pkt *resp = NULL;
	long hl = http_head_len(buf, len);

	if (hl == 0) {
		if (len >= HTTP_MAX_HEADER)
			goto bad_request;
		store_carry(c, buf, len);
		return;
	}
	if (!c->req) {
		c->req = calloc(1, sizeof(*c->req));
		if (!c->req) {
			conn_close(c, "out of memory");
			return;
		}
	}
	req = c->req;
	if (http_parse_request(buf, hl, req) < 0)
		goto bad_request;
	STAT_ADD(w->stats->c[CTR_HTTP_REQUESTS], 1);
	if (web_route(c, req, &resp) == WEB_UPGRADE) {
		start_derp(c, req);
		free(c->req);
		c->req = NULL;
		process_frames(c, buf + hl, len - hl);
		return;
	}
	free(c->req);
	c->req = NULL;
	http_done(c, resp);
	return;
bad_request:
	STAT_ADD(w->stats->c[CTR_HTTP_BAD_REQUESTS], 1);
	log_info("conn %llu: bad HTTP request from %s (%zu bytes), closing",
		 (unsigned long long)c->id, c->addr_str, len);
	http_done(c,
		  web_simple_response(400, "Bad Request", "text/plain; charset=utf-8",
				      "400 Bad Request\n"));
}

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TLS_GET_RECORD_TYPE
#define TLS_GET_RECORD_TYPE 2
#endif

/*
 * kTLS RX read errors. EIO: the next record is not application data, and
 * its type comes with recvmsg as a control message. EBADMSG: a record failed
 * authentication. EMSGSIZE: not a valid record at all.
 */
static void ktls_read_error(struct conn *c, int err)
{
	char why[96];

	if (err == EIO) {
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
		int type = -1;

		if (recvmsg(c->fd, &msg, MSG_DONTWAIT) >= 0) {
			cm = CMSG_FIRSTHDR(&msg);
			if (cm && cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
				type = *(unsigned char *)CMSG_DATA(cm);
		}
		if (type == 21)
			snprintf(why, sizeof(why), "TLS alert on a kTLS socket");
		else if (type == 22)
			snprintf(why, sizeof(why),
				 "TLS handshake message (renegotiation) on a kTLS socket");
		else
			snprintf(why, sizeof(why), "TLS control record (type %d) on a kTLS socket",
				 type);
	} else if (err == EBADMSG) {
		snprintf(why, sizeof(why), "TLS record failed authentication (bad tag)");
	} else {
		snprintf(why, sizeof(why), "invalid TLS record (not a record header)");
	}
	conn_close(c, why);
}

/* ---- reading ---- */

static void tls_handshake(struct conn *c)
{
	int r;

	ERR_clear_error();
	r = SSL_accept(c->ssl);
	if (r == 1) {
		c->tls_mode = tls_conn_mode(c->ssl);
		c->state = CS_HTTP;
		set_epollout(c, false);
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		set_epollout(c, false);
		return;
	case SSL_ERROR_WANT_WRITE:
		set_epollout(c, true);
		return;
	default: {
		char why[160], e[120];
		unsigned long code = ERR_peek_last_error();

		if (code)
			ERR_error_string_n(code, e, sizeof(e));
		else
			snprintf(e, sizeof(e), "%s", errno ? strerror(errno) : "connection closed");
		snprintf(why, sizeof(why), "TLS handshake failed: %s", e);
		STAT_ADD(c->w->stats->c[CTR_HS_FAIL_TLS], 1);
		ERR_clear_error();
		conn_close(c, why);
	}
	}
}

static void conn_read(struct conn *c)
{
	struct worker *w = c->w;
	uint8_t *buf = w->rbuf;
	size_t have = c->carry_len, room;
	ssize_t r;

	if (c->state == CS_TLS_HANDSHAKE) {
		tls_handshake(c);
		if (c->state != CS_HTTP)
			return;
	}
	if (c->state == CS_HTTP_DONE || c->state == CS_CLOSED)
		return;
	if (have)
		memcpy(buf, c->carry, have);
	if (c->paused) {
		/* Resume a paused sender from what it already sent; no new reads
		 * until that is consumed, so its carry stays bounded. */
		c->paused = false;
		free(c->carry);
		c->carry = NULL;
		c->carry_len = 0;
		process_frames(c, buf, have);
		return;
	}
	room = w->rbuf_cap - have;
	if (room > READ_BUDGET)
		room = READ_BUDGET;
	if (c->state == CS_HTTP && have + room > HTTP_MAX_HEADER)
		room = HTTP_MAX_HEADER + 1 > have ? HTTP_MAX_HEADER + 1 - have : 1;
	if (c->ssl && c->tls_mode != TLS_MODE_KTLS_TXRX) {
		size_t got = 0;

		while (got < room) {
			int n;

			ERR_clear_error();
			n = SSL_read(c->ssl, buf + have + got, (int)(room - got));
			if (n > 0) {
				got += n;
				continue;
			}
			switch (SSL_get_error(c->ssl, n)) {
			case SSL_ERROR_WANT_READ:
			case SSL_ERROR_WANT_WRITE:
				break;
			case SSL_ERROR_ZERO_RETURN:
				if (!got) {
					conn_close(c, "client closed");
					return;
				}
				break;
			default: {
				char why[160], e[120];
				unsigned long code = ERR_peek_last_error();

				if (got)
					break;
				if (code)
					ERR_error_string_n(code, e, sizeof(e));
				else
					snprintf(e, sizeof(e), "%s",
						 errno ? strerror(errno) : "connection closed");
				snprintf(why, sizeof(why), "TLS read: %s", e);
				conn_close(c, why);
				return;
			}
			}
			break;
		}
		/*
		 * A TLS 1.3 KeyUpdate asking us to update too: OpenSSL 3.0 cannot
		 * hand the kernel a new send key, so a kTLS sender would go on with
		 * the old one and the peer would reject every record. Close cleanly.
		 */
		if (c->tls_mode == TLS_MODE_KTLS_TX &&
		    SSL_get_key_update_type(c->ssl) != SSL_KEY_UPDATE_NONE) {
			conn_close(c, "TLS 1.3 KeyUpdate requested on a kTLS send socket");
			return;
		}
		if (!got)
			return;
		r = got;
		/* Decrypted bytes may remain inside OpenSSL: read again next round. */
		if ((SSL_pending(c->ssl) > 0 || got == room) && !c->in_reread) {
			c->in_reread = true;
			c->reread_next = w->reread;
			w->reread = c;
		}
	} else {
		/* Plain TCP, or kTLS RX: the kernel hands over decrypted bytes. */
		r = read(c->fd, buf + have, room);
		if (r < 0 && c->tls_mode == TLS_MODE_KTLS_TXRX &&
		    (errno == EIO || errno == EBADMSG || errno == EMSGSIZE)) {
			ktls_read_error(c, errno);
			return;
		}
		if (r == 0) {
			if (c->state == CS_WAIT_CLIENTINFO) {
				STAT_ADD(w->stats->c[CTR_HANDSHAKE_FAILURES], 1);
				STAT_ADD(w->stats->c[CTR_HS_FAIL_CLOSED], 1);
			}
			conn_close(c,
				   c->state == CS_WAIT_CLIENTINFO
					   ? "client closed before its ClientInfo was complete"
					   : c->state == CS_HTTP
					   ? "client closed before a complete request"
					   : "client closed");
			return;
		}
		if (r < 0) {
			char why[96];

			if (errno == EAGAIN || errno == EINTR)
				return;
			snprintf(why, sizeof(why), "read error: %s", strerror(errno));
			conn_close(c, why);
			return;
		}
	}
	free(c->carry);
	c->carry = NULL;
	c->carry_len = 0;
	if (c->state == CS_HTTP)
		handle_http(c, buf, have + r);
	else
		process_frames(c, buf, have + r);
}

/* ---- accepting ---- */

static void set_sockopts(struct server *s, int fd)
{
	const struct config *cfg = s->cfg;
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (cfg->tcp_keepalive_time_ns > 0) {
		int idle = (int)(cfg->tcp_keepalive_time_ns / (int64_t)NSEC_PER_SEC);
		int intvl = 15, cnt = 9;

		if (idle < 1)
			idle = 1;
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	}
}

static void accept_conns(struct worker *w, struct listener *l)
{
	struct server *s = w->srv;

	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct epoll_event ev;
		struct conn *c;
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->w = w;
		c->srv = s;
		c->fd = fd;
		c->id = atomic_fetch_add(&s->next_conn_id, 1) + 1;
		c->addr = ss;
		c->port80 = l->port80;
		c->st = &c->st_local;
		sockaddr_str((struct sockaddr *)&ss, c->addr_str, sizeof(c->addr_str));
		c->created_ns = w->now;
		c->deadline_ns = w->now + SETUP_TIMEOUT_NS;
		pthread_mutex_init(&c->qlock, NULL);
		set_sockopts(s, fd);
		if (l->tls) {
			c->ssl = SSL_new(s->ssl_ctx);
			if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
				SSL_free(c->ssl);
				close(fd);
				pthread_mutex_destroy(&c->qlock);
				free(c);
				continue;
			}
			c->state = CS_TLS_HANDSHAKE;
		} else {
			c->state = CS_HTTP;
		}
		c->next = w->conns;
		if (w->conns)
			w->conns->prev = c;
		w->conns = c;
		w->nconns++;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			conn_close(c, "epoll_ctl failed");
			continue;
		}
		log_debug("conn %llu: accepted %s from %s", (unsigned long long)c->id,
			  l->tls ? "TLS" : "plain", c->addr_str);
	}
}

/* ---- the loop ---- */

static void drain_remote(struct worker *w)
{
	struct conn **list;
	unsigned n;

	pthread_mutex_lock(&w->remote_lock);
	list = w->remote;
	n = w->nremote;
	w->remote = NULL;
	w->nremote = 0;
	w->remote_cap = 0;
	pthread_mutex_unlock(&w->remote_lock);
	for (unsigned i = 0; i < n; i++) {
		struct conn *c = list[i];

		if (c->state != CS_CLOSED && !c->in_local_flush) {
			c->in_local_flush = true;
			c->flush_next = w->flush;
			w->flush = c;
		}
	}
	free(list);
}

static void run_flushes(struct worker *w)
{
	while (w->flush) {
		struct conn *c = w->flush, *list = w->flush;

		w->flush = NULL;
		while (list) {
			c = list;
			list = c->flush_next;
			c->in_local_flush = false;
			if (c->state == CS_CLOSED)
				continue;
			if (atomic_load_explicit(&c->close_requested, memory_order_relaxed)) {
				conn_close(c, "closed by mesh peer (ClosePeer)");
				continue;
			}
			conn_flush(c);
		}
		/* conn_flush may requeue a connection with more to write: stop here
		 * and let the next iteration (and other sockets) run first. */
		break;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *s = w->srv;
	struct epoll_event evs[256];
	sigset_t set;

	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	cur_worker = w;
	w->now = now_ns();
	w->next_tick = w->now + TICK_NS;
	while (!atomic_load(&s->stopping)) {
		int timeout = (w->flush || w->reread || w->reread_later) ? 0 : 250;
		int n = epoll_wait(w->epfd, evs, 256, timeout);
		struct conn *zombies;

		w->now = now_ns();
		for (int i = 0; i < n; i++) {
			uintptr_t tag = (uintptr_t)evs[i].data.ptr;

			if (tag >= EV_LISTENER_BASE && tag < EV_LISTENER_BASE + 4) {
				accept_conns(w, &s->listeners[tag - EV_LISTENER_BASE]);
			} else if (tag == EV_EVENTFD) {
				uint64_t v;
				ssize_t r = read(w->evfd, &v, sizeof(v));

				(void)r;
				atomic_store(&w->woken, false);
				drain_remote(w);
			} else {
				struct conn *c = evs[i].data.ptr;

				if (c->state == CS_CLOSED)
					continue;
				if (evs[i].events & EPOLLOUT) {
					if (c->state == CS_TLS_HANDSHAKE)
						conn_read(c);
					else
						conn_flush(c);
				}
				if (c->state != CS_CLOSED &&
				    (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
					conn_read(c);
			}
		}
		/* Connections with decrypted data still inside OpenSSL. */
		if (w->reread || w->reread_later) {
			struct conn *list = w->reread;

			w->reread = w->reread_later;
			w->reread_later = NULL;
			while (list) {
				struct conn *c = list;

				list = c->reread_next;
				c->in_reread = false;
				if (c->state != CS_CLOSED)
					conn_read(c);
			}
		}
		/* Zombies present now are safe to free after this drain (see
		 * Documentation/architecture.md, "Ownership"). */
		zombies = w->zombies;
		w->zombies = NULL;
		drain_remote(w);
		run_flushes(w);
		while (zombies) {
			struct conn *z = zombies;

			zombies = z->zombie_next;
			conn_free(z);
		}
		if (w->now >= w->next_tick) {
			struct conn *c = w->conns, *next;

			w->next_tick = w->now + TICK_NS;
			for (; c; c = next) {
				next = c->next;
				conn_tick(c);
				/* A flush request that could not be recorded is retried here. */
				if (c->state != CS_CLOSED &&
				    atomic_load_explicit(&c->flush_pending, memory_order_relaxed) &&
				    !c->in_local_flush) {
					c->in_local_flush = true;
					c->flush_next = w->flush;
					w->flush = c;
				}
			}
		}
	}
	/* Shutdown: close every connection this worker owns. */
	while (w->conns)
		conn_close(w->conns, "server shutting down");
	drain_remote(w);
	w->flush = NULL;
	while (w->zombies) {
		struct conn *z = w->zombies;

		w->zombies = z->zombie_next;
		conn_free(z);
	}
	return NULL;
}

/* Allocate the workers (no threads, no listeners yet). */
int workers_init(struct server *s)
{
	s->workers = calloc(s->nworkers, sizeof(*s->workers));
	if (!s->workers)
		return -ENOMEM;
	for (int i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];
		struct epoll_event ev;

		w->srv = s;
		w->idx = i;
		w->stats = &w->stats_local;
		w->rbuf_cap = RBUF_CAP;
		w->rbuf = malloc(w->rbuf_cap);
		w->wbuf_cap = WBUF_CAP;
		w->wbuf = malloc(w->wbuf_cap);
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		pthread_mutex_init(&w->remote_lock, NULL);
		if (!w->rbuf || !w->wbuf || w->epfd < 0 || w->evfd < 0)
			return -ENOMEM;
		ev.events = EPOLLIN;
		ev.data.ptr = (void *)(uintptr_t)EV_EVENTFD;
		epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev);
	}
	return 0;
}

/* Watch the listeners from every worker and start the threads. */
int workers_start(struct server *s)
{
	for (int i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];

		for (int l = 0; l < s->nlisteners; l++) {
			struct epoll_event ev = {
				.events = EPOLLIN | EPOLLEXCLUSIVE,
				.data.ptr = (void *)(uintptr_t)(EV_LISTENER_BASE + l),
			};

			if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->listeners[l].fd, &ev) < 0)
				return -errno;
		}
	}
	for (int i = 0; i < s->nworkers; i++) {
		int r = pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);

		if (r)
			return -r;
	}
	return 0;
}

void workers_stop(struct server *s)
{
	atomic_store(&s->stopping, true);
	for (int i = 0; i < s->nworkers; i++) {
		uint64_t one = 1;
		ssize_t r = write(s->workers[i].evfd, &one, sizeof(one));

		(void)r;
	}
	for (int i = 0; i < s->nworkers; i++)
		pthread_join(s->workers[i].thread, NULL);
}
