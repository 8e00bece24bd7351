# SPDX-License-Identifier: MIT
# bench.mk - kderp-bench (DERP load generator), the ceiling relay and
# `make bench` (kderpd vs Go derper vs ceiling, writes
# Documentation/performance.md and $(OUTPUT)/bench/results.json).
#
#   make bench            full run (~15-20 min)
#   make bench QUICK=1    short run (< 3 min)
#   make bench-report     rewrite performance.md from the last run's JSON

BENCH_SRCS := tools/bench/kderp-bench.c tools/bench/bench-link.c tools/bench/bench-stun.c
BENCH_OBJS := $(patsubst tools/bench/%.c,$(OUTPUT)/bench/%.o,$(BENCH_SRCS))
# the STUN mode builds and checks packets with the library's STUN messages
BENCH_LIBS := $(LIBDERPC_LIBS) $(LIBKDERP_LIBS) $(call pkg_libs,jansson) -lm
CEILING_OBJS := $(OUTPUT)/bench/ceiling-relay.o
CEILING_LIBS := $(call pkg_libs,libsodium)

BINS += $(OUTPUT)/kderp-bench $(OUTPUT)/bench/ceiling-relay

$(OUTPUT)/bench/%.o: tools/bench/%.c | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Itools/bench -Iuser/lib -c $< -o $@

$(OUTPUT)/kderp-bench: $(BENCH_OBJS) $(LIBDERPC) $(LIBKDERP)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(BENCH_LIBS)

$(OUTPUT)/bench/ceiling-relay: $(CEILING_OBJS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(CEILING_LIBS)

# Go derper, pinned; built into the build directory, never installed.
DERPER_VERSION ?= v1.90.6
BENCH_DERPER := $(OUTPUT)/bench/gobin/derper

$(BENCH_DERPER):
	$(call msg,GO,derper@$(DERPER_VERSION))
	$(Q)mkdir -p $(@D)
	$(Q)GOTOOLCHAIN=local GOBIN=$(abspath $(@D)) GOFLAGS=-mod=mod \
		$(GO) install tailscale.com/cmd/derper@$(DERPER_VERSION)

QUICK ?= 0
# kderpd worker threads (-1: 1 when pinned, else one per CPU); CPU pinning
# (server on CPU 0, load on the rest): 1 = pin, 0 = do not, -1 = measure both
# at the start and keep the better.
BENCH_WORKERS ?= -1
BENCH_PIN ?= -1
# subset of relay,latency,connections,stun,sweep (empty = all), e.g. BENCH_ONLY=stun
BENCH_ONLY ?=
.PHONY: bench
bench: deps
	$(Q)$(MAKE) --no-print-directory $(OUTPUT)/kderpd $(OUTPUT)/kderp-bench \
		$(OUTPUT)/bench/ceiling-relay $(BENCH_DERPER)
	$(Q)DERPER_VERSION=$(DERPER_VERSION) python3 tools/bench/run-bench.py \
		--output $(abspath $(OUTPUT)) --derper $(abspath $(BENCH_DERPER)) \
		--quick $(QUICK) --workers $(BENCH_WORKERS) --pin $(BENCH_PIN) \
		--only "$(BENCH_ONLY)" --doc Documentation/performance.md

.PHONY: bench-report
bench-report:
	$(Q)DERPER_VERSION=$(DERPER_VERSION) python3 tools/bench/run-bench.py --report-only \
		--output $(abspath $(OUTPUT)) --derper $(abspath $(BENCH_DERPER)) \
		--doc Documentation/performance.md

-include $(BENCH_OBJS:.o=.d) $(CEILING_OBJS:.o=.d)
