#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_state_debug.sh - who may read /debug/ (varz, the state plane's
# numbers): loopback always, another host only from a --debug-allow CIDR.
# kderpd runs in one network namespace, the client in another, joined by a
# veth pair (lib/netns.sh: unique names, removed on exit).
# Also: the control socket answers root only. Needs root, iproute2 and curl;
# SKIPs otherwise. The tests run in order; each starts the kderpd it needs
# (the first two share one).
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"
# shellcheck source=selftests/lib/netns.sh
. "$here/lib/netns.sh"

ALL_TESTS="loopback_reads_varz remote_refused_by_default remote_allowed_by_cidr
	remote_outside_cidr_refused control_socket_root_only"

out=${KDERP_OUTPUT:-.output}
kderpd=$out/kderpd
[ -x "$kderpd" ] || skip_all "kderpd not built"
[ "$(id -u)" -eq 0 ] || skip_all "needs root (network namespaces)"
command -v ip >/dev/null || skip_all "needs iproute2"
command -v curl >/dev/null || skip_all "needs curl"

SRV=10.79.0.1 CLI=10.79.0.2
PORT=3340
work=$(mktemp -d)
pid=

cleanup() {
	stop
	rm -rf "$work"
}
at_exit cleanup

netns_pair_up kds "$SRV/24" "$CLI/24" || skip_all "cannot create network namespaces"

# status NS URL: the HTTP status code of a GET
status() {
	ip netns exec "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$2"
}

# start ARGS...: (re)start kderpd on all addresses of the server namespace
start() {
	stop
	ip netns exec "$NS_S" "$kderpd" -a ":$PORT" -c "$work/key" --stun=false \
		--bpffs-dir= "$@" >"$work/log" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		[ "$(status "$NS_S" "http://127.0.0.1:$PORT/generate_204")" = 204 ] && return 0
		sleep 0.1
	done
	return 1
}

stop() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; fi
	pid=
}

if ! start; then
	sed 's/^/# /' "$work/log"
	skip_all "kderpd did not start in a namespace"
fi

loopback_reads_varz() {
	local c
	c=$(status "$NS_S" "http://127.0.0.1:$PORT/debug/varz")
	[ "$c" = 200 ] || fail "HTTP $c"
}

# Another host may not, without --debug-allow (but the relay answers it).
remote_refused_by_default() {
	local c h
	c=$(status "$NS_C" "http://$SRV:$PORT/debug/varz")
	h=$(status "$NS_C" "http://$SRV:$PORT/generate_204")
	[ "$c" = 403 ] && [ "$h" = 204 ] || fail "varz HTTP $c, generate_204 HTTP $h"
}

# A CIDR that holds the client lets it in.
remote_allowed_by_cidr() {
	local c v
	start --debug-allow "10.79.0.0/24" || { fail "kderpd did not start"; return; }
	c=$(status "$NS_C" "http://$SRV:$PORT/debug/varz")
	v=$(ip netns exec "$NS_C" curl -s --max-time 5 "http://$SRV:$PORT/debug/varz" |
		grep -c '^derp_accepts ')
	[ "$c" = 200 ] && [ "$v" = 1 ] || fail "HTTP $c"
}

# A CIDR that does not hold it keeps it out.
remote_outside_cidr_refused() {
	local c
	start --debug-allow "10.79.0.128/25,192.0.2.0/24" || { fail "kderpd did not start"; return; }
	c=$(status "$NS_C" "http://$SRV:$PORT/debug/varz")
	[ "$c" = 403 ] || fail "HTTP $c"
}

# The control socket answers root only: by default nobody may even reach it
# (a 0700 root directory); put where nobody may, kderpd refuses nobody.
py=/usr/bin/python3 # a system interpreter: user "nobody" must be able to run it
ctl=$out/kderpctl
# ask AS PATH: "ping" over the socket at PATH as user AS; the reply or the error.
ask() {
	local as=()
	[ "$1" = nobody ] && as=(setpriv --reuid nobody --regid "$(id -g nobody)" --clear-groups)
	ip netns exec "$NS_S" "${as[@]}" "$py" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect:", e.strerror)
    sys.exit()
try:
    s.sendall(b"ping\n")
except OSError:
    pass  # refused peers are answered and closed before they write
print(s.recv(100).decode().strip())' "$2"
}

control_socket_root_only() {
	local p1 sock r_ctl r_root r_user r_open
	command -v setpriv >/dev/null && [ -x "$py" ] && [ -x "$ctl" ] ||
		{ skip "needs setpriv, $py and kderpctl"; return; }
	stop
	unset RUNTIME_DIRECTORY
	start || { fail "kderpd did not start"; return; }
	p1=$pid sock=/run/kderpd/ctl-$pid.sock
	r_ctl=$("$ctl" --bpffs-dir "" --ctl "$sock" ping 2>&1)
	r_root=$(ask root "$sock")
	r_user=$(ask nobody "$sock")
	stop
	chmod 0711 "$work"
	mkdir -m 0755 "$work/pub"
	start --ctl="$work/pub/ctl.sock" || { fail "kderpd did not start"; return; }
	chmod 0666 "$work/pub/ctl.sock"
	r_open=$(ask nobody "$work/pub/ctl.sock")
	stop
	echo "# kderpctl: '$r_ctl'; root: '$r_root'; nobody: '$r_user', '$r_open'"
	[ "$r_ctl" = "kderpd pid $p1 answers on $sock" ] && [ "$r_root" = "ok $p1" ] &&
		[ "$r_user" = "connect: Permission denied" ] &&
		[ "${r_open#err permission denied}" != "$r_open" ] || fail
}

run_all_tests
