# SPDX-License-Identifier: MIT
# fuzz.mk - libFuzzer harnesses (clang -fsanitize=fuzzer) for parsers of
# network input.
#
#   make fuzz              fuzz every harness for FUZZ_TIME seconds each
#   make fuzz FUZZ_TIME=600
#
# Harnesses are also TEST_BINS, so `make test` builds them and the short
# selftests/test_*_fuzz.sh runs replay the seed corpus plus a few seconds of
# fuzzing. Corpora grow in $(OUTPUT)/fuzz/corpus-<name>, crashes land in
# $(OUTPUT)/fuzz/ as crash-<sha1>; seeds live in selftests/fuzz/corpus/<name>/.

FUZZ_CC ?= $(CLANG)
FUZZ_TIME ?= 60
FUZZ_OUT = $(OUTPUT)/fuzz
FUZZ_CFLAGS = -O1 -g -std=gnu11 -D_GNU_SOURCE -Wall -Werror -Iinclude -Iuser \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer

FUZZ_STUN_SRCS := selftests/fuzz/fuzz_stun.c user/stun.c user/util.c user/log.c
FUZZ_DERP_SRCS := selftests/fuzz/fuzz_derp.c user/http.c user/derp.c user/util.c user/log.c
FUZZ_BINS := $(FUZZ_OUT)/fuzz_stun $(FUZZ_OUT)/fuzz_derp

TEST_BINS += $(FUZZ_BINS)

$(FUZZ_OUT)/fuzz_stun: $(FUZZ_STUN_SRCS) user/stun.h user/log.h | $(OUTPUT)
	$(call msg,FUZZ-CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_STUN_SRCS) -o $@ -lz -pthread

$(FUZZ_OUT)/fuzz_derp: $(FUZZ_DERP_SRCS) user/http.h user/derp.h | $(OUTPUT)
	$(call msg,FUZZ-CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_DERP_SRCS) -o $@ -lhttp_parser -ljansson -lsodium -pthread

.PHONY: fuzz
fuzz: $(FUZZ_BINS)
	$(Q)set -e; for f in $(FUZZ_BINS); do \
		name=$${f##*/fuzz_}; \
		mkdir -p $(FUZZ_OUT)/corpus-$$name; \
		cp -n selftests/fuzz/corpus/$$name/* $(FUZZ_OUT)/corpus-$$name/ 2>/dev/null || true; \
		echo "  FUZZ     $$name for $(FUZZ_TIME) s"; \
		if ! $$f -max_total_time=$(FUZZ_TIME) -timeout=5 -rss_limit_mb=1024 \
			-artifact_prefix=$(FUZZ_OUT)/ -print_final_stats=1 \
			$(FUZZ_OUT)/corpus-$$name >$(FUZZ_OUT)/fuzz-$$name.log 2>&1; then \
			tail -n 40 $(FUZZ_OUT)/fuzz-$$name.log; exit 1; \
		fi; \
		grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' \
			$(FUZZ_OUT)/fuzz-$$name.log; \
	done
