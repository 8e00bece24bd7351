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
# Per version four tests: tlsVV_interop makes the run, the next three judge
# the counters it saw.
set -u

dir=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$dir/lib/lib.sh"

ALL_TESTS="tls13_interop tls13_ktls_send tls13_ktls_recv tls13_no_decrypt_errors
	tls12_interop tls12_ktls_send tls12_ktls_recv tls12_no_decrypt_errors"

out=${KDERP_OUTPUT:-$dir/../.output}
if [ ! -r /proc/net/tls_stat ]; then
	skip_all "no /proc/net/tls_stat (kernel without CONFIG_TLS or tls.ko not loaded)"
elif [ ! -x "$out/kderpd" ]; then
	skip_all "kderpd not built"
elif [ ! -x "$out/kderp-interop" ]; then
	skip_all "kderp-interop not built"
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
at_exit rm -f "$tmp"

# The interop cases to run. "order" (10000 packets) is left out: under TCG it
# needs about as long as its 20 s case timeout. "faststart" needs TLS 1.3.
cases=${KTLS_INTEROP_CASES:-sendrecv three ping peergone peergone-scope nothere upgrade untrusted}

# What the run of each version saw: ran (yes, or why not), the tls_stat deltas.
declare -A ran dtx drx dde

# interop_run VERSION: test_interop.sh with the server at --tls-max=VERSION.
interop_run() {
	local v=$1 args vcases tx0 rx0 de0 rc tls_ok tls_run
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
	dtx[$v]=$(($(tls_stat TlsTxSw) - tx0))
	drx[$v]=$(($(tls_stat TlsRxSw) - rx0))
	dde[$v]=$(($(tls_stat TlsDecryptError) - de0))
	sed 's/^/    /' "$tmp"
	tls_ok=$(grep -cE '^ok [0-9]+ tls_' "$tmp")
	tls_run=$(grep -E '^(not )?ok [0-9]+ tls_' "$tmp" | grep -vc '# SKIP')
	echo "# TLS $v: $tls_ok of $tls_run TLS cases passed;" \
		"tls_stat TlsTxSw +${dtx[$v]} TlsRxSw +${drx[$v]} TlsDecryptError +${dde[$v]}"
	if [ "$rc" -eq 4 ] || [ "$tls_run" -eq 0 ]; then
		ran[$v]="test_interop.sh ran no TLS case"
		skip "${ran[$v]}"
		return
	fi
	ran[$v]=yes
	[ "$rc" -eq 0 ] || fail "test_interop.sh exit $rc"
}

# judge VERSION: the run of that version happened (else skip with its reason).
judge() {
	[ "${ran[$1]:-}" = yes ] && return 0
	skip "${ran[$1]:-no run}"
}

ktls_send() { # kderpd moved TLS send into the kernel
	judge "$1" || return
	[ "${dtx[$1]}" -gt 0 ] || fail "TlsTxSw did not grow: kderpd sent in user space"
}

ktls_recv() {
	local v=$1
	judge "$v" || return
	if [ "$v" = 1.2 ]; then
		[ "${drx[$v]}" -gt 0 ] || fail "TlsRxSw did not grow: kderpd received in user space"
	elif [ "$rx13_offloaded" = no ]; then
		if [ "${dtx[$v]}" -eq 0 ]; then
			fail "no kTLS connection to judge"
		elif [ "${drx[$v]}" -ne 0 ]; then
			fail "TlsRxSw +${drx[$v]} with OpenSSL $ossl (expected no TLS 1.3 RX)"
		fi
	else
		skip "OpenSSL $ossl may or may not offload TLS 1.3 receive"
	fi
}

no_decrypt_errors() {
	judge "$1" || return
	[ "${dde[$1]}" -eq 0 ] || fail "TlsDecryptError +${dde[$1]}"
}

tls13_interop() { interop_run 1.3; }
tls13_ktls_send() { ktls_send 1.3; }
tls13_ktls_recv() { ktls_recv 1.3; }
tls13_no_decrypt_errors() { no_decrypt_errors 1.3; }
tls12_interop() { interop_run 1.2; }
tls12_ktls_send() { ktls_send 1.2; }
tls12_ktls_recv() { ktls_recv 1.2; }
tls12_no_decrypt_errors() { no_decrypt_errors 1.2; }

run_all_tests
