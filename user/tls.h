/* SPDX-License-Identifier: MIT */
/* tls.h - OpenSSL server context, certificates, the meta cert, kTLS. */
#ifndef KDERP_TLS_H
#define KDERP_TLS_H

#include <stdint.h>

#include <openssl/ssl.h>

struct config;

/* Build the server context (cert per --certmode, meta cert appended, kTLS
 * enabled). NULL on failure, already logged. */
SSL_CTX *tls_server_ctx(const struct config *cfg, const uint8_t server_pub[32]);

/* After the handshake: which directions did the kernel take over? */
int tls_conn_mode(SSL *ssl);
const char *tls_mode_name(int mode);

/* Does this kernel have the TLS ULP (kTLS)? */
int tls_kernel_has_ktls(void);

/* Make the Ed25519 meta certificate (serial 2, CN derpkey<hex>), DER. */
X509 *tls_make_meta_cert(const uint8_t server_pub[32]);

#endif
