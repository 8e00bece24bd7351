// SPDX-License-Identifier: MIT
/*
 * test_memory.c - kderpd gives memory back after a burst. 200 receivers
 * that never read and 4 senders flooding them drive the server's queues
 * and buffers up; once every client is gone, the resident set must come
 * back within 2x of what it was before the burst, within 10 s.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <sodium.h>

#include "harness.h"

#include "derp_daemon.h"
#include "derpc.h"

#define RECEIVERS 200
#define SENDERS 4
#define PKT_SIZE 1200
#define BURST_MS 3000
#define BURST_MAX_PACKETS 400000 /* per sender */
#define SETTLE_MS 10000

struct sender {
	struct derpc c;
	struct derpc *rcv;
	int err;
	long sent;
};

static void *send_loop(void *arg)
{
	struct sender *s = arg;
	uint8_t pkt[PKT_SIZE];
	int64_t t0 = derpc_now_ms();

	randombytes_buf(pkt, sizeof(pkt));
	for (long i = 0; i < BURST_MAX_PACKETS && derpc_now_ms() - t0 < BURST_MS; i++) {
		s->err = derpc_send_packet(&s->c, s->rcv[i % RECEIVERS].key.pub, pkt, sizeof(pkt));
		if (s->err)
			break;
		s->sent++;
	}
	return NULL;
}

FIXTURE(memory)
{
	struct derp_daemon d;
	struct derpc *rcv;
	struct sender snd[SENDERS];
};

FIXTURE_SETUP(memory)
{
	int rcvbuf = 4096;

	signal(SIGPIPE, SIG_IGN);
	self->rcv = calloc(RECEIVERS, sizeof(*self->rcv));
	ASSERT_NE(NULL, self->rcv);
	ASSERT_EQ(0, dd_start(&self->d, NULL));
	for (int i = 0; i < RECEIVERS; i++) {
		ASSERT_EQ(0, dd_connect(&self->d, &self->rcv[i]));
		setsockopt(derpc_fd(&self->rcv[i]), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	}
	for (int i = 0; i < SENDERS; i++) {
		ASSERT_EQ(0, dd_connect(&self->d, &self->snd[i].c));
		self->snd[i].rcv = self->rcv;
	}
}

FIXTURE_TEARDOWN(memory)
{
	if (_metadata->failed)
		dd_dump_log(&self->d, 20);
	for (int i = 0; self->rcv && i < RECEIVERS; i++)
		derpc_close(&self->rcv[i]);
	for (int i = 0; i < SENDERS; i++)
		derpc_close(&self->snd[i].c);
	free(self->rcv);
	dd_stop(&self->d);
}

TEST_F_TIMEOUT(memory, rss_returns_after_burst, 60)
{
	long rss0 = dd_rss_kb(&self->d), peak, rss = -1, sent = 0;
	pthread_t th[SENDERS];
	int64_t t0;

	ASSERT_LT(0, rss0);
	for (int i = 0; i < SENDERS; i++)
		ASSERT_EQ(0, pthread_create(&th[i], NULL, send_loop, &self->snd[i]));
	for (int i = 0; i < SENDERS; i++) {
		pthread_join(th[i], NULL);
		sent += self->snd[i].sent;
	}
	peak = dd_status_kb(&self->d, "VmHWM");
	for (int i = 0; i < RECEIVERS; i++)
		derpc_close(&self->rcv[i]);
	for (int i = 0; i < SENDERS; i++)
		derpc_close(&self->snd[i].c);
	t0 = derpc_now_ms();
	while (derpc_now_ms() - t0 < SETTLE_MS) {
		rss = dd_rss_kb(&self->d);
		if (rss <= 2 * rss0)
			break;
		usleep(200 * 1000);
	}
	TH_LOG("%ld packets of %d B to %d receivers that never read; RSS %ld kB before, peak "
	       "%ld kB, %ld kB %lld ms after the clients left",
	       sent, PKT_SIZE, RECEIVERS, rss0, peak, rss, (long long)(derpc_now_ms() - t0));
	EXPECT_LT(0, sent);
	/* Under ASan the allocator keeps a quarantine: dd_rss_slack_kb adds room. */
	EXPECT_GE(2 * rss0 + dd_rss_slack_kb(&self->d, 8192) - 8192, rss);
	EXPECT_TRUE(dd_alive(&self->d));
}

TEST_HARNESS_MAIN
