#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_frames_fuzz.sh - the DERP frame parser (header split, per-type header
# checks, decoding) under libFuzzer: the seed corpus, then a few seconds of
# fuzzing. `make fuzz` runs longer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=selftests/lib/lib.sh
. "$here/lib/lib.sh"

ALL_TESTS="frames_seed_corpus frames_fuzz"

frames_seed_corpus() { fuzz_seed_corpus frames; }
frames_fuzz() { fuzz_run frames; }

run_all_tests
