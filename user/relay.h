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
 * Handle every complete frame in buf (rewritten in place) and keep the
 * incomplete tail as c's carry. A sender whose destination is busy is
 * paused: its unparsed bytes stay in the carry and it is resumed next loop.
 */
void relay_input(struct conn *c, uint8_t *buf, size_t len);

#endif /* KDERP_RELAY_H */
