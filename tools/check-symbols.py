#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""check-symbols.py - the link-level twin of check-layers.sh.

Usage: tools/check-symbols.py [--graph] OBJECT...

Reads the built objects with nm: object A depends on object B when A uses a
symbol B defines. Prints the graph with --graph; otherwise exits 1, naming
them, when some objects call each other in a cycle (a strongly connected
set of more than one object), which an include graph cannot see: a .c file
may call into a module whose header it never includes directly.
"""
import os
import subprocess
import sys


def graph(objs):
    defs, uses = {}, {}
    for o in objs:
        name = os.path.basename(o)[:-2]
        out = subprocess.run(["nm", o], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            f = line.split()
            if len(f) == 3 and f[1] in "TDBR":
                defs[f[2]] = name
            elif len(f) == 2 and f[0] == "U":
                uses.setdefault(name, set()).add(f[1])
    g = {os.path.basename(o)[:-2]: set() for o in objs}
    for a, syms in uses.items():
        g[a] |= {defs[s] for s in syms if s in defs and defs[s] != a}
    return g


def cycles(g):
    """Tarjan's strongly connected components of more than one node."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main(argv):
    show = "--graph" in argv
    objs = [a for a in argv if a != "--graph"]
    g = graph(objs)
    if show:
        for v in sorted(g):
            print(f"{v} -> {' '.join(sorted(g[v]))}".rstrip())
        return 0
    bad = cycles(g)
    for c in bad:
        print(f"check-symbols: {', '.join(c)} call each other in a cycle", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
