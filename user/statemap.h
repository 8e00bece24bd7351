/* SPDX-License-Identifier: MIT */
/*
 * statemap.h - where kderpd's counters and peer records live. The relay
 * updates counters through plain pointers (w->stats, c->st), so backing them
 * with memory-mapped BPF maps costs no syscall per packet. Without BPF the
 * same pointers point into ordinary memory.
 */
#ifndef KDERP_STATEMAP_H
#define KDERP_STATEMAP_H

struct server;
struct worker;
struct conn;

/* Before the workers start: set every w->stats. 0 or -errno (fatal). */
int statemap_init(struct server *s);
/* After registration (c->st set), on NotePreferred, and before the close. */
void statemap_conn_open(struct conn *c);
void statemap_conn_update(struct conn *c);
void statemap_conn_close(struct conn *c);
/* After the workers stopped. */
void statemap_fini(struct server *s);

#endif
