/* SPDX-License-Identifier: MIT */
/*
 * bpffs.h - can this test pin BPF maps? Part of libselftest.a.
 */
#ifndef KDERP_SELFTESTS_BPFFS_H
#define KDERP_SELFTESTS_BPFFS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True if the test runs as root and a bpffs is mounted at /sys/fs/bpf;
 * otherwise false, with the reason (for SKIP) in why.
 */
bool have_bpffs(char *why, size_t len);

#endif /* KDERP_SELFTESTS_BPFFS_H */
