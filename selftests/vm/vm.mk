# SPDX-License-Identifier: MIT
# vm.mk - kernel-behaviour selftests that need a real guest kernel.
#
# selftests/vm/*.c are harness.h programs built into $(OUTPUT)/vm/. They run
# on the host with `make test` (and SKIP where the host kernel lacks what they
# need, e.g. CONFIG_TLS) and inside Debian kernels under qemu with
# `make vm-test`, which boots every kernel in KERNELS and runs the guest
# tests listed in selftests/vm/guest-tests (see selftests/vm/vm.sh).
#
#   make vm-test                     Debian 6.1 (newest ABI apt knows)
#   make vm-test KERNELS="6.1 6.12"  several kernels
#   make vm-test VM_TESTS=ktls_openssl
#   make vm-shell                    a shell in the guest on this terminal

# Downloaded kernels are shared by the normal and the SAN=1 build.
export VM_KERNEL_CACHE ?= $(abspath $(patsubst %/san,%,$(OUTPUT)))/vm/kernels

VM_SRCS := $(wildcard selftests/vm/*.c)
VM_BINS := $(patsubst selftests/vm/%.c,$(OUTPUT)/vm/%,$(VM_SRCS))
KERNELS ?= 6.1

TEST_BINS += $(VM_BINS)
SELFTESTS += $(VM_BINS)

$(OUTPUT)/vm/%.o: selftests/vm/%.c | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Wno-sign-compare -Iselftests -Iselftests/lib -Iuser/lib -c $< -o $@

# Every guest test links the shared test library (selftests/selftests.mk);
# OpenSSL for the kTLS cases, libbpf for the sockmap ones; ktls_badinput
# drives kderpd with the C DERP client (user/lib/derpc).
VM_LIBS := $(LIBDERPC_LIBS) $(LIBKDERP_LIBS) $(call pkg_libs,libbpf openssl) -lelf -lz

$(VM_BINS): $(OUTPUT)/vm/%: $(OUTPUT)/vm/%.o $(ST_LIB) $(LIBDERPC) $(LIBKDERP)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(VM_LIBS)

-include $(VM_BINS:%=%.d)

.PHONY: vm-test vm-shell
vm-test: deps
	$(Q)$(MAKE) --no-print-directory all $(TEST_BINS)
	$(Q)KERNELS="$(KERNELS)" selftests/run_tests.sh selftests/test_vm.sh

vm-shell: deps
	$(Q)$(MAKE) --no-print-directory all $(TEST_BINS)
	$(Q)VM_SHELL=1 selftests/vm/vm.sh $(firstword $(KERNELS))
