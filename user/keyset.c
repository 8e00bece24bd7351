// SPDX-License-Identifier: MIT
/* keyset.c - a set of public keys with linear probing (keyset.h). */
#include <stdlib.h>
#include <string.h>

#include "keyset.h"

static bool grow(struct keyset *ks)
{
	uint32_t ncap = ks->cap ? ks->cap * 2 : 8;
	uint8_t(*nk)[DERP_KEY_LEN] = calloc(ncap, DERP_KEY_LEN);
	uint8_t(*old)[DERP_KEY_LEN] = ks->keys;
	uint32_t oldcap = ks->cap;

	if (!nk)
		return false;
	ks->keys = nk;
	ks->cap = ncap;
	ks->n = 0;
	for (uint32_t j = 0; j < oldcap; j++)
		if (!keyset_slot_empty(old[j]))
			keyset_add(ks, old[j]);
	free(old);
	return true;
}

bool keyset_add(struct keyset *ks, const uint8_t key[DERP_KEY_LEN])
{
	uint32_t mask, i;

	if ((ks->n + 1) * 2 > ks->cap && !grow(ks))
		return false;
	mask = ks->cap - 1;
	for (i = key_hash(key) & mask; !keyset_slot_empty(ks->keys[i]); i = (i + 1) & mask)
		if (memcmp(ks->keys[i], key, DERP_KEY_LEN) == 0)
			return false;
	memcpy(ks->keys[i], key, DERP_KEY_LEN);
	ks->n++;
	return true;
}

void keyset_free(struct keyset *ks)
{
	free(ks->keys);
	memset(ks, 0, sizeof(*ks));
}
