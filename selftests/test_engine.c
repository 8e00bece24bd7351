// SPDX-License-Identifier: MIT
/*
 * test_engine.c - the relay engine in process, with in-memory connections:
 * a struct server and its workers (no threads, no listeners), hand-made
 * connections registered in the peer table, frames fed straight to
 * relay_input() and the destinations' queues and counters inspected. Time is
 * w->now, advanced by hand. No daemon and no network; one case writes to a
 * socketpair.
 *
 * Covers derper's drop-oldest queues, the pause of a sender whose writable
 * destination is full, the SendPacket -> RecvPacket rewrite, unknown
 * destinations and the PeerGone(NotHere) limiter, duplicate keys, PeerGone
 * on disconnect, header checks and skipped frames, watchers, ClosePeer.
 */
#include <netinet/in.h>
#include <sys/socket.h>

#include <sodium.h>

#include "harness.h"

#include "conn.h"
#include "conn_io.h"
#include "derp_frame.h"
#include "log.h"
#include "peers.h"
#include "pkt.h"
#include "queue.h"
#include "relay.h"
#include "server.h"
#include "util.h"

#define T0 (1000 * NSEC_PER_SEC) /* the workers' clock at the start */
#define PAYLOAD_LEN 12 /* a non-disco test packet: 4-byte sequence number + filler */
#define DISCO_LEN DERP_DISCO_MIN_LEN
#define BUF_MAX 16384

/* ---- building frames ---- */

static size_t put_frame(uint8_t *out, uint8_t type, const void *a, uint32_t alen, const void *b,
			uint32_t blen)
{
	derp_frame_put_header(out, type, alen + blen);
	if (alen)
		memcpy(out + DERP_FRAME_HDR_LEN, a, alen);
	if (blen)
		memcpy(out + DERP_FRAME_HDR_LEN + alen, b, blen);
	return DERP_FRAME_HDR_LEN + alen + blen;
}

static void payload_fill(uint8_t *p, uint32_t seq)
{
	put_be32(p, seq);
	memset(p + 4, 0xa5, PAYLOAD_LEN - 4);
}

/* SendPacket to dst carrying sequence number seq. */
static size_t put_send(uint8_t *out, const uint8_t *dst, uint32_t seq)
{
	uint8_t p[PAYLOAD_LEN];

	payload_fill(p, seq);
	return put_frame(out, DERP_FRAME_SEND_PACKET, dst, DERP_KEY_LEN, p, sizeof(p));
}

/* SendPacket to dst with a disco payload (magic, then seq). */
static size_t put_disco(uint8_t *out, const uint8_t *dst, uint32_t seq)
{
	uint8_t p[DISCO_LEN];

	memset(p, 0x5a, sizeof(p));
	memcpy(p, DERP_DISCO_MAGIC, DERP_DISCO_MAGIC_LEN);
	put_be32(p + DERP_DISCO_MAGIC_LEN, seq);
	return put_frame(out, DERP_FRAME_SEND_PACKET, dst, DERP_KEY_LEN, p, sizeof(p));
}

#define SEND_FRAME_LEN (DERP_FRAME_HDR_LEN + DERP_KEY_LEN + PAYLOAD_LEN)

/* ---- looking at queues ---- */

/* The i-th packet waiting in ring q of c (0: oldest). */
static const struct pkt *ring_at(const struct conn *c, int q, int i)
{
	return c->ring[q][(c->rhead[q] + i) % QDEPTH];
}

static uint32_t pkt_seq(const struct pkt *p)
{
	uint32_t off = DERP_RECV_OVERHEAD;

	if (p->kind == PKT_DISCO)
		off += DERP_DISCO_MAGIC_LEN;
	return get_be32(p->data + off);
}

static const struct pkt *ctl_at(const struct conn *c, unsigned i)
{
	const struct pkt *p = c->ctl_head;

	while (p && i--)
		p = p->next;
	return p;
}

/* PeerGone frames on c's control list about key with reason why. */
static int count_gone(const struct conn *c, const uint8_t *key, uint8_t why)
{
	int n = 0;

	for (const struct pkt *p = c->ctl_head; p; p = p->next)
		if (p->data[0] == DERP_FRAME_PEER_GONE && p->len == 5 + DERP_PEER_GONE_LEN &&
		    memcmp(p->data + 5, key, DERP_KEY_LEN) == 0 && p->data[5 + DERP_KEY_LEN] == why)
			n++;
	return n;
}

/* PeerPresent frames on c's control list about key. */
static int count_present(const struct conn *c, const uint8_t *key)
{
	int n = 0;

	for (const struct pkt *p = c->ctl_head; p; p = p->next)
		if (p->data[0] == DERP_FRAME_PEER_PRESENT && p->len == 5 + DERP_PEER_PRESENT_LEN &&
		    memcmp(p->data + 5, key, DERP_KEY_LEN) == 0)
			n++;
	return n;
}

static uint64_t all_drops(const struct worker *w)
{
	uint64_t n = 0;

	for (int r = 0; r < NDROP_REASONS; r++)
		for (int k = 0; k < NKINDS; k++)
			n += w->stats->drop_pkts[r][k];
	return n;
}

/* ---- the fixture: a server with two workers, no threads ---- */

FIXTURE(engine)
{
	struct server srv;
	bool srv_ok;
	int sv[2]; /* the socketpair of the inline-flush case */
};

FIXTURE_SETUP(engine)
{
	(void)variant;
	self->sv[0] = self->sv[1] = -1;
	log_level = LOG_LVL_WARN; /* close reasons are info */
	ASSERT_LE(0, sodium_init());
	ASSERT_EQ(0, server_init(&self->srv, NULL));
	self->srv_ok = true;
	randombytes_buf(self->srv.pub, sizeof(self->srv.pub));
	self->srv.nworkers = 2;
	ASSERT_EQ(0, workers_init(&self->srv));
	for (int i = 0; i < self->srv.nworkers; i++)
		self->srv.workers[i].now = T0;
}

FIXTURE_TEARDOWN(engine)
{
	struct server *s = &self->srv;

	(void)_metadata;
	(void)variant;
	for (int i = 0; s->workers && i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];

		while (w->conns)
			conn_close(w->conns, NULL);
	}
	for (int i = 0; s->workers && i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];

		while (w->zombies) {
			struct conn *z = w->zombies;

			w->zombies = z->zombie_next;
			conn_free(z);
		}
	}
	workers_free(s);
	if (self->srv_ok)
		server_fini(s);
	if (self->sv[1] >= 0)
		close(self->sv[1]);
}

/* A connection in RUN on worker widx, registered: key NULL for a random one. */
static struct conn *conn_add(struct __test_metadata *_metadata, struct server *s, int widx,
			     const uint8_t *key, bool mesh)
{
	struct worker *w = &s->workers[widx];
	struct sockaddr_in *sin;
	struct conn *c = calloc(1, sizeof(*c));

	ASSERT_NE(NULL, c);
	c->w = w;
	c->srv = s;
	c->fd = -1;
	c->st = &c->st_local;
	pthread_mutex_init(&c->qlock, NULL);
	c->id = atomic_fetch_add(&s->next_conn_id, 1) + 1;
	c->created_ns = w->now;
	c->state = CS_RUN;
	c->can_mesh = mesh;
	if (key)
		memcpy(c->key, key, DERP_KEY_LEN);
	else
		randombytes_buf(c->key, DERP_KEY_LEN);
	sin = (struct sockaddr_in *)&c->addr;
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(0xc0000200 | (c->id & 0xff)); /* 192.0.2.x */
	sin->sin_port = htons(40000 + c->id);
	/* as loop.c's conn_link */
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
	ASSERT_EQ(0, peers_register(s, c));
	return c;
}

/* What the owner's loop does for a paused sender (conn_input). */
static void resume(struct conn *c)
{
	uint8_t *buf = c->w->rbuf;
	size_t have = c->carry_len;

	memcpy(buf, c->carry, have);
	c->paused = false;
	c->in_reread = false;
	c->w->reread_later = NULL;
	conn_drop_carry(c);
	relay_input(c, buf, have);
}

/* ---- 1. drop-oldest ---- */

/*
 * A destination whose writes are blocked is a slow reader: QDEPTH+N packets
 * leave the newest QDEPTH, in order; the N oldest are counted as queue_head
 * drops, for the worker and for the destination.
 */
TEST_F(engine, drop_oldest_when_blocked)
{
	enum { N = 5 };
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	struct conn *b = conn_add(_metadata, s, 0, NULL, false); /* same worker */
	uint8_t buf[BUF_MAX];
	size_t len = 0;

	b->blocked_since = 1;
	for (uint32_t i = 0; i < QDEPTH + N; i++)
		len += put_send(buf + len, b->key, i);
	relay_input(a, buf, len);

	ASSERT_EQ(CS_RUN, b->state); /* not flushed inline (that writes to fd -1) */
	EXPECT_FALSE(a->paused);
	EXPECT_EQ(0, a->carry_len);
	EXPECT_EQ(QDEPTH + N, w->stats->c[CTR_PACKETS_RECEIVED]);
	ASSERT_EQ(QDEPTH, b->rcount[0]);
	EXPECT_EQ(0, b->rcount[1]);
	for (int i = 0; i < QDEPTH; i++) {
		const struct pkt *p = ring_at(b, 0, i);

		EXPECT_EQ(PKT_OTHER, p->kind);
		EXPECT_EQ(N + i, pkt_seq(p));
	}
	EXPECT_EQ(N, w->stats->drop_pkts[DROP_QUEUE_HEAD][KIND_OTHER]);
	EXPECT_EQ(N * PAYLOAD_LEN, w->stats->drop_bytes[DROP_QUEUE_HEAD][KIND_OTHER]);
	EXPECT_EQ(N, all_drops(w));
	EXPECT_EQ(N, b->st->drops);
	EXPECT_EQ(N, b->st->drops_reason[DROP_QUEUE_HEAD]);
	EXPECT_EQ(0, a->st->drops);

	/* The disco ring is separate: a disco packet does not push one out. */
	len = put_disco(buf, b->key, 99);
	relay_input(a, buf, len);
	ASSERT_EQ(1, b->rcount[1]);
	EXPECT_EQ(PKT_DISCO, ring_at(b, 1, 0)->kind);
	EXPECT_EQ(99, pkt_seq(ring_at(b, 1, 0)));
	EXPECT_EQ(QDEPTH, b->rcount[0]);
	EXPECT_EQ(N, all_drops(w));
}

/* ---- 2. pause instead of drop ---- */

/*
 * A full ring at a writable destination on another worker: the sender stops
 * parsing, keeps the unconsumed frames as its carry and waits on
 * reread_later; nothing is dropped. Once the owner drained the ring, the
 * resumed sender delivers them.
 */
TEST_F(engine, pause_when_writable_dst_full_on_other_worker)
{
	struct server *s = &self->srv;
	struct worker *w0 = &s->workers[0], *w1 = &s->workers[1];
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	uint8_t buf[BUF_MAX], rest[BUF_MAX];
	size_t len = 0, rest_len = 0;

	for (uint32_t i = 0; i < QDEPTH + 2; i++)
		len += put_send(buf + len, b->key, i);
	for (uint32_t i = QDEPTH; i < QDEPTH + 2; i++)
		rest_len += put_send(rest + rest_len, b->key, i);
	relay_input(a, buf, len);

	ASSERT_EQ(QDEPTH, b->rcount[0]);
	ASSERT_TRUE(a->paused);
	ASSERT_EQ(rest_len, a->carry_len);
	EXPECT_EQ(0, memcmp(a->carry, rest, rest_len));
	EXPECT_TRUE(a->in_reread);
	EXPECT_EQ(a, w0->reread_later);
	EXPECT_EQ(NULL, a->reread_next);
	EXPECT_EQ(QDEPTH, w0->stats->c[CTR_PACKETS_RECEIVED]);
	EXPECT_EQ(0, all_drops(w0));
	EXPECT_EQ(0, all_drops(w1));
	EXPECT_EQ(0, b->st->drops);
	/* b's owner was asked once to flush it. */
	EXPECT_TRUE(atomic_load(&b->flush_pending));
	ASSERT_EQ(1, w1->nremote);
	EXPECT_EQ(b, w1->remote[0]);

	/* Resumed before the owner ran: still full, paused again, no drop. */
	resume(a);
	ASSERT_TRUE(a->paused);
	EXPECT_EQ(rest_len, a->carry_len);
	EXPECT_EQ(a, w0->reread_later);
	EXPECT_EQ(0, all_drops(w0));
	EXPECT_EQ(QDEPTH, b->rcount[0]);

	/* The owner takes the ring into flight; the sender goes on. */
	queue_refill_inflight(b);
	ASSERT_EQ(QDEPTH, b->if_n);
	ASSERT_EQ(0, b->rcount[0]);
	resume(a);
	EXPECT_FALSE(a->paused);
	EXPECT_EQ(0, a->carry_len);
	EXPECT_EQ(NULL, w0->reread_later);
	ASSERT_EQ(2, b->rcount[0]);
	EXPECT_EQ(QDEPTH, pkt_seq(ring_at(b, 0, 0)));
	EXPECT_EQ(QDEPTH + 1, pkt_seq(ring_at(b, 0, 1)));
	for (int i = 0; i < QDEPTH; i++)
		EXPECT_EQ(i, pkt_seq(b->inflight[i]));
	EXPECT_EQ(QDEPTH + 2, w0->stats->c[CTR_PACKETS_RECEIVED]);
	EXPECT_EQ(0, all_drops(w0));
	EXPECT_EQ(0, all_drops(w1));
}

/*
 * The same on one worker: the sender's worker owns the destination and
 * flushes it inline (one writev to its socket), then queues the rest. The
 * destination needs a real socket here: a write to fd -1 would close it.
 */
TEST_F(engine, inline_flush_when_writable_dst_full_on_same_worker)
{
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	struct conn *b = conn_add(_metadata, s, 0, NULL, false);
	uint8_t buf[BUF_MAX], got[BUF_MAX];
	size_t len = 0;
	ssize_t n;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, self->sv));
	b->fd = self->sv[0];
	for (uint32_t i = 0; i < QDEPTH + 1; i++)
		len += put_send(buf + len, b->key, i);
	relay_input(a, buf, len);

	ASSERT_EQ(CS_RUN, b->state);
	EXPECT_FALSE(a->paused);
	EXPECT_EQ(0, a->carry_len);
	EXPECT_EQ(0, all_drops(w));
	EXPECT_EQ(QDEPTH, w->stats->c[CTR_PACKETS_SENT]);
	EXPECT_EQ(0, b->blocked_since);
	ASSERT_EQ(1, b->rcount[0]);
	EXPECT_EQ(QDEPTH, pkt_seq(ring_at(b, 0, 0)));

	n = read(self->sv[1], got, sizeof(got));
	ASSERT_EQ(QDEPTH * SEND_FRAME_LEN, n);
	for (int i = 0; i < QDEPTH; i++) {
		const uint8_t *f = got + i * SEND_FRAME_LEN;

		EXPECT_EQ(DERP_FRAME_RECV_PACKET, f[0]);
		EXPECT_EQ(DERP_KEY_LEN + PAYLOAD_LEN, get_be32(f + 1));
		EXPECT_EQ(0, memcmp(f + DERP_FRAME_HDR_LEN, a->key, DERP_KEY_LEN));
		EXPECT_EQ(i, get_be32(f + DERP_RECV_OVERHEAD));
	}
}

/* ---- 3. rewrite, unknown destinations ---- */

TEST_F(engine, send_becomes_recv_in_place)
{
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	uint8_t buf[BUF_MAX], payload[PAYLOAD_LEN];
	const struct pkt *p;
	size_t len;

	payload_fill(payload, 7);
	len = put_send(buf, b->key, 7);
	relay_input(a, buf, len);
	ASSERT_EQ(1, b->rcount[0]);
	p = ring_at(b, 0, 0);
	ASSERT_EQ(len, p->len);
	EXPECT_EQ(PKT_OTHER, p->kind);
	EXPECT_EQ(DERP_FRAME_RECV_PACKET, p->data[0]);
	EXPECT_EQ(DERP_KEY_LEN + PAYLOAD_LEN, get_be32(p->data + 1));
	EXPECT_EQ(0, memcmp(p->data + DERP_FRAME_HDR_LEN, a->key, DERP_KEY_LEN));
	EXPECT_EQ(0, memcmp(p->data + DERP_RECV_OVERHEAD, payload, PAYLOAD_LEN));
	EXPECT_EQ(T0, p->enq_ns);
	EXPECT_EQ(1, w->stats->c[CTR_PACKETS_RECEIVED]);
	EXPECT_EQ(1, w->stats->c[CTR_PACKETS_RECEIVED_OTHER]);
	EXPECT_EQ(PAYLOAD_LEN, w->stats->c[CTR_BYTES_RECEIVED]);
	EXPECT_EQ(1, a->st->pkts_in);
	EXPECT_EQ(PAYLOAD_LEN, a->st->bytes_in);

	/* Disco goes to the second ring. */
	len = put_disco(buf, b->key, 8);
	relay_input(a, buf, len);
	ASSERT_EQ(1, b->rcount[1]);
	p = ring_at(b, 1, 0);
	EXPECT_EQ(PKT_DISCO, p->kind);
	EXPECT_EQ(len, p->len);
	EXPECT_EQ(0, memcmp(p->data + DERP_FRAME_HDR_LEN, a->key, DERP_KEY_LEN));
	EXPECT_EQ(8, pkt_seq(p));
	EXPECT_EQ(1, w->stats->c[CTR_PACKETS_RECEIVED_DISCO]);
	EXPECT_EQ(1, b->rcount[0]);
	EXPECT_EQ(0, all_drops(w));
	EXPECT_EQ(0, a->nctl);
}

TEST_F(engine, unknown_destination)
{
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	uint8_t buf[BUF_MAX], nobody[DERP_KEY_LEN];
	const struct pkt *p;
	size_t len;

	randombytes_buf(nobody, sizeof(nobody));
	len = put_send(buf, nobody, 1);
	relay_input(a, buf, len);
	EXPECT_EQ(1, w->stats->drop_pkts[DROP_UNKNOWN_DEST][KIND_OTHER]);
	EXPECT_EQ(PAYLOAD_LEN, w->stats->drop_bytes[DROP_UNKNOWN_DEST][KIND_OTHER]);
	EXPECT_EQ(1, all_drops(w));
	EXPECT_EQ(1, w->stats->c[CTR_PACKETS_RECEIVED]);
	EXPECT_EQ(0, a->nctl); /* not disco: no PeerGone */

	len = put_disco(buf, nobody, 2);
	relay_input(a, buf, len);
	EXPECT_EQ(1, w->stats->drop_pkts[DROP_UNKNOWN_DEST][KIND_DISCO]);
	EXPECT_EQ(2, all_drops(w));
	ASSERT_EQ(1, a->nctl);
	p = a->ctl_head;
	EXPECT_EQ(PKT_PEER_GONE_NOT_HERE, p->kind);
	ASSERT_EQ(DERP_FRAME_HDR_LEN + DERP_PEER_GONE_LEN, p->len);
	EXPECT_EQ(DERP_FRAME_PEER_GONE, p->data[0]);
	EXPECT_EQ(DERP_PEER_GONE_LEN, get_be32(p->data + 1));
	EXPECT_EQ(0, memcmp(p->data + DERP_FRAME_HDR_LEN, nobody, DERP_KEY_LEN));
	EXPECT_EQ(DERP_PEER_GONE_NOT_HERE, p->data[DERP_FRAME_HDR_LEN + DERP_KEY_LEN]);
	/* The sender's owner (this worker) has it on its flush list. */
	EXPECT_TRUE(a->in_local_flush);
	EXPECT_EQ(a, w->flush);
	/* Unknown keys are not correspondents. */
	EXPECT_EQ(0, a->peer->sent_to.n);
}

/* ---- 4. the NotHere limiter: burst 3, then 1 per second ---- */

TEST_F(engine, not_here_limiter)
{
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	uint8_t buf[BUF_MAX], nobody[DERP_KEY_LEN];
	size_t len = 0;

	randombytes_buf(nobody, sizeof(nobody));
	for (uint32_t i = 0; i < 5; i++)
		len += put_disco(buf + len, nobody, i);

	relay_input(a, buf, len);
	EXPECT_EQ(3, count_gone(a, nobody, DERP_PEER_GONE_NOT_HERE));
	EXPECT_EQ(3, a->nctl);

	w->now += NSEC_PER_SEC;
	relay_input(a, buf, len);
	EXPECT_EQ(4, count_gone(a, nobody, DERP_PEER_GONE_NOT_HERE));

	/* Half a second earns half a token: nothing; the next half one more. */
	w->now += NSEC_PER_SEC / 2;
	relay_input(a, buf, len);
	EXPECT_EQ(4, count_gone(a, nobody, DERP_PEER_GONE_NOT_HERE));
	w->now += NSEC_PER_SEC / 2;
	relay_input(a, buf, len);
	EXPECT_EQ(5, count_gone(a, nobody, DERP_PEER_GONE_NOT_HERE));

	/* A long silence refills the burst, no more. */
	w->now += 60 * NSEC_PER_SEC;
	relay_input(a, buf, len);
	EXPECT_EQ(8, count_gone(a, nobody, DERP_PEER_GONE_NOT_HERE));
	EXPECT_EQ(8, a->nctl);
	EXPECT_EQ(25, w->stats->drop_pkts[DROP_UNKNOWN_DEST][KIND_DISCO]);
}

/* ---- 5. duplicate keys ---- */

TEST_F(engine, duplicate_keys)
{
	struct server *s = &self->srv;
	struct worker *w0 = &s->workers[0];
	struct conn *snd = conn_add(_metadata, s, 0, NULL, false);
	struct conn *k1 = conn_add(_metadata, s, 0, NULL, false);
	struct conn *k2 = conn_add(_metadata, s, 1, k1->key, false);
	uint8_t buf[BUF_MAX], ping[DERP_FRAME_HDR_LEN + DERP_PING_LEN];
	struct peer *p = k1->peer;
	size_t len;

	ASSERT_EQ(p, k2->peer);
	EXPECT_EQ(2, p->nconns);
	EXPECT_TRUE(k1->is_dup);
	EXPECT_TRUE(k2->is_dup);
	EXPECT_FALSE(snd->is_dup);
	EXPECT_EQ(1, s->g.current_dup_client_keys);
	EXPECT_EQ(2, s->g.current_dup_client_conns);
	EXPECT_EQ(3, s->g.current_connections);
	EXPECT_EQ(2, s->g.clients_local);
	EXPECT_EQ(1, s->workers[1].stats->c[CTR_TOTAL_DUP_CLIENT_CONNS]);
	EXPECT_EQ(k2, atomic_load(&p->active)); /* the newest */

	len = put_send(buf, k1->key, 1);
	relay_input(snd, buf, len);
	EXPECT_EQ(0, k1->rcount[0]);
	EXPECT_EQ(1, k2->rcount[0]);

	/* Any frame from the older one makes it active. */
	put_frame(ping, DERP_FRAME_PING, "12345678", DERP_PING_LEN, NULL, 0);
	relay_input(k1, ping, sizeof(ping));
	EXPECT_EQ(k1, atomic_load(&p->active));
	EXPECT_EQ(1, k1->nctl); /* its Pong */
	EXPECT_EQ(1, w0->stats->c[CTR_GOT_PING]);
	len = put_send(buf, k1->key, 2);
	relay_input(snd, buf, len);
	ASSERT_EQ(1, k1->rcount[0]);
	EXPECT_EQ(2, pkt_seq(ring_at(k1, 0, 0)));
	EXPECT_EQ(1, k2->rcount[0]);

	/* The active one goes: the other is a single connection again. */
	conn_close(k1, NULL);
	EXPECT_FALSE(k2->is_dup);
	EXPECT_EQ(k2, atomic_load(&p->active));
	EXPECT_EQ(1, p->nconns);
	EXPECT_EQ(0, s->g.current_dup_client_keys);
	EXPECT_EQ(0, s->g.current_dup_client_conns);
	EXPECT_EQ(2, s->g.current_connections);
	EXPECT_EQ(2, s->g.clients_local);
	len = put_send(buf, k2->key, 3);
	relay_input(snd, buf, len);
	ASSERT_EQ(2, k2->rcount[0]);
	EXPECT_EQ(3, pkt_seq(ring_at(k2, 0, 1)));
	/* The key is still here: nobody hears it is gone. */
	EXPECT_EQ(0, snd->nctl);
	/* What k1 had queued went with it. */
	EXPECT_EQ(1, w0->stats->drop_pkts[DROP_GONE_DISCONNECTED][KIND_OTHER]);
	EXPECT_EQ(1, all_drops(w0));
}

/* A third connection of the key, and the gauges coming back down. */
TEST_F(engine, duplicate_keys_three)
{
	struct server *s = &self->srv;
	struct conn *k1 = conn_add(_metadata, s, 0, NULL, false);
	struct conn *k2 = conn_add(_metadata, s, 1, k1->key, false);
	struct conn *k3 = conn_add(_metadata, s, 0, k1->key, false);
	struct peer *p = k1->peer;

	EXPECT_TRUE(k3->is_dup);
	EXPECT_EQ(1, s->g.current_dup_client_keys);
	EXPECT_EQ(3, s->g.current_dup_client_conns);
	EXPECT_EQ(2,
		  s->workers[0].stats->c[CTR_TOTAL_DUP_CLIENT_CONNS] +
			  s->workers[1].stats->c[CTR_TOTAL_DUP_CLIENT_CONNS]);
	EXPECT_EQ(k3, atomic_load(&p->active));
	EXPECT_EQ(1, s->g.clients_local);

	conn_close(k2, NULL); /* not the active one */
	EXPECT_EQ(k3, atomic_load(&p->active));
	EXPECT_TRUE(k1->is_dup);
	EXPECT_TRUE(k3->is_dup);
	EXPECT_EQ(1, s->g.current_dup_client_keys);
	EXPECT_EQ(2, s->g.current_dup_client_conns);

	conn_close(k3, NULL);
	EXPECT_EQ(k1, atomic_load(&p->active));
	EXPECT_FALSE(k1->is_dup);
	EXPECT_EQ(0, s->g.current_dup_client_keys);
	EXPECT_EQ(0, s->g.current_dup_client_conns);
	EXPECT_EQ(1, s->g.current_connections);

	conn_close(k1, NULL);
	EXPECT_EQ(NULL, peers_lookup(s, k1->key));
	EXPECT_EQ(0, s->g.current_connections);
	EXPECT_EQ(0, s->g.clients_local);
}

/* ---- 6. PeerGone to former correspondents ---- */

TEST_F(engine, peer_gone_fan_out)
{
	struct server *s = &self->srv;
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	struct conn *b = conn_add(_metadata, s, 0, NULL, false);
	struct conn *c = conn_add(_metadata, s, 1, NULL, false);
	struct conn *d = conn_add(_metadata, s, 1, NULL, false);
	uint8_t buf[BUF_MAX], akey[DERP_KEY_LEN];
	size_t len = 0;

	memcpy(akey, a->key, sizeof(akey));
	len += put_send(buf + len, b->key, 1);
	len += put_send(buf + len, c->key, 2);
	len += put_send(buf + len, b->key, 3);
	relay_input(a, buf, len);
	len = put_disco(buf, b->key, 4); /* a second batch to b */
	relay_input(a, buf, len);
	ASSERT_EQ(2, b->rcount[0]);
	ASSERT_EQ(1, b->rcount[1]);
	ASSERT_EQ(1, c->rcount[0]);
	EXPECT_EQ(2, a->peer->sent_to.n);

	conn_close(a, NULL);
	ASSERT_EQ(1, b->nctl);
	EXPECT_EQ(1, count_gone(b, akey, DERP_PEER_GONE_DISCONNECTED));
	EXPECT_EQ(PKT_PEER_GONE_DISC, b->ctl_head->kind);
	ASSERT_EQ(1, c->nctl);
	EXPECT_EQ(1, count_gone(c, akey, DERP_PEER_GONE_DISCONNECTED));
	EXPECT_EQ(0, d->nctl);
	/* c lives on the other worker: its owner was asked to flush it. */
	EXPECT_TRUE(atomic_load(&c->flush_pending));
}

TEST_F(engine, peer_gone_not_while_key_connected)
{
	struct server *s = &self->srv;
	struct conn *a1 = conn_add(_metadata, s, 0, NULL, false);
	struct conn *a2 = conn_add(_metadata, s, 1, a1->key, false);
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	uint8_t buf[BUF_MAX];
	size_t len;

	len = put_send(buf, b->key, 1);
	relay_input(a1, buf, len);
	ASSERT_EQ(1, b->rcount[0]);
	/* peers_notify_gone itself checks that the key is gone (it may have
	 * come back by the time a closing connection calls it). */
	peers_notify_gone(s, a1->w, a1->key, &a1->peer->sent_to);
	EXPECT_EQ(0, b->nctl);
	conn_close(a1, NULL);
	EXPECT_EQ(0, b->nctl);
	EXPECT_EQ(a2, atomic_load(&a2->peer->active));
}

/*
 * The correspondents belong to the key, as in derper: A1 sends to B and
 * closes while A2 (same key, never sent to B) stays; when A2 goes, the key
 * is gone and B hears of it.
 */
TEST_F(engine, peer_gone_after_last_connection_of_key)
{
	struct server *s = &self->srv;
	struct conn *a1 = conn_add(_metadata, s, 0, NULL, false);
	struct conn *a2 = conn_add(_metadata, s, 1, a1->key, false);
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	uint8_t buf[BUF_MAX], akey[DERP_KEY_LEN];
	size_t len;

	memcpy(akey, a1->key, sizeof(akey));
	len = put_send(buf, b->key, 1);
	relay_input(a1, buf, len);
	ASSERT_EQ(1, b->rcount[0]);
	conn_close(a1, NULL);
	EXPECT_EQ(0, b->nctl);
	conn_close(a2, NULL);
	ASSERT_EQ(1, b->nctl);
	EXPECT_EQ(1, count_gone(b, akey, DERP_PEER_GONE_DISCONNECTED));
}

/* ---- 7. header checks, skipped frames ---- */

/* Frames only a mesh peer may send: a client sending one is closed before
 * anything after it is looked at. */
TEST_F(engine, mesh_frames_from_client_close_it)
{
	static const uint8_t types[] = {DERP_FRAME_FORWARD_PACKET, DERP_FRAME_WATCH_CONNS,
					DERP_FRAME_CLOSE_PEER};
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	struct conn *m = conn_add(_metadata, s, 1, NULL, true);

	/* m watches: a closed client's PeerGone is the only thing it may get. */
	peers_add_watcher(s, m);
	ASSERT_EQ(2, m->nctl);
	for (unsigned i = 0; i < ARRAY_SIZE(types); i++) {
		struct conn *a = conn_add(_metadata, s, 0, NULL, false);
		uint8_t buf[BUF_MAX], body[2 * DERP_KEY_LEN + PAYLOAD_LEN], akey[DERP_KEY_LEN];
		uint32_t blen = types[i] == DERP_FRAME_WATCH_CONNS ? 0
			: types[i] == DERP_FRAME_CLOSE_PEER	   ? DERP_KEY_LEN
								   : sizeof(body);
		size_t len;

		memcpy(akey, a->key, sizeof(akey));
		ASSERT_EQ(2 + 2 * i + 1, m->nctl); /* a's PeerPresent */
		/* ForwardPacket: src a, dst b; ClosePeer: b. */
		memcpy(body, types[i] == DERP_FRAME_CLOSE_PEER ? b->key : a->key, DERP_KEY_LEN);
		memcpy(body + DERP_KEY_LEN, b->key, DERP_KEY_LEN);
		payload_fill(body + 2 * DERP_KEY_LEN, 1);
		len = put_frame(buf, types[i], body, blen, NULL, 0);
		len += put_send(buf + len, b->key, 2);
		relay_input(a, buf, len);
		EXPECT_EQ(CS_CLOSED, a->state);
		EXPECT_EQ(a, w->zombies);
		EXPECT_EQ(i + 1, w->stats->c[CTR_PROTOCOL_ERRORS]);
		EXPECT_EQ(0, b->rcount[0]);
		EXPECT_EQ(0, b->nctl);
		EXPECT_FALSE(atomic_load(&b->close_requested));
		EXPECT_EQ(1, s->g.watchers);
		EXPECT_EQ(2 + 2 * i + 2, m->nctl);
		EXPECT_EQ(1, count_gone(m, akey, DERP_PEER_GONE_DISCONNECTED));
		EXPECT_EQ(2, s->g.current_connections);
	}
	EXPECT_EQ(0, w->stats->c[CTR_PACKETS_RECEIVED]);
	EXPECT_EQ(0, w->stats->c[CTR_PACKETS_FORWARDED_IN]);
	EXPECT_EQ(0, all_drops(w));
}

/* The same ForwardPacket from a mesh peer is relayed with its source key. */
TEST_F(engine, forward_packet_from_mesh)
{
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *m = conn_add(_metadata, s, 0, NULL, true);
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	uint8_t buf[BUF_MAX], body[2 * DERP_KEY_LEN + PAYLOAD_LEN], src[DERP_KEY_LEN];
	const struct pkt *p;
	size_t len;

	randombytes_buf(src, sizeof(src));
	memcpy(body, src, DERP_KEY_LEN);
	memcpy(body + DERP_KEY_LEN, b->key, DERP_KEY_LEN);
	payload_fill(body + 2 * DERP_KEY_LEN, 5);
	len = put_frame(buf, DERP_FRAME_FORWARD_PACKET, body, sizeof(body), NULL, 0);
	relay_input(m, buf, len);
	ASSERT_EQ(CS_RUN, m->state);
	ASSERT_EQ(1, b->rcount[0]);
	p = ring_at(b, 0, 0);
	ASSERT_EQ(DERP_RECV_OVERHEAD + PAYLOAD_LEN, p->len);
	EXPECT_EQ(DERP_FRAME_RECV_PACKET, p->data[0]);
	EXPECT_EQ(0, memcmp(p->data + DERP_FRAME_HDR_LEN, src, DERP_KEY_LEN));
	EXPECT_EQ(5, pkt_seq(p));
	EXPECT_EQ(1, w->stats->c[CTR_PACKETS_FORWARDED_IN]);
	EXPECT_EQ(0, w->stats->c[CTR_PACKETS_RECEIVED]);
	EXPECT_EQ(0, w->stats->c[CTR_PROTOCOL_ERRORS]);
}

TEST_F(engine, unknown_frames_skipped)
{
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	uint8_t buf[BUF_MAX], junk[100];
	size_t len;

	memset(junk, 0xee, sizeof(junk));
	/* Whole, between two packets; a client's Pong is skipped the same way. */
	len = put_send(buf, b->key, 1);
	len += put_frame(buf + len, 0x7f, junk, 10, NULL, 0);
	len += put_frame(buf + len, DERP_FRAME_PONG, junk, 8, NULL, 0);
	len += put_send(buf + len, b->key, 2);
	relay_input(a, buf, len);
	EXPECT_EQ(2, w->stats->c[CTR_UNKNOWN_FRAMES]);
	ASSERT_EQ(2, b->rcount[0]);
	EXPECT_EQ(2, pkt_seq(ring_at(b, 0, 1)));

	/* Split over three reads: counted once, skipped as it streams in. */
	len = put_frame(buf, 0x7f, junk, sizeof(junk), NULL, 0);
	len += put_send(buf + len, b->key, 3);
	relay_input(a, buf, DERP_FRAME_HDR_LEN + 40);
	EXPECT_EQ(3, w->stats->c[CTR_UNKNOWN_FRAMES]);
	EXPECT_EQ(60, a->skip);
	EXPECT_EQ(0, a->carry_len);
	relay_input(a, buf + 45, 30);
	EXPECT_EQ(30, a->skip);
	EXPECT_EQ(0, a->carry_len);
	relay_input(a, buf + 75, len - 75);
	EXPECT_EQ(0, a->skip);
	EXPECT_EQ(0, a->carry_len);
	EXPECT_EQ(3, w->stats->c[CTR_UNKNOWN_FRAMES]);
	ASSERT_EQ(3, b->rcount[0]);
	EXPECT_EQ(3, pkt_seq(ring_at(b, 0, 2)));
	EXPECT_EQ(CS_RUN, a->state);
	EXPECT_EQ(0, w->stats->c[CTR_PROTOCOL_ERRORS]);
}

/* A known frame split across reads waits in the carry. */
TEST_F(engine, split_frame_carried)
{
	struct server *s = &self->srv;
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	uint8_t buf[BUF_MAX], in[BUF_MAX];
	size_t len, have;

	len = put_send(buf, b->key, 1);
	len += put_send(buf + len, b->key, 2);
	relay_input(a, buf, SEND_FRAME_LEN + 20);
	ASSERT_EQ(1, b->rcount[0]);
	ASSERT_EQ(20, a->carry_len);
	EXPECT_EQ(0, memcmp(a->carry, buf + SEND_FRAME_LEN, 20));
	/* The next read goes after the carry, as conn_input does. */
	have = a->carry_len;
	memcpy(in, a->carry, have);
	memcpy(in + have, buf + SEND_FRAME_LEN + 20, len - SEND_FRAME_LEN - 20);
	conn_drop_carry(a);
	relay_input(a, in, have + len - SEND_FRAME_LEN - 20);
	EXPECT_EQ(0, a->carry_len);
	ASSERT_EQ(2, b->rcount[0]);
	EXPECT_EQ(2, pkt_seq(ring_at(b, 0, 1)));
}

/* ---- 8. watchers ---- */

TEST_F(engine, watchers)
{
	struct server *s = &self->srv;
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	struct conn *b = conn_add(_metadata, s, 1, NULL, false);
	struct conn *m = conn_add(_metadata, s, 0, NULL, true);
	uint8_t buf[BUF_MAX], dkey[DERP_KEY_LEN];
	const struct pkt *p;
	struct conn *d;
	size_t len;

	len = put_frame(buf, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0);
	relay_input(m, buf, len);
	ASSERT_EQ(CS_RUN, m->state);
	EXPECT_TRUE(m->is_watcher);
	EXPECT_EQ(1, s->g.watchers);
	ASSERT_EQ(3, m->nctl);
	EXPECT_EQ(1, count_present(m, a->key));
	EXPECT_EQ(1, count_present(m, b->key));
	EXPECT_EQ(1, count_present(m, m->key));
	for (unsigned i = 0; i < 3; i++) {
		p = ctl_at(m, i);
		ASSERT_NE(NULL, p);
		EXPECT_EQ(PKT_CTL, p->kind);
		EXPECT_EQ(DERP_PEER_PRESENT_LEN, get_be32(p->data + 1));
		if (memcmp(p->data + 5, a->key, DERP_KEY_LEN) == 0) {
			/* v4-mapped 192.0.2.x, port 40000 + id, a regular client */
			EXPECT_EQ(0xffff, get_be16(p->data + 5 + DERP_KEY_LEN + 10));
			EXPECT_EQ(0xc0, p->data[5 + DERP_KEY_LEN + 12]);
			EXPECT_EQ(40000 + a->id, get_be16(p->data + 5 + DERP_KEY_LEN + 16));
			EXPECT_EQ(DERP_PEER_PRESENT_REGULAR, p->data[5 + DERP_KEY_LEN + 18]);
		} else if (memcmp(p->data + 5, m->key, DERP_KEY_LEN) == 0) {
			EXPECT_EQ(DERP_PEER_PRESENT_MESH, p->data[5 + DERP_KEY_LEN + 18]);
		}
	}

	/* WatchConns again: already a watcher, nothing more. */
	relay_input(m, buf, len);
	EXPECT_EQ(3, m->nctl);
	EXPECT_EQ(1, s->g.watchers);

	/* A later registration, then its end. */
	d = conn_add(_metadata, s, 1, NULL, false);
	memcpy(dkey, d->key, sizeof(dkey));
	ASSERT_EQ(4, m->nctl);
	EXPECT_EQ(1, count_present(m, dkey));
	EXPECT_EQ(m->ctl_tail, ctl_at(m, 3));
	conn_close(d, NULL);
	ASSERT_EQ(5, m->nctl);
	EXPECT_EQ(1, count_gone(m, dkey, DERP_PEER_GONE_DISCONNECTED));
	EXPECT_EQ(PKT_PEER_GONE_DISC, m->ctl_tail->kind);
	EXPECT_EQ(0, a->nctl);
	EXPECT_EQ(0, b->nctl);

	conn_close(m, NULL);
	EXPECT_EQ(0, s->g.watchers);
	EXPECT_EQ(0, s->nwatchers);
}

/* derper: a mesh connection with the server's own key is not a watcher. */
TEST_F(engine, watcher_with_own_key_ignored)
{
	struct server *s = &self->srv;
	struct conn *self_link = conn_add(_metadata, s, 0, s->pub, true);
	uint8_t buf[BUF_MAX];
	size_t len;

	conn_add(_metadata, s, 1, NULL, false);
	len = put_frame(buf, DERP_FRAME_WATCH_CONNS, NULL, 0, NULL, 0);
	relay_input(self_link, buf, len);
	EXPECT_EQ(CS_RUN, self_link->state);
	EXPECT_FALSE(self_link->is_watcher);
	EXPECT_EQ(0, self_link->nctl);
	EXPECT_EQ(0, s->g.watchers);
}

/* ---- more frames ---- */

/* ClosePeer from a mesh peer marks every connection of the key. */
TEST_F(engine, close_peer_from_mesh)
{
	struct server *s = &self->srv;
	struct worker *w0 = &s->workers[0], *w1 = &s->workers[1];
	struct conn *m = conn_add(_metadata, s, 0, NULL, true);
	struct conn *k1 = conn_add(_metadata, s, 0, NULL, false);
	struct conn *k2 = conn_add(_metadata, s, 1, k1->key, false);
	struct conn *x = conn_add(_metadata, s, 0, NULL, false);
	uint8_t buf[BUF_MAX], nobody[DERP_KEY_LEN];
	size_t len;

	len = put_frame(buf, DERP_FRAME_CLOSE_PEER, k1->key, DERP_KEY_LEN, NULL, 0);
	relay_input(m, buf, len);
	EXPECT_EQ(CS_RUN, m->state);
	EXPECT_TRUE(atomic_load(&k1->close_requested));
	EXPECT_TRUE(atomic_load(&k2->close_requested));
	EXPECT_FALSE(atomic_load(&x->close_requested));
	EXPECT_FALSE(atomic_load(&m->close_requested));
	/* Their owners close them in their flush pass. */
	EXPECT_TRUE(k1->in_local_flush);
	EXPECT_EQ(k1, w0->flush);
	ASSERT_EQ(1, w1->nremote);
	EXPECT_EQ(k2, w1->remote[0]);
	EXPECT_EQ(CS_RUN, k1->state);
	EXPECT_EQ(CS_RUN, k2->state);

	/* An unknown key: nothing happens. */
	randombytes_buf(nobody, sizeof(nobody));
	len = put_frame(buf, DERP_FRAME_CLOSE_PEER, nobody, DERP_KEY_LEN, NULL, 0);
	relay_input(m, buf, len);
	EXPECT_EQ(CS_RUN, m->state);
	EXPECT_FALSE(atomic_load(&x->close_requested));
	EXPECT_EQ(0, w0->stats->c[CTR_PROTOCOL_ERRORS]);
}

/* Ping: one Pong echoing the first 8 bytes, at most one waiting (derper). */
TEST_F(engine, ping_pong)
{
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	uint8_t buf[BUF_MAX];
	const struct pkt *p;
	size_t len;

	len = put_frame(buf, DERP_FRAME_PING, "pingdata+extra", 14, NULL, 0);
	len += put_frame(buf + len, DERP_FRAME_PING, "another1", 8, NULL, 0);
	relay_input(a, buf, len);
	EXPECT_EQ(2, w->stats->c[CTR_GOT_PING]);
	ASSERT_EQ(1, a->nctl);
	p = a->ctl_head;
	EXPECT_EQ(PKT_PONG, p->kind);
	ASSERT_EQ(DERP_FRAME_HDR_LEN + DERP_PING_LEN, p->len);
	EXPECT_EQ(DERP_FRAME_PONG, p->data[0]);
	EXPECT_EQ(0, memcmp(p->data + DERP_FRAME_HDR_LEN, "pingdata", 8));
	EXPECT_TRUE(a->pong_queued);
}

static int64_t home_conns(struct server *s)
{
	struct server_snapshot snap;

	server_stats_snapshot(s, &snap);
	return snap.g.current_home_connections;
}

/*
 * NotePreferred moves the home-connections gauge (the owning worker's
 * share), once per change, and marks the state plane's record stale for
 * the tick instead of taking any lock.
 */
TEST_F(engine, note_preferred)
{
	struct server *s = &self->srv;
	struct conn *a = conn_add(_metadata, s, 0, NULL, false);
	uint8_t buf[BUF_MAX], one = 1, zero = 0;
	size_t len;

	len = put_frame(buf, DERP_FRAME_NOTE_PREFERRED, &one, 1, NULL, 0);
	len += put_frame(buf + len, DERP_FRAME_NOTE_PREFERRED, &one, 1, NULL, 0);
	relay_input(a, buf, len);
	EXPECT_TRUE(a->preferred);
	EXPECT_TRUE(a->state_dirty);
	EXPECT_EQ(1, home_conns(s));
	a->state_dirty = false;
	len = put_frame(buf, DERP_FRAME_NOTE_PREFERRED, &zero, 1, NULL, 0);
	relay_input(a, buf, len);
	EXPECT_FALSE(a->preferred);
	EXPECT_EQ(0, home_conns(s));
	a->state_dirty = false;
	relay_input(a, buf, len); /* again: no change */
	EXPECT_EQ(0, home_conns(s));
	EXPECT_FALSE(a->state_dirty);
	len = put_frame(buf, DERP_FRAME_NOTE_PREFERRED, &one, 1, NULL, 0);
	relay_input(a, buf, len);
	EXPECT_EQ(1, home_conns(s));
	conn_close(a, NULL);
	EXPECT_EQ(0, home_conns(s));
}

/* A closed destination refuses packets: counted as gone_disconnected. */
TEST_F(engine, enqueue_to_closed_dst)
{
	struct server *s = &self->srv;
	struct worker *w = &s->workers[0];
	struct conn *b = conn_add(_metadata, s, 0, NULL, false);
	struct pkt *p = pkt_new(DERP_RECV_OVERHEAD + PAYLOAD_LEN, PKT_DISCO);

	ASSERT_NE(NULL, p);
	conn_close(b, NULL);
	EXPECT_FALSE(conn_enqueue_packet(w, b, p));
	EXPECT_EQ(1, w->stats->drop_pkts[DROP_GONE_DISCONNECTED][KIND_DISCO]);
	EXPECT_EQ(PAYLOAD_LEN, w->stats->drop_bytes[DROP_GONE_DISCONNECTED][KIND_DISCO]);
	EXPECT_EQ(0, b->rcount[1]);
}

TEST_HARNESS_MAIN
