# SPDX-License-Identifier: MIT
# lib.sh - helpers for kderp's shell selftests (source it).
#
# A shell test prints KTAP through these helpers and ends with ktap_finish,
# which exits 0 (all passed or skipped), 1 (a failure) or 4 (all skipped).

ksft_skip=4
__ktap_n=0
__ktap_pass=0
__ktap_fail=0
__ktap_skip=0

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

ktap_check() { # ktap_check NAME CMD... : pass if CMD succeeds
	local name=$1; shift
	if "$@"; then ktap_pass "$name"; else ktap_fail "$name"; fi
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
	__at_exit=("$*" "${__at_exit[@]}")
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

# ktap_fuzz NAME: replay selftests/fuzz/corpus/NAME through the libFuzzer
# harness $KDERP_OUTPUT/fuzz/fuzz_NAME, then fuzz for KDERP_FUZZ_SECS (5 s).
# Prints two KTAP lines (SKIP if the harness was not built).
ktap_fuzz() {
	local name=$1 secs=${KDERP_FUZZ_SECS:-5}
	local fuzzer=${KDERP_OUTPUT:-.output}/fuzz/fuzz_$name
	local seeds work runs
	seeds="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/fuzz/corpus/$name"
	if [ ! -x "$fuzzer" ]; then
		ktap_skip "${name}_seed_corpus" "fuzzer not built (needs clang with libFuzzer)"
		ktap_skip "${name}_fuzz_${secs}s" "fuzzer not built"
		return
	fi
	work=$(mktemp -d)
	mkdir -p "$work/corpus"
	cp "$seeds/"* "$work/corpus/"
	if "$fuzzer" -runs=0 "$work/corpus" >"$work/replay.log" 2>&1; then
		ktap_pass "${name}_seed_corpus"
	else
		sed 's/^/# /' "$work/replay.log" | tail -n 30
		ktap_fail "${name}_seed_corpus"
	fi
	if timeout $((secs + 30)) "$fuzzer" -max_total_time="$secs" -timeout=5 -rss_limit_mb=1024 \
		-artifact_prefix="$work/" "$work/corpus" >"$work/fuzz.log" 2>&1; then
		runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/fuzz.log")
		echo "# ${runs:-?} inputs in ${secs} s"
		ktap_pass "${name}_fuzz_${secs}s"
	else
		sed 's/^/# /' "$work/fuzz.log" | tail -n 30
		ktap_fail "${name}_fuzz_${secs}s"
	fi
	rm -rf "$work"
}
