# SPDX-License-Identifier: MIT
# kderpctl.mk - kderpctl, the state plane's reader (pinned maps) and the
# daemon's control-socket client. Built by `make all`.

KDERPCTL_OBJS := $(OUTPUT)/tools/kderpctl/kderpctl.o

BINS += $(OUTPUT)/kderpctl

$(OUTPUT)/kderpctl: $(KDERPCTL_OBJS)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(LDLIBS_ALL)

-include $(KDERPCTL_OBJS:.o=.d)
