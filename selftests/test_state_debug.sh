#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_state_debug.sh - who may read /debug/ (varz, the state plane's
# numbers): loopback always, another host only from a --debug-allow CIDR.
# kderpd runs in one network namespace, the client in another, joined by a
# veth pair (lib/netns.sh: unique names, removed on exit).
# Also: kderpctl's close-peer is refused to a non-root user. Needs root,
# iproute2 and curl; SKIPs otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/lib.sh"
. "$here/lib/netns.sh"

out=${KDERP_OUTPUT:-.output}
kderpd=$out/kderpd
NTESTS=5
ktap_header $NTESTS

skip_all() {
	for i in $(seq 1 $NTESTS); do ktap_skip "state_debug_$i" "$1"; done
	ktap_finish
}
[ -x "$kderpd" ] || skip_all "kderpd not built"
[ "$(id -u)" -eq 0 ] || skip_all "needs root (network namespaces)"
command -v ip >/dev/null || skip_all "needs iproute2"
command -v curl >/dev/null || skip_all "needs curl"

SRV=10.79.0.1 CLI=10.79.0.2
PORT=3340
work=$(mktemp -d)
pid=

cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; fi
	rm -rf "$work"
}
at_exit cleanup

netns_pair_up kds "$SRV/24" "$CLI/24" || skip_all "cannot create network namespaces"

# status NS URL: the HTTP status code of a GET
status() {
	ip netns exec "$1" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$2"
}

# start ARGS...: kderpd on all addresses of the server namespace
start() {
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
	kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	pid=
}

if ! start; then
	sed 's/^/# /' "$work/log"
	skip_all "kderpd did not start in a namespace"
fi
# 1: loopback may read varz
c=$(status "$NS_S" "http://127.0.0.1:$PORT/debug/varz")
if [ "$c" = 200 ]; then ktap_pass loopback_reads_varz; else ktap_fail loopback_reads_varz "HTTP $c"; fi
# 2: another host may not, without --debug-allow (but the relay answers it)
c=$(status "$NS_C" "http://$SRV:$PORT/debug/varz")
h=$(status "$NS_C" "http://$SRV:$PORT/generate_204")
if [ "$c" = 403 ] && [ "$h" = 204 ]; then
	ktap_pass remote_refused_by_default
else
	ktap_fail remote_refused_by_default "varz HTTP $c, generate_204 HTTP $h"
fi
stop

# 3: a CIDR that holds the client lets it in
start --debug-allow "10.79.0.0/24"
c=$(status "$NS_C" "http://$SRV:$PORT/debug/varz")
v=$(ip netns exec "$NS_C" curl -s --max-time 5 "http://$SRV:$PORT/debug/varz" | grep -c '^derp_accepts ')
if [ "$c" = 200 ] && [ "$v" = 1 ]; then
	ktap_pass remote_allowed_by_cidr
else
	ktap_fail remote_allowed_by_cidr "HTTP $c"
fi
stop

# 4: a CIDR that does not hold it keeps it out
start --debug-allow "10.79.0.128/25,192.0.2.0/24"
c=$(status "$NS_C" "http://$SRV:$PORT/debug/varz")
if [ "$c" = 403 ]; then ktap_pass remote_outside_cidr_refused; else ktap_fail remote_outside_cidr_refused "HTTP $c"; fi
stop

# 5: the control socket answers root only (abstract sockets are per netns)
py=/usr/bin/python3 # a system interpreter: user "nobody" must be able to run it
if command -v setpriv >/dev/null && [ -x "$py" ]; then
	start
	name="kderpd-ctl:"
	r_root=$(ip netns exec "$NS_S" "$py" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("\0" + sys.argv[1])
try:
    s.sendall(b"ping\n")
except OSError:
    pass  # refused peers are answered and closed before they write
print(s.recv(100).decode().strip())' "$name")
	r_user=$(ip netns exec "$NS_S" setpriv --reuid nobody --regid nogroup --clear-groups "$py" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("\0" + sys.argv[1])
try:
    s.sendall(b"ping\n")
except OSError:
    pass  # refused peers are answered and closed before they write
print(s.recv(100).decode().strip())' "$name")
	if [ "$r_root" = "ok $pid" ] && [ "${r_user#err permission denied}" != "$r_user" ]; then
		ktap_pass control_socket_root_only
	else
		ktap_fail control_socket_root_only "root: '$r_root', nobody: '$r_user'"
	fi
	stop
else
	ktap_skip control_socket_root_only "needs setpriv and $py"
fi
ktap_finish
