// SPDX-License-Identifier: MIT
/*
 * bench-stun.c - `kderp-bench stun`: STUN binding load.
 *
 * One UDP socket, connected to the server, sends Tailscale binding requests
 * in sendmmsg batches (paced by a token bucket, or as fast as the socket
 * takes them) and drains answers with recvmmsg. Each transaction id carries
 * a run tag, a sequence number and the send time, so an answer is matched
 * to its request (duplicates and strangers are counted, not credited) and
 * gives a round-trip time. Every answer must map to the socket's own address
 * and port.
 *
 * CPU: the server process (/proc/PID/stat, with -P), this process (rusage)
 * and the whole machine (/proc/stat user+nice+system+irq+softirq), with its
 * irq+softirq share on its own: XDP work is softirq time that no server
 * process is charged for (on veth it runs on the sender's CPU, and this
 * process's rusage includes it, so "machine minus sender" means nothing).
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "stun_msg.h"
#include "kderp_bytes.h"

#define BATCH 64
#define RBUF 128
#define DRAIN_NS 500000000ull /* wait this long for late answers */
#define MAX_REQUESTS (1u << 30) /* sequence numbers fit the txid's 32 bits */
#define HIST_BUCKETS 100000u /* 1 us buckets up to 100 ms */

void bench_stun_set_context(int server_pid, const char *label, const char *scenario);

static struct {
	int server_pid;
	const char *label;
	const char *scenario;
} ctx = {.label = "server"};

/* kderp-bench passes -P, --label and --scenario through this. */
void bench_stun_set_context(int server_pid, const char *label, const char *scenario)
{
	ctx.server_pid = server_pid;
	if (label)
		ctx.label = label;
	ctx.scenario = scenario;
}

struct stun_run {
	int fd;
	uint32_t tag;
	uint64_t t0;
	uint8_t *seen; /* bitmap of answered sequence numbers */
	size_t seen_bytes;
	uint64_t sent, answered, dup, bad, stray;
	uint64_t *hist;
	uint64_t hist_over;
	struct sockaddr_storage self;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* user+sys of @pid in seconds, or -1. */
static double proc_cpu_s(int pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* comm may contain spaces */
	if (!p ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * Whole machine from /proc/stat: user+nice+system+irq+softirq seconds, and
 * irq+softirq alone in @irq. Returns -1 if unreadable.
 */
static double machine_cpu_s(double *irq)
{
	unsigned long long us, ni, sy, id, io, hi, si;
	FILE *f = fopen("/proc/stat", "r");
	double hz = (double)sysconf(_SC_CLK_TCK);
	int n;

	if (!f)
		return -1;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &us, &ni, &sy, &id, &io, &hi, &si);
	fclose(f);
	if (n != 7)
		return -1;
	*irq = (double)(hi + si) / hz;
	return (double)(us + ni + sy + hi + si) / hz;
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static bool same_endpoint(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family == AF_INET && b->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6 && b->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
			!memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
	}
	return false;
}

static int seen_grow(struct stun_run *r, uint64_t seq)
{
	size_t need = (size_t)(seq / 8) + 1, cap;
	uint8_t *p;

	if (need <= r->seen_bytes)
		return 0;
	cap = r->seen_bytes ? r->seen_bytes : 1 << 16;
	while (cap < need)
		cap *= 2;
	p = realloc(r->seen, cap);
	if (!p)
		return -ENOMEM;
	memset(p + r->seen_bytes, 0, cap - r->seen_bytes);
	r->seen = p;
	r->seen_bytes = cap;
	return 0;
}

/* Build up to @n requests starting at r->sent into @bufs; returns how many. */
static int send_batch(struct stun_run *r, uint8_t (*bufs)[KDERP_STUN_REQUEST_LEN], int n)
{
	struct mmsghdr msg[BATCH];
	struct iovec iov[BATCH];
	uint32_t now_us = (uint32_t)((mono_ns() - r->t0) / 1000);
	uint8_t txid[KDERP_STUN_TXID_LEN];
	int i, got;

	if (r->sent + (uint64_t)n > MAX_REQUESTS)
		n = (int)(MAX_REQUESTS - r->sent);
	if (n <= 0 || seen_grow(r, r->sent + (uint64_t)n))
		return 0;
	memset(msg, 0, sizeof(msg));
	for (i = 0; i < n; i++) {
		put_be32(txid, r->tag);
		put_be32(txid + 4, (uint32_t)(r->sent + (uint64_t)i));
		put_be32(txid + 8, now_us);
		if (kderp_stun_build_request(bufs[i], KDERP_STUN_REQUEST_LEN, txid) !=
		    KDERP_STUN_REQUEST_LEN)
			return 0;
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = KDERP_STUN_REQUEST_LEN;
		msg[i].msg_hdr.msg_iov = &iov[i];
		msg[i].msg_hdr.msg_iovlen = 1;
	}
	got = sendmmsg(r->fd, msg, (unsigned int)n, MSG_DONTWAIT);
	if (got < 0)
		return 0;
	r->sent += (uint64_t)got;
	return got;
}

static void check_answer(struct stun_run *r, const uint8_t *pkt, size_t len, uint32_t now_us)
{
	struct sockaddr_storage mapped;
	uint32_t seq, sent_us;

	if (len < KDERP_STUN_HDR_LEN || be32(pkt + 8) != r->tag) {
		r->stray++;
		return;
	}
	seq = be32(pkt + 12);
	sent_us = be32(pkt + 16);
	if (seq >= r->sent) {
		r->stray++;
		return;
	}
	if (kderp_stun_parse_response(pkt, len, pkt + 8, &mapped) ||
	    !same_endpoint(&mapped, &r->self)) {
		r->bad++;
		return;
	}
	if (r->seen[seq / 8] & (1u << (seq % 8))) {
		r->dup++;
		return;
	}
	r->seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
	r->answered++;
	if (now_us - sent_us < HIST_BUCKETS)
		r->hist[now_us - sent_us]++;
	else
		r->hist_over++;
}

/* Read every answer that is there; returns how many datagrams were read. */
static int drain(struct stun_run *r, uint8_t (*rbuf)[256])
{
	struct mmsghdr msg[RBUF];
	struct iovec iov[RBUF];
	uint32_t now_us;
	int i, n, total = 0;

	for (;;) {
		memset(msg, 0, sizeof(msg));
		for (i = 0; i < RBUF; i++) {
			iov[i].iov_base = rbuf[i];
			iov[i].iov_len = 256;
			msg[i].msg_hdr.msg_iov = &iov[i];
			msg[i].msg_hdr.msg_iovlen = 1;
		}
		n = recvmmsg(r->fd, msg, RBUF, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return total;
		now_us = (uint32_t)((mono_ns() - r->t0) / 1000);
		for (i = 0; i < n; i++)
			check_answer(r, rbuf[i], msg[i].msg_len, now_us);
		total += n;
		if (n < RBUF)
			return total;
	}
}

static double hist_pct(const struct stun_run *r, double pct)
{
	uint64_t total = r->answered, want, acc = 0;
	uint32_t i;

	if (!total)
		return -1;
	want = (uint64_t)((double)total * pct / 100.0);
	if (want >= total)
		want = total - 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		acc += r->hist[i];
		if (acc > want)
			return (double)i + 0.5;
	}
	return (double)HIST_BUCKETS;
}

static json_t *num_or_null(double v, bool ok)
{
	return ok ? json_real(v) : json_null();
}

int bench_stun_run(const struct bench_target *t, double rate, double secs, json_t *out)
{
	static uint8_t sbuf[BATCH][KDERP_STUN_REQUEST_LEN];
	static uint8_t rbuf[RBUF][256];
	struct stun_run r = {.fd = -1};
	double srv0, srv1, mach0, mach1, me0, me1, irq0 = 0, irq1 = 0, send_s, rps, per_m;
	socklen_t slen = sizeof(r.self);
	uint64_t t_end, t_drain, now;
	int sndbuf = 4 << 20, ret = 0;
	bool have_srv, have_mach;
	double min_batch = rate * 100e-6;

	if (min_batch < 1)
		min_batch = 1;
	if (min_batch > BATCH)
		min_batch = BATCH;
	if (rate < 0 || secs <= 0)
		return -EINVAL;
	r.hist = calloc(HIST_BUCKETS, sizeof(*r.hist));
	if (!r.hist)
		return -ENOMEM;
	r.fd = socket(t->addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (r.fd < 0 || connect(r.fd, (const struct sockaddr *)&t->addr, t->addrlen) ||
	    getsockname(r.fd, (struct sockaddr *)&r.self, &slen)) {
		ret = -errno;
		fprintf(stderr, "kderp-bench: stun socket to %s:%s: %s\n", t->host, t->port,
			strerror(errno));
		goto out;
	}
	setsockopt(r.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	setsockopt(r.fd, SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
	r.tag = (uint32_t)getpid() ^ (uint32_t)mono_ns();

	srv0 = ctx.server_pid > 0 ? proc_cpu_s(ctx.server_pid) : -1;
	mach0 = machine_cpu_s(&irq0);
	me0 = self_cpu_s();
	r.t0 = mono_ns();
	t_end = r.t0 + (uint64_t)(secs * 1e9);
	for (now = r.t0; now < t_end; now = mono_ns()) {
		int want = BATCH, sent = 0, got;

		double wait_s = 0.001;

		if (rate > 0) {
			double due = rate * (double)(now - r.t0) / 1e9 - (double)r.sent;

			/* send in batches of about 100 us worth, not one by one */
			want = due >= BATCH ? BATCH : (int)due;
			if (due < min_batch) {
				want = 0;
				wait_s = (min_batch - due) / rate;
			}
		}
		if (want > 0)
			sent = send_batch(&r, sbuf, want);
		got = drain(&r, rbuf);
		if (!sent && !got) {
			struct pollfd pfd = {.fd = r.fd, .events = POLLIN};
			struct timespec ts = {.tv_nsec = (long)(wait_s * 1e9)};

			if (rate <= 0)
				pfd.events |= POLLOUT; /* socket full: wait for room */
			ppoll(&pfd, 1, &ts, NULL);
		}
		if (r.sent >= MAX_REQUESTS)
			break;
	}
	send_s = (double)(mono_ns() - r.t0) / 1e9;
	/* late answers: until all are in, nothing came for 100 ms, or DRAIN_NS */
	t_drain = mono_ns() + DRAIN_NS;
	for (now = mono_ns(); now < t_drain && r.answered + r.dup < r.sent; now = mono_ns()) {
		struct pollfd pfd = {.fd = r.fd, .events = POLLIN};

		if (poll(&pfd, 1, 100) <= 0)
			break;
		drain(&r, rbuf);
	}
	srv1 = ctx.server_pid > 0 ? proc_cpu_s(ctx.server_pid) : -1;
	mach1 = machine_cpu_s(&irq1);
	me1 = self_cpu_s();
	have_srv = srv0 >= 0 && srv1 >= 0;
	have_mach = mach0 >= 0 && mach1 >= 0;
	rps = (double)r.answered / send_s;
	per_m = r.answered ? 1e6 / (double)r.answered : 0;

	printf("stun       %-8s target=", ctx.label);
	if (rate > 0)
		printf("%.0f req/s\n", rate);
	else
		printf("unlimited\n");
	printf("  sent       %12" PRIu64 "  (%.0f req/s over %.2f s)\n", r.sent,
	       (double)r.sent / send_s, send_s);
	printf("  answered   %12" PRIu64 "  (%.0f req/s)  loss %.3f %%\n", r.answered, rps,
	       r.sent ? 100.0 * (double)(r.sent - r.answered) / (double)r.sent : 0.0);
	printf("  bad %" PRIu64 "  duplicate %" PRIu64 "  stray %" PRIu64 "\n", r.bad, r.dup,
	       r.stray);
	printf("  rtt us     p50 %.1f  p99 %.1f\n", hist_pct(&r, 50), hist_pct(&r, 99));
	printf("  cpu s      server %.2f  machine %.2f (irq+softirq %.2f)  bench %.2f\n",
	       have_srv ? srv1 - srv0 : -1, have_mach ? mach1 - mach0 : -1,
	       have_mach ? irq1 - irq0 : -1, me1 - me0);
	if (r.answered)
		printf("  cpu s per million answered: server %.3f  server+irq+softirq %.3f  "
		       "machine %.3f\n",
		       have_srv ? (srv1 - srv0) * per_m : -1,
		       have_srv && have_mach ? (srv1 - srv0 + irq1 - irq0) * per_m : -1,
		       have_mach ? (mach1 - mach0) * per_m : -1);
	printf("BenchmarkStun/%s-%ld\t%" PRIu64 "\t%.1f ns/op\t%.0f req/s\t%.3f loss-%%\t"
	       "%.3f srv-cpu-s\t%.3f machine-cpu-s\n",
	       rate > 0 ? "paced" : "unlimited", sysconf(_SC_NPROCESSORS_ONLN),
	       r.answered ? r.answered : 1, r.answered ? send_s * 1e9 / (double)r.answered : 0.0,
	       rps, r.sent ? 100.0 * (double)(r.sent - r.answered) / (double)r.sent : 0.0,
	       have_srv ? srv1 - srv0 : 0.0, have_mach ? mach1 - mach0 : 0.0);
	fflush(stdout);

	if (out) {
		json_t *j = json_object();
		bool ans = r.answered > 0;

		json_object_set_new(j, "scenario",
				    json_string(ctx.scenario ? ctx.scenario : "stun"));
		json_object_set_new(j, "mode", json_string("stun"));
		json_object_set_new(j, "server", json_string(ctx.label));
		json_object_set_new(j, "size", json_integer(KDERP_STUN_REQUEST_LEN));
		json_object_set_new(j, "pairs", json_integer(0));
		json_object_set_new(j, "tls", json_false());
		json_object_set_new(j, "target_mbps", json_null());
		json_object_set_new(j, "target_rps", num_or_null(rate, rate > 0));
		json_object_set_new(
			j, "offered_mbps",
			json_real((double)r.sent * KDERP_STUN_REQUEST_LEN * 8 / send_s / 1e6));
		json_object_set_new(
			j, "delivered_mbps",
			json_real((double)r.answered * KDERP_STUN_REQUEST_LEN * 8 / send_s / 1e6));
		json_object_set_new(j, "offered_rps", json_real((double)r.sent / send_s));
		json_object_set_new(j, "pps", json_real(rps));
		json_object_set_new(j, "answered_rps", json_real(rps));
		json_object_set_new(j, "sent", json_integer((json_int_t)r.sent));
		json_object_set_new(j, "received", json_integer((json_int_t)r.answered));
		json_object_set_new(
			j, "loss_pct",
			json_real(r.sent ? 100.0 * (double)(r.sent - r.answered) / (double)r.sent
					 : 0.0));
		json_object_set_new(j, "reordered", json_integer(0));
		json_object_set_new(j, "bad", json_integer((json_int_t)r.bad));
		json_object_set_new(j, "duplicates", json_integer((json_int_t)r.dup));
		json_object_set_new(j, "stray", json_integer((json_int_t)r.stray));
		json_object_set_new(j, "p50_us", num_or_null(hist_pct(&r, 50), ans));
		json_object_set_new(j, "p90_us", num_or_null(hist_pct(&r, 90), ans));
		json_object_set_new(j, "p99_us", num_or_null(hist_pct(&r, 99), ans));
		json_object_set_new(j, "p999_us", num_or_null(hist_pct(&r, 99.9), ans));
		json_object_set_new(j, "server_cpu_s", num_or_null(srv1 - srv0, have_srv));
		json_object_set_new(j, "machine_cpu_s", num_or_null(mach1 - mach0, have_mach));
		json_object_set_new(j, "bench_cpu_s", json_real(me1 - me0));
		json_object_set_new(j, "softirq_cpu_s", num_or_null(irq1 - irq0, have_mach));
		json_object_set_new(j, "server_cpu_s_per_m",
				    num_or_null((srv1 - srv0) * per_m, have_srv && ans));
		json_object_set_new(j, "machine_cpu_s_per_m",
				    num_or_null((mach1 - mach0) * per_m, have_mach && ans));
		json_object_set_new(j, "server_side_cpu_s_per_m",
				    num_or_null((srv1 - srv0 + irq1 - irq0) * per_m,
						have_srv && have_mach && ans));
		json_object_set_new(j, "rss_kib", json_integer(0));
		json_object_set_new(j, "duration_s", json_real(send_s));
		json_object_set_new(j, "clients", json_integer(0));
		json_object_set_new(j, "failures", json_integer(0));
		json_object_set_new(j, "failed", json_boolean(!ans));
		json_array_append_new(out, j);
	}
	if (!r.answered) {
		fprintf(stderr, "kderp-bench: stun: no request was answered\n");
		ret = -ETIMEDOUT;
	} else if (r.bad) {
		fprintf(stderr, "kderp-bench: stun: %" PRIu64 " answers were wrong\n", r.bad);
		ret = -EPROTO;
	}
out:
	if (r.fd >= 0)
		close(r.fd);
	free(r.seen);
	free(r.hist);
	return ret;
}
