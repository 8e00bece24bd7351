/* SPDX-License-Identifier: MIT */
/*
 * ctl.h - kderpd's control socket for kderpctl (close-peer). Where it lives
 * and the protocol are in include/kderp_abi.h (KDERP_CTL_RUNDIR).
 */
#ifndef KDERP_CTL_H
#define KDERP_CTL_H

#include <stdint.h>

struct kderp_ctl;

/* close-peer KEY: close every connection of key; returns how many. */
typedef int (*kderp_ctl_close_fn)(void *arg, const uint8_t key[32]);

/*
 * Bind and listen on the unix socket at path (mode 0600; its directory,
 * created 0700 when missing, must be writable only by root or this user),
 * holding path + ".lock" so that no other daemon shares it. Every failure is
 * logged, naming the path: NULL with *err = -errno (-EADDRINUSE: another
 * live kderpd has it). No thread yet: kderp_ctl_run starts serving.
 */
struct kderp_ctl *kderp_ctl_open(const char *path, kderp_ctl_close_fn close_peer, void *arg,
				 int *err);
/*
 * Remove the sockets named after a pid (ctl-PID.sock) in dir whose daemons
 * are gone (their lock is free): a daemon that dropped privileges cannot
 * remove its own, and each has its own name.
 */
void kderp_ctl_sweep(const char *dir);
/* Serve requests from a thread. 0 or -errno. */
int kderp_ctl_run(struct kderp_ctl *ctl);
/* The socket's path. */
const char *kderp_ctl_path(const struct kderp_ctl *ctl);
/* Stop the thread (if running), close and remove the socket; NULL ok. */
void kderp_ctl_stop(struct kderp_ctl *ctl);

#endif /* KDERP_CTL_H */
