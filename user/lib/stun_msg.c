// SPDX-License-Identifier: MIT
/*
 * stun_msg.c - STUN messages as Tailscale uses them (stun_msg.h): pure
 * functions, no I/O, no allocation, safe on any input (they are fuzzed).
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include <zlib.h>

#include "kderp_bytes.h"
#include "stun_msg.h"

static uint32_t stun_fingerprint(const uint8_t *p, size_t len)
{
	return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)len) ^ STUN_FINGERPRINT_XOR;
}

static void put_header(uint8_t *out, uint16_t type, uint16_t len, const uint8_t *txid)
{
	put_be16(out, type);
	put_be16(out + 2, len);
	put_be32(out + 4, KDERP_STUN_MAGIC);
	memcpy(out + 8, txid, KDERP_STUN_TXID_LEN);
}

/*
 * Walk the attributes after the header: each is type, length, value padded
 * to 4 bytes, running to the end of the datagram (the header's length field
 * is not consulted, as in derper). Returns 1 with the next attribute, 0 at
 * the end, -EINVAL if one does not fit.
 */
static int next_attr(const uint8_t *pkt, size_t len, size_t *off, uint16_t *type, uint16_t *alen,
		     const uint8_t **val)
{
	size_t padded;

	if (*off >= len)
		return 0;
	if (len - *off < 4)
		return -EINVAL;
	*type = get_be16(pkt + *off);
	*alen = get_be16(pkt + *off + 2);
	padded = ((size_t)*alen + 3) & ~(size_t)3;
	if (padded > len - *off - 4)
		return -EINVAL;
	*val = pkt + *off + 4;
	*off += 4 + padded;
	return 1;
}

int kderp_stun_parse_request(const uint8_t *pkt, size_t len, uint8_t txid[KDERP_STUN_TXID_LEN])
{
	bool software_ok = false;
	uint16_t last_type = 0, type = 0, alen = 0;
	const uint8_t *val = NULL;
	uint32_t got_fp = 0;
	size_t off;
	int r;

	if (!pkt || len < KDERP_STUN_HDR_LEN)
		return -EINVAL;
	/* top two bits zero, magic cookie: "is this STUN at all" */
	if ((pkt[0] & 0xc0) || get_be32(pkt + 4) != KDERP_STUN_MAGIC)
		return -EINVAL;
	if (get_be16(pkt) != STUN_BINDING_REQUEST)
		return -EINVAL;

	for (off = KDERP_STUN_HDR_LEN; (r = next_attr(pkt, len, &off, &type, &alen, &val)) > 0;) {
		last_type = type;
		if (type == STUN_ATTR_SOFTWARE && alen == STUN_SOFTWARE_LEN &&
		    !memcmp(val, STUN_SOFTWARE, STUN_SOFTWARE_LEN))
			software_ok = true;
		if (type == STUN_ATTR_FINGERPRINT && alen == 4)
			got_fp = get_be32(val);
	}
	if (r < 0)
		return r;
	if (!software_ok)
		return -EPROTO;
	/* The FINGERPRINT attribute (4 + 4 bytes) ends the message. */
	if (last_type != STUN_ATTR_FINGERPRINT)
		return -EBADMSG;
	if (got_fp != stun_fingerprint(pkt, len - 8))
		return -EBADMSG;
	if (txid)
		memcpy(txid, pkt + 8, KDERP_STUN_TXID_LEN);
	return 0;
}

int kderp_stun_build_response(uint8_t *out, size_t cap, const uint8_t txid[KDERP_STUN_TXID_LEN],
			      const struct sockaddr *addr)
{
	const struct sockaddr_in6 *sin6;
	const struct sockaddr_in *sin;
	const uint8_t *ip;
	uint16_t port;
	size_t alen;
	uint8_t fam;

	switch (addr ? addr->sa_family : AF_UNSPEC) {
	case AF_INET:
		sin = (const struct sockaddr_in *)addr;
		ip = (const uint8_t *)&sin->sin_addr;
		port = ntohs(sin->sin_port);
		fam = STUN_FAMILY_IPV4;
		break;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)addr;
		ip = sin6->sin6_addr.s6_addr;
		port = ntohs(sin6->sin6_port);
		fam = STUN_FAMILY_IPV6;
		/* dual-stack sockets see IPv4 clients as ::ffff:a.b.c.d */
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			ip += 12;
			fam = STUN_FAMILY_IPV4;
		}
		break;
	default:
		return -EAFNOSUPPORT;
	}
	alen = fam == STUN_FAMILY_IPV4 ? 4 : 16;
	if (cap < KDERP_STUN_HDR_LEN + 4 + 4 + alen)
		return -ENOSPC;

	put_header(out, STUN_BINDING_SUCCESS, (uint16_t)(4 + 4 + alen), txid);
	put_be16(out + 20, STUN_ATTR_XOR_MAPPED_ADDRESS);
	put_be16(out + 22, (uint16_t)(4 + alen));
	out[24] = 0;
	out[25] = fam;
	put_be16(out + 26, port ^ (KDERP_STUN_MAGIC >> 16));
	/* the address is XORed with the cookie followed by the transaction id */
	for (size_t i = 0; i < alen; i++)
		out[28 + i] = ip[i] ^ out[4 + i];
	return (int)(KDERP_STUN_HDR_LEN + 8 + alen);
}

int kderp_stun_build_request(uint8_t *out, size_t cap, const uint8_t txid[KDERP_STUN_TXID_LEN])
{
	if (cap < KDERP_STUN_REQUEST_LEN)
		return -ENOSPC;
	put_header(out, STUN_BINDING_REQUEST, KDERP_STUN_REQUEST_LEN - KDERP_STUN_HDR_LEN, txid);
	put_be16(out + 20, STUN_ATTR_SOFTWARE);
	put_be16(out + 22, STUN_SOFTWARE_LEN);
	memcpy(out + 24, STUN_SOFTWARE, STUN_SOFTWARE_LEN);
	put_be16(out + 32, STUN_ATTR_FINGERPRINT);
	put_be16(out + 34, 4);
	put_be32(out + 36, stun_fingerprint(out, 32));
	return KDERP_STUN_REQUEST_LEN;
}

/* Decode a (XOR-)MAPPED-ADDRESS value into @addr. */
static int decode_address(const uint8_t *pkt, const uint8_t *v, size_t vlen, bool xor,
			  struct sockaddr_storage *addr)
{
	uint16_t port;
	size_t alen;

	if (vlen < 4)
		return -EINVAL;
	if (v[1] == STUN_FAMILY_IPV4)
		alen = 4;
	else if (v[1] == STUN_FAMILY_IPV6)
		alen = 16;
	else
		return -EINVAL;
	if (vlen < 4 + alen)
		return -EINVAL;
	port = get_be16(v + 2);
	if (xor)
		port ^= KDERP_STUN_MAGIC >> 16;

	memset(addr, 0, sizeof(*addr));
	if (alen == 4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)addr;
		uint8_t *ip = (uint8_t *)&sin->sin_addr;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		for (size_t i = 0; i < 4; i++)
			ip[i] = v[4 + i] ^ (xor? pkt[4 + i] : 0);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)addr;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		for (size_t i = 0; i < 16; i++)
			sin6->sin6_addr.s6_addr[i] = v[4 + i] ^ (xor? pkt[4 + i] : 0);
	}
	return 0;
}

int kderp_stun_parse_response(const uint8_t *pkt, size_t len,
			      const uint8_t txid[KDERP_STUN_TXID_LEN],
			      struct sockaddr_storage *addr)
{
	const uint8_t *mapped = NULL, *xmapped = NULL;
	size_t mapped_len = 0, xmapped_len = 0;
	uint16_t type = 0, alen = 0;
	const uint8_t *val = NULL;
	size_t off;
	int r;

	if (!pkt || len < KDERP_STUN_HDR_LEN || (pkt[0] & 0xc0) ||
	    get_be32(pkt + 4) != KDERP_STUN_MAGIC || get_be16(pkt) != STUN_BINDING_SUCCESS)
		return -EINVAL;
	if (txid && memcmp(pkt + 8, txid, KDERP_STUN_TXID_LEN))
		return -EINVAL;
	for (off = KDERP_STUN_HDR_LEN; (r = next_attr(pkt, len, &off, &type, &alen, &val)) > 0;) {
		if (type == STUN_ATTR_XOR_MAPPED_ADDRESS ||
		    type == STUN_ATTR_XOR_MAPPED_ADDRESS_ALT) {
			xmapped = val;
			xmapped_len = alen;
		} else if (type == STUN_ATTR_MAPPED_ADDRESS) {
			mapped = val;
			mapped_len = alen;
		}
	}
	if (r < 0)
		return r;
	if (xmapped && !decode_address(pkt, xmapped, xmapped_len, true, addr))
		return 0;
	if (mapped && !decode_address(pkt, mapped, mapped_len, false, addr))
		return 0;
	return -ENOENT;
}
