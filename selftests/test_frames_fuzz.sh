#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_frames_fuzz.sh - the DERP frame parser (header split, per-type header
# checks, decoding) under libFuzzer: the seed corpus, then a few seconds of
# fuzzing. `make fuzz` runs longer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ktap_header 2
ktap_fuzz frames
ktap_finish
