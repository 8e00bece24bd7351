// SPDX-License-Identifier: MIT
/*
 * peers.c - the peer table and derper's registration rules (peers.h), and
 * the engine's read API for edges (server.h).
 *
 * The table is open addressing with linear probing, keyed by public key,
 * under one rwlock: relay batches take it for reading, (un)registration,
 * watchers and NotePreferred for writing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "derp_frame.h"
#include "peers.h"
#include "pkt.h"
#include "queue.h"
#include "server.h"
#include "util.h"

int server_init(struct server *s, const struct config *cfg)
{
	pthread_rwlockattr_t attr;

	s->cfg = cfg;
	pthread_rwlockattr_init(&attr);
	/* Registration must not starve behind a steady stream of relay batches. */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	s->table_cap = 1024;
	s->table = calloc(s->table_cap, sizeof(*s->table));
	if (!s->table)
		return -ENOMEM;
	s->start_ns = now_ns();
	return 0;
}

void server_fini(struct server *s)
{
	free(s->table);
	s->table = NULL;
	free(s->watchers);
	s->watchers = NULL;
	pthread_rwlock_destroy(&s->lock);
}

struct peer *peers_lookup(struct server *s, const uint8_t key[DERP_KEY_LEN])
{
	uint32_t mask = s->table_cap - 1;

	for (uint32_t i = key_hash(key) & mask;; i = (i + 1) & mask) {
		struct peer *p = s->table[i];

		if (!p)
			return NULL;
		if (memcmp(p->key, key, DERP_KEY_LEN) == 0)
			return p;
	}
}

void peers_batch_lock(struct worker *w)
{
	if (!w->table_rdlocked) {
		pthread_rwlock_rdlock(&w->srv->lock);
		w->table_rdlocked = true;
	}
}

void peers_batch_unlock(struct worker *w)
{
	if (w->table_rdlocked) {
		pthread_rwlock_unlock(&w->srv->lock);
		w->table_rdlocked = false;
	}
}

static void table_put(struct server *s, struct peer *p)
{
	uint32_t mask = s->table_cap - 1;
	uint32_t i = key_hash(p->key) & mask;

	while (s->table[i])
		i = (i + 1) & mask;
	s->table[i] = p;
}

static int table_insert(struct server *s, struct peer *p)
{
	if ((s->table_n + 1) * 2 > s->table_cap) {
		struct peer **old = s->table;
		uint32_t oldcap = s->table_cap;
		struct peer **nt = calloc(oldcap * 2, sizeof(*nt));

		if (!nt)
			return -ENOMEM;
		s->table = nt;
		s->table_cap = oldcap * 2;
		for (uint32_t i = 0; i < oldcap; i++)
			if (old[i])
				table_put(s, old[i]);
		free(old);
	}
	table_put(s, p);
	s->table_n++;
	return 0;
}

/* Linear probing with backward-shift deletion: no tombstones. */
static void table_remove(struct server *s, struct peer *p)
{
	uint32_t mask = s->table_cap - 1;
	uint32_t i = key_hash(p->key) & mask, j;

	while (s->table[i] != p)
		i = (i + 1) & mask;
	s->table[i] = NULL;
	s->table_n--;
	for (j = (i + 1) & mask; s->table[j]; j = (j + 1) & mask) {
		uint32_t home = key_hash(s->table[j]->key) & mask;

		/* Move j back to the hole if its home is not in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
			s->table[i] = s->table[j];
			s->table[j] = NULL;
			i = j;
		}
	}
}

static struct pkt *peer_present_frame(const struct conn *c)
{
	uint8_t pp[DERP_PEER_PRESENT_LEN];
	uint8_t flags = 0;

	if (c->can_mesh)
		flags |= DERP_PEER_PRESENT_MESH;
	if (c->is_prober)
		flags |= DERP_PEER_PRESENT_PROBER;
	if (c->not_ideal)
		flags |= DERP_PEER_PRESENT_NOT_IDEAL;
	derp_peer_present_payload(c->key, &c->addr, flags, pp);
	return frame_new(DERP_FRAME_PEER_PRESENT, pp, sizeof(pp), NULL, 0, PKT_CTL);
}

static struct pkt *peer_gone_frame(const uint8_t key[DERP_KEY_LEN], enum derp_peer_gone_reason why,
				   uint8_t kind)
{
	uint8_t pg[DERP_PEER_GONE_LEN];

	derp_peer_gone_payload(key, why, pg);
	return frame_new(DERP_FRAME_PEER_GONE, pg, sizeof(pg), NULL, 0, kind);
}

static void peer_free(struct peer *p)
{
	pthread_mutex_destroy(&p->sent_lock);
	keyset_free(&p->sent_to);
	free(p->conns);
	free(p);
}

/* Under the write lock: the key's record, created if new. */
static struct peer *peer_get(struct server *s, const uint8_t key[DERP_KEY_LEN])
{
	struct peer *p = peers_lookup(s, key);

	if (p)
		return p;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	memcpy(p->key, key, DERP_KEY_LEN);
	pthread_mutex_init(&p->sent_lock, NULL);
	if (table_insert(s, p) < 0) {
		peer_free(p);
		return NULL;
	}
	s->g.clients_local++;
	return p;
}

static int peer_add_conn(struct peer *p, struct conn *c)
{
	if (p->nconns == p->cap) {
		unsigned ncap = p->cap ? p->cap * 2 : 2;
		struct conn **n = realloc(p->conns, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		p->conns = n;
		p->cap = ncap;
	}
	p->conns[p->nconns++] = c;
	return 0;
}

/* Drop a record that holds no connection (after a failed registration). */
static void peer_put(struct server *s, struct peer *p)
{
	if (p->nconns)
		return;
	table_remove(s, p);
	s->g.clients_local--;
	peer_free(p);
}

int peers_register(struct server *s, struct conn *c)
{
	struct peer *p;

	pthread_rwlock_wrlock(&s->lock);
	p = peer_get(s, c->key);
	if (!p || peer_add_conn(p, c) < 0) {
		if (p)
			peer_put(s, p);
		pthread_rwlock_unlock(&s->lock);
		return -ENOMEM;
	}
	if (p->nconns == 2) {
		p->conns[0]->is_dup = true;
		c->is_dup = true;
		s->g.current_dup_client_keys++;
		s->g.current_dup_client_conns += 2;
		STAT_ADD(c->w->stats->c[CTR_TOTAL_DUP_CLIENT_CONNS], 1);
	} else if (p->nconns > 2) {
		c->is_dup = true;
		s->g.current_dup_client_conns++;
		STAT_ADD(c->w->stats->c[CTR_TOTAL_DUP_CLIENT_CONNS], 1);
	}
	p->last = c;
	atomic_store(&p->active, c);
	c->peer = p;
	c->registered = true;
	s->g.current_connections++;
	if (c->not_ideal)
		s->g.current_notideal_connections++;
	for (unsigned i = 0; i < s->nwatchers; i++)
		conn_queue_ctl(c->w, s->watchers[i], peer_present_frame(c));
	pthread_rwlock_unlock(&s->lock);
	return 0;
}

/*
 * No table lock: c is registered and only its owner (this thread) can
 * unregister it, so p outlives this call. A concurrent unregistration of
 * another connection of the key may pick another active one; either is a
 * registered connection of the key, as derper's last-writer rule allows.
 */
void peers_note_activity(struct conn *c)
{
	struct peer *p = c->peer;

	if (!p || !c->registered || atomic_load_explicit(&p->active, memory_order_relaxed) == c)
		return;
	__atomic_store_n(&p->last, c, __ATOMIC_RELAXED);
	atomic_store(&p->active, c);
}

/* Under the write lock: take c out of its key's record; true if it was the last. */
static bool peer_remove_conn(struct server *s, struct peer *p, struct conn *c)
{
	unsigned i;

	for (i = 0; i < p->nconns && p->conns[i] != c; i++)
		;
	if (i < p->nconns)
		p->conns[i] = p->conns[--p->nconns];
	if (p->nconns == 0) {
		atomic_store(&p->active, NULL);
		table_remove(s, p);
		s->g.clients_local--;
		return true;
	}
	s->g.current_dup_client_conns--;
	if (p->nconns == 1) {
		s->g.current_dup_client_conns--;
		s->g.current_dup_client_keys--;
		p->conns[0]->is_dup = false;
		p->last = p->conns[0];
	} else if (p->last == c) {
		p->last = p->conns[p->nconns - 1];
	}
	atomic_store(&p->active, p->last);
	return false;
}

static void watcher_remove(struct server *s, struct conn *c)
{
	for (unsigned i = 0; i < s->nwatchers; i++) {
		if (s->watchers[i] == c) {
			s->watchers[i] = s->watchers[--s->nwatchers];
			break;
		}
	}
	s->g.watchers--;
}

void peers_note_sent(struct conn *c, const uint8_t key[DERP_KEY_LEN])
{
	struct peer *p = c->peer;

	if (!p)
		return;
	/* Only a new correspondent of a connection gets here: rare. */
	pthread_mutex_lock(&p->sent_lock);
	keyset_add(&p->sent_to, key);
	pthread_mutex_unlock(&p->sent_lock);
}

bool peers_unregister(struct server *s, struct conn *c, struct keyset *gone_to)
{
	struct peer *p = c->peer;
	bool final;

	if (!c->registered)
		return false;
	pthread_rwlock_wrlock(&s->lock);
	c->registered = false;
	final = peer_remove_conn(s, p, c);
	if (c->is_watcher)
		watcher_remove(s, c);
	for (unsigned i = 0; final && i < s->nwatchers; i++)
		conn_queue_ctl(
			c->w, s->watchers[i],
			peer_gone_frame(c->key, DERP_PEER_GONE_DISCONNECTED, PKT_PEER_GONE_DISC));
	s->g.current_connections--;
	if (c->preferred)
		STAT_ADD(c->w->home_conns, -1);
	if (c->not_ideal)
		s->g.current_notideal_connections--;
	pthread_rwlock_unlock(&s->lock);
	if (final) {
		/* No other connection of the key is left to add to the set. */
		*gone_to = p->sent_to;
		memset(&p->sent_to, 0, sizeof(p->sent_to));
		peer_free(p);
	}
	c->peer = NULL;
	return final;
}

void peers_add_watcher(struct server *s, struct conn *c)
{
	pthread_rwlock_wrlock(&s->lock);
	if (c->is_watcher || memcmp(c->key, s->pub, DERP_KEY_LEN) == 0)
		goto out;
	for (uint32_t i = 0; i < s->table_cap; i++) {
		struct peer *p = s->table[i];
		struct conn *a;

		if (p && (a = atomic_load(&p->active)))
			conn_queue_ctl(c->w, c, peer_present_frame(a));
	}
	if (s->nwatchers == s->watchers_cap) {
		unsigned ncap = s->watchers_cap ? s->watchers_cap * 2 : 4;
		struct conn **n = realloc(s->watchers, ncap * sizeof(*n));

		if (!n)
			goto out;
		s->watchers = n;
		s->watchers_cap = ncap;
	}
	s->watchers[s->nwatchers++] = c;
	c->is_watcher = true;
	s->g.watchers++;
out:
	pthread_rwlock_unlock(&s->lock);
}

/*
 * NotePreferred only touches what c's owner owns: the flag, this worker's
 * share of the home gauge and its counters. No table lock, and the state
 * plane hears of it on the next tick, so a client repeating NotePreferred
 * costs nobody else anything.
 */
void peers_set_preferred(struct conn *c, bool pref)
{
	if (!c->registered || pref == c->preferred)
		return;
	__atomic_store_n(&c->preferred, pref, __ATOMIC_RELAXED);
	STAT_ADD(c->w->home_conns, pref ? 1 : -1);
	if (c->w->now - c->created_ns > 5 * NSEC_PER_SEC)
		STAT_ADD(c->w->stats->c[pref ? CTR_HOME_MOVES_IN : CTR_HOME_MOVES_OUT], 1);
	c->state_dirty = true;
}

void peers_notify_gone(struct server *s, struct worker *w, const uint8_t key[DERP_KEY_LEN],
		       const struct keyset *to)
{
	if (!to->n)
		return;
	pthread_rwlock_rdlock(&s->lock);
	/* Only if the key did not come back in the meantime. */
	if (!peers_lookup(s, key)) {
		for (uint32_t i = 0; i < to->cap; i++) {
			struct peer *p;
			struct conn *d;

			if (keyset_slot_empty(to->keys[i]))
				continue;
			p = peers_lookup(s, to->keys[i]);
			d = p ? atomic_load(&p->active) : NULL;
			if (d)
				conn_queue_ctl(w, d,
					       peer_gone_frame(key, DERP_PEER_GONE_DISCONNECTED,
							       PKT_PEER_GONE_DISC));
		}
	}
	pthread_rwlock_unlock(&s->lock);
}

/* Caller holds the table lock. */
static int request_close_locked(struct server *s, struct worker *from,
				const uint8_t key[DERP_KEY_LEN])
{
	struct peer *p = peers_lookup(s, key);
	int n = 0;

	for (unsigned i = 0; p && i < p->nconns; i++) {
		atomic_store(&p->conns[i]->close_requested, true);
		worker_wake_flush(from, p->conns[i]);
		n++;
	}
	return n;
}

int peers_request_close(struct server *s, struct worker *from, const uint8_t key[DERP_KEY_LEN])
{
	int n;

	if (from && from->table_rdlocked)
		return request_close_locked(s, from, key);
	pthread_rwlock_rdlock(&s->lock);
	n = request_close_locked(s, from, key);
	pthread_rwlock_unlock(&s->lock);
	return n;
}

int server_close_peer(struct server *s, const uint8_t key[DERP_KEY_LEN])
{
	return peers_request_close(s, NULL, key);
}

/* ---- the state plane's hooks ---- */

void peers_state_open(struct conn *c)
{
	const struct server_hooks *h = &c->srv->hooks;
	struct peer_stats *slot;

	STAT_ADD(c->w->stats->c[CTR_HANDSHAKES], 1);
	slot = h->slot_open ? h->slot_open(h->state_arg, &c->slot) : NULL;
	if (slot) {
		memset(slot, 0, sizeof(*slot));
		/* Anything counted since registration moves along. */
		slot->pkts_in = c->st_local.pkts_in;
		slot->bytes_in = c->st_local.bytes_in;
		slot->pkts_out = c->st_local.pkts_out;
		slot->bytes_out = c->st_local.bytes_out;
		slot->drops = c->st_local.drops;
		__atomic_store_n(&c->st, slot, __ATOMIC_RELEASE);
	}
	if (h->peer_changed)
		h->peer_changed(h->state_arg, c->key, 0);
}

void peers_state_changed(struct conn *c)
{
	const struct server_hooks *h = &c->srv->hooks;

	if (h->peer_changed)
		h->peer_changed(h->state_arg, c->key, 0);
}

void peers_state_close(struct conn *c)
{
	const struct server_hooks *h = &c->srv->hooks;

	if (h->peer_changed)
		h->peer_changed(h->state_arg, c->key, c->id);
	if (c->slot && h->slot_close) {
		memset(&c->st_local, 0, sizeof(c->st_local));
		__atomic_store_n(&c->st, &c->st_local, __ATOMIC_RELEASE);
		h->slot_close(h->state_arg, c->slot);
		c->slot = 0;
	}
}

/* ---- the read API ---- */

void server_stats_snapshot(struct server *s, struct server_snapshot *out)
{
	struct worker_stats *sum = &out->st;
	int64_t home;

	memset(out, 0, sizeof(*out));
	for (int w = 0; w < s->nworkers; w++) {
		const struct worker_stats *ws = s->workers[w].stats;

		for (int i = 0; i < NCOUNTERS; i++)
			sum->c[i] += STAT_READ(ws->c[i]);
		for (int r = 0; r < NDROP_REASONS; r++) {
			for (int k = 0; k < NKINDS; k++) {
				sum->drop_pkts[r][k] += STAT_READ(ws->drop_pkts[r][k]);
				sum->drop_bytes[r][k] += STAT_READ(ws->drop_bytes[r][k]);
			}
		}
		for (int i = 0; i < NRTT_BUCKETS; i++)
			sum->rtt[i] += STAT_READ(ws->rtt[i]);
		out->avg_queue_ms += s->workers[w].avg_queue_ms;
		out->g.current_home_connections += STAT_READ(s->workers[w].home_conns);
	}
	out->nworkers = s->nworkers;
	if (s->nworkers)
		out->avg_queue_ms /= s->nworkers;
	home = out->g.current_home_connections;
	pthread_rwlock_rdlock(&s->lock);
	out->g = s->g;
	pthread_rwlock_unlock(&s->lock);
	out->g.current_home_connections = home;
}

void server_for_each_conn(struct server *s, server_conn_fn fn, void *arg)
{
	pthread_rwlock_rdlock(&s->lock);
	for (uint32_t t = 0; t < s->table_cap; t++) {
		const struct peer *p = s->table[t];

		for (unsigned j = 0; p && j < p->nconns; j++) {
			const struct conn *c = p->conns[j];

			fn(arg, p->key, c->id, __atomic_load_n(&c->st, __ATOMIC_ACQUIRE));
		}
	}
	pthread_rwlock_unlock(&s->lock);
}

/* A CLOCK_MONOTONIC time (now_ns()) as CLOCK_REALTIME. */
static uint64_t mono_to_unix_ns(uint64_t mono)
{
	struct timespec ts;
	uint64_t now_real, now_mono = now_ns();

	clock_gettime(CLOCK_REALTIME, &ts);
	now_real = (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
	return now_real - (now_mono > mono ? now_mono - mono : 0);
}

static void fill_info(const struct conn *c, unsigned nconns, struct kderp_peer_info *pi)
{
	memset(pi, 0, sizeof(*pi));
	pi->slot = c->slot ? c->slot : KDERP_SLOT_NONE;
	pi->worker = (__u16)c->w->idx;
	pi->flags = (__atomic_load_n(&c->preferred, __ATOMIC_RELAXED) ? KDERP_PEER_PREFERRED : 0) |
		(c->can_mesh ? KDERP_PEER_MESH : 0) | (c->is_prober ? KDERP_PEER_PROBER : 0) |
		(nconns > 1 ? KDERP_PEER_DUP : 0);
	pi->tls_mode = c->tls_mode;
	pi->conn_id = c->id;
	pi->connected_unix_ns = mono_to_unix_ns(c->created_ns);
	pi->nr_conns = (__u16)(nconns > 0xffff ? 0xffff : nconns);
	sockaddr_to_mapped16(&c->addr, pi->addr, &pi->port);
}

bool server_peer_info(struct server *s, const uint8_t key[DERP_KEY_LEN], uint64_t gone_id,
		      struct kderp_peer_info *pi)
{
	struct conn *pick = NULL;
	unsigned nconns = 0;
	struct peer *p;

	pthread_rwlock_rdlock(&s->lock);
	p = peers_lookup(s, key);
	if (p) {
		struct conn *a = atomic_load(&p->active);

		for (unsigned i = 0; i < p->nconns; i++)
			if (p->conns[i]->id != gone_id)
				nconns++;
		if (a && a->id != gone_id)
			pick = a;
		for (unsigned i = 0; !pick && i < p->nconns; i++)
			if (p->conns[i]->id != gone_id)
				pick = p->conns[i];
	}
	if (pick)
		fill_info(pick, nconns, pi);
	pthread_rwlock_unlock(&s->lock);
	return pick != NULL;
}
