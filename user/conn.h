/* SPDX-License-Identifier: MIT */
/*
 * conn.h - one client connection and one key's record in the peer table.
 * Engine only: edges see connections through server.h's read API.
 *
 * A connection belongs to the worker that accepted it. Its bounded queues
 * are shared with other workers under qlock; everything else is the owner's.
 */
#ifndef KDERP_CONN_H
#define KDERP_CONN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "derp_wire.h"
#include "keyset.h"
#include "stats.h"
#include "worker.h"

#define QDEPTH 32 /* per-client packets per queue (normal, disco), as derper */
#define CTL_MAX 4096 /* control frames waiting per client before they are dropped */
#define INFLIGHT_MAX (2 * QDEPTH + 64)
#define SETUP_TIMEOUT_NS (10ULL * 1000000000ULL)
#define MESH_WRITE_TIMEOUT_NS (30ULL * 1000000000ULL)
#define HTTP_MAX_HEADER 16384

struct http_req;
struct pkt;
struct server;
struct ssl_st;

enum conn_state {
	CS_TLS_HANDSHAKE,
	CS_HTTP,
	CS_HTTP_DONE, /* response queued, close after flush */
	CS_WAIT_CLIENTINFO,
	CS_RUN,
	CS_CLOSED,
};

struct conn {
	struct worker *w;
	struct server *srv;
	int fd;
	struct ssl_st *ssl; /* NULL on plain TCP */
	enum conn_state state;
	uint8_t tls_mode; /* enum kderp_tls_mode */
	bool port80; /* the plain-HTTP side listener in TLS mode */
	bool epollout; /* EPOLLOUT armed */
	bool in_local_flush; /* on w->flush list */
	bool in_reread; /* on w->reread or w->reread_later */
	bool fast_start;
	bool registered;
	bool can_mesh;
	bool is_prober;
	bool not_ideal;
	bool preferred;
	bool is_watcher;
	bool is_dup;
	bool pong_queued; /* at most one pong pending, as derper */
	bool paused; /* stopped parsing until a busy destination drains */
	bool state_dirty; /* the state plane's record is stale: republish on the tick */
	uint64_t created_ns;
	uint64_t deadline_ns; /* setup deadline, 0 once running */
	uint64_t blocked_since; /* write blocked with data pending, 0 if not */
	uint64_t next_keepalive;
	uint64_t next_rtt;
	uint64_t id;
	struct sockaddr_storage addr;
	char addr_str[64];

	/* Read side (owner only). */
	uint8_t *carry; /* bytes of an incomplete frame or request */
	uint32_t carry_len;
	uint64_t skip; /* bytes of an ignored frame still to discard */
	uint32_t read_cap; /* bytes per read: about RELAY_FRAME_BUDGET frames (0: the most) */
	struct http_req *req;

	/* Identity. */
	uint8_t key[DERP_KEY_LEN];
	char key_hex8[16];
	struct peer *peer;

	/* Queues, shared with other workers under qlock. */
	pthread_mutex_t qlock;
	bool dead; /* under qlock: no more enqueues */
	struct pkt *ring[2][QDEPTH];
	uint8_t rhead[2], rcount[2];
	struct pkt *ctl_head, *ctl_tail;
	uint32_t nctl;
	atomic_bool flush_pending;
	atomic_bool close_requested; /* ClosePeer from a mesh peer or kderpctl */

	/* In flight (owner only): dequeued, being written. */
	struct pkt **inflight; /* INFLIGHT_MAX slots while busy; NULL when idle */
	int if_head, if_n;
	uint32_t if_off;
	uint8_t *tlsbuf; /* TLS bytes handed to SSL_write but not accepted yet */
	uint32_t tlsbuf_len;

	/* PeerGone(NotHere) limiter: burst 3, 1 per second. */
	double nothere_tokens;
	uint64_t nothere_last;

	/* The last key this connection delivered to (peer->sent_to has them all). */
	uint8_t last_sent_to[DERP_KEY_LEN];

	struct peer_stats *st; /* a state-plane slot, or st_local */
	uint32_t slot;
	struct peer_stats st_local;

	struct conn *next, *prev; /* w->conns */
	struct conn *flush_next; /* w->flush list */
	struct conn *reread_next;
	struct conn *zombie_next;
};

/* Everything known about one public key: its connections (dups included). */
struct peer {
	uint8_t key[DERP_KEY_LEN];
	struct conn *_Atomic active;
	struct conn **conns;
	unsigned nconns, cap;
	struct conn *last; /* most recent speaker */
	/* Keys any connection of this key delivered packets to: when the key's
	 * last connection goes, they get PeerGone (derper tracks it per key). */
	pthread_mutex_t sent_lock;
	struct keyset sent_to;
};

/* Put c on its owner's local flush list (owner only). */
static inline void conn_flush_push(struct conn *c)
{
	if (!c->in_local_flush) {
		c->in_local_flush = true;
		c->flush_next = c->w->flush;
		c->w->flush = c;
	}
}

/* Read c again next time round: now (reread) or after the others (later). */
static inline void conn_reread_push(struct conn *c, bool later)
{
	struct conn **list = later ? &c->w->reread_later : &c->w->reread;

	if (!c->in_reread) {
		c->in_reread = true;
		c->reread_next = *list;
		*list = c;
	}
}

#endif /* KDERP_CONN_H */
