/* SPDX-License-Identifier: MIT */
/*
 * queue.h - a connection's bounded queues: two drop-oldest rings of QDEPTH
 * packets (other, disco) and a control list of at most CTL_MAX frames,
 * filled by any worker under the connection's qlock; the in-flight array
 * its owner writes from; and the flush requests that tell the owner to
 * write. Engine only.
 */
#ifndef KDERP_QUEUE_H
#define KDERP_QUEUE_H

#include <stdbool.h>

#include "stats.h"

struct conn;
struct pkt;
struct worker;

/* Ask dst's owner to flush it; cheap when a flush is already pending.
 * from is the calling worker, NULL from other threads. */
void worker_wake_flush(struct worker *from, struct conn *dst);

/* Queue a control frame. Takes ownership of p (NULL ok: nothing queued).
 * w is the calling worker, NULL from other threads (the owner's tick then
 * notices). Dropped and counted past CTL_MAX or on a closed connection. */
void conn_queue_ctl(struct worker *w, struct conn *c, struct pkt *p);

/* Queue a RecvPacket for dst with derper's drop-oldest policy. Takes
 * ownership of p. false if dst is closed (p dropped and counted). */
bool conn_enqueue_packet(struct worker *w, struct conn *dst, struct pkt *p);

/* Owner: move queued frames into the in-flight array, control first. */
void queue_refill_inflight(struct conn *c);

/* Owner, at close: refuse further enqueues and drop (counting) all that waits. */
void queue_free_all(struct conn *c);

/* Count one dropped packet of p's kind for reason r (dst: also per peer). */
void queue_count_drop(struct worker *w, struct conn *dst, const struct pkt *p, enum drop_reason r);

#endif /* KDERP_QUEUE_H */
