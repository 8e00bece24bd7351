#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_interop.sh - Tailscale's own DERP client (tailscale.com/derp/derphttp,
# built into $KDERP_OUTPUT/kderp-interop) against kderpd: over plain HTTP,
# over TLS 1.3 with a self-signed certificate for derp1.test (dialled at
# 127.0.0.1), where it also checks fast start and runs Tailscale's derpprobe,
# if the server has --tls-max over TLS 1.2, and briefly over HTTP on [::1].
#
# Environment:
#   KDERP_OUTPUT               build directory (exported by the Makefile)
#   KDERP_INTEROP_DAEMON       server binary to test (default $KDERP_OUTPUT/kderpd;
#                              Tailscale's derper takes the same flags)
#   KDERP_INTEROP_DAEMON_ARGS  extra server flags (e.g. --verbose); if they set
#                              --tls-max, the TLS run uses that and there is no
#                              separate TLS 1.2 run
#   KDERP_INTEROP_CASES        cases to run over plain HTTP and TLS only (no
#                              TLS 1.2 or IPv6 run); default: all, everywhere
#   KDERP_INTEROP_TIMEOUT      seconds per case (default 20)
set -u

dir=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$dir/lib/lib.sh"

out=${KDERP_OUTPUT:-$dir/../.output}
daemon=${KDERP_INTEROP_DAEMON:-$out/kderpd}
read -r -a daemon_args <<<"${KDERP_INTEROP_DAEMON_ARGS:-}"
interop=$out/kderp-interop
probe=$out/derpprobe
host=derp1.test
case_timeout=${KDERP_INTEROP_TIMEOUT:-20}

why=
if [ ! -x "$interop" ]; then
	why="kderp-interop not built"
	[ -s "$interop.skip" ] && why="kderp-interop not built: $(cat "$interop.skip")"
elif [ ! -x "$daemon" ]; then
	why="no server binary at $daemon"
fi

# Who runs what. After its client cases, each server must stop cleanly on
# SIGTERM (the "shutdown" case: exit 0, no sanitizer report in its log).
tls_version=(-tls-version 1.3)
tls12=no
if [[ "${KDERP_INTEROP_DAEMON_ARGS:-}" == *tls-max* ]]; then
	tls_version=()
elif [ -z "$why" ] && [ -z "${KDERP_INTEROP_CASES:-}" ] &&
	"$daemon" --help 2>&1 | grep -q -- '-tls-max'; then
	tls12=yes
fi
if [ -n "${KDERP_INTEROP_CASES:-}" ]; then
	read -r -a cases <<<"$KDERP_INTEROP_CASES"
	tls_cases=("${cases[@]}")
	tls12_cases=("${cases[@]}")
else
	cases=(sendrecv three ping peergone peergone-scope nothere upgrade early http frames order
		bulk slowpeer self dupkey reconnect many watch presentflags meshframes)
	tls_cases=("${cases[@]}" tlsversion faststart untrusted derpprobe)
	tls12_cases=("${cases[@]}" tlsversion untrusted derpprobe)
	# The minute-long idle check once, over plain HTTP.
	cases+=(keepalive)
fi
# A short plain-HTTP run on [::1] (default run only; skipped without IPv6).
ipv6_cases=()
[ -z "${KDERP_INTEROP_CASES:-}" ] && ipv6_cases=(sendrecv ping upgrade watch)
cases+=(shutdown)
tls_cases+=(shutdown)
tls12_cases+=(shutdown)
[ ${#ipv6_cases[@]} -gt 0 ] && ipv6_cases+=(shutdown)
total=$((${#cases[@]} + ${#tls_cases[@]} + ${#ipv6_cases[@]}))
[ "$tls12" = yes ] && total=$((total + ${#tls12_cases[@]}))

tmp=$(mktemp -d)
pids=()
# kderpd pins its state maps under KDERP_BPFFS_BASE/kderpd-PID when that is
# set (run_tests.sh sets it); run by hand, use a base of our own so as not to
# meet another kderpd on the default directory.
own_pins=
if [ -z "${KDERP_BPFFS_BASE:-}" ] && [ -w /sys/fs/bpf ]; then
	export KDERP_BPFFS_BASE=/sys/fs/bpf/kderp-interop-$$
	own_pins=$KDERP_BPFFS_BASE
fi
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
	rm -rf "$tmp"
	[ -n "$own_pins" ] && rm -rf "$own_pins"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ktap_header "$total"

skip_all() { # skip_all TRANSPORT REASON CASE...
	local transport=$1 why=$2 c
	shift 2
	for c in "$@"; do
		ktap_skip "interop $transport $c" "$why"
	done
}

fail_all() { # fail_all TRANSPORT REASON CASE...
	local transport=$1 why=$2 c
	shift 2
	for c in "$@"; do
		ktap_fail "interop $transport $c" "$why"
	done
}

if [ -n "$why" ]; then
	skip_all plain "$why" "${cases[@]}"
	skip_all tls "$why" "${tls_cases[@]}"
	[ ${#ipv6_cases[@]} -gt 0 ] && skip_all ipv6 "$why" "${ipv6_cases[@]}"
	ktap_finish
fi

log_tail() { # log_tail LOG
	echo "# --- last lines of $(basename "$1") ---"
	tail -n 25 "$1" | sed 's/^/#   /'
}

# start_daemon NAME ARGS...: start the server on a free port of $bind (an
# IP, default 127.0.0.1) and wait for it; a second port is tried if the
# first was taken meanwhile. Sets $daemon_pid and $port; the log is
# $tmp/NAME.log.
bind=127.0.0.1
start_daemon() {
	local name=$1 try addr=$bind
	shift
	[[ "$bind" == *:* ]] && addr="[$bind]"
	for try in 1 2; do
		port=$(free_port)
		"$daemon" -a "$addr:$port" -c "$tmp/$name.key" --stun=false \
			--mesh-psk-file "$tmp/mesh.key" "$@" \
			"${daemon_args[@]}" >"$tmp/$name.log" 2>&1 &
		daemon_pid=$!
		pids+=("$daemon_pid")
		for _ in $(seq 1 100); do
			kill -0 "$daemon_pid" 2>/dev/null || break
			wait_port "$bind" "$port" 1 && return 0
		done
		echo "# $name server (try $try) did not listen on $addr:$port"
		log_tail "$tmp/$name.log"
		kill "$daemon_pid" 2>/dev/null
	done
	return 1
}

# check_shutdown NAME LOG PID: SIGTERM; the server must exit 0 within 10 s
# and its log must hold no sanitizer report.
check_shutdown() {
	local name=$1 log=$2 pid=$3 rc
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		log_tail "$log"
		ktap_fail "$name" "still running 10 s after SIGTERM"
		return
	fi
	wait "$pid"
	rc=$?
	if grep -qE 'Sanitizer|runtime error:' "$log"; then
		grep -E -A 12 'Sanitizer|runtime error:' "$log" | head -n 40 | sed 's/^/#   /'
		ktap_fail "$name" "sanitizer report in the server log"
	elif [ "$rc" -ne 0 ]; then
		log_tail "$log"
		ktap_fail "$name" "server exit status $rc after SIGTERM"
	else
		ktap_pass "$name"
	fi
}

# run_derpprobe NAME LOG URL: Tailscale's derpprobe, once, with a one-node
# DERP map that pins the certificate by hash: its mesh probe (a prober
# client with the mesh key sending to itself through the server) and its
# bandwidth probe (4 MB) must both report good.
run_derpprobe() {
	local name=$1 log=$2 url=$3 hash rc
	if [ ! -x "$probe" ]; then
		local why="derpprobe not built"
		[ -s "$probe.skip" ] && why="$why: $(cat "$probe.skip")"
		ktap_skip "$name" "$why"
		return
	fi
	if [[ "$url" != https:* ]]; then
		ktap_skip "$name" "derpprobe needs TLS"
		return
	fi
	hash=$(openssl x509 -in "$tmp/certs/$host.crt" -outform DER | sha256sum | cut -d' ' -f1)
	cat >"$tmp/derpmap.json" <<-EOF
		{"Regions": {"900": {"RegionID": 900, "RegionCode": "kderp", "RegionName": "kderp",
		 "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": "$host",
		  "CertName": "sha256-raw:$hash", "IPv4": "127.0.0.1", "IPv6": "",
		  "DERPPort": $port, "STUNPort": -1}]}}}
	EOF
	timeout 60 "$probe" --derp-map "file://$tmp/derpmap.json" --once --spread=false \
		--tls-interval=0 --mesh-psk-file "$tmp/mesh.key" --bw-interval=1s \
		--bw-probe-size-bytes=4000000 >"$tmp/derpprobe.out" 2>&1
	rc=$?
	grep -E ' (good|bad): ' "$tmp/derpprobe.out" | sed 's/^[0-9/]* [0-9:.]* /# derpprobe: /'
	if [ "$rc" -eq 0 ] && grep -q 'good: derp/kderp/900a/900a/mesh' "$tmp/derpprobe.out" &&
		grep -q 'good: derp/kderp/900a/900a/bw' "$tmp/derpprobe.out"; then
		ktap_pass "$name"
	else
		tail -n 15 "$tmp/derpprobe.out" | sed 's/^/#   /'
		log_tail "$log"
		ktap_fail "$name" "derpprobe exit $rc"
	fi
}

# report_case NAME CASE LOG RC OUTPUT: one KTAP line for a kderp-interop run.
report_case() {
	local name=$1 c=$2 log=$3 rc=$4 output=$5
	# Keep the tool's diagnostics; its own KTAP lines become ours.
	printf '%s\n' "$output" | grep '^#' | grep -v '^# Totals'
	case $rc in
	0) ktap_pass "$name" ;;
	4) ktap_skip "$name" "$(printf '%s\n' "$output" | sed -n 's/.*# SKIP //p' | head -n1)" ;;
	*)
		[ "$rc" -eq 124 ] && echo "# $c: kderp-interop killed by its outer timeout"
		printf '%s\n' "$output" | grep -v '^#\|^TAP version\|^1\.\.\|^ok \|^not ok ' |
			sed 's/^/# /'
		log_tail "$log"
		ktap_fail "$name" "exit $rc"
		;;
	esac
}

# run_cases TRANSPORT LOG PID URL [FLAGS...] -- CASE...: one KTAP line per case.
# "keepalive" idles for about a minute, so it starts in the background before
# the other cases and is reported in its place in the list.
run_cases() {
	local transport=$1 log=$2 pid=$3 url=$4
	shift 4
	local flags=()
	while [ "$1" != "--" ]; do
		flags+=("$1")
		shift
	done
	shift
	local c rc output name ka_pid=
	for c in "$@"; do
		[ "$c" = keepalive ] || continue
		(
			timeout 120 "$interop" -url "$url" -meshkey "$tmp/mesh.key" "${flags[@]}" \
				keepalive >"$tmp/keepalive.out" 2>&1
			echo $? >"$tmp/keepalive.rc"
		) &
		ka_pid=$!
		pids+=("$ka_pid")
	done
	while [ $# -gt 0 ]; do
		c=$1
		shift
		name="interop $transport $c"
		if [ "$c" = keepalive ] && [ -n "$ka_pid" ]; then
			wait "$ka_pid"
			report_case "$name" "$c" "$log" "$(cat "$tmp/keepalive.rc" 2>/dev/null || echo 1)" \
				"$(cat "$tmp/keepalive.out" 2>/dev/null)"
			ka_pid=
			continue
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "# server exited before case $c"
			log_tail "$log"
			fail_all "$transport" "server exited" "$c" "$@"
			[ -n "$ka_pid" ] && kill "$ka_pid" 2>/dev/null
			return
		fi
		if [ "$c" = shutdown ]; then
			check_shutdown "$name" "$log" "$pid"
			continue
		fi
		if [ "$c" = derpprobe ]; then
			run_derpprobe "$name" "$log" "$url"
			continue
		fi
		output=$(timeout $((case_timeout + 40)) "$interop" -url "$url" \
			-timeout "${case_timeout}s" \
			-meshkey "$tmp/mesh.key" \
			"${flags[@]}" "$c" 2>&1)
		rc=$?
		report_case "$name" "$c" "$log" "$rc" "$output"
	done
}

# The servers' mesh key, for the watch case.
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$tmp/mesh.key"

# Plain HTTP.
if start_daemon plain; then
	run_cases plain "$tmp/plain.log" "$daemon_pid" "http://127.0.0.1:$port/derp" -- \
		"${cases[@]}"
else
	fail_all plain "server did not start" "${cases[@]}"
fi

# TLS with a self-signed EC P-256 certificate for derp1.test.
# --http-port=-1: no second listener on port 80, which another server on this
# machine may hold.
tls_args=(--certmode=manual --certdir "$tmp/certs" --hostname "$host" --http-port=-1)
client_tls=(-ip 127.0.0.1 -ca "$tmp/certs/$host.crt")

run_tls() { # run_tls TRANSPORT DAEMON_ARGS... -- CLIENT_FLAGS... -- CASE...
	local transport=$1 dargs=()
	shift
	while [ "$1" != "--" ]; do
		dargs+=("$1")
		shift
	done
	shift
	if start_daemon "$transport" "${tls_args[@]}" "${dargs[@]}"; then
		run_cases "$transport" "$tmp/$transport.log" "$daemon_pid" \
			"https://$host:$port/derp" "${client_tls[@]}" "$@"
	else
		while [ "$1" != "--" ]; do shift; done
		shift
		fail_all "$transport" "server did not start" "$@"
	fi
}

tls_transports=(tls)
[ "$tls12" = yes ] && tls_transports+=(tls12)
mkdir -p "$tmp/certs"
if ! command -v openssl >/dev/null; then
	skip_all tls "no openssl CLI to make a certificate" "${tls_cases[@]}"
	[ "$tls12" = yes ] && skip_all tls12 "no openssl CLI to make a certificate" \
		"${tls12_cases[@]}"
elif ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-days 2 -subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
	-addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
	-keyout "$tmp/certs/$host.key" -out "$tmp/certs/$host.crt" >"$tmp/openssl.log" 2>&1; then
	sed 's/^/# /' "$tmp/openssl.log"
	fail_all tls "openssl could not make a certificate" "${tls_cases[@]}"
	[ "$tls12" = yes ] && fail_all tls12 "openssl could not make a certificate" \
		"${tls12_cases[@]}"
else
	run_tls tls -- "${tls_version[@]}" -- "${tls_cases[@]}"
	if [ "$tls12" = yes ]; then
		run_tls tls12 --tls-max=1.2 -- -tls-version 1.2 -- "${tls12_cases[@]}"
	fi
fi

# IPv6 loopback.
if [ ${#ipv6_cases[@]} -gt 0 ]; then
	if ! grep -qs '^0\{31\}1 .* lo$' /proc/net/if_inet6; then
		skip_all ipv6 "no ::1 on lo" "${ipv6_cases[@]}"
	else
		bind=::1
		if start_daemon ipv6; then
			run_cases ipv6 "$tmp/ipv6.log" "$daemon_pid" "http://[::1]:$port/derp" -- \
				"${ipv6_cases[@]}"
		else
			fail_all ipv6 "server did not start" "${ipv6_cases[@]}"
		fi
		bind=127.0.0.1
	fi
fi

ktap_finish
