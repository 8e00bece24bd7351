#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_http_edges.sh - what kderpd answers at the edges of HTTP and TLS,
# and start-up refusals: a TLS ClientHello on the plain-HTTP port gets a 400
# at once; HTTP versions other than 1.0/1.1 get 505; an upgrade request with
# a body gets 400 and no 101; a client leaving a TLS connection without
# close_notify is logged as a plain close; --debug-allow refuses empty
# items; a start that fails after pinning the state plane removes its pins.
set -u
here=$(dirname "$0")
. "$here/lib.sh"

kderpd=${KDERP_OUTPUT:-.output}/kderpd
names="tls_hello_on_plain_port http2_version_505 upgrade_with_body_400
upgrade_chunked_400 tls_eof_is_a_close debug_allow_empty_item failed_start_unpins"
ktap_header 7
if [ ! -x "$kderpd" ] || ! command -v python3 >/dev/null; then
	for t in $names; do ktap_skip "$t" "needs kderpd and python3"; done
	ktap_finish
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT

# send PORT HEX_OR_TEXT: send bytes (\x escapes allowed), print what comes
# back within 1 s (at most 200 bytes) and the time it took in ms.
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

port=$(free_port)
"$kderpd" -a "127.0.0.1:$port" -c "$tmp/key" --stun=false --bpffs-dir= 2>"$tmp/log" &
pids+=($!)
wait_port 127.0.0.1 "$port" || { ktap_fail tls_hello_on_plain_port "kderpd did not start"; ktap_finish; }

# The first bytes of a TLS 1.3 ClientHello record.
out=$(send "$port" '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03')
echo "# ClientHello on the plain port: $out"
case $out in "b'HTTP/1.1 400"*) [ "${out##* }" -lt 500 ] && ktap_pass tls_hello_on_plain_port ||
	ktap_fail tls_hello_on_plain_port "answered after ${out##* } ms" ;;
*) ktap_fail tls_hello_on_plain_port "$out" ;; esac

out=$(send "$port" 'GET / HTTP/2.0\r\nHost: x\r\n\r\n')
case $out in "b'HTTP/1.1 505"*) ktap_pass http2_version_505 ;; *) ktap_fail http2_version_505 "$out" ;; esac

up='GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n'
out=$(send "$port" "${up}Content-Length: 5\r\n\r\nhello")
case $out in "b'HTTP/1.1 400"*) ktap_pass upgrade_with_body_400 ;; *) ktap_fail upgrade_with_body_400 "$out" ;; esac
out=$(send "$port" "${up}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
case $out in "b'HTTP/1.1 400"*) ktap_pass upgrade_chunked_400 ;; *) ktap_fail upgrade_chunked_400 "$out" ;; esac

# TLS: a client that completes the handshake, then just goes away.
tport=$(free_port)
"$kderpd" -a "127.0.0.1:$tport" -c "$tmp/key" --stun=false --bpffs-dir= --certmode=manual \
	--certdir="$tmp/certs" --hostname=127.0.0.1 --http-port=-1 2>"$tmp/tlslog" &
pids+=($!)
if wait_port 127.0.0.1 "$tport"; then
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
	if grep -q 'client closed' <<<"$line" && ! grep -qi 'eof\|ssl routines' <<<"$line"; then
		ktap_pass tls_eof_is_a_close
	else
		ktap_fail tls_eof_is_a_close "${line:-no close line}"
	fi
else
	ktap_fail tls_eof_is_a_close "TLS kderpd did not start"
fi

# --debug-allow: an empty item is a start-up error, as a bad one is.
bad=0
for v in '10.0.0.0/8,,::1' '10.0.0.0/8,' ',10.0.0.0/8' '10.0.0.0/8, ,::1' '10.0.0.0/8x'; do
	if timeout 10 "$kderpd" -a "127.0.0.1:$(free_port)" -c "$tmp/key" --stun=false --bpffs-dir= \
		--debug-allow="$v" 2>"$tmp/dalog" & then
		p=$!
		pids+=($p)
		sleep 0.3
		if kill -0 "$p" 2>/dev/null || ! grep -q 'bad --debug-allow' "$tmp/dalog"; then
			echo "# --debug-allow='$v' was accepted"
			bad=1
		fi
	fi
done
[ "$bad" = 0 ] && ktap_pass debug_allow_empty_item || ktap_fail debug_allow_empty_item

# A start that fails after the state plane pinned its maps removes them.
if [ "$(id -u)" != 0 ] || ! mountpoint -q /sys/fs/bpf; then
	ktap_skip failed_start_unpins "needs root and bpffs"
else
	dir=/sys/fs/bpf/kderp-test-unpin-$$
	# the port is taken by the first kderpd above
	timeout 10 "$kderpd" -a "127.0.0.1:$port" -c "$tmp/key" --stun=false --bpffs-dir="$dir" \
		2>"$tmp/unpinlog"
	rc=$?
	left=$(ls "$dir" 2>/dev/null | wc -l)
	echo "# exit $rc, $left pins left in $dir"
	if [ "$rc" = 1 ] && [ "$left" = 0 ] && grep -q 'maps pinned' "$tmp/unpinlog"; then
		ktap_pass failed_start_unpins
	else
		ktap_fail failed_start_unpins "exit $rc, $left pins left"
	fi
	rm -rf "$dir"
fi
ktap_finish
