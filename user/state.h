/* SPDX-License-Identifier: MIT */
/*
 * state.h - the state plane (the user side of kern/state.bpf.c): where
 * kderpd's counters and peer records live. The relay updates counters
 * through plain pointers, so backing them with memory-mapped BPF maps costs
 * no syscall per packet; without BPF the same counters live in ordinary
 * memory. Documentation/bpf-abi.md.
 */
#ifndef KDERP_STATE_H
#define KDERP_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kderp_abi.h"

#define KDERP_STATE_DEFAULT_DIR KDERP_PIN_DIR_DEFAULT

struct kderp_state;
struct server;
struct server_hooks;

/*
 * Load and pin the maps in bpffs_dir for nworkers worker rows, or fall back
 * to memory (one line logged) when BPF is not to be had or bpffs_dir is
 * empty. NULL with *err = -EEXIST when a live kderpd owns the directory
 * (logged), or another -errno (fatal).
 */
struct kderp_state *kderp_state_open(const char *bpffs_dir, int nworkers, int *err);

/* The memory-mapped worker rows for workers_set_stats(), or NULL (memory). */
struct kderp_worker_stats *kderp_state_rows(const struct kderp_state *st);

/* Register the slot and peer-record hooks; peer records are read back from srv. */
void kderp_state_hooks(struct kderp_state *st, struct server *srv, struct server_hooks *h);

/* True when the counters live in pinned BPF maps. */
bool kderp_state_bpf(const struct kderp_state *st);
/* The pin directory in use ("" when none). */
const char *kderp_state_dir(const struct kderp_state *st);
/* Counters of connections that are gone (slot KDERP_SLOT_CLOSED), or NULL. */
const struct kderp_peer_stats *kderp_state_closed_totals(const struct kderp_state *st);

/* The /debug/varz section (web_varz_fn): kderp_state_bpf, kderp_closed_conns_*. */
int kderp_state_varz(const void *st, char *buf, size_t len);

/*
 * Hand the pin directory to the user kderpd is about to become, so that it
 * can still remove its pins on a clean exit. 0 (also when nothing is
 * pinned) or -errno.
 */
int kderp_state_chown(struct kderp_state *st, uid_t uid, gid_t gid);

/* After workers_stop and workers_set_stats(NULL): unpin, unmap, free. NULL ok. */
void kderp_state_close(struct kderp_state *st);

#endif /* KDERP_STATE_H */
