/* SPDX-License-Identifier: MIT */
/*
 * stun_wire.h - STUN (RFC 5389) constants as Tailscale uses them, shared by
 * the XDP responder (kern/stun_xdp.bpf.c) and the user-space message
 * functions (user/lib/stun_msg.c). Documentation/stun.md.
 */
#ifndef KDERP_STUN_WIRE_H
#define KDERP_STUN_WIRE_H

#define STUN_HDR_LEN 20
#define STUN_TXID_LEN 12
#define STUN_MAGIC 0x2112a442u
#define STUN_PORT_XOR 0x2112 /* the magic's top 16 bits */
#define STUN_BINDING_REQUEST 0x0001
#define STUN_BINDING_SUCCESS 0x0101
#define STUN_ATTR_MAPPED_ADDRESS 0x0001
#define STUN_ATTR_XOR_MAPPED_ADDRESS 0x0020
#define STUN_ATTR_XOR_MAPPED_ADDRESS_ALT 0x8020
#define STUN_ATTR_SOFTWARE 0x8022
#define STUN_ATTR_FINGERPRINT 0x8028
#define STUN_FINGERPRINT_XOR 0x5354554eu
#define STUN_SOFTWARE "tailnode"
#define STUN_SOFTWARE_LEN 8
#define STUN_FAMILY_IPV4 0x01
#define STUN_FAMILY_IPV6 0x02

#endif /* KDERP_STUN_WIRE_H */
