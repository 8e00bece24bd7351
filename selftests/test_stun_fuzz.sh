#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# test_stun_fuzz.sh - replay the STUN seed corpus through the libFuzzer
# harness, then fuzz for a few seconds (bounded). `make fuzz` runs longer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/lib.sh"
ktap_header 2
ktap_fuzz stun
ktap_finish
