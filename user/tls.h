/* SPDX-License-Identifier: MIT */
/*
 * tls.h - TLS with OpenSSL: the server context and certificates (manual,
 * self-signed IP certs, derper's meta certificate for fast start), kTLS
 * offload, and the per-connection handshake, read and write the engine
 * uses. tls.c is the only file of kderpd that includes OpenSSL.
 */
#ifndef KDERP_TLS_H
#define KDERP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct config;
struct ssl_ctx_st;
struct ssl_st;

/* Build the server context (cert per --certmode, meta cert appended, kTLS
 * enabled). NULL on failure, already logged. */
struct ssl_ctx_st *tls_server_ctx(const struct config *cfg, const uint8_t server_pub[32]);
void tls_ctx_free(struct ssl_ctx_st *ctx); /* NULL ok */

/* Does this kernel have the TLS ULP (kTLS)? */
int tls_kernel_has_ktls(void);
/* Load the kernel's TLS module now if it is not loaded (needs CAP_NET_ADMIN,
 * so before privileges are dropped: later, kTLS could not load it). */
void tls_load_ktls(void);

/* A server-side TLS connection on fd, or NULL. */
struct ssl_st *tls_conn_new(struct ssl_ctx_st *ctx, int fd);
void tls_conn_free(struct ssl_st *ssl); /* NULL ok */

enum tls_status {
	TLS_DONE = 0, /* handshake complete */
	TLS_WANT_READ = 1,
	TLS_WANT_WRITE = 2,
	TLS_FAILED = -1, /* reason in why */
};

/* One handshake step. */
enum tls_status tls_accept(struct ssl_st *ssl, char *why, size_t whylen);

/* After the handshake: which directions did the kernel take over?
 * (enum kderp_tls_mode: KDERP_TLS_USER, _KTLS_TX or _KTLS_TXRX) */
int tls_conn_mode(struct ssl_st *ssl);

#define TLS_READ_AGAIN 0 /* nothing to read now */
#define TLS_READ_EOF (-1) /* the peer closed (close_notify) */
#define TLS_READ_FAILED (-2) /* reason in why */
/* Decrypt up to len bytes: a count > 0, or one of TLS_READ_*. */
ssize_t tls_read(struct ssl_st *ssl, void *buf, size_t len, char *why, size_t whylen);

/* Decrypted bytes left inside OpenSSL? */
bool tls_pending(struct ssl_st *ssl);

/* Did the peer ask for a TLS 1.3 KeyUpdate of our sending key? */
bool tls_key_update_requested(struct ssl_st *ssl);

/* Encrypt and send: bytes accepted (> 0), -EAGAIN, or another -errno. OpenSSL
 * accepts a retry from a moved buffer. */
ssize_t tls_write(struct ssl_st *ssl, const void *buf, size_t len);

#endif /* KDERP_TLS_H */
