#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_check_layers.sh - tools/check-layers.sh catches what it should.
#
# A small fixture tree (modules named as in the script's layer table) keeps
# every rule; each variant breaks exactly one, and the checker must fail with
# exactly one problem naming it. --graph prints the fixture's graph, also for
# a broken tree, and works on this repository.
set -u
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=selftests/lib/lib.sh
. selftests/lib/lib.sh

ALL_TESTS="base_passes cycle layer_up not_in_table openssl skel_elsewhere private_hdr
	engine_hdr undocumented doc_prefix doc_c_vs_sh graph_of_fixture graph_of_this_tree"

chk=$PWD/tools/check-layers.sh
tmp=$(mktemp -d)
at_exit rm -rf "$tmp"

put() { # put FILE LINE...: write FILE (under $tmp/base) with one line each
	local f=$tmp/base/$1
	shift
	mkdir -p "$(dirname "$f")"
	printf '%s\n' "$@" >"$f"
}
put include/abi.h '/* include/, not a module */'
put kern/state.bpf.c '/* state.skel.h comes from here */'
put user/lib/util.h '#include "abi.h"'
put user/lib/util.c '#include "util.h"' '#include <stdio.h>'
put user/conn.h '#include "util.h"'
put user/conn.c '#include "conn.h"'
put user/worker.h '/* L1 */'
put user/worker.c '#include "worker.h"' '#include "conn.h"'
put user/tls.h '/* L1 */'
put user/tls.c '#include "tls.h"' '#include <openssl/ssl.h>'
put user/peers.h '#include "conn.h"'
put user/peers.c '#include "peers.h"' '#include "worker.h"' '#include "lib/util.h"'
put user/state.h '/* L3 */'
put user/server.h '/* L1: the engine as edges see it */'
put user/state.c '#include "state.h"' '#include "server.h"' '#include "state.skel.h"'
put user/web.h '/* L3 */'
put user/web.c '#include "web.h"' '#include "tls.h"' '#include "state.h"'
put user/main.c '#include "web.h"' '#include "state.h"' '#include "abi.h"'
put tools/t.c '#include <openssl/ssl.h>' '#include "../user/conn.h"'
put selftests/test_foo.c '#include <openssl/ssl.h>' '#include "state.skel.h"'
put selftests/test_bar.sh '#!/bin/sh'
# shellcheck disable=SC2016 # backquotes, as in the real table
put Documentation/testing.md '| `test_foo`, `test_bar.sh` | the fixture |'

variant() { # variant NAME FILE LINE: base plus LINE appended to FILE
	cp -r "$tmp/base" "$tmp/$1"
	mkdir -p "$(dirname "$tmp/$1/$2")"
	echo "$3" >>"$tmp/$1/$2"
}
variant cycle user/conn.c '#include "worker.h"'
variant layer_up user/lib/util.c '#include "tls.h"'
variant not_in_table user/extra.c '#include "conn.h"'
variant openssl user/peers.h '#include <openssl/evp.h>'
variant skel_elsewhere user/web.c '#include "state.skel.h"'
variant private_hdr user/web.c '#include "conn.h"'
variant engine_hdr user/state.c '#include "peers.h"'
variant undocumented selftests/test_baz.sh '#!/bin/sh'
variant doc_prefix selftests/test_fo.c '/* test_foo is named, not test_fo */'
variant doc_c_vs_sh selftests/test_bar.c '/* test_bar.sh is named, not test_bar */'

# expect_fail NAME TEXT: the variant NAME fails with one problem, mentioning TEXT.
expect_fail() {
	local out rc
	out=$("$chk" "$tmp/$1" 2>&1)
	rc=$?
	[ "$rc" -eq 1 ] && grep -qF -- "$2" <<<"$out" &&
		grep -qx 'check-layers: 1 problem(s).*' <<<"$out" && return 0
	printf '%s\n' "$out" | sed 's/^/# /'
	fail "exit $rc, wanted 1 and one problem with: $2"
}

base_passes() {
	local out rc
	out=$("$chk" "$tmp/base" 2>&1)
	rc=$?
	[ "$rc" -eq 0 ] && return 0
	printf '%s\n' "$out" | sed 's/^/# /'
	fail "exit $rc"
}

cycle() { expect_fail cycle 'include cycle among user/conn user/worker: user/conn.c:2 -> user/worker; user/worker.c:2 -> user/conn'; }
layer_up() { expect_fail layer_up 'user/lib/util.c:3: user/lib/util (L0) includes user/tls (L1), a higher layer'; }
not_in_table() { expect_fail not_in_table 'user/extra (user/extra.c): not in the layer table; add it to the layer table in tools/check-layers.sh'; }
openssl() { expect_fail openssl 'user/peers.h:2: includes <openssl/evp.h>; only user/tls.c user/lib/derpc.c user/lib/derpc.h may include OpenSSL'; }
skel_elsewhere() { expect_fail skel_elsewhere 'user/web.c:4: includes state.skel.h; only user/state.c (named after kern/state.bpf.c) may'; }
private_hdr() { expect_fail private_hdr 'user/web.c:4: user/web (L3) includes user/conn.h; only layers 1,2 may'; }
engine_hdr() { expect_fail engine_hdr 'user/state.c:4: user/state (L3) includes user/peers.h; only layers 2 may'; }
undocumented() { expect_fail undocumented 'selftests/test_baz.sh: not named in Documentation/testing.md'; }
doc_prefix() { expect_fail doc_prefix 'selftests/test_fo.c: not named in Documentation/testing.md'; }
doc_c_vs_sh() { expect_fail doc_c_vs_sh 'selftests/test_bar.c: not named in Documentation/testing.md'; }

# --graph checks nothing: it prints the cycle variant's graph and exits 0.
graph_of_fixture() {
	local want got rc
	want='user/conn [L1] -> user/lib/util user/worker
user/lib/util [L0] ->
user/main [L4] -> user/state user/web
user/peers [L2] -> user/conn user/lib/util user/worker
user/server [L1] ->
user/state [L3] -> user/server
user/tls [L1] ->
user/web [L3] -> user/state user/tls
user/worker [L1] -> user/conn'
	got=$("$chk" --graph "$tmp/cycle" 2>&1)
	rc=$?
	[ "$rc" -eq 0 ] && [ "$got" = "$want" ] && return 0
	diff <(echo "$want") <(echo "$got") | sed 's/^/# /'
	fail "exit $rc"
}

graph_of_this_tree() {
	local got rc
	got=$("$chk" --graph 2>&1)
	rc=$?
	[ "$rc" -eq 0 ] && grep -q '^user/main \[L4\] -> ' <<<"$got" || fail "exit $rc"
}

run_all_tests
