#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_stun_kderpd.sh - kderpd's STUN end to end across two network
# namespaces joined by a veth pair, IPv4 and IPv6: with --xdp-iface the XDP
# program answers (its counters move in /debug/varz, the userspace ones do
# not); without it userspace (one dual-stack socket, -a :PORT) answers with
# byte-identical replies. The namespaces come from lib/netns.sh (unique
# names, removed on exit). Needs root, iproute2, python3 and curl; SKIPs otherwise.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"
# shellcheck source=selftests/lib/netns.sh
. "$here/lib/netns.sh"

# In order: XDP on (1-6), then user space (7-10); later tests use what
# earlier ones measured.
ALL_TESTS="kderpd_starts_with_xdp xdp_attached_generic xdp_mapped_address_v4_v6
	xdp_counters_move_userspace_idle go_net_stun_xdp xdp_drop_switch
	kderpd_starts_without_xdp userspace_reply_identical userspace_counters
	go_net_stun_userspace"

kderpd=${KDERP_OUTPUT:-.output}/kderpd
interop=${KDERP_OUTPUT:-.output}/kderp-interop
[ "$(id -u)" -eq 0 ] || skip_all "needs root (network namespaces, XDP)"
command -v ip >/dev/null || skip_all "needs iproute2"
command -v python3 >/dev/null || skip_all "needs python3"
command -v curl >/dev/null || skip_all "needs curl"
[ -x "$kderpd" ] || skip_all "kderpd not built"

SRV=10.78.0.1 CLI=10.78.0.2 SRV6=fd78::1 CLI6=fd78::2
work=$(mktemp -d)
pid=

cleanup() {
	stop_kderpd
	rm -rf "$work"
}
at_exit cleanup

# stun_query NS SERVER PORT BIND TXID: print reply hex, "mapped ip port",
# "self ip port". Turns off TX checksum offload on $IF_C first: veth would
# hand XDP packets whose UDP checksum is only the pseudo-header sum.
stun_query() {
	ip netns exec "$1" python3 - "$2" "$3" "$4" "$5" "$IF_C" <<'PY'
import array, fcntl, ipaddress, socket, struct, sys, zlib
srv, port, bind, txhex, ifname = sys.argv[1:6]
MAGIC = 0x2112A442
# SIOCETHTOOL / ETHTOOL_STXCSUM = off
ev = array.array("I", [0x17, 0])
ifr = struct.pack("16sP", ifname.encode(), ev.buffer_info()[0])
fcntl.ioctl(socket.socket(), 0x8946, ifr)
txid = bytes.fromhex(txhex)
hdr = struct.pack(">HHI", 1, 20, MAGIC) + txid
body = struct.pack(">HH", 0x8022, 8) + b"tailnode"
req = hdr + body + struct.pack(">HHI", 0x8028, 4, zlib.crc32(hdr + body) ^ 0x5354554E)
fam = socket.AF_INET6 if ":" in srv else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((bind, 0))
s.settimeout(1.0)
for _ in range(5):
    s.sendto(req, (srv, int(port)))
    try:
        r = s.recv(2048)
    except socket.timeout:
        continue
    typ, _, magic = struct.unpack(">HHI", r[:8])
    atype, alen, fam_ = struct.unpack(">HHxB", r[20:26])
    if typ != 0x0101 or magic != MAGIC or r[8:20] != txid or atype != 0x20:
        sys.exit("bad reply " + r.hex())
    n = 4 if fam_ == 1 else 16
    key = struct.pack(">I", MAGIC) + txid
    ip = ipaddress.ip_address(bytes(a ^ b for a, b in zip(r[28:28 + n], key)))
    p = struct.unpack(">H", r[26:28])[0] ^ 0x2112
    print(r.hex())
    print(ip, p)
    print(s.getsockname()[0], s.getsockname()[1])
    sys.exit(0)
sys.exit("no answer")
PY
}

varz() {
	ip netns exec "$NS_S" curl -s --max-time 5 "http://$SRV:$HTTP_PORT/debug/varz"
}

# start_kderpd ARGS...: (re)start kderpd in the server namespace, wait for HTTP.
start_kderpd() {
	stop_kderpd
	ip netns exec "$NS_S" "$kderpd" -a ":$HTTP_PORT" -c "$work/key" \
		--debug-allow 10.78.0.0/24 --stun-port "$STUN_PORT" "$@" >"$work/log" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do
		varz >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

stop_kderpd() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	pid=
}

# the pair of namespaces
if ! netns_pair_up kdk "$SRV/24 $SRV6/64" "$CLI/24 $CLI6/64"; then
	skip_all "cannot create namespaces and veth"
fi
HTTP_PORT=3340
STUN_PORT=3478
TX=0123456789abcdef01234567

# XDP on the server veth (generic mode: native veth XDP_TX needs XDP on the peer)
kderpd_starts_with_xdp() {
	start_kderpd --xdp-iface="$IF_S:generic" && return 0
	sed 's/^/# /' "$work/log"
	return 1
}

xdp_attached_generic() {
	grep -q "xdp: STUN on $IF_S .*generic mode" "$work/log" &&
		ip -n "$NS_S" link show dev "$IF_S" | grep -q xdpgeneric && return 0
	sed 's/^/# /' "$work/log"
	return 1
}

# The replies XDP gives (x4, x6) are compared with user space's later.
x4='' x6=''
xdp_mapped_address_v4_v6() {
	local out4 out6 m4 m6 self4 self6
	out4=$(stun_query "$NS_C" $SRV $STUN_PORT $CLI $TX 2>&1)
	out6=$(stun_query "$NS_C" $SRV6 $STUN_PORT $CLI6 $TX 2>&1)
	x4=$(sed -n 1p <<<"$out4") m4=$(sed -n 2p <<<"$out4") self4=$(sed -n 3p <<<"$out4")
	x6=$(sed -n 1p <<<"$out6") m6=$(sed -n 2p <<<"$out6") self6=$(sed -n 3p <<<"$out6")
	[ -n "$m4" ] && [ "$m4" = "$self4" ] && [ -n "$m6" ] && [ "$m6" = "$self6" ] && return 0
	echo "# v4: $out4" | head -3
	echo "# v6: $out6" | head -3
	return 1
}

xdp_counters_move_userspace_idle() {
	local v
	v=$(varz)
	grep -q '^xdp_stun_server_packets_total{address_family="ipv4",prog_end="unspecified",xdp_outcome="tx"} 1$' <<<"$v" &&
		grep -q '^xdp_stun_server_packets_total{address_family="ipv6",prog_end="unspecified",xdp_outcome="tx"} 1$' <<<"$v" &&
		grep -q '^stun_requests{disposition="success"} 0$' <<<"$v" && return 0
	grep -E '^(xdp_stun|stun_)' <<<"$v" | sed 's/^/# /'
	return 1
}

# Tailscale's own net/stun client (the code netcheck runs), v4 and v6.
go_stun() { # go_stun -> 0 if both families get our own address back
	[ -x "$interop" ] || return 2
	ip netns exec "$NS_C" "$interop" -stun "$SRV:$STUN_PORT" -stun-want "$CLI" stun \
		>"$work/go4" 2>&1 &&
		ip netns exec "$NS_C" "$interop" -stun "[$SRV6]:$STUN_PORT" -stun-want "$CLI6" stun \
			>"$work/go6" 2>&1
}

go_net_stun_xdp() {
	local rc v
	go_stun
	rc=$?
	[ "$rc" -eq 2 ] && { skip "kderp-interop not built"; return; }
	v=$(varz)
	[ "$rc" -eq 0 ] &&
		grep -q '^xdp_stun_server_packets_total{address_family="ipv4",prog_end="unspecified",xdp_outcome="tx"} 2$' <<<"$v" &&
		grep -q '^stun_requests{disposition="success"} 0$' <<<"$v" && return 0
	cat "$work/go4" "$work/go6" 2>/dev/null | sed 's/^/# /'
	grep -E '^(xdp_stun.*tx|stun_requests)' <<<"$v" | sed 's/^/# /'
	return 1
}

# derper's drop switch at /debug/drop-stun-on|off: XDP drops, nobody answers
xdp_drop_switch() {
	local on outd md v off
	on=$(ip netns exec "$NS_S" curl -s --max-time 5 "http://$SRV:$HTTP_PORT/debug/drop-stun-on")
	outd=$(stun_query "$NS_C" $SRV $STUN_PORT $CLI $TX 2>&1)
	md=$(sed -n 2p <<<"$outd")
	v=$(varz)
	off=$(ip netns exec "$NS_S" curl -s --max-time 5 "http://$SRV:$HTTP_PORT/debug/drop-stun-off")
	[ "$on" = "STUN dropping on" ] && [ -z "$md" ] && [ "$off" = "STUN dropping off" ] &&
		grep -q '^xdp_stun_server_packets_total{address_family="ipv4",prog_end="drop_stun",xdp_outcome="drop"} [1-9][0-9]*$' <<<"$v" &&
		return 0
	echo "# on='$on' off='$off' reply='$md'"
	grep -E '^xdp_stun.*drop' <<<"$v" | sed 's/^/# /'
	return 1
}

# No XDP: user space answers the same requests with the same bytes.
kderpd_starts_without_xdp() {
	start_kderpd && return 0
	sed 's/^/# /' "$work/log"
	return 1
}

# the client port differs between runs: compare everything but the XOR'ed port
strip_port() { echo "${1:0:52}${1:56}"; }

userspace_reply_identical() {
	local out4 out6 u4 u6
	out4=$(stun_query "$NS_C" $SRV $STUN_PORT $CLI $TX 2>&1)
	out6=$(stun_query "$NS_C" $SRV6 $STUN_PORT $CLI6 $TX 2>&1)
	u4=$(sed -n 1p <<<"$out4") u6=$(sed -n 1p <<<"$out6")
	[ -n "$u4" ] && [ -n "$x4" ] && [ "$(strip_port "$u4")" = "$(strip_port "$x4")" ] &&
		[ -n "$u6" ] && [ "$(strip_port "$u6")" = "$(strip_port "$x6")" ] &&
		[ "$(sed -n 2p <<<"$out4")" = "$(sed -n 3p <<<"$out4")" ] && return 0
	echo "# xdp  v4 $x4 v6 $x6"
	echo "# user v4 $u4 v6 $u6"
	return 1
}

userspace_counters() {
	local v
	v=$(varz)
	grep -q '^stun_requests{disposition="success"} 2$' <<<"$v" &&
		grep -q '^stun_addrfamily{family="ipv4"} 1$' <<<"$v" &&
		grep -q '^stun_addrfamily{family="ipv6"} 1$' <<<"$v" &&
		! grep -q '^xdp_stun_server_packets_total{' <<<"$v" && return 0
	grep -E '^(xdp_stun|stun_)' <<<"$v" | sed 's/^/# /'
	return 1
}

go_net_stun_userspace() {
	local rc v
	go_stun
	rc=$?
	[ "$rc" -eq 2 ] && { skip "kderp-interop not built"; return; }
	v=$(varz)
	[ "$rc" -eq 0 ] && grep -q '^stun_requests{disposition="success"} 4$' <<<"$v" && return 0
	cat "$work/go4" "$work/go6" 2>/dev/null | sed 's/^/# /'
	grep -E '^stun_' <<<"$v" | sed 's/^/# /'
	return 1
}

run_all_tests
