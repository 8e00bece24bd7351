// SPDX-License-Identifier: MIT
/*
 * ktls_stat.c - read /proc/net/tls_stat (see ktls_stat.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "ktls_stat.h"

int ktls_stat_read(struct ktls_stat *st)
{
	const struct {
		const char *name;
		long long *v;
	} fields[] = {
		{"TlsTxSw", &st->tx_sw},
		{"TlsRxSw", &st->rx_sw},
		{"TlsCurrTxSw", &st->curr_tx_sw},
		{"TlsCurrRxSw", &st->curr_rx_sw},
		{"TlsDecryptError", &st->decrypt_err},
	};
	const size_t n = sizeof(fields) / sizeof(fields[0]);
	char name[64];
	long long v;
	FILE *f;
	int ret = 0;

	for (size_t i = 0; i < n; i++)
		*fields[i].v = -1;
	f = fopen("/proc/net/tls_stat", "r");
	if (!f)
		return -errno;
	while (fscanf(f, "%63s %lld", name, &v) == 2) {
		for (size_t i = 0; i < n; i++)
			if (!strcmp(name, fields[i].name))
				*fields[i].v = v;
	}
	fclose(f);
	for (size_t i = 0; i < n; i++)
		if (*fields[i].v < 0)
			ret = -EPROTO;
	return ret;
}

void ktls_stat(struct __test_metadata *_metadata, struct ktls_stat *st)
{
	ASSERT_EQ(0, ktls_stat_read(st));
}
