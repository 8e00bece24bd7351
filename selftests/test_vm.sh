#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_vm.sh - the guest selftests under Debian's 6.1 kernel in qemu.
#
# Boots the kernels in $KERNELS (default 6.1) with selftests/vm/vm.sh and
# reports every guest test as one KTAP line (kernel/test), the guest's own
# output nested above it. SKIPs when qemu is not installed. `make vm-test`
# runs this same script; see Documentation/testing.md.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/vm/vm.sh" ${KERNELS:-6.1}
