// SPDX-License-Identifier: MIT
/*
 * kderpd - a DERP relay server, a drop-in replacement for Tailscale's derper.
 * Flags follow derper's names and Go flag syntax (Documentation/operations.md).
 *
 * The composition root: the only file that knows every part. It builds the
 * engine (server.h), opens the edges (state plane, control socket, web,
 * STUN, XDP) and registers each edge's callbacks with the engine or web,
 * drops privileges (privs.h), and only then starts any thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <bpf/libbpf.h>
#include <sodium.h>

#include "config.h"
#include "ctl.h"
#include "ctl_path.h"
#include "derp_handshake.h"
#include "flags.h"
#include "log.h"
#include "privs.h"
#include "server.h"
#include "state.h"
#include "stun.h"
#include "stun_xdp.h"
#include "tls.h"
#include "util.h"
#include "web.h"

static struct config cfg = {
	.stun = true,
	.derp = true,
	.addr = ":443",
	.http_port = 80,
	.stun_port = 3478,
	.certmode = "letsencrypt",
	.hostname = "derp.tailscale.com",
	.home = "",
	.verify_client_url_fail_open = true,
	.tcp_keepalive_time_ns = 10LL * 60 * 1000000000LL,
	.tcp_user_timeout_ns = 15LL * 1000000000LL,
	.tcp_write_timeout_ns = 2LL * 1000000000LL,
	.bpffs_dir = KDERP_STATE_DEFAULT_DIR,
};

/* Accepted for unit-file compatibility; refused when set to something kderpd cannot honour. */
static const char *unsupported_str[8];
static bool acme_ip_certs, ace;
static double accept_limit;
static int accept_burst;

static struct flag flags[] = {
	{"dev", FLAG_BOOL, &cfg.dev, "run in localhost development mode (overrides -a)"},
	{"version", FLAG_BOOL, &cfg.version, "print version and exit"},
	{"a", FLAG_STRING, &cfg.addr,
	 "server HTTP/HTTPS listen address, in form \":port\", \"ip:port\", or for IPv6 "
	 "\"[ip]:port\""},
	{"http-port", FLAG_INT, &cfg.http_port,
	 "the port on which to serve HTTP in TLS mode; -1 disables"},
	{"stun-port", FLAG_INT, &cfg.stun_port, "the UDP port on which to serve STUN"},
	{"c", FLAG_STRING, &cfg.key_path, "config file path (the server's private key)"},
	{"certmode", FLAG_STRING, &cfg.certmode,
	 "mode for getting a cert: only \"manual\" is supported"},
	{"certdir", FLAG_STRING, &cfg.certdir,
	 "directory to store LetsEncrypt certs, or <hostname>.crt/.key in manual mode"},
	{"hostname", FLAG_STRING, &cfg.hostname, "TLS host name for certs, if addr's port is :443"},
	{"stun", FLAG_BOOL, &cfg.stun, "whether to run a STUN server"},
	{"derp", FLAG_BOOL, &cfg.derp, "whether to run a DERP server"},
	{"home", FLAG_STRING, &cfg.home,
	 "what to serve at the root path: \"\" (default page), \"blank\", or a URL to redirect to"},
	{"mesh-psk-file", FLAG_STRING, &cfg.mesh_psk_file,
	 "file containing the mesh pre-shared key (64 hex digits)"},
	{"mesh-with", FLAG_STRING, &cfg.mesh_with,
	 "optional comma-separated list of hostnames to mesh with (not supported yet)"},
	{"verify-clients", FLAG_BOOL, &cfg.verify_clients,
	 "verify clients to this DERP server through a local tailscaled (not supported yet)"},
	{"verify-client-url", FLAG_STRING, &cfg.verify_client_url,
	 "admission controller URL (not supported yet)"},
	{"verify-client-url-fail-open", FLAG_BOOL, &cfg.verify_client_url_fail_open,
	 "whether to allow clients when the admission URL is unreachable"},
	{"tcp-keepalive-time", FLAG_DURATION, &cfg.tcp_keepalive_time_ns,
	 "TCP keepalive idle time"},
	{"tcp-user-timeout", FLAG_DURATION, &cfg.tcp_user_timeout_ns,
	 "TCP_USER_TIMEOUT for connections"},
	{"tcp-write-timeout", FLAG_DURATION, &cfg.tcp_write_timeout_ns,
	 "TCP write timeout for non-mesh clients; 0 means no timeout"},
	{"verbose", FLAG_BOOL, &cfg.verbose, "log more"},
	{"workers", FLAG_INT, &cfg.workers, "relay worker threads (kderp); 0 = one per CPU"},
	{"tls-max", FLAG_STRING, &cfg.tls_max,
	 "highest TLS version: \"1.3\" (default) or \"1.2\" (kTLS receive offload on OpenSSL 3.0)"},
	{"debug-allow", FLAG_STRING, &cfg.debug_allow,
	 "comma-separated CIDRs allowed to reach /debug/ besides loopback"},
	{"xdp-iface", FLAG_STRING, &cfg.xdp_iface,
	 "interfaces for the XDP STUN responder: IFACE[,IFACE...] or \"auto\""},
	{"bpffs-dir", FLAG_STRING, &cfg.bpffs_dir, "bpffs directory for pinned maps"},
	{"ctl", FLAG_STRING, &cfg.ctl,
	 "control socket for kderpctl: an absolute path, or \"off\" (default: in /run/kderpd, "
	 "named after --bpffs-dir)"},
	{"user", FLAG_STRING, &cfg.user,
	 "user to run as once ports, BPF objects and the control socket are open (default: "
	 "\"kderp\" if that user exists)"},
	{"varz-peers", FLAG_BOOL, &cfg.varz_peers, "per-peer counters in /debug/varz (kderp)"},
	{"acme-ip-certs", FLAG_BOOL, &acme_ip_certs, "LetsEncrypt IP certs (not supported)"},
	{"ace", FLAG_BOOL, &ace, "embedded CONNECT proxy (not supported)"},
	{"accept-connection-limit", FLAG_FLOAT, &accept_limit,
	 "TLS accept rate limit (not supported yet)"},
	{"accept-connection-burst", FLAG_INT, &accept_burst,
	 "TLS accept burst (not supported yet)"},
	{"acme-eab-kid", FLAG_STRING, &unsupported_str[0], "ACME EAB key id (not supported)"},
	{"acme-eab-key", FLAG_STRING, &unsupported_str[1], "ACME EAB key (not supported)"},
	{"acme-email", FLAG_STRING, &unsupported_str[2], "ACME email (not supported)"},
	{"bootstrap-dns-names", FLAG_STRING, &unsupported_str[3],
	 "bootstrap DNS names (not supported yet)"},
	{"unpublished-bootstrap-dns-names", FLAG_STRING, &unsupported_str[4],
	 "unpublished bootstrap DNS names (not supported yet)"},
	{"rate-config", FLAG_STRING, &unsupported_str[5],
	 "per-client rate limit config (not supported yet)"},
	{"secrets-url", FLAG_STRING, &unsupported_str[6], "setec URL (not supported)"},
	{"socket", FLAG_STRING, &unsupported_str[7], "tailscaled socket (with --verify-clients)"},
};

static int listen_on(const char *host, const char *port, int64_t user_timeout_ns)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	int fd = -1, one = 1, r;

	/* An empty host listens on every address, IPv6 dual-stack when possible. */
	hints.ai_family = host[0] ? AF_UNSPEC : AF_INET6;
	r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (r != 0) {
		log_err("resolving listen address %s:%s: %s", host, port, gai_strerror(r));
		return -1;
	}
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6) {
			int zero = 0;

			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
		}
		if (user_timeout_ns > 0) {
			unsigned int ms = (unsigned int)(user_timeout_ns / 1000000);

			setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
		}
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0)
			break;
		log_err("listen %s:%s: %s", host, port, strerror(errno));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

static int check_unsupported(void)
{
	if (cfg.verify_clients || (cfg.verify_client_url && *cfg.verify_client_url)) {
		log_err("--verify-clients and --verify-client-url are not supported yet; refusing "
			"to start an open relay when client verification was asked for");
		return -1;
	}
	if (cfg.mesh_with && *cfg.mesh_with) {
		log_err("--mesh-with is not supported yet");
		return -1;
	}
	if (acme_ip_certs || ace) {
		log_err("--acme-ip-certs and --ace are not supported");
		return -1;
	}
	for (size_t i = 0; i < ARRAY_SIZE(unsupported_str); i++)
		if (unsupported_str[i] && *unsupported_str[i] && i != 7)
			log_warn("flag ignored (not supported yet): %s", unsupported_str[i]);
	if (cfg.home[0] && strcmp(cfg.home, "blank") != 0 && strncmp(cfg.home, "http://", 7) != 0 &&
	    strncmp(cfg.home, "https://", 8) != 0) {
		log_err("unknown --home value %s", cfg.home);
		return -1;
	}
	return 0;
}

static int load_mesh_key(struct server *s)
{
	const char *path = cfg.mesh_psk_file;
	const char *env = cfg.dev ? getenv("TAILSCALE_DERPER_MESH_KEY") : NULL;
	char *text;

	if (env && *env) {
		if (derp_parse_mesh_key(env, s->mesh_key) < 0) {
			log_err("TAILSCALE_DERPER_MESH_KEY: not 64 hex digits");
			return -1;
		}
		s->have_mesh_key = true;
		return 0;
	}
	if (!path || !*path)
		return 0;
	text = read_file(path, 4096, NULL);
	if (!text) {
		log_err("reading mesh key %s: %s", path, strerror(errno));
		return -1;
	}
	if (derp_parse_mesh_key(text, s->mesh_key) < 0) {
		log_err("mesh key %s: not 64 hex digits", path);
		free(text);
		return -1;
	}
	sodium_memzero(text, strlen(text));
	free(text);
	s->have_mesh_key = !sodium_is_zero(s->mesh_key, 32);
	return 0;
}

/* One funnel for libbpf's messages (verifier logs included): --verbose only. */
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char text[4096], *save = NULL, *line;

	if (level == LIBBPF_DEBUG || log_level < LOG_LVL_DEBUG)
		return 0;
	vsnprintf(text, sizeof(text), fmt, ap);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		log_debug("libbpf: %s", line);
	return 0;
}

static int stun_varz(const void *arg, char *buf, size_t len)
{
	return kderp_stun_varz(arg, buf, len);
}

static int xdp_varz(const void *arg, char *buf, size_t len)
{
	return kderp_xdp_varz(arg, buf, len);
}

static int xdp_drop(void *arg, bool drop)
{
	return arg ? kderp_xdp_set_drop(arg, drop) : -ENODEV;
}

static int ctl_close_peer(void *arg, const uint8_t key[32])
{
	return server_close_peer(arg, key);
}

/* What main() starts, in the order it stops them backwards. */
struct kderpd {
	struct privs_target user; /* who to become once everything is open */
	struct server srv;
	struct kderp_state *state;
	struct kderp_ctl *ctl;
	struct web *web;
	struct kderp_stun *stun;
	struct kderp_xdp *xdp;
};

/* Flags, then everything derived from them. 0, or an exit code. */
static int configure(int argc, char **argv)
{
	char err[256];
	int r = flags_parse(flags, ARRAY_SIZE(flags), argc, argv, err, sizeof(err));

	if (r < 0) {
		if (r == -1)
			fprintf(stderr, "%s\n", err);
		fprintf(stderr, "Usage of kderpd:\n");
		flags_usage(flags, ARRAY_SIZE(flags), stderr);
		return r == -2 ? -1 : 2;
	}
	if (cfg.version) {
		printf("kderpd %s\n", KDERP_VERSION);
		return -1;
	}
	if (cfg.verbose)
		log_level = LOG_LVL_DEBUG;
	if (check_unsupported() < 0)
		return 1;
	if (cfg.ctl && *cfg.ctl && strcmp(cfg.ctl, "off") != 0 && cfg.ctl[0] != '/') {
		log_err("--ctl=%s: give an absolute path, or \"off\"", cfg.ctl);
		return 1;
	}
	if (cfg.dev)
		cfg.addr = ":3340";
	if (split_host_port(cfg.addr, cfg.listen_host, sizeof(cfg.listen_host), cfg.listen_port,
			    sizeof(cfg.listen_port)) < 0) {
		log_err("bad -a address %s", cfg.addr);
		return 1;
	}
	if (strcmp(cfg.listen_port, "https") == 0)
		strcpy(cfg.listen_port, "443");
	cfg.tls = strcmp(cfg.listen_port, "443") == 0 || strcmp(cfg.certmode, "manual") == 0;
	if (!cfg.certdir) {
		static char dir[4096];
		const char *base = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");

		if (base && *base)
			snprintf(dir, sizeof(dir), "%s/tailscale/derper-certs", base);
		else
			snprintf(dir, sizeof(dir), "%s/.cache/tailscale/derper-certs",
				 home ? home : ".");
		cfg.certdir = dir;
	}
	return 0;
}

/* The server's identity, mesh key, TLS context and HTTP routes. 0 or -1 (logged). */
static int load_identity(struct kderpd *d)
{
	struct server *srv = &d->srv;

	d->web = web_new(&cfg, srv);
	if (!d->web || web_set_debug_allow(d->web, cfg.debug_allow) < 0) {
		log_err(d->web ? "bad --debug-allow %s" : "out of memory", cfg.debug_allow);
		return -1;
	}
	if (cfg.dev) {
		derp_new_key(srv->priv, srv->pub);
	} else {
		if (!cfg.key_path) {
			if (geteuid() != 0) {
				log_err("-c <config path> is required when not running as root");
				return -1;
			}
			cfg.key_path = "/var/lib/derper/derper.key";
		}
		if (derp_load_or_create_key(cfg.key_path, srv->priv, srv->pub) < 0)
			return -1;
	}
	hex_encode(srv->pub_hex, srv->pub, 32);
	if (load_mesh_key(srv) < 0)
		return -1;
	if (cfg.tls) {
		srv->ssl_ctx = tls_server_ctx(&cfg, srv->pub);
		if (!srv->ssl_ctx)
			return -1;
	}
	return 0;
}

/* Many clients: raise the fd limit as far as we may. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * The control socket, named after the pin directory in use unless --ctl
 * names it (include/kderp_abi.h). Bound and listening now, as root, served
 * only once privileges are dropped. Not to be had is fatal, not a warning:
 * a socket squatted by someone else would take kderpctl's requests. 0 or
 * -1 (logged).
 */
static int open_ctl(struct kderpd *d)
{
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)], rundir[sizeof(path)];
	/* Nothing pinned (no BPF here, or --bpffs-dir=""): the pid names it. */
	const char *dir = kderp_state_bpf(d->state) ? kderp_state_dir(d->state) : "";
	int r;

	if (cfg.ctl && strcmp(cfg.ctl, "off") == 0) {
		log_info("control socket: off (--ctl=off); kderpctl close-peer will not reach "
			 "this daemon");
		return 0;
	}
	if (cfg.ctl && *cfg.ctl) {
		snprintf(path, sizeof(path), "%s", cfg.ctl);
		if (strlen(cfg.ctl) >= sizeof(path)) {
			log_err("control socket %s: %s", cfg.ctl, strerror(ENAMETOOLONG));
			return -1;
		}
	} else {
		r = ctl_default_path(dir, getpid(), path, sizeof(path));
		if (r) {
			log_err("control socket for %s: %s; name one with --ctl=PATH", dir,
				strerror(-r));
			return -1;
		}
		if (!*dir && ctl_rundir(rundir, sizeof(rundir)) == 0)
			kderp_ctl_sweep(rundir); /* names by pid are not replaced */
	}
	d->ctl = kderp_ctl_open(path, ctl_close_peer, &d->srv, &r);
	return d->ctl ? 0 : -1;
}

/*
 * The workers and the state plane first: a second kderpd on the same pin
 * directory must refuse before it opens any socket. Then the control
 * socket. 0 or -1 (logged).
 */
static int start_state(struct kderpd *d)
{
	struct server *srv = &d->srv;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int r;

	srv->nworkers = cfg.workers > 0 ? cfg.workers : (ncpu > 0 ? (int)ncpu : 1);
	if (srv->nworkers > 256)
		srv->nworkers = 256;
	r = workers_init(srv);
	if (r < 0) {
		log_err("allocating workers: %s", strerror(-r));
		return -1;
	}
	d->state = kderp_state_open(cfg.bpffs_dir, srv->nworkers, &r);
	if (!d->state)
		return -1;
	workers_set_stats(srv, kderp_state_rows(d->state));
	kderp_state_hooks(d->state, srv, &srv->hooks);
	return open_ctl(d);
}

/* STUN (user space, and XDP when asked for) and the HTTP routes. 0 or -1. */
static int start_edges(struct kderpd *d)
{
	if (cfg.stun) {
		d->stun = kderp_stun_open(cfg.listen_host, cfg.stun_port);
		if (!d->stun) {
			log_err("STUN server on port %d: %s", cfg.stun_port, strerror(errno));
			return -1;
		}
		if (cfg.xdp_iface && *cfg.xdp_iface) {
			d->xdp = kderp_xdp_open(cfg.xdp_iface, cfg.listen_host, cfg.stun_port);
			if (!d->xdp)
				log_warn("XDP STUN not attached (%s); user-space STUN answers",
					 strerror(errno));
		}
	}
	web_add_varz(d->web, stun_varz, d->stun);
	web_add_varz(d->web, xdp_varz, d->xdp);
	web_add_varz(d->web, kderp_state_varz, d->state);
	web_set_drop_stun(d->web, xdp_drop, d->xdp);
	d->srv.hooks.http_route = web_route;
	d->srv.hooks.http_arg = d->web;
	return 0;
}

/* The DERP listener, and port 80 beside it in TLS mode. 0 or -1. */
static int open_listeners(struct server *srv)
{
	srv->listeners[0].fd = listen_on(cfg.listen_host, cfg.listen_port, cfg.tcp_user_timeout_ns);
	if (srv->listeners[0].fd < 0)
		return -1;
	srv->listeners[0].tls = cfg.tls;
	srv->nlisteners = 1;
	if (cfg.tls && cfg.http_port > 0) {
		char p80[16];

		snprintf(p80, sizeof(p80), "%d", cfg.http_port);
		srv->listeners[1].fd = listen_on(cfg.listen_host, p80, cfg.tcp_user_timeout_ns);
		if (srv->listeners[1].fd < 0)
			return -1;
		srv->listeners[1].port80 = true;
		srv->nlisteners = 2;
	}
	return 0;
}

/*
 * Everything privileged is done: ports bound, BPF objects loaded, attached
 * and pinned, the control socket listening, the key and certificates read.
 * Become --user with only what the running daemon needs. One thread only
 * (ids and capabilities are per thread): nothing has started one yet.
 * 0 or -1 (logged).
 */
static int drop_privileges(struct kderpd *d)
{
	int r;

	if (cfg.tls)
		tls_load_ktls();
	if (d->user.change) {
		r = kderp_state_chown(d->state, d->user.uid, d->user.gid);
		if (r) {
			log_err("state plane: handing %s to %s: %s", kderp_state_dir(d->state),
				d->user.name, strerror(-r));
			return -1;
		}
	}
	return privs_drop(&d->user, kderp_state_bpf(d->state) || d->xdp);
}

/* The threads, after the drop: control socket, STUN, XDP watcher, workers. */
static int start_threads(struct kderpd *d)
{
	int r = 0;

	if (d->ctl && (r = kderp_ctl_run(d->ctl)))
		log_err("control socket: starting its thread: %s", strerror(-r));
	else if (d->stun && (r = kderp_stun_run(d->stun)))
		log_err("STUN: starting its thread: %s", strerror(-r));
	else if ((r = workers_start(&d->srv)))
		log_err("starting workers: %s", strerror(-r));
	if (!r && d->xdp)
		kderp_xdp_watch(d->xdp); /* logs; XDP stays, without re-attach */
	return r ? -1 : 0;
}

static int wait_for_stop(const sigset_t *set)
{
	int sig;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig != SIGHUP)
			return sig;
		log_info("SIGHUP: nothing to reload");
	}
}

/* Stop what was started (running: the worker threads are), free the rest.
 * Pins are removed on every path. */
static void stop(struct kderpd *d, bool running)
{
	struct server *srv = &d->srv;

	for (int i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i].fd >= 0)
			close(srv->listeners[i].fd);
	if (running)
		workers_stop(srv);
	kderp_ctl_stop(d->ctl);
	workers_set_stats(srv, NULL);
	kderp_state_close(d->state);
	kderp_xdp_detach(d->xdp);
	kderp_stun_stop(d->stun);
	web_free(d->web);
	workers_free(srv);
	server_fini(srv);
	tls_ctx_free(srv->ssl_ctx);
	sodium_memzero(srv->priv, sizeof(srv->priv));
}

int main(int argc, char **argv)
{
	static struct kderpd d;
	struct server *srv = &d.srv;
	sigset_t set;
	int r;

	r = configure(argc, argv);
	if (r)
		return r < 0 ? 0 : r;
	if (privs_resolve(cfg.user, &d.user) < 0)
		return 1;
	libbpf_set_print(libbpf_log);
	if (sodium_init() < 0) {
		log_err("libsodium initialisation failed");
		return 1;
	}
	/* Signals are taken synchronously by this thread with sigwait; every
	 * thread started from here on (workers, STUN, control) inherits the
	 * blocked mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (server_init(srv, &cfg) < 0) {
		log_err("out of memory");
		return 1;
	}
	srv->write_timeout_ns = cfg.tcp_write_timeout_ns;
	if (load_identity(&d) < 0)
		return 1;
	raise_fd_limit();
	signal(SIGPIPE, SIG_IGN);
	if (start_state(&d) < 0 || start_edges(&d) < 0 || open_listeners(srv) < 0)
		goto fail;
	if (drop_privileges(&d) < 0 || start_threads(&d) < 0)
		goto fail;
	log_info("kderpd %s: DERP on %s://%s (%d workers), server key %.8s..., STUN %s",
		 KDERP_VERSION, cfg.tls ? "https" : "http", cfg.addr, srv->nworkers, srv->pub_hex,
		 cfg.stun ? "on" : "off");
	log_info("%s: shutting down", strsignal(wait_for_stop(&set)));
	stop(&d, true);
	log_info("stopped");
	return 0;
fail:
	stop(&d, false);
	return 1;
}
