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
FUZZ_CFLAGS = -O1 -g -std=gnu11 -D_GNU_SOURCE -Wall -Werror -Iinclude -Iuser/lib \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer -MMD -MP

# Each harness and the library sources it tests (the link line is the
# dependency list); headers are tracked through the -MMD .d files.
FUZZ_SRCS_stun := user/lib/stun_msg.c
FUZZ_LIBS_stun := -lz
FUZZ_SRCS_derp := user/lib/http.c user/lib/derp_handshake.c user/lib/derp_frame.c \
	user/lib/util.c user/lib/log.c
FUZZ_LIBS_derp := -lhttp_parser -ljansson -lsodium
FUZZ_SRCS_frames := user/lib/derp_frame.c user/lib/util.c
FUZZ_LIBS_frames :=
FUZZ_NAMES := stun derp frames
FUZZ_BINS := $(patsubst %,$(FUZZ_OUT)/fuzz_%,$(FUZZ_NAMES))

TEST_BINS += $(FUZZ_BINS)

# Objects built with the fuzzer's flags, mirrored under $(FUZZ_OUT)/obj/.
fuzz_objs = $(patsubst %.c,$(FUZZ_OUT)/obj/%.o,$(1))
FUZZ_ALL_OBJS := $(call fuzz_objs,$(sort $(foreach n,$(FUZZ_NAMES),selftests/fuzz/fuzz_$(n).c \
	$(FUZZ_SRCS_$(n)))))

$(FUZZ_OUT)/obj/%.o: %.c | $(OUTPUT)
	$(call msg,FUZZ-CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_OUT)/fuzz_%: $(FUZZ_OUT)/obj/selftests/fuzz/fuzz_%.o $$(call fuzz_objs,$$(FUZZ_SRCS_$$*))
	$(call msg,FUZZ-LD,$@)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $^ -o $@ $(FUZZ_LIBS_$*) -pthread

-include $(FUZZ_ALL_OBJS:.o=.d)

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
