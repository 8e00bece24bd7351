/* SPDX-License-Identifier: MIT */
/*
 * derpc.h - a small blocking DERP client for tests and the load generator.
 *
 * A connection is set up in steps so tests can stop at any point and write
 * arbitrary bytes instead:
 *
 *   derpc_dial()            TCP (+ TLS) connect
 *   derpc_send_upgrade()    GET /derp with Upgrade: DERP
 *   derpc_read_upgrade()    read the 101 response (kept byte-exact)
 *   derpc_read_server_key() read and check the ServerKey frame
 *   derpc_send_client_info() sealed ClientInfo
 *   derpc_read_server_info() read and open ServerInfo
 *
 * derpc_connect() does all of them. Every call that waits takes a timeout in
 * milliseconds and returns -ETIMEDOUT when it expires; a peer close reads as
 * -ECONNRESET (c->eof tells a clean FIN apart from a reset). The socket is
 * non-blocking from the start; after the handshake a caller may take
 * derpc_fd()/derpc_ssl() and drive I/O itself, starting with the bytes still
 * buffered (derpc_buffered()).
 *
 * All functions return 0 or a negative errno.
 */
#ifndef KDERP_DERPC_H
#define KDERP_DERPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "derp_wire.h"

/* Client-side names and limits (derp-protocol: a client caps received frames). */
#define DERP_FRAME_HEADER_LEN DERP_FRAME_HDR_LEN
#define DERP_MAX_CLIENT_INFO_LEN DERP_MAX_CLIENTINFO_LEN
#define DERP_MAX_INFO_LEN (1 << 20)
#define DERP_MAX_FRAME_LEN (1 << 20)

/* The JSON a current client sends in ClientInfo. */
#define DERPC_CLIENT_INFO_JSON "{\"version\":2,\"CanAckPings\":true}"

struct derpc_opts {
	const char *host; /* numeric IPv4/IPv6 address or name */
	uint16_t port;
	bool tls;
	const char *ca_file; /* TLS: trust only this CA/cert file and verify; NULL: no verify */
	const char *sni; /* TLS: server name to send and verify (an IP: verified, not sent) */
	const char *path; /* request path, default "/derp" */
	const char *extra_headers; /* appended verbatim, each line ending in \r\n */
	const char *client_info_json; /* default DERPC_CLIENT_INFO_JSON */
	bool fast_start; /* send Derp-Fast-Start: 1 and expect no 101 */
	int timeout_ms; /* per step, default 5000 */
};

struct derpc_keypair {
	uint8_t pub[DERP_KEY_LEN];
	uint8_t priv[DERP_KEY_LEN];
};

struct derpc {
	int fd;
	SSL_CTX *ssl_ctx;
	SSL *ssl;
	bool eof; /* the peer closed cleanly (FIN / TLS close) */
	struct derpc_keypair key;
	uint8_t server_pub[DERP_KEY_LEN];
	bool have_server_key;
	int http_status; /* status of the upgrade response (0 with fast start) */
	char *http_head; /* raw response head up to and including \r\n\r\n */
	size_t http_head_len;
	char server_info[256]; /* opened ServerInfo JSON, NUL-terminated */
	size_t server_info_len;
	/* read buffer: bytes received but not yet returned as frames */
	uint8_t *rbuf;
	size_t rcap, rstart, rend;
	char host_hdr[300];
};

/* Fresh Curve25519 key pair (crypto_box_keypair). */
int derpc_keygen(struct derpc_keypair *kp);

/* Lowercase hex of a 32-byte key; out must hold 65 bytes. */
void derpc_key_hex(const uint8_t key[DERP_KEY_LEN], char out[2 * DERP_KEY_LEN + 1]);

/* Initialise c; kp == NULL generates a fresh identity. Never fails. */
void derpc_init(struct derpc *c, const struct derpc_keypair *kp);

int derpc_dial(struct derpc *c, const struct derpc_opts *o);
int derpc_send_upgrade(struct derpc *c, const struct derpc_opts *o);
int derpc_read_upgrade(struct derpc *c, int timeout_ms);
int derpc_read_server_key(struct derpc *c, int timeout_ms);
/* Seal json (NULL: DERPC_CLIENT_INFO_JSON) to the server key and send it. */
int derpc_send_client_info(struct derpc *c, const char *json);
/*
 * Build a ClientInfo payload: pub ‖ nonce ‖ box(json) sealed with priv to
 * server_pub. Returns the payload length or -errno.
 */
int derpc_build_client_info(const struct derpc_keypair *kp, const uint8_t server_pub[DERP_KEY_LEN],
			    const char *json, uint8_t *out, size_t cap);
/* Read the next frame, require ServerInfo, open it into c->server_info. */
int derpc_read_server_info(struct derpc *c, int timeout_ms);

/* All steps above. On failure the connection is closed. */
int derpc_connect(struct derpc *c, const struct derpc_opts *o);
void derpc_close(struct derpc *c);

/* Raw output: arbitrary bytes, and one frame (header + payload). */
int derpc_write_raw(struct derpc *c, const void *buf, size_t len, int timeout_ms);
int derpc_write_frame(struct derpc *c, uint8_t type, const void *payload, size_t len,
		      int timeout_ms);

int derpc_send_packet(struct derpc *c, const uint8_t dst[DERP_KEY_LEN], const void *pkt,
		      size_t len);
int derpc_note_preferred(struct derpc *c, bool preferred);
int derpc_ping(struct derpc *c, const uint8_t data[DERP_PING_LEN]);

/*
 * Read one whole frame, whatever way the bytes are split. Up to cap payload
 * bytes are copied to buf; *len gets the full payload length (a longer frame
 * is truncated in buf, the rest is consumed). Frames above
 * DERP_MAX_FRAME_LEN give -EMSGSIZE (the stream is then unusable).
 */
int derpc_recv_frame(struct derpc *c, uint8_t *type, void *buf, size_t cap, size_t *len,
		     int timeout_ms);

/*
 * Read frames until a RecvPacket arrives and return its source key and
 * packet (truncated to cap, *len = full length). Every other frame
 * (KeepAlive, PeerGone, Pong, ...) is consumed and dropped.
 */
int derpc_recv_packet(struct derpc *c, uint8_t src[DERP_KEY_LEN], void *buf, size_t cap,
		      size_t *len, int timeout_ms);

/*
 * Wait for the peer to close the connection, discarding anything it sends.
 * 0 if it closed (FIN or reset) within the timeout, else -ETIMEDOUT.
 */
int derpc_wait_closed(struct derpc *c, int timeout_ms);

/* For callers that take over I/O after the handshake. */
int derpc_fd(const struct derpc *c);
SSL *derpc_ssl(const struct derpc *c);
/* Bytes already read from the socket but not yet consumed. */
const uint8_t *derpc_buffered(const struct derpc *c, size_t *len);

/* Parse a frame header; 0 and the fields, or -EAGAIN if fewer than 5 bytes. */
int derpc_parse_header(const uint8_t *buf, size_t len, uint8_t *type, uint32_t *plen);
void derpc_put_header(uint8_t hdr[DERP_FRAME_HEADER_LEN], uint8_t type, uint32_t plen);

/* Payload that looks like disco to the server (62 bytes, magic first). */
void derpc_fill_disco(uint8_t *buf, size_t len);

/*
 * One plain HTTP exchange: write req verbatim on a fresh connection and read
 * the response (parsed with http_parser). Headers are kept raw in head.
 */
struct derpc_http_resp {
	int status;
	char *head; /* status line + headers, NUL-terminated */
	size_t head_len;
	char *body; /* NUL-terminated */
	size_t body_len;
	bool complete; /* the parser saw the end of the message */
};

int derpc_http_request(const struct derpc_opts *o, const char *req, struct derpc_http_resp *r);
/*
 * Value of header name (case-insensitive) in a response head, copied into
 * out; -ENOENT if absent.
 */
int derpc_http_header(const char *head, const char *name, char *out, size_t cap);
void derpc_http_resp_free(struct derpc_http_resp *r);

/* Monotonic clock in milliseconds. */
int64_t derpc_now_ms(void);

#endif /* KDERP_DERPC_H */
