/* SPDX-License-Identifier: MIT */
/*
 * server.h - the relay engine as the rest of kderpd sees it: struct server,
 * the hooks through which the engine calls its edges (HTTP routing, the
 * state plane), the read API the edges use instead of the engine's locks
 * and tables, and the workers' lifecycle. Connections and workers are the
 * engine's own (conn.h, worker.h); edges never see them.
 * Documentation/architecture.md describes the layers.
 */
#ifndef KDERP_SERVER_H
#define KDERP_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "derp_wire.h"
#include "stats.h"

struct config;
struct http_req;
struct peer;
struct pkt;
struct ssl_ctx_st;
struct worker;

#define SERVER_MAX_LISTENERS 4

struct listener {
	int fd;
	bool tls;
	bool port80; /* the plain-HTTP side listener in TLS mode */
};

/* Who sent an HTTP request, for routing and /debug access. */
struct http_from {
	const struct sockaddr_storage *addr;
	const char *addr_str;
	uint64_t conn_id;
	bool port80;
};

enum http_route {
	HTTP_ROUTE_RESPONSE, /* *resp holds the answer (NULL: out of memory) */
	HTTP_ROUTE_UPGRADE, /* start DERP on this connection */
};

/*
 * Callbacks the engine makes into its edges, registered by main.c. Every
 * one is optional; arguments are the matching *_arg.
 */
struct server_hooks {
	/* A complete HTTP request (web.c). Without it every request gets a 404. */
	enum http_route (*http_route)(void *arg, const struct http_from *from,
				      const struct http_req *req, struct pkt **resp);
	void *http_arg;
	/*
	 * The state plane (state.c). slot_open gives a new connection its
	 * counter slot (NULL: it keeps counting in its own memory); slot_close
	 * takes it back after the connection stopped writing to it.
	 * peer_changed says that a key connected, changed (NotePreferred) or is
	 * losing the connection gone_id (0 for none): the edge reads the key's
	 * state back with server_peer_info().
	 */
	struct kderp_peer_stats *(*slot_open)(void *arg, uint32_t *slot);
	void (*slot_close)(void *arg, uint32_t slot);
	void (*peer_changed)(void *arg, const uint8_t key[DERP_KEY_LEN], uint64_t gone_id);
	void *state_arg;
};

struct server {
	const struct config *cfg;
	uint8_t priv[32];
	uint8_t pub[32];
	char pub_hex[65];
	uint8_t mesh_key[32];
	bool have_mesh_key;
	struct ssl_ctx_st *ssl_ctx; /* NULL: no TLS listener */
	struct listener listeners[SERVER_MAX_LISTENERS];
	int nlisteners;
	struct worker *workers;
	int nworkers;
	atomic_bool stopping;
	int64_t write_timeout_ns;
	uint64_t start_ns;
	atomic_uint_fast64_t next_conn_id;
	struct server_hooks hooks;

	/* The peer table: key -> struct peer. Readers hold the read lock for a
	 * whole batch of frames; writers are (un)registration. Engine only. */
	pthread_rwlock_t lock;
	struct peer **table;
	uint32_t table_cap, table_n;
	struct conn **watchers;
	unsigned nwatchers, watchers_cap;

	/* Gauges, written under the write lock. */
	struct server_gauges g;
};

/* ---- setup (peers.c) ---- */

/* The peer table; 0 or -ENOMEM. */
int server_init(struct server *s, const struct config *cfg);
/* Frees the table (after workers_stop). */
void server_fini(struct server *s);

/* ---- the read API for edges (peers.c) ---- */

struct server_snapshot {
	struct worker_stats st; /* summed over the workers */
	struct server_gauges g;
	double avg_queue_ms; /* mean of the workers' averages */
	int nworkers;
};

void server_stats_snapshot(struct server *s, struct server_snapshot *out);

/* Every registered connection, under the table's read lock: keep fn short. */
typedef void (*server_conn_fn)(void *arg, const uint8_t key[DERP_KEY_LEN], uint64_t conn_id,
			       const struct kderp_peer_stats *st);
void server_for_each_conn(struct server *s, server_conn_fn fn, void *arg);

/*
 * The state-plane record of a key: its active connection (else any other),
 * leaving out connection gone_id. false when no connection is left.
 */
bool server_peer_info(struct server *s, const uint8_t key[DERP_KEY_LEN], uint64_t gone_id,
		      struct kderp_peer_info *pi);

/* Close every connection of a key (any thread; their owners close them on
 * their next loop). Returns how many, 0 if the key is not connected. */
int server_close_peer(struct server *s, const uint8_t key[DERP_KEY_LEN]);

/* ---- workers (loop.c) ---- */

/* Allocate the workers (no threads, no listeners yet). 0 or -errno. */
int workers_init(struct server *s);
/*
 * Where each worker keeps its counters: rows[i] for worker i (memory-mapped
 * state-plane rows), or NULL for the workers' own memory (the values so far
 * are copied there). Only while the workers are not running.
 */
void workers_set_stats(struct server *s, struct kderp_worker_stats *rows);
/* Watch the listeners from every worker and start the threads. 0 or -errno. */
int workers_start(struct server *s);
/* Stop and join the threads; every connection is closed. */
void workers_stop(struct server *s);
/* Free what workers_init allocated. */
void workers_free(struct server *s);

#endif /* KDERP_SERVER_H */
