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
#
# The tests are the rows of a table, transport x case: ALL_TESTS is built
# from the case lists below as TRANSPORT_CASE (plain_sendrecv, tls_derpprobe,
# ...), each with a function that runs that case. A transport's server starts
# at its first case and its last case, shutdown, stops it.
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

ALL_TESTS=
for c in "${cases[@]}"; do ALL_TESTS+=" plain_$c"; done
for c in "${tls_cases[@]}"; do ALL_TESTS+=" tls_$c"; done
if [ "$tls12" = yes ]; then
	for c in "${tls12_cases[@]}"; do ALL_TESTS+=" tls12_$c"; done
fi
for c in "${ipv6_cases[@]}"; do ALL_TESTS+=" ipv6_$c"; done
# one function per test: plain_sendrecv() { interop_case plain sendrecv; }
for t in $ALL_TESTS; do
	eval "$t() { interop_case ${t%%_*} ${t#*_}; }"
done

[ -n "$why" ] && skip_all "$why"

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
at_exit cleanup

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

# check_shutdown LOG PID: SIGTERM; the server must exit 0 within 10 s and its
# log must hold no sanitizer report.
check_shutdown() {
	local log=$1 pid=$2 rc
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		log_tail "$log"
		fail "still running 10 s after SIGTERM"
		return
	fi
	wait "$pid"
	rc=$?
	if grep -qE 'Sanitizer|runtime error:' "$log"; then
		grep -E -A 12 'Sanitizer|runtime error:' "$log" | head -n 40 | sed 's/^/#   /'
		fail "sanitizer report in the server log"
	elif [ "$rc" -ne 0 ]; then
		log_tail "$log"
		fail "server exit status $rc after SIGTERM"
	fi
}

# run_derpprobe LOG URL PORT: Tailscale's derpprobe, once, with a one-node DERP
# map that pins the certificate by hash: its mesh probe (a prober client
# with the mesh key sending to itself through the server) and its bandwidth
# probe (4 MB) must both report good.
run_derpprobe() {
	local log=$1 url=$2 port=$3 hash rc
	if [ ! -x "$probe" ]; then
		local why="derpprobe not built"
		[ -s "$probe.skip" ] && why="$why: $(cat "$probe.skip")"
		skip "$why"
		return
	fi
	if [[ "$url" != https:* ]]; then
		skip "derpprobe needs TLS"
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
		return 0
	fi
	tail -n 15 "$tmp/derpprobe.out" | sed 's/^/#   /'
	log_tail "$log"
	fail "derpprobe exit $rc"
}

# report_case CASE LOG RC OUTPUT: the result of a kderp-interop run.
report_case() {
	local c=$1 log=$2 rc=$3 output=$4
	# Keep the tool's diagnostics; its own KTAP result becomes ours.
	printf '%s\n' "$output" | grep '^#' | grep -v '^# Totals'
	case $rc in
	0) return 0 ;;
	4) skip "$(printf '%s\n' "$output" | sed -n 's/.*# SKIP //p' | head -n1)" ;;
	*)
		[ "$rc" -eq 124 ] && echo "# $c: kderp-interop killed by its outer timeout"
		printf '%s\n' "$output" | grep -v '^#\|^TAP version\|^1\.\.\|^ok \|^not ok ' |
			sed 's/^/# /'
		log_tail "$log"
		fail "exit $rc"
		;;
	esac
}

# The servers' mesh key, for the watch case.
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$tmp/mesh.key"

# TLS uses a self-signed EC P-256 certificate for derp1.test, made once.
# --http-port=-1: no second listener on port 80, which another server on this
# machine may hold.
tls_args=(--certmode=manual --certdir "$tmp/certs" --hostname "$host" --http-port=-1)
client_tls=(-ip 127.0.0.1 -ca "$tmp/certs/$host.crt")
cert_state= # "", ok, or the reason there is none (skip: or fail: prefix)
make_cert() {
	[ -z "$cert_state" ] || return 0
	mkdir -p "$tmp/certs"
	if ! command -v openssl >/dev/null; then
		cert_state="skip:no openssl CLI to make a certificate"
	elif ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-days 2 -subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
		-addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
		-keyout "$tmp/certs/$host.key" -out "$tmp/certs/$host.crt" >"$tmp/openssl.log" 2>&1; then
		sed 's/^/# /' "$tmp/openssl.log"
		cert_state="fail:openssl could not make a certificate"
	else
		cert_state=ok
	fi
}

# Per transport: its server (started by server_up at its first case), the
# URL and the client flags. srv_state is "", up, or why there is no server
# (skip: or fail: prefix).
declare -A srv_state srv_pid srv_port srv_url
# shellcheck disable=SC2034 # read through "local -n flags=flags_$transport"
flags_plain=()
# shellcheck disable=SC2034
flags_tls=("${client_tls[@]}" "${tls_version[@]}")
# shellcheck disable=SC2034
flags_tls12=("${client_tls[@]}" -tls-version 1.2)
# shellcheck disable=SC2034
flags_ipv6=()
ka_pid=

# server_up TRANSPORT: start the transport's server if this is its first case.
server_up() {
	local transport=$1 args=()
	[ -z "${srv_state[$transport]:-}" ] || return 0
	case $transport in
	tls | tls12)
		make_cert
		if [ "$cert_state" != ok ]; then
			srv_state[$transport]=$cert_state
			return 0
		fi
		args=("${tls_args[@]}")
		[ "$transport" = tls12 ] && args+=(--tls-max=1.2)
		;;
	ipv6)
		if ! grep -qs '^0\{31\}1 .* lo$' /proc/net/if_inet6; then
			srv_state[$transport]="skip:no ::1 on lo"
			return 0
		fi
		bind=::1
		;;
	esac
	if ! start_daemon "$transport" "${args[@]}"; then
		bind=127.0.0.1
		srv_state[$transport]="fail:server did not start"
		return 0
	fi
	bind=127.0.0.1
	srv_state[$transport]=up
	srv_pid[$transport]=$daemon_pid
	srv_port[$transport]=$port
	case $transport in
	plain) srv_url[$transport]="http://127.0.0.1:$port/derp" ;;
	ipv6) srv_url[$transport]="http://[::1]:$port/derp" ;;
	*) srv_url[$transport]="https://$host:$port/derp" ;;
	esac
	# "keepalive" idles for about a minute, so it starts in the background
	# now and is reported in its place in the list.
	if [[ " $ALL_TESTS " == *" ${transport}_keepalive "* ]]; then
		local -n flags=flags_$transport
		(
			timeout 120 "$interop" -url "${srv_url[$transport]}" -meshkey "$tmp/mesh.key" \
				"${flags[@]}" keepalive >"$tmp/keepalive.out" 2>&1
			echo $? >"$tmp/keepalive.rc"
		) &
		ka_pid=$!
		pids+=("$ka_pid")
	fi
}

# interop_case TRANSPORT CASE: one case against the transport's server.
interop_case() {
	local transport=$1 c=$2 log=$tmp/$1.log pid output rc
	local -n flags=flags_$transport
	server_up "$transport"
	case ${srv_state[$transport]} in
	skip:*) skip "${srv_state[$transport]#skip:}"; return ;;
	fail:*) fail "${srv_state[$transport]#fail:}"; return ;;
	esac
	pid=${srv_pid[$transport]}
	if [ "$c" = keepalive ] && [ -n "$ka_pid" ]; then
		wait "$ka_pid"
		ka_pid=
		report_case "$c" "$log" "$(cat "$tmp/keepalive.rc" 2>/dev/null || echo 1)" \
			"$(cat "$tmp/keepalive.out" 2>/dev/null)"
		return
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		if [ "${srv_state[$transport]}" = up ]; then
			echo "# server exited before case $c"
			log_tail "$log"
			srv_state[$transport]="fail:server exited"
		fi
		[ -n "$ka_pid" ] && kill "$ka_pid" 2>/dev/null
		fail "server exited"
		return
	fi
	case $c in
	shutdown) check_shutdown "$log" "$pid" ;;
	derpprobe) run_derpprobe "$log" "${srv_url[$transport]}" "${srv_port[$transport]}" ;;
	*)
		output=$(timeout $((case_timeout + 40)) "$interop" -url "${srv_url[$transport]}" \
			-timeout "${case_timeout}s" \
			-meshkey "$tmp/mesh.key" \
			"${flags[@]}" "$c" 2>&1)
		rc=$?
		report_case "$c" "$log" "$rc" "$output"
		;;
	esac
}

run_all_tests
