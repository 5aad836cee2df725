#!/usr/bin/env python3
"""State-on-disk benchmark (issue 15; not a test): 3 kvraft-server replicas on
loopback, for each dataset size:

  1. 64 clients writing 1 KiB values over 10,000 keys on the empty store
     (writes only: kvbench --read-ratio=0, its default being half reads);
  2. fill: every key of the dataset written once (kvbench --fill);
  3. 64 clients writing 1 KiB values over the whole dataset (snapshots are
     taken every --snapshot-threshold-bytes of log meanwhile): ops/s, p99, max
     latency, peak RSS of each replica, snapshots taken;
  4. restart: a follower killed with SIGKILL and started again: seconds until
     it has applied what the leader had committed;
  5. catch-up: that follower replaced by a new member with an empty data
     directory (kvctl member remove/add --learner): seconds until it has
     applied the leader's commit index, and the fetch rate it logged.

  BIN=build/rel/bin SIZES_GB="1 4" DUR=30 ./scripts/state-bench.py
  SERVER_FLAGS="--block-cache-bytes=..." ...

A/B mode (AB set): server flag sets compared on one filled dataset, so the
fill is paid once. For each size: fill with SERVER_FLAGS; then ROUNDS rounds,
each variant in turn: all replicas restarted with SERVER_FLAGS + the variant's
flags, an idle wait until the machine's CPU is quiet (compactions done, at
most SETTLE seconds), DUR seconds of writes over the dataset (ops/s, p99, CPU
busy and iowait %); plus, per round and variant, a fresh cluster's empty-store
rate. Prints medians per variant.

  AB="--memtable-bytes=33554432|--memtable-bytes=8388608" ROUNDS=3 SIZES_GB=4 \
      BIN=build/rel/bin ./scripts/state-bench.py

Prints a progress line per phase and a JSON line per dataset size.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("BIN", "build/rel/bin")
SIZES = [float(s) for s in os.environ.get("SIZES_GB", "1").split()]
DUR = int(os.environ.get("DUR", "30"))
SERVER_FLAGS = os.environ.get("SERVER_FLAGS", "").split()
AB = [v.split() for v in os.environ["AB"].split("|")] if os.environ.get("AB") else None
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SETTLE = int(os.environ.get("SETTLE", "120"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"state-bench: {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


class Cluster:
    def __init__(self, root, variant=()):
        self.root = root
        self.variant = variant
        os.makedirs(root, exist_ok=True)
        self.ports = {i: free_port() for i in (1, 2, 3)}
        self.peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in self.ports.items())
        self.procs = {}
        for i in (1, 2, 3):
            self.start(i)

    def endpoints(self):
        return ",".join(f"127.0.0.1:{p}" for i, p in sorted(self.ports.items()) if i in self.procs)

    def start(self, i, extra=()):
        d = f"{self.root}/{i}"
        self.procs[i] = subprocess.Popen(
            [f"{BIN}/kvraft-server", f"--id={i}", f"--peers={self.peers}", f"--data-dir={d}"]
            + SERVER_FLAGS + list(self.variant) + list(extra),
            stdout=open(f"{self.root}/{i}.log", "a"), stderr=subprocess.STDOUT)

    def kill(self, i):
        p = self.procs.pop(i)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self):
        for i in list(self.procs):
            self.kill(i)

    def kvctl(self, *args, timeout="30s"):
        out = subprocess.run([f"{BIN}/kvctl", f"--endpoints={self.endpoints()}", f"--timeout={timeout}"]
                             + list(args), capture_output=True, text=True)
        return out

    def status(self):
        out = self.kvctl("endpoint", "status", "-w", "json", timeout="2s")
        try:
            return {s["id"]: s for s in json.loads(out.stdout) if "id" in s}
        except (ValueError, KeyError):
            return {}

    def leader(self):
        for i, s in self.status().items():
            if s["role"] == "leader":
                return i, s
        return None, None

    def wait_leader(self, limit=30):
        end = time.time() + limit
        while time.time() < end:
            i, s = self.leader()
            if i:
                return i, s
            time.sleep(0.1)
        raise RuntimeError("no leader")

    def rss_mb(self):
        out = {}
        for i, p in self.procs.items():
            try:
                for line in open(f"/proc/{p.pid}/status"):
                    if line.startswith("VmRSS:"):
                        out[i] = int(line.split()[1]) / 1024
            except OSError:
                pass
        return out


def kvbench(cluster, *args, sample=None):
    p = subprocess.Popen([f"{BIN}/kvbench", f"--endpoints={cluster.endpoints()}", "-w", "json",
                          "--value-size=1024", "--random-values", "--read-ratio=0"] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while p.poll() is None:
        if sample:
            sample()
        time.sleep(0.5)
    return json.loads(p.stdout.read())


def wait_applied(cluster, i, target, limit):
    start = time.time()
    while time.time() - start < limit:
        s = cluster.status().get(i)
        if s and s["applied_index"] >= target:
            return time.time() - start
        time.sleep(0.05)
    return None


def du_mb(path):
    out = subprocess.run(["du", "-sm", path], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


def run_size(gb, root):
    keys = int(gb * 1024 * 1024)  # 1 KiB values
    c = Cluster(root)
    result = {"dataset_gb": gb, "keys": keys}
    try:
        c.wait_leader()
        c.kvctl("put", "warm", "up")
        r = kvbench(c, "--clients=64", "--conns=64", "--keys=10000", f"--duration={DUR}s")
        result["empty"] = {"ops": r["ops_per_sec"], "p99_ms": r["latency_ms"]["p99"],
                           "max_ms": r["latency_ms"]["max"]}
        log(f"{gb} GB: empty store {r['ops_per_sec']:.0f} ops/s, max {r['latency_ms']['max']:.0f} ms")
        t0 = time.time()
        r = kvbench(c, "--fill", f"--keys={keys}", "--clients=64", "--conns=64", "--duration=3600s")
        result["fill"] = {"seconds": round(time.time() - t0, 1), "ops": r["ops_per_sec"],
                          "max_ms": r["latency_ms"]["max"]}
        log(f"{gb} GB: filled in {time.time() - t0:.0f} s ({r['ops_per_sec']:.0f} ops/s)")
        peak = {}

        def sample():
            for i, mb in c.rss_mb().items():
                peak[i] = max(peak.get(i, 0), mb)
        _, before = c.wait_leader()
        r = kvbench(c, "--clients=64", "--conns=64", f"--keys={keys}", f"--duration={DUR}s",
                    sample=sample)
        _, after = c.wait_leader()
        result["loaded"] = {"ops": r["ops_per_sec"], "p99_ms": r["latency_ms"]["p99"],
                            "max_ms": r["latency_ms"]["max"], "errors": r["errors"],
                            "peak_rss_mb": {str(k): round(v) for k, v in sorted(peak.items())},
                            "snapshot_index": [before["snapshot_index"], after["snapshot_index"]],
                            "state_mb": {str(i): du_mb(f"{root}/{i}/state") for i in (1, 2, 3)}}
        log(f"{gb} GB: loaded {r['ops_per_sec']:.0f} ops/s, p99 {r['latency_ms']['p99']:.1f} ms, "
            f"max {r['latency_ms']['max']:.0f} ms, peak RSS {peak}")

        leader, ls = c.wait_leader()
        f = next(i for i in (1, 2, 3) if i != leader)
        c.kill(f)
        c.start(f)
        took = wait_applied(c, f, ls["commit_index"], 120)
        result["restart_s"] = round(took, 2) if took is not None else None
        log(f"{gb} GB: follower {f} restarted, caught up in {result['restart_s']} s")

        # Replace follower f by a new member with an empty directory.
        leader, ls = c.wait_leader()
        c.kvctl("member", "remove", str(f))
        c.kill(f)
        del c.ports[f]
        new = 4
        c.ports[new] = free_port()
        c.peers = ",".join(f"{i}=127.0.0.1:{p}" for i, p in sorted(c.ports.items()))
        c.start(new, ["--initial-cluster-state=existing"])
        add = c.kvctl("member", "add", f"{new}=127.0.0.1:{c.ports[new]}", "--learner")
        if add.returncode != 0:
            log(f"member add failed: {add.stderr}")
        _, ls = c.wait_leader()
        took = wait_applied(c, new, ls["commit_index"], 1800)
        fetched = re.findall(r"fetched snapshot \S+: ([\d.]+) MiB received in ([\d.]+) s \(([\d.]+) MiB/s\)",
                             open(f"{root}/{new}.log").read())
        result["catch_up"] = {"seconds": round(took, 2) if took else None,
                              "fetches": [{"mib": float(m), "s": float(s), "mib_per_s": float(r)}
                                          for m, s, r in fetched]}
        log(f"{gb} GB: new member caught up in {took} s; fetches {fetched}")
    finally:
        c.stop()
    return result


def cpu_times():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f), f[3], f[4]  # total, idle, iowait


def wait_quiet(limit):
    """Until the CPU was >= 85% idle over 3 s (compactions finished), at most `limit` s."""
    start = time.time()
    while time.time() - start < limit:
        t0, i0, _ = cpu_times()
        time.sleep(3)
        t1, i1, _ = cpu_times()
        if (i1 - i0) >= 0.85 * (t1 - t0):
            break
    return round(time.time() - start)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def run_ab(gb, root):
    keys = int(gb * 1024 * 1024)
    c = Cluster(f"{root}/data")
    runs = {i: [] for i in range(len(AB))}
    try:
        c.wait_leader()
        t0 = time.time()
        r = kvbench(c, "--fill", f"--keys={keys}", "--clients=64", "--conns=64", "--duration=3600s")
        log(f"{gb} GB: filled in {time.time() - t0:.0f} s ({r['ops_per_sec']:.0f} ops/s)")
        c.stop()
        for rnd in range(ROUNDS):
            for v, flags in enumerate(AB):
                e = Cluster(f"{root}/empty-{rnd}-{v}", flags)
                try:
                    e.wait_leader()
                    e.kvctl("put", "warm", "up")
                    er = kvbench(e, "--clients=64", "--conns=64", "--keys=10000", f"--duration={DUR}s")
                finally:
                    e.stop()
                    shutil.rmtree(f"{root}/empty-{rnd}-{v}", ignore_errors=True)
                c.variant = flags
                for i in (1, 2, 3):
                    c.start(i)
                c.wait_leader()
                settled = wait_quiet(SETTLE)
                t0, i0, w0 = cpu_times()
                r = kvbench(c, "--clients=64", "--conns=64", f"--keys={keys}", f"--duration={DUR}s")
                t1, i1, w1 = cpu_times()
                c.stop()
                run = {"empty_ops": er["ops_per_sec"], "ops": r["ops_per_sec"],
                       "p99_ms": r["latency_ms"]["p99"], "max_ms": r["latency_ms"]["max"],
                       "cpu_busy_pct": round(100 * (1 - (i1 - i0) / (t1 - t0))),
                       "iowait_pct": round(100 * (w1 - w0) / (t1 - t0)), "settled_s": settled}
                runs[v].append(run)
                log(f"{gb} GB round {rnd + 1} variant {v} {' '.join(flags)}: {run}")
    finally:
        c.stop()
    out = {"dataset_gb": gb, "variants": []}
    for v, flags in enumerate(AB):
        rs = runs[v]
        out["variants"].append({
            "flags": " ".join(flags), "runs": rs,
            "median_empty_ops": median([x["empty_ops"] for x in rs]),
            "median_ops": median([x["ops"] for x in rs]),
            "median_p99_ms": median([x["p99_ms"] for x in rs]),
            "median_ratio": median([x["ops"] / x["empty_ops"] for x in rs])})
    return out


def main():
    host = f"{os.cpu_count()} cores, {open('/proc/loadavg').read().split()[0]} load"
    log(f"{host}, BIN={BIN}, sizes {SIZES} GB, {DUR} s per load point")
    base = tempfile.mkdtemp(prefix="state-bench.", dir=os.environ.get("TMPDIR", "/tmp"))
    try:
        for gb in SIZES:
            root = f"{base}/{gb}"
            os.makedirs(root)
            print(json.dumps(run_ab(gb, root) if AB else run_size(gb, root)), flush=True)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
