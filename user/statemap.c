// SPDX-License-Identifier: MIT
/* statemap.c - counters and peer records in ordinary memory. */
#include "server.h"
#include "statemap.h"

int statemap_init(struct server *s)
{
	for (int i = 0; i < s->nworkers; i++)
		s->workers[i].stats = &s->workers[i].stats_local;
	return 0;
}

void statemap_conn_open(struct conn *c)
{
	(void)c;
}

void statemap_conn_update(struct conn *c)
{
	(void)c;
}

void statemap_conn_close(struct conn *c)
{
	(void)c;
}

void statemap_fini(struct server *s)
{
	(void)s;
}
