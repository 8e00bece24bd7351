# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# netns.sh - two fresh network namespaces, "server" and "client", joined by a
# veth pair, for the shell selftests (source it; lib/netns.c is the same for
# C tests). Needs root and iproute2.
#
#   netns_pair_up TAG "SRV_CIDR..." "CLI_CIDR..."
#	Creates the namespaces $NS_S and $NS_C with the veth ends $IF_S and $IF_C
#	(names: TAG, then S/C or s/c, then this shell's PID and a random byte
#	in hex, so runs side by side never meet; TAG is 1-4 characters), adds
#	the addresses (IPv6 ones without duplicate address detection) and sets
#	lo and the veth up. On failure prints ip's errors as "# " lines and
#	returns 1. Registers netns_pair_down with at_exit (lib.sh).
#   netns_pair_down
#	Removes both namespaces (and so the veth pair), if they exist.

NS_S='' NS_C='' IF_S='' IF_C=''

netns_pair_up() {
	local tag=$1 srv_addrs=$2 cli_addrs=$3 sfx err
	while :; do
		sfx=$(printf '%x%02x' $$ $((RANDOM & 255)))
		[ -e "/run/netns/${tag}S$sfx" ] || [ -e "/run/netns/${tag}C$sfx" ] || break
	done
	NS_S=${tag}S$sfx NS_C=${tag}C$sfx IF_S=${tag}s$sfx IF_C=${tag}c$sfx
	at_exit netns_pair_down
	if ! err=$(__netns_build "$srv_addrs" "$cli_addrs" 2>&1); then
		printf '%s\n' "$err" | sed 's/^/# /'
		return 1
	fi
}

__netns_build() { # __netns_build "SRV_CIDR..." "CLI_CIDR..."
	local a nodad
	ip netns add "$NS_S" && ip netns add "$NS_C" &&
		ip -n "$NS_S" link add "$IF_S" type veth peer name "$IF_C" netns "$NS_C" || return 1
	for a in $1; do
		nodad=; [[ $a == *:* ]] && nodad=nodad
		ip -n "$NS_S" addr add "$a" dev "$IF_S" $nodad || return 1
	done
	for a in $2; do
		nodad=; [[ $a == *:* ]] && nodad=nodad
		ip -n "$NS_C" addr add "$a" dev "$IF_C" $nodad || return 1
	done
	ip -n "$NS_S" link set lo up && ip -n "$NS_S" link set "$IF_S" up &&
		ip -n "$NS_C" link set lo up && ip -n "$NS_C" link set "$IF_C" up
}

netns_pair_down() {
	[ -n "$NS_S" ] && ip netns del "$NS_S" 2>/dev/null
	[ -n "$NS_C" ] && ip netns del "$NS_C" 2>/dev/null
	NS_S='' NS_C=''
	return 0
}
