/* SPDX-License-Identifier: MIT */
/*
 * pkt.h - one frame (or HTTP response) waiting to be written to a client.
 * A pkt is owned by exactly one queue at a time; the relay copies each
 * packet once, into a pkt for its destination.
 */
#ifndef KDERP_PKT_H
#define KDERP_PKT_H

#include <stdint.h>

enum pkt_kind {
	PKT_OTHER = 0, /* RecvPacket, non-disco (queue 0) */
	PKT_DISCO = 1, /* RecvPacket, disco (queue 1) */
	PKT_CTL, /* any control frame: ServerKey, ServerInfo, KeepAlive, PeerGone... */
	PKT_PONG,
	PKT_PEER_GONE_DISC,
	PKT_PEER_GONE_NOT_HERE,
	PKT_RAW, /* HTTP response bytes */
};

struct pkt {
	struct pkt *next; /* control list linkage */
	uint64_t enq_ns;
	uint32_t len;
	uint8_t kind;
	uint8_t data[];
};

/* A pkt of len bytes (uninitialised data), or NULL. */
struct pkt *pkt_new(uint32_t len, uint8_t kind);
void pkt_free(struct pkt *p);

/* A whole frame: header, then a (alen bytes) and b (blen bytes). NULL on OOM. */
struct pkt *frame_new(uint8_t type, const void *a, uint32_t alen, const void *b, uint32_t blen,
		      uint8_t kind);

/* A whole HTTP response with a short text/plain body (PKT_RAW), or NULL. */
struct pkt *pkt_http_text(int status, const char *reason, const char *body);

/* A pkt holding a copy of n bytes (a whole frame or HTTP response), or NULL. */
struct pkt *pkt_copy(const void *bytes, uint32_t n, uint8_t kind);

#endif /* KDERP_PKT_H */
