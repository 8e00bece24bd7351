#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_http_edges.sh - what kderpd answers at the edges of HTTP and TLS,
# and start-up refusals: a TLS ClientHello on the plain-HTTP port gets a 400
# at once; HTTP versions other than 1.0/1.1 get 505; an upgrade request with
# a body gets 400 and no 101; a client leaving a TLS connection without
# close_notify is logged as a plain close; --debug-allow refuses empty
# items; a start that fails after pinning the state plane removes its pins;
# a pin directory laid out by another user is not used as it is.
set -u
here=$(dirname "$0")
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"

ALL_TESTS="tls_hello_on_plain_port http2_version_505 upgrade_with_body_400
	upgrade_chunked_400 tls_eof_is_a_close debug_allow_empty_item failed_start_unpins
	foreign_pin_dir_made_anew"

kderpd=${KDERP_OUTPUT:-.output}/kderpd
[ -x "$kderpd" ] || skip_all "kderpd not built"
command -v python3 >/dev/null || skip_all "needs python3"
tmp=$(mktemp -d)
pids=()
port=
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
at_exit cleanup

# send PORT BYTES: send BYTES (\x escapes allowed), print what comes back
# within 1 s (its first 60 bytes) and how long that took in ms.
send() {
	python3 - "$1" "$2" <<'EOF_PY'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
t0 = time.time()
s.settimeout(1)
try:
    got = s.recv(200)
except OSError:
    got = b""
print(repr(got[:60]), int((time.time() - t0) * 1000))
EOF_PY
}

start_plain() {
	[ -n "$port" ] && return 0
	port=$(free_port)
	"$kderpd" -a "127.0.0.1:$port" -c "$tmp/key" --stun=false --bpffs-dir= >/dev/null 2>"$tmp/log" &
	pids+=($!)
	wait_port 127.0.0.1 "$port"
}

# expect STATUS OUTPUT: the answer starts with that status line.
expect() {
	echo "# $2"
	case $2 in "b'HTTP/1.1 $1"*) return 0 ;; *) fail "$2"; return ;; esac
}

# The first bytes of a TLS ClientHello record.
tls_hello_on_plain_port() {
	local out
	start_plain || { fail "kderpd did not start"; return; }
	out=$(send "$port" '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03')
	expect 400 "$out" || return
	[ "${out##* }" -lt 500 ] || fail "answered after ${out##* } ms"
}

http2_version_505() {
	start_plain || { fail "kderpd did not start"; return; }
	expect 505 "$(send "$port" 'GET / HTTP/2.0\r\nHost: x\r\n\r\n')"
}

up='GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n'

upgrade_with_body_400() {
	start_plain || { fail "kderpd did not start"; return; }
	expect 400 "$(send "$port" "${up}Content-Length: 5\r\n\r\nhello")"
}

upgrade_chunked_400() {
	start_plain || { fail "kderpd did not start"; return; }
	expect 400 "$(send "$port" "${up}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")"
}

# TLS: a client that completes the handshake, then just goes away.
tls_eof_is_a_close() {
	local tport line
	tport=$(free_port)
	"$kderpd" -a "127.0.0.1:$tport" -c "$tmp/key" --stun=false --bpffs-dir= \
		--certmode=manual --certdir="$tmp/certs" --hostname=127.0.0.1 --http-port=-1 \
		>/dev/null 2>"$tmp/tlslog" &
	pids+=($!)
	wait_port 127.0.0.1 "$tport" || { fail "TLS kderpd did not start"; return; }
	python3 - "$tport" <<'EOF_PY'
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
s = ctx.wrap_socket(raw)
s.do_handshake()
raw.close()  # no close_notify
EOF_PY
	sleep 0.3
	line=$(grep 'close:' "$tmp/tlslog" | tail -1)
	echo "# $line"
	grep -q 'client closed' <<<"$line" && ! grep -qi 'eof\|ssl routines' <<<"$line" ||
		fail "${line:-no close line}"
}

# An empty item is a start-up error, as a bad one is.
debug_allow_empty_item() {
	local v p bad=0
	for v in '10.0.0.0/8,,::1' '10.0.0.0/8,' ',10.0.0.0/8' '10.0.0.0/8, ,::1' '10.0.0.0/8x'; do
		"$kderpd" -a "127.0.0.1:$(free_port)" -c "$tmp/key" --stun=false \
			--bpffs-dir= --debug-allow="$v" >/dev/null 2>"$tmp/dalog" &
		p=$!
		pids+=($p)
		sleep 0.3
		if kill -0 "$p" 2>/dev/null || ! grep -q 'bad --debug-allow' "$tmp/dalog"; then
			echo "# --debug-allow='$v' was accepted"
			bad=1
		fi
	done
	[ "$bad" = 0 ] || fail
}

# A start that fails after the state plane pinned its maps removes them.
failed_start_unpins() {
	local dir rc left
	[ "$(id -u)" = 0 ] && mountpoint -q /sys/fs/bpf || { skip "needs root and bpffs"; return; }
	start_plain || { fail "kderpd did not start"; return; }
	dir=/sys/fs/bpf/kderp-test-unpin-$$
	# $port is taken by the first kderpd.
	timeout 10 "$kderpd" -a "127.0.0.1:$port" -c "$tmp/key" --stun=false --bpffs-dir="$dir" \
		2>"$tmp/unpinlog"
	rc=$?
	left=$(find "$dir" -mindepth 1 2>/dev/null | wc -l)
	rm -rf "$dir"
	echo "# exit $rc, $left pins left in $dir"
	[ "$rc" = 1 ] && [ "$left" = 0 ] && grep -q 'maps pinned' "$tmp/unpinlog" ||
		fail "exit $rc, $left pins left"
}

# An unprivileged user makes the pin directory first (bpffs' root is often
# world-writable): kderpd must not pin into it as it is.
foreign_pin_dir_made_anew() {
	local dir fport p owner mode
	[ "$(id -u)" = 0 ] && mountpoint -q /sys/fs/bpf && command -v setpriv >/dev/null ||
		{ skip "needs root, bpffs and setpriv"; return; }
	dir=/sys/fs/bpf/kderp-test-squat-$$
	rm -rf "$dir"
	setpriv --reuid nobody --regid "$(id -g nobody)" --clear-groups mkdir -m 0777 "$dir" ||
		{ skip "nobody cannot create in /sys/fs/bpf"; return; }
	fport=$(free_port)
	"$kderpd" -a "127.0.0.1:$fport" -c "$tmp/key" --stun=false --bpffs-dir="$dir" \
		>/dev/null 2>"$tmp/squatlog" &
	p=$!
	pids+=($p)
	wait_port 127.0.0.1 "$fport" || { fail "kderpd did not start"; return; }
	owner=$(stat -c %u "$dir") mode=$(stat -c %a "$dir")
	kill "$p"
	wait "$p" 2>/dev/null
	rm -rf "$dir"
	grep 'state plane' "$tmp/squatlog" | sed 's/^/# /'
	[ "$owner" = 0 ] && [ "$mode" = 700 ] || fail "pinned into a uid $owner, mode $mode directory"
}

run_all_tests
