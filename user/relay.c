// SPDX-License-Identifier: MIT
/*
 * relay.c - the RUN state (relay.h): the frames of one read, in place.
 *
 * A batch holds the peer table's read lock across its lookups and caches
 * the last destination, so a burst to one peer costs one lookup. Each
 * packet is copied once, into a pkt on its destination's queue.
 */
#include <string.h>

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

/* One read batch: the last destination looked up (or that it is not here),
 * valid while the table's read lock is held. */
struct batch {
	uint8_t last_key[DERP_KEY_LEN];
	struct conn *last_dst;
	unsigned last_nconns;
	bool last_valid;
};

static void batch_forget(struct conn *c, struct batch *b)
{
	peers_batch_unlock(c->w);
	b->last_valid = false;
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

static struct conn *lookup_dst(struct conn *c, struct batch *b, const uint8_t *key,
			       unsigned *nconns)
{
	struct peer *p;

	if (b->last_valid && memcmp(b->last_key, key, DERP_KEY_LEN) == 0) {
		*nconns = b->last_nconns;
		return b->last_dst;
	}
	peers_batch_lock(c->w);
	p = peers_lookup(c->srv, key);
	*nconns = p ? p->nconns : 0;
	b->last_dst = p ? atomic_load(&p->active) : NULL;
	b->last_nconns = *nconns;
	memcpy(b->last_key, key, DERP_KEY_LEN);
	/* A miss is remembered too: a flood to a key that is not here costs
	 * one lookup per batch. */
	b->last_valid = true;
	/* Remember correspondents for PeerGone; most batches repeat the last one. */
	if (b->last_dst && memcmp(c->last_sent_to, key, DERP_KEY_LEN) != 0) {
		peers_note_sent(c, key);
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

static void count_received(struct conn *c, const struct derp_frame *f, bool disco)
{
	struct worker *w = c->w;

	if (f->type == DERP_FRAME_FORWARD_PACKET) {
		STAT_ADD(w->stats->c[CTR_PACKETS_FORWARDED_IN], 1);
		return;
	}
	STAT_ADD(w->stats->c[CTR_PACKETS_RECEIVED], 1);
	STAT_ADD(w->stats->c[CTR_BYTES_RECEIVED], f->data_len);
	STAT_ADD(c->st->pkts_in, 1);
	STAT_ADD(c->st->bytes_in, f->data_len);
	STAT_ADD(w->stats->c[disco ? CTR_PACKETS_RECEIVED_DISCO : CTR_PACKETS_RECEIVED_OTHER], 1);
}

/* No connection for the destination: count the drop; PeerGone(NotHere) for disco. */
static void drop_unknown(struct conn *c, const struct derp_frame *f, bool disco, unsigned nconns)
{
	struct worker *w = c->w;
	enum drop_reason r = nconns > 1		       ? DROP_DUP_CLIENT
		: f->type == DERP_FRAME_FORWARD_PACKET ? DROP_UNKNOWN_DEST_ON_FWD
						       : DROP_UNKNOWN_DEST;
	int k = disco ? KIND_DISCO : KIND_OTHER;

	STAT_ADD(w->stats->drop_pkts[r][k], 1);
	STAT_ADD(w->stats->drop_bytes[r][k], f->data_len);
	if (r != DROP_DUP_CLIENT && disco && nothere_allow(c)) {
		uint8_t pg[DERP_PEER_GONE_LEN];

		derp_peer_gone_payload(f->dst, DERP_PEER_GONE_NOT_HERE, pg);
		conn_queue_ctl(w, c,
			       frame_new(DERP_FRAME_PEER_GONE, pg, sizeof(pg), NULL, 0,
					 PKT_PEER_GONE_NOT_HERE));
	}
}

/*
 * The destination's copy: a SendPacket frame (at frame) becomes RecvPacket
 * in place, same length, new type and key; a ForwardPacket is re-framed.
 */
static struct pkt *recv_packet(struct conn *c, const struct derp_frame *f, uint8_t *frame,
			       uint8_t kind)
{
	struct pkt *p;

	if (f->type == DERP_FRAME_FORWARD_PACKET)
		return frame_new(DERP_FRAME_RECV_PACKET, f->src, DERP_KEY_LEN, f->data, f->data_len,
				 kind);
	frame[0] = DERP_FRAME_RECV_PACKET;
	memcpy(frame + DERP_FRAME_HDR_LEN, c->key, DERP_KEY_LEN);
	p = pkt_new(DERP_RECV_OVERHEAD + f->data_len, kind);
	if (p)
		memcpy(p->data, frame, DERP_RECV_OVERHEAD + f->data_len);
	return p;
}

/* Send or ForwardPacket. Returns false when the sender must pause (nothing consumed). */
static bool deliver(struct conn *c, struct batch *b, const struct derp_frame *f, uint8_t *frame)
{
	bool disco = derp_is_disco(f->data, f->data_len);
	uint8_t kind = disco ? PKT_DISCO : PKT_OTHER;
	unsigned nconns = 0;
	struct conn *dst = lookup_dst(c, b, f->dst, &nconns);
	struct pkt *p;

	if (dst && need_pause(c, b, dst, disco ? 1 : 0))
		return false;
	count_received(c, f, disco);
	if (!dst) {
		drop_unknown(c, f, disco, nconns);
		return true;
	}
	p = recv_packet(c, f, frame, kind);
	if (!p) {
		STAT_ADD(c->w->stats->drop_pkts[DROP_QUEUE_TAIL][disco ? KIND_DISCO : KIND_OTHER],
			 1);
		return true;
	}
	conn_enqueue_packet(c->w, dst, p);
	return true;
}

static void close_peer(struct conn *c, const uint8_t *key)
{
	char kh[16];

	peers_batch_lock(c->w);
	if (!peers_request_close(c->srv, c->w, key))
		log_info("conn %llu: ClosePeer for unknown key %s", (unsigned long long)c->id,
			 key_short(key, kh));
}

/* One complete frame (header checked). Returns false if it was not consumed. */
static bool handle_frame(struct conn *c, struct batch *b, uint8_t *frame, uint32_t len)
{
	struct worker *w = c->w;
	struct derp_frame f;

	if (unlikely(c->is_dup))
		peers_note_activity(c);
	if (derp_frame_decode(frame[0], frame + DERP_FRAME_HDR_LEN, len, &f) < 0)
		return true; /* cannot happen after derp_check_header */
	switch (f.type) {
	case DERP_FRAME_SEND_PACKET:
	case DERP_FRAME_FORWARD_PACKET:
		return deliver(c, b, &f, frame);
	case DERP_FRAME_PING:
		STAT_ADD(w->stats->c[CTR_GOT_PING], 1);
		if (!c->pong_queued) {
			c->pong_queued = true;
			conn_queue_ctl(
				w, c,
				frame_new(DERP_FRAME_PONG, f.data, f.data_len, NULL, 0, PKT_PONG));
		}
		break;
	case DERP_FRAME_NOTE_PREFERRED:
		peers_set_preferred(c, f.preferred);
		break;
	case DERP_FRAME_WATCH_CONNS:
		batch_forget(c, b);
		peers_add_watcher(c->srv, c);
		break;
	case DERP_FRAME_CLOSE_PEER:
		close_peer(c, f.key);
		break;
	default:
		/* Unknown types (and a client's Pong) are skipped, as derper does;
		 * unlike derper, derp_unknown_frames counts them. */
		STAT_ADD(w->stats->c[CTR_UNKNOWN_FRAMES], 1);
		break;
	}
	return true;
}

/* Discard what is left of a skipped frame; returns the bytes consumed. */
static size_t skip_bytes(struct conn *c, size_t len)
{
	size_t n = c->skip < len ? c->skip : len;

	c->skip -= n;
	return n;
}

/* The header at buf claims more than has arrived: an unknown type is skipped
 * as it streams in (returns true, everything consumed). */
static bool skip_incomplete(struct conn *c, uint8_t type, uint32_t flen, size_t avail)
{
	if (derp_frame_is_handled(type))
		return false;
	c->skip = (uint64_t)flen + DERP_FRAME_HDR_LEN - avail;
	STAT_ADD(c->w->stats->c[CTR_UNKNOWN_FRAMES], 1);
	return true;
}

/* Size the next read after this batch's frames (RELAY_FRAME_BUDGET). */
static void note_batch(struct conn *c, size_t bytes, unsigned frames)
{
	uint64_t cap;

	if (!frames)
		return;
	cap = (uint64_t)bytes / frames * RELAY_FRAME_BUDGET;
	c->read_cap = cap < RELAY_READ_MIN ? RELAY_READ_MIN : cap > UINT32_MAX ? UINT32_MAX : cap;
}

void relay_input(struct conn *c, uint8_t *buf, size_t len)
{
	struct batch b = {0};
	size_t off = c->skip ? skip_bytes(c, len) : 0, start = off;
	unsigned frames = 0;

	while (c->state == CS_RUN) {
		uint8_t type;
		uint32_t flen;
		const char *bad;

		if (!derp_frame_header(buf + off, len - off, &type, &flen))
			break;
		bad = derp_check_header(DERP_PHASE_RUN, c->can_mesh, type, flen);
		if (bad) {
			conn_protocol_error(c, bad);
			return;
		}
		if ((uint64_t)flen + DERP_FRAME_HDR_LEN > len - off) {
			if (skip_incomplete(c, type, flen, len - off))
				off = len;
			break;
		}
		if (!handle_frame(c, &b, buf + off, flen)) {
			/* Come back next iteration, after the destination's owner ran. */
			c->paused = true;
			conn_reread_push(c, true);
			break;
		}
		off += DERP_FRAME_HDR_LEN + flen;
		frames++;
	}
	note_batch(c, off - start, frames);
	peers_batch_unlock(c->w);
	if (c->state == CS_RUN)
		conn_store_carry(c, buf + off, len - off);
}
