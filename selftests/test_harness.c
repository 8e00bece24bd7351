// SPDX-License-Identifier: MIT
/*
 * test_harness.c - the harness checks itself: a failing assertion must fail,
 * a skip must skip, a timeout must be reported, fixtures must set up and tear
 * down. The inner tests run through a child copy of this binary.
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
	self->value = VARIANT(counter)->start;
}

FIXTURE_TEARDOWN(counter)
{
}

TEST_F(counter, variant_reaches_setup)
{
	ASSERT_LE(1, self->value);
	ASSERT_GE(2, self->value);
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

TEST_HARNESS_MAIN
