// SPDX-License-Identifier: MIT
/*
 * test_flood.c - no client can slow another. One client floods the server
 * at full speed with one kind of legal input (each frame type, the same key
 * from many connections, reconnects with one key) while an unrelated pair
 * does 1 KiB round trips. The pair must keep at least 70 % of the round-trip
 * rate it has without the flood (derper keeps 81-108 % here). A global write
 * lock per frame, or a system call per frame on behalf of the flooder, shows
 * up as a collapse of that rate.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <sodium.h>

#include "harness.h"

#include "derp_daemon.h"
#include "derpc.h"

#define WINDOW_MS 500
#define ROUNDS 3
#define MIN_RATIO 0.70
#define FLOOD_MAX_MS 8000 /* the flooder stops by itself after this */
#define DUP_CONNS 50
#define RTT_SIZE 1024

enum flood_kind {
	FLOOD_NOTE_PREFERRED_TOGGLE,
	FLOOD_NOTE_PREFERRED_REPEAT,
	FLOOD_PING,
	FLOOD_SEND_UNKNOWN,
	FLOOD_UNKNOWN_FRAME,
	FLOOD_DUP_KEY_SENDERS,
	FLOOD_DUP_KEY_RECONNECT,
};

FIXTURE(flood)
{
	struct derp_daemon d;
	struct derpc a, b;
};

FIXTURE_VARIANT(flood)
{
	enum flood_kind kind;
};

FIXTURE_VARIANT_ADD(flood, note_preferred_toggle){.kind = FLOOD_NOTE_PREFERRED_TOGGLE};
FIXTURE_VARIANT_ADD(flood, note_preferred_repeat){.kind = FLOOD_NOTE_PREFERRED_REPEAT};
FIXTURE_VARIANT_ADD(flood, ping){.kind = FLOOD_PING};
FIXTURE_VARIANT_ADD(flood, send_to_unknown_key){.kind = FLOOD_SEND_UNKNOWN};
FIXTURE_VARIANT_ADD(flood, unknown_frame_type){.kind = FLOOD_UNKNOWN_FRAME};
FIXTURE_VARIANT_ADD(flood, dup_key_50_senders){.kind = FLOOD_DUP_KEY_SENDERS};
FIXTURE_VARIANT_ADD(flood, dup_key_reconnects){.kind = FLOOD_DUP_KEY_RECONNECT};

FIXTURE_SETUP(flood)
{
	signal(SIGPIPE, SIG_IGN);
	derpc_init(&self->a, NULL);
	derpc_init(&self->b, NULL);
	ASSERT_EQ(0, dd_start(&self->d, NULL));
	ASSERT_EQ(0, dd_connect(&self->d, &self->a));
	ASSERT_EQ(0, dd_connect(&self->d, &self->b));
}

FIXTURE_TEARDOWN(flood)
{
	if (_metadata->failed)
		dd_dump_log(&self->d, 30);
	derpc_close(&self->a);
	derpc_close(&self->b);
	dd_stop(&self->d);
}

struct flooder {
	const struct derp_daemon *d;
	enum flood_kind kind;
	atomic_bool stop;
	long frames; /* frames written (or connections made) */
	int err;
};

/* A buffer of n copies of one frame (n * (5 + len) bytes). */
static uint8_t *frames(uint8_t type, const uint8_t *payload, uint32_t len, int n, size_t *total)
{
	size_t one = DERP_FRAME_HDR_LEN + len;
	uint8_t *buf = malloc(one * n);

	for (int i = 0; buf && i < n; i++) {
		derpc_put_header(buf + i * one, type, len);
		memcpy(buf + i * one + DERP_FRAME_HDR_LEN, payload, len);
	}
	*total = one * n;
	return buf;
}

/* NotePreferred 1, 0, 1, 0, ... (toggle) or 1, 1, 1, ... (repeat). */
static uint8_t *note_preferred_frames(bool toggle, int n, size_t *total)
{
	uint8_t one = 1, *buf = frames(DERP_FRAME_NOTE_PREFERRED, &one, 1, n, total);

	for (int i = 0; buf && toggle && i < n; i += 2)
		buf[i * (DERP_FRAME_HDR_LEN + 1) + DERP_FRAME_HDR_LEN] = 0;
	return buf;
}

static uint8_t *flood_buffer(enum flood_kind kind, size_t *total)
{
	uint8_t payload[DERP_KEY_LEN + 64];

	randombytes_buf(payload, sizeof(payload));
	switch (kind) {
	case FLOOD_NOTE_PREFERRED_TOGGLE:
		return note_preferred_frames(true, 4096, total);
	case FLOOD_NOTE_PREFERRED_REPEAT:
		return note_preferred_frames(false, 4096, total);
	case FLOOD_PING:
		return frames(DERP_FRAME_PING, payload, DERP_PING_LEN, 2048, total);
	case FLOOD_UNKNOWN_FRAME:
		return frames(0x7f, payload, 16, 1024, total);
	default:
		/* SendPacket of 64 bytes to a key nobody has. */
		return frames(DERP_FRAME_SEND_PACKET, payload, sizeof(payload), 256, total);
	}
}

static bool flood_over(struct flooder *f, int64_t t0)
{
	return atomic_load(&f->stop) || derpc_now_ms() - t0 > FLOOD_MAX_MS;
}

/* One connection writes the same buffer again and again. */
static void flood_one(struct flooder *f, const uint8_t *buf, size_t len, long per_write)
{
	int64_t t0 = derpc_now_ms();
	struct derpc c;

	f->err = dd_connect(f->d, &c);
	while (!f->err && !flood_over(f, t0)) {
		/* The server may close a flooder that never reads (write timeout). */
		if (derpc_write_raw(&c, buf, len, 1000))
			break;
		f->frames += per_write;
	}
	derpc_close(&c);
}

/* DUP_CONNS connections with one key, each sending in turn. */
static void flood_dup_senders(struct flooder *f, const uint8_t *buf, size_t len, long per_write)
{
	struct derpc *c = calloc(DUP_CONNS, sizeof(*c));
	struct derpc_keypair kp;
	struct derpc_opts o;
	int64_t t0 = derpc_now_ms();
	int n = 0;

	derpc_keygen(&kp);
	dd_opts(f->d, &o);
	for (; c && n < DUP_CONNS && !f->err; n++) {
		derpc_init(&c[n], &kp);
		f->err = derpc_connect(&c[n], &o);
	}
	for (int i = 0; !f->err && !flood_over(f, t0); i = (i + 1) % n) {
		if (derpc_write_raw(&c[i], buf, len / 16, 1000))
			break;
		f->frames += per_write / 16;
	}
	for (int i = 0; i < n; i++)
		derpc_close(&c[i]);
	free(c);
}

/* Connect with one key, close, again. */
static void flood_reconnects(struct flooder *f)
{
	struct derpc_keypair kp;
	struct derpc_opts o;
	int64_t t0 = derpc_now_ms();

	derpc_keygen(&kp);
	dd_opts(f->d, &o);
	while (!flood_over(f, t0)) {
		struct derpc c;

		derpc_init(&c, &kp);
		f->err = derpc_connect(&c, &o);
		derpc_close(&c);
		if (f->err)
			break;
		f->frames++;
	}
}

static int flood_nice(void)
{
	const char *e = getenv("KDERP_FLOOD_NICE");

	return e ? atoi(e) : 19;
}

static void *flood_thread(void *arg)
{
	struct flooder *f = arg;
	/*
	 * On a server the flooding client is elsewhere; here it shares the two
	 * cores. At the lowest priority it still floods at full speed when
	 * the CPU is free, but its own CPU use does not count against the pair.
	 */
	int nice_err = setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), flood_nice());

	size_t len = 0;
	uint8_t *buf = flood_buffer(f->kind, &len);
	long per_write = 0;

	if (!buf || nice_err) {
		f->err = buf ? -errno : -ENOMEM;
		free(buf);
		return NULL;
	}
	per_write = f->kind == FLOOD_NOTE_PREFERRED_TOGGLE || f->kind == FLOOD_NOTE_PREFERRED_REPEAT
		? 4096
		: f->kind == FLOOD_PING		 ? 2048
		: f->kind == FLOOD_UNKNOWN_FRAME ? 1024
						 : 256;
	if (f->kind == FLOOD_DUP_KEY_SENDERS)
		flood_dup_senders(f, buf, len, per_write);
	else if (f->kind == FLOOD_DUP_KEY_RECONNECT)
		flood_reconnects(f);
	else
		flood_one(f, buf, len, per_write);
	free(buf);
	return NULL;
}

/* Round trips a -> b -> a of RTT_SIZE bytes completed in WINDOW_MS. */
static int round_trips(struct __test_metadata *_metadata, struct derpc *a, struct derpc *b)
{
	int64_t t0 = derpc_now_ms();
	uint8_t pkt[RTT_SIZE], got[RTT_SIZE + 64], src[DERP_KEY_LEN];
	int n = 0;

	randombytes_buf(pkt, sizeof(pkt));
	while (derpc_now_ms() - t0 < WINDOW_MS) {
		size_t len = 0;

		ASSERT_EQ(0, derpc_send_packet(a, b->key.pub, pkt, sizeof(pkt)));
		ASSERT_EQ(0, derpc_recv_packet(b, src, got, sizeof(got), &len, 2000));
		ASSERT_EQ(0, derpc_send_packet(b, a->key.pub, got, len));
		ASSERT_EQ(0, derpc_recv_packet(a, src, got, sizeof(got), &len, 2000));
		n++;
	}
	return n;
}

/* One flood window: start the flooder, measure the pair, stop the flooder. */
static int flood_window(struct __test_metadata *_metadata, struct derp_daemon *d,
			enum flood_kind kind, struct derpc *a, struct derpc *b, long *frames)
{
	struct flooder f = {.d = d, .kind = kind};
	pthread_t th;
	int n;

	ASSERT_EQ(0, pthread_create(&th, NULL, flood_thread, &f));
	usleep(200 * 1000); /* the flood is under way */
	n = round_trips(_metadata, a, b);
	atomic_store(&f.stop, true);
	pthread_join(th, NULL);
	ASSERT_EQ(0, f.err);
	ASSERT_LT(0, f.frames);
	*frames += f.frames;
	return n;
}

/*
 * Quiet and flood windows alternate, ROUNDS times. The pair's own rate
 * moves by up to 3x between windows on a 2-core machine (where its threads
 * land), so each flood window is compared with the mean of the quiet
 * windows around it, and the best round counts: a server that stalls the
 * pair stalls it in every round (it fell to 1-10 % before NotePreferred
 * stopped taking the table lock).
 */
TEST_F_TIMEOUT(flood, unrelated_pair_keeps_its_rate, 90)
{
	int quiet[ROUNDS + 1], flood[ROUNDS];
	double best = 0;
	long frames = 0;

	quiet[0] = round_trips(_metadata, &self->a, &self->b);
	ASSERT_LT(0, quiet[0]);
	for (int r = 0; r < ROUNDS; r++) {
		double ratio;

		flood[r] = flood_window(_metadata, &self->d, variant->kind, &self->a, &self->b,
					&frames);
		quiet[r + 1] = round_trips(_metadata, &self->a, &self->b);
		ratio = 2.0 * flood[r] / (quiet[r] + quiet[r + 1]);
		TH_LOG("round %d: %d quiet, %d flooded (%.0f %%), %d quiet", r + 1, quiet[r],
		       flood[r], 100 * ratio, quiet[r + 1]);
		if (ratio > best)
			best = ratio;
	}
	TH_LOG("best round %.0f %% of the quiet rate; flooder: %ld frames or connections",
	       100 * best, frames);
	/* Under ASan every frame costs a few times more: half the ratio. */
	EXPECT_LE(dd_is_asan(&self->d) ? MIN_RATIO / 2 : MIN_RATIO, best);
	EXPECT_TRUE(dd_alive(&self->d));
}

TEST_HARNESS_MAIN
