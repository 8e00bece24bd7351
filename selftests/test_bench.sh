#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_bench.sh - kderp-bench counts exactly and fails loudly.
#
# 1. A short, rate-limited (lossless) run against kderpd: every packet sent is
#    received, in order, from the right key, with the right length.
# 2. The server is killed mid-run: kderp-bench exits 3 and says so, with the
#    figures it measured up to then.
# 3. Nothing listens: kderp-bench exits 2 with a handshake error.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=selftests/lib/lib.sh
. selftests/lib/lib.sh

ALL_TESTS="lossless_counts_exact server_close_mid_run handshake_refused"

out=${KDERP_OUTPUT:-.output}
bench=$out/kderp-bench
kderpd=$out/kderpd
[ -x "$kderpd" ] && [ -x "$bench" ] || skip_all "kderpd or kderp-bench not built"

tmp=$(mktemp -d)
srv_pid=
cleanup() {
	stop_server
	rm -rf "$tmp"
}
at_exit cleanup

start_server() { # start_server PORT
	"$kderpd" -a "127.0.0.1:$1" --stun=false -c "$tmp/key.json" >"$tmp/server.log" 2>&1 &
	srv_pid=$!
	wait_port 127.0.0.1 "$1" 100
}

stop_server() {
	if [ -n "$srv_pid" ]; then
		kill "$srv_pid" 2>/dev/null
		wait "$srv_pid" 2>/dev/null
	fi
	srv_pid=
}

# json_get FILE KEY: KEY of the last object in the JSON array FILE.
json_get() {
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[-1][sys.argv[2]])' "$1" "$2"
}

# lossless: 4 pairs, 40 Mbit/s of 1,400-byte packets for 1 s.
lossless_counts_exact() {
	local port rc sent recv reord bad
	port=$(free_port)
	start_server "$port" || { fail "kderpd did not start"; return; }
	timeout 60 "$bench" throughput -s "127.0.0.1:$port" -p 4 -S 1400 -r 40 -t 1 \
		--json "$tmp/r.json" >"$tmp/out1" 2>&1
	rc=$?
	stop_server
	sent=$(json_get "$tmp/r.json" sent 2>/dev/null)
	recv=$(json_get "$tmp/r.json" received 2>/dev/null)
	reord=$(json_get "$tmp/r.json" reordered 2>/dev/null)
	bad=$(json_get "$tmp/r.json" bad 2>/dev/null)
	echo "# exit $rc sent=$sent received=$recv reordered=$reord bad=$bad"
	# 40 Mbit/s for 1 s is about 3,571 packets; expect most of them sent.
	if [ "$rc" -eq 0 ] && [ -n "$sent" ] && [ "$sent" -gt 3000 ] && [ "$sent" = "$recv" ] &&
		[ "$reord" = 0 ] && [ "$bad" = 0 ]; then
		return 0
	fi
	sed 's/^/# /' "$tmp/out1"
	fail "sent=$sent received=$recv"
}

# the server dies one second into a five-second run.
server_close_mid_run() {
	local port bpid rc start took
	port=$(free_port)
	start_server "$port" || { fail "kderpd did not start"; return; }
	timeout 60 "$bench" throughput -s "127.0.0.1:$port" -p 2 -S 1400 -r 20 -t 5 \
		>"$tmp/out2" 2>&1 &
	bpid=$!
	sleep 1
	kill -9 "$srv_pid" 2>/dev/null
	wait "$srv_pid" 2>/dev/null
	srv_pid=
	start=$(date +%s)
	wait "$bpid"
	rc=$?
	took=$(($(date +%s) - start))
	echo "# exit $rc after ${took}s: $(grep -m1 FAILED "$tmp/out2")"
	if [ "$rc" -eq 3 ] && grep -q 'FAILED: server closed' "$tmp/out2" &&
		grep -q 'packets sent' "$tmp/out2" && [ "$took" -le 3 ]; then
		return 0
	fi
	sed 's/^/# /' "$tmp/out2"
	fail "exit $rc"
}

# nothing listens on the port.
handshake_refused() {
	local port rc
	port=$(free_port)
	timeout 30 "$bench" throughput -s "127.0.0.1:$port" -p 1 -t 1 >"$tmp/out3" 2>&1
	rc=$?
	[ "$rc" -eq 2 ] && grep -q 'handshake with 127.0.0.1' "$tmp/out3" && return 0
	sed 's/^/# /' "$tmp/out3"
	fail "exit $rc"
}

run_all_tests
