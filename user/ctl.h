/* SPDX-License-Identifier: MIT */
/*
 * ctl.h - kderpd's control socket for kderpctl (close-peer). The protocol is
 * in include/kderp_abi.h (KDERP_CTL_PREFIX).
 */
#ifndef KDERP_CTL_H
#define KDERP_CTL_H

struct server;

/* Listen on the abstract socket for @dir and serve it from a thread. 0 or -errno. */
int ctl_start(struct server *s, const char *dir);
/* Stop the thread and close the socket; safe when not started. */
void ctl_stop(void);

#endif
