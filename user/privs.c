// SPDX-License-Identifier: MIT
/*
 * privs.c - dropping privileges after start-up (privs.h).
 *
 * Raw capget/capset and prctl, no library: the sets are small and the
 * order matters. The bounding set goes first (that needs CAP_SETPCAP), then
 * the ids (PR_SET_KEEPCAPS keeps the permitted set across setresuid), then
 * the capability sets themselves, then no_new_privs; the result is read
 * back and checked. All of it acts on the calling thread only, hence the
 * one-thread rule.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/capability.h>

#include "log.h"
#include "privs.h"
#include "util.h"

#define CAP_BIT(c) (1ULL << (c))

struct caps {
	uint64_t eff, prm, inh;
};

static int caps_get(struct caps *c)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2];

	if (syscall(SYS_capget, &h, d))
		return -errno;
	c->eff = d[0].effective | (uint64_t)d[1].effective << 32;
	c->prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
	c->inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
	return 0;
}

static int caps_set(const struct caps *c)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {
		{(uint32_t)c->eff, (uint32_t)c->prm, (uint32_t)c->inh},
		{(uint32_t)(c->eff >> 32), (uint32_t)(c->prm >> 32), (uint32_t)(c->inh >> 32)},
	};

	return syscall(SYS_capset, &h, d) ? -errno : 0;
}

/* The highest capability this kernel knows. */
static int last_cap(void)
{
	char *s = read_file("/proc/sys/kernel/cap_last_cap", 32, NULL);
	int last = s ? atoi(s) : 0;

	free(s);
	if (last > 0 && last < 64)
		return last;
	for (last = 0; last < 63 && prctl(PR_CAPBSET_READ, last + 1, 0, 0, 0) >= 0; last++)
		;
	return last;
}

static int nthreads(void)
{
	return (int)dir_entries("/proc/self/task");
}

/*
 * Does this kernel refuse bpf() on fds we hold without CAP_BPF (older
 * kernels with kernel.unprivileged_bpf_disabled set)? Asked with both
 * CAP_BPF and CAP_SYS_ADMIN out of the effective set for the moment: a
 * lookup on fd -1 fails with EPERM where the gate is, EBADF where not.
 */
static bool bpf_gated(const struct caps *now)
{
	struct caps low = *now;
	union bpf_attr a;
	long r;
	int e;

	low.eff &= ~(CAP_BIT(CAP_SYS_ADMIN) | CAP_BIT(CAP_BPF));
	if (caps_set(&low))
		return true; /* cannot tell: keep what it may need */
	memset(&a, 0, sizeof(a));
	a.map_fd = (__u32)-1;
	r = syscall(__NR_bpf, BPF_MAP_LOOKUP_ELEM, &a, sizeof(a));
	e = errno;
	caps_set(now);
	return r < 0 && e == EPERM;
}

static const char *const cap_names[] = {
	"chown",
	"dac_override",
	"dac_read_search",
	"fowner",
	"fsetid",
	"kill",
	"setgid",
	"setuid",
	"setpcap",
	"linux_immutable",
	"net_bind_service",
	"net_broadcast",
	"net_admin",
	"net_raw",
	"ipc_lock",
	"ipc_owner",
	"sys_module",
	"sys_rawio",
	"sys_chroot",
	"sys_ptrace",
	"sys_pacct",
	"sys_admin",
	"sys_boot",
	"sys_nice",
	"sys_resource",
	"sys_time",
	"sys_tty_config",
	"mknod",
	"lease",
	"audit_write",
	"audit_control",
	"setfcap",
	"mac_override",
	"mac_admin",
	"syslog",
	"wake_alarm",
	"block_suspend",
	"audit_read",
	"perfmon",
	"bpf",
	"checkpoint_restore",
};

/* "none", or "cap_bpf,cap_net_admin" (the names capsh and /proc use). */
static void cap_list(uint64_t mask, char *out, size_t len)
{
	size_t off = 0;

	out[0] = 0;
	for (int c = 0; c < 64; c++) {
		if (!(mask & CAP_BIT(c)))
			continue;
		if (c < (int)ARRAY_SIZE(cap_names))
			appendf(out, len, &off, "%scap_%s", off ? "," : "", cap_names[c]);
		else
			appendf(out, len, &off, "%scap_%d", off ? "," : "", c);
	}
	if (!off)
		snprintf(out, len, "none");
}

int privs_resolve(const char *user, struct privs_target *t)
{
	bool dflt = !user || !*user;
	const char *name = dflt ? PRIVS_DEFAULT_USER : user;
	struct passwd *pw;

	memset(t, 0, sizeof(*t));
	errno = 0;
	pw = getpwnam(name);
	if (!pw) {
		if (!dflt) {
			log_err("--user %s: %s", name, errno ? strerror(errno) : "no such user");
			return -1;
		}
		if (geteuid() == 0)
			log_warn("no user \"%s\": kderpd stays root, with only the capabilities it "
				 "needs; create it (useradd --system --no-create-home --shell "
				 "/usr/sbin/nologin %s) or pass --user=NAME",
				 name, name);
		return 0;
	}
	if (pw->pw_uid == geteuid() || (dflt && geteuid() != 0))
		return 0; /* already that user, or not root: nothing to become */
	if (geteuid() != 0) {
		log_err("--user %s: only root may change user (kderpd runs as uid %u)", name,
			(unsigned)geteuid());
		return -1;
	}
	t->change = true;
	t->uid = pw->pw_uid;
	t->gid = pw->pw_gid;
	snprintf(t->name, sizeof(t->name), "%s", name);
	return 0;
}

static int fail(const char *what, int err)
{
	log_err("dropping privileges: %s: %s", what, strerror(err));
	return -1;
}

int privs_drop(const struct privs_target *t, bool bpf_ops)
{
	struct caps now, want = {0};
	int last = last_cap(), n = nthreads();
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	char names[256];
	uint64_t keep = 0;

	/* n < 0: no /proc to count them; main.c starts none before this anyway */
	if (n > 1) {
		log_err("dropping privileges: %d threads run already; ids and capabilities are "
			"per thread, so this must happen before any starts",
			n);
		return -1;
	}
	if (caps_get(&now))
		return fail("capget", errno);
	if (bpf_ops && bpf_gated(&now))
		keep |= CAP_BIT(last >= CAP_BPF ? CAP_BPF : CAP_SYS_ADMIN);
	keep &= now.prm;

	/* The bounding set, while CAP_SETPCAP is still ours (else there is none to drop). */
	if (now.eff & CAP_BIT(CAP_SETPCAP))
		for (int c = 0; c <= last; c++)
			if (!(keep & CAP_BIT(c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) &&
			    errno != EINVAL)
				return fail("PR_CAPBSET_DROP", errno);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) && errno != EINVAL)
		return fail("clearing ambient capabilities", errno);
	if (t->change) {
		if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
			return fail("PR_SET_KEEPCAPS", errno);
		if (setgroups(0, NULL))
			return fail("setgroups", errno);
		if (setresgid(t->gid, t->gid, t->gid))
			return fail("setresgid", errno);
		if (setresuid(t->uid, t->uid, t->uid))
			return fail("setresuid", errno);
		if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0))
			return fail("PR_SET_KEEPCAPS", errno);
	}
	want.eff = want.prm = keep;
	if (caps_set(&want))
		return fail("capset", errno);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return fail("PR_SET_NO_NEW_PRIVS", errno);

	/* Read it all back: a drop that did not happen must not pass for one. */
	if (caps_get(&now) || now.eff != keep || now.prm != keep || now.inh)
		return fail("capabilities not as set", EPERM);
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		return fail("no_new_privs not set", EPERM);
	if (getresuid(&ru, &eu, &su) || getresgid(&rg, &eg, &sg))
		return fail("getresuid", errno);
	if (t->change) {
		if (ru != t->uid || eu != t->uid || su != t->uid || rg != t->gid || eg != t->gid ||
		    sg != t->gid)
			return fail("ids not as set", EPERM);
		if (setuid(0) == 0 || setgid(0) == 0)
			return fail("root could be taken back", EPERM);
	}
	cap_list(keep, names, sizeof(names));
	log_info("privileges: running as %s (uid %u, gid %u); capabilities: %s; no_new_privs",
		 t->change ? t->name : (eu == 0 ? "root" : "the starting user"), (unsigned)eu,
		 (unsigned)eg, names);
	if (keep)
		log_info("privileges: %s kept: this kernel gates bpf() on the state and XDP maps "
			 "(kernel.unprivileged_bpf_disabled)",
			 names);
	return 0;
}
