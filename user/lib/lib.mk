# SPDX-License-Identifier: MIT
# lib.mk - the user-space library every binary links: codecs (DERP frames
# and handshake, HTTP heads, STUN messages), names, flags, logging and small
# helpers, as $(OUTPUT)/libkderp.a; and the C DERP client (derpc, a TLS
# client with OpenSSL, used by the selftests and kderp-bench, never by
# kderpd) as $(OUTPUT)/libderpc.a.
#
# A static archive hands the linker only the objects a binary uses; the
# *_LIBS variables name the system libraries those objects need.

LIB_SRCS := $(filter-out user/lib/derpc.c,$(wildcard user/lib/*.c))
LIB_OBJS := $(patsubst user/lib/%.c,$(OUTPUT)/user/lib/%.o,$(LIB_SRCS))
LIBKDERP := $(OUTPUT)/libkderp.a
LIBKDERP_LIBS := -lhttp_parser $(call pkg_libs,libsodium jansson) -lz
LIBDERPC := $(OUTPUT)/libderpc.a
LIBDERPC_LIBS := $(call pkg_libs,openssl libsodium) -lhttp_parser

$(OUTPUT)/user/lib/%.o: user/lib/%.c | $(OUTPUT)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Iuser/lib -c $< -o $@

$(LIBKDERP): $(LIB_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(LIBDERPC): $(OUTPUT)/user/lib/derpc.o
	$(call msg,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

-include $(LIB_OBJS:.o=.d) $(OUTPUT)/user/lib/derpc.d
