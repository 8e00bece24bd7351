#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_fd_exhaustion.sh - out of file descriptors, kderpd neither spins nor
# floods its log, counts the failures, and recovers as soon as descriptors
# are free again. kderpd runs with a hard limit of 256 descriptors and 400
# clients connect and hold their connections.
set -u
here=$(dirname "$0")
. "$here/lib.sh"

kderpd=${KDERP_OUTPUT:-.output}/kderpd
ktap_header 5
if [ ! -x "$kderpd" ] || ! command -v prlimit >/dev/null || ! command -v curl >/dev/null; then
	for t in cpu log metric recovery alive; do ktap_skip "$t" "needs kderpd, prlimit and curl"; done
	ktap_finish
fi
tmp=$(mktemp -d)
pid= holder=
cleanup() {
	[ -n "$holder" ] && kill "$holder" 2>/dev/null
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

port=$(free_port)
prlimit --nofile=256:256 "$kderpd" -a "127.0.0.1:$port" -c "$tmp/key" --stun=false \
	--bpffs-dir= 2>"$tmp/log" &
pid=$!
wait_port 127.0.0.1 "$port" || { ktap_fail cpu "kderpd did not start"; ktap_finish; }

# 400 connections held open (bounded: the holder exits after 30 s or when
# its stdin closes).
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

# CPU time of kderpd (utime + stime, clock ticks) over 2 s of exhaustion.
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
lines0=$(grep -c 'accept:' "$tmp/log")
t0=$(ticks)
sleep 2
t1=$(ticks)
lines1=$(grep -c 'accept:' "$tmp/log")
hz=$(getconf CLK_TCK)
pct=$(((t1 - t0) * 100 / (2 * hz)))
echo "# $(cat "$tmp/holder.out" | tail -1); kderpd CPU ${pct}% over 2 s, $((lines1 - lines0)) accept log lines"
if [ "$pct" -le 10 ]; then ktap_pass cpu; else ktap_fail cpu "${pct}% CPU while out of descriptors"; fi
# A clear line, but at most one per 5 s per worker.
if [ "$lines1" -ge 1 ] && [ $((lines1 - lines0)) -le 4 ]; then
	ktap_pass log
else
	ktap_fail log "$lines1 lines in all, $((lines1 - lines0)) in 2 s"
fi
grep -m1 'accept:' "$tmp/log" | sed 's/^/# /'

# Free the descriptors: recovery is immediate.
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
holder=
sleep 0.3
varz=$(curl -s --max-time 5 "http://127.0.0.1:$port/debug/varz")
n=$(sed -n 's/^derp_accept_errors \([0-9]*\)$/\1/p' <<<"$varz")
if [ -n "$n" ] && [ "$n" -ge 1 ]; then ktap_pass metric; else ktap_fail metric "derp_accept_errors=${n:-missing}"; fi
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/derp/probe")
if [ "$code" = 200 ]; then ktap_pass recovery; else ktap_fail recovery "probe answered $code"; fi
if kill -0 "$pid" 2>/dev/null; then ktap_pass alive; else ktap_fail alive; fi
ktap_finish
