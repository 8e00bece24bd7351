# SPDX-License-Identifier: MIT
# kern.mk - BPF programs. Every kern/<unit>.bpf.c is compiled with clang,
# linked with `bpftool gen object` and turned into a libbpf skeleton:
#
#   kern/<unit>.bpf.c -> $(OUTPUT)/kern/<unit>.tmp.bpf.o   (clang -target bpf)
#                     -> $(OUTPUT)/kern/<unit>.bpf.o       (bpftool gen object)
#                     -> $(OUTPUT)/kern/<unit>.skel.h      (bpftool gen skeleton,
#                                                           struct <unit>_bpf)
#
# KERN_SKELS lists the skeleton headers; user objects take them as order-only
# prerequisites and find them with -I$(OUTPUT)/kern. Only UAPI headers are
# used (no vmlinux.h); the multiarch directory provides <asm/...>.

KERN_SRCS := $(wildcard kern/*.bpf.c)
KERN_UNITS := $(patsubst kern/%.bpf.c,%,$(KERN_SRCS))
KERN_OBJS := $(patsubst %,$(OUTPUT)/kern/%.bpf.o,$(KERN_UNITS))
KERN_SKELS := $(patsubst %,$(OUTPUT)/kern/%.skel.h,$(KERN_UNITS))

BPF_MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
BPF_SYS_INCLUDES := $(if $(BPF_MULTIARCH),-idirafter /usr/include/$(BPF_MULTIARCH))
BPF_CFLAGS := -O2 -g -target bpf -mcpu=v3 -Wall -Werror -Iinclude -Ikern $(BPF_SYS_INCLUDES)

BINS += $(KERN_SKELS)

$(OUTPUT)/kern/%.tmp.bpf.o: kern/%.bpf.c | $(OUTPUT)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@

$(OUTPUT)/kern/%.bpf.o: $(OUTPUT)/kern/%.tmp.bpf.o
	$(call msg,GEN-OBJ,$@)
	$(Q)$(BPFTOOL) gen object $@ $<

$(OUTPUT)/kern/%.skel.h: $(OUTPUT)/kern/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@.tmp
	$(Q)mv $@.tmp $@

-include $(patsubst %,$(OUTPUT)/kern/%.tmp.bpf.d,$(KERN_UNITS))
