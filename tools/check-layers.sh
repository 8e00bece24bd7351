#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# check-layers.sh - structural rules of user/, run by `make check`.
# Usage: tools/check-layers.sh [--graph] [ROOT]   (ROOT: default this repo)
#   --graph  print the module include graph, "module [layer] -> deps" sorted,
#            and exit 0 without checking anything.
# A module is a path of user/ or user/lib/ without extension (user/peers is
# user/peers.c + .h); it depends on module B when one of its files includes
# "X.h" and X.h resolves (own directory, user/, user/lib/) to B's header.
# Exit 1, naming the files, unless:
#  1. the module include graph has no cycle;
#  2. no module includes one of a higher layer (LAYERS; user/lib/ is L0) and
#     every module of user/ is in LAYERS;
#  3. under user/: <openssl/...> only in OPENSSL (kderpd's is user/tls.c;
#     the C client user/lib/derpc, never linked into kderpd, has its own),
#     X.skel.h only in user/X.c
#     (named after kern/X.bpf.c), PRIVATE headers only from the layers given;
#  4. each selftests/test_*.c (without .c) and test_*.sh is named in
#     Documentation/testing.md.
set -u
export LC_ALL=C

# The layer table: a layer number, then its modules. Edit freely.
LAYERS='
1 user/pkt user/conn user/keyset user/worker user/server user/tls user/config user/stats
2 user/peers user/queue user/handshake user/relay user/conn_io user/loop
3 user/web user/state user/ctl user/stun user/stun_xdp user/privs
4 user/main
'
# The files that may include OpenSSL.
OPENSSL='user/tls.c user/lib/derpc.c user/lib/derpc.h'
# Modules whose headers only these layers may include: module:layer,layer.
# Edges (L3) reach the engine only through server.h, never its L2 headers.
PRIVATE='user/conn:1,2 user/worker:1,2 user/peers:2 user/queue:2 user/conn_io:2 user/relay:2 user/handshake:2'

graph=0
root=$(dirname "$0")/..
for a in "$@"; do
	case $a in
	--graph) graph=1 ;;
	-h | --help) sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) root=$a ;;
	esac
done
cd "$root" || exit 2
shopt -s nullglob

declare -A layer=() deps=() where=() R=()
errs=()
err() { errs+=("$*"); }
lay() { echo "${layer[$1]-?}"; }
while read -r n mods; do for m in $mods; do layer[$m]=$n; done; done <<<"$LAYERS"

modules=()
for f in user/*.[ch] user/lib/*.[ch]; do
	m=${f%.*}
	[[ $f == user/lib/* ]] && layer[$m]=0
	[[ " ${modules[*]} " == *" $m "* ]] || modules+=("$m")
done

resolve() { # resolve FILE HEADER: print the module HEADER is, if any
	local d p
	for d in "$(dirname "$1")" user user/lib; do
		p=$d/$2
		[ -f "$p" ] || continue
		[[ $p == */.* ]] && p=$(realpath -m --relative-to=. "$p")
		[[ $p =~ ^user/(lib/)?[^/]+\.h$ ]] && echo "${p%.h}"
		return
	done
}

# Every #include of every C file under user/: FILE:LINE:<h> or FILE:LINE:"h".
while IFS=: read -r f ln inc; do
	h=${inc:1:${#inc}-2}
	if [[ $h == openssl/* && " $OPENSSL " != *" $f "* ]]; then
		err "$f:$ln: includes <$h>; only $OPENSSL may include OpenSSL"
	fi
	if [[ $h == *.skel.h ]]; then
		x=$(basename "$h" .skel.h)
		[ "$f" = "user/$x.c" ] ||
			err "$f:$ln: includes $h; only user/$x.c (named after kern/$x.bpf.c) may"
	fi
	[[ $inc == \"* && $f =~ ^user/(lib/)?[^/]+$ ]] || continue
	a=${f%.*} b=$(resolve "$f" "$h")
	[[ -n $b && $a != "$b" ]] || continue
	[[ " ${deps[$a]-} " == *" $b "* ]] || deps[$a]="${deps[$a]-} $b"
	where[$a $b]=${where[$a $b]-$f:$ln}
done < <(find user -name '*.[ch]' -print0 | sort -z | xargs -0r grep -HnE '^\s*#\s*include\s*[<"]' |
	sed -E 's/^([^:]*:[0-9]+):\s*#\s*include\s*([<"][^>"]*[>"]).*/\1:\2/')

if [ "$graph" = 1 ]; then
	for m in "${modules[@]}"; do
		echo "$m [L$(lay "$m")] ->$(tr ' ' '\n' <<<"${deps[$m]-}" | sort | tr '\n' ' ' | sed 's/ *$//')"
	done | sort
	exit 0
fi

# Rule 2: layers.
for a in "${modules[@]}"; do
	[ -n "${layer[$a]-}" ] || err "$a ($(echo "$a".[ch])): not in the layer table; add it to the layer table in tools/check-layers.sh"
	for b in ${deps[$a]-}; do
		la=$(lay "$a") lb=$(lay "$b")
		[ "$la" = "?" ] && continue # reported above
		if [ "$lb" != "?" ] && [ "$la" -lt "$lb" ]; then
			err "${where[$a $b]}: $a (L$la) includes $b (L$lb), a higher layer"
		fi
		for p in $PRIVATE; do
			[ "${p%%:*}" = "$b" ] && [[ ,${p#*:}, != *,"$la",* ]] &&
				err "${where[$a $b]}: $a (L$la) includes $b.h; only layers ${p#*:} may"
		done
	done
done

# Rule 1: cycles. R[a b] when b is reachable from a; a cycle is a strongly
# connected component, {b : R[a b] and R[b a]}.
reach() { # reach FROM NODE: R[FROM x] for every x NODE leads to
	local d
	for d in ${deps[$2]-}; do
		[ -n "${R[$1 $d]-}" ] || { R[$1 $d]=1 && reach "$1" "$d"; }
	done
}
declare -A seen=()
for a in "${modules[@]}"; do reach "$a" "$a"; done
for a in "${modules[@]}"; do
	[[ -n ${R[$a $a]-} && -z ${seen[$a]-} ]] || continue
	scc=() edges=()
	for b in "${modules[@]}"; do
		[ -n "${R[$a $b]-}" ] && [ -n "${R[$b $a]-}" ] && scc+=("$b") && seen[$b]=1
	done
	for b in "${scc[@]}"; do
		for c in ${deps[$b]-}; do
			[[ " ${scc[*]} " == *" $c "* ]] && edges+=("${where[$b $c]} -> $c")
		done
	done
	err "include cycle among ${scc[*]}: $(printf '%s; ' "${edges[@]}" | sed 's/; $//')"
done

# Rule 4: every selftest named in Documentation/testing.md.
for t in selftests/test_*.c selftests/test_*.sh; do
	n=$(basename "$t" .c)
	# test_foo must not match test_foo.sh, nor test_foo_bar.
	grep -qP "(?<!\w)\Q$n\E(?!\w|\.sh\b)" Documentation/testing.md 2>/dev/null ||
		err "$t: not named in Documentation/testing.md (add $n to its table)"
done

[ ${#errs[@]} -eq 0 ] && exit 0
printf 'check-layers: %s\n' "${errs[@]}" >&2
echo "check-layers: ${#errs[@]} problem(s); the rules are at the top of tools/check-layers.sh" >&2
exit 1
