#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_derp_fuzz.sh - the HTTP head and ClientInfo parsers under libFuzzer:
# the seed corpus, then a few seconds of fuzzing. `make fuzz` runs longer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"

ALL_TESTS="derp_seed_corpus derp_fuzz"

derp_seed_corpus() { fuzz_seed_corpus derp; }
derp_fuzz() { fuzz_run derp; }

run_all_tests
