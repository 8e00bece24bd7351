# SPDX-License-Identifier: MIT
# user.mk - kderpd. Every user/*.c is part of the daemon; user/main.c holds
# main(), everything else is also linked into selftests as KDERP_LIB_OBJS.

USER_SRCS := $(wildcard user/*.c)
USER_OBJS := $(patsubst user/%.c,$(OUTPUT)/user/%.o,$(USER_SRCS))
KDERP_LIB_OBJS := $(filter-out $(OUTPUT)/user/main.o,$(USER_OBJS))

BINS += $(OUTPUT)/kderpd

$(OUTPUT)/user/%.o: user/%.c | $(OUTPUT) $(KERN_SKELS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Iuser -c $< -o $@

$(OUTPUT)/kderpd: $(USER_OBJS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(LDLIBS_ALL)

-include $(USER_OBJS:.o=.d)
