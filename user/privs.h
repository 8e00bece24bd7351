/* SPDX-License-Identifier: MIT */
/*
 * privs.h - kderpd gives up what it no longer needs once it has bound its
 * ports, loaded and pinned its BPF objects and opened the control socket:
 * root becomes --user (default: the system user "kderp" when it exists),
 * every capability the running daemon does not use goes, from the bounding
 * set too, and no_new_privs is set. Documentation/operations.md lists what
 * is kept and why.
 */
#ifndef KDERP_PRIVS_H
#define KDERP_PRIVS_H

#include <stdbool.h>
#include <sys/types.h>

#define PRIVS_DEFAULT_USER "kderp"

struct privs_target {
	bool change; /* become uid/gid (otherwise keep the current ids) */
	uid_t uid;
	gid_t gid;
	char name[64];
};

/*
 * What --user asks for. user NULL or "": PRIVS_DEFAULT_USER if it exists,
 * else stay (one warning when running as root). A named user that does not
 * exist, or one that is not us when we are not root, is an error. 0 or -1
 * (logged).
 */
int privs_resolve(const char *user, struct privs_target *t);

/*
 * Become t's user with only the capabilities the running daemon needs
 * (bpf_ops: it calls bpf() on map and program fds it holds; that needs
 * CAP_BPF only where the kernel gates every bpf() call on
 * kernel.unprivileged_bpf_disabled, which is probed, not guessed), then set
 * no_new_privs, and check the result. Call with one thread only: ids and
 * capabilities are per thread. 0 or -1 (logged); on -1 the process must
 * not go on.
 */
int privs_drop(const struct privs_target *t, bool bpf_ops);

#endif /* KDERP_PRIVS_H */
