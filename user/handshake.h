/* SPDX-License-Identifier: MIT */
/*
 * handshake.h - the setup states of a connection: TLS handshake, the HTTP
 * request (routed through the server's http_route hook), the upgrade with
 * ServerKey, and ClientInfo -> ServerInfo -> registration. Engine only.
 */
#ifndef KDERP_HANDSHAKE_H
#define KDERP_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

struct conn;

/* One TLS handshake step (CS_TLS_HANDSHAKE); CS_HTTP once done. */
void handshake_tls(struct conn *c);

/* Bytes read in CS_HTTP or CS_WAIT_CLIENTINFO; frames after ClientInfo go
 * on to the relay. */
void handshake_input(struct conn *c, uint8_t *buf, size_t len);

#endif /* KDERP_HANDSHAKE_H */
