#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_privs.sh - kderpd drops its privileges once it has started
# (Documentation/operations.md, "Privileges").
#
# kderpd runs in a network namespace with the XDP STUN responder on one end
# of a veth pair and its state pinned in bpffs, started as root with
# --user=nobody. Every thread then has the ids of nobody, exactly the
# expected capability sets (none, or CAP_BPF alone where the kernel gates
# bpf() on kernel.unprivileged_bpf_disabled: probed here too, as nobody)
# and no_new_privs; and the daemon still relays, answers /debug/varz, lets
# kderpctl list and close peers, re-attaches XDP to a veth pair deleted
# and made again, and removes its pins on exit. Without --user and without
# a "kderp" user it stays root, says so once, and drops its capabilities
# all the same; an unknown --user stops the start. The namespaces come from
# lib/netns.sh (unique names, removed on exit). Needs root, iproute2, curl,
# setpriv, nsenter and /usr/bin/python3; SKIPs otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"
# shellcheck source=selftests/lib/netns.sh
. "$here/lib/netns.sh"

# In order: one daemon dropped to nobody for the first seven (test 7 stops
# it), then one daemon each.
ALL_TESTS="runs_as_nobody capabilities_exact relays varz_answers
	kderpctl_peers_and_close_peer xdp_reattach_after_drop pins_removed_on_exit
	plain_relay_keeps_nothing default_user unknown_user_refused"

out=${KDERP_OUTPUT:-.output}
kderpd=$out/kderpd
ctl=$out/kderpctl
bench=$out/kderp-bench
py=/usr/bin/python3 # a system interpreter: user "nobody" must be able to run it
require root "$kderpd" "$ctl" "$bench" "$py" ip curl setpriv nsenter bpffs user:nobody

unset RUNTIME_DIRECTORY
SRV=10.77.0.1 CLI=10.77.0.2
PORT=3340 STUN_PORT=3478
NOBODY_UID=$(id -u nobody) NOBODY_GID=$(id -g nobody)
work=$(mktemp -d)
at_exit rm -rf "$work"
pins=/sys/fs/bpf/kderp-privtest-$$
pid=
started=()

cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; fi
	rm -f "$pins"/* 2>/dev/null
	rmdir "$pins" 2>/dev/null
	rm -f "/run/kderpd/ctl-sys+fs+bpf+kderp-privtest-$$.sock"*
	# a daemon that dropped privileges cannot remove its socket
	for p in "${started[@]}"; do rm -f "/run/kderpd/ctl-$p.sock"*; done
}

# tx_csum_off: no TX checksum offload on the client end (veth would hand
# XDP packets whose UDP checksum is not filled in).
tx_csum_off() {
	ip netns exec "$NS_C" "$py" -c '
import array, fcntl, socket, struct, sys
ev = array.array("I", [0x17, 0])  # ETHTOOL_STXCSUM, off
ifr = struct.pack("16sP", sys.argv[1].encode(), ev.buffer_info()[0])
fcntl.ioctl(socket.socket(), 0x8946, ifr)  # SIOCETHTOOL' "$IF_C"
}

# veth_up: the pair made again in the namespaces netns_pair_up made (test 6
# deletes it), its addresses, and tx_csum_off.
veth_up() {
	ip -n "$NS_S" link add "$IF_S" type veth peer name "$IF_C" netns "$NS_C" &&
		ip -n "$NS_S" addr add "$SRV/24" dev "$IF_S" &&
		ip -n "$NS_C" addr add "$CLI/24" dev "$IF_C" &&
		ip -n "$NS_S" link set "$IF_S" up && ip -n "$NS_C" link set "$IF_C" up &&
		tx_csum_off
}

netns_pair_up kdp "$SRV/24" "$CLI/24" || skip_all "cannot create namespaces and veth"
if ! tx_csum_off 2>"$work/ip.err"; then
	sed 's/^/# /' "$work/ip.err"
	skip_all "cannot create namespaces and veth"
fi
# Registered after netns_pair_up's netns_pair_down, so it runs first: the
# daemon stops before its namespace goes.
at_exit cleanup

# What the daemon should keep: CAP_BPF (39) where bpf() on a held fd is
# refused to an unprivileged process (EPERM rather than EBADF for fd -1).
gate=$(setpriv --reuid nobody --regid "$NOBODY_GID" --clear-groups "$py" -c '
import ctypes, os, struct
nr = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine)
if nr is None:
    print("unknown"); raise SystemExit
libc = ctypes.CDLL(None, use_errno=True)
attr = ctypes.create_string_buffer(struct.pack("I", 0xFFFFFFFF) + bytes(124))
r = libc.syscall(nr, 1, attr, 128)  # BPF_MAP_LOOKUP_ELEM on fd -1
print("gated" if r < 0 and ctypes.get_errno() == 1 else "open")')
case $gate in
gated) WANT_BPF_OPS=0000008000000000 ;;
open) WANT_BPF_OPS=0000000000000000 ;;
*) skip_all "cannot tell whether bpf() is gated here ($gate)" ;;
esac

varz() {
	ip netns exec "$NS_S" curl -s --max-time 5 "http://127.0.0.1:$PORT/debug/varz"
}

# start LOG ARGS...: kderpd in the server namespace; 0 once it answers HTTP.
start() {
	local log=$1
	shift
	# nsenter, not "ip netns exec": that mounts a /sys of the namespace,
	# without the bpffs at /sys/fs/bpf where the pins go.
	nsenter --net="/run/netns/$NS_S" "$kderpd" -a ":$PORT" -c "$work/key" \
		--stun-port "$STUN_PORT" "$@" >"$log" 2>&1 &
	pid=$!
	started+=("$pid")
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 1
		varz >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# field PID NAME: a /proc/PID/status field, tabs as spaces.
field() {
	sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status" | tr '\t' ' '
}

# creds_are PID UID GID CAPS: every thread has these ids, CapPrm = CapEff =
# CapBnd = CAPS, no inheritable or ambient ones, and no_new_privs.
creds_are() {
	local t ok=0
	for t in /proc/"$1"/task/*; do
		t=$1/task/${t##*/}
		[ "$(field "$t" Uid)" = "$2 $2 $2 $2" ] && [ "$(field "$t" Gid)" = "$3 $3 $3 $3" ] &&
			[ "$(field "$t" CapEff)" = "$4" ] && [ "$(field "$t" CapPrm)" = "$4" ] &&
			[ "$(field "$t" CapBnd)" = "$4" ] &&
			[ "$(field "$t" CapInh)" = 0000000000000000 ] &&
			[ "$(field "$t" CapAmb)" = 0000000000000000 ] &&
			[ "$(field "$t" NoNewPrivs)" = 1 ] || {
			echo "# thread ${t##*/}: Uid $(field "$t" Uid), Gid $(field "$t" Gid)," \
				"CapEff $(field "$t" CapEff), CapPrm $(field "$t" CapPrm)," \
				"CapBnd $(field "$t" CapBnd), NoNewPrivs $(field "$t" NoNewPrivs)"
			ok=1
		}
	done
	return $ok
}

peers() {
	"$ctl" --bpffs-dir "$pins" --json peers 2>/dev/null |
		"$py" -c 'import json,sys; [print(p["key"]) for p in json.load(sys.stdin)]' 2>/dev/null
}

wait_peers() { # wait_peers N: until exactly N keys are connected (5 s)
	for _ in $(seq 1 50); do
		[ "$(peers | wc -l)" -eq "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# stun_ok: a STUN binding request from the client namespace gets an answer.
stun_ok() {
	ip netns exec "$NS_C" "$py" - "$SRV" "$STUN_PORT" "$CLI" <<'PY'
import socket, struct, sys, zlib
srv, port, bind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
hdr = struct.pack(">HHI", 1, 20, 0x2112A442) + bytes(range(12))
body = struct.pack(">HH", 0x8022, 8) + b"tailnode"
req = hdr + body + struct.pack(">HHI", 0x8028, 4, zlib.crc32(hdr + body) ^ 0x5354554E)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((bind, 0))
s.settimeout(1.0)
for _ in range(5):
    s.sendto(req, (srv, port))
    try:
        r = s.recv(2048)
    except socket.timeout:
        continue
    sys.exit(0 if r[:2] == b"\x01\x01" and r[8:20] == bytes(range(12)) else 1)
sys.exit(1)
PY
}

xdp_tx() { # the XDP program's IPv4 replies so far
	varz | sed -n 's/^xdp_stun_server_packets_total{address_family="ipv4",prog_end="unspecified",xdp_outcome="tx"} //p'
}

# 1: started as root with --user=nobody: it runs as nobody.
runs_as_nobody() {
	echo "# bpf() on held fds: $gate; expected CapEff with BPF objects: $WANT_BPF_OPS"
	local up=1
	start "$work/log" --user=nobody --bpffs-dir="$pins" --xdp-iface="$IF_S:generic" ||
		{ up=0; sed 's/^/# /' "$work/log"; }
	grep -E 'privileges|xdp|state plane' "$work/log" | sed 's/^/# /'
	[ $up = 1 ] || { fail "kderpd did not start"; return; }
	[ "$(field "$pid" Uid)" = "$NOBODY_UID $NOBODY_UID $NOBODY_UID $NOBODY_UID" ]
}

# 2: every thread: those ids, exactly those capabilities, no_new_privs.
capabilities_exact() {
	creds_are "$pid" "$NOBODY_UID" "$NOBODY_GID" "$WANT_BPF_OPS"
}

# 3: it relays: every packet arrives, in order.
relays() {
	local rc sr sent recv reord bad
	timeout 60 ip netns exec "$NS_S" "$bench" throughput -s "127.0.0.1:$PORT" -p 2 -S 1000 -r 20 \
		-t 1 --json "$work/r.json" >"$work/bench.out" 2>&1
	rc=$?
	sr=$("$py" -c 'import json,sys; r=json.load(open(sys.argv[1]))[-1]; print(r["sent"], r["received"], r["reordered"], r["bad"])' \
		"$work/r.json" 2>/dev/null)
	read -r sent recv reord bad <<<"${sr:-x y z w}"
	[ "$rc" -eq 0 ] && [ "$sent" != x ] && [ "$sent" -gt 1000 ] && [ "$sent" = "$recv" ] &&
		[ "$reord" = 0 ] && [ "$bad" = 0 ] && return 0
	sed 's/^/# /' "$work/bench.out"
	fail "exit $rc, sent $sent received $recv"
}

# 4: /debug/varz answers, its numbers read after the drop (own fds, pinned maps).
varz_answers() {
	local v fds
	v=$(varz)
	fds=$(sed -n 's/^process_open_fds //p' <<<"$v")
	grep -q '^kderp_state_bpf 1$' <<<"$v" && [ "${fds:-0}" -gt 5 ] &&
		grep -q '^derp_accepts [1-9]' <<<"$v" && return 0
	grep -E '^(kderp_state_bpf|process_open_fds|derp_accepts) ' <<<"$v" | sed 's/^/# /'
	fail
}

# 5: kderpctl lists the peers and closes one: the client sees it closed.
kderpctl_peers_and_close_peer() {
	local bpid rc brc k1='' left
	timeout 30 ip netns exec "$NS_S" "$bench" idle -s "127.0.0.1:$PORT" -n 2 --hold 4 \
		>"$work/idle.out" 2>&1 &
	bpid=$!
	if wait_peers 2; then
		k1=$(peers | head -1)
		"$ctl" --bpffs-dir "$pins" close-peer "$k1" >"$work/close.out" 2>&1
		rc=$?
		wait_peers 1
		left=$(peers)
	else
		rc=x left=''
	fi
	wait "$bpid"
	brc=$?
	[ "$rc" = 0 ] && [ -n "$left" ] && [ "$left" != "$k1" ] && [ "$brc" -eq 3 ] &&
		grep -q '1 connections closed by the server' "$work/idle.out" && return 0
	echo "# kderpctl exit $rc, bench exit $brc, left: ${left:-none}"
	sed 's/^/# /' "$work/close.out" "$work/idle.out"
	fail
}

# 6: XDP answers; the veth pair goes and comes back; the same program is
# attached again (by the dropped daemon) and answers again.
xdp_reattach_after_drop() {
	local id0 id1 s0 s1 tx0 tx1
	id0=$(ip -n "$NS_S" -d link show dev "$IF_S" | sed -n 's/.*prog\/xdp id \([0-9]*\).*/\1/p')
	stun_ok
	s0=$?
	tx0=$(xdp_tx)
	ip -n "$NS_S" link del "$IF_S"
	veth_up 2>"$work/ip2.err"
	for _ in $(seq 1 100); do
		[ "$(grep -c "xdp: STUN on $IF_S " "$work/log")" -ge 2 ] && break
		sleep 0.1
	done
	id1=$(ip -n "$NS_S" -d link show dev "$IF_S" | sed -n 's/.*prog\/xdp id \([0-9]*\).*/\1/p')
	stun_ok
	s1=$?
	tx1=$(xdp_tx)
	[ "$s0" = 0 ] && [ "${tx0:-0}" -ge 1 ] && [ -n "$id0" ] && [ "$id1" = "$id0" ] &&
		[ "$s1" = 0 ] && [ "${tx1:-0}" = $((tx0 + 1)) ] &&
		creds_are "$pid" "$NOBODY_UID" "$NOBODY_GID" "$WANT_BPF_OPS" && return 0
	echo "# prog id $id0 -> ${id1:-none}; STUN $s0 -> $s1; XDP tx ${tx0:-none} -> ${tx1:-none}"
	grep xdp "$work/log" | sed 's/^/# /'
	sed 's/^/# /' "$work/ip2.err"
	fail
}

# 7: SIGTERM: a clean exit that removes the pins (the directory was handed over).
pins_removed_on_exit() {
	local rc
	kill "$pid"
	wait "$pid"
	rc=$?
	pid=
	[ "$rc" = 0 ] && [ ! -e "$pins" ] && grep -q 'info: stopped' "$work/log" && return 0
	echo "# exit $rc"
	ls -la "$pins" 2>&1 | sed 's/^/# /'
	tail -5 "$work/log" | sed 's/^/# /'
	fail
}

# 8: plain relaying (no BPF objects at all): nothing kept.
plain_relay_keeps_nothing() {
	local rc=0
	if ! { start "$work/log2" --user=nobody --bpffs-dir= --stun=false &&
		creds_are "$pid" "$NOBODY_UID" "$NOBODY_GID" 0000000000000000; }; then
		sed 's/^/# /' "$work/log2"
		rc=1
	fi
	kill "$pid"
	wait "$pid" 2>/dev/null
	pid=
	[ "$rc" -eq 0 ] || fail
}

# 9: no --user: the "kderp" user if there is one; else root, said once,
# with no capabilities left all the same.
default_user() {
	local kuid kgid want_warn rc=0
	if kuid=$(id -u kderp 2>/dev/null); then
		kgid=$(id -g kderp)
		want_warn=0
	else
		kuid=0 kgid=0 want_warn=1
	fi
	if ! { start "$work/log3" --bpffs-dir= --stun=false &&
		[ "$(grep -c 'warn: no user "kderp": kderpd stays root' "$work/log3")" = "$want_warn" ] &&
		creds_are "$pid" "$kuid" "$kgid" 0000000000000000; }; then
		sed 's/^/# /' "$work/log3"
		rc=1
	fi
	kill "$pid"
	wait "$pid" 2>/dev/null
	pid=
	[ "$rc" -eq 0 ] || fail
}

# 10: a --user that does not exist stops the start.
unknown_user_refused() {
	local rc
	start "$work/log4" --user="kderp-nosuch-$$" --bpffs-dir= --stun=false
	wait "$pid"
	rc=$?
	pid=
	[ "$rc" = 1 ] && grep -q "error: --user kderp-nosuch-$$: no such user" "$work/log4" && return 0
	echo "# exit $rc"
	sed 's/^/# /' "$work/log4"
	fail
}

run_all_tests
