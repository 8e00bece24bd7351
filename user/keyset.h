/* SPDX-License-Identifier: MIT */
/*
 * keyset.h - a small open-addressing set of 32-byte public keys (the keys a
 * client has sent packets to, for PeerGone on its disconnect), and the key
 * hash the peer table uses too.
 */
#ifndef KDERP_KEYSET_H
#define KDERP_KEYSET_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "derp_wire.h"

struct keyset {
	uint8_t (*keys)[DERP_KEY_LEN]; /* cap slots; an all-zero slot is empty */
	uint32_t n, cap;
};

/* Public keys are uniformly random points: their bytes are a hash. */
static inline uint32_t key_hash(const uint8_t *key)
{
	uint32_t h;

	memcpy(&h, key + 3, sizeof(h));
	return h;
}

/* Add key; false if it was there already or memory ran out. */
bool keyset_add(struct keyset *ks, const uint8_t key[DERP_KEY_LEN]);
void keyset_free(struct keyset *ks);

static inline bool keyset_slot_empty(const uint8_t *slot)
{
	static const uint8_t zero[DERP_KEY_LEN];

	/* Keys are public: no constant-time compare needed. */
	return memcmp(slot, zero, DERP_KEY_LEN) == 0;
}

#endif /* KDERP_KEYSET_H */
