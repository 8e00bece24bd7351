#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run_tests.sh - run kderp's selftests and print KTAP.
#
# Usage: run_tests.sh TEST...
# Each TEST is an executable (a harness.h binary or a script) that prints
# KTAP itself: "ok N name", "not ok N name", "ok N name # SKIP why".
# Its exit status is 0 (pass), 4 (skipped as a whole) or anything else (fail).
#
# This runner nests each test's output, counts every leaf result, and ends
# with the line "N passed, N failed, N skipped". It exits 1 if anything failed.
#
# Environment:
#   KDERP_TEST_TIMEOUT  per-program timeout in seconds (default 600)
#   KDERP_TEST_FILTER   only run programs whose path contains this string
#   KDERP_BPFFS_BASE    parent of the daemons' pin directories (default: one per run)
set -u

timeout_s=${KDERP_TEST_TIMEOUT:-600}
filter=${KDERP_TEST_FILTER:-}

progs=()
for t in "$@"; do
	if [ -n "$filter" ] && [[ "$t" != *"$filter"* ]]; then
		continue
	fi
	progs+=("$t")
done

echo "TAP version 13"
echo "1..${#progs[@]}"

pass=0
fail=0
skip=0
i=0
tmp=$(mktemp)
# Each kderpd a test starts pins its state maps in a directory of its own
# under one directory for this run (kderpd: KDERP_BPFFS_BASE/kderpd-PID when
# --bpffs-dir is left at its default), so daemons never share one, runs side
# by side never meet, and whatever a crashed daemon leaves is removed here.
# bpffs names may not contain dots.
own_pins=
if [ -z "${KDERP_BPFFS_BASE:-}" ]; then
	export KDERP_BPFFS_BASE=/sys/fs/bpf/kderp-test-$$
	own_pins=$KDERP_BPFFS_BASE
fi
# A daemon killed leaves its control socket, named after its pin directory
# (include/kderp_abi.h): those of this run's go with the pins.
trap 'rm -f "$tmp"; if [ -n "$own_pins" ]; then rm -rf "$own_pins"
	rm -f "/run/kderpd/ctl-sys+fs+bpf+kderp-test-$$+"*; fi' EXIT

for t in "${progs[@]}"; do
	i=$((i + 1))
	name=${t#./}
	echo "# selftests: $name"
	start=$(date +%s)
	timeout --kill-after=10 "$timeout_s" "$t" >"$tmp" 2>&1 </dev/null
	rc=$?
	dur=$(($(date +%s) - start))
	sed 's/^/    /' "$tmp"
	p=$(grep -cE '^ok [0-9]+' "$tmp" | head -1)
	s=$(grep -cE '^ok [0-9]+ .*# *SKIP' "$tmp" | head -1)
	f=$(grep -cE '^not ok [0-9]+' "$tmp" | head -1)
	p=$((p - s))
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		f=$((f + 1))
		echo "not ok $i selftests: $name # TIMEOUT ${timeout_s}s"
	elif [ "$rc" -eq 4 ] && [ $((p + f)) -eq 0 ]; then
		[ "$s" -eq 0 ] && s=1
		echo "ok $i selftests: $name # SKIP"
	elif [ "$rc" -ne 0 ] && [ "$rc" -ne 4 ]; then
		# A failing exit with no failing case reported still fails.
		[ "$f" -eq 0 ] && f=1
		echo "not ok $i selftests: $name # exit=$rc (${dur}s)"
	elif [ $((p + s + f)) -eq 0 ]; then
		f=1
		echo "not ok $i selftests: $name # reported no results"
	elif [ "$f" -gt 0 ]; then
		echo "not ok $i selftests: $name # exit=$rc (${dur}s)"
	else
		echo "ok $i selftests: $name (${dur}s)"
	fi
	pass=$((pass + p))
	fail=$((fail + f))
	skip=$((skip + s))
done

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
