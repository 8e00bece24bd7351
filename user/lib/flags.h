/* SPDX-License-Identifier: MIT */
/* flags.h - command-line flags with Go's flag package syntax. */
#ifndef KDERP_FLAGS_H
#define KDERP_FLAGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum flag_type { FLAG_BOOL, FLAG_STRING, FLAG_INT, FLAG_DURATION, FLAG_FLOAT };

struct flag {
	const char *name;
	enum flag_type type;
	void *ptr; /* bool*, const char**, int*, int64_t* (ns), double* */
	const char *help;
	bool set; /* given on the command line */
};

/*
 * Parse argv like Go's flag package: -x and --x, -x=v and -x v for non-bools,
 * -x or -x=true|false for bools, "--" ends flags, the first non-flag ends
 * flags. Returns the index of the first non-flag argument, or -1 with a
 * message in err (which the caller prints with the usage).
 */
int flags_parse(struct flag *flags, int nflags, int argc, char **argv, char *err, size_t errlen);
void flags_usage(const struct flag *flags, int nflags, FILE *out);
const struct flag *flags_find(const struct flag *flags, int nflags, const char *name);

#endif
