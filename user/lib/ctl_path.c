// SPDX-License-Identifier: MIT
/* ctl_path.c - the default control socket path (ctl_path.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl_path.h"
#include "kderp_abi.h"

static int put(char *out, size_t len, size_t *off, const char *s, size_t n)
{
	if (*off + n >= len)
		return -ENAMETOOLONG;
	memcpy(out + *off, s, n);
	*off += n;
	out[*off] = 0;
	return 0;
}

int ctl_rundir(char *out, size_t len)
{
	const char *rt = getenv("RUNTIME_DIRECTORY"), *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (rt && *rt)
		/* systemd may list several, separated by ':'; the first is ours */
		n = snprintf(out, len, "%.*s", (int)strcspn(rt, ":"), rt);
	else if (geteuid() == 0)
		n = snprintf(out, len, "%s", KDERP_CTL_RUNDIR);
	else if (xdg && *xdg)
		n = snprintf(out, len, "%s/kderpd", xdg);
	else
		n = snprintf(out, len, "/tmp/kderpd-%u", (unsigned)geteuid());
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	/* "/run/kderpd/" and "/run/kderpd" are one directory */
	while (n > 1 && out[n - 1] == '/')
		out[--n] = 0;
	return 0;
}

int ctl_default_path(const char *pin_dir, pid_t pid, char *out, size_t len)
{
	static const char keep[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
	size_t off, n = strlen(pin_dir), dlen = strlen(KDERP_PIN_DIR_DEFAULT);
	char num[32];
	int r;

	if (len > sizeof(((struct sockaddr_un *)0)->sun_path))
		len = sizeof(((struct sockaddr_un *)0)->sun_path);
	r = ctl_rundir(out, len);
	if (r)
		return r;
	off = strlen(out);
	while (n > 1 && pin_dir[n - 1] == '/')
		n--;
	if (n == 0) {
		snprintf(num, sizeof(num), "/ctl-%d.sock", (int)pid);
		return put(out, len, &off, num, strlen(num));
	}
	if (n == dlen && strncmp(pin_dir, KDERP_PIN_DIR_DEFAULT, n) == 0)
		return put(out, len, &off, "/" KDERP_CTL_NAME, strlen(KDERP_CTL_NAME) + 1);
	r = put(out, len, &off, "/ctl-", 5);
	/* '/' becomes '+', other bytes outside keep[] %XX: one name per directory */
	for (size_t i = strspn(pin_dir, "/"); !r && i < n; i++) {
		char c = pin_dir[i], esc[4];

		if (c == '/') {
			r = put(out, len, &off, "+", 1);
		} else if (c && strchr(keep, c)) {
			r = put(out, len, &off, &c, 1);
		} else {
			snprintf(esc, sizeof(esc), "%%%02X", (unsigned char)c);
			r = put(out, len, &off, esc, 3);
		}
	}
	return r ? r : put(out, len, &off, ".sock", 5);
}
