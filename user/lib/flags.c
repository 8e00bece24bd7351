// SPDX-License-Identifier: MIT
/* flags.c - Go flag package syntax, so derper unit files carry over. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "util.h"

const struct flag *flags_find(const struct flag *flags, int nflags, const char *name)
{
	for (int i = 0; i < nflags; i++)
		if (strcmp(flags[i].name, name) == 0)
			return &flags[i];
	return NULL;
}

static int set_value(struct flag *f, const char *v, char *err, size_t errlen)
{
	char *end;

	switch (f->type) {
	case FLAG_BOOL:
		if (parse_go_bool(v, f->ptr) < 0)
			goto bad;
		break;
	case FLAG_STRING:
		*(const char **)f->ptr = v;
		break;
	case FLAG_INT: {
		long l;

		errno = 0;
		l = strtol(v, &end, 0);
		if (errno || *end || end == v || l < INT_MIN || l > INT_MAX)
			goto bad;
		*(int *)f->ptr = (int)l;
		break;
	}
	case FLAG_DURATION:
		if (parse_duration_ns(v, f->ptr) < 0)
			goto bad;
		break;
	case FLAG_FLOAT: {
		double d;

		errno = 0;
		d = strtod(v, &end);
		if (errno || *end || end == v)
			goto bad;
		*(double *)f->ptr = d;
		break;
	}
	}
	f->set = true;
	return 0;
bad:
	snprintf(err, errlen, "invalid value \"%s\" for flag -%s", v, f->name);
	return -EINVAL;
}

int flags_parse(struct flag *flags, int nflags, int argc, char **argv, char *err, size_t errlen)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		char name[128];
		const char *eq, *val = NULL;
		struct flag *f;
		size_t nl;

		if (a[0] != '-' || a[1] == 0)
			break;
		a++;
		if (a[0] == '-') {
			a++;
			if (a[0] == 0) {
				i++;
				break;
			}
		}
		if (a[0] == '-' || a[0] == '=') {
			snprintf(err, errlen, "bad flag syntax: %s", argv[i]);
			return -1;
		}
		eq = strchr(a, '=');
		nl = eq ? (size_t)(eq - a) : strlen(a);
		if (nl >= sizeof(name)) {
			snprintf(err, errlen, "flag provided but not defined: -%.20s...", a);
			return -1;
		}
		memcpy(name, a, nl);
		name[nl] = 0;
		if (eq)
			val = eq + 1;
		if (strcmp(name, "h") == 0 || strcmp(name, "help") == 0) {
			snprintf(err, errlen, "help requested");
			return -2;
		}
		f = (struct flag *)flags_find(flags, nflags, name);
		if (!f) {
			snprintf(err, errlen, "flag provided but not defined: -%s", name);
			return -1;
		}
		if (f->type == FLAG_BOOL) {
			if (set_value(f, val ? val : "true", err, errlen) < 0)
				return -1;
			continue;
		}
		if (!val) {
			if (i + 1 >= argc) {
				snprintf(err, errlen, "flag needs an argument: -%s", name);
				return -1;
			}
			val = argv[++i];
		}
		if (set_value(f, val, err, errlen) < 0)
			return -1;
	}
	return i;
}

void flags_usage(const struct flag *flags, int nflags, FILE *out)
{
	static const char *const tn[] = {"", " string", " int", " duration", " float"};

	for (int i = 0; i < nflags; i++)
		fprintf(out, "  -%s%s\n    \t%s\n", flags[i].name, tn[flags[i].type],
			flags[i].help);
}
