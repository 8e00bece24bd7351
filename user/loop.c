// SPDX-License-Identifier: MIT
/*
 * loop.c - the workers' event loops (server.h: workers_*). One epoll loop
 * per worker thread. A worker owns the connections it accepted: it alone
 * reads, writes and frees them. Other workers only enqueue into a
 * connection's bounded queues and ask the owner to flush.
 *
 * One iteration: wait; dispatch events (accept, remote flush requests, a
 * connection readable or writable); read again the connections with bytes
 * left inside OpenSSL or paused behind a busy destination; drain the remote
 * flush list; run the local flushes; free the zombies; every 250 ms, the
 * tick (timeouts, keepalives, RTT samples).
 */
#include <errno.h>
#include <malloc.h>
#if defined(__SANITIZE_ADDRESS__)
void __sanitizer_purge_allocator(void); /* the ASan runtime's */
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "config.h"
#include "conn.h"
#include "conn_io.h"
#include "derp_frame.h"
#include "handshake.h"
#include "log.h"
#include "names.h"
#include "peers.h"
#include "pkt.h"
#include "queue.h"
#include "relay.h"
#include "server.h"
#include "tls.h"
#include "util.h"

#define RBUF_CAP (1024 * 1024)
#define READ_BUDGET (256 * 1024)
#define WBUF_CAP (64 * 1024)
#define TICK_NS (250 * NSEC_PER_MSEC)
#define EV_LISTENER_BASE 1
#define EV_EVENTFD 16
#define ACCEPT_BATCH 64
#define EPOLL_BATCH 256
#define ACCEPT_PAUSE_NS (100 * NSEC_PER_MSEC)
#define ACCEPT_LOG_NS (5 * NSEC_PER_SEC)
#define TRIM_QUIET_NS (1 * NSEC_PER_SEC)

/* ---- reading ---- */

/* Bytes for the state the connection is in. */
static void conn_dispatch(struct conn *c, uint8_t *buf, size_t len)
{
	if (c->state == CS_RUN)
		relay_input(c, buf, len);
	else
		handshake_input(c, buf, len);
}

/* How much one read may take: the budget, and no more than a request head. */
static size_t read_room(const struct conn *c, size_t have)
{
	size_t room = c->w->rbuf_cap - have;

	if (room > READ_BUDGET)
		room = READ_BUDGET;
	if (c->read_cap && room > c->read_cap)
		room = c->read_cap;
	if (c->state == CS_HTTP && have + room > HTTP_MAX_HEADER)
		room = HTTP_MAX_HEADER + 1 > have ? HTTP_MAX_HEADER + 1 - have : 1;
	return room;
}

/* c is readable (or has bytes left over): read once into the worker's buffer. */
static void conn_input(struct conn *c)
{
	uint8_t *buf = c->w->rbuf;
	size_t have = c->carry_len;
	ssize_t r;

	if (c->state == CS_TLS_HANDSHAKE) {
		handshake_tls(c);
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
		conn_drop_carry(c);
		relay_input(c, buf, have);
		return;
	}
	r = conn_read_some(c, buf + have, read_room(c, have));
	if (r <= 0)
		return;
	conn_drop_carry(c);
	conn_dispatch(c, buf, have + r);
}

/* ---- the tick ---- */

static void sample_rtt(struct conn *c)
{
	struct worker *w = c->w;
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);

	c->next_rtt = w->now + 10 * NSEC_PER_SEC;
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0)
		STAT_ADD(w->stats->rtt[KDERP_RTT_BUCKET_ERROR], 1);
	else
		STAT_ADD(w->stats->rtt[rtt_bucket(ti.tcpi_rtt)], 1);
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
		conn_queue_ctl(w, c, frame_new(DERP_FRAME_KEEP_ALIVE, NULL, 0, NULL, 0, PKT_CTL));
		c->next_keepalive = w->now + DERP_KEEPALIVE_SEC * NSEC_PER_SEC +
			randombytes_uniform(5000) * NSEC_PER_MSEC;
	}
	if (w->now >= c->next_rtt)
		sample_rtt(c);
	if (c->state_dirty) {
		c->state_dirty = false;
		peers_state_changed(c);
	}
}

/*
 * After a burst, freed packets and buffers stay in malloc's arenas: once
 * this worker has seen no packet and no new connection for TRIM_QUIET_NS,
 * hand the free pages back to the system (malloc_trim walks every arena),
 * once per burst and never while relaying.
 */
static void loop_trim(struct worker *w)
{
	const struct worker_stats *st = w->stats;
	uint64_t work = STAT_READ(st->c[CTR_PACKETS_SENT]) +
		STAT_READ(st->c[CTR_PACKETS_RECEIVED]) + STAT_READ(st->c[CTR_HTTP_REQUESTS]) +
		w->nconns;

	if (work != w->trim_work) {
		w->trim_work = work;
		w->trim_quiet_since = w->now;
		w->trim_pending = true;
	} else if (w->trim_pending && w->now - w->trim_quiet_since >= TRIM_QUIET_NS) {
#if defined(__SANITIZE_ADDRESS__)
		/* ASan's allocator is not glibc's: glibc's trim would corrupt its
		 * per-thread arena accounting (an abort at thread exit). */
		__sanitizer_purge_allocator();
#else
		malloc_trim(0);
#endif
		w->trim_pending = false;
	}
}

static void loop_tick(struct worker *w)
{
	struct conn *c, *next;

	if (w->now < w->next_tick)
		return;
	w->next_tick = w->now + TICK_NS;
	loop_trim(w);
	for (c = w->conns; c; c = next) {
		next = c->next;
		conn_tick(c);
		/* A flush request that could not be recorded is retried here. */
		if (c->state != CS_CLOSED &&
		    atomic_load_explicit(&c->flush_pending, memory_order_relaxed))
			conn_flush_push(c);
	}
}

/* ---- accepting ---- */

static void set_sockopts(const struct server *s, int fd)
{
	const struct config *cfg = s->cfg;
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (cfg && cfg->tcp_keepalive_time_ns > 0) {
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

/* A connection for an accepted socket, not yet on the worker's list. */
static struct conn *conn_new(struct worker *w, const struct listener *l, int fd,
			     const struct sockaddr_storage *ss)
{
	struct server *s = w->srv;
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	if (l->tls) {
		c->ssl = tls_conn_new(s->ssl_ctx, fd);
		if (!c->ssl) {
			free(c);
			return NULL;
		}
	}
	c->state = l->tls ? CS_TLS_HANDSHAKE : CS_HTTP;
	c->w = w;
	c->srv = s;
	c->fd = fd;
	c->id = atomic_fetch_add(&s->next_conn_id, 1) + 1;
	c->addr = *ss;
	c->port80 = l->port80;
	c->st = &c->st_local;
	sockaddr_str((const struct sockaddr *)ss, c->addr_str, sizeof(c->addr_str));
	c->created_ns = w->now;
	c->deadline_ns = w->now + SETUP_TIMEOUT_NS;
	pthread_mutex_init(&c->qlock, NULL);
	return c;
}

static void conn_link(struct worker *w, struct conn *c)
{
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
}

static int listener_watch(struct worker *w, int idx, bool on)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLEXCLUSIVE,
		.data.ptr = (void *)(uintptr_t)(EV_LISTENER_BASE + idx),
	};

	/* EPOLLEXCLUSIVE cannot be modified: off is a delete, on an add. */
	return epoll_ctl(w->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->srv->listeners[idx].fd,
			 on ? &ev : NULL);
}

/*
 * Out of file descriptors or memory: the pending connection stays in the
 * backlog and the listener stays readable, so accepting again at once would
 * spin. This worker stops watching the listener for ACCEPT_PAUSE_NS (or
 * until one of its connections closes), counts every failure, and logs one
 * line per ACCEPT_LOG_NS.
 */
static void accept_pause(struct worker *w, int idx, int err)
{
	STAT_ADD(w->stats->c[CTR_ACCEPT_ERRORS], 1);
	w->accept_errors_unlogged++;
	if (w->now >= w->accept_next_log_ns) {
		log_warn("accept: %s (%u times in the last %llu s); pausing accepts for %llu ms",
			 strerror(err), w->accept_errors_unlogged,
			 (unsigned long long)(ACCEPT_LOG_NS / NSEC_PER_SEC),
			 (unsigned long long)(ACCEPT_PAUSE_NS / NSEC_PER_MSEC));
		w->accept_errors_unlogged = 0;
		w->accept_next_log_ns = w->now + ACCEPT_LOG_NS;
	}
	if (!(w->accept_paused & (1u << idx)) && listener_watch(w, idx, false) == 0)
		w->accept_paused |= 1u << idx;
	w->accept_resume_ns = w->now + ACCEPT_PAUSE_NS;
}

/* Watch the paused listeners again once the pause is over. */
static void accept_resume(struct worker *w)
{
	if (!w->accept_paused || w->now < w->accept_resume_ns)
		return;
	for (int i = 0; i < w->srv->nlisteners; i++)
		if ((w->accept_paused & (1u << i)) && listener_watch(w, i, true) == 0)
			w->accept_paused &= ~(1u << i);
}

static bool accept_resource_error(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

static void accept_conns(struct worker *w, int idx)
{
	const struct listener *l = &w->srv->listeners[idx];

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct epoll_event ev = {.events = EPOLLIN};
		struct conn *c;
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (accept_resource_error(errno))
				accept_pause(w, idx, errno);
			return;
		}
		set_sockopts(w->srv, fd);
		c = conn_new(w, l, fd, &ss);
		if (!c) {
			close(fd);
			continue;
		}
		conn_link(w, c);
		ev.data.ptr = c;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			conn_close(c, "epoll_ctl failed");
			continue;
		}
		log_debug("conn %llu: accepted %s from %s", (unsigned long long)c->id,
			  l->tls ? "TLS" : "plain", c->addr_str);
	}
}

/* ---- one iteration ---- */

/* Flush requests from other workers onto the local list. */
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
	for (unsigned i = 0; i < n; i++)
		if (list[i]->state != CS_CLOSED)
			conn_flush_push(list[i]);
	free(list);
}

static void conn_event(struct conn *c, uint32_t events)
{
	if (c->state == CS_CLOSED)
		return;
	if (events & EPOLLOUT) {
		if (c->state == CS_TLS_HANDSHAKE)
			conn_input(c);
		else
			conn_flush(c);
	}
	if (c->state != CS_CLOSED && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		conn_input(c);
}

static void loop_dispatch(struct worker *w, const struct epoll_event *evs, int n)
{
	for (int i = 0; i < n; i++) {
		uintptr_t tag = (uintptr_t)evs[i].data.ptr;

		if (tag >= EV_LISTENER_BASE && tag < EV_LISTENER_BASE + SERVER_MAX_LISTENERS) {
			accept_conns(w, (int)(tag - EV_LISTENER_BASE));
		} else if (tag == EV_EVENTFD) {
			uint64_t v;
			ssize_t r = read(w->evfd, &v, sizeof(v));

			(void)r;
			atomic_store(&w->woken, false);
			drain_remote(w);
		} else {
			conn_event(evs[i].data.ptr, evs[i].events);
		}
	}
}

/* Connections with decrypted data still inside OpenSSL, and paused senders. */
static void loop_rereads(struct worker *w)
{
	struct conn *list = w->reread;

	w->reread = w->reread_later;
	w->reread_later = NULL;
	while (list) {
		struct conn *c = list;

		list = c->reread_next;
		c->in_reread = false;
		if (c->state != CS_CLOSED)
			conn_input(c);
	}
}

static void run_flushes(struct worker *w)
{
	struct conn *list = w->flush;

	/* conn_flush may requeue a connection with more to write: those wait
	 * for the next iteration, so other sockets run first. */
	w->flush = NULL;
	while (list) {
		struct conn *c = list;

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
}

static void free_zombies(struct conn *z)
{
	while (z) {
		struct conn *next = z->zombie_next;

		conn_free(z);
		z = next;
	}
}

/* Zombies present before a drain of the remote list are safe to free after
 * it (Documentation/architecture.md, "Ownership"). */
static void loop_reap(struct worker *w)
{
	struct conn *zombies = w->zombies;

	w->zombies = NULL;
	drain_remote(w);
	run_flushes(w);
	free_zombies(zombies);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[EPOLL_BATCH];
	sigset_t set;

	sigfillset(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	w->now = now_ns();
	w->next_tick = w->now + TICK_NS;
	while (!atomic_load(&w->srv->stopping)) {
		int timeout = (w->flush || w->reread || w->reread_later) ? 0
			: w->accept_paused				 ? 50
									 : 250;
		int n = epoll_wait(w->epfd, evs, EPOLL_BATCH, timeout);

		w->now = now_ns();
		loop_dispatch(w, evs, n);
		if (w->reread || w->reread_later)
			loop_rereads(w);
		loop_reap(w);
		loop_tick(w);
		accept_resume(w);
	}
	/* Shutdown: close every connection this worker owns. */
	while (w->conns)
		conn_close(w->conns, "server shutting down");
	drain_remote(w);
	w->flush = NULL;
	free_zombies(w->zombies);
	w->zombies = NULL;
	return NULL;
}

/* ---- lifecycle ---- */

static int worker_init(struct server *s, struct worker *w, int idx)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = (void *)(uintptr_t)EV_EVENTFD};

	w->srv = s;
	w->idx = idx;
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
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) < 0)
		return -errno;
	return 0;
}

int workers_init(struct server *s)
{
	s->workers = calloc(s->nworkers, sizeof(*s->workers));
	if (!s->workers)
		return -ENOMEM;
	for (int i = 0; i < s->nworkers; i++)
		s->workers[i].epfd = s->workers[i].evfd = -1;
	for (int i = 0; i < s->nworkers; i++) {
		int r = worker_init(s, &s->workers[i], i);

		if (r < 0)
			return r;
	}
	return 0;
}

void workers_set_stats(struct server *s, struct kderp_worker_stats *rows)
{
	for (int i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];

		if (rows) {
			w->stats = &rows[i];
		} else if (w->stats != &w->stats_local) {
			/* Keep the last values readable after the rows go away. */
			w->stats_local = *w->stats;
			w->stats = &w->stats_local;
		}
	}
}

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

		if (r) {
			/* Stop the ones already running: the caller sees no thread. */
			int started = s->nworkers;

			s->nworkers = i;
			workers_stop(s);
			s->nworkers = started;
			return -r;
		}
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

void workers_free(struct server *s)
{
	for (int i = 0; s->workers && i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];

		free(w->rbuf);
		free(w->wbuf);
		free(w->remote);
		if (w->epfd >= 0)
			close(w->epfd);
		if (w->evfd >= 0)
			close(w->evfd);
		pthread_mutex_destroy(&w->remote_lock);
	}
	free(s->workers);
	s->workers = NULL;
}
