# SPDX-License-Identifier: MIT
# selftests.mk - harness.h test programs. Each selftests/test_*.c becomes
# $(OUTPUT)/selftests/test_* and is run by `make test`.
#
# Every test links the shared test library $(ST_LIB) (selftests/lib/*.c: a
# private server, namespaces, bpffs, ..., compiled once into
# libselftest.a), $(LIBDERPC) and $(LIBKDERP) (user/lib/lib.mk); one that
# tests a layer of the daemon in process names it below:
#   ST_OBJS_test_X   objects of user/ it links (ENGINE_OBJS, STATE_OBJS, ...)
#   ST_LIBS_test_X   the system libraries those need
# test_harness links nothing but the harness.

ST_SRCS := $(wildcard selftests/test_*.c)
ST_BINS := $(patsubst selftests/%.c,$(OUTPUT)/selftests/%,$(ST_SRCS))
ST_CFLAGS = -Wno-sign-compare -Iselftests -Iselftests/lib -Iuser -Iuser/lib

ST_LIB_SRCS := $(wildcard selftests/lib/*.c)
ST_LIB_OBJS := $(patsubst selftests/%.c,$(OUTPUT)/selftests/%.o,$(ST_LIB_SRCS))
ST_LIB := $(OUTPUT)/selftests/libselftest.a

ST_OBJS_test_engine := $(ENGINE_OBJS)
ST_LIBS_test_engine := $(ENGINE_LIBS)
ST_OBJS_test_state_api := $(STATE_OBJS) $(ENGINE_OBJS)
ST_LIBS_test_state_api := $(STATE_LIBS) $(ENGINE_LIBS)
ST_LIBS_test_state := $(call pkg_libs,libbpf jansson) -lelf -lz
ST_OBJS_test_stun := $(STUN_OBJS)
ST_OBJS_test_xdp_stun := $(STUN_XDP_OBJS) $(STUN_OBJS)
ST_LIBS_test_xdp_stun := $(STUN_XDP_LIBS)
ST_OBJS_test_xdp_netns := $(STUN_XDP_OBJS) $(STUN_OBJS)
ST_LIBS_test_xdp_netns := $(STUN_XDP_LIBS)
ST_COMMON := $(ST_LIB) $(LIBDERPC) $(LIBKDERP)
ST_COMMON_LIBS := $(LIBDERPC_LIBS) $(LIBKDERP_LIBS)

TEST_BINS += $(ST_BINS)
SELFTESTS += $(ST_BINS)
# Shell selftests: selftests/*.sh named test_*.sh.
SELFTESTS += $(sort $(wildcard selftests/test_*.sh))

$(OUTPUT)/selftests/%.o: selftests/%.c | $(OUTPUT) $(KERN_SKELS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ST_CFLAGS) -c $< -o $@

$(ST_LIB): $(ST_LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(OUTPUT)/selftests/test_harness: $(OUTPUT)/selftests/test_harness.o
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@

$(filter-out %/test_harness,$(ST_BINS)): $(OUTPUT)/selftests/test_%: \
		$(OUTPUT)/selftests/test_%.o $$(ST_OBJS_test_$$*) $(ST_COMMON)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(ST_LIBS_test_$*) $(ST_COMMON_LIBS)

-include $(ST_BINS:%=%.d) $(ST_LIB_OBJS:.o=.d)
