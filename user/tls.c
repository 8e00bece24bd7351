// SPDX-License-Identifier: MIT
/* tls.c - server TLS with OpenSSL: manual certs, self-signed IP certs,
 * derper's meta certificate for fast start, and kTLS offload. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "log.h"
#include "kderp_abi.h"
#include "tls.h"
#include "util.h"

static void log_ssl_errors(const char *what)
{
	unsigned long e;
	char buf[256];

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		log_err("%s: %s", what, buf);
	}
}

static int set_validity(X509 *x, long not_before_off, long not_after_off)
{
	return X509_gmtime_adj(X509_getm_notBefore(x), not_before_off) &&
		X509_gmtime_adj(X509_getm_notAfter(x), not_after_off);
}

static int add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext)
		return 0;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

/* derper's Ed25519 meta certificate: serial 2, CN derpkey<hex of the server key>. */
static X509 *make_meta_cert(const uint8_t server_pub[32])
{
	EVP_PKEY_CTX *kctx = NULL;
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	X509_NAME *name;
	char cn[7 + 64 + 1];

	memcpy(cn, "derpkey", 7);
	hex_encode(cn + 7, server_pub, 32);
	kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	if (!kctx || EVP_PKEY_keygen_init(kctx) <= 0 || EVP_PKEY_keygen(kctx, &pkey) <= 0)
		goto fail;
	x = X509_new();
	if (!x || !X509_set_version(x, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(x), 2) ||
	    !set_validity(x, -30L * 86400, 30L * 86400) || !X509_set_pubkey(x, pkey))
		goto fail;
	name = X509_get_subject_name(x);
	/* 71 characters: over X.509's 64 for a CN, so bypass OpenSSL's string
	 * table check by giving the ASN.1 type directly (as Go encodes it). */
	if (!X509_NAME_add_entry_by_txt(name, "CN", V_ASN1_PRINTABLESTRING,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, name))
		goto fail;
	/* Exactly one extension: basic constraints, not a CA. */
	if (!add_ext(x, NID_basic_constraints, "critical,CA:FALSE"))
		goto fail;
	if (!X509_sign(x, pkey, NULL))
		goto fail;
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(kctx);
	return x;
fail:
	log_ssl_errors("meta certificate");
	X509_free(x);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(kctx);
	return NULL;
}

static bool is_ip(const char *s)
{
	unsigned char buf[16];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* derper's manual mode for an IP host name with no cert on disk: a
 * self-signed ECDSA P-256 cert valid for one year. */
static int make_self_signed(const char *host, const char *crt_path, const char *key_path)
{
	EVP_PKEY *pkey = NULL;
	X509 *x = NULL;
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	char san[300];
	FILE *f = NULL;
	int fd, ret = -1;

	pkey = EVP_EC_gen("P-256");
	x = X509_new();
	if (!pkey || !x || RAND_bytes(serial, sizeof(serial)) != 1)
		goto out;
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) || !X509_set_version(x, 2) ||
	    !set_validity(x, 0, 365L * 86400) || !X509_set_pubkey(x, pkey))
		goto out;
	if (!X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
					(const unsigned char *)host, -1, -1, 0) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(x)))
		goto out;
	snprintf(san, sizeof(san), "%s:%s", is_ip(host) ? "IP" : "DNS", host);
	if (!add_ext(x, NID_subject_alt_name, san) ||
	    !add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
	    !add_ext(x, NID_ext_key_usage, "serverAuth") ||
	    !add_ext(x, NID_basic_constraints, "critical,CA:FALSE") ||
	    !X509_sign(x, pkey, EVP_sha256()))
		goto out;
	fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		if (fd >= 0)
			close(fd);
		goto out;
	}
	if (!PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL))
		goto out;
	fclose(f);
	f = fopen(crt_path, "w");
	if (!f || !PEM_write_X509(f, x))
		goto out;
	ret = 0;
	{
		unsigned char der_hash[32];
		unsigned int hl = sizeof(der_hash);
		char hex[65];

		if (X509_digest(x, EVP_sha256(), der_hash, &hl) && hl == 32) {
			hex_encode(hex, der_hash, 32);
			log_info("generated self-signed certificate %s; use in a DERP map: "
				 "{\"Name\":\"custom\",\"RegionID\":900,\"HostName\":\"%s\","
				 "\"CertName\":\"sha256-raw:%s\"}",
				 crt_path, host, hex);
		}
	}
out:
	if (ret)
		log_ssl_errors("self-signed certificate");
	if (f)
		fclose(f);
	BN_free(bn);
	X509_free(x);
	EVP_PKEY_free(pkey);
	return ret;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
	const struct config *cfg = arg;
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	/* derper's manual mode: the SNI must be the host name, unless that is an IP. */
	if (is_ip(cfg->hostname))
		return SSL_TLSEXT_ERR_OK;
	if (!sni || strcasecmp(sni, cfg->hostname) != 0) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char http11[] = "\x08http/1.1";

	if (SSL_select_next_proto((unsigned char **)out, outlen, http11, sizeof(http11) - 1, in,
				  inlen) == OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	return SSL_TLSEXT_ERR_NOACK;
}

static int tls_ulp_listed(void)
{
	char *s = read_file("/proc/sys/net/ipv4/tcp_available_ulp", 4096, NULL);
	int ret = s && strstr(s, "tls") != NULL;

	free(s);
	return ret;
}

int tls_kernel_has_ktls(void)
{
	int ret = tls_ulp_listed();

	/* The module may load on first use even when not listed yet. */
	if (!ret && access("/proc/net/tls_stat", F_OK) == 0)
		ret = 1;
	return ret;
}

void tls_load_ktls(void)
{
	int fd;

	if (tls_ulp_listed())
		return;
	/*
	 * Asking for the ULP on any TCP socket makes the kernel load the
	 * module, which needs CAP_NET_ADMIN: do it now, before privileges go.
	 * The socket itself is not connected, so the call fails; only the
	 * module matters.
	 */
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3) == 0 || errno != ENOENT)
		log_debug("TLS: kernel TLS module %s", tls_ulp_listed() ? "loaded" : "not loaded");
	close(fd);
}

SSL_CTX *tls_server_ctx(const struct config *cfg, const uint8_t server_pub[32])
{
	char name[256], crt[4096], key[4096];
	SSL_CTX *ctx;
	X509 *meta;
	size_t j = 0;
	struct stat st;

	if (strcmp(cfg->certmode, "manual") != 0) {
		log_err("--certmode=%s is not supported by kderpd; use --certmode=manual with "
			"certificates from your ACME client",
			cfg->certmode);
		return NULL;
	}
	for (const char *p = cfg->hostname; *p && j < sizeof(name) - 1; p++)
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '.' || *p == '-')
			name[j++] = *p;
	name[j] = 0;
	snprintf(crt, sizeof(crt), "%s/%s.crt", cfg->certdir, name);
	snprintf(key, sizeof(key), "%s/%s.key", cfg->certdir, name);
	if (stat(crt, &st) < 0 || stat(key, &st) < 0) {
		if (!is_ip(cfg->hostname)) {
			log_err("certificate %s or key %s missing (manual mode generates one only "
				"for an IP --hostname)",
				crt, key);
			return NULL;
		}
		if (mkdir(cfg->certdir, 0700) < 0 && errno != EEXIST) {
			log_err("creating %s: %s", cfg->certdir, strerror(errno));
			return NULL;
		}
		if (make_self_signed(cfg->hostname, crt, key) < 0)
			return NULL;
	}
	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		goto fail;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (cfg->tls_max && strcmp(cfg->tls_max, "1.2") == 0)
		SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx,
			    SSL_OP_ENABLE_KTLS | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
				    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
				 SSL_MODE_RELEASE_BUFFERS);
	/* No session tickets: nothing may follow the handshake on a kTLS socket. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_use_certificate_chain_file(ctx, crt) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		log_err("loading %s / %s failed", crt, key);
		goto fail;
	}
	/* The meta cert goes last in every Certificate message (fast start). */
	meta = make_meta_cert(server_pub);
	if (!meta || SSL_CTX_add0_chain_cert(ctx, meta) != 1) {
		X509_free(meta);
		goto fail;
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, (void *)cfg);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	log_info("TLS: certificate %s, TLS 1.2..%s, kTLS %s", crt,
		 cfg->tls_max && strcmp(cfg->tls_max, "1.2") == 0 ? "1.2" : "1.3",
		 tls_kernel_has_ktls() ? "available"
				       : "not available in this kernel (user-space TLS)");
	return ctx;
fail:
	log_ssl_errors("TLS setup");
	SSL_CTX_free(ctx);
	return NULL;
}

int tls_conn_mode(SSL *ssl)
{
	int tx = BIO_get_ktls_send(SSL_get_wbio(ssl));
	int rx = BIO_get_ktls_recv(SSL_get_rbio(ssl));

	if (tx && rx)
		return KDERP_TLS_KTLS_TXRX;
	if (tx)
		return KDERP_TLS_KTLS_TX;
	return KDERP_TLS_USER;
}

void tls_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

SSL *tls_conn_new(SSL_CTX *ctx, int fd)
{
	SSL *ssl = SSL_new(ctx);

	if (ssl && SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}

void tls_conn_free(SSL *ssl)
{
	SSL_free(ssl);
}

/* The reason of a failed call: OpenSSL's last error, else errno or EOF. */
static void fail_reason(const char *what, char *why, size_t whylen)
{
	unsigned long code = ERR_peek_last_error();
	char e[120];

	if (code)
		ERR_error_string_n(code, e, sizeof(e));
	else
		snprintf(e, sizeof(e), "%s", errno ? strerror(errno) : "connection closed");
	snprintf(why, whylen, "%s: %s", what, e);
	ERR_clear_error();
}

/*
 * The peer went away without close_notify (most clients do), or reset the
 * connection: an ordinary close, not an error worth OpenSSL's words.
 */
static bool closed_by_peer(int ssl_err)
{
	unsigned long code = ERR_peek_last_error();

	if (ssl_err == SSL_ERROR_SYSCALL)
		return !code && (errno == 0 || errno == EPIPE || errno == ECONNRESET);
	return ssl_err == SSL_ERROR_SSL && ERR_GET_LIB(code) == ERR_LIB_SSL &&
		ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

enum tls_status tls_accept(SSL *ssl, char *why, size_t whylen)
{
	int r;

	ERR_clear_error();
	r = SSL_accept(ssl);
	if (r == 1)
		return TLS_DONE;
	r = SSL_get_error(ssl, r);
	switch (r) {
	case SSL_ERROR_WANT_READ:
		return TLS_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TLS_WANT_WRITE;
	default:
		if (closed_by_peer(r)) {
			ERR_clear_error();
			snprintf(why, whylen, "TLS handshake failed: client closed");
		} else {
			fail_reason("TLS handshake failed", why, whylen);
		}
		return TLS_FAILED;
	}
}

ssize_t tls_read(SSL *ssl, void *buf, size_t len, char *why, size_t whylen)
{
	int n, e;

	ERR_clear_error();
	n = SSL_read(ssl, buf, (int)len);
	if (n > 0)
		return n;
	e = SSL_get_error(ssl, n);
	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return TLS_READ_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_READ_EOF;
	default:
		if (closed_by_peer(e)) {
			ERR_clear_error();
			return TLS_READ_EOF;
		}
		fail_reason("TLS read", why, whylen);
		return TLS_READ_FAILED;
	}
}

bool tls_pending(SSL *ssl)
{
	return SSL_pending(ssl) > 0;
}

bool tls_key_update_requested(SSL *ssl)
{
	return SSL_get_key_update_type(ssl) != SSL_KEY_UPDATE_NONE;
}

ssize_t tls_write(SSL *ssl, const void *buf, size_t len)
{
	int r;

	ERR_clear_error();
	r = SSL_write(ssl, buf, (int)len);
	if (r > 0)
		return r;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_WRITE:
	case SSL_ERROR_WANT_READ:
		return -EAGAIN;
	case SSL_ERROR_SYSCALL:
		return errno ? -errno : -EPIPE;
	default:
		return -EPROTO;
	}
}
