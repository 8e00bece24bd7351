#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_stun_fuzz.sh - replay the STUN seed corpus through the libFuzzer
# harness, then fuzz for a few seconds (bounded). `make fuzz` runs longer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

fuzzer=${KDERP_OUTPUT:-.output}/fuzz/fuzz_stun
secs=${KDERP_FUZZ_SECS:-5}

ktap_header 2
if [ ! -x "$fuzzer" ]; then
	ktap_skip "stun_seed_corpus" "fuzzer not built (needs clang with libFuzzer)"
	ktap_skip "stun_fuzz_${secs}s" "fuzzer not built"
	ktap_finish
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
cp "$here/fuzz/corpus/stun/"* "$work/corpus/"

# every seed once: no crash, no sanitizer report
if "$fuzzer" -runs=0 "$work/corpus" >"$work/replay.log" 2>&1; then
	ktap_pass "stun_seed_corpus"
else
	sed 's/^/# /' "$work/replay.log" | tail -n 30
	ktap_fail "stun_seed_corpus"
fi

if timeout $((secs + 30)) "$fuzzer" -max_total_time="$secs" -timeout=5 -rss_limit_mb=1024 \
	-artifact_prefix="$work/" "$work/corpus" >"$work/fuzz.log" 2>&1; then
	runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work/fuzz.log")
	echo "# ${runs:-?} inputs in ${secs} s"
	ktap_pass "stun_fuzz_${secs}s"
else
	sed 's/^/# /' "$work/fuzz.log" | tail -n 30
	ktap_fail "stun_fuzz_${secs}s"
fi
ktap_finish
