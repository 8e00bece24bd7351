#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""run-bench.py - `make bench`: kderpd vs Go derper vs the ceiling relay.

Runs every server one at a time on loopback, alternates the order of the
servers between repeats (A/B), takes the median of the repeats and writes:

  OUTPUT/bench/results.json   one object per measured point
  OUTPUT/bench/summary.json   medians, min-max spread and ratios
  OUTPUT/bench/steps.json     every ceiling-search step
  OUTPUT/bench/<server>.txt   Go benchmark lines (for benchstat)
  Documentation/performance.md and Documentation/performance-relay.png

Every measurement is bounded in time; every server is stopped after use.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HOSTNAME = "derp1.test"


def log(msg):
    el = time.monotonic() - T0
    print(f"[bench {el:6.1f}s] {msg}", file=sys.stderr, flush=True)


T0 = time.monotonic()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, secs=15.0):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def raise_nofile():
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Bench:
    def __init__(self, args):
        self.out = args.output
        self.dir = os.path.join(self.out, "bench")
        self.quick = args.quick
        self.derper = args.derper
        self.kderpd = os.path.join(self.out, "kderpd")
        self.ceiling = os.path.join(self.dir, "ceiling-relay")
        self.loadgen = os.path.join(self.out, "kderp-bench")
        self.doc = args.doc
        self.repeats = args.repeats or (1 if self.quick else 3)
        self.budget = 170 if self.quick else 1140
        self.ncpu = os.cpu_count() or 1
        self.pin = args.pin != 0 and self.ncpu >= 2
        self.pin_auto = args.pin < 0 and self.ncpu >= 2
        self.pin_probe_result = None
        self.server_cpus = "0"
        self.bench_cpus = ",".join(str(c) for c in range(1, self.ncpu)) if self.ncpu > 1 else "0"
        self.workers = args.workers
        self.only = [x for x in (getattr(args, "only", "") or "").split(",") if x]
        self.carried = None
        self.points = []
        self.steps = []
        self.errors = []
        self.truncated = False
        self.benchlines = {}
        self.derper_ceiling = 0.0
        os.makedirs(self.dir, exist_ok=True)
        self.certdir = os.path.join(self.dir, "certs")
        self.logdir = os.path.join(self.dir, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.servers = [s for s in ("kderpd", "derper") if self.have(s)]
        self.missing = [s for s in ("kderpd", "derper") if not self.have(s)]

    def have(self, name):
        path = {"kderpd": self.kderpd, "derper": self.derper}[name]
        return os.access(path, os.X_OK)

    def over_budget(self):
        if time.monotonic() - T0 > self.budget:
            if not self.truncated:
                log("time budget reached: skipping the remaining measurements")
            self.truncated = True
        return self.truncated

    # ---- servers ----

    def make_cert(self):
        os.makedirs(self.certdir, exist_ok=True)
        crt = os.path.join(self.certdir, HOSTNAME + ".crt")
        key = os.path.join(self.certdir, HOSTNAME + ".key")
        if os.path.exists(crt) and os.path.exists(key):
            return
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "30", "-subj", "/CN=" + HOSTNAME,
             "-addext", "subjectAltName=DNS:" + HOSTNAME,
             "-keyout", key, "-out", crt],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def server_cmd(self, name, port, tls):
        addr = f"127.0.0.1:{port}"
        if name == "ceiling":
            return [self.ceiling, "-a", addr, "-d", "900"]
        keyfile = os.path.join(self.dir, f"{name}.key.json")
        binary = self.kderpd if name == "kderpd" else self.derper
        cmd = [binary, "-a", addr, "--stun=false", "-c", keyfile]
        if tls:
            # no port-80 listener: port 80 may be taken, and the bench never uses it
            cmd += ["--certmode=manual", "--certdir", self.certdir, "--hostname", HOSTNAME,
                    "--http-port=-1"]
        if name == "kderpd":
            # own pin directory, so a kderpd running elsewhere does not block this one
            cmd += ["--bpffs-dir", f"/sys/fs/bpf/kderp-bench-{port}"]
            workers = self.workers
            if workers < 0:
                # auto: one worker on the one pinned core, else kderpd's default (per CPU)
                workers = 1 if self.pin else 0
            if workers:
                cmd += ["--workers", str(workers)]
        return cmd

    def start(self, name, tls):
        port = free_port()
        cmd = self.server_cmd(name, port, tls)
        if self.pin:
            cmd = ["taskset", "-c", self.server_cpus] + cmd
        logf = open(os.path.join(self.logdir, f"{name}.log"), "ab")
        logf.write(f"\n== {' '.join(cmd)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                preexec_fn=raise_nofile, cwd=self.dir)
        logf.close()
        if not wait_port(port, proc):
            self.stop(proc)
            raise RuntimeError(f"{name} did not start (see $(OUTPUT)/bench/logs/{name}.log)")
        return proc, port

    @staticmethod
    def stop(proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ---- one kderp-bench run ----

    def run_bench(self, name, port, tls, mode, args, timeout):
        jpath = os.path.join(self.dir, "last.json")
        if os.path.exists(jpath):
            os.unlink(jpath)
        cmd = [self.loadgen, mode, "-s", f"127.0.0.1:{port}", "--label", name,
               "--json", jpath] + args
        if tls:
            cmd += ["--tls", "--sni", HOSTNAME]
        if self.pin:
            cmd = ["taskset", "-c", self.bench_cpus] + cmd
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=timeout, stdin=subprocess.DEVNULL)
            out, rc = r.stdout.decode(errors="replace"), r.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = (e.stdout or b"").decode(errors="replace"), -1
        with open(os.path.join(self.logdir, "kderp-bench.log"), "a") as f:
            f.write(f"\n== {' '.join(cmd)}\n{out}")
        for line in out.splitlines():
            if line.startswith("Benchmark"):
                self.benchlines.setdefault(name, []).append(line)
        res = []
        if os.path.exists(jpath):
            with open(jpath) as f:
                res = json.load(f)
        return rc, res, out

    def measure(self, name, tls, mode, args, timeout, scenario, extra=None, pid_arg=True):
        """Start the server, run one bench, stop it; return result objects."""
        try:
            proc, port = self.start(name, tls)
        except RuntimeError as e:
            self.errors.append(f"{scenario} {name}: {e}")
            log(str(e))
            return []
        try:
            a = list(args)
            if pid_arg:
                a += ["--server-pid", str(proc.pid)]
            rc, res, out = self.run_bench(name, port, tls, mode, a, timeout)
            died = proc.poll() is not None
        finally:
            self.stop(proc)
        if rc != 0 or died:
            why = [l for l in out.splitlines() if "FAILED" in l or "failed" in l][:1]
            msg = f"{scenario} {name}: kderp-bench exit {rc}" + (" (server died)" if died else "")
            if why:
                msg += ": " + why[0].strip()
            self.errors.append(msg)
            log(msg)
        for r in res:
            r["scenario"] = scenario
            m, sc, bc = (r.get("machine_cpu_s"), r.get("server_cpu_s"), r.get("bench_cpu_s"))
            if all(isinstance(x, (int, float)) for x in (m, sc, bc)):
                r["other_cpu_s"] = max(0.0, m - sc - bc)
            r["loadavg"] = os.getloadavg()[0]
            if r.get("mode") in ("idle", "churn"):
                r["size"], r["pairs"] = 0, 0  # no packets in these modes
            if extra:
                r.update(extra)
        return res

    # ---- scenarios ----

    def relay_scenarios(self):
        s = [("relay-1400-p10-plain", 1400, 10, False),
             ("relay-1400-p10-tls", 1400, 10, True),
             ("relay-64-p100-plain", 64, 100, False)]
        if not self.quick:
            s += [("relay-1400-p1-plain", 1400, 1, False),
                  ("relay-1400-p100-plain", 1400, 100, False),
                  ("relay-1400-p1-tls", 1400, 1, True),
                  ("relay-1400-p100-tls", 1400, 100, True)]
        return s

    def ceilings(self, rep):
        order = self.rotate(["kderpd", "derper", "ceiling"], rep)
        for scen, size, pairs, tls in self.relay_scenarios():
            steps, dur = self.search_params()
            if not self.quick and pairs != 10:
                steps -= 1  # the headline 10-pair rows get the finest search
            lo, hi = self.search_range(size)
            for name in order:
                if self.over_budget():
                    return
                if name == "ceiling" and tls:
                    continue
                if name != "ceiling" and name not in self.servers:
                    continue
                log(f"rep {rep + 1}: {scen} on {name}")
                res = self.measure(name, tls, "throughput",
                                   ["-S", str(size), "-p", str(pairs), "-t", str(dur),
                                    "--search", f"{lo}:{hi}:{steps}", "--warmup", "0.5"],
                                   60 + steps * (dur + 15), scen, {"repeat": rep})
                for r in res:
                    if r["mode"] == "ceiling":
                        r["kind"] = "ceiling"
                        self.points.append(r)
                    else:
                        self.steps.append(r)

    def search_params(self):
        return (4, 1.0) if self.quick else (6, 1.0)

    @staticmethod
    def search_range(size):
        return (10, 1500) if size < 200 else (100, 12000)

    def rotate(self, names, rep):
        k = rep % len(names)
        return names[k:] + names[:k]

    def sweep(self):
        rates = [500, 1000, 2000, 4000] if self.quick else \
            [250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000]
        dur = 1.0 if self.quick else 1.5
        for name in ["derper", "kderpd", "ceiling"]:
            if name != "ceiling" and name not in self.servers:
                continue
            for rate in rates:
                if self.over_budget():
                    return
                log(f"sweep {name} {rate} Mbit/s")
                res = self.measure(name, False, "throughput",
                                   ["-S", "1400", "-p", "10", "-t", str(dur), "-r", str(rate)],
                                   60, "sweep-1400-p10-plain", {"repeat": 0, "kind": "sweep"})
                self.points += res

    def latency(self, rep, derper_ceiling):
        dur = 1.5 if self.quick else 3.0
        for level in (0.5, 1.0):
            rate = max(10.0, level * derper_ceiling)
            for name in self.rotate(["kderpd", "derper", "ceiling"], rep):
                if self.over_budget():
                    return
                if name != "ceiling" and name not in self.servers:
                    continue
                scen = f"latency-{int(level * 100)}pct-1400-p10-plain"
                log(f"rep {rep + 1}: {scen} ({rate:.0f} Mbit/s) on {name}")
                res = self.measure(name, False, "latency",
                                   ["-S", "1400", "-p", "10", "-t", str(dur), "-r", f"{rate:.1f}"],
                                   60, scen, {"repeat": rep, "kind": "latency", "level": level})
                self.points += res

    def idle(self, rep):
        clients = 2000 if self.quick else 10000
        for name in self.rotate(["kderpd", "derper"], rep):
            if self.over_budget():
                return
            if name not in self.servers:
                continue
            log(f"rep {rep + 1}: idle {clients} clients on {name}")
            res = self.measure(name, False, "idle",
                               ["-n", str(clients), "--hold", "2", "--connect-threads", "4"],
                               120, f"idle-{clients}", {"repeat": rep, "kind": "idle"})
            self.points += res

    def churn(self, rep):
        dur = 1.5 if self.quick else 3.0
        for name in self.rotate(["kderpd", "derper"], rep):
            if self.over_budget():
                return
            if name not in self.servers:
                continue
            log(f"rep {rep + 1}: handshake churn on {name}")
            res = self.measure(name, False, "churn",
                               ["-t", str(dur), "--connect-threads", "4"],
                               60, "handshakes", {"repeat": rep, "kind": "churn"})
            self.points += res

    # ---- STUN: derper, kderpd userspace, kderpd XDP, each across a veth pair ----

    STUN_SRV, STUN_CLI, STUN_PORT, STUN_HTTP = "10.79.0.1", "10.79.0.2", 3478, 3340

    def stun_loads(self):
        """(name, requests/s) offered to every server; 0 = as fast as the sender can."""
        return [("max", 0), ("paced", 50000)]

    def stun_repeats(self):
        return max(3, self.repeats)  # cheap enough for three alternating repeats even in QUICK

    def stun_servers(self):
        names = []
        if "derper" in self.servers:
            names.append("derper")
        if "kderpd" in self.servers:
            names += ["kderpd", "kderpd-xdp"]
        return names

    def netns_up(self, tag):
        """A fresh pair of namespaces joined by veth; returns the names or raises."""
        sfx = f"{os.getpid() & 0xffff:04x}{tag:02x}"
        ns = {"srv": f"kbsS{sfx}", "cli": f"kbsC{sfx}", "if_s": f"kbs{sfx}", "if_c": f"kbc{sfx}"}
        self.netns_down(ns)
        cmds = [["ip", "netns", "add", ns["srv"]], ["ip", "netns", "add", ns["cli"]],
                ["ip", "-n", ns["srv"], "link", "add", ns["if_s"], "type", "veth", "peer",
                 "name", ns["if_c"], "netns", ns["cli"]],
                ["ip", "-n", ns["srv"], "addr", "add", self.STUN_SRV + "/24", "dev", ns["if_s"]],
                ["ip", "-n", ns["cli"], "addr", "add", self.STUN_CLI + "/24", "dev", ns["if_c"]],
                ["ip", "-n", ns["srv"], "link", "set", "lo", "up"],
                ["ip", "-n", ns["cli"], "link", "set", "lo", "up"],
                ["ip", "-n", ns["srv"], "link", "set", ns["if_s"], "up"],
                ["ip", "-n", ns["cli"], "link", "set", ns["if_c"], "up"],
                # veth would hand XDP packets whose UDP checksum is only the pseudo-header
                # sum: turn TX checksum offload off on the sender's side (SIOCETHTOOL,
                # ETHTOOL_STXCSUM = 0), for every server alike
                ["ip", "netns", "exec", ns["cli"], sys.executable, "-c",
                 "import array,fcntl,socket,struct,sys\n"
                 "ev=array.array('I',[0x17,0])\n"
                 "fcntl.ioctl(socket.socket(),0x8946,"
                 "struct.pack('16sP',sys.argv[1].encode(),ev.buffer_info()[0]))",
                 ns["if_c"]]]
        for c in cmds:
            r = subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               timeout=20)
            if r.returncode:
                self.netns_down(ns)
                raise RuntimeError(f"{' '.join(c[:6])}: {r.stderr.decode().strip()}")
        return ns

    @staticmethod
    def netns_down(ns):
        for k in ("srv", "cli"):
            subprocess.run(["ip", "netns", "del", ns[k]], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=20)

    def stun_server_cmd(self, name, ns):
        addr = f"{self.STUN_SRV}:{self.STUN_HTTP}"
        keyfile = os.path.join(self.dir, f"{name}.key.json")
        if name == "derper":
            cmd = [self.derper, "-a", addr, "-c", keyfile, "--stun",
                   "--stun-port", str(self.STUN_PORT)]
        else:
            cmd = [self.kderpd, "-a", addr, "-c", keyfile, "--stun-port", str(self.STUN_PORT),
                   "--bpffs-dir", f"/sys/fs/bpf/kderp-bench-stun-{os.getpid()}"]
            workers = self.workers if self.workers >= 0 else (1 if self.pin else 0)
            if workers:
                cmd += ["--workers", str(workers)]
            if name == "kderpd-xdp":
                cmd += [f"--xdp-iface={ns['if_s']}:generic"]
        if self.pin:
            cmd = ["taskset", "-c", self.server_cpus] + cmd
        return ["ip", "netns", "exec", ns["srv"]] + cmd

    def stun_bench(self, name, ns, pid, args, timeout, jpath=None):
        cmd = ["ip", "netns", "exec", ns["cli"]]
        if self.pin:
            cmd += ["taskset", "-c", self.bench_cpus]
        # the target is in a namespace of ours, not loopback
        cmd += [self.loadgen, "stun", "-s", f"{self.STUN_SRV}:{self.STUN_PORT}",
                "--label", name, "--allow-remote", "--server-pid", str(pid)] + args
        if jpath:
            cmd += ["--json", jpath]
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=timeout, stdin=subprocess.DEVNULL)
            out, rc = r.stdout.decode(errors="replace"), r.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = (e.stdout or b"").decode(errors="replace"), -1
        with open(os.path.join(self.logdir, "kderp-bench.log"), "a") as f:
            f.write(f"\n== {' '.join(cmd)}\n{out}")
        return rc, out

    def stun_measure(self, name, rep, tag, dur):
        """One server in fresh namespaces, every load once; appends to self.points."""
        try:
            ns = self.netns_up(tag)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            self.errors.append(f"stun {name}: namespaces: {e}")
            log(f"stun {name}: cannot create namespaces: {e}")
            return
        proc = None
        try:
            cmd = self.stun_server_cmd(name, ns)
            logf = open(os.path.join(self.logdir, f"{name}.log"), "ab")
            logf.write(f"\n== {' '.join(cmd)}\n".encode())
            logf.flush()
            # `ip netns exec` and taskset exec the server: proc.pid is the server
            proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                    preexec_fn=raise_nofile, cwd=self.dir)
            logf.close()
            # ready = a short STUN exchange answered end to end (bounded: 40 x 0.25 s)
            ready = False
            for _ in range(40):
                if proc.poll() is not None:
                    break
                rc, _ = self.stun_bench(name, ns, proc.pid, ["-t", "0.1", "-r", "1000"], 10)
                if rc == 0:
                    ready = True
                    break
                time.sleep(0.25)
            if not ready:
                msg = f"stun {name}: server not answering (see $(OUTPUT)/bench/logs/{name}.log)"
                self.errors.append(msg)
                log(msg)
                return
            for load, rate in self.stun_loads():
                jpath = os.path.join(self.dir, "last.json")
                if os.path.exists(jpath):
                    os.unlink(jpath)
                rc, out = self.stun_bench(name, ns, proc.pid,
                                          ["-t", str(dur), "-r", str(rate),
                                           "--scenario", f"stun-{load}"], dur + 30, jpath)
                died = proc.poll() is not None
                if rc != 0 or died:
                    msg = (f"stun-{load} {name}: kderp-bench exit {rc}" +
                           (" (server died)" if died else ""))
                    self.errors.append(msg)
                    log(msg)
                if os.path.exists(jpath):
                    with open(jpath) as f:
                        for r in json.load(f):
                            r.update({"scenario": f"stun-{load}", "kind": "stun",
                                      "repeat": rep, "load": load,
                                      "loadavg": os.getloadavg()[0]})
                            self.points.append(r)
                if died:
                    break
        finally:
            if proc:
                self.stop(proc)
            self.netns_down(ns)

    def stun(self):
        if os.geteuid() != 0 or not shutil.which("ip"):
            self.errors.append("stun: needs root and iproute2 (network namespaces)")
            log("stun: skipped (needs root and iproute2)")
            return
        dur = 1.0 if self.quick else 3.0
        for rep in range(self.stun_repeats()):
            for i, name in enumerate(self.rotate(self.stun_servers(), rep)):
                if self.over_budget():
                    return
                log(f"rep {rep + 1}: stun on {name}")
                self.stun_measure(name, rep, rep * 8 + i, dur)

    # ---- aggregation ----

    def values(self, scenario, server, key, kind=None):
        out = []
        for p in self.points:
            if p.get("scenario") != scenario or p.get("server") != server:
                continue
            if kind and p.get("kind") != kind:
                continue
            v = p.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append(float(v))
        return out

    def stat(self, scenario, server, key, kind=None):
        v = self.values(scenario, server, key, kind)
        if not v:
            return None
        return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}

    def probe_pinning(self):
        """Pinned vs unpinned, alternating, against the ceiling relay: keep the better."""
        got = {True: [], False: []}
        try:
            self.pin = False
            proc, port = self.start("ceiling", False)
        except RuntimeError as e:
            log(f"pinning probe skipped: {e}")
            self.pin = True
            return
        try:
            for i in range(3):
                for pinned in (True, False):
                    subprocess.run(["taskset", "-pc", self.server_cpus if pinned else
                                    f"0-{self.ncpu - 1}", str(proc.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    self.pin = pinned
                    rc, res, _ = self.run_bench("ceiling", port, False, "throughput",
                                                ["-S", "1400", "-p", "10", "-t", "1",
                                                 "-r", "4000"], 30)
                    if rc == 0 and res:
                        got[pinned].append(res[-1]["delivered_mbps"])
        finally:
            self.stop(proc)
        if not got[True] or not got[False]:
            self.pin = True
            return
        p, u = statistics.median(got[True]), statistics.median(got[False])
        self.pin = p >= 0.95 * u
        self.pin_probe_result = (p, u, got)
        log(f"pinning probe: pinned {p:.0f} Mbit/s, unpinned {u:.0f} Mbit/s: "
            f"{'pinning' if self.pin else 'not pinning'}")

    GROUP_OF_KIND = {"ceiling": "relay", "latency": "latency", "idle": "connections",
                     "churn": "connections", "stun": "stun", "sweep": "sweep"}

    def carry_over(self):
        """With --only: keep the last run's points of the groups not measured now."""
        try:
            with open(os.path.join(self.dir, "results.json")) as f:
                old = json.load(f)
            with open(os.path.join(self.dir, "summary.json")) as f:
                summ = json.load(f)
            with open(os.path.join(self.dir, "steps.json")) as f:
                steps = json.load(f)
        except (OSError, ValueError):
            return
        m = summ.get("meta", {})
        self.points = [p for p in old
                       if self.GROUP_OF_KIND.get(p.get("kind"), p.get("kind")) not in self.only]
        if "relay" not in self.only:
            self.steps = steps
        self.errors = [e for e in summ.get("errors", [])
                       if not any(e.startswith(g) for g in self.only)]
        self.carried = {"from": m.get("written"), "quick": m.get("quick"),
                        "repeats": m.get("repeats")} if self.points else None
        if m.get("carried_over") and set(m.get("only") or []) <= set(self.only):
            self.carried = m["carried_over"]  # everything kept comes from that older run
        if self.points and self.pin_auto:
            # the carried-over points were measured with that run's placement
            self.pin, self.pin_auto = m.get("pin", self.pin), False
            pr = m.get("pin_probe")
            if pr:
                self.pin_probe_result = (pr["pinned_mbps"], pr["unpinned_mbps"],
                                         {True: pr["pinned_runs"], False: pr["unpinned_runs"]})
        if self.points:
            log(f"--only {','.join(self.only)}: keeping {len(self.points)} points of the last "
                "run for the rest")

    def run(self):
        self.make_cert()
        if self.only:
            self.carry_over()
        if self.pin_auto:
            self.probe_pinning()
        log(f"servers: {', '.join(self.servers + ['ceiling'])}; repeats {self.repeats}; "
            f"pinning {'server cpu ' + self.server_cpus + ', bench cpu ' + self.bench_cpus if self.pin else 'off'}")
        want = lambda n: not self.only or n in self.only
        if want("relay"):
            for rep in range(self.repeats):
                self.ceilings(rep)
        dc = self.stat("relay-1400-p10-plain", "derper", "delivered_mbps", "ceiling")
        self.derper_ceiling = dc["median"] if dc else 1000.0
        if want("latency"):
            for rep in range(self.repeats):
                self.latency(rep, self.derper_ceiling)
        if want("connections"):
            for rep in range(self.repeats):
                self.idle(rep)
                self.churn(rep)
        if want("stun"):
            self.stun()
        if want("sweep"):
            self.sweep()
        self.write_outputs()

    # ---- outputs ----

    def summary(self):
        rows = []
        keys = ["delivered_mbps", "offered_mbps", "pps", "loss_pct", "p50_us", "p90_us",
                "p99_us", "p999_us", "server_cpu_s", "rss_kib", "handshakes_per_s",
                "rss_per_client_kib", "failures", "fds_before", "fds_after", "rss_before_kib",
                "rss_after_kib", "target_mbps", "answered_rps", "offered_rps",
                "server_cpu_s_per_m", "machine_cpu_s_per_m",
                "server_side_cpu_s_per_m", "machine_cpu_s", "bench_cpu_s",
                "softirq_cpu_s"]
        scen = sorted({(p["scenario"], p["server"], p.get("kind", "")) for p in self.points
                       if p.get("kind") != "sweep"})
        for sc, srv, kind in scen:
            row = {"scenario": sc, "server": srv, "kind": kind}
            for k in keys:
                st = self.stat(sc, srv, k, kind)
                if st:
                    row[k] = st
            rows.append(row)
        return rows

    def write_outputs(self):
        results = []
        for p in self.points:
            q = dict(p)
            q.setdefault("kind", q.get("mode"))
            results.append(q)
        with open(os.path.join(self.dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(self.dir, "steps.json"), "w") as f:
            json.dump(self.steps, f, indent=1)
        self.summary_rows = self.summary()
        with open(os.path.join(self.dir, "summary.json"), "w") as f:
            json.dump({"summary": self.summary_rows, "errors": self.errors,
                       "truncated": self.truncated, "meta": self.meta()}, f, indent=1)
        for name, lines in self.benchlines.items():
            with open(os.path.join(self.dir, f"{name}.txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
        png = self.plot()
        self.write_doc(png)
        log(f"wrote {self.dir}/results.json and {self.doc}")

    def meta(self):
        probe = None
        if self.pin_probe_result:
            pp, pu, got = self.pin_probe_result
            probe = {"pinned_mbps": pp, "unpinned_mbps": pu,
                     "pinned_runs": got[True], "unpinned_runs": got[False]}
        return {"pin": self.pin, "pin_probe": probe, "workers": self.workers,
                "written": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
                "only": self.only, "carried_over": self.carried,
                "repeats": self.repeats, "quick": self.quick,
                "derper_ceiling_mbps": self.derper_ceiling, "missing": self.missing}

    def report_only(self):
        """Rewrite the document and plot from the last run's JSON files."""
        with open(os.path.join(self.dir, "results.json")) as f:
            self.points = json.load(f)
        with open(os.path.join(self.dir, "steps.json")) as f:
            self.steps = json.load(f)
        with open(os.path.join(self.dir, "summary.json")) as f:
            summ = json.load(f)
        m = summ.get("meta", {})
        self.errors, self.truncated = summ.get("errors", []), summ.get("truncated", False)
        self.pin, self.workers = m.get("pin", self.pin), m.get("workers", self.workers)
        self.repeats, self.quick = m.get("repeats", self.repeats), m.get("quick", self.quick)
        dc = self.stat("relay-1400-p10-plain", "derper", "delivered_mbps", "ceiling")
        self.derper_ceiling = m.get("derper_ceiling_mbps", dc["median"] if dc else 0.0)
        self.missing = m.get("missing", self.missing)
        self.only, self.carried = m.get("only", []), m.get("carried_over")
        pr = m.get("pin_probe")
        if pr:
            self.pin_probe_result = (pr["pinned_mbps"], pr["unpinned_mbps"],
                                     {True: pr["pinned_runs"], False: pr["unpinned_runs"]})
        self.write_doc(self.plot())
        log(f"rewrote {self.doc} from {self.dir}")

    def plot(self):
        if not shutil.which("gnuplot"):
            return None
        docdir = os.path.dirname(os.path.abspath(self.doc))
        png = os.path.join(docdir, "performance-relay.png")
        series = []
        for name in ["derper", "kderpd", "ceiling"]:
            pts = sorted((p["target_mbps"], p["delivered_mbps"]) for p in self.points
                         if p.get("kind") == "sweep" and p["server"] == name
                         and p.get("target_mbps") is not None)
            if not pts:
                continue
            dat = os.path.join(self.dir, f"sweep-{name}.dat")
            with open(dat, "w") as f:
                for x, y in pts:
                    f.write(f"{x:.1f} {y:.1f}\n")
            series.append((name, dat))
        if not series:
            return None
        plots = ", ".join(f"'{dat}' using 1:2 with linespoints title '{name}'"
                          for name, dat in series)
        script = (
            "set terminal pngcairo size 800,500 font 'sans,10'\n"
            f"set output '{png}'\n"
            "set title 'DERP relay, 1,400-byte packets, 10 sender/receiver pairs, plain HTTP'\n"
            "set xlabel 'offered load (token-bucket target, Mbit/s)'\n"
            "set ylabel 'delivered (Mbit/s)'\n"
            "set key top left\nset grid\n"
            f"plot x title 'offered = delivered' with lines dashtype 2 lc rgb 'gray', {plots}\n")
        r = subprocess.run(["gnuplot"], input=script.encode(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        if r.returncode:
            log("gnuplot failed: " + r.stderr.decode(errors="replace"))
            return None
        return png

    # ---- the document ----

    def fmt(self, st, digits=0):
        if not st:
            return "n/a"
        m, lo, hi = st["median"], st["min"], st["max"]
        if st["n"] == 1:
            return f"{m:,.{digits}f}"
        return f"{m:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f})"

    @staticmethod
    def ratio(a, b, digits=2):
        if not a or not b or not b["median"]:
            return "n/a"
        return f"{a['median'] / b['median']:.{digits}f}x"

    def machine(self):
        model = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        model = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        mem = ""
        try:
            with open("/proc/meminfo") as f:
                kib = int(f.readline().split()[1])
                mem = f"{kib / 1024 / 1024:.0f} GiB"
        except (OSError, ValueError, IndexError):
            pass
        ossl = subprocess.run(["openssl", "version"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout.decode().strip()
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode().strip() or "unknown"
        return model, mem, ossl, rev

    def write_doc(self, png):
        model, mem, ossl, rev = self.machine()
        q = " QUICK=1" if self.quick else ""
        L = []
        L.append("# kderp performance\n")
        L.append(f"Written by `make bench{q}` on "
                 f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
                 f"(kderp {rev}). Raw data: `$(OUTPUT)/bench/results.json` (one object per "
                 "measured point), `summary.json` (medians and spread), `steps.json` (every "
                 "ceiling-search step) and Go benchmark lines per server in `<server>.txt` "
                 "(`benchstat derper.txt kderpd.txt`).\n")
        if self.quick:
            L.append("**This is a QUICK run**: one repeat, short steps, fewer scenarios. "
                     "Use the full `make bench` for figures to quote.\n")
        if self.only and self.carried:
            c = self.carried
            L.append(f"Only **{', '.join(self.only)}** measured in this run "
                     f"(`BENCH_ONLY={','.join(self.only)}`); every other figure is carried "
                     f"over from the {'QUICK ' if c.get('quick') else ''}run of "
                     f"{c.get('from') or 'the previous make bench'} "
                     f"({c.get('repeats')} repeat(s)).\n")
        if self.missing:
            L.append(f"**Not measured** (binary missing): {', '.join(self.missing)}.\n")
        if self.truncated:
            L.append("**Truncated**: the time budget ran out before every measurement was "
                     "taken.\n")
        L.append("## Machine\n")
        L.append(f"- CPU: {model}, {self.ncpu} cores online; memory {mem}")
        L.append(f"- Kernel: {platform.release()} ({platform.machine()})")
        L.append(f"- {ossl}; Go derper `tailscale.com/cmd/derper@{self.derper_version()}` "
                 "built by `make bench` with the local Go toolchain")
        pin = (f"servers pinned to CPU {self.server_cpus} and kderp-bench to CPU "
               f"{self.bench_cpus} with `taskset`" if self.pin else "no CPU pinning")
        if self.pin_probe_result:
            pp, pu, _ = self.pin_probe_result
            pin += (f" (chosen by a probe at the start: 3 alternating 1 s runs of 4,000 Mbit/s "
                    f"offered to the ceiling relay delivered a median {pp:,.0f} Mbit/s pinned and "
                    f"{pu:,.0f} Mbit/s unpinned)")
        workers = self.workers if self.workers >= 0 else (1 if self.pin else 0)
        L.append(f"- Placement: {pin}; kderpd started with `--workers {workers}`"
                 f"{' (one per CPU)' if workers == 0 else ''}; derper uses its Go defaults "
                 f"(GOMAXPROCS = {self.ncpu}).\n")
        L.append("## Method\n")
        L.append(
            "- One server at a time on 127.0.0.1, a fresh process for every measurement, plain "
            "HTTP (`-a 127.0.0.1:PORT --stun=false`) or TLS with a self-signed P-256 certificate "
            f"(`--certmode=manual --certdir DIR --hostname {HOSTNAME}`); kderpd and derper get "
            "the same flags.")
        L.append(
            "- The **ceiling** relay (`tools/bench/ceiling-relay.c`) does the same framing and "
            "handshake with one epoll thread, one table lookup per packet, no per-packet "
            "queues, no checks and no per-packet crypto; when a receiver's 1 MiB buffer is full "
            "it stops reading the sender (TCP back-pressure), so it never drops: about the most "
            "a user-space relay can deliver here. Plain HTTP only.")
        L.append(
            "- Load: `kderp-bench` opens P sender/receiver pairs; each sender sends SendPacket "
            "frames to its receiver at a token-bucket rate; receivers check the source key, the "
            "length and a per-pair sequence number; latency is one-way, from a CLOCK_MONOTONIC "
            "timestamp in each payload. Rates are payload bits (S bytes per packet). Loss = "
            "packets written to the server but never delivered (after a drain that ends once "
            "every packet arrived, after 0.5 s without progress, or after 3 s).")
        steps, dur = self.search_params()
        lo, hi = self.search_range(1400)
        lo64, hi64 = self.search_range(64)
        L.append(
            f"- **Ceiling** = highest delivered rate with < 1 % loss, found by a {steps}-step "
            f"{'' if self.quick else f'({steps - 1}-step for 1 and 100 pairs) '}log-scale bisection ({dur} s per step, after a 0.5 s unreported warm-up) between "
            f"{lo:,} and {hi:,} Mbit/s ({lo64} and {hi64:,} for 64-byte packets); a step is good "
            "if it loses < 1 % and delivers >= 90 % of its target, and a bad step is retried "
            "once so that one burst of outside load does not decide it.")
        L.append(
            f"- {self.repeats} repeat(s) per point; the order of the servers rotates between "
            "repeats (A/B alternation). Tables give the median and, in parentheses, the "
            "min–max spread.")
        L.append(
            "- Server CPU = user+sys seconds of the server process from `/proc/PID/stat` over the "
            "step; RSS from `/proc/PID/status`.")
        la = [p["loadavg"] for p in self.points if "loadavg" in p]
        oc = [p["other_cpu_s"] / p["duration_s"] for p in self.points
              if p.get("kind") == "ceiling" and p.get("duration_s") and "other_cpu_s" in p]
        if oc and statistics.median(oc) > 0.3:
            L.insert(3, "**Warning**: other processes used a median of "
                     f"{statistics.median(oc):.1f} of the {self.ncpu} cores while the ceilings "
                     "were measured; the figures below say more about that load than about the "
                     "relays. Re-run `make bench` on an idle machine.\n")
        if la:
            L.append(
                f"- Background: 1-minute load average {statistics.median(la):.1f} (median over "
                f"the run, max {max(la):.1f}); CPU used by other processes during ceiling steps "
                f"{statistics.median(oc) if oc else 0:.2f} cores (median). The machine was "
                "shared with other work, which is why spreads can be wide.")
        L.append(
            f"- This machine has only {self.ncpu} cores, which the load generator and the "
            f"server {'get one each' if self.pin else 'share'}: on loopback the load generator "
            "spends about as much CPU on its sockets as a relay does, so the ceiling row shows "
            "where the machine, not a relay, stops.\n")

        L.append("## Throughput at the ceiling (Mbit/s delivered, < 1 % loss)\n")
        L.append("| scenario | derper | kderpd | ceiling | kderpd/derper | kderpd/ceiling |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
        for scen, size, pairs, tls in self.relay_scenarios():
            d = self.stat(scen, "derper", "delivered_mbps", "ceiling")
            k = self.stat(scen, "kderpd", "delivered_mbps", "ceiling")
            c = self.stat(scen, "ceiling", "delivered_mbps", "ceiling")
            label = f"{size:,} B, {pairs} pair{'s' if pairs > 1 else ''}, {'TLS' if tls else 'plain'}"
            L.append(f"| {label} | {self.fmt(d)} | {self.fmt(k)} | "
                     f"{self.fmt(c) if not tls else '—'} | {self.ratio(k, d)} | "
                     f"{self.ratio(k, c) if not tls else '—'} |")
        L.append("")
        L.append("0 means that no step from the lowest rate tried up stayed under 1 % loss. "
                 "The ceiling relay is a reference, not a hard bound: it runs one thread and "
                 "copies each packet once into a per-destination buffer, so a kderpd/ceiling "
                 "ratio above 1 means kderpd forwards more cheaply; near 10 Gbit/s loopback TCP "
                 "and the load generator are the limit.\n")
        L.append("At the ceiling step (medians): packets/s, loss, one-way latency and server "
                 "CPU.\n")
        L.append("| scenario | server | pkt/s | loss % | p50 µs | p99 µs | server CPU s | RSS KiB |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for scen, size, pairs, tls in self.relay_scenarios():
            for srv in ("derper", "kderpd", "ceiling"):
                st = self.stat(scen, srv, "pps", "ceiling")
                if not st:
                    continue
                g = lambda k, d=0: self.fmt_m(self.stat(scen, srv, k, "ceiling"), d)
                L.append(f"| {scen} | {srv} | {g('pps')} | {g('loss_pct', 2)} | "
                         f"{g('p50_us')} | {g('p99_us')} | {g('server_cpu_s', 2)} | "
                         f"{g('rss_kib')} |")
        L.append("")

        L.append(f"## Latency under load (1,400 B, 10 pairs, plain; derper's ceiling "
                 f"{self.derper_ceiling:,.0f} Mbit/s)\n")
        L.append("| load | server | delivered Mbit/s | loss % | p50 µs | p90 µs | p99 µs | "
                 "p99.9 µs |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for level in (50, 100):
            scen = f"latency-{level}pct-1400-p10-plain"
            for srv in ("derper", "kderpd", "ceiling"):
                if not self.stat(scen, srv, "p99_us", "latency"):
                    continue
                g = lambda k, d=0: self.fmt(self.stat(scen, srv, k, "latency"), d)
                L.append(f"| {level} % | {srv} | {g('delivered_mbps')} | {g('loss_pct', 2)} | "
                         f"{g('p50_us')} | {g('p90_us')} | {g('p99_us')} | {g('p999_us')} |")
        L.append("")
        k100 = self.stat("latency-100pct-1400-p10-plain", "kderpd", "p99_us", "latency")
        d100 = self.stat("latency-100pct-1400-p10-plain", "derper", "p99_us", "latency")
        L.append(f"p99 ratio kderpd/derper at derper's ceiling: {self.ratio(k100, d100)}.\n")
        L.append("derper drops when a receiver's 32-packet queue is full; a relay that pushes "
                 "back through TCP instead (kderpd, the ceiling relay) loses nothing but keeps "
                 "the excess in socket buffers, so where derper shows loss it shows tail "
                 "latency. Latency is measured from the moment a packet is due to be sent, so "
                 "it includes the time it waited in the sender's socket.\n")

        L.append("## Connections\n")
        L.append("| measurement | server | handshakes/s | RSS per client KiB | failures | "
                 "fds before → after | RSS KiB before → after |")
        L.append("| --- | --- | ---: | ---: | ---: | --- | --- |")
        idle_scen = f"idle-{2000 if self.quick else 10000}"
        for scen, kind in ((idle_scen, "idle"), ("handshakes", "churn")):
            for srv in ("derper", "kderpd"):
                if not self.stat(scen, srv, "handshakes_per_s", kind):
                    continue
                g = lambda k, d=0: self.fmt(self.stat(scen, srv, k, kind), d)
                m = lambda k: self.fmt_m(self.stat(scen, srv, k, kind), 0)
                L.append(f"| {scen} | {srv} | {g('handshakes_per_s')} | "
                         f"{g('rss_per_client_kib', 2) if kind == 'idle' else '—'} | "
                         f"{g('failures')} | {m('fds_before')} → {m('fds_after')} | "
                         f"{m('rss_before_kib')} → {m('rss_after_kib')} |")
        L.append("")
        L.append("`idle` opens the clients with 4 parallel handshake threads, then holds them "
                 "2 s; RSS per client = (server RSS after − before) / clients. `handshakes` "
                 "connects, completes the DERP handshake and closes as fast as 4 threads can.\n")

        self.write_stun(L)

        L.append("## Targets\n")
        L.append("| target | measured | met |")
        L.append("| --- | --- | --- |")
        for scen, what in (("relay-1400-p10-plain", "plain"), ("relay-1400-p10-tls", "TLS")):
            k = self.stat(scen, "kderpd", "delivered_mbps", "ceiling")
            d = self.stat(scen, "derper", "delivered_mbps", "ceiling")
            r = k["median"] / d["median"] if k and d and d["median"] else None
            L.append(f"| kderpd ≥ 3x derper at the ceiling, 1,400 B, 10 pairs, {what} | "
                     f"{self.ratio(k, d)} | {self.met(r, 3.0)} |")
        k = self.stat("relay-1400-p10-plain", "kderpd", "delivered_mbps", "ceiling")
        c = self.stat("relay-1400-p10-plain", "ceiling", "delivered_mbps", "ceiling")
        r = k["median"] / c["median"] if k and c and c["median"] else None
        L.append(f"| kderpd ≥ 70 % of the ceiling relay | {self.ratio(k, c)} | "
                 f"{self.met(r, 0.7)} |")
        r = k100["median"] / d100["median"] if k100 and d100 and d100["median"] else None
        L.append(f"| p99 ≤ 0.5x derper's at derper's ceiling | {self.ratio(k100, d100)} | "
                 f"{self.met(r, 0.5, lower=True)} |")
        ki = self.stat(idle_scen, "kderpd", "rss_per_client_kib", "idle")
        L.append(f"| ≤ 2 KiB RSS per idle client | "
                 f"{self.fmt_m(ki, 2) + ' KiB' if ki else 'n/a'} | "
                 f"{self.met(ki['median'] if ki else None, 2.0, lower=True)} |")
        xr, xm = self.stun_per_core_ratio("paced"), self.stun_per_core_ratio("max")
        L.append(f"| STUN: XDP ≥ 10x derper per core (answered requests per server-side CPU "
                 f"second at 50,000 req/s; at max load in parentheses) | "
                 f"{f'{xr:.2f}x' if xr else 'n/a'} ({f'{xm:.2f}x' if xm else 'n/a'}) | "
                 f"{self.met(xr, 10.0)} |")
        kh = self.stat("handshakes", "kderpd", "handshakes_per_s", "churn")
        dh = self.stat("handshakes", "derper", "handshakes_per_s", "churn")
        r = kh["median"] / dh["median"] if kh and dh and dh["median"] else None
        L.append(f"| handshakes/s ≥ 2x derper | {self.ratio(kh, dh)} | {self.met(r, 2.0)} |")
        L.append("")
        if png:
            L.append("## Delivered vs offered\n")
            L.append("1,400-byte packets, 10 pairs, plain HTTP, one run per point "
                     f"({'1.0' if self.quick else '1.5'} s each). The x axis is the load the "
                     "senders try to offer; a relay that pushes back through TCP makes them "
                     "send less (no loss), one that drops loses the rest. Past the machine's "
                     "limit every line flattens.\n")
            L.append(f"![delivered vs offered]({os.path.basename(png)})\n")
        if self.errors:
            L.append("## Failed measurements\n")
            for e in self.errors:
                L.append(f"- {e}")
            L.append("")
        L.append("## Reproduce\n")
        L.append("```\nmake bench            # full run, about 15-20 minutes\n"
                 "make bench QUICK=1    # under 3 minutes\n"
                 "make bench BENCH_ONLY=stun   # one group again, keep the rest\n"
                 "$(OUTPUT)/kderp-bench throughput -s 127.0.0.1:3340 -p 10 -S 1400 "
                 "--search 50:20000:6 -t 1.5\n"
                 "$(OUTPUT)/kderp-bench stun -s 127.0.0.1:3478 -r 50000 -t 3 -P $(pidof kderpd)"
                 "\n```\n")
        with open(self.doc, "w") as f:
            f.write("\n".join(L))

    @staticmethod
    def stun_side_cpu(p):
        """Server-side CPU of a STUN point: the server process plus the machine's irq and
        softirq time (where XDP runs; it also holds the kernel's UDP work for both ends)."""
        sc, si = p.get("server_cpu_s"), p.get("softirq_cpu_s")
        if not isinstance(sc, (int, float)) or not isinstance(si, (int, float)):
            return None
        return sc + si

    def stun_per_core(self, srv, load="paced"):
        """Answered requests per server-side CPU second (median over repeats)."""
        v = []
        for p in self.points:
            if p.get("kind") != "stun" or p.get("server") != srv or p.get("load") != load:
                continue
            c = self.stun_side_cpu(p)
            if c and c > 0:
                v.append(p["received"] / c)
        return statistics.median(v) if v else None

    def stun_per_core_ratio(self, load="paced"):
        x, d = self.stun_per_core("kderpd-xdp", load), self.stun_per_core("derper", load)
        return x / d if x and d else None

    def write_stun(self, L):
        if not any(p.get("kind") == "stun" for p in self.points):
            return
        dur = 1.0 if self.quick else 3.0
        L.append("## STUN\n")
        L.append(
            "Each server alone in a fresh network namespace, joined by a veth pair to a second "
            "namespace that runs `kderp-bench stun` (one thread, Tailscale binding requests in "
            "`sendmmsg` batches of up to 64, answers drained with `recvmmsg`, each matched by "
            "transaction id and its XOR-MAPPED-ADDRESS checked). derper: `-a IP:3340 --stun "
            "--stun-port 3478`; kderpd: the same with its userspace STUN thread, and "
            "`kderpd-xdp` adds `--xdp-iface=VETH:generic` (native XDP on veth needs an XDP "
            "program on the peer as well, so generic mode is measured). TX checksum offload "
            "is off on the sender's veth for every server. Loads: **max** = as fast as the "
            "sender goes, **paced** = 50,000 requests/s; "
            f"{dur} s each, {self.stun_repeats()} alternating repeats, medians (min–max).\n")
        L.append(
            "CPU s per million answered requests: *server* = user+sys of the server process "
            "(`/proc/PID/stat`); *server-side* = that plus the whole machine's irq+softirq "
            "time (`/proc/stat`), where XDP runs and which no process is charged for (it also "
            "holds the kernel's UDP receive work of both ends, the same for every server); "
            "*machine* = user+nice+system+irq+softirq of the whole machine, which includes "
            "the load generator and anything else running. Per core = answered requests per "
            "server-side CPU second.\n")
        L.append("| load | server | answered req/s | loss % | server CPU s/M | server-side CPU "
                 "s/M | machine CPU s/M | per core (req/CPU s) | req/s vs derper | per core vs "
                 "derper |")
        L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for load, _ in self.stun_loads():
            scen = f"stun-{load}"
            d_rps = self.stat(scen, "derper", "answered_rps", "stun")
            d_pc = self.stun_per_core("derper", load)
            for srv in ("derper", "kderpd", "kderpd-xdp"):
                st = self.stat(scen, srv, "answered_rps", "stun")
                if not st:
                    continue
                g = lambda k, d=0: self.fmt(self.stat(scen, srv, k, "stun"), d)
                side = [self.stun_side_cpu(p) * 1e6 / p["received"] for p in self.points
                        if p.get("kind") == "stun" and p.get("server") == srv
                        and p.get("load") == load and p.get("received")
                        and self.stun_side_cpu(p) is not None]
                side_s = f"{statistics.median(side):.2f}" if side else "n/a"
                pc = self.stun_per_core(srv, load)
                L.append(f"| {load} | {srv} | {g('answered_rps')} | {g('loss_pct', 2)} | "
                         f"{g('server_cpu_s_per_m', 2)} | {side_s} | "
                         f"{g('machine_cpu_s_per_m', 2)} | {f'{pc:,.0f}' if pc else 'n/a'} | "
                         f"{self.ratio(st, d_rps)} | "
                         f"{f'{pc / d_pc:.2f}x' if pc and d_pc else 'n/a'} |")
        L.append("")
        L.append(
            "With XDP the answer is built in the softirq of the packet's arrival, which on "
            "veth runs on the sender's CPU: the server process uses no CPU, and at max load "
            "the single-threaded sender, not XDP, is the limit (zero loss). CPU figures come "
            "from tick-based counters of a shared machine, hence the spread.\n")

    @staticmethod
    def fmt_m(st, digits=0):
        if not st:
            return "n/a"
        return f"{st['median']:,.{digits}f}"

    @staticmethod
    def met(value, bound, lower=False):
        if value is None:
            return "not measured"
        ok = value <= bound if lower else value >= bound
        return "yes" if ok else "no"

    def derper_version(self):
        return os.environ.get("DERPER_VERSION", "unknown")

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output", required=True)
    ap.add_argument("--derper", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--quick", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=0)
    ap.add_argument("--workers", type=int, default=-1, help="-1: 1 if pinned, else per CPU")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the document from the last run's JSON files")
    ap.add_argument("--pin", type=int, default=-1, help="1 pin, 0 do not, -1 probe")
    ap.add_argument("--only", default="",
                    help="comma-separated subset of relay,latency,connections,stun,sweep "
                         "(default: all)")
    args = ap.parse_args()
    b = Bench(args)
    if args.report_only:
        b.report_only()
        return
    if not os.access(b.loadgen, os.X_OK) or not os.access(b.ceiling, os.X_OK):
        sys.exit("run-bench: build kderp-bench and ceiling-relay first")
    b.run()


if __name__ == "__main__":
    main()
