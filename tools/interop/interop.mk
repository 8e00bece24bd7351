# SPDX-License-Identifier: MIT
# interop.mk - kderp-interop: Tailscale's own Go DERP client (derphttp)
# driven against a DERP server, run by selftests/test_interop.sh.
#
# Built for tests only (TEST_BINS), so plain `make` never needs Go. Without a
# Go new enough for tools/interop/go.mod the rule writes
# $(OUTPUT)/kderp-interop.skip instead and the test skips with that reason.

INTEROP_BIN := $(OUTPUT)/kderp-interop
INTEROP_SRCS := $(wildcard tools/interop/*.go) tools/interop/go.mod tools/interop/go.sum \
	tools/interop/build.sh

TEST_BINS += $(INTEROP_BIN)

$(INTEROP_BIN): $(INTEROP_SRCS) | $(OUTPUT)
	$(call msg,GO,$@)
	$(Q)tools/interop/build.sh "$(GO)" "$(abspath $@)"

.PHONY: interop
interop: $(INTEROP_BIN)
