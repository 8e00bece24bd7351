/* SPDX-License-Identifier: MIT */
/*
 * stun_xdp.h - the XDP STUN responder (the user side of
 * kern/stun_xdp.bpf.c): load, attach to interfaces, keep it attached as
 * interfaces come and go, read its counters. stun_xdp.c is the only user
 * file that includes stun_xdp.skel.h.
 */
#ifndef KDERP_STUN_XDP_H
#define KDERP_STUN_XDP_H

#include <stdbool.h>
#include <stddef.h>

#include "kderp_abi.h"

struct kderp_xdp;

/*
 * Load and attach the XDP STUN program to the comma-separated interfaces
 * ("auto" = the interfaces holding the listen address, or the default-route
 * interfaces when the listen address is empty or a wildcard). A name may end
 * in ":native" or ":generic" to force a mode; otherwise native mode is used
 * where the driver has it, generic otherwise (logged). Interfaces that go away
 * and come back are re-attached. NULL + errno when it cannot (no privilege,
 * no support, no interface): the caller logs one line and relies on
 * userspace STUN.
 */
struct kderp_xdp *kderp_xdp_attach(const char *ifaces, const char *listen_host, int port);

/*
 * kderp_xdp_attach in two steps, for a daemon that drops privileges in
 * between: open loads and attaches (NULL + errno) and starts no thread;
 * watch starts the thread that re-attaches (0, or -errno logged: then
 * interfaces that come back are not re-attached).
 */
struct kderp_xdp *kderp_xdp_open(const char *ifaces, const char *listen_host, int port);
int kderp_xdp_watch(struct kderp_xdp *x);

/* Detach from every interface and unload; NULL ok. */
void kderp_xdp_detach(struct kderp_xdp *x);

/*
 * xdp_stun_server_packets_total / _bytes_total with derper's labels
 * (address_family, prog_end, xdp_outcome), one sample per combination seen
 * so far. Returns the full length like snprintf; x may be NULL (TYPE lines
 * only).
 */
int kderp_xdp_varz(const struct kderp_xdp *x, char *buf, size_t len);

/* derper's drop-STUN switch: drop instead of answering. 0 or -errno. */
int kderp_xdp_set_drop(struct kderp_xdp *x, bool drop);

/* ---- for tests and tools ------------------------------------------------ */

/* Load and configure for UDP @port without attaching anywhere. */
struct kderp_xdp *kderp_xdp_load(int port);

/* The program's fd (for BPF_PROG_TEST_RUN), or -EINVAL. */
int kderp_xdp_prog_fd(const struct kderp_xdp *x);

/* Sum the per-CPU counters into @out[KDERP_STUN_NR_COUNTERS]. 0 or -errno. */
int kderp_xdp_read_counters(const struct kderp_xdp *x, struct kderp_stun_counter *out);

/* "native", "generic", or NULL when @ifname is not attached right now. */
const char *kderp_xdp_mode(struct kderp_xdp *x, const char *ifname);

/* Label values used in varz for the ABI enums (NULL when out of range). */
const char *kderp_xdp_af_name(unsigned int af);
const char *kderp_xdp_outcome_name(unsigned int outcome);
const char *kderp_xdp_end_name(unsigned int end);

#endif /* KDERP_STUN_XDP_H */
