/* SPDX-License-Identifier: MIT */
/* config.h - kderpd's settings, filled from derper-compatible flags. */
#ifndef KDERP_CONFIG_H
#define KDERP_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

struct config {
	bool dev;
	bool version;
	bool verbose;
	bool stun;
	bool derp;
	const char *addr; /* -a */
	int http_port;
	int stun_port;
	const char *key_path; /* -c */
	const char *certmode;
	const char *certdir;
	const char *hostname;
	const char *home;
	const char *mesh_psk_file;
	const char *mesh_with;
	bool verify_clients;
	const char *verify_client_url;
	bool verify_client_url_fail_open;
	int64_t tcp_keepalive_time_ns;
	int64_t tcp_user_timeout_ns;
	int64_t tcp_write_timeout_ns;
	int workers;
	const char *tls_max;
	const char *debug_allow;
	const char *xdp_iface;
	const char *bpffs_dir;
	const char *ctl; /* control socket path, "off", or NULL/"" for the default */
	const char *user; /* --user: who to become after start-up */
	bool varz_peers; /* per-peer series in /debug/varz */
	/* Derived. */
	bool tls;
	char listen_host[256];
	char listen_port[16];
};

#endif
