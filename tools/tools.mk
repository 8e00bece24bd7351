# SPDX-License-Identifier: MIT
# tools.mk - user-space tools and the C DERP client library they share.
#
# derpc (tools/derpc.{c,h}): a small blocking DERP client used by the
# selftests (through $(DERPC_OBJS)) and by the load generator.

DERPC_OBJS := $(OUTPUT)/tools/derpc.o

$(OUTPUT)/tools/%.o: tools/%.c | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Itools -c $< -o $@

-include $(DERPC_OBJS:.o=.d)
