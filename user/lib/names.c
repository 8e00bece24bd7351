// SPDX-License-Identifier: MIT
/* names.c - names of counters, drops, RTT buckets and TLS modes; proc_start (names.h). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "names.h"

const struct counter_desc counter_descs[KDERP_NR_COUNTERS] = {
#define X(e, n, h) {n, h},
	KDERP_COUNTERS(X)
#undef X
};

const char *const drop_reason_names[KDERP_NR_DROP_REASONS] = {
#define X(e, s) s,
	KDERP_DROP_REASONS(X)
#undef X
};

const char *const drop_kind_names[KDERP_NR_KINDS] = {"disco", "other"};

const char *const peer_counter_names[4] = {"packets_in", "bytes_in", "packets_out", "bytes_out"};

const char *const rtt_bucket_names[KDERP_NR_RTT_BUCKETS] = {
	"10ms", "20ms", "50ms", "100ms", "150ms", "250ms", "500ms", "inf", "error"};
const unsigned rtt_bucket_limits_ms[KDERP_RTT_LIMITED_BUCKETS] = {10, 20, 50, 100, 150, 250, 500};

int rtt_bucket(uint32_t rtt_us)
{
	int b;

	for (b = 0; b < KDERP_RTT_LIMITED_BUCKETS && rtt_us / 1000 > rtt_bucket_limits_ms[b]; b++)
		;
	return b;
}

const char *tls_mode_name(unsigned mode)
{
	static const char *const names[] = {
		[KDERP_TLS_PLAIN] = "plain",
		[KDERP_TLS_USER] = "tls",
		[KDERP_TLS_KTLS_TX] = "ktls-tx",
		[KDERP_TLS_KTLS_TXRX] = "ktls-txrx",
	};

	return mode < sizeof(names) / sizeof(names[0]) ? names[mode] : "?";
}

uint64_t proc_start(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long v = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* The command name may hold spaces and parentheses: start after the last ")". */
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* after ")": field 3 (state) ... field 22 (starttime) */
	if (sscanf(p + 1,
		   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d "
		   "%llu",
		   &v) != 1)
		return 0;
	return v;
}
