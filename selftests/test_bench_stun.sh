#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_bench_stun.sh - `kderp-bench stun` counts answers exactly and fails
# loudly (loopback, kderpd's userspace STUN server).
#
# 1. 20,000 requests/s for 0.5 s: every request is answered once, the
#    answers' XOR-MAPPED-ADDRESS matches (bad 0), and the JSON object has the
#    counts and CPU figures make bench uses.
# 2. Nothing listens on the port: kderp-bench exits 3, "no request was answered".
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=selftests/lib/lib.sh
. selftests/lib/lib.sh

ALL_TESTS="stun_answers_counted stun_no_server_fails"

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

stop_server() {
	if [ -n "$srv_pid" ]; then
		kill "$srv_pid" 2>/dev/null
		wait "$srv_pid" 2>/dev/null
	fi
	srv_pid=
}

# Both tests use this STUN port: the first with kderpd on it, the second without.
stun_port=$(free_port)

# check_result JSON: the counts and figures of a 0.5 s run at 20,000/s.
check_result() {
	python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[-1]
problems = []
if r["mode"] != "stun" or r["server"] != "kderpd":
    problems.append(f"mode/server {r['mode']}/{r['server']}")
# 0.5 s at 20,000/s: about 10,000 requests, every one answered exactly once
if not 9000 <= r["sent"] <= 10100:
    problems.append(f"sent {r['sent']}")
if r["received"] != r["sent"] or r["loss_pct"] != 0:
    problems.append(f"received {r['received']} of {r['sent']}")
if r["bad"] or r["duplicates"] or r["stray"]:
    problems.append(f"bad {r['bad']} dup {r['duplicates']} stray {r['stray']}")
for k in ("server_cpu_s", "machine_cpu_s", "softirq_cpu_s", "server_cpu_s_per_m",
          "machine_cpu_s_per_m", "p50_us", "p99_us"):
    if not isinstance(r.get(k), (int, float)) or r[k] < 0:
        problems.append(f"{k} = {r.get(k)}")
if problems:
    print("# " + "; ".join(problems))
    sys.exit(1)
PY
}

stun_answers_counted() {
	local port rc
	port=$(free_port)
	"$kderpd" -a "127.0.0.1:$port" --stun-port "$stun_port" -c "$tmp/key.json" \
		>"$tmp/server.log" 2>&1 &
	srv_pid=$!
	wait_port 127.0.0.1 "$port" 100 || { fail "kderpd did not start"; return; }
	# the STUN thread may start a moment after HTTP: retry a short run first
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		timeout 10 "$bench" stun -s "127.0.0.1:$stun_port" -t 0.1 -r 1000 \
			>/dev/null 2>&1 && break
		sleep 0.2
	done
	timeout 30 "$bench" stun -s "127.0.0.1:$stun_port" -t 0.5 -r 20000 -P "$srv_pid" \
		--label kderpd --json "$tmp/r.json" >"$tmp/out" 2>&1
	rc=$?
	stop_server
	sed 's/^/# /' "$tmp/out"
	[ $rc -eq 0 ] || { fail "kderp-bench exit $rc"; return; }
	check_result "$tmp/r.json" || fail "wrong counts or figures"
}

# no server: exit 3 and say so
stun_no_server_fails() {
	local rc
	stop_server
	timeout 20 "$bench" stun -s "127.0.0.1:$stun_port" -t 0.3 -r 5000 >"$tmp/out2" 2>&1
	rc=$?
	[ $rc -eq 3 ] && grep -q "no request was answered" "$tmp/out2" && return 0
	sed 's/^/# /' "$tmp/out2"
	fail "exit $rc, want 3 with a message"
}

run_all_tests
