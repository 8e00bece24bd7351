#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_ctl_socket.sh - kderpd's control socket cannot be squatted, and
# kderpctl talks only to kderpd (include/kderp_abi.h).
#
# An unprivileged user ("nobody") cannot create anything where the socket
# lives, and one holding the old abstract name before kderpd starts changes
# nothing: kderpctl close-peer reaches kderpd and the peer's connection
# really closes (a kderp-bench idle client sees it). kderpctl refuses a
# socket served by a non-root process or by a root process that is not the
# pins' owner, sending nothing. A stale socket is replaced; two daemons
# without a pin directory get a socket each; a second daemon on the same
# --ctl, or a --ctl that cannot be set up, stops the start (exit 1, a log
# line naming the path). Needs root, a bpffs at /sys/fs/bpf, setpriv and
# /usr/bin/python3; SKIPs otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"

# In order, one kderpd for the first five: test 2 starts it, 3-5 talk to
# it, 6 kills it.
ALL_TESTS="nobody_cannot_create_in_rundir kderpd_unaffected_by_squatter
	close_peer_closes_the_peer kderpctl_refuses_non_root_server
	kderpctl_refuses_other_pid stale_socket_replaced no_pin_dir_two_instances
	same_ctl_second_refused unusable_ctl_is_fatal"

out=${KDERP_OUTPUT:-.output}
kderpd=$out/kderpd
ctl=$out/kderpctl
bench=$out/kderp-bench
py=/usr/bin/python3 # a system interpreter: user "nobody" must be able to run it
require root "$kderpd" "$ctl" "$bench" "$py" setpriv bpffs user:nobody

# The default rule, as kderpd applies it for root without systemd.
unset RUNTIME_DIRECTORY
RUNDIR=/run/kderpd
work=$(mktemp -d)
chmod 0711 "$work" # nobody may pass through to its own directory below
NB=$work/nb
install -d -o nobody -g "$(id -gn nobody)" -m 0700 "$NB"
pins=/sys/fs/bpf/kderp-ctltest-$$
pids=()
helpers=()
kd_pid='' kd_port='' a_pid='' a_port=''

cleanup() {
	for p in "${pids[@]}" "${helpers[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}" "${helpers[@]}"; do wait "$p" 2>/dev/null; done
	for d in "$pins" "$pins-b"; do
		rm -f "$d"/* 2>/dev/null
		rmdir "$d" 2>/dev/null
	done
	rm -f "$RUNDIR/ctl-sys+fs+bpf+kderp-ctltest-$$"*.sock* "$RUNDIR"/ctl-99999999[01].sock*
	rm -rf "$work"
}
at_exit cleanup

# A command prefix, not a function: "$!" of a background job is then the process itself.
as_nobody=(setpriv --reuid nobody --regid "$(id -g nobody)" --clear-groups)

# start LOG ARGS...: kderpd on a free loopback port; sets kd_pid and kd_port.
# 0 once it answers, 1 if it exits or never answers.
start() {
	local log=$1
	shift
	kd_port=$(free_port)
	"$kderpd" -a "127.0.0.1:$kd_port" -c "$work/key" --stun=false "$@" >"$log" 2>&1 &
	kd_pid=$!
	pids+=("$kd_pid")
	for _ in $(seq 1 100); do
		kill -0 "$kd_pid" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$kd_port") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# exit_status PID: wait (up to 5 s) for a daemon that should refuse to start.
exit_status() {
	for _ in $(seq 1 50); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill "$1" 2>/dev/null
	wait "$1"
}

# A server that answers "ok 1" to anything and writes down what it got.
cat >"$work/squat.py" <<'EOF'
import socket, sys
addr, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX)
s.bind(addr if addr.startswith("/") else "\0" + addr)
s.listen(8)
with open(log, "a") as f:
    f.write("listening\n")
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        req = c.recv(256)
    except OSError:
        req = b""
    with open(log, "a") as f:
        f.write("request %d %r\n" % (len(req), req))
    try:
        c.sendall(b"ok 1\n")
    except OSError:
        pass
    c.close()
EOF
chmod 0644 "$work/squat.py"

# squat LOG ADDR [nobody]: start a squatter, wait until it listens.
squat() {
	local log=$1 addr=$2
	if [ "${3:-}" = nobody ]; then
		"${as_nobody[@]}" "$py" "$work/squat.py" "$addr" "$log" 2>>"$NB/squat.err" &
	else
		"$py" "$work/squat.py" "$addr" "$log" 2>>"$work/squat.err" &
	fi
	helpers+=("$!")
	for _ in $(seq 1 50); do
		grep -q listening "$log" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# peers: the connected keys, one a line, from the pins of $pins.
peers() {
	"$ctl" --bpffs-dir "$pins" --json peers 2>/dev/null |
		"$py" -c 'import json,sys; [print(p["key"]) for p in json.load(sys.stdin)]'
}

wait_peers() { # wait_peers N: until exactly N keys are connected (5 s)
	for _ in $(seq 1 50); do
		[ "$(peers | wc -l)" -eq "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# The default socket of a daemon pinning in $pins: '/' as '+', leading one dropped.
sock="$RUNDIR/ctl-$(sed 's|^/||; s|/|+|g' <<<"$pins").sock"

# 1: nobody can create neither the run directory nor a socket in it.
nobody_cannot_create_in_rundir() {
	local r
	r=$("${as_nobody[@]}" "$py" - "$RUNDIR" "$(basename "$sock")" <<'EOF'
import os, socket, sys
rundir, name = sys.argv[1], sys.argv[2]
try:
    if not os.path.isdir(rundir):
        os.mkdir(rundir)
        print("created", rundir)
    else:
        socket.socket(socket.AF_UNIX).bind(os.path.join(rundir, name))
        print("created", name)
except PermissionError:
    print("denied")
EOF
)
	[ "$r" = denied ] || fail "nobody: $r"
}

# 2: nobody holds the old abstract name before kderpd starts: kderpd starts
# on its path socket all the same, and says so. Tests 3-5 use this daemon.
kderpd_unaffected_by_squatter() {
	local rc
	squat "$NB/abstract.log" "kderpd-ctl:$pins" nobody || { fail "the squatter did not start"; return; }
	start "$work/a.log" --bpffs-dir="$pins" &&
		grep -qF "control socket: $sock" "$work/a.log" &&
		! grep -q 'warn: control socket' "$work/a.log" && [ -S "$sock" ] &&
		[ "$(stat -c '%U %a' "$sock")" = "root 600" ] &&
		[ "$(stat -c '%U %a' "$RUNDIR")" = "root 700" ]
	rc=$?
	a_pid=$kd_pid a_port=$kd_port
	[ "$rc" -eq 0 ] || { sed 's/^/# /' "$work/a.log"; fail; }
}

# 3: close-peer reaches kderpd: the client sees its connection close, the
# other stays, and the squatter heard nothing.
close_peer_closes_the_peer() {
	local bpid rc brc k1='' left
	timeout 30 "$bench" idle -s "127.0.0.1:$a_port" -n 2 --hold 4 >"$work/idle.out" 2>&1 &
	bpid=$!
	helpers+=("$bpid")
	if wait_peers 2; then
		k1=$(peers | head -1)
		"$ctl" --bpffs-dir "$pins" close-peer "${k1:0:16}" >"$work/close.out" 2>&1
		rc=$?
		wait_peers 1
		left=$(peers)
	else
		rc=x left=
		echo "# no two peers: $(peers | wc -l)"
	fi
	wait "$bpid"
	brc=$?
	[ "$rc" = 0 ] && [ -n "$left" ] && [ "$left" != "$k1" ] && [ "$brc" -eq 3 ] &&
		grep -q '1 connections closed by the server' "$work/idle.out" &&
		! grep -q request "$NB/abstract.log" && return 0
	echo "# kderpctl exit $rc, bench exit $brc, left: ${left:-none}"
	sed 's/^/# /' "$work/close.out" "$work/idle.out" "$NB/abstract.log"
	fail
}

# 4: a socket served by nobody: kderpctl refuses it and sends nothing.
kderpctl_refuses_non_root_server() {
	local k2 rc
	timeout 30 "$bench" idle -s "127.0.0.1:$a_port" -n 1 --hold 3 >/dev/null 2>&1 &
	helpers+=("$!")
	wait_peers 1
	k2=$(peers | head -1)
	if squat "$NB/evil.log" "$NB/evil.sock" nobody; then
		"$ctl" --bpffs-dir "$pins" --ctl "$NB/evil.sock" close-peer "${k2:-00}" >"$work/evil.out" 2>&1
		rc=$?
	else
		rc=x
	fi
	[ "$rc" = 1 ] && grep -q "refusing the control socket $NB/evil.sock: it is served by uid 65534" \
		"$work/evil.out" && grep -q '^request 0 ' "$NB/evil.log" && [ "$(peers)" = "$k2" ] && return 0
	echo "# kderpctl exit $rc"
	sed 's/^/# /' "$work/evil.out" "$NB/evil.log" 2>/dev/null
	fail
}

# 5: a socket served by root, but not by the pins' owner: refused too.
kderpctl_refuses_other_pid() {
	local rc
	if squat "$work/root.log" "$work/root.sock"; then
		"$ctl" --bpffs-dir "$pins" --ctl "$work/root.sock" ping >"$work/root.out" 2>&1
		rc=$?
	else
		rc=x
	fi
	[ "$rc" = 1 ] &&
		grep -q "it is served by pid [0-9]*, but the kderpd that owns $pins is pid $a_pid" \
			"$work/root.out" && grep -q '^request 0 ' "$work/root.log" && return 0
	echo "# kderpctl exit $rc"
	sed 's/^/# /' "$work/root.out" "$work/root.log" 2>/dev/null
	fail
}

# 6: a daemon killed leaves its socket; the next one replaces it.
stale_socket_replaced() {
	local rc=0
	kill -9 "$a_pid"
	wait "$a_pid" 2>/dev/null
	if ! { [ -S "$sock" ] && start "$work/a2.log" --bpffs-dir="$pins" &&
		grep -qF "replaced a stale $sock" "$work/a2.log" &&
		[ "$("$ctl" --bpffs-dir "$pins" ping 2>&1)" = "kderpd pid $kd_pid answers on $sock" ]; }; then
		sed 's/^/# /' "$work/a2.log"
		rc=1
	fi
	kill "$kd_pid"
	wait "$kd_pid" 2>/dev/null
	[ "$rc" -eq 0 ] || fail
}

# 7: two daemons without a pin directory: a socket each, each answering;
# the first removes a pid-named socket whose lock is free, not one held.
no_pin_dir_two_instances() {
	local ok=1 n p s a e_pid=()
	for n in 999999990 999999991; do : >"$RUNDIR/ctl-$n.sock" && : >"$RUNDIR/ctl-$n.sock.lock"; done
	flock "$RUNDIR/ctl-999999991.sock.lock" sleep 30 &
	helpers+=("$!")
	sleep 0.2
	for n in 1 2; do
		if start "$work/e$n.log" --bpffs-dir=; then
			e_pid[n]=$kd_pid
		else
			ok=0
		fi
	done
	for n in 1 2; do
		p=${e_pid[n]:-0} s=$RUNDIR/ctl-${e_pid[n]:-0}.sock
		a=$("$ctl" --bpffs-dir "" --ctl "$s" ping 2>&1)
		[ "$a" = "kderpd pid $p answers on $s" ] || { ok=0 && echo "# $s: $a"; }
	done
	if [ -e "$RUNDIR/ctl-999999990.sock" ] || [ -e "$RUNDIR/ctl-999999990.sock.lock" ] ||
		! grep -qF "removed a stale $RUNDIR/ctl-999999990.sock" "$work/e1.log" ||
		[ ! -e "$RUNDIR/ctl-999999991.sock" ]; then
		ok=0
		ls -la "$RUNDIR" | sed 's/^/# /'
	fi
	[ $ok = 1 ] || sed 's/^/# /' "$work/e1.log" "$work/e2.log"
	kill "${e_pid[1]:-}" "${e_pid[2]:-}" 2>/dev/null
	[ $ok = 1 ] || fail
}

# 8: a second daemon on the same --ctl stops, naming the path and the
# owner; and leaves the owner's lock alone, so that a third stops too.
same_ctl_second_refused() {
	local c=$work/c/ctl.sock c_pid rc rc3
	if start "$work/c1.log" --bpffs-dir= --ctl="$c"; then
		c_pid=$kd_pid
		start "$work/c2.log" --bpffs-dir= --ctl="$c"
		exit_status "$kd_pid"
		rc=$?
		start "$work/c3.log" --bpffs-dir= --ctl="$c"
		exit_status "$kd_pid"
		rc3=$?
	else
		rc=x rc3=x c_pid=
	fi
	[ "$rc" = 1 ] && grep -qF "control socket $c is in use by kderpd pid $c_pid" "$work/c2.log" &&
		[ "$rc3" = 1 ] && grep -qF "control socket $c is in use by kderpd pid $c_pid" "$work/c3.log" &&
		[ -e "$c.lock" ] &&
		[ "$("$ctl" --bpffs-dir "" --ctl "$c" ping 2>&1)" = "kderpd pid $c_pid answers on $c" ] &&
		return 0
	echo "# second daemon: exit $rc, third: exit $rc3"
	sed 's/^/# /' "$work/c1.log" "$work/c2.log" "$work/c3.log"
	fail
}

# 9: a --ctl that cannot be set up is fatal, and named; --ctl=off is not.
unusable_ctl_is_fatal() {
	local rc1 rc2 ok3
	mkdir -m 1777 "$work/ww"
	start "$work/f1.log" --bpffs-dir= --ctl="$work/missing/sub/ctl.sock"
	exit_status "$kd_pid"
	rc1=$?
	start "$work/f2.log" --bpffs-dir= --ctl="$work/ww/ctl.sock"
	exit_status "$kd_pid"
	rc2=$?
	start "$work/f3.log" --bpffs-dir= --ctl=off
	ok3=$?
	[ "$rc1" = 1 ] &&
		grep -qF "control socket $work/missing/sub/ctl.sock: creating $work/missing/sub: No such file or directory" "$work/f1.log" &&
		[ "$rc2" = 1 ] && grep -qF "control socket $work/ww/ctl.sock: $work/ww (owner uid 0, mode 1777) may be written by others" "$work/f2.log" &&
		[ "$ok3" = 0 ] && grep -q 'control socket: off' "$work/f3.log" && return 0
	echo "# exit $rc1, $rc2; --ctl=off started: $ok3"
	sed 's/^/# /' "$work/f1.log" "$work/f2.log" "$work/f3.log"
	fail
}

run_all_tests
