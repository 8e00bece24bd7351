#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_lifecycle.sh - kderpd's process lifecycle: flags, key file, signals,
# logs. Every daemon runs on loopback with a free port and is killed on exit.
set -u
here=$(dirname "$0")
. "$here/lib/lib.sh"

kderpd=${KDERP_OUTPUT:-.output}/kderpd
ktap_header 8
if [ ! -x "$kderpd" ]; then
	for i in 1 2 3 4 5 6 7 8; do ktap_skip "lifecycle $i" "kderpd not built"; done
	ktap_finish
fi
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# 1. --version and Go-style flag errors.
if "$kderpd" --version | grep -q '^kderpd ' && "$kderpd" -version >/dev/null; then
	ktap_pass "version flag"
else
	ktap_fail "version flag"
fi
"$kderpd" --no-such-flag >/dev/null 2>&1
rc=$?
if [ "$rc" -eq 2 ]; then ktap_pass "unknown flag exits 2"; else ktap_fail "unknown flag exits 2" "rc=$rc"; fi

# 2. Start: the key file is created 0600, and the listener answers.
port=$(free_port)
"$kderpd" -a "127.0.0.1:$port" -c "$tmp/state/derper.key" --stun=false 2>"$tmp/log" &
pid=$!
if wait_port 127.0.0.1 "$port" && [ "$(stat -c %a "$tmp/state/derper.key")" = 600 ] &&
	grep -q '"PrivateKey": "privkey:' "$tmp/state/derper.key"; then
	ktap_pass "key file created with mode 0600"
else
	ktap_fail "key file created with mode 0600"
fi

# 3. Exercise the daemon (real clients if the interop driver is built, and
#    500 short connections), hold a few upgraded connections open, then
#    SIGTERM must stop it, exit 0, within 2 s. Under SAN=1 exit 0 also means
#    LeakSanitizer found no leak (it exits 23 otherwise).
interop=${KDERP_OUTPUT:-.output}/kderp-interop
if [ -x "$interop" ]; then
	for c in sendrecv three ping peergone; do
		timeout 60 "$interop" -url "http://127.0.0.1:$port/derp" "$c" >/dev/null 2>&1 ||
			echo "# interop $c failed"
	done
fi
# Unknown frame types (the interop "frames" case sends some) are counted.
if [ -x "$interop" ] && command -v curl >/dev/null; then
	timeout 60 "$interop" -url "http://127.0.0.1:$port/derp" frames >/dev/null 2>&1
	uf=$(curl -s --max-time 5 "http://127.0.0.1:$port/debug/varz" |
		sed -n 's/^derp_unknown_frames \([0-9]*\)$/\1/p')
	if [ -n "$uf" ] && [ "$uf" -ge 1 ]; then
		ktap_pass "unknown frames counted in /debug/varz"
	else
		ktap_fail "unknown frames counted in /debug/varz" "derp_unknown_frames=${uf:-missing}"
	fi
else
	ktap_skip "unknown frames counted in /debug/varz" "kderp-interop or curl missing"
fi
for i in $(seq 1 500); do
	exec {fd}<>"/dev/tcp/127.0.0.1/$port" || continue
	printf 'GET /derp HTTP/1.1\r\nUpgrade: DERP\r\n\r\n' >&"$fd"
	exec {fd}>&-
done
for i in 1 2 3; do
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
if [ "$rc" -eq 0 ] && [ "$ms" -le 2000 ]; then
	ktap_pass "SIGTERM exits 0 within 2 s"
else
	ktap_fail "SIGTERM exits 0 within 2 s" "rc=$rc ms=$ms"
fi
if grep -q 'shutting down' "$tmp/log" && grep -q 'stopped' "$tmp/log"; then
	ktap_pass "shutdown is logged"
else
	ktap_fail "shutdown is logged"
fi

# 4. The same key is used after a restart, and no whole key is ever logged.
"$kderpd" -a "127.0.0.1:$port" -c "$tmp/state/derper.key" --stun=false 2>>"$tmp/log" &
pid=$!
wait_port 127.0.0.1 "$port"
kill -INT "$pid"
wait "$pid"
rc=$?
pid=
k1=$(grep -o 'server key [0-9a-f]*' "$tmp/log" | sed -n 1p)
k2=$(grep -o 'server key [0-9a-f]*' "$tmp/log" | sed -n 2p)
if [ "$rc" -eq 0 ] && [ -n "$k1" ] && [ "$k1" = "$k2" ]; then
	ktap_pass "key survives a restart; SIGINT exits 0"
else
	ktap_fail "key survives a restart; SIGINT exits 0" "rc=$rc '$k1' '$k2'"
fi
priv=$(grep -o 'privkey:[0-9a-f]*' "$tmp/state/derper.key" | cut -d: -f2)
if grep -qE '[0-9a-f]{64}' "$tmp/log" || grep -q "${priv:0:16}" "$tmp/log"; then
	ktap_fail "no whole key or secret in the log"
else
	ktap_pass "no whole key or secret in the log"
fi
ktap_finish
