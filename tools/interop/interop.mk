# SPDX-License-Identifier: MIT
# interop.mk - Tailscale's own Go DERP client code driven against a DERP
# server by selftests/test_interop.sh: kderp-interop (our cases, on
# tailscale.com/derp/derphttp) and derpprobe (Tailscale's prober, at the
# version tools/interop/go.mod pins).
#
# Built for tests only (TEST_BINS), so plain `make` never needs Go. Without a
# Go new enough for tools/interop/go.mod the rules write BINARY.skip instead
# and the test skips with that reason.

INTEROP_BIN := $(OUTPUT)/kderp-interop
INTEROP_PROBE := $(OUTPUT)/derpprobe
INTEROP_DEPS := tools/interop/go.mod tools/interop/go.sum tools/interop/build.sh

TEST_BINS += $(INTEROP_BIN) $(INTEROP_PROBE)

$(INTEROP_BIN): $(wildcard tools/interop/*.go) $(INTEROP_DEPS) | $(OUTPUT)
	$(call msg,GO,$@)
	$(Q)tools/interop/build.sh "$(GO)" "$(abspath $@)"

$(INTEROP_PROBE): $(INTEROP_DEPS) | $(OUTPUT)
	$(call msg,GO,$@)
	$(Q)tools/interop/build.sh "$(GO)" "$(abspath $@)" tailscale.com/cmd/derpprobe

.PHONY: interop
interop: $(INTEROP_BIN) $(INTEROP_PROBE)
