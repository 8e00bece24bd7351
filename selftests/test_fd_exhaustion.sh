#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_fd_exhaustion.sh - out of file descriptors, kderpd neither spins nor
# floods its log, counts the failures, and recovers as soon as descriptors
# are free again. kderpd runs with a hard limit of 256 descriptors and 400
# clients connect and hold their connections. The tests run in order on one
# daemon.
set -u
here=$(dirname "$0")
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"

ALL_TESTS="no_spinning one_log_line accept_errors_counted recovers_when_fds_free"

kderpd=${KDERP_OUTPUT:-.output}/kderpd
[ -x "$kderpd" ] || skip_all "kderpd not built"
command -v prlimit >/dev/null && command -v curl >/dev/null || skip_all "needs prlimit and curl"
tmp=$(mktemp -d)
pid= holder= port=
cleanup() {
	[ -n "$holder" ] && kill "$holder" 2>/dev/null
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
at_exit cleanup

# 400 connections held open; the holder exits by itself after 30 s.
hold_connections() {
	python3 - "$port" >"$tmp/holder.out" 2>&1 <<'EOF_PY' &
import socket, sys, time
socks = []
for i in range(400):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
        socks.append(s)
    except OSError as e:
        print("connect", i, e)
        break
print("held", len(socks), flush=True)
time.sleep(30)
EOF_PY
	holder=$!
	for _ in $(seq 50); do grep -q '^held' "$tmp/holder.out" 2>/dev/null && break; sleep 0.1; done
	sleep 0.5
}

ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
accept_lines() { grep -c 'accept:' "$tmp/log"; }

# CPU time of kderpd (utime + stime) over 2 s of exhaustion: at most 10 %.
no_spinning() {
	local t0 t1 pct
	port=$(free_port)
	prlimit --nofile=256:256 "$kderpd" -a "127.0.0.1:$port" -c "$tmp/key" --stun=false \
		--bpffs-dir= 2>"$tmp/log" &
	pid=$!
	wait_port 127.0.0.1 "$port" || { fail "kderpd did not start"; return; }
	hold_connections
	lines0=$(accept_lines)
	t0=$(ticks)
	sleep 2
	t1=$(ticks)
	lines1=$(accept_lines)
	pct=$(((t1 - t0) * 100 / (2 * $(getconf CLK_TCK))))
	echo "# $(tail -1 "$tmp/holder.out"); kderpd CPU ${pct}% over 2 s"
	[ "$pct" -le 10 ] || fail "${pct}% CPU while out of descriptors"
}

# A clear line, but at most one per 5 s per worker.
one_log_line() {
	[ -n "$pid" ] || { skip "no daemon"; return; }
	echo "# $lines1 accept lines in all, $((lines1 - lines0)) in the 2 s"
	grep -m1 'accept:' "$tmp/log" | sed 's/^/# /'
	[ "$lines1" -ge 1 ] && [ $((lines1 - lines0)) -le 4 ] ||
		fail "$lines1 lines in all, $((lines1 - lines0)) in 2 s"
}

accept_errors_counted() {
	local n
	[ -n "$pid" ] || { skip "no daemon"; return; }
	kill "$holder" 2>/dev/null
	wait "$holder" 2>/dev/null
	holder=
	sleep 0.3
	n=$(curl -s --max-time 5 "http://127.0.0.1:$port/debug/varz" |
		sed -n 's/^derp_accept_errors \([0-9]*\)$/\1/p')
	[ -n "$n" ] && [ "$n" -ge 1 ] || fail "derp_accept_errors=${n:-missing}"
}

# The descriptors are free again: the next client is served at once.
recovers_when_fds_free() {
	local code
	[ -n "$pid" ] || { skip "no daemon"; return; }
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/derp/probe")
	[ "$code" = 200 ] || fail "probe answered $code"
	kill -0 "$pid" 2>/dev/null || fail "kderpd died"
}

run_all_tests
