/* SPDX-License-Identifier: MIT */
/* util.h - small helpers: hex, time, durations, addresses. */
#ifndef KDERP_UTIL_H
#define KDERP_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define NSEC_PER_SEC 1000000000ULL
#define NSEC_PER_MSEC 1000000ULL

uint64_t now_ns(void); /* CLOCK_MONOTONIC */

void hex_encode(char *out, const uint8_t *in, size_t n); /* out: 2n+1 bytes */
int hex_decode(uint8_t *out, size_t n, const char *in, size_t inlen); /* exact length */

/* Short, non-secret form of a public key for logs: first 8 hex digits. */
const char *key_short(const uint8_t key[32], char buf[16]);

/* Go time.ParseDuration subset: "15s", "10m0s", "1h2m", "500ms", "0". */
int parse_duration_ns(const char *s, int64_t *out);
int parse_go_bool(const char *s, bool *out);

/* Split "host:port", "[v6]:port", ":port"; host may come back empty. */
int split_host_port(const char *in, char *host, size_t hostlen, char *port, size_t portlen);

/* "ip:port" / "[ip]:port" of a sockaddr. */
void sockaddr_str(const struct sockaddr *sa, char *out, size_t len);

/*
 * A socket address as 16 bytes (IPv4 as ::ffff:a.b.c.d) and a port in host
 * order; all zero for other families. *port may be NULL.
 */
void sockaddr_to_mapped16(const struct sockaddr_storage *ss, uint8_t out[16], uint16_t *port);

/* snprintf at *off that keeps counting after truncation (*off ends at the
 * full length, as snprintf's return value would). */
void appendf(char *buf, size_t len, size_t *off, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

struct stat;
/* Owned by root or by this process's user, and writable by no one else:
 * nobody else can have put anything inside. */
bool stat_private(const struct stat *st);

/* Entries of a directory, "." and ".." left out (e.g. /proc/self/fd), or -1. */
long dir_entries(const char *path);

/* Read all of a small file; caller frees. NULL + errno on failure. */
char *read_file(const char *path, size_t max, size_t *len);

#endif
