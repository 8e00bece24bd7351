// SPDX-License-Identifier: MIT
/*
 * test_harness.c - the harness checks itself: a failing assertion must fail,
 * a skip must skip, a timeout must be reported, fixtures must set up and tear
 * down, every variant must run with its own typed data. The inner tests run
 * through a child copy of this binary.
 */
#include "harness.h"

FIXTURE(counter)
{
	int value;
};

FIXTURE_VARIANT(counter)
{
	int start;
};

FIXTURE_VARIANT_ADD(counter, one){
	.start = 1,
};

FIXTURE_VARIANT_ADD(counter, two){
	.start = 2,
};

FIXTURE_SETUP(counter)
{
	self->value = variant->start;
}

FIXTURE_TEARDOWN(counter)
{
}

TEST_F(counter, variant_reaches_setup)
{
	ASSERT_LE(1, self->value);
	ASSERT_GE(2, self->value);
}

/* `variant` is typed: its fields are reachable without a cast. */
TEST_F(counter, variant_is_typed)
{
	_Static_assert(
		__builtin_types_compatible_p(__typeof__(variant), const FIXTURE_VARIANT(counter) *),
		"variant has the fixture's variant type");
	ASSERT_EQ(variant->start, self->value);
	TH_LOG("start=%d", variant->start);
}

/* A fixture without FIXTURE_VARIANT runs once, with a NULL variant. */
FIXTURE(novariant)
{
	int set_up;
};

FIXTURE_SETUP(novariant)
{
	ASSERT_NULL(variant);
	self->set_up = 1;
}

FIXTURE_TEARDOWN(novariant)
{
}

TEST_F(novariant, runs_once)
{
	ASSERT_NULL(variant);
	ASSERT_EQ(1, self->set_up);
}

/* The self-check: run the "inner" tests (selected by env) in a child. */
static int run_inner(const char *filter, char *out, size_t len)
{
	char cmd[512];
	FILE *p;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd), "KDERP_HARNESS_INNER=1 /proc/%d/exe -t %s 2>&1", (int)getpid(),
		 filter);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	n = fread(out, 1, len - 1, p);
	out[n] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(inner_fail)
{
	if (!getenv("KDERP_HARNESS_INNER"))
		SKIP(return, "only runs inside the self-check");
	ASSERT_EQ(1, 2);
}

TEST(inner_skip)
{
	if (!getenv("KDERP_HARNESS_INNER"))
		SKIP(return, "only runs inside the self-check");
	SKIP(return, "deliberate");
}

TEST_TIMEOUT(inner_timeout, 1)
{
	if (!getenv("KDERP_HARNESS_INNER"))
		SKIP(return, "only runs inside the self-check");
	sleep(5);
}

TEST(failing_assert_fails)
{
	char out[4096];

	if (getenv("KDERP_HARNESS_INNER"))
		SKIP(return, "outer only");
	ASSERT_EQ(1, run_inner("inner_fail", out, sizeof(out)));
	ASSERT_NE(NULL, strstr(out, "not ok 1 inner_fail"));
}

TEST(skip_is_reported)
{
	char out[4096];

	if (getenv("KDERP_HARNESS_INNER"))
		SKIP(return, "outer only");
	ASSERT_EQ(4, run_inner("inner_skip", out, sizeof(out)));
	ASSERT_NE(NULL, strstr(out, "# SKIP deliberate"));
}

TEST(timeout_is_failure)
{
	char out[4096];

	if (getenv("KDERP_HARNESS_INNER"))
		SKIP(return, "outer only");
	ASSERT_EQ(1, run_inner("inner_timeout", out, sizeof(out)));
	ASSERT_NE(NULL, strstr(out, "TIMEOUT"));
}

TEST(each_variant_runs)
{
	char out[8192];

	if (getenv("KDERP_HARNESS_INNER"))
		SKIP(return, "outer only");
	ASSERT_EQ(0, run_inner("counter.", out, sizeof(out)));
	ASSERT_NE(NULL, strstr(out, "1..4\n"));
	ASSERT_NE(NULL, strstr(out, "ok 1 counter.one.variant_reaches_setup\n"));
	ASSERT_NE(NULL, strstr(out, "ok 2 counter.two.variant_reaches_setup\n"));
	ASSERT_NE(NULL, strstr(out, "ok 3 counter.one.variant_is_typed\n"));
	ASSERT_NE(NULL, strstr(out, "ok 4 counter.two.variant_is_typed\n"));
	/* each variant's own data reached its run */
	ASSERT_NE(NULL, strstr(out, "start=1\n"));
	ASSERT_NE(NULL, strstr(out, "start=2\n"));
	/* a fixture without variants is named fixture.test */
	ASSERT_EQ(0, run_inner("novariant", out, sizeof(out)));
	ASSERT_NE(NULL, strstr(out, "1..1\n"));
	ASSERT_NE(NULL, strstr(out, "ok 1 novariant.runs_once\n"));
}

TEST_HARNESS_MAIN
