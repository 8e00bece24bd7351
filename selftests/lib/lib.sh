# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# lib.sh - helpers for kderp's shell selftests (source it).
#
# A shell test is a list of shell functions, one per test (xdp-tools'
# test_runner style):
#
#   ALL_TESTS="first_test second_test"
#   first_test() {
#       ... || { fail "why"; return; }
#       [ -x "$tool" ] || { skip "tool not built"; return; }
#   }
#   ...
#   run_all_tests
#
# run_all_tests prints the KTAP plan (1..N, N from ALL_TESTS), runs the
# functions in order in this shell (so a test may use what an earlier one
# set up), and prints one line per test, named after the function:
#   return 0                -> ok N name
#   skip REASON; return     -> ok N name # SKIP REASON
#   fail [REASON]; return   -> not ok N name # REASON
#   any other non-zero      -> not ok N name
# Before run_all_tests, skip_all REASON reports every test as skipped and
# exits (for a missing binary, no root, ...); require WHAT... does that for
# the usual prerequisites. The exit status is 0 (all
# passed or skipped), 1 (a failure) or 4 (everything skipped).
#
# Cleanup: at_exit CMD (below). Namespaces: netns.sh.

ksft_skip=4
__ktap_n=0
__ktap_pass=0
__ktap_fail=0
__ktap_skip=0
__ktap_why=

# skip REASON / fail [REASON]: end a test function with `skip ...; return`.
skip() {
	__ktap_why=$1
	return "$ksft_skip"
}

fail() {
	__ktap_why=${1:-}
	return 1
}

# run_all_tests: run $ALL_TESTS and exit with the suite's status.
run_all_tests() {
	local t rc
	# shellcheck disable=SC2086 # ALL_TESTS is a list of words
	set -- $ALL_TESTS
	ktap_header $#
	for t in "$@"; do
		__ktap_why=
		"$t"
		rc=$?
		case $rc in
		0) ktap_pass "$t" ;;
		"$ksft_skip") ktap_skip "$t" "$__ktap_why" ;;
		*) ktap_fail "$t" "$__ktap_why" ;;
		esac
	done
	ktap_finish
}

# skip_all REASON: report every test in $ALL_TESTS as skipped, then exit.
skip_all() {
	local why=$1 t
	# shellcheck disable=SC2086
	set -- $ALL_TESTS
	ktap_header $#
	for t in "$@"; do ktap_skip "$t" "$why"; done
	ktap_finish
}

# require WHAT...: skip_all with the reason unless every WHAT is there:
# root, bpffs (mounted at /sys/fs/bpf), user:NAME, a path (an executable,
# e.g. a built binary), or else a command name.
require() {
	local r
	for r in "$@"; do
		case $r in
		root) [ "$(id -u)" -eq 0 ] || skip_all "needs root" ;;
		bpffs) [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" = bpf_fs ] ||
			skip_all "no bpffs at /sys/fs/bpf" ;;
		user:*) id "${r#user:}" >/dev/null 2>&1 || skip_all "no user ${r#user:}" ;;
		*/*) [ -x "$r" ] || skip_all "$r is missing (not built?)" ;;
		*) command -v "$r" >/dev/null || skip_all "needs $r" ;;
		esac
	done
}

# The KTAP primitives run_all_tests uses. Scripts whose tests are rows of a
# table rather than functions (selftests/vm/ktls_interop.sh) print through
# them directly: ktap_header COUNT, one ktap_pass/fail/skip per test, and
# ktap_finish.
ktap_header() { # ktap_header COUNT
	echo "TAP version 13"
	echo "1..$1"
}

ktap_pass() { # ktap_pass NAME
	__ktap_n=$((__ktap_n + 1)); __ktap_pass=$((__ktap_pass + 1))
	echo "ok $__ktap_n $1"
}

ktap_fail() { # ktap_fail NAME [REASON]
	__ktap_n=$((__ktap_n + 1)); __ktap_fail=$((__ktap_fail + 1))
	echo "not ok $__ktap_n $1${2:+ # $2}"
}

ktap_skip() { # ktap_skip NAME REASON
	__ktap_n=$((__ktap_n + 1)); __ktap_skip=$((__ktap_skip + 1))
	echo "ok $__ktap_n $1 # SKIP $2"
}

ktap_finish() {
	echo "# Totals: pass:$__ktap_pass fail:$__ktap_fail skip:$__ktap_skip"
	if [ "$__ktap_fail" -gt 0 ]; then exit 1; fi
	if [ "$__ktap_n" -gt 0 ] && [ "$__ktap_skip" -eq "$__ktap_n" ]; then exit "$ksft_skip"; fi
	exit 0
}

# at_exit CMD...: run CMD when the test exits, however it exits (the last
# registered runs first). Use it instead of trap ... EXIT, which would
# replace the one trap that runs them all.
__at_exit=()
at_exit() {
	__at_exit=("$(printf '%q ' "$@")" "${__at_exit[@]}")
}
__run_at_exit() {
	local c
	for c in "${__at_exit[@]}"; do eval "$c"; done
}
trap __run_at_exit EXIT
trap 'exit 1' INT TERM

# free_port: print a TCP port on 127.0.0.1 that is free right now.
free_port() {
	python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# wait_port HOST PORT [TRIES]: wait until something listens (0.1 s per try).
wait_port() {
	local host=$1 port=$2 tries=${3:-100}
	while [ "$tries" -gt 0 ]; do
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
		sleep 0.1
		tries=$((tries - 1))
	done
	return 1
}

# fuzz_seed_corpus NAME, fuzz_run NAME: test bodies for the libFuzzer
# harness $KDERP_OUTPUT/fuzz/fuzz_NAME. The first replays the seed corpus
# selftests/fuzz/corpus/NAME, the second fuzzes from it for KDERP_FUZZ_SECS
# (default 5) seconds. Both skip if the harness was not built.
__lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

__fuzz_setup() { # __fuzz_setup NAME: sets fuzzer and work (a scratch corpus copy)
	fuzzer=${KDERP_OUTPUT:-.output}/fuzz/fuzz_$1
	[ -x "$fuzzer" ] || return 1
	work=$(mktemp -d)
	mkdir -p "$work/corpus"
	cp "$__lib_dir/../fuzz/corpus/$1/"* "$work/corpus/"
}

fuzz_seed_corpus() {
	local fuzzer work rc=0
	__fuzz_setup "$1" || { skip "fuzzer not built (needs clang with libFuzzer)"; return; }
	if ! "$fuzzer" -runs=0 "$work/corpus" >"$work/replay.log" 2>&1; then
		sed 's/^/# /' "$work/replay.log" | tail -n 30
		rc=1
	fi
	rm -rf "$work"
	return $rc
}

fuzz_run() {
	local secs=${KDERP_FUZZ_SECS:-5} fuzzer work runs rc=0
	__fuzz_setup "$1" || { skip "fuzzer not built"; return; }
	if timeout $((secs + 30)) "$fuzzer" -max_total_time="$secs" -timeout=5 -rss_limit_mb=1024 \
		-artifact_prefix="$work/" "$work/corpus" >"$work/fuzz.log" 2>&1; then
		runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/fuzz.log")
		echo "# ${runs:-?} inputs in ${secs} s"
	else
		sed 's/^/# /' "$work/fuzz.log" | tail -n 30
		rc=1
	fi
	rm -rf "$work"
	return $rc
}
