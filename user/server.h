/* SPDX-License-Identifier: MIT */
/*
 * server.h - kderpd's core state: server, workers, connections, queues.
 * Documentation/architecture.md describes the path of one packet.
 */
#ifndef KDERP_SERVER_H
#define KDERP_SERVER_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "derp_wire.h"
#include "stats.h"

#define QDEPTH 32 /* per-client packets per queue (normal, disco), as derper */
#define CTL_MAX 4096 /* control frames waiting per client before they are dropped */
#define INFLIGHT_MAX (2 * QDEPTH + 64)
#define SETUP_TIMEOUT_NS (10ULL * 1000000000ULL)
#define MESH_WRITE_TIMEOUT_NS (30ULL * 1000000000ULL)
#define HTTP_MAX_HEADER 16384

struct worker;
struct server;
struct peer;
struct http_req;

enum pkt_kind {
	PKT_OTHER = 0, /* RecvPacket, non-disco (queue 0) */
	PKT_DISCO = 1, /* RecvPacket, disco (queue 1) */
	PKT_CTL, /* any control frame: ServerKey, ServerInfo, KeepAlive, PeerGone... */
	PKT_PONG,
	PKT_PEER_GONE_DISC,
	PKT_PEER_GONE_NOT_HERE,
	PKT_RAW, /* HTTP response bytes */
};

/* One frame waiting to be written. Owned by exactly one queue at a time. */
struct pkt {
	struct pkt *next; /* control list linkage */
	uint64_t enq_ns;
	uint32_t len;
	uint8_t kind;
	uint8_t data[];
};

enum conn_state {
	CS_TLS_HANDSHAKE,
	CS_HTTP,
	CS_HTTP_DONE, /* response queued, close after flush */
	CS_WAIT_CLIENTINFO,
	CS_RUN,
	CS_CLOSED,
};

enum tls_mode {
	TLS_MODE_PLAIN = 0,
	TLS_MODE_USER = 1, /* OpenSSL in user space */
	TLS_MODE_KTLS_TX = 2, /* kernel encrypts, OpenSSL decrypts */
	TLS_MODE_KTLS_TXRX = 3, /* kernel does both directions */
};

/* A small open-addressing set of 32-byte keys (correspondents of a client). */
struct keyset {
	uint8_t (*keys)[DERP_KEY_LEN];
	uint32_t n, cap;
};

struct conn {
	struct worker *w;
	struct server *srv;
	int fd;
	SSL *ssl;
	enum conn_state state;
	uint8_t tls_mode;
	bool port80; /* the plain-HTTP side listener in TLS mode */
	bool epollout; /* EPOLLOUT armed */
	bool in_local_flush; /* on w->flush list */
	bool in_reread; /* on w->reread list */
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
	uint64_t created_ns;
	uint64_t deadline_ns; /* setup deadline, 0 once running */
	uint64_t blocked_since; /* write blocked with data pending, 0 if not */
	uint64_t next_keepalive;
	uint64_t next_rtt;
	uint64_t preferred_at;
	uint64_t id;
	struct sockaddr_storage addr;
	char addr_str[64];
	const char *close_reason;

	/* Read side (owner only). */
	uint8_t *carry; /* bytes of an incomplete frame or request */
	uint32_t carry_len;
	uint64_t skip; /* bytes of an ignored frame still to discard */
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
	atomic_bool close_requested; /* ClosePeer from a mesh peer */

	/* In flight (owner only): dequeued, being written. */
	struct pkt **inflight; /* INFLIGHT_MAX slots while busy; NULL when idle */
	int if_head, if_n;
	uint32_t if_off;
	uint8_t *tlsbuf; /* TLS bytes handed to SSL_write but not accepted yet */
	uint32_t tlsbuf_len;

	/* PeerGone(NotHere) limiter: burst 3, 1 per second. */
	double nothere_tokens;
	uint64_t nothere_last;

	/* Keys this client has sent packets to (for PeerGone on disconnect). */
	struct keyset sent_to;
	uint8_t last_sent_to[DERP_KEY_LEN];

	struct peer_stats *st; /* a state-plane slot, or st_local */
	uint32_t slot;
	struct peer_stats st_local;

	struct conn *next, *prev; /* w->conns */
	struct conn *flush_next; /* w->flush list */
	struct conn *reread_next;
	struct conn *zombie_next;
};

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
	struct conn *reread;
	struct conn *reread_later; /* paused senders, resumed next iteration */
	struct conn *zombies;
	/* Conns of this worker that other workers enqueued to. */
	pthread_mutex_t remote_lock;
	struct conn **remote;
	unsigned nremote, remote_cap;
	atomic_bool woken;
	uint64_t now;
	uint64_t next_tick;
	double avg_queue_ms;
	struct worker_stats *stats; /* a state-plane row, or stats_local */
	struct worker_stats stats_local;
};

struct listener {
	int fd;
	bool tls;
	bool port80;
};

/* Everything known about one public key: its connections (dups included). */
struct peer {
	uint8_t key[DERP_KEY_LEN];
	struct conn *_Atomic active;
	struct conn **conns;
	unsigned nconns, cap;
	struct conn *last; /* most recent speaker */
};

struct config;

struct server {
	const struct config *cfg;
	uint8_t priv[32];
	uint8_t pub[32];
	char pub_hex[65];
	uint8_t mesh_key[32];
	bool have_mesh_key;
	SSL_CTX *ssl_ctx;
	struct listener listeners[4];
	int nlisteners;
	struct worker *workers;
	int nworkers;
	atomic_bool stopping;
	int64_t write_timeout_ns;
	uint64_t start_ns;
	atomic_uint_fast64_t next_conn_id;

	/* The peer table: key -> struct peer. Readers hold the read lock for a
	 * whole batch of frames; writers are (un)registration. */
	pthread_rwlock_t lock;
	struct peer **table;
	uint32_t table_cap, table_n;
	struct conn **watchers;
	unsigned nwatchers, watchers_cap;

	/* Gauges, written under the write lock. */
	struct server_gauges g;
};

/* server.c */
int server_init(struct server *s, const struct config *cfg);
struct peer *server_peer_lookup(struct server *s, const uint8_t key[32]);
void server_register(struct server *s, struct conn *c);
bool server_unregister(struct server *s, struct conn *c);
void server_note_activity(struct server *s, struct conn *c);
void server_add_watcher(struct server *s, struct conn *c);
void server_set_preferred(struct server *s, struct conn *c, bool pref);
void server_sum_stats(struct server *s, struct worker_stats *out);
int server_close_peer(struct server *s, const uint8_t key[32]);

/* worker.c */
int workers_init(struct server *s);
int workers_start(struct server *s);
void workers_stop(struct server *s);
struct pkt *pkt_new(uint32_t len, uint8_t kind);
void pkt_free(struct pkt *p);
void conn_queue_ctl(struct conn *c, struct pkt *p);
bool conn_enqueue_packet(struct worker *w, struct conn *dst, struct pkt *p);
void conn_close(struct conn *c, const char *reason);
void worker_wake_flush(struct worker *from, struct conn *dst);
struct pkt *frame_new(uint8_t type, const void *a, uint32_t alen, const void *b, uint32_t blen,
		      uint8_t kind);

/* keyset */
bool keyset_add(struct keyset *ks, const uint8_t key[32]);
void keyset_free(struct keyset *ks);

#endif
