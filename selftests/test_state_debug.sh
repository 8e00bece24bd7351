#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_state_debug.sh - who may read /debug/ (varz, the state plane's
# numbers): loopback always, another host only from a --debug-allow CIDR.
# kderpd runs in one network namespace, the client in another, joined by a
# veth pair; the namespaces get random names and an EXIT trap removes them.
# Also: the control socket (kderpctl's close-peer) answers root only. Needs
# root, iproute2 and curl; SKIPs otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

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

sfx=$(printf '%06x' $(((RANDOM << 9 ^ RANDOM ^ $$) & 0xffffff)))
NS_S=kdsS$sfx NS_C=kdsC$sfx IF_S=ss$sfx IF_C=sc$sfx
SRV=10.79.0.1 CLI=10.79.0.2
PORT=3340
work=$(mktemp -d)
pid=

cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; fi
	ip netns del "$NS_S" 2>/dev/null
	ip netns del "$NS_C" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if ! ip netns add "$NS_S" || ! ip netns add "$NS_C" ||
	! ip link add "$IF_S" netns "$NS_S" type veth peer name "$IF_C" netns "$NS_C"; then
	skip_all "cannot create network namespaces"
fi
ip -n "$NS_S" addr add "$SRV/24" dev "$IF_S"
ip -n "$NS_C" addr add "$CLI/24" dev "$IF_C"
for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set "$IF_S" up
ip -n "$NS_C" link set "$IF_C" up

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

# 5: the control socket answers root only: by default nobody may even reach
# it (a 0700 root directory); put where nobody may, kderpd refuses nobody.
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
if command -v setpriv >/dev/null && [ -x "$py" ] && [ -x "$ctl" ]; then
	unset RUNTIME_DIRECTORY
	start
	p1=$pid sock=/run/kderpd/ctl-$pid.sock
	r_ctl=$("$ctl" --bpffs-dir "" --ctl "$sock" ping 2>&1)
	r_root=$(ask root "$sock")
	r_user=$(ask nobody "$sock")
	stop
	chmod 0711 "$work"
	mkdir -m 0755 "$work/pub"
	start --ctl="$work/pub/ctl.sock"
	chmod 0666 "$work/pub/ctl.sock"
	r_open=$(ask nobody "$work/pub/ctl.sock")
	stop
	if [ "$r_ctl" = "kderpd pid $p1 answers on $sock" ] && [ "$r_root" = "ok $p1" ] &&
		[ "$r_user" = "connect: Permission denied" ] &&
		[ "${r_open#err permission denied}" != "$r_open" ]; then
		ktap_pass control_socket_root_only
	else
		echo "# kderpctl: '$r_ctl'; root: '$r_root'; nobody: '$r_user', '$r_open'"
		ktap_fail control_socket_root_only
	fi
else
	ktap_skip control_socket_root_only "needs setpriv, $py and kderpctl"
fi
ktap_finish
