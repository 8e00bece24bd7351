/* SPDX-License-Identifier: MIT */
/*
 * relay.h - the RUN state: frames parsed in place from one large read,
 * SendPacket rewritten to RecvPacket and queued at its destination, the
 * control frames acted on. Engine only.
 */
#ifndef KDERP_RELAY_H
#define KDERP_RELAY_H

#include <stddef.h>
#include <stdint.h>

struct conn;

/*
 * Reads are sized so that one holds about this many frames of the sizes the
 * client sent last: a client flooding tiny frames gets small reads, so the
 * others on its worker wait microseconds, not a 256 KiB batch, for their turn.
 */
#define RELAY_FRAME_BUDGET 1024
#define RELAY_READ_MIN 4096

/*
 * Handle every complete frame in buf (rewritten in place) and keep the
 * incomplete tail as c's carry. A sender whose destination is busy is
 * paused: its unparsed bytes stay in the carry and it is resumed next loop.
 */
void relay_input(struct conn *c, uint8_t *buf, size_t len);

#endif /* KDERP_RELAY_H */
