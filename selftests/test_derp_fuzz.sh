#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_derp_fuzz.sh - the HTTP head and ClientInfo parsers under libFuzzer:
# the seed corpus, then a few seconds of fuzzing. `make fuzz` runs longer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/lib.sh"
ktap_header 2
ktap_fuzz derp
ktap_finish
