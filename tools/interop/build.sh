#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# build.sh GO OUT [PACKAGE] - build a static (CGO_ENABLED=0) binary from the
# module in tools/interop into OUT: kderp-interop (PACKAGE ".", the default)
# or a tool the module pins, such as tailscale.com/cmd/derpprobe.
#
# A missing or too old Go, or Go modules that cannot be fetched, are not
# build errors: OUT is removed, OUT.skip gets the reason (test_interop.sh
# prints it as SKIP) and the script exits 0. A compile error fails.
# GOPATH, GOCACHE and GOMODCACHE keep Go's defaults, outside the repo.
set -eu

go=$1
out=$2
pkg=${3:-.}
src=$(cd "$(dirname "$0")" && pwd)
skip="$out.skip"

skip() {
	rm -f "$out"
	echo "$1" >"$skip"
	echo "  SKIP     $(basename "$out"): $1" >&2
	exit 0
}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

# The first of GO and the usual install location that is new enough.
need=$(sed -n 's/^go //p' "$src/go.mod")
why=
for cand in "$go" /usr/local/go/bin/go; do
	if ! command -v "$cand" >/dev/null 2>&1; then
		why=${why:-"no Go toolchain ($cand not found)"}
		continue
	fi
	have=$("$cand" env GOVERSION 2>/dev/null) || continue
	have=${have#go}
	if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ]; then
		go=$cand
		why=
		break
	fi
	why="Go $have ($cand) is older than $need (tools/interop/go.mod)"
done
[ -z "$why" ] || skip "$why"
(cd "$src" && "$go" mod download) >/dev/null 2>&1 ||
	skip "cannot download the Go modules in tools/interop/go.mod (offline?)"

rm -f "$skip"
cd "$src"
"$go" build -trimpath -ldflags=-s -o "$out.tmp" "$pkg"
mv "$out.tmp" "$out"
