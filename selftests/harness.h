/* SPDX-License-Identifier: MIT */
/*
 * harness.h - kderp's own test harness.
 *
 * Written for kderp; it offers the same names and semantics as the kernel's
 * kselftest harness (TEST, FIXTURE, FIXTURE_SETUP, FIXTURE_TEARDOWN,
 * FIXTURE_VARIANT, FIXTURE_VARIANT_ADD, TEST_F, ASSERT_* / EXPECT_* with
 * (expected, seen) order, SKIP, TH_LOG, TEST_HARNESS_MAIN) so test files read
 * like tools/testing/selftests, but it shares no code with it.
 *
 * Every test runs in a forked child with a timeout. Output is KTAP:
 *   TAP version 13 / 1..N / ok N name / not ok N name / ok N name # SKIP why
 * Exit status: 0 all passed (or skipped), 1 any failure, 4 everything skipped.
 *
 * Run one test: ./prog -t name   (substring match on "fixture.variant.name")
 * List tests:   ./prog -l
 */
#ifndef KDERP_HARNESS_H
#define KDERP_HARNESS_H

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#define KSFT_PASS 0
#define KSFT_FAIL 1
#define KSFT_SKIP 4

#ifndef TEST_TIMEOUT_DEFAULT
#define TEST_TIMEOUT_DEFAULT 30
#endif

struct __test_metadata;
struct __fixture_variant_metadata;

typedef void (*__test_fn)(struct __test_metadata *, const void *variant);

struct __fixture_variant_metadata {
	const char *name;
	const void *data;
	struct __fixture_variant_metadata *next;
};

struct __fixture_metadata {
	const char *name;
	struct __fixture_variant_metadata *variants;
	struct __fixture_metadata *next;
};

struct __test_metadata {
	const char *name;
	struct __fixture_metadata *fixture;
	__test_fn fn;
	int timeout;
	/* state of the running child */
	int failed;
	int skipped;
	char skip_reason[256];
	jmp_buf env;
	struct __test_metadata *next;
};

static struct __test_metadata *__harness_tests;
static struct __test_metadata **__harness_tests_tail = &__harness_tests;
static struct __fixture_metadata __harness_global_fixture = {.name = "global"};

static inline void __register_test(struct __test_metadata *t)
{
	*__harness_tests_tail = t;
	__harness_tests_tail = &t->next;
}

static inline void __register_variant(struct __fixture_metadata *f,
				      struct __fixture_variant_metadata *v)
{
	struct __fixture_variant_metadata **p = &f->variants;

	while (*p)
		p = &(*p)->next;
	*p = v;
}

/* Diagnostics go to stdout as TAP comments so they stay ordered with results. */
#define TH_LOG(fmt, ...)                                                                      \
	do {                                                                                  \
		fprintf(stdout, "# %s:%d:%s: " fmt "\n", __FILE__, __LINE__, _metadata->name, \
			##__VA_ARGS__);                                                       \
		fflush(stdout);                                                               \
	} while (0)

#define SKIP(statement, fmt, ...)                                                     \
	do {                                                                          \
		snprintf(_metadata->skip_reason, sizeof(_metadata->skip_reason), fmt, \
			 ##__VA_ARGS__);                                              \
		_metadata->skipped = 1;                                               \
		statement;                                                            \
	} while (0)

static inline void __harness_bail(struct __test_metadata *m, int abort_test)
{
	m->failed = 1;
	if (abort_test)
		longjmp(m->env, 1);
}

static inline int __harness_report(struct __test_metadata *m, const char *file, int line,
				   const char *e_str, const char *op, const char *s_str,
				   long long e, long long s)
{
	fprintf(stdout, "# %s:%d: Expected %s (%lld) %s %s (%lld)\n", file, line, e_str, e, op,
		s_str, s);
	fflush(stdout);
	(void)m;
	return 1;
}

#define __HARNESS_CMP(expected, seen, op, abort_test)                                            \
	for (int __trig = ({                                                                     \
		     __auto_type __exp = (expected);                                             \
		     __auto_type __seen = (seen);                                                \
		     (__exp op __seen)                                                           \
			     ? 0                                                                 \
			     : __harness_report(_metadata, __FILE__, __LINE__, #expected, #op,   \
						#seen, (long long)(__exp), (long long)(__seen)); \
	     });                                                                                 \
	     __trig; __trig = 0, __harness_bail(_metadata, abort_test))

#define ASSERT_EQ(expected, seen) __HARNESS_CMP(expected, seen, ==, 1)
#define ASSERT_NE(expected, seen) __HARNESS_CMP(expected, seen, !=, 1)
#define ASSERT_LT(expected, seen) __HARNESS_CMP(expected, seen, <, 1)
#define ASSERT_LE(expected, seen) __HARNESS_CMP(expected, seen, <=, 1)
#define ASSERT_GT(expected, seen) __HARNESS_CMP(expected, seen, >, 1)
#define ASSERT_GE(expected, seen) __HARNESS_CMP(expected, seen, >=, 1)
#define ASSERT_TRUE(seen) __HARNESS_CMP(0, !!(seen), !=, 1)
#define ASSERT_FALSE(seen) __HARNESS_CMP(0, !!(seen), ==, 1)
#define ASSERT_NULL(seen) __HARNESS_CMP(NULL, seen, ==, 1)
#define EXPECT_EQ(expected, seen) __HARNESS_CMP(expected, seen, ==, 0)
#define EXPECT_NE(expected, seen) __HARNESS_CMP(expected, seen, !=, 0)
#define EXPECT_LT(expected, seen) __HARNESS_CMP(expected, seen, <, 0)
#define EXPECT_LE(expected, seen) __HARNESS_CMP(expected, seen, <=, 0)
#define EXPECT_GT(expected, seen) __HARNESS_CMP(expected, seen, >, 0)
#define EXPECT_GE(expected, seen) __HARNESS_CMP(expected, seen, >=, 0)
#define EXPECT_TRUE(seen) __HARNESS_CMP(0, !!(seen), !=, 0)
#define EXPECT_FALSE(seen) __HARNESS_CMP(0, !!(seen), ==, 0)

static inline int __harness_str_report(const char *file, int line, const char *e_str,
				       const char *s_str, const char *e, const char *s, int want_eq)
{
	int eq = e && s && strcmp(e, s) == 0;

	if (eq == want_eq)
		return 0;
	fprintf(stdout, "# %s:%d: Expected %s (\"%s\") %s %s (\"%s\")\n", file, line, e_str,
		e ? e : "(null)", want_eq ? "==" : "!=", s_str, s ? s : "(null)");
	fflush(stdout);
	return 1;
}

#define __HARNESS_STR(expected, seen, want_eq, abort_test)                                       \
	for (int __trig = __harness_str_report(__FILE__, __LINE__, #expected, #seen, (expected), \
					       (seen), want_eq);                                 \
	     __trig; __trig = 0, __harness_bail(_metadata, abort_test))

#define ASSERT_STREQ(expected, seen) __HARNESS_STR(expected, seen, 1, 1)
#define ASSERT_STRNE(expected, seen) __HARNESS_STR(expected, seen, 0, 1)
#define EXPECT_STREQ(expected, seen) __HARNESS_STR(expected, seen, 1, 0)
#define EXPECT_STRNE(expected, seen) __HARNESS_STR(expected, seen, 0, 0)

/* Plain tests. */
#define TEST(tname_) TEST_TIMEOUT(tname_, TEST_TIMEOUT_DEFAULT)
#define TEST_TIMEOUT(tname_, secs)                                            \
	static void __test_##tname_(struct __test_metadata *_metadata);       \
	static void __wrap_##tname_(struct __test_metadata *m, const void *v) \
	{                                                                     \
		(void)v;                                                      \
		__test_##tname_(m);                                           \
	}                                                                     \
	static struct __test_metadata __meta_##tname_ = {                     \
		.name = #tname_,                                              \
		.fixture = &__harness_global_fixture,                         \
		.fn = __wrap_##tname_,                                        \
		.timeout = secs,                                              \
	};                                                                    \
	static void __attribute__((constructor)) __reg_##tname_(void)         \
	{                                                                     \
		__register_test(&__meta_##tname_);                            \
	}                                                                     \
	static void __test_##tname_(struct __test_metadata *_metadata)

/* Fixtures. */
#define FIXTURE_DATA(fix_) struct __fixture_##fix_##_data
#define FIXTURE_VARIANT(fix_) struct __fixture_##fix_##_variant
/*
 * FIXTURE declares the fixture's variant type, so `variant` has a type even in
 * a fixture that never defines FIXTURE_VARIANT (it is then NULL and points to
 * an incomplete struct: using it is a compile error, not a crash).
 */
#define FIXTURE(fix_)                                                             \
	FIXTURE_VARIANT(fix_);                                                    \
	static struct __fixture_metadata __fixture_meta_##fix_ = {.name = #fix_}; \
	FIXTURE_DATA(fix_)

#define FIXTURE_VARIANT_ADD(fix_, vname)                                                      \
	static const FIXTURE_VARIANT(fix_) __variant_##fix_##_##vname;                        \
	static struct __fixture_variant_metadata __variant_meta_##fix_##_##vname = {          \
		.name = #vname,                                                               \
		.data = &__variant_##fix_##_##vname,                                          \
	};                                                                                    \
	static void __attribute__((constructor)) __reg_variant_##fix_##_##vname(void)         \
	{                                                                                     \
		__register_variant(&__fixture_meta_##fix_, &__variant_meta_##fix_##_##vname); \
	}                                                                                     \
	static const FIXTURE_VARIANT(fix_) __variant_##fix_##_##vname =

/*
 * Setup, teardown and TEST_F bodies see `_metadata`, `self` (the fixture
 * data) and `variant`, a `const FIXTURE_VARIANT(fix) *` to the variant being
 * run (NULL in a fixture without variants).
 */
#define FIXTURE_SETUP(fix_)                                                                      \
	static void __setup_##fix_(struct __test_metadata *_metadata, FIXTURE_DATA(fix_) * self, \
				   const FIXTURE_VARIANT(fix_) * variant)
#define FIXTURE_TEARDOWN(fix_)                                           \
	static void __teardown_##fix_(struct __test_metadata *_metadata, \
				      FIXTURE_DATA(fix_) * self,         \
				      const FIXTURE_VARIANT(fix_) * variant)

#define TEST_F(fix_, tname_) TEST_F_TIMEOUT(fix_, tname_, TEST_TIMEOUT_DEFAULT)
#define TEST_F_TIMEOUT(fix_, tname_, secs)                                             \
	static void __test_##fix_##_##tname_(struct __test_metadata *_metadata,        \
					     FIXTURE_DATA(fix_) * self,                \
					     const FIXTURE_VARIANT(fix_) * variant);   \
	static void __wrap_##fix_##_##tname_(struct __test_metadata *m, const void *v) \
	{                                                                              \
		FIXTURE_DATA(fix_) self_data;                                          \
		memset(&self_data, 0, sizeof(self_data));                              \
		if (setjmp(m->env) == 0) {                                             \
			__setup_##fix_(m, &self_data, v);                              \
			if (!m->skipped && !m->failed)                                 \
				__test_##fix_##_##tname_(m, &self_data, v);            \
		}                                                                      \
		if (setjmp(m->env) == 0)                                               \
			__teardown_##fix_(m, &self_data, v);                           \
	}                                                                              \
	static struct __test_metadata __meta_##fix_##_##tname_ = {                     \
		.name = #tname_,                                                       \
		.fixture = &__fixture_meta_##fix_,                                     \
		.fn = __wrap_##fix_##_##tname_,                                        \
		.timeout = secs,                                                       \
	};                                                                             \
	static void __attribute__((constructor)) __reg_##fix_##_##tname_(void)         \
	{                                                                              \
		__register_test(&__meta_##fix_##_##tname_);                            \
	}                                                                              \
	static void __test_##fix_##_##tname_(struct __test_metadata *_metadata,        \
					     FIXTURE_DATA(fix_) * self,                \
					     const FIXTURE_VARIANT(fix_) * variant)

static inline void __harness_full_name(char *buf, size_t len, const struct __test_metadata *t,
				       const struct __fixture_variant_metadata *v)
{
	if (t->fixture == &__harness_global_fixture)
		snprintf(buf, len, "%s", t->name);
	else if (v)
		snprintf(buf, len, "%s.%s.%s", t->fixture->name, v->name, t->name);
	else
		snprintf(buf, len, "%s.%s", t->fixture->name, t->name);
}

struct __harness_result {
	int code; /* KSFT_* */
	char reason[256];
};

static inline void __harness_run_one(struct __test_metadata *t,
				     const struct __fixture_variant_metadata *v,
				     struct __harness_result *res)
{
	int pipefd[2];
	pid_t pid;
	int status = 0;
	time_t deadline;

	memset(res, 0, sizeof(*res));
	if (pipe(pipefd) < 0) {
		res->code = KSFT_FAIL;
		snprintf(res->reason, sizeof(res->reason), "pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		res->code = KSFT_FAIL;
		snprintf(res->reason, sizeof(res->reason), "fork: %s", strerror(errno));
		close(pipefd[0]);
		close(pipefd[1]);
		return;
	}
	if (pid == 0) {
		close(pipefd[0]);
		setpgid(0, 0);
		t->failed = 0;
		t->skipped = 0;
		t->skip_reason[0] = 0;
		if (setjmp(t->env) == 0)
			t->fn(t, v ? v->data : NULL);
#ifdef __SANITIZE_ADDRESS__
		/* _exit() below skips LeakSanitizer's check at exit: a test that
		 * passed must also have freed what it allocated. */
		if (!t->failed && !t->skipped && __lsan_do_recoverable_leak_check()) {
			printf("# LeakSanitizer found leaks (report above)\n");
			t->failed = 1;
		}
#endif
		fflush(stdout);
		if (t->skipped && !t->failed) {
			ssize_t w = write(pipefd[1], t->skip_reason, strlen(t->skip_reason));
			(void)w;
			_exit(KSFT_SKIP);
		}
		_exit(t->failed ? KSFT_FAIL : KSFT_PASS);
	}
	close(pipefd[1]);
	deadline = time(NULL) + t->timeout;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR) {
			status = 1 << 8;
			break;
		}
		if (time(NULL) >= deadline) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			res->code = KSFT_FAIL;
			snprintf(res->reason, sizeof(res->reason), "TIMEOUT after %d s",
				 t->timeout);
			close(pipefd[0]);
			return;
		}
		usleep(2000);
	}
	/* Kill anything the test left behind in its process group. */
	kill(-pid, SIGKILL);
	if (WIFEXITED(status)) {
		res->code = WEXITSTATUS(status);
		if (res->code == KSFT_SKIP) {
			ssize_t n = read(pipefd[0], res->reason, sizeof(res->reason) - 1);

			if (n > 0)
				res->reason[n] = 0;
		} else if (res->code != KSFT_PASS) {
			res->code = KSFT_FAIL;
		}
	} else if (WIFSIGNALED(status)) {
		res->code = KSFT_FAIL;
		snprintf(res->reason, sizeof(res->reason), "died with signal %d", WTERMSIG(status));
	} else {
		res->code = KSFT_FAIL;
	}
	close(pipefd[0]);
}

static inline int __harness_count(const char *filter, int list)
{
	int n = 0;
	char full[512];

	for (struct __test_metadata *t = __harness_tests; t; t = t->next) {
		struct __fixture_variant_metadata *v = t->fixture->variants;

		do {
			__harness_full_name(full, sizeof(full), t, v);
			if (!filter || strstr(full, filter)) {
				n++;
				if (list)
					printf("%s\n", full);
			}
			v = v ? v->next : NULL;
		} while (v);
	}
	return n;
}

static inline int test_harness_run(int argc, char **argv)
{
	const char *filter = NULL;
	int opt, n, i = 0, pass = 0, fail = 0, skip = 0;
	char full[512];

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((opt = getopt(argc, argv, "lt:h")) != -1) {
		switch (opt) {
		case 'l':
			__harness_count(NULL, 1);
			return 0;
		case 't':
			filter = optarg;
			break;
		default:
			fprintf(stderr, "usage: %s [-l] [-t name-substring]\n", argv[0]);
			return 2;
		}
	}
	n = __harness_count(filter, 0);
	printf("TAP version 13\n1..%d\n", n);
	for (struct __test_metadata *t = __harness_tests; t; t = t->next) {
		struct __fixture_variant_metadata *v = t->fixture->variants;

		do {
			struct __harness_result res;

			__harness_full_name(full, sizeof(full), t, v);
			if (!filter || strstr(full, filter)) {
				i++;
				printf("# RUN %s\n", full);
				__harness_run_one(t, v, &res);
				if (res.code == KSFT_PASS) {
					pass++;
					printf("ok %d %s\n", i, full);
				} else if (res.code == KSFT_SKIP) {
					skip++;
					printf("ok %d %s # SKIP %s\n", i, full, res.reason);
				} else {
					fail++;
					printf("not ok %d %s%s%s\n", i, full,
					       res.reason[0] ? " # " : "", res.reason);
				}
			}
			v = v ? v->next : NULL;
		} while (v);
	}
	printf("# Totals: pass:%d fail:%d skip:%d\n", pass, fail, skip);
	if (fail)
		return KSFT_FAIL;
	if (n > 0 && skip == n)
		return KSFT_SKIP;
	return KSFT_PASS;
}

#define TEST_HARNESS_MAIN                            \
	int main(int argc, char **argv)              \
	{                                            \
		return test_harness_run(argc, argv); \
	}

#endif /* KDERP_HARNESS_H */
