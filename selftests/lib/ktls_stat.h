/* SPDX-License-Identifier: MIT */
/*
 * ktls_stat.h - the kernel's TLS counters (/proc/net/tls_stat, per network
 * namespace), for the kTLS tests. Part of libselftest.a.
 */
#ifndef KDERP_SELFTESTS_KTLS_STAT_H
#define KDERP_SELFTESTS_KTLS_STAT_H

struct __test_metadata;

struct ktls_stat {
	long long tx_sw, rx_sw; /* TlsTxSw, TlsRxSw: software contexts ever set up */
	long long curr_tx_sw, curr_rx_sw; /* TlsCurrTxSw, TlsCurrRxSw: open now */
	long long decrypt_err; /* TlsDecryptError */
};

/*
 * Read the counters: 0, -ENOENT if the kernel keeps no TLS statistics
 * (CONFIG_TLS unset), -EPROTO if one of the fields is missing.
 */
int ktls_stat_read(struct ktls_stat *st);

/* ktls_stat_read, or fail the test. */
void ktls_stat(struct __test_metadata *_metadata, struct ktls_stat *st);

#endif /* KDERP_SELFTESTS_KTLS_STAT_H */
