// SPDX-License-Identifier: MIT
/*
 * stun_xdp.c - load kern/stun_xdp.bpf.c, attach it with BPF links (so it
 * goes away with the process), keep it attached while interfaces come and
 * go, and export its counters. The only user file that includes its
 * skeleton (state.c has the other one).
 *
 * Interfaces are (re)conciled by one thread: on every rtnetlink link or
 * address event, and every few seconds as a safety net, each wanted
 * interface is checked (present? our program on it?) and re-attached when
 * needed; in "auto" mode the wanted set itself is recomputed first.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <linux/if_link.h>
#include <linux/rtnetlink.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>

#include "stun_xdp.skel.h"

#include "log.h"
#include "util.h"
#include "stun_xdp.h"

#define XDP_MAX_IFACES 32
#define XDP_RECHECK_MS 5000

enum xdp_mode_req { MODE_ANY, MODE_NATIVE, MODE_GENERIC };

struct xdp_iface {
	char name[IF_NAMESIZE];
	enum xdp_mode_req req;
	bool wanted;
	int ifindex; /* where link_fd is attached, 0 when not */
	int link_fd; /* -1 when not attached */
	bool native;
	int last_err; /* last attach error, logged once until it changes */
};

struct kderp_xdp {
	struct stun_xdp_bpf *skel;
	__u32 prog_id;
	int port;

	pthread_mutex_t lock; /* protects ifs, nifs */
	struct xdp_iface ifs[XDP_MAX_IFACES];
	int nifs;
	bool auto_ifaces;
	char listen_host[256];

	bool watching;
	pthread_t thread;
	int stop_fd;
	struct nl_sock *events;
};

static const char *const af_names[KDERP_STUN_NR_AF] = {
	[KDERP_STUN_AF_UNKNOWN] = "unknown",
	[KDERP_STUN_AF_IPV4] = "ipv4",
	[KDERP_STUN_AF_IPV6] = "ipv6",
};

static const char *const outcome_names[KDERP_STUN_NR_OUT] = {
	[KDERP_STUN_OUT_PASS] = "pass",
	[KDERP_STUN_OUT_ABORTED] = "aborted",
	[KDERP_STUN_OUT_TX] = "tx",
	[KDERP_STUN_OUT_DROP] = "drop",
};

static const char *const end_names[KDERP_STUN_NR_END] = {
	[KDERP_STUN_END_UNSPECIFIED] = "unspecified",
	[KDERP_STUN_END_UNEXPECTED_FIRST_STUN_ATTR] = "unexpected_first_stun_attr",
	[KDERP_STUN_END_INVALID_UDP_CSUM] = "invalid_udp_csum",
	[KDERP_STUN_END_INVALID_IP_CSUM] = "invalid_ip_csum",
	[KDERP_STUN_END_NOT_STUN_PORT] = "not_stun_port",
	[KDERP_STUN_END_INVALID_SW_ATTR_VAL] = "invalid_sw_attr_val",
	[KDERP_STUN_END_DROP_STUN] = "drop_stun",
};

/* The counter slots must fit derper's u8 key fields. */
_Static_assert(KDERP_STUN_NR_AF <= 256 && KDERP_STUN_NR_OUT <= 256 && KDERP_STUN_NR_END <= 256,
	       "enum sizes");

const char *kderp_xdp_af_name(unsigned int af)
{
	return af < KDERP_STUN_NR_AF ? af_names[af] : NULL;
}

const char *kderp_xdp_outcome_name(unsigned int outcome)
{
	return outcome < KDERP_STUN_NR_OUT ? outcome_names[outcome] : NULL;
}

const char *kderp_xdp_end_name(unsigned int end)
{
	return end < KDERP_STUN_NR_END ? end_names[end] : NULL;
}

static int write_config(struct kderp_xdp *x, bool drop)
{
	struct kderp_stun_cfg cfg = {
		.magic = KDERP_ABI_MAGIC,
		.abi_version = KDERP_ABI_VERSION,
		.drop_stun = drop,
		.dst_port = (__u16)x->port,
	};
	__u32 key = 0;

	if (bpf_map_update_elem(bpf_map__fd(x->skel->maps.KDERP_MAP_STUN_CFG), &key, &cfg, BPF_ANY))
		return -errno;
	return 0;
}

struct kderp_xdp *kderp_xdp_load(int port)
{
	struct bpf_prog_info info;
	__u32 info_len = sizeof(info);
	struct kderp_xdp *x;
	int ret;

	if (port <= 0 || port > 65535) {
		errno = EINVAL;
		return NULL;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->port = port;
	x->stop_fd = -1;
	pthread_mutex_init(&x->lock, NULL);

	x->skel = stun_xdp_bpf__open_and_load();
	if (!x->skel) {
		ret = errno ? -errno : -EINVAL;
		goto free_x;
	}
	memset(&info, 0, sizeof(info));
	ret = bpf_obj_get_info_by_fd(bpf_program__fd(x->skel->progs.KDERP_PROG_STUN_XDP), &info,
				     &info_len);
	if (ret) {
		ret = -errno;
		goto destroy;
	}
	x->prog_id = info.id;
	ret = write_config(x, false);
	if (ret)
		goto destroy;
	return x;

destroy:
	stun_xdp_bpf__destroy(x->skel);
free_x:
	pthread_mutex_destroy(&x->lock);
	free(x);
	errno = -ret;
	return NULL;
}

int kderp_xdp_prog_fd(const struct kderp_xdp *x)
{
	if (!x)
		return -EINVAL;
	return bpf_program__fd(x->skel->progs.KDERP_PROG_STUN_XDP);
}

int kderp_xdp_set_drop(struct kderp_xdp *x, bool drop)
{
	int ret;

	if (!x)
		return -EINVAL;
	ret = write_config(x, drop);
	if (!ret)
		log_info("xdp: drop-STUN %s", drop ? "on" : "off");
	return ret;
}

int kderp_xdp_read_counters(const struct kderp_xdp *x, struct kderp_stun_counter *out)
{
	struct kderp_stun_counter *percpu;
	int ncpus, fd, ret = 0;

	if (!x || !out)
		return -EINVAL;
	ncpus = libbpf_num_possible_cpus();
	if (ncpus <= 0)
		return ncpus ? ncpus : -EINVAL;
	percpu = calloc((size_t)ncpus, sizeof(*percpu));
	if (!percpu)
		return -ENOMEM;
	fd = bpf_map__fd(x->skel->maps.KDERP_MAP_STUN_CNT);
	for (__u32 i = 0; i < KDERP_STUN_NR_COUNTERS; i++) {
		out[i].packets = 0;
		out[i].bytes = 0;
		if (bpf_map_lookup_elem(fd, &i, percpu)) {
			ret = -errno;
			break;
		}
		for (int c = 0; c < ncpus; c++) {
			out[i].packets += percpu[c].packets;
			out[i].bytes += percpu[c].bytes;
		}
	}
	free(percpu);
	return ret;
}

/* ---- attaching ---------------------------------------------------------- */

static int link_xdp(int prog_fd, int ifindex, __u32 flags)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = flags);
	int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &opts);

	return fd < 0 ? -errno : fd;
}

static void iface_detach(struct xdp_iface *f, const char *why)
{
	if (f->link_fd < 0)
		return;
	close(f->link_fd);
	log_info("xdp: detached from %s (%s)", f->name, why);
	f->link_fd = -1;
	f->ifindex = 0;
}

/* Attach to @f at @ifindex; native first unless told otherwise. */
static int iface_attach(struct kderp_xdp *x, struct xdp_iface *f, int ifindex)
{
	int prog_fd = kderp_xdp_prog_fd(x);
	int fd = -EOPNOTSUPP, native_err = 0;

	if (f->req != MODE_GENERIC) {
		fd = link_xdp(prog_fd, ifindex, XDP_FLAGS_DRV_MODE);
		if (fd >= 0) {
			f->native = true;
			goto done;
		}
		native_err = fd;
		if (f->req == MODE_NATIVE) {
			if (fd != f->last_err)
				log_warn("xdp: %s: native attach failed: %s", f->name,
					 strerror(-fd));
			f->last_err = fd;
			return fd;
		}
	}
	fd = link_xdp(prog_fd, ifindex, XDP_FLAGS_SKB_MODE);
	if (fd < 0) {
		/* retried on every re-check: say it once */
		if (fd != f->last_err)
			log_warn("xdp: %s: attach failed: %s", f->name, strerror(-fd));
		f->last_err = fd;
		return fd;
	}
	f->native = false;
done:
	f->last_err = 0;
	f->link_fd = fd;
	f->ifindex = ifindex;
	if (native_err)
		log_info("xdp: STUN on %s (ifindex %d) in generic mode (native: %s), UDP port %d",
			 f->name, ifindex, strerror(-native_err), x->port);
	else
		log_info("xdp: STUN on %s (ifindex %d) in %s mode, UDP port %d", f->name, ifindex,
			 f->native ? "native" : "generic", x->port);
	return 0;
}

/* Is our program still what runs on @ifindex? */
static bool ours_on(const struct kderp_xdp *x, int ifindex)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);

	if (bpf_xdp_query(ifindex, 0, &q))
		return false;
	return q.drv_prog_id == x->prog_id || q.skb_prog_id == x->prog_id ||
		q.prog_id == x->prog_id;
}

static struct xdp_iface *iface_find(struct kderp_xdp *x, const char *name)
{
	for (int i = 0; i < x->nifs; i++)
		if (!strcmp(x->ifs[i].name, name))
			return &x->ifs[i];
	return NULL;
}

static struct xdp_iface *iface_add(struct kderp_xdp *x, const char *name, enum xdp_mode_req req)
{
	struct xdp_iface *f = iface_find(x, name);

	if (f)
		return f;
	if (x->nifs == XDP_MAX_IFACES || strlen(name) >= IF_NAMESIZE || !name[0])
		return NULL;
	f = &x->ifs[x->nifs++];
	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->req = req;
	f->link_fd = -1;
	return f;
}

/* ---- "auto": interfaces holding the listen address --------------------- */

struct addr_match {
	struct kderp_xdp *x;
	int family;
	unsigned char bytes[16];
	size_t len;
	int found;
};

static void match_addr(struct nl_object *obj, void *arg)
{
	struct rtnl_addr *a = (struct rtnl_addr *)obj;
	struct addr_match *m = arg;
	struct nl_addr *local = rtnl_addr_get_local(a);
	char name[IF_NAMESIZE];

	if (!local || nl_addr_get_family(local) != m->family || nl_addr_get_len(local) != m->len)
		return;
	if (memcmp(nl_addr_get_binary_addr(local), m->bytes, m->len))
		return;
	if (!if_indextoname((unsigned int)rtnl_addr_get_ifindex(a), name))
		return;
	if (iface_add(m->x, name, MODE_ANY)) {
		iface_find(m->x, name)->wanted = true;
		m->found++;
	}
}

static void match_default_route(struct nl_object *obj, void *arg)
{
	struct rtnl_route *r = (struct rtnl_route *)obj;
	struct addr_match *m = arg;
	struct nl_addr *dst = rtnl_route_get_dst(r);
	char name[IF_NAMESIZE];

	if (rtnl_route_get_table(r) != RT_TABLE_MAIN || rtnl_route_get_type(r) != RTN_UNICAST)
		return;
	if (dst && nl_addr_get_prefixlen(dst) != 0)
		return;
	for (int i = 0; i < rtnl_route_get_nnexthops(r); i++) {
		struct rtnl_nexthop *nh = rtnl_route_nexthop_n(r, i);

		if (!if_indextoname((unsigned int)rtnl_route_nh_get_ifindex(nh), name))
			continue;
		if (iface_add(m->x, name, MODE_ANY)) {
			iface_find(m->x, name)->wanted = true;
			m->found++;
		}
	}
}

/* Recompute the wanted set for "auto". Called with x->lock held. */
static int resolve_auto(struct kderp_xdp *x)
{
	struct addrinfo hints = {.ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICHOST};
	struct addr_match m = {.x = x};
	struct nl_cache *cache = NULL;
	struct addrinfo *res = NULL;
	struct nl_sock *sk;
	bool wildcard = true;
	int ret;

	for (int i = 0; i < x->nifs; i++)
		x->ifs[i].wanted = false;

	if (x->listen_host[0] && getaddrinfo(x->listen_host, NULL, &hints, &res) == 0) {
		if (res->ai_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;

			m.family = AF_INET;
			m.len = 4;
			memcpy(m.bytes, &sin->sin_addr, 4);
			wildcard = sin->sin_addr.s_addr == htonl(INADDR_ANY);
		} else if (res->ai_family == AF_INET6) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)res->ai_addr;

			m.family = AF_INET6;
			m.len = 16;
			memcpy(m.bytes, &sin6->sin6_addr, 16);
			wildcard = IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
		}
		freeaddrinfo(res);
	}

	sk = nl_socket_alloc();
	if (!sk)
		return -ENOMEM;
	ret = nl_connect(sk, NETLINK_ROUTE);
	if (ret)
		goto out;
	if (wildcard) {
		ret = rtnl_route_alloc_cache(sk, AF_UNSPEC, 0, &cache);
		if (!ret)
			nl_cache_foreach(cache, match_default_route, &m);
	} else {
		ret = rtnl_addr_alloc_cache(sk, &cache);
		if (!ret)
			nl_cache_foreach(cache, match_addr, &m);
	}
out:
	if (cache)
		nl_cache_free(cache);
	nl_socket_free(sk);
	if (ret)
		return -EIO;
	return m.found ? 0 : -ENODEV;
}

/* Bring every interface to its wanted state. Called with x->lock held. */
static int reconcile(struct kderp_xdp *x)
{
	int attached = 0, last_err = -ENODEV;

	if (x->auto_ifaces)
		resolve_auto(x);
	for (int i = 0; i < x->nifs; i++) {
		struct xdp_iface *f = &x->ifs[i];
		int ifindex;

		if (!f->wanted) {
			iface_detach(f, "no longer holds the listen address");
			continue;
		}
		ifindex = (int)if_nametoindex(f->name);
		if (!ifindex) {
			iface_detach(f, "interface gone");
			continue;
		}
		if (f->link_fd >= 0 && f->ifindex == ifindex && ours_on(x, ifindex)) {
			attached++;
			continue;
		}
		iface_detach(f, "interface changed");
		last_err = iface_attach(x, f, ifindex);
		if (!last_err)
			attached++;
	}
	return attached ? attached : last_err;
}

/* Any link, address or route event: the caller re-checks everything. */
static int on_event(struct nl_msg *msg, void *arg)
{
	return NL_OK;
}

static void *watch_thread(void *arg)
{
	struct kderp_xdp *x = arg;
	struct pollfd pfd[2] = {
		{.fd = x->stop_fd, .events = POLLIN},
		{.fd = nl_socket_get_fd(x->events), .events = POLLIN},
	};

	nl_socket_modify_cb(x->events, NL_CB_VALID, NL_CB_CUSTOM, on_event, NULL);
	for (;;) {
		int ret = poll(pfd, 2, XDP_RECHECK_MS);

		if (ret < 0 && errno != EINTR)
			break;
		if (pfd[0].revents)
			break;
		if (ret > 0 && pfd[1].revents) {
			/* drain; ENOBUFS (overrun) just means "look again" */
			while (nl_recvmsgs_default(x->events) >= 0)
				;
		}
		/* timeouts re-check too: cheap, and catches missed events */
		pthread_mutex_lock(&x->lock);
		reconcile(x);
		pthread_mutex_unlock(&x->lock);
	}
	return NULL;
}

static int start_watch(struct kderp_xdp *x)
{
	int ret;

	x->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (x->stop_fd < 0)
		return -errno;
	x->events = nl_socket_alloc();
	if (!x->events) {
		ret = -ENOMEM;
		goto close_stop;
	}
	nl_socket_disable_seq_check(x->events);
	if (nl_connect(x->events, NETLINK_ROUTE) ||
	    nl_socket_add_memberships(x->events, RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR,
				      RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE,
				      0) ||
	    nl_socket_set_nonblocking(x->events)) {
		ret = -EIO;
		goto free_sock;
	}
	ret = -pthread_create(&x->thread, NULL, watch_thread, x);
	if (ret)
		goto free_sock;
	x->watching = true;
	return 0;

free_sock:
	nl_socket_free(x->events);
	x->events = NULL;
close_stop:
	close(x->stop_fd);
	x->stop_fd = -1;
	return ret;
}

/* Parse "a,b:generic,auto" into x->ifs. */
static int parse_ifaces(struct kderp_xdp *x, const char *list)
{
	char *copy = strdup(list), *save = NULL, *tok;
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		enum xdp_mode_req req = MODE_ANY;
		char *colon = strchr(tok, ':');
		struct xdp_iface *f;

		if (colon) {
			*colon = '\0';
			if (!strcmp(colon + 1, "native")) {
				req = MODE_NATIVE;
			} else if (!strcmp(colon + 1, "generic")) {
				req = MODE_GENERIC;
			} else {
				log_err("xdp: unknown mode \"%s\" for %s (native|generic)",
					colon + 1, tok);
				ret = -EINVAL;
				break;
			}
		}
		if (!strcmp(tok, "auto")) {
			x->auto_ifaces = true;
			continue;
		}
		f = iface_add(x, tok, req);
		if (!f) {
			log_err("xdp: bad or too many interfaces at \"%s\"", tok);
			ret = -EINVAL;
			break;
		}
		f->wanted = true;
	}
	free(copy);
	if (!ret && !x->auto_ifaces && !x->nifs)
		ret = -EINVAL;
	return ret;
}

struct kderp_xdp *kderp_xdp_open(const char *ifaces, const char *listen_host, int port)
{
	struct kderp_xdp *x;
	size_t hl;
	int ret;

	if (!ifaces || !ifaces[0]) {
		errno = EINVAL;
		return NULL;
	}
	x = kderp_xdp_load(port);
	if (!x)
		return NULL;

	/* the listen host as written in -a, brackets dropped */
	if (listen_host) {
		hl = strlen(listen_host);
		if (hl >= 2 && listen_host[0] == '[' && listen_host[hl - 1] == ']')
			snprintf(x->listen_host, sizeof(x->listen_host), "%.*s", (int)(hl - 2),
				 listen_host + 1);
		else
			snprintf(x->listen_host, sizeof(x->listen_host), "%s", listen_host);
	}
	ret = parse_ifaces(x, ifaces);
	if (ret)
		goto fail;

	pthread_mutex_lock(&x->lock);
	ret = reconcile(x);
	pthread_mutex_unlock(&x->lock);
	if (ret <= 0) {
		if (!ret)
			ret = -ENODEV;
		goto fail;
	}
	return x;

fail:
	kderp_xdp_detach(x);
	errno = -ret;
	return NULL;
}

int kderp_xdp_watch(struct kderp_xdp *x)
{
	int ret = start_watch(x);

	if (ret)
		log_warn("xdp: cannot watch interfaces (%s); no re-attach on changes",
			 strerror(-ret));
	return ret;
}

struct kderp_xdp *kderp_xdp_attach(const char *ifaces, const char *listen_host, int port)
{
	struct kderp_xdp *x = kderp_xdp_open(ifaces, listen_host, port);

	if (x)
		kderp_xdp_watch(x);
	return x;
}

void kderp_xdp_detach(struct kderp_xdp *x)
{
	uint64_t one = 1;

	if (!x)
		return;
	if (x->watching) {
		if (write(x->stop_fd, &one, sizeof(one)) != sizeof(one))
			log_warn("xdp: cannot stop the watcher: %s", strerror(errno));
		pthread_join(x->thread, NULL);
	}
	if (x->events)
		nl_socket_free(x->events);
	if (x->stop_fd >= 0)
		close(x->stop_fd);
	for (int i = 0; i < x->nifs; i++)
		iface_detach(&x->ifs[i], "shutdown");
	stun_xdp_bpf__destroy(x->skel);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

const char *kderp_xdp_mode(struct kderp_xdp *x, const char *ifname)
{
	const char *mode = NULL;
	struct xdp_iface *f;

	if (!x || !ifname)
		return NULL;
	pthread_mutex_lock(&x->lock);
	f = iface_find(x, ifname);
	if (f && f->link_fd >= 0 && ours_on(x, f->ifindex))
		mode = f->native ? "native" : "generic";
	pthread_mutex_unlock(&x->lock);
	return mode;
}

/* ---- varz ---------------------------------------------------------------- */

static void varz_series(char *buf, size_t len, size_t *off, const char *name, const char *help,
			const struct kderp_stun_counter *c, bool bytes)
{
	appendf(buf, len, off, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	if (!c)
		return;
	for (unsigned int af = 0; af < KDERP_STUN_NR_AF; af++)
		for (unsigned int end = 0; end < KDERP_STUN_NR_END; end++)
			for (unsigned int out = 0; out < KDERP_STUN_NR_OUT; out++) {
				const struct kderp_stun_counter *v =
					&c[kderp_stun_counter_idx(af, out, end)];

				if (!v->packets)
					continue;
				appendf(buf, len, off,
					"%s{address_family=\"%s\",prog_end=\"%s\",xdp_outcome=\"%"
					"s\"} "
					"%llu\n",
					name, af_names[af], end_names[end], outcome_names[out],
					(unsigned long long)(bytes ? v->bytes : v->packets));
			}
}

int kderp_xdp_varz(const struct kderp_xdp *x, char *buf, size_t len)
{
	struct kderp_stun_counter c[KDERP_STUN_NR_COUNTERS];
	bool have = x && !kderp_xdp_read_counters(x, c);
	size_t off = 0;

	if (buf && len)
		buf[0] = '\0';
	else
		len = 0;
	varz_series(buf, len, &off, "xdp_stun_server_bytes_total",
		    "Bytes of packets seen by the XDP STUN program", have ? c : NULL, true);
	varz_series(buf, len, &off, "xdp_stun_server_packets_total",
		    "Packets seen by the XDP STUN program", have ? c : NULL, false);
	return (int)off;
}
