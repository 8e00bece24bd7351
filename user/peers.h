/* SPDX-License-Identifier: MIT */
/*
 * peers.h - the peer table (key -> struct peer) and derper's registration
 * rules: duplicate keys (newest connection active, last writer wins),
 * watchers and PeerPresent/PeerGone, gauges, and the state-plane hooks of a
 * connection's life. Engine only.
 */
#ifndef KDERP_PEERS_H
#define KDERP_PEERS_H

#include <stdbool.h>
#include <stdint.h>

#include "derp_wire.h"

struct conn;
struct keyset;
struct peer;
struct server;
struct worker;

/* Caller holds the table lock (read or write). */
struct peer *peers_lookup(struct server *s, const uint8_t key[DERP_KEY_LEN]);

/* A worker's batch of frames holds the read lock across lookups. */
void peers_batch_lock(struct worker *w);
void peers_batch_unlock(struct worker *w);

/* After ServerInfo is queued: make c's key reachable. 0 or -ENOMEM. */
int peers_register(struct server *s, struct conn *c);
/*
 * Remove c. Returns true if it was the key's last connection; then
 * PeerGone goes to the watchers here, and *gone_to takes the keys the key
 * delivered to (for peers_notify_gone; the caller frees it).
 */
bool peers_unregister(struct server *s, struct conn *c, struct keyset *gone_to);
/* c delivered a packet to key (its owner, while c is registered). */
void peers_note_sent(struct conn *c, const uint8_t key[DERP_KEY_LEN]);
/* Any frame from a duplicate makes it the active one (lastWriterIsActive). */
void peers_note_activity(struct conn *c);
/* WatchConns: PeerPresent for every current key, then enrol. */
void peers_add_watcher(struct server *s, struct conn *c);
/* NotePreferred (owner only, lock-free; the state plane hears of it on the tick). */
void peers_set_preferred(struct conn *c, bool pref);
/* PeerGone(disconnected) for key to the active connection of every key in
 * to, unless key came back. w: the calling worker. */
void peers_notify_gone(struct server *s, struct worker *w, const uint8_t key[DERP_KEY_LEN],
		       const struct keyset *to);
/* ClosePeer (mesh) and kderpctl close-peer: mark every connection of key
 * and wake its owner. Returns how many. from: calling worker or NULL. */
int peers_request_close(struct server *s, struct worker *from, const uint8_t key[DERP_KEY_LEN]);

/* The state plane (server_hooks): a counter slot and the key's record. */
void peers_state_open(struct conn *c);
void peers_state_changed(struct conn *c);
void peers_state_close(struct conn *c);

#endif /* KDERP_PEERS_H */
