/* SPDX-License-Identifier: MIT */
/*
 * ctl.h - kderpd's control socket for kderpctl (close-peer). The protocol is
 * in include/kderp_abi.h (KDERP_CTL_PREFIX).
 */
#ifndef KDERP_CTL_H
#define KDERP_CTL_H

#include <stdint.h>

struct kderp_ctl;

/* close-peer KEY: close every connection of key; returns how many. */
typedef int (*kderp_ctl_close_fn)(void *arg, const uint8_t key[32]);

/* Listen on the abstract socket for dir and serve it from a thread. NULL
 * with *err = -errno on failure. */
struct kderp_ctl *kderp_ctl_start(const char *dir, kderp_ctl_close_fn close_peer, void *arg,
				  int *err);
/* Stop the thread and close the socket; NULL ok. */
void kderp_ctl_stop(struct kderp_ctl *ctl);

#endif /* KDERP_CTL_H */
