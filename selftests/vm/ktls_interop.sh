#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# ktls_interop.sh - Tailscale's DERP client against kderpd over TLS 1.3 and
# TLS 1.2 with kTLS, checking through /proc/net/tls_stat that the kernel
# really carried the records.
#
# For each TLS version it runs selftests/test_interop.sh with the server at
# --tls-max=VERSION (KTLS_INTEROP_CASES overrides the cases) and compares
# the tls_stat counters before and after:
#   TlsTxSw grows             kderpd moved TLS send into the kernel
#   TlsRxSw grows (1.2)       ... and receive, for TLS 1.2
#   TlsRxSw unchanged (1.3)   OpenSSL 3.0/3.1 keep TLS 1.3 receive in user space
#   TlsDecryptError unchanged no record failed to decrypt in the kernel
# Meant for a guest kernel with CONFIG_TLS (make vm-test); SKIPs elsewhere.
set -u

dir=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$dir/lib/lib.sh"

out=${KDERP_OUTPUT:-$dir/../.output}
versions=(1.3 1.2)
checks=4

ktap_header $((${#versions[@]} * checks))

skip_version() { # skip_version VERSION REASON
	ktap_skip "tls$1 interop" "$2"
	ktap_skip "tls$1 ktls send" "$2"
	ktap_skip "tls$1 ktls recv" "$2"
	ktap_skip "tls$1 no decrypt errors" "$2"
}

why=
if [ ! -r /proc/net/tls_stat ]; then
	why="no /proc/net/tls_stat (kernel without CONFIG_TLS or tls.ko not loaded)"
elif [ ! -x "$out/kderpd" ]; then
	why="kderpd not built"
elif [ ! -x "$out/kderp-interop" ]; then
	why="kderp-interop not built"
fi
if [ -n "$why" ]; then
	for v in "${versions[@]}"; do skip_version "$v" "$why"; done
	ktap_finish
fi

tls_stat() { # tls_stat NAME
	awk -v k="$1" '$1 == k { print $2 }' /proc/net/tls_stat
}

# OpenSSL 3.2 and later may offload TLS 1.3 receive as well.
ossl=$(openssl version 2>/dev/null | awk '{ print $2 }')
case "$ossl" in
3.0.* | 3.1.*) rx13_offloaded=no ;;
*) rx13_offloaded=maybe ;;
esac
echo "# OpenSSL ${ossl:-unknown}, kernel $(uname -r)"

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

# The interop cases to run. "order" (10000 packets) is left out: under TCG it
# needs about as long as its 20 s case timeout. "faststart" needs TLS 1.3.
cases=${KTLS_INTEROP_CASES:-sendrecv three ping peergone peergone-scope nothere upgrade untrusted}

for v in "${versions[@]}"; do
	# With --tls-max in the daemon flags test_interop.sh makes one TLS run,
	# at that version, instead of its own 1.3 and 1.2 runs.
	args=--tls-max=$v
	vcases="$cases faststart"
	[ "$v" = 1.2 ] && vcases=$cases
	tx0=$(tls_stat TlsTxSw)
	rx0=$(tls_stat TlsRxSw)
	de0=$(tls_stat TlsDecryptError)
	# TCG is slow and the host may be busy: twice the per-case timeout.
	KDERP_INTEROP_DAEMON_ARGS="$args ${KDERP_INTEROP_DAEMON_ARGS:-}" \
		KDERP_INTEROP_CASES="$vcases" KDERP_INTEROP_TIMEOUT=${KDERP_INTEROP_TIMEOUT:-40} \
		"$dir/test_interop.sh" >"$tmp" 2>&1
	rc=$?
	dtx=$(($(tls_stat TlsTxSw) - tx0))
	drx=$(($(tls_stat TlsRxSw) - rx0))
	dde=$(($(tls_stat TlsDecryptError) - de0))
	sed 's/^/    /' "$tmp"
	tls_ok=$(grep -cE '^ok [0-9]+ interop tls ' "$tmp")
	tls_run=$(grep -E '^(not )?ok [0-9]+ interop tls ' "$tmp" | grep -vc '# SKIP')
	echo "# TLS $v: $tls_ok of $tls_run TLS cases passed;" \
		"tls_stat TlsTxSw +$dtx TlsRxSw +$drx TlsDecryptError +$dde"

	if [ "$rc" -eq 4 ] || [ "$tls_run" -eq 0 ]; then
		skip_version "$v" "test_interop.sh ran no TLS case"
		continue
	fi
	if [ "$rc" -eq 0 ]; then
		ktap_pass "tls$v interop"
	else
		ktap_fail "tls$v interop" "test_interop.sh exit $rc"
	fi
	if [ "$dtx" -gt 0 ]; then
		ktap_pass "tls$v ktls send"
	else
		ktap_fail "tls$v ktls send" "TlsTxSw did not grow: kderpd sent in user space"
	fi
	if [ "$v" = 1.2 ]; then
		if [ "$drx" -gt 0 ]; then
			ktap_pass "tls$v ktls recv"
		else
			ktap_fail "tls$v ktls recv" "TlsRxSw did not grow: kderpd received in user space"
		fi
	elif [ "$rx13_offloaded" = no ]; then
		if [ "$dtx" -eq 0 ]; then
			ktap_fail "tls$v ktls recv" "no kTLS connection to judge"
		elif [ "$drx" -eq 0 ]; then
			ktap_pass "tls$v ktls recv"
		else
			ktap_fail "tls$v ktls recv" "TlsRxSw +$drx with OpenSSL $ossl (expected no TLS 1.3 RX)"
		fi
	else
		ktap_skip "tls$v ktls recv" "OpenSSL $ossl may or may not offload TLS 1.3 receive"
	fi
	if [ "$dde" -eq 0 ]; then
		ktap_pass "tls$v no decrypt errors"
	else
		ktap_fail "tls$v no decrypt errors" "TlsDecryptError +$dde"
	fi
done

ktap_finish
