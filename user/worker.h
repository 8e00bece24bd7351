/* SPDX-License-Identifier: MIT */
/*
 * worker.h - one relay worker: a thread with its epoll loop (loop.c), the
 * connections it accepted and alone reads, writes and frees, and its
 * counters. Other workers reach it only through the remote flush list.
 * Engine only.
 */
#ifndef KDERP_WORKER_H
#define KDERP_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats.h"

struct conn;
struct server;

struct worker {
	struct server *srv;
	int idx;
	int epfd;
	int evfd;
	pthread_t thread;
	uint8_t *rbuf; /* one large read buffer per worker */
	size_t rbuf_cap;
	uint8_t *wbuf; /* TLS write gather buffer */
	size_t wbuf_cap;
	struct conn *conns;
	unsigned nconns;
	struct conn *flush; /* local flush list */
	struct conn *reread; /* decrypted bytes left inside OpenSSL */
	struct conn *reread_later; /* paused senders, resumed next iteration */
	struct conn *zombies; /* closed, freed after the next remote drain */
	bool table_rdlocked; /* this worker holds the peer table's read lock */
	/* Accepting paused after EMFILE and the like: until when, which
	 * listeners (bits), and the failures not logged yet. */
	uint64_t accept_resume_ns;
	unsigned accept_paused;
	unsigned accept_errors_unlogged;
	uint64_t accept_next_log_ns;
	/* Giving memory back after a burst (loop.c loop_trim). */
	uint64_t trim_work; /* packets and connections seen at the last tick */
	uint64_t trim_quiet_since;
	bool trim_pending;
	/* Conns of this worker that other workers enqueued to. */
	pthread_mutex_t remote_lock;
	struct conn **remote;
	unsigned nremote, remote_cap;
	atomic_bool woken;
	uint64_t now;
	uint64_t next_tick;
	double avg_queue_ms;
	/* This worker's share of derp_current_home_connections (owner writes,
	 * relaxed; summed by server_stats_snapshot). */
	int64_t home_conns;
	struct worker_stats *stats; /* a state-plane row, or stats_local */
	struct worker_stats stats_local;
};

/* Fold one queueing delay into the worker's moving average. */
static inline void worker_note_queue_ms(struct worker *w, double ms)
{
	w->avg_queue_ms = w->avg_queue_ms * 0.9 + ms * 0.1;
}

#endif /* KDERP_WORKER_H */
