// SPDX-License-Identifier: MIT
/* pkt.c - frames waiting to be written (pkt.h). */
#include <stdlib.h>
#include <string.h>

#include "derp_frame.h"
#include "http.h"
#include "pkt.h"

struct pkt *pkt_new(uint32_t len, uint8_t kind)
{
	struct pkt *p = malloc(sizeof(*p) + len);

	if (!p)
		return NULL;
	p->next = NULL;
	p->len = len;
	p->kind = kind;
	p->enq_ns = 0;
	return p;
}

void pkt_free(struct pkt *p)
{
	free(p);
}

struct pkt *frame_new(uint8_t type, const void *a, uint32_t alen, const void *b, uint32_t blen,
		      uint8_t kind)
{
	struct pkt *p = pkt_new(DERP_FRAME_HDR_LEN + alen + blen, kind);

	if (!p)
		return NULL;
	derp_frame_put_header(p->data, type, alen + blen);
	if (alen)
		memcpy(p->data + DERP_FRAME_HDR_LEN, a, alen);
	if (blen)
		memcpy(p->data + DERP_FRAME_HDR_LEN + alen, b, blen);
	return p;
}

struct pkt *pkt_copy(const void *bytes, uint32_t n, uint8_t kind)
{
	struct pkt *p = pkt_new(n, kind);

	if (p)
		memcpy(p->data, bytes, n);
	return p;
}

struct pkt *pkt_http_text(int status, const char *reason, const char *body)
{
	char buf[1024];
	int n = http_format_text(buf, sizeof(buf), status, reason, body);

	return n > 0 && n < (int)sizeof(buf) ? pkt_copy(buf, (uint32_t)n, PKT_RAW) : NULL;
}
