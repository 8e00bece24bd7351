// SPDX-License-Identifier: MIT
/*
 * ktls_badinput.c - hostile TLS input to kderpd while the kernel owns the
 * record layer (kTLS).
 *
 * Each case starts kderpd with a self-signed certificate for 127.0.0.1,
 * connects a healthy pair of DERP clients and one "bad" client over TLS, all
 * three through the whole HTTP upgrade and DERP handshake, checks from
 * kderpd's open line (and /proc/net/tls_stat) that the server really put the
 * bad connection into kTLS, and then sends, on the bad connection only:
 *
 *   garbage          bytes that are no TLS record, written to the socket
 *   close_notify     a TLS alert (warning level): SSL_shutdown
 *   fatal_alert      a fatal bad_record_mac alert, encrypted by OpenSSL: the
 *                    client is fed a forged record and answers with the alert
 *   bad_tag          a well-formed application_data record header with
 *                    random ciphertext (the AEAD tag cannot match)
 *   renegotiation    TLS 1.2 only: SSL_renegotiate, a new ClientHello
 *   key_update       TLS 1.3 only: KeyUpdate(update_requested), then data
 *
 * Every case must end the same way: the server closes that connection within
 * a few seconds, logs a close line for it with the expected reason, the
 * healthy pair still relays both ways, kderpd lives and the kernel log
 * (/dev/kmsg, from where it stood before the case) has no WARNING, BUG or
 * Oops. Variants: TLS 1.2 (--tls-max=1.2: kTLS send and receive in the
 * kernel with OpenSSL 3.0, mode ktls-txrx) and TLS 1.3 (kTLS send only,
 * OpenSSL decrypts: ktls-tx).
 *
 * As root the case runs in a private network namespace, so the tls_stat
 * counters are exact. Without the TLS ULP (CONFIG_TLS unset, as on the
 * development host) every case SKIPs: there is no kTLS to test.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sodium.h>

#include "harness.h"
#include "ktls_stat.h"
#include "ktls_util.h"
#include "derpc.h"
#include "derp_daemon.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define WAIT_MS 5000

/* ---- kernel facts ---- */

/* /dev/kmsg, positioned at its end: later reads see only new records. */
static int kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (lseek(fd, 0, SEEK_END) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/*
 * Append a line to the kernel log (root only), so the reader can prove it
 * sees what was logged after kmsg_open. 0 or -errno.
 */
static int kmsg_mark(const char *mark)
{
	char line[160];
	int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC), n, err = 0;

	if (fd < 0)
		return -errno;
	n = snprintf(line, sizeof(line), "<6>%s\n", mark);
	if (write(fd, line, (size_t)n) != n)
		err = -EIO;
	close(fd);
	return err;
}

/*
 * Number of kernel log records since kmsg_open that report a kernel problem;
 * each is printed as a TAP comment. *seen tells whether mark went by.
 */
static int kmsg_problems(int fd, const char *mark, bool *seen)
{
	static const char *const bad[] = {
		"WARNING:",    "BUG:",	"Oops",	 "general protection",
		"refcount_t:", "KASAN", "UBSAN", "Call Trace",
	};
	char rec[2048];
	int n = 0;

	*seen = false;
	for (int i = 0; i < 100000; i++) {
		ssize_t r = read(fd, rec, sizeof(rec) - 1);

		if (r < 0 && errno == EPIPE)
			continue; /* overwritten while we read: go on with the next */
		if (r <= 0)
			break;
		rec[r] = 0;
		if (mark && strstr(rec, mark)) {
			*seen = true;
			continue;
		}
		for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			if (strstr(rec, bad[k])) {
				rec[strcspn(rec, "\n")] = 0;
				printf("# kernel: %s\n", rec);
				n++;
				break;
			}
		}
	}
	return n;
}

/* ---- the bad client's side ---- */

/*
 * Wait until the peer closes the TCP connection (FIN or reset), reading the
 * raw socket and discarding what arrives. 0, or -ETIMEDOUT.
 */
static int wait_tcp_closed(int fd, int timeout_ms)
{
	int64_t deadline = derpc_now_ms() + timeout_ms;
	char sink[4096];

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - derpc_now_ms();
		ssize_t r;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
			return -errno;
		r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE)))
			return 0;
		if (r < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
	}
}

static int send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL);

		if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			struct pollfd pf = {.fd = fd, .events = POLLOUT};

			if (poll(&pf, 1, WAIT_MS) <= 0)
				return -ETIMEDOUT;
			continue;
		}
		if (w < 0)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* An application_data record: legacy version 3.3, len bytes of random "ciphertext". */
static size_t forged_record(uint8_t *buf, size_t len)
{
	buf[0] = 23;
	buf[1] = 3;
	buf[2] = 3;
	buf[3] = (uint8_t)(len >> 8);
	buf[4] = (uint8_t)len;
	randombytes_buf(buf + 5, len);
	return 5 + len;
}

static void log_ssl_errors(void)
{
	unsigned long e;
	char buf[256];

	while ((e = ERR_get_error())) {
		ERR_error_string_n(e, buf, sizeof(buf));
		printf("# openssl: %s\n", buf);
	}
}

/* ---- fixture ---- */

enum bad_input {
	BAD_GARBAGE,
	BAD_CLOSE_NOTIFY,
	BAD_FATAL_ALERT,
	BAD_TAG,
	BAD_RENEGOTIATION,
	BAD_KEY_UPDATE,
};

FIXTURE(ktls_bad)
{
	struct derp_daemon d;
	struct derpc a, b, bad;
	char bad_addr[64], a_addr[64], b_addr[64];
	char mode[16]; /* the bad connection's TLS mode as kderpd logged it */
	int kmsg; /* /dev/kmsg at the start, or -errno */
	bool own_netns;
	struct ktls_stat st0; /* with all three connected */
};

FIXTURE_VARIANT(ktls_bad)
{
	int version; /* TLS1_2_VERSION or TLS1_3_VERSION */
	const char *tls_max; /* kderpd flag, or NULL for its default (1.3) */
};

FIXTURE_VARIANT_ADD(ktls_bad, tls12){
	.version = TLS1_2_VERSION,
	.tls_max = "--tls-max=1.2",
};

FIXTURE_VARIANT_ADD(ktls_bad, tls13){
	.version = TLS1_3_VERSION,
	.tls_max = NULL,
};

/* "ktls-txrx" or "ktls-tx" (or "tls") from kderpd's open line for addr. */
static bool conn_mode(const struct derp_daemon *d, const char *addr, char *mode, size_t cap)
{
	char line[512], *p;
	size_t n;

	if (!dd_log_line(d, 0, " open: ", addr, line, sizeof(line), WAIT_MS))
		return false;
	p = strstr(line, addr);
	p = p ? strchr(p, '(') : NULL;
	if (!p)
		return false;
	p++;
	n = strcspn(p, ",)");
	if (n >= cap)
		n = cap - 1;
	memcpy(mode, p, n);
	mode[n] = 0;
	return true;
}

FIXTURE_SETUP(ktls_bad)
{
	const char *extra[] = {variant->tls_max, NULL};
	char mode[16];

	self->kmsg = -1;
	derpc_init(&self->a, NULL);
	derpc_init(&self->b, NULL);
	derpc_init(&self->bad, NULL);
	if (!have_tls_ulp())
		SKIP(return, "kernel has no TLS ULP (CONFIG_TLS unset or tls.ko not loaded)");
	if (geteuid() == 0) {
		ASSERT_EQ(0, private_netns());
		self->own_netns = true;
	}
	self->kmsg = kmsg_open();
	if (self->kmsg < 0)
		TH_LOG("no kernel log check: /dev/kmsg: %s", strerror(-self->kmsg));

	self->d.tls = true;
	dd_setup(_metadata, &self->d, extra);
	if (!self->d.is_kderpd)
		SKIP(return, "the server is not kderpd (it logs no TLS mode)");
	dd_client(_metadata, &self->d, &self->a);
	dd_client(_metadata, &self->d, &self->b);
	dd_client(_metadata, &self->d, &self->bad);
	ASSERT_EQ(variant->version, SSL_version(derpc_ssl(&self->bad)));
	dd_local_addr(&self->a, self->a_addr, sizeof(self->a_addr));
	dd_local_addr(&self->b, self->b_addr, sizeof(self->b_addr));
	dd_local_addr(&self->bad, self->bad_addr, sizeof(self->bad_addr));

	/* kderpd put every connection into kTLS, as documented for OpenSSL 3.0 */
	ASSERT_TRUE(conn_mode(&self->d, self->bad_addr, self->mode, sizeof(self->mode)));
	ASSERT_TRUE(conn_mode(&self->d, self->a_addr, mode, sizeof(mode)));
	ASSERT_STREQ(self->mode, mode);
	TH_LOG("%s: bad client %s in mode %s", SSL_get_version(derpc_ssl(&self->bad)),
	       self->bad_addr, self->mode);
	if (variant->version == TLS1_2_VERSION)
		ASSERT_STREQ("ktls-txrx", self->mode);
	else
		ASSERT_EQ(0, strncmp(self->mode, "ktls-tx", 7));

	/* and the kernel agrees: one TX (and for ktls-txrx, RX) context each */
	ktls_stat(_metadata, &self->st0);
	if (self->own_netns) {
		ASSERT_EQ(3, self->st0.curr_tx_sw);
		ASSERT_EQ(strcmp(self->mode, "ktls-txrx") ? 0 : 3, self->st0.curr_rx_sw);
	} else {
		ASSERT_LE(3, self->st0.curr_tx_sw);
	}
	ASSERT_LE(0, dd_relay_once(&self->a, &self->b, WAIT_MS));
}

FIXTURE_TEARDOWN(ktls_bad)
{
	log_ssl_errors();
	if (_metadata->failed && self->d.pid > 0)
		dd_dump_log(&self->d, 30);
	derpc_close(&self->bad);
	derpc_close(&self->a);
	derpc_close(&self->b);
	dd_teardown(_metadata, &self->d);
	if (self->kmsg >= 0)
		close(self->kmsg);
}

/*
 * The close reason kderpd must log, by what reads the connection: the kernel
 * (ktls-txrx: read() on the socket) or OpenSSL (ktls-tx: SSL_read).
 */
static const char *expected_reason(enum bad_input what, bool kernel_rx)
{
	switch (what) {
	case BAD_GARBAGE:
		/* the kernel rejects the record header (length or version) */
		return kernel_rx ? "invalid TLS record" : "TLS read: ";
	case BAD_CLOSE_NOTIFY:
		return kernel_rx ? "TLS alert on a kTLS socket" : "client closed";
	case BAD_FATAL_ALERT:
		return kernel_rx ? "TLS alert on a kTLS socket" : "alert bad record mac";
	case BAD_TAG:
		return kernel_rx ? "TLS record failed authentication" : "bad record mac";
	case BAD_RENEGOTIATION:
		return kernel_rx ? "TLS handshake message (renegotiation) on a kTLS socket"
				 : "no renegotiation";
	case BAD_KEY_UPDATE:
		return kernel_rx ? "TLS handshake message"
				 : "TLS 1.3 KeyUpdate requested on a kTLS send socket";
	}
	return "?";
}

/* Put the bad input on the wire. */
static void send_bad(struct __test_metadata *_metadata, FIXTURE_DATA(ktls_bad) * self,
		     enum bad_input what)
{
	SSL *ssl = derpc_ssl(&self->bad);
	int fd = derpc_fd(&self->bad);
	uint8_t buf[256];
	unsigned long w0 = BIO_number_written(SSL_get_wbio(ssl));
	size_t n;
	int r;

	switch (what) {
	case BAD_GARBAGE:
		/* longer than any record header, and no header at all */
		memset(buf, 0, sizeof(buf));
		n = (size_t)snprintf((char *)buf, sizeof(buf),
				     "GARBAGE AFTER THE HANDSHAKE: this is not a TLS record\r\n");
		ASSERT_EQ(0, send_all(fd, buf, n));
		break;
	case BAD_CLOSE_NOTIFY:
		r = SSL_shutdown(ssl);
		ASSERT_LE(0, r); /* 0: sent, the peer's not seen yet */
		break;
	case BAD_FATAL_ALERT: {
		/*
		 * Feed the client a forged record instead of the server's: it
		 * fails to authenticate it and sends a fatal bad_record_mac alert,
		 * encrypted with its current key, to the server.
		 */
		BIO *mem = BIO_new(BIO_s_mem());

		ASSERT_NE(NULL, mem);
		n = forged_record(buf, 64);
		ASSERT_EQ((int)n, BIO_write(mem, buf, (int)n));
		BIO_set_mem_eof_return(mem, -1);
		SSL_set0_rbio(ssl, mem);
		r = SSL_read(ssl, buf, sizeof(buf));
		ASSERT_GE(0, r);
		ASSERT_EQ(SSL_ERROR_SSL, SSL_get_error(ssl, r));
		break;
	}
	case BAD_TAG:
		n = forged_record(buf, 64);
		ASSERT_EQ(0, send_all(fd, buf, n));
		break;
	case BAD_RENEGOTIATION:
		ASSERT_EQ(1, SSL_renegotiate(ssl));
		r = SSL_do_handshake(ssl);
		/* the ClientHello is out; the answer never comes */
		ASSERT_GE(0, r);
		break;
	case BAD_KEY_UPDATE: {
		static const uint8_t ping[DERP_PING_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};

		ASSERT_EQ(1, SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED));
		/* the KeyUpdate goes out with the next write */
		ASSERT_EQ(0, derpc_ping(&self->bad, ping));
		break;
	}
	}
	ERR_clear_error();
	if (what != BAD_GARBAGE && what != BAD_TAG) {
		/* OpenSSL really wrote a record for it */
		ASSERT_LT(w0, BIO_number_written(SSL_get_wbio(ssl)));
	}
}

static void run_case(struct __test_metadata *_metadata, FIXTURE_DATA(ktls_bad) * self,
		     enum bad_input what)
{
	bool kernel_rx = !strcmp(self->mode, "ktls-txrx");
	const char *want = expected_reason(what, kernel_rx);
	long since = dd_log_size(&self->d);
	char line[512];
	struct ktls_stat st;
	int64_t t0;
	int ms;

	t0 = derpc_now_ms();
	send_bad(_metadata, self, what);

	/* the server closes that connection, promptly */
	ASSERT_EQ(0, wait_tcp_closed(derpc_fd(&self->bad), WAIT_MS));
	TH_LOG("server closed the bad connection after %lld ms", (long long)(derpc_now_ms() - t0));

	/* with a close line that says why */
	ASSERT_TRUE(
		dd_log_line(&self->d, since, " close: ", self->bad_addr, line, sizeof(line), 2000));
	TH_LOG("kderpd: %s", strstr(line, "conn ") ? strstr(line, "conn ") : line);
	EXPECT_NE(NULL, strcasestr(line, want))
	{
		TH_LOG("expected the reason \"%s\"", want);
	}
	EXPECT_NE(NULL, strstr(line, self->mode));

	/* nobody else was touched */
	EXPECT_FALSE(dd_log_line(&self->d, since, " close: ", self->a_addr, line, sizeof(line), 0));
	EXPECT_FALSE(dd_log_line(&self->d, since, " close: ", self->b_addr, line, sizeof(line), 0));
	ASSERT_TRUE(dd_alive(&self->d));
	ms = dd_relay_once(&self->a, &self->b, WAIT_MS);
	ASSERT_LE(0, ms);
	ms = dd_relay_once(&self->b, &self->a, WAIT_MS);
	ASSERT_LE(0, ms);
	ASSERT_TRUE(dd_alive(&self->d));

	/* the kernel let go of the bad socket's kTLS state and kept the others */
	ktls_stat(_metadata, &st);
	TH_LOG("tls_stat: TlsCurrTxSw %lld -> %lld, TlsCurrRxSw %lld -> %lld, "
	       "TlsDecryptError %lld -> %lld",
	       self->st0.curr_tx_sw, st.curr_tx_sw, self->st0.curr_rx_sw, st.curr_rx_sw,
	       self->st0.decrypt_err, st.decrypt_err);
	if (self->own_netns) {
		EXPECT_EQ(2, st.curr_tx_sw);
		EXPECT_EQ(kernel_rx ? 2 : 0, st.curr_rx_sw);
		/* only a kernel-decrypted forged record counts as a decrypt error */
		EXPECT_EQ(self->st0.decrypt_err + (what == BAD_TAG && kernel_rx), st.decrypt_err);
	}

	/* and the kernel log is clean (and the reader does see new records) */
	if (self->kmsg >= 0) {
		char mark[80];
		bool seen;
		int err;

		snprintf(mark, sizeof(mark), "kderp ktls_badinput: %s done, %u", _metadata->name,
			 randombytes_random());
		err = kmsg_mark(mark);
		EXPECT_EQ(0, kmsg_problems(self->kmsg, mark, &seen));
		if (err)
			TH_LOG("no marker in the kernel log (%s): reader not cross-checked",
			       strerror(-err));
		else
			EXPECT_TRUE(seen);
	} else {
		TH_LOG("kernel log not checked (/dev/kmsg unreadable)");
	}
}

TEST_F_TIMEOUT(ktls_bad, garbage, 60)
{
	run_case(_metadata, self, BAD_GARBAGE);
}

TEST_F_TIMEOUT(ktls_bad, close_notify, 60)
{
	run_case(_metadata, self, BAD_CLOSE_NOTIFY);
}

TEST_F_TIMEOUT(ktls_bad, fatal_alert, 60)
{
	run_case(_metadata, self, BAD_FATAL_ALERT);
}

TEST_F_TIMEOUT(ktls_bad, bad_tag, 60)
{
	run_case(_metadata, self, BAD_TAG);
}

TEST_F_TIMEOUT(ktls_bad, renegotiation, 60)
{
	if (variant->version != TLS1_2_VERSION)
		SKIP(return, "TLS 1.3 has no renegotiation");
	run_case(_metadata, self, BAD_RENEGOTIATION);
}

TEST_F_TIMEOUT(ktls_bad, key_update, 60)
{
	if (variant->version != TLS1_3_VERSION)
		SKIP(return, "KeyUpdate exists only in TLS 1.3");
	run_case(_metadata, self, BAD_KEY_UPDATE);
}

TEST_HARNESS_MAIN
