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
. selftests/lib/lib.sh

out=${KDERP_OUTPUT:-.output}
bench=$out/kderp-bench
kderpd=$out/kderpd

ktap_header 2
if [ ! -x "$kderpd" ] || [ ! -x "$bench" ]; then
	ktap_skip stun_answers_counted "kderpd or kderp-bench not built"
	ktap_skip stun_no_server_fails "kderpd or kderp-bench not built"
	ktap_finish
fi

tmp=$(mktemp -d)
srv_pid=
cleanup() {
	if [ -n "$srv_pid" ]; then
		kill "$srv_pid" 2>/dev/null
		wait "$srv_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

port=$(free_port)
stun_port=$(free_port)
"$kderpd" -a "127.0.0.1:$port" --stun-port "$stun_port" -c "$tmp/key.json" \
	>"$tmp/server.log" 2>&1 &
srv_pid=$!
if ! wait_port 127.0.0.1 "$port" 100; then
	ktap_fail stun_answers_counted "kderpd did not start"
else
	# the STUN thread may start a moment after HTTP: retry a short run first
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		timeout 10 "$bench" stun -s "127.0.0.1:$stun_port" -t 0.1 -r 1000 \
			>/dev/null 2>&1 && break
		sleep 0.2
	done
	timeout 30 "$bench" stun -s "127.0.0.1:$stun_port" -t 0.5 -r 20000 -P "$srv_pid" \
		--label kderpd --json "$tmp/r.json" >"$tmp/out" 2>&1
	rc=$?
	sed 's/^/# /' "$tmp/out"
	if [ $rc -ne 0 ]; then
		ktap_fail stun_answers_counted "kderp-bench exit $rc"
	elif ! python3 - "$tmp/r.json" <<'PY'
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
	then
		ktap_fail stun_answers_counted "wrong counts or figures"
	else
		ktap_pass stun_answers_counted
	fi
fi

# 2. no server: exit 3 and say so
kill "$srv_pid" 2>/dev/null
wait "$srv_pid" 2>/dev/null
srv_pid=
timeout 20 "$bench" stun -s "127.0.0.1:$stun_port" -t 0.3 -r 5000 >"$tmp/out2" 2>&1
rc=$?
if [ $rc -eq 3 ] && grep -q "no request was answered" "$tmp/out2"; then
	ktap_pass stun_no_server_fails
else
	sed 's/^/# /' "$tmp/out2"
	ktap_fail stun_no_server_fails "exit $rc, want 3 with a message"
fi
ktap_finish
