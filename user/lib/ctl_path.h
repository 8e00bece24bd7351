/* SPDX-License-Identifier: MIT */
/*
 * ctl_path.h - where kderpd's control socket lives by default, one copy of
 * the rule for the daemon and kderpctl (include/kderp_abi.h describes it).
 */
#ifndef KDERP_CTL_PATH_H
#define KDERP_CTL_PATH_H

#include <stddef.h>
#include <sys/types.h>

/*
 * The directory of control sockets: $RUNTIME_DIRECTORY (its first entry)
 * when set, else KDERP_CTL_RUNDIR for root, else $XDG_RUNTIME_DIR/kderpd,
 * else /tmp/kderpd-UID. 0 or -ENAMETOOLONG.
 */
int ctl_rundir(char *out, size_t len);

/*
 * The default control socket of the daemon whose maps are pinned in pin_dir
 * (as kderpd uses it: KDERP_BPFFS_BASE applied, no trailing slash):
 * <rundir>/KDERP_CTL_NAME for KDERP_PIN_DIR_DEFAULT,
 * <rundir>/ctl-<pin_dir escaped>.sock for another, and
 * <rundir>/ctl-<pid>.sock for "" (nothing pinned). out must hold a
 * sockaddr_un path: 0, or -ENAMETOOLONG when the result does not fit
 * (then --ctl must name one).
 */
int ctl_default_path(const char *pin_dir, pid_t pid, char *out, size_t len);

#endif /* KDERP_CTL_PATH_H */
