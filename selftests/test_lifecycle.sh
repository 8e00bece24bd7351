#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_lifecycle.sh - kderpd's process lifecycle: flags, key file, signals,
# logs. Every daemon runs on loopback with a free port and is killed on exit.
# The tests run in order and share one daemon and its state directory.
set -u
here=$(dirname "$0")
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"

ALL_TESTS="version_flag unknown_flag_exits_2 key_file_created_0600
	unknown_frames_counted_in_varz sigterm_exits_0_within_2s shutdown_is_logged
	key_survives_restart_sigint_exits_0 no_key_or_secret_in_log"

kderpd=${KDERP_OUTPUT:-.output}/kderpd
interop=${KDERP_OUTPUT:-.output}/kderp-interop
[ -x "$kderpd" ] || skip_all "kderpd not built"
tmp=$(mktemp -d)
pid=
port=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
at_exit cleanup

# --version and Go-style flag errors.
version_flag() {
	"$kderpd" --version | grep -q '^kderpd ' && "$kderpd" -version >/dev/null
}

unknown_flag_exits_2() {
	local rc
	"$kderpd" --no-such-flag >/dev/null 2>&1
	rc=$?
	[ "$rc" -eq 2 ] || fail "rc=$rc"
}

# Start: the key file is created 0600, and the listener answers. The daemon
# stays up for the next tests.
key_file_created_0600() {
	port=$(free_port)
	"$kderpd" -a "127.0.0.1:$port" -c "$tmp/state/derper.key" --stun=false 2>"$tmp/log" &
	pid=$!
	wait_port 127.0.0.1 "$port" && [ "$(stat -c %a "$tmp/state/derper.key")" = 600 ] &&
		grep -q '"PrivateKey": "privkey:' "$tmp/state/derper.key"
}

# Real clients exercise the daemon (if the interop driver is built); unknown
# frame types (the interop "frames" case sends some) are counted.
unknown_frames_counted_in_varz() {
	local c uf
	if [ -x "$interop" ]; then
		for c in sendrecv three ping peergone; do
			timeout 60 "$interop" -url "http://127.0.0.1:$port/derp" "$c" >/dev/null 2>&1 ||
				echo "# interop $c failed"
		done
	fi
	if [ ! -x "$interop" ] || ! command -v curl >/dev/null; then
		skip "kderp-interop or curl missing"
		return
	fi
	timeout 60 "$interop" -url "http://127.0.0.1:$port/derp" frames >/dev/null 2>&1
	uf=$(curl -s --max-time 5 "http://127.0.0.1:$port/debug/varz" |
		sed -n 's/^derp_unknown_frames \([0-9]*\)$/\1/p')
	[ -n "$uf" ] && [ "$uf" -ge 1 ] || fail "derp_unknown_frames=${uf:-missing}"
}

# 500 short connections and a few upgraded ones held open, then SIGTERM must
# stop the daemon, exit 0, within 2 s. Under SAN=1 exit 0 also means
# LeakSanitizer found no leak (it exits 23 otherwise).
sigterm_exits_0_within_2s() {
	local fd start rc ms
	for _ in $(seq 1 500); do
		exec {fd}<>"/dev/tcp/127.0.0.1/$port" || continue
		printf 'GET /derp HTTP/1.1\r\nUpgrade: DERP\r\n\r\n' >&"$fd"
		exec {fd}>&-
	done
	for _ in 1 2 3; do
		exec {fd}<>"/dev/tcp/127.0.0.1/$port"
		printf 'GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n' >&"$fd"
	done
	sleep 0.3
	start=$(date +%s%N)
	kill -TERM "$pid"
	wait "$pid"
	rc=$?
	ms=$((($(date +%s%N) - start) / 1000000))
	pid=
	echo "# SIGTERM: exit $rc after ${ms} ms"
	[ "$rc" -eq 0 ] && [ "$ms" -le 2000 ] || fail "rc=$rc ms=$ms"
}

shutdown_is_logged() {
	grep -q 'shutting down' "$tmp/log" && grep -q 'stopped' "$tmp/log"
}

# The same key is used after a restart.
key_survives_restart_sigint_exits_0() {
	local rc k1 k2
	"$kderpd" -a "127.0.0.1:$port" -c "$tmp/state/derper.key" --stun=false 2>>"$tmp/log" &
	pid=$!
	wait_port 127.0.0.1 "$port"
	kill -INT "$pid"
	wait "$pid"
	rc=$?
	pid=
	k1=$(grep -o 'server key [0-9a-f]*' "$tmp/log" | sed -n 1p)
	k2=$(grep -o 'server key [0-9a-f]*' "$tmp/log" | sed -n 2p)
	[ "$rc" -eq 0 ] && [ -n "$k1" ] && [ "$k1" = "$k2" ] || fail "rc=$rc '$k1' '$k2'"
}

# No whole key is ever logged.
no_key_or_secret_in_log() {
	local priv
	priv=$(grep -o 'privkey:[0-9a-f]*' "$tmp/state/derper.key" | cut -d: -f2)
	! grep -qE '[0-9a-f]{64}' "$tmp/log" && ! grep -q "${priv:0:16}" "$tmp/log"
}

run_all_tests
