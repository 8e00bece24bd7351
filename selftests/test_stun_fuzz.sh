#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_stun_fuzz.sh - replay the STUN seed corpus through the libFuzzer
# harness, then fuzz for a few seconds (bounded). `make fuzz` runs longer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"

ALL_TESTS="stun_seed_corpus stun_fuzz"

stun_seed_corpus() { fuzz_seed_corpus stun; }
stun_fuzz() { fuzz_run stun; }

run_all_tests
