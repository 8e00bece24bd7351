/* SPDX-License-Identifier: MIT */
/*
 * statemap.h - where kderpd's counters and peer records live. The relay
 * updates counters through plain pointers (w->stats, c->st), so backing them
 * with memory-mapped BPF maps costs no syscall per packet. Without BPF the
 * same pointers point into ordinary memory. Documentation/bpf-abi.md.
 */
#ifndef KDERP_STATEMAP_H
#define KDERP_STATEMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "kderp_abi.h"

struct server;
struct worker;
struct conn;

/*
 * Before the workers start: set every w->stats, load and pin the maps (or
 * fall back to memory, logged), start the control socket. 0, -EEXIST when a
 * live kderpd owns the pin directory (logged), or another -errno (fatal).
 */
int statemap_init(struct server *s);
/* After registration (c->st set), on NotePreferred, and before the close. */
void statemap_conn_open(struct conn *c);
void statemap_conn_update(struct conn *c);
void statemap_conn_close(struct conn *c);
/* After the workers stopped: unpin, unmap, stop the control socket. */
void statemap_fini(struct server *s);

/* True when the counters live in pinned BPF maps. */
bool statemap_bpf_active(void);
/* The pin directory in use ("" when none). */
const char *statemap_dir(void);
/* Counters of connections that are gone (slot KDERP_SLOT_CLOSED), or NULL. */
const struct kderp_peer_stats *statemap_closed_totals(void);
/* Start time of a process (/proc/PID/stat field 22), 0 if unknown. */
uint64_t statemap_proc_start(pid_t pid);

#endif
