// SPDX-License-Identifier: MIT
/*
 * bpffs.c - can this test pin BPF maps? (see bpffs.h)
 */
#include <linux/magic.h>
#include <stdio.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "bpffs.h"

bool have_bpffs(char *why, size_t len)
{
	struct statfs sfs;

	if (geteuid() != 0) {
		snprintf(why, len, "needs root for BPF maps");
		return false;
	}
	if (statfs("/sys/fs/bpf", &sfs) || sfs.f_type != BPF_FS_MAGIC) {
		snprintf(why, len, "no bpffs mounted at /sys/fs/bpf");
		return false;
	}
	return true;
}
