// SPDX-License-Identifier: MIT
/*
 * kderp-bench - DERP relay load generator.
 *
 * Opens pairs of DERP clients (a sender and a receiver), makes every sender
 * send SendPacket frames to its receiver, and checks on the receiving side
 * that each packet came from the right key, has the right length and carries
 * the next sequence number of its pair. Everything runs in a few epoll
 * threads with large batched reads and writes, so the generator is not the
 * bottleneck of a relay on the same machine.
 *
 * Modes: throughput (optionally a ramp that finds the ceiling), latency,
 * idle, churn, and a hook for stun. See usage() for the flags.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bench.h"
#include "kderp_bytes.h"

#define FRAME_HDR 5
#define FRAME_SEND_PACKET 0x04
#define FRAME_RECV_PACKET 0x05
#define MAX_FRAME (65536 + 64)
#define RBUF_SIZE (256 * 1024)
#define WBATCH_BYTES (64 * 1024)
#define PAYLOAD_MIN 24
#define PAYLOAD_MAGIC 0x4e45424bu /* "KBEN" little-endian */

/* Exit codes: 0 ok, 1 usage, 2 setup/handshake refused, 3 failure mid-run. */
#define EXIT_USAGE 1
#define EXIT_SETUP 2
#define EXIT_MIDRUN 3

enum mode { MODE_THROUGHPUT, MODE_LATENCY, MODE_IDLE, MODE_CHURN, MODE_STUN };
static const char *const mode_names[] = {"throughput", "latency", "idle", "churn", "stun"};

struct opts {
	enum mode mode;
	struct bench_target tgt;
	int pairs;
	int size;
	double rate_mbps; /* total offered payload rate; 0 = unlimited */
	double duration;
	int threads;
	int connect_threads;
	int clients;
	double hold;
	double churn_rate;
	pid_t server_pid;
	bool allow_remote;
	const char *json_path;
	const char *label;
	const char *scenario;
	bool ramp;
	double ramp_from, ramp_factor, ramp_to;
	double max_loss_pct;
	double pace_us;
	bool search;
	int search_steps;
	double warmup;
};

static struct opts o = {
	.pairs = 10,
	.size = 1400,
	.duration = 5,
	.threads = 1,
	.connect_threads = 4,
	.clients = 1000,
	.hold = 2,
	.ramp_factor = 1.25,
	.max_loss_pct = 1.0,
	.label = "server",
};

static atomic_int g_stop;
static atomic_int g_failed;
static char g_fail_msg[512];
static pthread_mutex_t g_fail_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2))) static void fail_run(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g_fail_lock);
	if (!atomic_load(&g_failed)) {
		va_start(ap, fmt);
		vsnprintf(g_fail_msg, sizeof(g_fail_msg), fmt, ap);
		va_end(ap);
		atomic_store(&g_failed, 1);
	}
	pthread_mutex_unlock(&g_fail_lock);
	atomic_store(&g_stop, 1);
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8); /* x86-64 and every target we run on is little-endian */
}

static inline uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* ---- latency histogram: 100 ns buckets to 10 ms, then 10 us buckets to ~1 s ---- */

#define HIST_FINE 100000u
#define HIST_COARSE 100000u
#define HIST_N (HIST_FINE + HIST_COARSE)

struct hist {
	uint64_t b[HIST_N];
	uint64_t n;
	uint64_t max_ns;
};

static inline void hist_add(struct hist *h, uint64_t ns)
{
	uint64_t v = ns / 100, i;

	if (v < HIST_FINE)
		i = v;
	else
		i = HIST_FINE + (v - HIST_FINE) / 100;
	if (i >= HIST_N)
		i = HIST_N - 1;
	h->b[i]++;
	h->n++;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

static double hist_bucket_us(uint64_t i)
{
	if (i < HIST_FINE)
		return (double)i * 0.1 + 0.05;
	return ((double)HIST_FINE + (double)(i - HIST_FINE) * 100 + 50) * 0.1;
}

static double hist_pct(const struct hist *h, double pct)
{
	uint64_t want, acc = 0, i;

	if (!h->n)
		return NAN;
	want = (uint64_t)ceil((double)h->n * pct / 100.0);
	if (want < 1)
		want = 1;
	for (i = 0; i < HIST_N; i++) {
		acc += h->b[i];
		if (acc >= want)
			return hist_bucket_us(i);
	}
	return (double)h->max_ns / 1000.0;
}

static void hist_merge(struct hist *dst, const struct hist *src)
{
	uint64_t i;

	for (i = 0; i < HIST_N; i++)
		dst->b[i] += src->b[i];
	dst->n += src->n;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
}

/* ---- server and machine probes (/proc) ---- */

struct probe {
	bool have_server;
	double server_cpu_s;
	long rss_kib;
	int fds;
	double machine_cpu_s;
};

static double proc_pid_cpu(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strrchr(buf, ')');
	/* after "pid (comm)": state ppid pgrp session tty tpgid flags minflt
	 * cminflt majflt cmajflt utime stime */
	if (!p ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static long proc_pid_rss(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static int proc_pid_fds(pid_t pid)
{
	char path[64];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static double machine_cpu(void)
{
	unsigned long long v[8] = {0};
	double busy;
	FILE *f;

	f = fopen("/proc/stat", "re");
	if (!f)
		return -1;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]) != 8) {
		fclose(f);
		return -1;
	}
	fclose(f);
	/* user nice system idle iowait irq softirq steal: busy = all but idle, iowait */
	busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
	return busy / (double)sysconf(_SC_CLK_TCK);
}

static void probe_take(struct probe *p)
{
	memset(p, 0, sizeof(*p));
	p->machine_cpu_s = machine_cpu();
	p->rss_kib = -1;
	p->fds = -1;
	if (o.server_pid <= 0)
		return;
	p->server_cpu_s = proc_pid_cpu(o.server_pid);
	p->have_server = p->server_cpu_s >= 0;
	p->rss_kib = proc_pid_rss(o.server_pid);
	p->fds = proc_pid_fds(o.server_pid);
}

/* ---- pairs and connections ---- */

struct pair;

struct conn {
	struct bench_link link;
	struct pair *pair;
	bool sender;
	bool blocked; /* sender: socket full, waiting for EPOLLOUT */
	uint8_t *rbuf;
	size_t rlen;
};

struct pair {
	int idx;
	struct conn snd, rcv;
	/* sender side */
	uint8_t *obuf; /* WBATCH frames preformatted; only seq and time change */
	size_t flen; /* bytes per frame on the wire */
	int batch; /* frames in obuf */
	size_t pend_off, pend_len;
	uint64_t next_seq;
	double tokens;
	uint64_t last_refill;
	uint64_t tx; /* packets fully written to the socket */
	/* receiver side */
	uint64_t rx_expect;
	uint64_t rx;
	uint64_t reordered;
	uint64_t gaps;
	uint64_t bad_src, bad_len, bad_other;
};

struct worker {
	pthread_t th;
	int id;
	int ep;
	struct pair **pairs;
	int npairs;
	struct hist *hist;
	/* step parameters */
	double pps_per_pair; /* 0 = unlimited */
	uint64_t t_end;
	uint64_t drain_max_ns;
	uint64_t pace_ns; /* rate mode: sleep between token refills */
	uint64_t syscalls;
};

static struct pair *g_pairs;
static struct worker *g_workers;

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static void pair_build_frames(struct pair *p)
{
	size_t psize = (size_t)o.size;
	uint32_t flen32 = (uint32_t)(BENCH_KEY_LEN + psize);
	int i;

	p->flen = FRAME_HDR + BENCH_KEY_LEN + psize;
	p->batch = (int)(WBATCH_BYTES / p->flen);
	if (p->batch < 1)
		p->batch = 1;
	p->obuf = calloc((size_t)p->batch, p->flen);
	if (!p->obuf) {
		fprintf(stderr, "kderp-bench: out of memory\n");
		exit(EXIT_SETUP);
	}
	for (i = 0; i < p->batch; i++) {
		uint8_t *f = p->obuf + (size_t)i * p->flen;
		uint8_t *pl = f + FRAME_HDR + BENCH_KEY_LEN;
		uint32_t idx = (uint32_t)p->idx, magic = PAYLOAD_MAGIC;
		size_t j;

		f[0] = FRAME_SEND_PACKET;
		f[1] = (uint8_t)(flen32 >> 24);
		f[2] = (uint8_t)(flen32 >> 16);
		f[3] = (uint8_t)(flen32 >> 8);
		f[4] = (uint8_t)flen32;
		memcpy(f + FRAME_HDR, p->rcv.link.pub, BENCH_KEY_LEN);
		memcpy(pl + 16, &idx, 4);
		memcpy(pl + 20, &magic, 4);
		for (j = PAYLOAD_MIN; j < psize; j++)
			pl[j] = (uint8_t)(j * 7);
	}
}

/* conn_fail() - a connection died: record why and stop the run. */
static void conn_fail(struct conn *c, const char *what)
{
	fail_run("server closed the %s connection of pair %d (%s)",
		 c->sender ? "sender" : "receiver", c->pair->idx, what);
}

static ssize_t conn_write(struct conn *c, const void *buf, size_t len)
{
	ssize_t n;
	int e;

	if (!c->link.ssl) {
		n = write(c->link.fd, buf, len);
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		return n < 0 ? 0 : n;
	}
	ERR_clear_error();
	n = SSL_write(c->link.ssl, buf, (int)len);
	if (n > 0)
		return n;
	e = SSL_get_error(c->link.ssl, (int)n);
	if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
		return 0;
	return -EPIPE;
}

/*
 * sender_pump() - write as much as the token bucket and the socket allow.
 * With @refill false only the already-built frames are flushed (drain).
 */
static void sender_pump(struct worker *w, struct pair *p, uint64_t now, bool refill)
{
	struct conn *c = &p->snd;
	int budget = 64; /* writes per call, so one pair cannot starve the loop */

	while (!c->blocked && budget-- > 0) {
		size_t before, after;
		ssize_t n;

		if (!p->pend_len) {
			int k = p->batch, i;

			if (!refill)
				return;
			if (w->pps_per_pair > 0) {
				/* two refills' worth, so rounding never loses tokens */
				double burst =
					fmax(8.0, 2e-9 * w->pps_per_pair * (double)w->pace_ns);

				p->tokens += (double)(now - p->last_refill) * w->pps_per_pair / 1e9;
				p->last_refill = now;
				if (p->tokens > burst)
					p->tokens = burst;
				if (p->tokens < 1.0)
					return;
				if ((double)k > p->tokens)
					k = (int)p->tokens;
				p->tokens -= k;
			}
			for (i = 0; i < k; i++) {
				uint8_t *pl =
					p->obuf + (size_t)i * p->flen + FRAME_HDR + BENCH_KEY_LEN;

				put_le64(pl, p->next_seq++);
				put_le64(pl + 8, now);
			}
			p->pend_off = 0;
			p->pend_len = (size_t)k * p->flen;
		}
		n = conn_write(c, p->obuf + p->pend_off, p->pend_len);
		w->syscalls++;
		if (n < 0) {
			conn_fail(c, strerror((int)-n));
			return;
		}
		if (n == 0) {
			c->blocked = true;
			return;
		}
		before = p->pend_off / p->flen;
		p->pend_off += (size_t)n;
		p->pend_len -= (size_t)n;
		after = p->pend_off / p->flen;
		p->tx += after - before;
		if (!p->pend_len && w->pps_per_pair > 0)
			now = now_ns();
	}
}

static void handle_packet(struct worker *w, struct conn *c, const uint8_t *pl, uint32_t len,
			  uint64_t now)
{
	struct pair *p = c->pair;
	const uint8_t *data = pl + BENCH_KEY_LEN;
	uint32_t idx, magic;
	uint64_t seq, ts;

	if (c->sender || len < BENCH_KEY_LEN) {
		p->bad_other++;
		return;
	}
	if (len != BENCH_KEY_LEN + (uint32_t)o.size) {
		p->bad_len++;
		return;
	}
	if (memcmp(pl, p->snd.link.pub, BENCH_KEY_LEN)) {
		p->bad_src++;
		return;
	}
	memcpy(&idx, data + 16, 4);
	memcpy(&magic, data + 20, 4);
	if (idx != (uint32_t)p->idx || magic != PAYLOAD_MAGIC) {
		p->bad_other++;
		return;
	}
	seq = get_le64(data);
	ts = get_le64(data + 8);
	p->rx++;
	if (seq == p->rx_expect) {
		p->rx_expect++;
	} else if (seq > p->rx_expect) {
		p->gaps++;
		p->rx_expect = seq + 1;
	} else {
		p->reordered++;
	}
	if (now > ts)
		hist_add(w->hist, now - ts);
}

/* conn_read() - read until the socket is empty, parsing every whole frame. */
static void conn_read(struct worker *w, struct conn *c)
{
	for (;;) {
		size_t off = 0;
		uint64_t now;
		ssize_t n;

		if (c->link.ssl) {
			ERR_clear_error();
			n = SSL_read(c->link.ssl, c->rbuf + c->rlen, (int)(RBUF_SIZE - c->rlen));
			if (n <= 0) {
				int e = SSL_get_error(c->link.ssl, (int)n);

				w->syscalls++;
				if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
					return;
				conn_fail(c,
					  e == SSL_ERROR_ZERO_RETURN ? "TLS close" : "TLS error");
				return;
			}
		} else {
			n = read(c->link.fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
			w->syscalls++;
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR)
					return;
				conn_fail(c, strerror(errno));
				return;
			}
			if (n == 0) {
				conn_fail(c, "EOF");
				return;
			}
		}
		now = now_ns();
		c->rlen += (size_t)n;
		while (c->rlen - off >= FRAME_HDR) {
			const uint8_t *f = c->rbuf + off;
			uint32_t flen = get_be32(f + 1);

			if (flen > MAX_FRAME) {
				conn_fail(c, "oversized frame");
				return;
			}
			if (c->rlen - off < FRAME_HDR + flen)
				break;
			if (f[0] == FRAME_RECV_PACKET)
				handle_packet(w, c, f + FRAME_HDR, flen, now);
			/* KeepAlive, PeerGone, Ping, ...: nothing to check */
			off += FRAME_HDR + flen;
		}
		if (off) {
			memmove(c->rbuf, c->rbuf + off, c->rlen - off);
			c->rlen -= off;
		}
		if (!c->link.ssl && (size_t)n < RBUF_SIZE / 2)
			return; /* short read: the socket is drained */
	}
}

static bool worker_drained(struct worker *w)
{
	int i;

	for (i = 0; i < w->npairs; i++) {
		struct pair *p = w->pairs[i];

		if (p->pend_len || p->rx + p->bad_len + p->bad_src < p->tx)
			return false;
	}
	return true;
}

/* Counters at the start of a step, for per-step deltas. */
struct pair_snap {
	uint64_t tx, rx, reordered, gaps, bad;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[256];
	uint64_t now = now_ns(), last_rx_total = 0, last_progress, next_pump = now;
	bool draining = false, refill, rate = w->pps_per_pair > 0;
	int i;

	for (i = 0; i < w->npairs; i++) {
		w->pairs[i]->last_refill = now;
		w->pairs[i]->tokens = 1.0;
	}
	last_progress = now;
	while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		struct timespec ts = {0};
		bool busy = false;
		int n;

		now = now_ns();
		if (!draining && now >= w->t_end) {
			draining = true;
			last_progress = now;
		}
		if (draining) {
			uint64_t rx_total = 0;

			for (i = 0; i < w->npairs; i++)
				rx_total += w->pairs[i]->rx;
			if (rx_total != last_rx_total) {
				last_rx_total = rx_total;
				last_progress = now;
			}
			if (worker_drained(w) || now - last_progress > 500000000ull ||
			    now >= w->t_end + w->drain_max_ns)
				break;
		}
		/*
		 * Rate mode refills only every pace_ns, so that receive wake-ups in
		 * between do not turn into one-frame writes.
		 */
		refill = !draining && (!rate || now >= next_pump);
		if (refill && rate)
			next_pump = next_pump + w->pace_ns > now ? next_pump + w->pace_ns
								 : now + w->pace_ns;
		for (i = 0; i < w->npairs; i++) {
			struct pair *p = w->pairs[i];

			if (p->snd.blocked || (!refill && !p->pend_len))
				continue;
			sender_pump(w, p, now, refill);
			if (!p->snd.blocked && (p->pend_len || (!draining && !rate)))
				busy = true;
		}
		if (!busy) {
			/* sleep until the next refill (rate mode) or an event */
			uint64_t wait = draining ? 10000000ull : 1000000ull;

			if (!draining && rate)
				wait = next_pump > now ? next_pump - now : 0;
			if (!draining && now + wait > w->t_end)
				wait = w->t_end > now ? w->t_end - now : 0;
			ts.tv_sec = (time_t)(wait / 1000000000ull);
			ts.tv_nsec = (long)(wait % 1000000000ull);
		}
		n = epoll_pwait2(w->ep, evs, 256, &ts, NULL);
		w->syscalls++;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail_run("epoll_pwait2: %s", strerror(errno));
			break;
		}
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (evs[i].events & EPOLLOUT)
				c->blocked = false;
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
				conn_read(w, c);
		}
	}
	return NULL;
}

/* ---- connection setup (parallel blocking handshakes) ---- */

struct dial_job {
	struct bench_link *links;
	int n;
	atomic_int next;
	atomic_int failures;
	char err[256];
	pthread_mutex_t lock;
	struct hist *hs_hist;
};

static void *dial_thread(void *arg)
{
	struct dial_job *j = arg;
	char err[256];
	int i;

	while ((i = atomic_fetch_add(&j->next, 1)) < j->n && !atomic_load(&g_stop)) {
		uint64_t t0 = now_ns();

		if (bench_dial(&o.tgt, &j->links[i], err, sizeof(err))) {
			j->links[i].fd = -1;
			pthread_mutex_lock(&j->lock);
			if (!j->err[0])
				snprintf(j->err, sizeof(j->err), "%s", err);
			pthread_mutex_unlock(&j->lock);
			atomic_fetch_add(&j->failures, 1);
			atomic_store(&g_stop, 1);
			continue;
		}
		pthread_mutex_lock(&j->lock);
		hist_add(j->hs_hist, now_ns() - t0);
		pthread_mutex_unlock(&j->lock);
	}
	return NULL;
}

/* dial_all() - open @n links with o.connect_threads threads; 0 or -errno. */
static int dial_all(struct bench_link *links, int n, double *secs, struct hist *hs_hist)
{
	struct dial_job j = {.links = links, .n = n, .hs_hist = hs_hist};
	int nt = o.connect_threads < n ? o.connect_threads : n, i;
	pthread_t th[64];
	uint64_t t0;

	if (nt < 1)
		nt = 1;
	if (nt > 64)
		nt = 64;
	pthread_mutex_init(&j.lock, NULL);
	for (i = 0; i < n; i++)
		links[i].fd = -1;
	t0 = now_ns();
	for (i = 0; i < nt; i++)
		pthread_create(&th[i], NULL, dial_thread, &j);
	for (i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	*secs = (double)(now_ns() - t0) / 1e9;
	pthread_mutex_destroy(&j.lock);
	if (atomic_load(&j.failures) || atomic_load(&g_stop)) {
		fprintf(stderr, "kderp-bench: handshake with %s:%s failed: %s\n", o.tgt.host,
			o.tgt.port, j.err[0] ? j.err : "interrupted");
		for (i = 0; i < n; i++)
			if (links[i].fd >= 0)
				bench_link_close(&links[i]);
		return -ECONNREFUSED;
	}
	return 0;
}

/* ---- reporting ---- */

struct result {
	const char *mode;
	double target_mbps;
	double secs;
	uint64_t tx, rx, reordered, gaps, bad;
	double offered_mbps, delivered_mbps, pps;
	double loss_pct;
	double p50, p90, p99, p999, max_us;
	double server_cpu_s, machine_cpu_s, bench_cpu_s;
	long rss_kib;
	int fds;
	/* idle and churn */
	int clients;
	double hs_per_s;
	double rss_per_client_kib;
	long rss_before, rss_after;
	int fds_before, fds_after;
	uint64_t ops, failures;
	bool failed;
};

static json_t *g_json;

static int ncpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (int)n : 1;
}

static double bench_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static json_t *jnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static void json_add_result(const struct result *r)
{
	bool nopkt = !strcmp(r->mode, "idle") || !strcmp(r->mode, "churn");
	json_t *j;

	if (!g_json)
		return;
	j = json_object();
	json_object_set_new(j, "scenario", json_string(o.scenario ? o.scenario : r->mode));
	json_object_set_new(j, "mode", json_string(r->mode));
	json_object_set_new(j, "server", json_string(o.label));
	/* idle and churn send no packets */
	json_object_set_new(j, "size", json_integer(nopkt ? 0 : o.size));
	json_object_set_new(j, "pairs", json_integer(nopkt ? 0 : o.pairs));
	json_object_set_new(j, "tls", json_boolean(o.tgt.tls));
	json_object_set_new(j, "target_mbps", jnum(r->target_mbps));
	json_object_set_new(j, "offered_mbps", jnum(r->offered_mbps));
	json_object_set_new(j, "delivered_mbps", jnum(r->delivered_mbps));
	json_object_set_new(j, "pps", jnum(r->pps));
	json_object_set_new(j, "sent", json_integer((json_int_t)r->tx));
	json_object_set_new(j, "received", json_integer((json_int_t)r->rx));
	json_object_set_new(j, "loss_pct", jnum(r->loss_pct));
	json_object_set_new(j, "reordered", json_integer((json_int_t)r->reordered));
	json_object_set_new(j, "bad", json_integer((json_int_t)r->bad));
	json_object_set_new(j, "p50_us", jnum(r->p50));
	json_object_set_new(j, "p90_us", jnum(r->p90));
	json_object_set_new(j, "p99_us", jnum(r->p99));
	json_object_set_new(j, "p999_us", jnum(r->p999));
	json_object_set_new(j, "server_cpu_s", jnum(r->server_cpu_s));
	json_object_set_new(j, "machine_cpu_s", jnum(r->machine_cpu_s));
	json_object_set_new(j, "bench_cpu_s", jnum(r->bench_cpu_s));
	json_object_set_new(j, "rss_kib", json_integer(r->rss_kib));
	json_object_set_new(j, "duration_s", jnum(r->secs));
	json_object_set_new(j, "clients", json_integer(r->clients));
	json_object_set_new(j, "handshakes_per_s", jnum(r->hs_per_s));
	json_object_set_new(j, "rss_per_client_kib", jnum(r->rss_per_client_kib));
	json_object_set_new(j, "fds_before", json_integer(r->fds_before));
	json_object_set_new(j, "fds_after", json_integer(r->fds_after));
	json_object_set_new(j, "rss_before_kib", json_integer(r->rss_before));
	json_object_set_new(j, "rss_after_kib", json_integer(r->rss_after));
	json_object_set_new(j, "ops", json_integer((json_int_t)r->ops));
	json_object_set_new(j, "failures", json_integer((json_int_t)r->failures));
	json_object_set_new(j, "failed", json_boolean(r->failed));
	json_array_append_new(g_json, j);
}

/*
 * Go benchmark line for benchstat: one op = one delivered packet. The name
 * carries the scenario; the server is told apart by the file it goes into.
 */
static void print_bench_line(const struct result *r)
{
	const char *kind = "Relay";

	if (!strcmp(r->mode, "latency"))
		kind = "Latency";
	else if (!strcmp(r->mode, "ceiling"))
		kind = "Ceiling";
	printf("Benchmark%s/size=%d/pairs=%d/%s", kind, o.size, o.pairs,
	       o.tgt.tls ? "tls" : "plain");
	if (strcmp(r->mode, "ceiling"))
		printf(r->target_mbps > 0 ? "/rate=%.0f" : "/unlimited", r->target_mbps);
	printf("-%d\t%" PRIu64 "\t%.1f ns/op\t%.1f Mbit/s\t%.0f pkt/s\t%.3f loss-%%\t%.1f p50-us\t"
	       "%.1f p99-us\t%.3f srv-cpu-s\n",
	       ncpus(), r->rx ? r->rx : 1, r->rx ? r->secs * 1e9 / (double)r->rx : r->secs * 1e9,
	       r->delivered_mbps, r->pps, r->loss_pct, r->p50, r->p99, r->server_cpu_s);
}

static void print_relay_result(const struct result *r)
{
	const char *tls = o.tgt.tls ? "tls" : "plain";

	printf("%-10s %-8s size=%d pairs=%d %s ", r->mode, o.label, o.size, o.pairs, tls);
	if (r->target_mbps > 0)
		printf("target=%.1f Mbit/s\n", r->target_mbps);
	else
		printf("target=unlimited\n");
	printf("  offered    %10.1f Mbit/s %12.0f pkt/s  (%" PRIu64 " packets sent)\n",
	       r->offered_mbps, (double)r->tx / r->secs, r->tx);
	printf("  delivered  %10.1f Mbit/s %12.0f pkt/s  (%" PRIu64 " packets received)\n",
	       r->delivered_mbps, r->pps, r->rx);
	printf("  loss       %10.3f %%   reordered %" PRIu64 "  gaps %" PRIu64 "  bad %" PRIu64
	       "\n",
	       r->loss_pct, r->reordered, r->gaps, r->bad);
	printf("  latency us p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", r->p50, r->p90,
	       r->p99, r->p999, r->max_us);
	printf("  cpu s      server %.2f  machine %.2f  bench %.2f   server rss %ld KiB\n",
	       r->server_cpu_s, r->machine_cpu_s, r->bench_cpu_s, r->rss_kib);
	if (strcmp(r->mode, "step"))
		print_bench_line(r);
	fflush(stdout);
}

/* ---- throughput / latency ---- */

static int relay_step(double target_mbps, double secs, struct result *r)
{
	struct pair_snap *snap;
	struct hist *h;
	struct probe p0, p1;
	double pps_pair = 0, bcpu0, pace = 0;
	uint64_t t0, t_end;
	int i;

	memset(r, 0, sizeof(*r));
	r->mode = mode_names[o.mode];
	r->target_mbps = target_mbps;
	if (target_mbps > 0)
		pps_pair = target_mbps * 1e6 / 8.0 / (double)o.size / (double)o.pairs;
	snap = calloc((size_t)o.pairs, sizeof(*snap));
	h = calloc(1, sizeof(*h));
	if (!snap || !h) {
		free(snap);
		free(h);
		return -ENOMEM;
	}
	for (i = 0; i < o.pairs; i++) {
		struct pair *p = &g_pairs[i];

		snap[i] = (struct pair_snap){p->tx, p->rx, p->reordered, p->gaps,
					     p->bad_src + p->bad_len + p->bad_other};
	}
	for (i = 0; i < o.threads; i++)
		memset(g_workers[i].hist, 0, sizeof(struct hist));
	probe_take(&p0);
	bcpu0 = bench_cpu();
	t0 = now_ns();
	t_end = t0 + (uint64_t)(secs * 1e9);
	if (pps_pair > 0) {
		/*
		 * Pacing: latency mode refills for about two packets per pair, the
		 * throughput modes for about eight (a quarter of derper's 32-packet
		 * queue), so writes stay batched and cheap for the load generator
		 * without bursts that would overflow a relay queue. Each batch is
		 * stamped when it is built, so pacing adds nothing to the latency.
		 */
		double frames = o.mode == MODE_LATENCY ? 2.0 : 8.0;

		pace = frames * 1e9 / pps_pair;
		if (o.pace_us > 0)
			pace = o.pace_us * 1000.0;
		if (o.mode == MODE_LATENCY)
			pace = fmin(fmax(pace, 20000.0), 500000.0);
		else
			pace = fmin(fmax(pace, 50000.0), 5000000.0);
	}
	for (i = 0; i < o.threads; i++) {
		g_workers[i].pps_per_pair = pps_pair;
		g_workers[i].pace_ns = (uint64_t)pace;
		g_workers[i].t_end = t_end;
		g_workers[i].drain_max_ns = 3000000000ull;
		pthread_create(&g_workers[i].th, NULL, worker_main, &g_workers[i]);
	}
	for (i = 0; i < o.threads; i++)
		pthread_join(g_workers[i].th, NULL);
	r->secs = (double)(now_ns() - t0) / 1e9;
	if (r->secs > secs && !atomic_load(&g_failed))
		r->secs = secs; /* rates are over the sending window, not the drain */
	probe_take(&p1);
	r->bench_cpu_s = bench_cpu() - bcpu0;
	for (i = 0; i < o.pairs; i++) {
		struct pair *p = &g_pairs[i];

		r->tx += p->tx - snap[i].tx;
		r->rx += p->rx - snap[i].rx;
		r->reordered += p->reordered - snap[i].reordered;
		r->gaps += p->gaps - snap[i].gaps;
		r->bad += p->bad_src + p->bad_len + p->bad_other - snap[i].bad;
	}
	for (i = 0; i < o.threads; i++)
		hist_merge(h, g_workers[i].hist);
	r->offered_mbps = (double)r->tx * o.size * 8 / r->secs / 1e6;
	r->delivered_mbps = (double)r->rx * o.size * 8 / r->secs / 1e6;
	r->pps = (double)r->rx / r->secs;
	r->loss_pct =
		r->tx ? 100.0 * (double)(r->tx > r->rx ? r->tx - r->rx : 0) / (double)r->tx : 0;
	r->p50 = hist_pct(h, 50);
	r->p90 = hist_pct(h, 90);
	r->p99 = hist_pct(h, 99);
	r->p999 = hist_pct(h, 99.9);
	r->max_us = (double)h->max_ns / 1000.0;
	r->server_cpu_s =
		p0.have_server && p1.have_server ? p1.server_cpu_s - p0.server_cpu_s : NAN;
	r->machine_cpu_s = p1.machine_cpu_s - p0.machine_cpu_s;
	r->rss_kib = p1.rss_kib;
	r->fds = p1.fds;
	r->failed = atomic_load(&g_failed);
	free(snap);
	free(h);
	return r->failed ? -EPIPE : 0;
}

static int relay_setup(void)
{
	struct bench_link *links;
	struct hist *hs;
	double secs;
	int i, ret;

	links = calloc((size_t)o.pairs * 2, sizeof(*links));
	g_pairs = calloc((size_t)o.pairs, sizeof(*g_pairs));
	g_workers = calloc((size_t)o.threads, sizeof(*g_workers));
	hs = calloc(1, sizeof(*hs));
	if (!links || !g_pairs || !g_workers || !hs)
		return -ENOMEM;
	ret = dial_all(links, o.pairs * 2, &secs, hs);
	if (ret) {
		free(links);
		free(hs);
		return ret;
	}
	fprintf(stderr,
		"kderp-bench: %d clients connected in %.2f s (%.0f handshakes/s, p50 %.0f us)\n",
		o.pairs * 2, secs, o.pairs * 2 / secs, hist_pct(hs, 50));
	for (i = 0; i < o.threads; i++) {
		struct worker *w = &g_workers[i];

		w->id = i;
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		w->hist = calloc(1, sizeof(struct hist));
		w->pairs = calloc((size_t)o.pairs, sizeof(*w->pairs));
		if (w->ep < 0 || !w->hist || !w->pairs)
			return -ENOMEM;
	}
	for (i = 0; i < o.pairs; i++) {
		struct pair *p = &g_pairs[i];
		struct worker *w = &g_workers[i % o.threads];
		struct conn *cs[2] = {&p->snd, &p->rcv};
		int k;

		p->idx = i;
		p->snd.link = links[2 * i];
		p->rcv.link = links[2 * i + 1];
		p->snd.sender = true;
		for (k = 0; k < 2; k++) {
			struct epoll_event ev = {.events =
							 EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
						 .data.ptr = cs[k]};

			cs[k]->pair = p;
			cs[k]->rbuf = malloc(RBUF_SIZE);
			if (!cs[k]->rbuf)
				return -ENOMEM;
			ret = set_nonblock(cs[k]->link.fd);
			if (ret)
				return ret;
			if (epoll_ctl(w->ep, EPOLL_CTL_ADD, cs[k]->link.fd, &ev))
				return -errno;
		}
		pair_build_frames(p);
		w->pairs[w->npairs++] = p;
	}
	free(links);
	free(hs);
	return 0;
}

static void relay_teardown(void)
{
	int i;

	for (i = 0; g_pairs && i < o.pairs; i++) {
		bench_link_close(&g_pairs[i].snd.link);
		bench_link_close(&g_pairs[i].rcv.link);
		free(g_pairs[i].snd.rbuf);
		free(g_pairs[i].rcv.rbuf);
		free(g_pairs[i].obuf);
	}
	for (i = 0; g_workers && i < o.threads; i++) {
		if (g_workers[i].ep > 0)
			close(g_workers[i].ep);
		free(g_workers[i].hist);
		free(g_workers[i].pairs);
	}
	free(g_pairs);
	free(g_workers);
}

static void report_failure(void)
{
	fprintf(stderr, "kderp-bench: FAILED: %s\n", g_fail_msg);
	printf("FAILED: %s\n", g_fail_msg);
}

static int run_relay(void)
{
	struct result r;
	int ret;

	ret = relay_setup();
	if (ret) {
		if (ret != -ECONNREFUSED)
			fprintf(stderr, "kderp-bench: setup failed: %s\n", strerror(-ret));
		return EXIT_SETUP;
	}
	if (o.warmup > 0) {
		/* Same load, not reported: lets the server's heap and caches settle. */
		ret = relay_step(o.search	  ? sqrt(o.ramp_from * o.ramp_to)
					 : o.ramp ? o.ramp_from
						  : o.rate_mbps,
				 o.warmup, &r);
		if (ret) {
			print_relay_result(&r);
			relay_teardown();
			report_failure();
			return EXIT_MIDRUN;
		}
	}
	if (!o.ramp && !o.search) {
		ret = relay_step(o.rate_mbps, o.duration, &r);
		print_relay_result(&r);
		json_add_result(&r);
	} else {
		struct result best = {0};
		double rate = o.ramp_from, lo = o.ramp_from, hi = o.ramp_to;
		int lossy = 0, step;
		bool retried = false;

		/*
		 * --ramp walks up geometrically until two steps in a row lose too
		 * much or fall short of the target; --search bisects (in log scale)
		 * between FROM and TO, retrying a bad step once. A step is good if it loses less than
		 * --max-loss and delivers at least 90 % of its target. The ceiling
		 * is the highest delivered rate among the steps under the loss bound.
		 */
		for (step = 0; step < 64; step++) {
			bool good;

			if (o.search) {
				if (step >= o.search_steps)
					break;
				rate = sqrt(lo * hi);
			} else if (rate > o.ramp_to * 1.0001) {
				break;
			}
			ret = relay_step(rate, o.duration, &r);
			r.mode = "step";
			print_relay_result(&r);
			json_add_result(&r);
			if (ret)
				break;
			if (r.loss_pct < o.max_loss_pct && r.delivered_mbps > best.delivered_mbps)
				best = r;
			good = r.loss_pct < o.max_loss_pct && r.delivered_mbps >= 0.9 * rate;
			if (o.search && !good && !retried) {
				/* one retry: a single burst of outside load should not decide */
				retried = true;
				step--;
				continue;
			}
			retried = false;
			if (o.search) {
				if (good)
					lo = rate;
				else
					hi = rate;
				continue;
			}
			lossy = good ? 0 : lossy + 1;
			if (lossy >= 2)
				break;
			rate *= o.ramp_factor;
		}
		if (!ret) {
			printf("ceiling %-8s size=%d pairs=%d %s: %.1f Mbit/s delivered with < "
			       "%.1f %% "
			       "loss (target %.1f, p99 %.1f us)\n",
			       o.label, o.size, o.pairs, o.tgt.tls ? "tls" : "plain",
			       best.delivered_mbps, o.max_loss_pct, best.target_mbps, best.p99);
			best.mode = "ceiling";
			print_bench_line(&best);
			json_add_result(&best);
		}
	}
	relay_teardown();
	if (ret) {
		report_failure();
		return EXIT_MIDRUN;
	}
	return 0;
}

/* ---- idle ---- */

static int run_idle(void)
{
	struct bench_link *links;
	struct result r = {.mode = "idle"};
	struct probe p0, p1, p2;
	struct hist *hs;
	double secs, bcpu0;
	uint64_t t_end;
	int ep, i, dead = 0, ret = 0;

	links = calloc((size_t)o.clients, sizeof(*links));
	hs = calloc(1, sizeof(*hs));
	if (!links || !hs)
		return EXIT_SETUP;
	probe_take(&p0);
	bcpu0 = bench_cpu();
	if (dial_all(links, o.clients, &secs, hs)) {
		free(links);
		free(hs);
		return EXIT_SETUP;
	}
	probe_take(&p1);
	r.bench_cpu_s = bench_cpu() - bcpu0;
	r.clients = o.clients;
	r.hs_per_s = o.clients / secs;
	r.secs = secs;
	r.p50 = hist_pct(hs, 50);
	r.p99 = hist_pct(hs, 99);
	r.server_cpu_s = p0.have_server ? p1.server_cpu_s - p0.server_cpu_s : NAN;
	r.machine_cpu_s = p1.machine_cpu_s - p0.machine_cpu_s;

	/* Hold them: any close from the server during the hold is a failure. */
	ep = epoll_create1(EPOLL_CLOEXEC);
	for (i = 0; i < o.clients; i++) {
		struct epoll_event ev = {.events = EPOLLRDHUP, .data.u32 = (uint32_t)i};

		epoll_ctl(ep, EPOLL_CTL_ADD, links[i].fd, &ev);
	}
	t_end = now_ns() + (uint64_t)(o.hold * 1e9);
	while (!atomic_load(&g_stop)) {
		struct epoll_event evs[64];
		uint64_t now = now_ns();
		int n;

		if (now >= t_end)
			break;
		n = epoll_wait(ep, evs, 64, (int)((t_end - now) / 1000000) + 1);
		for (i = 0; i < n; i++) {
			struct epoll_event ev = {0};

			dead++;
			epoll_ctl(ep, EPOLL_CTL_DEL, links[evs[i].data.u32].fd, &ev);
		}
	}
	close(ep);
	probe_take(&p2);
	r.rss_before = p0.rss_kib;
	r.rss_after = p2.rss_kib;
	r.rss_kib = p2.rss_kib;
	r.fds_before = p0.fds;
	r.fds_after = p2.fds;
	if (p0.rss_kib >= 0 && p2.rss_kib >= 0)
		r.rss_per_client_kib = (double)(p2.rss_kib - p0.rss_kib) / o.clients;
	else
		r.rss_per_client_kib = NAN;
	r.failures = (uint64_t)dead;
	r.failed = dead > 0;
	printf("idle       %-8s clients=%d %s\n", o.label, o.clients, o.tgt.tls ? "tls" : "plain");
	printf("  handshakes %10.0f /s   (%d in %.2f s, %d threads; handshake p50 %.0f us p99 %.0f "
	       "us)\n",
	       r.hs_per_s, o.clients, secs, o.connect_threads, r.p50, r.p99);
	printf("  server rss %ld -> %ld KiB = %.2f KiB per client; fds %d -> %d\n", p0.rss_kib,
	       p2.rss_kib, r.rss_per_client_kib, p0.fds, p2.fds);
	printf("  cpu s      server %.2f  machine %.2f  bench %.2f (connect phase)\n",
	       r.server_cpu_s, r.machine_cpu_s, r.bench_cpu_s);
	printf("  held %.1f s: %d connections closed by the server\n", o.hold, dead);
	printf("BenchmarkIdle/clients=%d/%s-%d\t%d\t%.0f ns/op\t%.0f hs/s\t%.3f KiB/client\n",
	       o.clients, o.tgt.tls ? "tls" : "plain", ncpus(), o.clients, secs * 1e9 / o.clients,
	       r.hs_per_s, r.rss_per_client_kib);
	json_add_result(&r);
	for (i = 0; i < o.clients; i++)
		bench_link_close(&links[i]);
	free(links);
	free(hs);
	if (dead) {
		snprintf(g_fail_msg, sizeof(g_fail_msg), "%d idle connections closed by the server",
			 dead);
		report_failure();
		ret = EXIT_MIDRUN;
	}
	return ret;
}

/* ---- churn: connect, handshake, close, at a rate ---- */

struct churn_job {
	double rate_per_thread;
	uint64_t t_end;
	atomic_ullong ops, failures;
	pthread_mutex_t lock;
	struct hist *hs;
	char err[256];
};

static void *churn_thread(void *arg)
{
	struct churn_job *j = arg;
	uint64_t t0 = now_ns(), done = 0;
	char err[256];

	while (!atomic_load(&g_stop)) {
		struct bench_link l;
		uint64_t now = now_ns(), s;

		if (now >= j->t_end)
			break;
		if (j->rate_per_thread > 0) {
			uint64_t due = t0 + (uint64_t)((double)done * 1e9 / j->rate_per_thread);

			if (due > now) {
				struct timespec ts = {
					.tv_sec = (time_t)((due - now) / 1000000000ull),
					.tv_nsec = (long)((due - now) % 1000000000ull)};

				nanosleep(&ts, NULL);
				continue;
			}
		}
		s = now_ns();
		if (bench_dial(&o.tgt, &l, err, sizeof(err))) {
			atomic_fetch_add(&j->failures, 1);
			pthread_mutex_lock(&j->lock);
			if (!j->err[0])
				snprintf(j->err, sizeof(j->err), "%s", err);
			pthread_mutex_unlock(&j->lock);
		} else {
			pthread_mutex_lock(&j->lock);
			hist_add(j->hs, now_ns() - s);
			pthread_mutex_unlock(&j->lock);
			bench_link_close(&l);
		}
		atomic_fetch_add(&j->ops, 1);
		done++;
	}
	return NULL;
}

static int run_churn(void)
{
	struct churn_job j = {0};
	struct result r = {.mode = "churn"};
	struct probe p0, p1;
	pthread_t th[64];
	int nt = o.connect_threads > 64 ? 64 : o.connect_threads, i;
	uint64_t t0;

	if (nt < 1)
		nt = 1;
	j.hs = calloc(1, sizeof(*j.hs));
	if (!j.hs)
		return EXIT_SETUP;
	pthread_mutex_init(&j.lock, NULL);
	j.rate_per_thread = o.churn_rate > 0 ? o.churn_rate / nt : 0;
	probe_take(&p0);
	t0 = now_ns();
	j.t_end = t0 + (uint64_t)(o.duration * 1e9);
	for (i = 0; i < nt; i++)
		pthread_create(&th[i], NULL, churn_thread, &j);
	for (i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	r.secs = (double)(now_ns() - t0) / 1e9;
	/* let the server notice the last closes before sampling drift */
	usleep(500000);
	probe_take(&p1);
	r.ops = atomic_load(&j.ops);
	r.failures = atomic_load(&j.failures);
	r.hs_per_s = (double)(r.ops - r.failures) / r.secs;
	r.p50 = hist_pct(j.hs, 50);
	r.p99 = hist_pct(j.hs, 99);
	r.rss_before = p0.rss_kib;
	r.rss_after = p1.rss_kib;
	r.rss_kib = p1.rss_kib;
	r.fds_before = p0.fds;
	r.fds_after = p1.fds;
	r.server_cpu_s = p0.have_server ? p1.server_cpu_s - p0.server_cpu_s : NAN;
	r.machine_cpu_s = p1.machine_cpu_s - p0.machine_cpu_s;
	r.target_mbps = o.churn_rate;
	r.failed = r.failures > 0;
	printf("churn      %-8s rate=%s %s\n", o.label, o.churn_rate > 0 ? "fixed" : "unlimited",
	       o.tgt.tls ? "tls" : "plain");
	printf("  ops        %" PRIu64
	       " in %.2f s = %.0f handshakes/s (%d threads), failures %" PRIu64 "\n",
	       r.ops, r.secs, r.hs_per_s, nt, r.failures);
	printf("  handshake  p50 %.0f us  p99 %.0f us\n", r.p50, r.p99);
	printf("  server     fds %d -> %d (drift %+d), rss %ld -> %ld KiB (drift %+ld)\n", p0.fds,
	       p1.fds, p1.fds - p0.fds, p0.rss_kib, p1.rss_kib, p1.rss_kib - p0.rss_kib);
	printf("  cpu s      server %.2f  machine %.2f\n", r.server_cpu_s, r.machine_cpu_s);
	printf("BenchmarkChurn/%s-%d\t%" PRIu64 "\t%.0f ns/op\t%.0f hs/s\t%" PRIu64 " failures\n",
	       o.tgt.tls ? "tls" : "plain", ncpus(), r.ops ? r.ops : 1,
	       r.ops ? r.secs * 1e9 / (double)r.ops : 0.0, r.hs_per_s, r.failures);
	if (r.failures)
		printf("  first failure: %s\n", j.err);
	json_add_result(&r);
	pthread_mutex_destroy(&j.lock);
	free(j.hs);
	return r.failures ? EXIT_MIDRUN : 0;
}

/* STUN hook: see bench_stun_run() in bench.h; -P, --label and --scenario go along. */
void bench_stun_set_context(int server_pid, const char *label, const char *scenario)
	__attribute__((weak));

static int run_stun(void)
{
	if (!bench_stun_run) {
		fprintf(stderr, "kderp-bench: stun mode is not built into this binary\n");
		return 4;
	}
	if (bench_stun_set_context)
		bench_stun_set_context(o.server_pid, o.label, o.scenario);
	return bench_stun_run(&o.tgt, o.rate_mbps, o.duration, g_json) ? EXIT_MIDRUN : 0;
}

/* ---- safety: only loopback or a private network namespace ---- */

static bool target_is_local(void)
{
	struct stat self, init;

	if (o.tgt.addr.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&o.tgt.addr;

		if ((ntohl(a->sin_addr.s_addr) >> 24) == 127)
			return true;
	} else if (o.tgt.addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&o.tgt.addr;

		if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127)
			return true;
	}
	/* Inside a network namespace of its own, traffic stays on this host. */
	if (!stat("/proc/self/ns/net", &self) && !stat("/proc/1/ns/net", &init) &&
	    self.st_ino != init.st_ino)
		return true;
	return false;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kderp-bench MODE -s HOST:PORT [options]\n"
		"modes: throughput | latency | idle | churn | stun\n"
		"  -s, --server HOST:PORT   DERP server (plain HTTP unless --tls)\n"
		"      --tls                connect with TLS\n"
		"      --sni NAME           TLS server name (default: HOST)\n"
		"      --ca FILE            verify the server certificate against FILE\n"
		"  -p, --pairs N            sender/receiver pairs (default 10)\n"
		"  -S, --size BYTES         packet payload size (default 1400, min %d)\n"
		"  -r, --rate MBIT          total offered payload rate, 0 = unlimited (default);\n"
		"                           churn: connections per second; stun: requests per "
		"second\n"
		"  -t, --duration SECS      run (or ramp step) length (default 5)\n"
		"  -T, --threads N          load threads (default 1)\n"
		"      --connect-threads N  parallel handshakes (default 4)\n"
		"      --ramp FROM:FACTOR:TO  throughput ramp in Mbit/s; reports the ceiling\n"
		"      --search LO:HI:STEPS bisect the ceiling between LO and HI Mbit/s\n"
		"      --max-loss PCT       loss bound for the ceiling (default 1)\n"
		"  -n, --clients N          idle: clients to open (default 1000)\n"
		"      --hold SECS          idle: how long to hold them (default 2)\n"
		"  -P, --server-pid PID     sample the server's CPU, RSS and fds\n"
		"      --label NAME         server name in reports (default server)\n"
		"      --scenario NAME      scenario name in JSON\n"
		"      --json FILE          append results as a JSON array to FILE\n"
		"      --warmup SECS        unreported warm-up step before measuring\n"
		"      --pace-us US         rate mode: token refill interval (default: auto)\n"
		"      --allow-remote       allow a target outside loopback/private netns\n"
		"exit: 0 ok, 1 usage, 2 connect/handshake refused, 3 failed mid-run\n",
		PAYLOAD_MIN);
}

static int parse_hostport(const char *s)
{
	const char *colon;

	if (s[0] == '[') {
		const char *end = strchr(s, ']');

		if (!end || end[1] != ':')
			return -EINVAL;
		snprintf(o.tgt.host, sizeof(o.tgt.host), "%.*s", (int)(end - s - 1), s + 1);
		snprintf(o.tgt.port, sizeof(o.tgt.port), "%s", end + 2);
		return 0;
	}
	colon = strrchr(s, ':');
	if (!colon)
		return -EINVAL;
	snprintf(o.tgt.host, sizeof(o.tgt.host), "%.*s", (int)(colon - s), s);
	snprintf(o.tgt.port, sizeof(o.tgt.port), "%s", colon + 1);
	return 0;
}

static void raise_nofile(int need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	if (rl.rlim_cur >= (rlim_t)need)
		return;
	if (rl.rlim_max < (rlim_t)need) {
		rl.rlim_max = (rlim_t)need;
		rl.rlim_cur = (rlim_t)need;
		if (!setrlimit(RLIMIT_NOFILE, &rl))
			return;
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	rl.rlim_cur = rl.rlim_max < (rlim_t)need ? rl.rlim_max : (rlim_t)need;
	setrlimit(RLIMIT_NOFILE, &rl);
}

static void on_signal(int sig)
{
	atomic_store(&g_stop, 1);
}

int main(int argc, char **argv)
{
	enum {
		O_TLS = 256,
		O_SNI,
		O_CA,
		O_CT,
		O_RAMP,
		O_MAXLOSS,
		O_HOLD,
		O_LABEL,
		O_SCEN,
		O_JSON,
		O_REMOTE,
		O_PACE,
		O_SEARCH,
		O_WARMUP
	};
	static const struct option lo[] = {
		{"server", required_argument, NULL, 's'},
		{"tls", no_argument, NULL, O_TLS},
		{"sni", required_argument, NULL, O_SNI},
		{"ca", required_argument, NULL, O_CA},
		{"pairs", required_argument, NULL, 'p'},
		{"size", required_argument, NULL, 'S'},
		{"rate", required_argument, NULL, 'r'},
		{"duration", required_argument, NULL, 't'},
		{"threads", required_argument, NULL, 'T'},
		{"connect-threads", required_argument, NULL, O_CT},
		{"ramp", required_argument, NULL, O_RAMP},
		{"max-loss", required_argument, NULL, O_MAXLOSS},
		{"clients", required_argument, NULL, 'n'},
		{"hold", required_argument, NULL, O_HOLD},
		{"server-pid", required_argument, NULL, 'P'},
		{"label", required_argument, NULL, O_LABEL},
		{"scenario", required_argument, NULL, O_SCEN},
		{"json", required_argument, NULL, O_JSON},
		{"allow-remote", no_argument, NULL, O_REMOTE},
		{"pace-us", required_argument, NULL, O_PACE},
		{"search", required_argument, NULL, O_SEARCH},
		{"warmup", required_argument, NULL, O_WARMUP},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct sigaction sa = {.sa_handler = on_signal};
	char err[256];
	int c, i, ret;

	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	for (i = 0; i < (int)(sizeof(mode_names) / sizeof(mode_names[0])); i++)
		if (!strcmp(argv[1], mode_names[i]))
			break;
	if (i == (int)(sizeof(mode_names) / sizeof(mode_names[0]))) {
		fprintf(stderr, "kderp-bench: unknown mode `%s'\n", argv[1]);
		usage(stderr);
		return EXIT_USAGE;
	}
	o.mode = (enum mode)i;
	optind = 2;
	while ((c = getopt_long(argc, argv, "s:p:S:r:t:T:n:P:h", lo, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_hostport(optarg)) {
				fprintf(stderr, "kderp-bench: bad server `%s' (want HOST:PORT)\n",
					optarg);
				return EXIT_USAGE;
			}
			break;
		case O_TLS:
			o.tgt.tls = true;
			break;
		case O_SNI:
			snprintf(o.tgt.sni, sizeof(o.tgt.sni), "%s", optarg);
			break;
		case O_CA:
			o.tgt.ca_file = optarg;
			break;
		case 'p':
			o.pairs = atoi(optarg);
			break;
		case 'S':
			o.size = atoi(optarg);
			break;
		case 'r':
			o.rate_mbps = atof(optarg);
			o.churn_rate = o.rate_mbps;
			break;
		case 't':
			o.duration = atof(optarg);
			break;
		case 'T':
			o.threads = atoi(optarg);
			break;
		case O_CT:
			o.connect_threads = atoi(optarg);
			break;
		case O_RAMP:
			if (sscanf(optarg, "%lf:%lf:%lf", &o.ramp_from, &o.ramp_factor,
				   &o.ramp_to) != 3 ||
			    o.ramp_from <= 0 || o.ramp_factor <= 1.0 || o.ramp_to < o.ramp_from) {
				fprintf(stderr, "kderp-bench: bad --ramp `%s'\n", optarg);
				return EXIT_USAGE;
			}
			o.ramp = true;
			break;
		case O_MAXLOSS:
			o.max_loss_pct = atof(optarg);
			break;
		case 'n':
			o.clients = atoi(optarg);
			break;
		case O_HOLD:
			o.hold = atof(optarg);
			break;
		case 'P':
			o.server_pid = atoi(optarg);
			break;
		case O_LABEL:
			o.label = optarg;
			break;
		case O_SCEN:
			o.scenario = optarg;
			break;
		case O_JSON:
			o.json_path = optarg;
			break;
		case O_REMOTE:
			o.allow_remote = true;
			break;
		case O_SEARCH:
			if (sscanf(optarg, "%lf:%lf:%d", &o.ramp_from, &o.ramp_to,
				   &o.search_steps) != 3 ||
			    o.ramp_from <= 0 || o.ramp_to <= o.ramp_from || o.search_steps < 1 ||
			    o.search_steps > 30) {
				fprintf(stderr, "kderp-bench: bad --search `%s'\n", optarg);
				return EXIT_USAGE;
			}
			o.search = true;
			break;
		case O_WARMUP:
			o.warmup = atof(optarg);
			break;
		case O_PACE:
			o.pace_us = atof(optarg);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (!o.tgt.host[0]) {
		fprintf(stderr, "kderp-bench: -s HOST:PORT is required\n");
		return EXIT_USAGE;
	}
	if (o.size < PAYLOAD_MIN || o.size > 65536 || o.pairs < 1 || o.pairs > 100000 ||
	    o.threads < 1 || o.threads > 64 || o.duration <= 0 || o.duration > 3600 ||
	    o.clients < 1 || o.clients > 1000000 || o.hold < 0 || o.hold > 3600) {
		fprintf(stderr, "kderp-bench: an option is out of range\n");
		return EXIT_USAGE;
	}
	if (o.mode == MODE_LATENCY && o.rate_mbps <= 0) {
		fprintf(stderr, "kderp-bench: latency mode needs --rate\n");
		return EXIT_USAGE;
	}
	if (o.threads > o.pairs)
		o.threads = o.pairs;
	ret = bench_target_init(&o.tgt, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "kderp-bench: %s\n", err);
		return EXIT_SETUP;
	}
	if (!o.allow_remote && !target_is_local()) {
		fprintf(stderr,
			"kderp-bench: refusing to load %s: not loopback and not in a private "
			"network "
			"namespace (use --allow-remote)\n",
			o.tgt.host);
		return EXIT_USAGE;
	}
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile((o.mode == MODE_IDLE ? o.clients : o.pairs * 2) + 64);
	if (o.json_path) {
		json_error_t jerr;

		g_json = json_load_file(o.json_path, 0, &jerr);
		if (!g_json || !json_is_array(g_json)) {
			json_decref(g_json);
			g_json = json_array();
		}
	}

	switch (o.mode) {
	case MODE_THROUGHPUT:
	case MODE_LATENCY:
		ret = run_relay();
		break;
	case MODE_IDLE:
		ret = run_idle();
		break;
	case MODE_CHURN:
		ret = run_churn();
		break;
	case MODE_STUN:
	default:
		ret = run_stun();
		break;
	}
	if (g_json) {
		if (json_dump_file(g_json, o.json_path, JSON_INDENT(1)))
			fprintf(stderr, "kderp-bench: cannot write %s\n", o.json_path);
		json_decref(g_json);
	}
	bench_target_fini(&o.tgt);
	return ret;
}
