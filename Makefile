# SPDX-License-Identifier: MIT
#
# kderp - kernel-assisted DERP relay.
#
#   make            build everything into $(OUTPUT)
#   make run        install what is missing, build, start kderpd on 127.0.0.1:3340
#   make test       install what is missing, build, run every selftest (KTAP)
#   make check      clang-format check, cppcheck, layer rules, -Werror build
#   make SAN=1 test the same tests under ASan + UBSan
#   make fuzz       libFuzzer on the network parsers (FUZZ_TIME=60 s each)
#   make bench      kderpd against Go derper, writes Documentation/performance.md
#   make vm-test    kernel tests in qemu guests (KERNELS="6.1 6.12")
#   make help       list the targets
#
# Each area keeps its rules in a fragment included below; fragments only
# append to BINS (things `all` builds) and SELFTESTS (things `test` runs).
# Every binary's link line names what it uses: libkderp.a, the layers of
# user/ it needs, and their *_LIBS (no global library list).

.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
.SECONDARY:
# Per-binary link sets are looked up by stem ($$(ST_OBJS_test_$$*)).
.SECONDEXPANSION:

V ?= 0
ifeq ($(V),1)
Q :=
msg =
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

SAN ?= 0
ifeq ($(SAN),1)
OUTPUT ?= .output/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# A small quarantine keeps the daemon's RSS meaningful for the memory-bound
# tests; leaks make a process exit non-zero (LeakSanitizer).
export ASAN_OPTIONS ?= quarantine_size_mb=4:detect_leaks=1:exitcode=23
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
else
OUTPUT ?= .output
SANFLAGS :=
endif

CC ?= gcc
CLANG ?= clang
BPFTOOL ?= bpftool
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

PKGS := libbpf libsodium openssl jansson libnl-3.0 libnl-route-3.0
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# $(call pkg_libs,PACKAGES): the -l flags of some pkg-config packages.
pkg_libs = $(shell pkg-config --libs $(1) 2>/dev/null)

VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
WARNFLAGS := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-unused-parameter \
	-Wno-missing-field-initializers
CFLAGS ?= -O2 -g
ALL_CFLAGS = $(CFLAGS) $(WARNFLAGS) $(SANFLAGS) -std=gnu11 -D_GNU_SOURCE -pthread -DKDERP_VERSION='"$(VERSION)"' \
	-Iinclude -I$(OUTPUT) -I$(OUTPUT)/kern $(PKG_CFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS) -pthread
AR ?= ar

BINS :=
SELFTESTS :=

$(OUTPUT):
	$(Q)mkdir -p $@

include kern/kern.mk
include user/lib/lib.mk
include user/user.mk
include tools/kderpctl/kderpctl.mk
include tools/bench/bench.mk
include tools/interop/interop.mk
include selftests/selftests.mk
include selftests/vm/vm.mk
include selftests/fuzz/fuzz.mk

.PHONY: all deps run test check format help clean
all: $(BINS)

deps:
	$(Q)tools/deps.sh

RUN_ADDR ?= 127.0.0.1:3340
RUN_STATE ?= .state
run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)mkdir -p $(RUN_STATE)
	@echo "kderpd: plain-HTTP DERP on http://$(RUN_ADDR)/derp (Ctrl-C stops it)"
	$(Q)exec $(OUTPUT)/kderpd -a $(RUN_ADDR) -c $(RUN_STATE)/kderpd.key --stun=false $(RUN_ARGS)

test: deps
	$(Q)$(MAKE) --no-print-directory all $(TEST_BINS)
	$(Q)selftests/run_tests.sh $(SELFTESTS)

C_SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './.output/*')

format:
	$(Q)clang-format -i $(C_SOURCES)

# harness.h's ASSERT_*/EXPECT_* hide a call's side effects from cppcheck (a
# statement expression in a for-init): what a call inside one fills in looks
# uninitialised or NULL afterwards. False positives only, so off in selftests/.
CPPCHECK_ST := $(foreach id,uninitvar ctuuninitvar nullPointer,'--suppress=$(id):selftests/*')

check: deps
	$(call msg,FORMAT,check)
	$(Q)clang-format --dry-run --Werror $(C_SOURCES)
	$(call msg,CPPCHECK,user tools selftests)
	$(Q)cppcheck --quiet --error-exitcode=1 --inline-suppr --std=c11 \
		--enable=warning,portability --suppress=missingIncludeSystem --suppress=unknownMacro \
		$(CPPCHECK_ST) -Iinclude user tools selftests
	$(call msg,LAYERS,user)
	$(Q)tools/check-layers.sh
	$(Q)$(MAKE) --no-print-directory all $(TEST_BINS)
	$(call msg,SYMBOLS,kderpd)
	$(Q)tools/check-symbols.py $(KDERPD_OBJS) $(LIB_OBJS)

help:
	@sed -n 's/^#   //p' Makefile

clean:
	$(Q)rm -rf .output
export KDERP_OUTPUT = $(abspath $(OUTPUT))
