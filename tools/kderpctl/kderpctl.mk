# SPDX-License-Identifier: MIT
# kderpctl.mk - kderpctl, the state plane's reader (pinned maps) and the
# daemon's control-socket client. Built by `make all`.

KDERPCTL_OBJS := $(OUTPUT)/tools/kderpctl/kderpctl.o

BINS += $(OUTPUT)/kderpctl

KDERPCTL_LIBS := $(call pkg_libs,libbpf jansson) -lelf -lz

$(OUTPUT)/tools/kderpctl/%.o: tools/kderpctl/%.c | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Iuser/lib -c $< -o $@

$(OUTPUT)/kderpctl: $(KDERPCTL_OBJS) $(LIBKDERP)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(KDERPCTL_LIBS)

-include $(KDERPCTL_OBJS:.o=.d)
