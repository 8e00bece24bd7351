// SPDX-License-Identifier: MIT
/*
 * derp_daemon.c - a private DERP server per test (see derp_daemon.h).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "harness.h"
#include "derp_daemon.h"

/* A TCP port on 127.0.0.1 that is free right now. */
static uint16_t dd_free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	uint16_t port = 0;

	if (fd < 0)
		return 0;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

bool dd_alive(const struct derp_daemon *d)
{
	int st;

	if (d->pid <= 0)
		return false;
	return waitpid(d->pid, &st, WNOHANG) == 0;
}

/* Which binary to run; -ENOENT if none is configured or it is missing. */
static int dd_find_bin(struct derp_daemon *d)
{
	const char *bin = getenv("KDERP_DAEMON");
	const char *out = getenv("KDERP_OUTPUT");

	if (bin && *bin) {
		snprintf(d->bin, sizeof(d->bin), "%s", bin);
	} else if (out && *out) {
		snprintf(d->bin, sizeof(d->bin), "%s/kderpd", out);
	} else {
		/* run by hand: tests live in $(OUTPUT)/selftests, the daemon in $(OUTPUT) */
		char self[400];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		char *slash;

		if (n <= 0)
			return -ENOENT;
		self[n] = 0;
		slash = strrchr(self, '/');
		if (!slash)
			return -ENOENT;
		*slash = 0;
		snprintf(d->bin, sizeof(d->bin), "%s/../kderpd", self);
	}
	return access(d->bin, X_OK) == 0 ? 0 : -ENOENT;
}

/* Start the server and wait until it accepts connections (up to 10 s). */
static int dd_start_once(struct derp_daemon *d, const char *const *extra)
{
	char addr[32], certdir[220], bpffs_arg[240];
	const char *slash;
	const char *argv[40];
	const char *tmp;
	int n = 0, err;

	if (sodium_init() < 0)
		return -EIO;
	err = dd_find_bin(d);
	if (err)
		return err;
	tmp = getenv("TMPDIR");
	if (!tmp || !*tmp || strlen(tmp) > 150)
		tmp = "/tmp";
	snprintf(d->dir, sizeof(d->dir), "%s/kderp-test.XXXXXX", tmp);
	if (!mkdtemp(d->dir))
		return -errno;
	snprintf(d->log_path, sizeof(d->log_path), "%s/stderr.log", d->dir);
	snprintf(d->key_path, sizeof(d->key_path), "%s/key", d->dir);
	d->port = dd_free_port();
	if (!d->port)
		return -EADDRNOTAVAIL;
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", d->port);
	argv[n++] = d->bin;
	argv[n++] = "-a";
	argv[n++] = addr;
	argv[n++] = "-c";
	argv[n++] = d->key_path;
	argv[n++] = "--stun=false";
	/*
	 * kderpd pins its state maps in one bpffs directory and refuses to
	 * share it with another running instance: give each server its own
	 * (a derper has no such flag).
	 */
	slash = strrchr(d->bin, '/');
	d->is_kderpd = !strcmp(slash ? slash + 1 : d->bin, "kderpd");
	if (d->is_kderpd) {
		tmp = getenv("KDERP_BPFFS_DIR");
		snprintf(d->bpffs, sizeof(d->bpffs), "%s-test-%u",
			 tmp && *tmp && strlen(tmp) < 150 ? tmp : "/sys/fs/bpf/kderp", d->port);
		snprintf(bpffs_arg, sizeof(bpffs_arg), "--bpffs-dir=%s", d->bpffs);
		argv[n++] = bpffs_arg;
	}

	if (d->tls) {
		snprintf(certdir, sizeof(certdir), "--certdir=%s", d->dir);
		snprintf(d->crt_path, sizeof(d->crt_path), "%s/127.0.0.1.crt", d->dir);
		argv[n++] = "--certmode=manual";
		argv[n++] = "--hostname=127.0.0.1";
		argv[n++] = certdir;
		argv[n++] = "--http-port=-1";
	}
	for (int i = 0; extra && extra[i] && n < 39; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;

	fflush(stdout);
	d->pid = fork();
	if (d->pid < 0)
		return -errno;
	if (d->pid == 0) {
		int fd = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		/*
		 * Under ASan, freed memory sits in a quarantine (256 MB by default)
		 * and would read as growth in the RSS checks; keep it small.
		 */
		if (!getenv("ASAN_OPTIONS"))
			setenv("ASAN_OPTIONS", "quarantine_size_mb=1", 1);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct derpc c;
		struct derpc_opts o = {.host = "127.0.0.1", .port = d->port, .timeout_ms = 200};

		if (!dd_alive(d))
			return -ECHILD;
		derpc_init(&c, NULL);
		if (derpc_dial(&c, &o) == 0) {
			derpc_close(&c);
			/* TLS: the cert is written before the listener opens */
			return d->tls && access(d->crt_path, R_OK) ? -ENOENT : 0;
		}
		usleep(20000);
	}
	return -ETIMEDOUT;
}

int dd_start(struct derp_daemon *d, const char *const *extra)
{
	bool tls = d->tls;
	int err;

	for (int attempt = 0;; attempt++) {
		char line[256];

		err = dd_start_once(d, extra);
		if (err != -ECHILD || attempt == 2 ||
		    !dd_log_line(d, 0, "in use", NULL, line, sizeof(line), 0))
			return err;
		dd_stop(d);
		memset(d, 0, sizeof(*d));
		d->tls = tls;
	}
}

/* Print the tail of the server log as TAP comments. */
void dd_dump_log(const struct derp_daemon *d, int max_lines)
{
	char line[512];
	long total = 0, skip;
	FILE *f = fopen(d->log_path, "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		total++;
	skip = total > max_lines ? total - max_lines : 0;
	rewind(f);
	printf("# --- server log (%ld lines, last %ld) ---\n", total, total - skip);
	while (fgets(line, sizeof(line), f)) {
		if (skip-- > 0)
			continue;
		printf("#   %s%s", line, strchr(line, '\n') ? "" : "\n");
	}
	fclose(f);
}

void dd_stop(struct derp_daemon *d)
{
	if (d->pid > 0) {
		int st;

		kill(d->pid, SIGTERM);
		for (int i = 0; i < 100; i++) {
			if (waitpid(d->pid, &st, WNOHANG) != 0) {
				d->pid = 0;
				break;
			}
			usleep(20000);
		}
		if (d->pid > 0) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &st, 0);
			d->pid = 0;
		}
	}
	if (d->bpffs[0]) {
		/* a clean exit removes the pins; a killed server leaves them */
		DIR *dir = opendir(d->bpffs);
		struct dirent *de;
		char p[512];

		while (dir && (de = readdir(dir))) {
			if (de->d_name[0] == '.')
				continue;
			snprintf(p, sizeof(p), "%s/%s", d->bpffs, de->d_name);
			unlink(p);
		}
		if (dir)
			closedir(dir);
		rmdir(d->bpffs);
		d->bpffs[0] = 0;
	}
	if (d->dir[0]) {
		char p[260];

		unlink(d->log_path);
		unlink(d->key_path);
		if (d->tls) {
			unlink(d->crt_path);
			snprintf(p, sizeof(p), "%s/127.0.0.1.key", d->dir);
			unlink(p);
		}
		rmdir(d->dir);
		d->dir[0] = 0;
	}
}

/* A /proc/PID/status field in kB (VmRSS, VmHWM, ...), or -1. */
long dd_status_kb(const struct derp_daemon *d, const char *field)
{
	char path[64], line[256];
	size_t fl = strlen(field);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
			v = strtol(line + fl + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

long dd_rss_kb(const struct derp_daemon *d)
{
	return dd_status_kb(d, "VmRSS");
}

bool dd_is_asan(const struct derp_daemon *d)
{
	char path[64], line[512];
	bool asan = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)d->pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	while (!asan && fgets(line, sizeof(line), f))
		asan = strstr(line, "libasan") != NULL;
	fclose(f);
	return asan;
}

long dd_rss_slack_kb(const struct derp_daemon *d, long kb)
{
	return dd_is_asan(d) ? 4 * kb : kb;
}

int dd_fd_count(const struct derp_daemon *d)
{
	char path[64];
	struct dirent *e;
	int n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
	dir = opendir(path);
	if (!dir)
		return -1;
	while ((e = readdir(dir)))
		if (e->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

long dd_log_size(const struct derp_daemon *d)
{
	struct stat st;

	return stat(d->log_path, &st) == 0 ? (long)st.st_size : 0;
}

bool dd_log_line(const struct derp_daemon *d, long since, const char *needle, const char *needle2,
		 char *out, size_t cap, int wait_ms)
{
	int64_t deadline = derpc_now_ms() + wait_ms;

	do {
		char line[1024];
		bool found = false;
		FILE *f = fopen(d->log_path, "r");

		if (f && fseek(f, since, SEEK_SET) == 0) {
			while (!found && fgets(line, sizeof(line), f))
				found = strcasestr(line, needle) &&
					(!needle2 || strcasestr(line, needle2));
		}
		if (f)
			fclose(f);
		if (found) {
			line[strcspn(line, "\n")] = 0;
			size_t l = strlen(line);

			if (l >= cap)
				l = cap - 1;
			memcpy(out, line, l);
			out[l] = 0;
			return true;
		}
		usleep(20000);
	} while (derpc_now_ms() < deadline);
	return false;
}

void dd_local_addr(const struct derpc *c, char *out, size_t cap)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);

	if (getsockname(derpc_fd(c), (struct sockaddr *)&sa, &sl) == 0)
		snprintf(out, cap, "127.0.0.1:%u", ntohs(sa.sin_port));
	else
		snprintf(out, cap, "?");
}

void dd_opts(const struct derp_daemon *d, struct derpc_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->port = d->port;
	o->timeout_ms = 5000;
	if (d->tls) {
		o->tls = true;
		o->ca_file = d->crt_path;
		o->sni = "127.0.0.1";
	}
}

int dd_connect(const struct derp_daemon *d, struct derpc *c)
{
	struct derpc_opts o;

	dd_opts(d, &o);
	derpc_init(c, NULL);
	return derpc_connect(c, &o);
}

int dd_upgraded(const struct derp_daemon *d, struct derpc *c)
{
	struct derpc_opts o;
	int err;

	dd_opts(d, &o);
	derpc_init(c, NULL);
	err = derpc_dial(c, &o);
	if (!err)
		err = derpc_send_upgrade(c, &o);
	if (!err)
		err = derpc_read_upgrade(c, 5000);
	if (!err)
		err = derpc_read_server_key(c, 5000);
	if (err)
		derpc_close(c);
	return err;
}

int dd_dial(const struct derp_daemon *d, struct derpc *c)
{
	struct derpc_opts o;

	dd_opts(d, &o);
	derpc_init(c, NULL);
	return derpc_dial(c, &o);
}

int dd_relay_once(struct derpc *a, struct derpc *b, int timeout_ms)
{
	int64_t t0 = derpc_now_ms(), deadline = t0 + timeout_ms;
	uint8_t pkt[48], got[64], src[DERP_KEY_LEN];
	int err;

	randombytes_buf(pkt, sizeof(pkt));
	err = derpc_send_packet(a, b->key.pub, pkt, sizeof(pkt));
	if (err)
		return err;
	for (;;) {
		int64_t left = deadline - derpc_now_ms();
		size_t n = 0;

		if (left <= 0)
			return -ETIMEDOUT;
		err = derpc_recv_packet(b, src, got, sizeof(got), &n, (int)left);
		if (err)
			return err;
		if (n == sizeof(pkt) && !memcmp(src, a->key.pub, DERP_KEY_LEN) &&
		    !memcmp(got, pkt, n))
			return (int)(derpc_now_ms() - t0);
	}
}

void dd_setup(struct __test_metadata *_metadata, struct derp_daemon *d, const char *const *extra)
{
	int err;

	signal(SIGPIPE, SIG_IGN);
	err = dd_start(d, extra);
	if (err == -ENOENT)
		TH_LOG("no server binary: set KDERP_OUTPUT (make test does) or KDERP_DAEMON");
	ASSERT_EQ(0, err);
}

void dd_teardown(struct __test_metadata *_metadata, struct derp_daemon *d)
{
	if (_metadata->failed)
		dd_dump_log(d, 30);
	dd_stop(d);
}

void dd_client(struct __test_metadata *_metadata, const struct derp_daemon *d, struct derpc *c)
{
	ASSERT_EQ(0, dd_connect(d, c));
}
