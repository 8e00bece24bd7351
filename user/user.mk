# SPDX-License-Identifier: MIT
# user.mk - kderpd, in layers (Documentation/architecture.md):
#
#   ENGINE_OBJS  the relay engine and its core types (pkt, keyset, tls,
#                peers, queue, conn_io, relay, handshake, loop)
#   EDGE_OBJS    web, the state plane, the control socket, STUN, XDP STUN,
#                dropping privileges
#   main.o       the composition root
#
# all on top of $(LIBKDERP) (user/lib/lib.mk). Selftests link the layers
# they test: ENGINE_OBJS alone needs OpenSSL and libsodium, not libbpf.

ENGINE_NAMES := pkt keyset tls peers queue conn_io relay handshake loop
EDGE_NAMES := web state ctl stun stun_xdp privs
ENGINE_OBJS := $(patsubst %,$(OUTPUT)/user/%.o,$(ENGINE_NAMES))
EDGE_OBJS := $(patsubst %,$(OUTPUT)/user/%.o,$(EDGE_NAMES))
STATE_OBJS := $(OUTPUT)/user/state.o
STUN_OBJS := $(OUTPUT)/user/stun.o
STUN_XDP_OBJS := $(OUTPUT)/user/stun_xdp.o
KDERPD_OBJS := $(ENGINE_OBJS) $(EDGE_OBJS) $(OUTPUT)/user/main.o

ENGINE_LIBS := $(call pkg_libs,openssl libsodium)
STATE_LIBS := $(call pkg_libs,libbpf) -lelf -lz
STUN_XDP_LIBS := $(call pkg_libs,libbpf libnl-3.0 libnl-route-3.0) -lelf -lz
KDERPD_LIBS := $(ENGINE_LIBS) $(STUN_XDP_LIBS) $(LIBKDERP_LIBS)

BINS += $(OUTPUT)/kderpd

$(OUTPUT)/user/%.o: user/%.c | $(OUTPUT) $(KERN_SKELS)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -Iuser -Iuser/lib -c $< -o $@

$(OUTPUT)/kderpd: $(KDERPD_OBJS) $(LIBKDERP)
	$(call msg,LD,$@)
	$(Q)$(CC) $(ALL_LDFLAGS) $^ -o $@ $(KDERPD_LIBS)

-include $(KDERPD_OBJS:.o=.d)
