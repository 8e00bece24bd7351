// SPDX-License-Identifier: MIT
/*
 * server.c - the peer table and derper's registration rules: duplicate keys
 * (newest connection active, last writer wins), watchers, gauges.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "config.h"
#include "derp.h"
#include "log.h"
#include "server.h"
#include "util.h"

const char *const drop_reason_names[NDROP_REASONS] = {
#define X(e, s) s,
	DROP_REASONS(X)
#undef X
};
const char *const drop_kind_names[NKINDS] = {"disco", "other"};
const struct counter_desc counter_descs[NCOUNTERS] = {
#define X(e, n, h) {n, h},
	COUNTERS(X)
#undef X
};

static inline uint32_t key_hash(const uint8_t *key)
{
	uint32_t h;

	/* Public keys are uniformly random points: their bytes are a hash. */
	memcpy(&h, key + 3, sizeof(h));
	return h;
}

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

/* Caller holds the lock (read or write). */
struct peer *server_peer_lookup(struct server *s, const uint8_t key[32])
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

static void peer_present_frame(struct conn *c, uint8_t out[DERP_PEER_PRESENT_LEN])
{
	uint8_t flags = 0;

	memset(out, 0, DERP_PEER_PRESENT_LEN);
	memcpy(out, c->key, DERP_KEY_LEN);
	if (c->addr.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&c->addr;

		out[32 + 10] = 0xff;
		out[32 + 11] = 0xff;
		memcpy(out + 32 + 12, &a->sin_addr, 4);
		memcpy(out + 48, &a->sin_port, 2);
	} else if (c->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&c->addr;

		memcpy(out + 32, &a->sin6_addr, 16);
		memcpy(out + 48, &a->sin6_port, 2);
	}
	if (c->can_mesh)
		flags |= DERP_PEER_PRESENT_MESH;
	if (c->is_prober)
		flags |= DERP_PEER_PRESENT_PROBER;
	if (c->not_ideal)
		flags |= DERP_PEER_PRESENT_NOT_IDEAL;
	out[50] = flags ? flags : DERP_PEER_PRESENT_REGULAR;
}

static void notify_watchers_present(struct server *s, struct conn *c)
{
	uint8_t pp[DERP_PEER_PRESENT_LEN];

	peer_present_frame(c, pp);
	for (unsigned i = 0; i < s->nwatchers; i++)
		conn_queue_ctl(
			s->watchers[i],
			frame_new(DERP_FRAME_PEER_PRESENT, pp, sizeof(pp), NULL, 0, PKT_CTL));
}

/* Called on c's worker after ServerInfo is queued. */
void server_register(struct server *s, struct conn *c)
{
	struct peer *p;

	pthread_rwlock_wrlock(&s->lock);
	p = server_peer_lookup(s, c->key);
	if (!p) {
		p = calloc(1, sizeof(*p));
		if (p)
			memcpy(p->key, c->key, DERP_KEY_LEN);
		if (!p || table_insert(s, p) < 0) {
			free(p);
			pthread_rwlock_unlock(&s->lock);
			conn_close(c, "out of memory registering client");
			return;
		}
		s->g.clients_local++;
	}
	if (p->nconns == p->cap) {
		unsigned ncap = p->cap ? p->cap * 2 : 2;
		struct conn **n = realloc(p->conns, ncap * sizeof(*n));

		if (!n) {
			pthread_rwlock_unlock(&s->lock);
			conn_close(c, "out of memory registering client");
			return;
		}
		p->conns = n;
		p->cap = ncap;
	}
	p->conns[p->nconns++] = c;
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
	notify_watchers_present(s, c);
	pthread_rwlock_unlock(&s->lock);
}

/* Any frame from a duplicate makes it the active one (lastWriterIsActive). */
void server_note_activity(struct server *s, struct conn *c)
{
	struct peer *p = c->peer;

	if (!p || atomic_load_explicit(&p->active, memory_order_relaxed) == c)
		return;
	pthread_rwlock_wrlock(&s->lock);
	if (c->registered) {
		p->last = c;
		atomic_store(&p->active, c);
	}
	pthread_rwlock_unlock(&s->lock);
}

/*
 * Remove c from the table. Returns true if it was the key's last connection
 * (then PeerGone goes to watchers here, and to former correspondents by the
 * caller).
 */
bool server_unregister(struct server *s, struct conn *c)
{
	struct peer *p = c->peer;
	bool final = false;
	unsigned i;

	if (!c->registered)
		return false;
	pthread_rwlock_wrlock(&s->lock);
	c->registered = false;
	for (i = 0; i < p->nconns && p->conns[i] != c; i++)
		;
	if (i < p->nconns)
		p->conns[i] = p->conns[--p->nconns];
	if (p->nconns == 0) {
		atomic_store(&p->active, NULL);
		table_remove(s, p);
		s->g.clients_local--;
		final = true;
	} else {
		s->g.current_dup_client_conns--;
		if (p->nconns == 1) {
			s->g.current_dup_client_conns--;
			s->g.current_dup_client_keys--;
			p->conns[0]->is_dup = false;
			p->last = p->conns[0];
			atomic_store(&p->active, p->conns[0]);
		} else {
			if (p->last == c)
				p->last = p->conns[p->nconns - 1];
			atomic_store(&p->active, p->last);
		}
	}
	if (c->is_watcher) {
		for (i = 0; i < s->nwatchers; i++) {
			if (s->watchers[i] == c) {
				s->watchers[i] = s->watchers[--s->nwatchers];
				break;
			}
		}
		s->g.watchers--;
	}
	if (final) {
		uint8_t pg[DERP_KEY_LEN + 1];

		memcpy(pg, c->key, DERP_KEY_LEN);
		pg[DERP_KEY_LEN] = DERP_PEER_GONE_DISCONNECTED;
		for (i = 0; i < s->nwatchers; i++)
			conn_queue_ctl(s->watchers[i],
				       frame_new(DERP_FRAME_PEER_GONE, pg, sizeof(pg), NULL, 0,
						 PKT_PEER_GONE_DISC));
	}
	s->g.current_connections--;
	if (c->preferred)
		s->g.current_home_connections--;
	if (c->not_ideal)
		s->g.current_notideal_connections--;
	pthread_rwlock_unlock(&s->lock);
	if (final) {
		free(p->conns);
		free(p);
	}
	c->peer = NULL;
	return final;
}

/* WatchConns: flood the current local keys, then enroll (§1.8). */
void server_add_watcher(struct server *s, struct conn *c)
{
	pthread_rwlock_wrlock(&s->lock);
	if (!c->is_watcher && memcmp(c->key, s->pub, 32) != 0) {
		for (uint32_t i = 0; i < s->table_cap; i++) {
			struct peer *p = s->table[i];
			struct conn *a;
			uint8_t pp[DERP_PEER_PRESENT_LEN];

			if (!p || !(a = atomic_load(&p->active)))
				continue;
			peer_present_frame(a, pp);
			conn_queue_ctl(c,
				       frame_new(DERP_FRAME_PEER_PRESENT, pp, sizeof(pp), NULL, 0,
						 PKT_CTL));
		}
		if (s->nwatchers == s->watchers_cap) {
			unsigned ncap = s->watchers_cap ? s->watchers_cap * 2 : 4;
			struct conn **n = realloc(s->watchers, ncap * sizeof(*n));

			if (n) {
				s->watchers = n;
				s->watchers_cap = ncap;
			}
		}
		if (s->nwatchers < s->watchers_cap) {
			s->watchers[s->nwatchers++] = c;
			c->is_watcher = true;
			s->g.watchers++;
		}
	}
	pthread_rwlock_unlock(&s->lock);
}

void server_set_preferred(struct server *s, struct conn *c, bool pref)
{
	pthread_rwlock_wrlock(&s->lock);
	if (c->registered && pref != c->preferred) {
		c->preferred = pref;
		s->g.current_home_connections += pref ? 1 : -1;
		if (c->w->now - c->created_ns > 5 * NSEC_PER_SEC)
			STAT_ADD(c->w->stats->c[pref ? CTR_HOME_MOVES_IN : CTR_HOME_MOVES_OUT], 1);
	}
	pthread_rwlock_unlock(&s->lock);
}

void server_sum_stats(struct server *s, struct worker_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (int w = 0; w < s->nworkers; w++) {
		const struct worker_stats *ws = s->workers[w].stats;

		for (int i = 0; i < NCOUNTERS; i++)
			out->c[i] += STAT_READ(ws->c[i]);
		for (int r = 0; r < NDROP_REASONS; r++) {
			for (int k = 0; k < NKINDS; k++) {
				out->drop_pkts[r][k] += STAT_READ(ws->drop_pkts[r][k]);
				out->drop_bytes[r][k] += STAT_READ(ws->drop_bytes[r][k]);
			}
		}
		for (int i = 0; i < NRTT_BUCKETS; i++)
			out->rtt[i] += STAT_READ(ws->rtt[i]);
	}
}

/* Keys are public: no constant-time compare needed for the empty slot test. */
static const uint8_t zero_key[32];

bool keyset_add(struct keyset *ks, const uint8_t key[32])
{
	uint32_t mask, i;

	if ((ks->n + 1) * 2 > ks->cap) {
		uint32_t ncap = ks->cap ? ks->cap * 2 : 8;
		uint8_t(*nk)[32] = calloc(ncap, 32);
		uint8_t(*old)[32] = ks->keys;
		uint32_t oldcap = ks->cap;

		if (!nk)
			return false;
		ks->keys = nk;
		ks->cap = ncap;
		ks->n = 0;
		for (uint32_t j = 0; j < oldcap; j++)
			if (memcmp(old[j], zero_key, 32) != 0)
				keyset_add(ks, old[j]);
		free(old);
	}
	mask = ks->cap - 1;
	for (i = key_hash(key) & mask; memcmp(ks->keys[i], zero_key, 32) != 0; i = (i + 1) & mask)
		if (memcmp(ks->keys[i], key, 32) == 0)
			return false;
	memcpy(ks->keys[i], key, 32);
	ks->n++;
	return true;
}

void keyset_free(struct keyset *ks)
{
	free(ks->keys);
	memset(ks, 0, sizeof(*ks));
}

/* Close every connection of a key (any thread). Returns how many, or 0 if
 * the key is not connected. The owners close them on their next loop. */
int server_close_peer(struct server *s, const uint8_t key[32])
{
	struct peer *p;
	int n = 0;

	pthread_rwlock_rdlock(&s->lock);
	p = server_peer_lookup(s, key);
	for (unsigned i = 0; p && i < p->nconns; i++) {
		atomic_store(&p->conns[i]->close_requested, true);
		worker_wake_flush(NULL, p->conns[i]);
		n++;
	}
	pthread_rwlock_unlock(&s->lock);
	return n;
}
