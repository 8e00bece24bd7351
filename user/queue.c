// SPDX-License-Identifier: MIT
/*
 * queue.c - bounded per-connection queues and flush requests (queue.h).
 *
 * Any worker enqueues under the destination's qlock and asks its owner to
 * flush: directly on the owner's local flush list when the caller is the
 * owner, else through the owner's remote list and its eventfd. Only the
 * owner dequeues.
 */
#include <stdlib.h>
#include <unistd.h>

#include "conn.h"
#include "derp_frame.h"
#include "pkt.h"
#include "queue.h"
#include "util.h"

static inline int drop_kind(uint8_t pkind)
{
	return pkind == PKT_DISCO ? KIND_DISCO : KIND_OTHER;
}

void queue_count_drop(struct worker *w, struct conn *dst, const struct pkt *p, enum drop_reason r)
{
	uint32_t payload = p->len > DERP_RECV_OVERHEAD ? p->len - DERP_RECV_OVERHEAD : 0;
	int k = drop_kind(p->kind);

	STAT_ADD(w->stats->drop_pkts[r][k], 1);
	STAT_ADD(w->stats->drop_bytes[r][k], payload);
	if (dst) {
		struct peer_stats *st = __atomic_load_n(&dst->st, __ATOMIC_ACQUIRE);

		__atomic_fetch_add(&st->drops, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&st->drops_reason[r], 1, __ATOMIC_RELAXED);
	}
}

/* Another worker's conn: add it to the owner's remote list and wake the owner. */
static void wake_remote(struct worker *ow, struct conn *dst)
{
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

void worker_wake_flush(struct worker *from, struct conn *dst)
{
	if (atomic_load_explicit(&dst->flush_pending, memory_order_relaxed) ||
	    atomic_exchange(&dst->flush_pending, true))
		return;
	if (dst->w == from)
		conn_flush_push(dst);
	else
		wake_remote(dst->w, dst);
}

void conn_queue_ctl(struct worker *w, struct conn *c, struct pkt *p)
{
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

bool conn_enqueue_packet(struct worker *w, struct conn *dst, struct pkt *p)
{
	struct pkt *old = NULL;
	int q = p->kind == PKT_DISCO ? 1 : 0;

	p->enq_ns = w->now;
	pthread_mutex_lock(&dst->qlock);
	if (unlikely(dst->dead)) {
		pthread_mutex_unlock(&dst->qlock);
		queue_count_drop(w, NULL, p, DROP_GONE_DISCONNECTED);
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
		worker_note_queue_ms(w, (double)(w->now - old->enq_ns) / 1e6);
		queue_count_drop(w, dst, old, DROP_QUEUE_HEAD);
		pkt_free(old);
	}
	worker_wake_flush(w, dst);
	return true;
}

/* Under qlock: move up to INFLIGHT_MAX frames, control first. */
static int take_queued(struct conn *c)
{
	int n = 0;

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
			c->inflight[n++] = c->ring[q][c->rhead[q]];
			c->rhead[q] = (c->rhead[q] + 1) % QDEPTH;
			c->rcount[q]--;
		}
	}
	return n;
}

void queue_refill_inflight(struct conn *c)
{
	struct worker *w = c->w;
	int n;

	c->if_head = c->if_n = 0;
	c->if_off = 0;
	if (!c->inflight) {
		/* Idle connections hold no in-flight array (RSS per idle client). */
		c->inflight = malloc(INFLIGHT_MAX * sizeof(*c->inflight));
		if (!c->inflight)
			return; /* the tick retries while flush_pending stays set */
	}
	pthread_mutex_lock(&c->qlock);
	n = take_queued(c);
	pthread_mutex_unlock(&c->qlock);
	for (int i = 0; i < n; i++) {
		const struct pkt *p = c->inflight[i];

		if (p->kind <= PKT_DISCO)
			worker_note_queue_ms(w, (double)(w->now - p->enq_ns) / 1e6);
	}
	c->if_n = n;
}

void queue_free_all(struct conn *c)
{
	struct worker *w = c->w;

	pthread_mutex_lock(&c->qlock);
	c->dead = true;
	for (int q = 0; q < 2; q++) {
		while (c->rcount[q]) {
			struct pkt *p = c->ring[q][c->rhead[q]];

			c->rhead[q] = (c->rhead[q] + 1) % QDEPTH;
			c->rcount[q]--;
			queue_count_drop(w, NULL, p, DROP_GONE_DISCONNECTED);
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
			queue_count_drop(w, NULL, p, DROP_WRITE_ERROR);
		pkt_free(p);
	}
	c->if_head = c->if_n = 0;
	free(c->inflight);
	c->inflight = NULL;
}
