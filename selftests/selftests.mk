# SPDX-License-Identifier: MIT
# selftests.mk - harness.h test programs. Each selftests/test_*.c becomes
# $(OUTPUT)/selftests/test_* and is run by `make test`.
#
# A test links the objects it needs from user/ through $(KDERP_LIB_OBJS)
# (defined in user/user.mk) and, if it needs the C DERP client, $(DERPC_OBJS)
# (defined in tools/tools.mk). Every test links the shared test library
# $(ST_LIB): selftests/lib/*.c (a private server, namespaces, bpffs, ...),
# compiled once into libselftest.a.

ST_SRCS := $(wildcard selftests/test_*.c)
ST_BINS := $(patsubst selftests/%.c,$(OUTPUT)/selftests/%,$(ST_SRCS))
ST_CFLAGS = -Wno-sign-compare -Iselftests -Iselftests/lib -Iuser -Itools

ST_LIB_SRCS := $(wildcard selftests/lib/*.c)
ST_LIB_OBJS := $(patsubst selftests/%.c,$(OUTPUT)/selftests/%.o,$(ST_LIB_SRCS))
ST_LIB := $(OUTPUT)/selftests/libselftest.a

TEST_BINS += $(ST_BINS)
SELFTESTS += $(ST_BINS)
# Shell selftests: selftests/*.sh named test_*.sh.
SELFTESTS += $(sort $(wildcard selftests/test_*.sh))

$(OUTPUT)/selftests/%.o: selftests/%.c | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) $(ST_CFLAGS) -c $< -o $@

$(ST_LIB): $(ST_LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@
	$(Q)$(AR) rcs $@ $^

$(OUTPUT)/selftests/test_%: $(OUTPUT)/selftests/test_%.o $(KDERP_LIB_OBJS) $(DERPC_OBJS) $(ST_LIB)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(LDLIBS_ALL)

-include $(ST_BINS:%=%.d) $(ST_LIB_OBJS:.o=.d)
