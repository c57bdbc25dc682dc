#!/usr/bin/python3
"""Change propagation between two mounts of one store, and what an idle mount costs.

Propagation. Two tierfs daemons, A and B, are mounted on one store with long
kernel timeouts (-o entry_timeout=300,attr_timeout=300: the kernel keeps
names, negative names and attributes until the change feed tells it to
forget them). This process is the writer, on A; a child process (the
reader) watches B. One sample:
  1. the reader is told which file to watch and what content to wait for;
     it reads the file once on B (absent, or the content of the previous
     sample) so that B and B's kernel hold the old state, and says "ready";
  2. after a random pause of 0 to --gap-ms (so that writes do not keep step
     with SQLite's 10 ms poll), the writer opens the file on A, writes
     "seq K ..." and fsyncs: fsync returns once L3 committed the batch, and
     t_commit = time.monotonic_ns() right after it returns (then it closes);
  3. the reader polls B, open()+read()+close() every --poll-us microseconds
     (time.sleep), until the file holds the new content; t_seen is the
     clock right after that read. latency = t_seen - t_commit (both clocks
     are CLOCK_MONOTONIC of one host). The resolution is one poll period
     plus one open+read on B, a fraction of a millisecond.
The writer's batch window (batch_flush_ms) is not part of it: the clock
starts at the commit. Variants:
  create     a new file new/c-K.txt per sample: B's kernel holds the name
             as absent (a negative entry, cached for entry_timeout) until
             the feed makes it forget it
  overwrite  one file, ow.txt, rewritten (O_TRUNC) with the next sequence
             number: B has read the previous content
--warmup samples of each variant come first and are not counted. A sample
whose content B does not show within --timeout seconds counts as a timeout
(and its latency as the timeout): with the kernel's 300 s timeouts, only
the feed could have shown it. Backends (--backends):
  sqlite          two mounts on one SQLite file, each with -o wal_path
  postgres        two mounts on one database of a private PostgreSQL server
  redis+postgres  the same plus one private Redis (one redis_prefix)

Idle cost (PostgreSQL; --idle-mounts 1,4,16, --idle-seconds T). For each K,
K mounts on one fresh database do nothing for T seconds (after --settle
seconds). Measured per mount: the L3 calls it counts (.tierfs/metrics,
every tierfs_tier_calls_total that grows), the transactions the server
counts for the database (pg_stat_database xact_commit + xact_rollback:
every statement tierfs sends outside a transaction is one, and the feed
listener's SELECT of the head is not in tierfs's own metrics), the
connections it holds (pg_stat_activity by application_name: each mount's
URI sets application_name=prop-idle-K-I), the daemon's RSS and thread count
(/proc/PID/status) and the CPU time of the daemon and of its server
backends (/proc/PID/stat utime+stime) over the T seconds. The server
publishes its counters about once a second, so short windows are noisy.

Servers: a private PostgreSQL (scripts/pg-test-server.sh, fsync on; as root
it runs as the 'postgres' user) and a private Redis
(scripts/redis-test-server.sh), in a temporary directory. Everything is
unmounted, stopped and removed on exit, also on error, Ctrl-C or SIGTERM.

This is a benchmark, not a test: pytest does not collect it. Run it as root
(or a user who may mount FUSE and read /proc of the server's processes).

usage:
  tests/bench/propagation.py [--samples 200] [--warmup 5]
        [--backends sqlite,postgres,redis+postgres] [--idle-mounts 1,4,16]
        [--idle-seconds 15] [--no-idle] [--poll-us 200] [--gap-ms 20]
        [--timeout 5] [--tierfs PATH] [-o OPT]... [--json FILE]
        [--workdir DIR] [--keep]
e.g.
  /usr/bin/python3 tests/bench/propagation.py --json /tmp/prop.json
  /usr/bin/python3 tests/bench/propagation.py --samples 50 --no-idle --backends sqlite
"""

import argparse
import gc
import json
import math
import os
import platform
import random
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tiers  # noqa: E402  (tests/bench/tiers.py: the private servers)
from benchlib import (BenchError, Cleanup, FuseMount, log, tierfs_origin,  # noqa: E402
                      wait_for)
import benchlib  # noqa: E402

benchlib.PROG = "propagation"

REPO = HERE.parents[1]
DEFAULT_TIERFS = REPO / "build" / "fs" / "tierfs"

EXIT_TIMEOUT = 120.0   # seconds for a daemon to drain and exit after unmount
READER_TIMEOUT = 30.0  # seconds for the reader to answer anything but a wait
KERNEL_TIMEOUT_S = 300  # entry_timeout and attr_timeout of every mount

BACKENDS = ("sqlite", "postgres", "redis+postgres")
PERCENTILES = (("p50", 50.0), ("p99", 99.0))


def uri_with(uri, **params):
    """@uri with libpq parameters @params added to its query string."""
    u = urlsplit(uri)
    items = [f"{k}={quote(v, safe='')}" for k, v in params.items()]
    query = "&".join(([u.query] if u.query else []) + items)
    return urlunsplit(u._replace(query=query))


# --- /proc ------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    """{"rss_kib", "threads"} of process @pid, or None when it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_kib"] = int(line.split()[1])
                elif line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
    except OSError:
        return None
    return out


def cpu_seconds(pid):
    """utime + stime of process @pid (all its threads) in seconds, or 0."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def tcp_connections(pid, port):
    """Established TCP connections of process @pid to loopback port @port."""
    mine = socket_inodes(pid)
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    rport = int(fields[2].rsplit(":", 1)[1], 16)
                    if rport == port and fields[3] == "01" and int(fields[9]) in mine:
                        n += 1
        except OSError:
            continue
    return n


# --- a mount ----------------------------------------------------------------------

METRIC_RE = re.compile(r'^(tierfs_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$')


class Mount(FuseMount):
    """tierfs -f on @mnt; stop() unmounts and waits for the daemon to exit."""

    def __init__(self, name, argv, mnt, logfile, env):
        super().__init__(name, argv, mnt, logfile, env, exit_timeout=EXIT_TIMEOUT, cwd="/")

    def start(self):
        self.mnt.mkdir(parents=True, exist_ok=True)
        super().start()

    def metrics(self):
        """{'name{labels}': value} of the mount's .tierfs/metrics."""
        out = {}
        with open(self.mnt / ".tierfs" / "metrics", encoding="utf-8") as f:
            for line in f:
                m = METRIC_RE.match(line.strip())
                if m:
                    out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def status(self):
        with open(self.mnt / ".tierfs" / "status", "rb") as f:
            return json.loads(f.read())

    def notes(self):
        """The lines of its log other than the mount message."""
        return [line for line in self.log_text().splitlines()
                if line.strip() and " mounted " not in line]


def tierfs_argv(tbin, store_args, wal, mnt, opts):
    o = [f"wal_path={wal}", f"entry_timeout={KERNEL_TIMEOUT_S}",
         f"attr_timeout={KERNEL_TIMEOUT_S}", *opts]
    return [str(tbin), *store_args, "-f", "-o", ",".join(o), str(mnt)]


def shown(argv):
    return shlex.join(tiers.redact(a) if "://" in a else a for a in argv)


# --- the reader (a child process) ---------------------------------------------------

def read_once(path):
    """The content of @path, or None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def reader_main():
    """The reader child: one JSON command a line on stdin, {"path", "want"
    (latin-1), "poll_ns", "timeout_ns"}; answers {"ready": old} once it has
    read @path once (or {"early": true} when it already holds @want), then
    {"seen": t_ns, "polls": n} or {"timeout": true, "last": ...}."""
    gc.disable()
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        path, want = cmd["path"], cmd["want"].encode("latin-1")
        poll_s = cmd["poll_ns"] / 1e9
        got = read_once(path)
        if got == want:
            out.write(json.dumps({"early": True}) + "\n")
            out.flush()
            continue
        out.write(json.dumps({"ready": None if got is None else got.decode("latin-1")}) + "\n")
        out.flush()
        deadline = time.monotonic_ns() + cmd["timeout_ns"]
        polls = 0
        while True:
            got = read_once(path)
            t = time.monotonic_ns()
            polls += 1
            if got == want:
                out.write(json.dumps({"seen": t, "polls": polls}) + "\n")
                break
            if t > deadline:
                out.write(json.dumps({"timeout": True, "polls": polls,
                                      "last": None if got is None else got.decode("latin-1")})
                          + "\n")
                break
            time.sleep(poll_s)
        out.flush()


class Reader:
    def __init__(self, logfile):
        self.logfile = logfile
        with open(logfile, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).resolve()), "--reader-child"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd="/", text=True,
                bufsize=1)

    def send(self, cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise BenchError(f"the reader did not answer within {timeout:.0f}s: "
                             f"{self.logfile.read_text(errors='replace')[-2000:]}")
        return json.loads(line)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# --- propagation ----------------------------------------------------------------------

def write_fsync(path, data, create):
    """Writes @data to @path and fsyncs; returns (t_commit ns, fsync ms)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if create else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
        t0 = time.monotonic_ns()
        os.fsync(fd)
        t1 = time.monotonic_ns()
    finally:
        os.close(fd)
    return t1, (t1 - t0) / 1e6


def percentile(s, p):
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def summarize(lat_ms, timeouts, fsync_ms):
    s = sorted(lat_ms)
    out = {"count": len(s), "timeouts": timeouts}
    if s:
        out["min_ms"] = round(s[0], 3)
        for name, p in PERCENTILES:
            out[f"{name}_ms"] = round(percentile(s, p), 3)
        out["max_ms"] = round(s[-1], 3)
        out["mean_ms"] = round(sum(s) / len(s), 3)
    f = sorted(fsync_ms)
    if f:
        out["fsync_p50_ms"] = round(percentile(f, 50), 3)
    return out


def run_variant(variant, a, b, reader, args, rng):
    """Samples of one variant; returns its summary (with the raw latencies)."""
    poll_ns = int(args.poll_us * 1000)
    timeout_ns = int(args.timeout * 1e9)
    lat, fsyncs, timeouts, early = [], [], 0, 0
    total = args.warmup + args.samples
    for k in range(total):
        if variant == "create":
            rel = f"new/c-{k:05d}.txt"
        else:
            rel = "ow.txt"
        data = f"seq {k} {variant} {rng.getrandbits(64):016x}\n".encode()
        reader.send({"path": str(b.mnt / rel), "want": data.decode("latin-1"),
                     "poll_ns": poll_ns, "timeout_ns": timeout_ns})
        ans = reader.answer(READER_TIMEOUT)
        if ans.get("early"):
            raise BenchError(f"{rel}: B showed sample {k} before it was written")
        if variant == "create" and ans["ready"] is not None:
            raise BenchError(f"{rel}: B shows it before it was created")
        time.sleep(rng.uniform(0, args.gap_ms / 1000))
        t_commit, f_ms = write_fsync(a.mnt / rel, data, variant == "create")
        ans = reader.answer(args.timeout + READER_TIMEOUT)
        if k < args.warmup:
            continue
        fsyncs.append(f_ms)
        if ans.get("timeout"):
            timeouts += 1
            lat.append(args.timeout * 1000)
            log(f"  {variant} sample {k}: B did not show it within {args.timeout:.0f}s "
                f"(it shows {ans.get('last')!r})")
            continue
        ms = (ans["seen"] - t_commit) / 1e6
        early += ms < 0
        lat.append(ms)
    out = summarize(lat, timeouts, fsyncs)
    out["seen_before_fsync_returned"] = early
    out["latencies_ms"] = [round(x, 3) for x in lat]
    out["fsync_ms"] = [round(x, 3) for x in fsyncs]
    return out


def setup_pair(a, b):
    """The directory the creates go to, known to both mounts, and ow.txt."""
    (a.mnt / "new").mkdir()
    fd = os.open(a.mnt / "new", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    write_fsync(a.mnt / "ow.txt", b"initial\n", True)
    if not wait_for(lambda: (b.mnt / "new").is_dir() and read_once(b.mnt / "ow.txt")
                    == b"initial\n", 10.0):
        raise BenchError(f"{b.mnt} does not show what {a.mnt} wrote within 10 s")
    os.listdir(b.mnt / "new")


def run_backend(backend, env, args, tbin, workdir, servers, cleanup, rng):
    """Mounts A and B on a fresh store of @backend and samples both variants."""
    base = workdir / backend.replace("+", "-")
    base.mkdir()
    res = {"backend": backend}
    if backend == "sqlite":
        db = base / "store.db"
        stores = {n: [f"--sqlite={db}"] for n in "ab"}
    else:
        pg = servers["pg"]
        dbname = f"prop_{backend.replace('+', '_')}"
        uri = pg.create_db(dbname)
        stores = {}
        for n in "ab":
            s = [f"--postgres={uri_with(uri, application_name=f'prop-{n}')}"]
            if backend == "redis+postgres":
                s += [f"--redis={servers['redis'].url}"]
            stores[n] = s
    extra = list(args.opts)
    if backend == "redis+postgres":
        extra.append("redis_prefix=prop:")
    mounts = {}
    for n in "ab":
        argv = tierfs_argv(tbin, stores[n], base / f"{n}.wal", base / f"{n}.mnt", extra)
        m = Mount(n, argv, base / f"{n}.mnt", base / f"{n}.log", env)
        cleanup.push(f"unmount {m.mnt}", m.stop)
        log(f"{backend}: mounting {n.upper()}: {shown(argv)}")
        m.start()
        mounts[n] = m
    res["commands"] = {n.upper(): shown(m.argv) for n, m in mounts.items()}
    a, b = mounts["a"], mounts["b"]
    setup_pair(a, b)
    reader = Reader(base / "reader.log")
    cleanup.push("stop the reader", reader.stop)
    res["variants"] = {}
    b_before = b.metrics()
    for variant in ("create", "overwrite"):
        log(f"{backend}: {variant}: {args.warmup} + {args.samples} samples")
        r = run_variant(variant, a, b, reader, args, rng)
        res["variants"][variant] = r
        log(f"  p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, max {r.get('max_ms')} ms, "
            f"{r['timeouts']} timeouts")
    b_after = b.metrics()
    reader.stop()
    res["b_feed_applied"] = (b_after.get("tierfs_feed_applied_total", 0)
                             - b_before.get("tierfs_feed_applied_total", 0))
    if backend != "sqlite":
        res["connections_after_work"] = connections(servers, mounts.values(),
                                                    backend == "redis+postgres")
    res["rss_kib_after_work"] = {n.upper(): (proc_status(m.pid) or {}).get("rss_kib")
                                 for n, m in mounts.items()}
    res["filter"] = {n.upper(): m.status().get("filter") for n, m in mounts.items()}
    for m in mounts.values():
        m.stop()
    res["exit_status"] = {n.upper(): m.exit_status for n, m in mounts.items()}
    res["log_notes"] = {n.upper(): m.notes() for n, m in mounts.items()}
    return res


def connections(servers, mounts, redis=False):
    """Per mount: PostgreSQL connections (from /proc/net/tcp, the daemon's
    sockets) and, with @redis, Redis connections."""
    out = []
    for m in mounts:
        row = {"mount": m.name, "postgres": tcp_connections(m.pid, servers["pg"].port)}
        if redis:
            row["redis"] = tcp_connections(m.pid, urlsplit(servers["redis"].url).port)
        out.append(row)
    return out


# --- idle cost --------------------------------------------------------------------------

def pg_snapshot(sess, prefix):
    """Server-side counters of the current database and its backends."""
    xacts = int(sess.value("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = current_database()"))
    rows = sess.value(
        "SELECT coalesce(json_agg(json_build_object('app', application_name, 'pid', pid, "
        "'query', left(query, 60))), '[]') FROM pg_stat_activity "
        f"WHERE application_name LIKE '{prefix}%'")
    return xacts, json.loads(rows)


def idle_run(k, env, args, tbin, workdir, servers, cleanup):
    pg = servers["pg"]
    base = workdir / f"idle-{k}"
    base.mkdir()
    uri = pg.create_db(f"prop_idle_{k}")
    prefix = f"prop-idle-{k}-"
    mounts = []
    log(f"idle: mounting {k} on one database")
    for i in range(k):
        argv = tierfs_argv(tbin, [f"--postgres={uri_with(uri, application_name=f'{prefix}{i}')}"],
                           base / f"{i}.wal", base / f"{i}.mnt", args.opts)
        m = Mount(f"{prefix}{i}", argv, base / f"{i}.mnt", base / f"{i}.log", env)
        cleanup.push(f"unmount {m.mnt}", m.stop)
        m.start()
        mounts.append(m)
    sess = tiers.PsqlSession(uri_with(uri, application_name="prop-bench"))
    cleanup.push("close the psql session", sess.close)
    time.sleep(args.settle)
    # The server's counters are published about once a second: wait for a
    # change, so that the window starts right after one.
    x0, _ = pg_snapshot(sess, prefix)
    wait_for(lambda: pg_snapshot(sess, prefix)[0] != x0, 3.0, 0.05)
    x0, act0 = pg_snapshot(sess, prefix)
    backends = [r["pid"] for r in act0]
    m0 = [m.metrics() for m in mounts]
    c0 = [cpu_seconds(m.pid) for m in mounts]
    b0 = sum(cpu_seconds(p) for p in backends)
    t0 = time.monotonic()
    time.sleep(args.idle_seconds)
    m1 = [m.metrics() for m in mounts]
    c1 = [cpu_seconds(m.pid) for m in mounts]
    b1 = sum(cpu_seconds(p) for p in backends)
    x1, act1 = pg_snapshot(sess, prefix)
    secs = time.monotonic() - t0
    sess.close()

    grew = {}
    for before, after in zip(m0, m1):
        for key, v in after.items():
            if key.startswith("tierfs_tier_calls_total") and v > before.get(key, 0):
                grew[key] = grew.get(key, 0) + v - before.get(key, 0)
    per_app = {}
    for r in act1:
        per_app.setdefault(r["app"], []).append(r["query"])
    listeners = sum(1 for r in act1 if "FROM feed_head WHERE id = 1" in r["query"])
    st = [proc_status(m.pid) or {} for m in mounts]
    res = {
        "mounts": k, "seconds": round(secs, 2),
        "tier_calls_per_s_per_mount": {key: round(v / secs / k, 2) for key, v in grew.items()},
        # minus this script's own two statements in the window
        "server_xacts_per_s_per_mount": round(max(0, x1 - x0 - 2) / secs / k, 2),
        "pg_connections_per_mount": sorted({len(v) for v in per_app.values()}),
        "pg_connections_total": len(act1),
        "listener_connections": listeners,
        "tcp_connections_per_mount": sorted({c["postgres"] for c in
                                             connections(servers, mounts)}),
        "rss_mib_per_mount": sorted(round(s.get("rss_kib", 0) / 1024, 1) for s in st),
        "threads_per_mount": sorted({s.get("threads") for s in st}),
        "daemon_cpu_pct_per_mount": round(100 * (sum(c1) - sum(c0)) / secs / k, 3),
        "backend_cpu_pct_per_mount": round(100 * (b1 - b0) / secs / k, 3),
    }
    log(f"  {res['server_xacts_per_s_per_mount']} server transactions/s per mount, "
        f"connections {res['pg_connections_per_mount']}, RSS {res['rss_mib_per_mount']} MiB")
    for m in mounts:
        m.stop()
    res["exit_status"] = sorted({m.exit_status for m in mounts})
    notes = sorted({n for m in mounts for n in m.notes()})
    res["log_notes"] = notes
    return res


# --- report -----------------------------------------------------------------------------

def fmt(v, spec=",.2f"):
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def short_metric(key):
    """'tierfs_tier_calls_total{tier="l3",op="feed"}' -> 'l3 feed'"""
    return " ".join(re.findall(r'="([^"]*)"', key)) or key


def print_report(meta, results, idle):
    print(f"tierfs change propagation  {meta['date']}  {meta['host']}  Linux {meta['kernel']}  "
          f"{meta['cpus']} CPUs  load average {meta['loadavg_start'][0]:.2f} at start, "
          f"{meta['loadavg_end'][0]:.2f} at end")
    print(f"  tierfs: {meta['tierfs']}" + (f" ({meta['tierfs_origin']})"
                                           if meta["tierfs_origin"] else ""))
    for k in ("postgres", "redis"):
        if meta.get(k):
            print(f"  {k}: {meta[k]}")
    print(f"  {meta['samples']} samples per variant after {meta['warmup']} warm-up; reader polls "
          f"B every {meta['poll_us']} us; writer pauses 0-{meta['gap_ms']} ms before each write")
    print("  latency = reader sees the content on B - fsync returned on A (ms); t/o: not seen "
          "within the timeout; <0: seen before fsync returned")
    print()
    head = (f"{'backend':<16}{'variant':<11}{'count':>6}{'t/o':>5}{'min':>8}{'p50':>8}"
            f"{'p99':>8}{'max':>8}{'mean':>8}{'<0':>5}  {'fsync p50':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        for variant, v in r["variants"].items():
            print(f"{r['backend']:<16}{variant:<11}{v['count']:>6}{v['timeouts']:>5}"
                  f"{fmt(v.get('min_ms')):>8}{fmt(v.get('p50_ms')):>8}{fmt(v.get('p99_ms')):>8}"
                  f"{fmt(v.get('max_ms')):>8}{fmt(v.get('mean_ms')):>8}"
                  f"{v['seen_before_fsync_returned']:>5}  "
                  f"{fmt(v.get('fsync_p50_ms')):>9}")
    for r in results:
        extra = []
        if r.get("connections_after_work"):
            extra.append("connections " + ", ".join(
                f"{c['mount'].upper()}: pg {c['postgres']}"
                + (f" redis {c['redis']}" if "redis" in c else "")
                for c in r["connections_after_work"]))
        extra.append("RSS " + ", ".join(f"{n}: {v / 1024:.1f} MiB"
                                        for n, v in r["rss_kib_after_work"].items() if v))
        extra.append(f"B applied {int(r['b_feed_applied'])} feed records")
        print(f"  {r['backend']}: " + "; ".join(extra))
        for n, lines in r["log_notes"].items():
            for line in lines:
                print(f"    log of {n}: {line}")
    if idle:
        print()
        print("idle mounts on one PostgreSQL database (per mount)")
        head = (f"{'mounts':>6}{'secs':>6}{'xact/s':>8}{'conns':>7}{'listen':>7}{'RSS MiB':>14}"
                f"{'threads':>9}{'cpu%':>7}{'pg cpu%':>8}  tierfs L3 calls/s")
        print(head)
        print("-" * len(head))
        for r in idle:
            rss = r["rss_mib_per_mount"]
            calls = ", ".join(f"{short_metric(k)} {v}"
                              for k, v in r["tier_calls_per_s_per_mount"].items())
            print(f"{r['mounts']:>6}{r['seconds']:>6.0f}{r['server_xacts_per_s_per_mount']:>8.1f}"
                  f"{'/'.join(map(str, r['pg_connections_per_mount'])):>7}"
                  f"{r['listener_connections']:>7}"
                  f"{(f'{rss[0]}-{rss[-1]}' if rss else '-'):>14}"
                  f"{'/'.join(map(str, r['threads_per_mount'])):>9}"
                  f"{r['daemon_cpu_pct_per_mount']:>7.2f}{r['backend_cpu_pct_per_mount']:>8.2f}"
                  f"  {calls}")
            for line in r["log_notes"]:
                print(f"    log: {line}")


def tierfs_env(workdir):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TIERFS_") and not k.startswith("PG")}
    env["PGPASSFILE"] = os.devnull  # the URI carries the password
    env["XDG_DATA_HOME"] = str(workdir / "xdg-data")  # nothing lands in $HOME
    env["XDG_STATE_HOME"] = str(workdir / "xdg-state")
    return env


# --- main -------------------------------------------------------------------------------

def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--reader-child":
        reader_main()
        return 0

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the top of this file for what it does.")
    ap.add_argument("--samples", type=int, default=200, help="per variant and backend (200)")
    ap.add_argument("--warmup", type=int, default=5, help="uncounted samples first (5)")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help=f"comma-separated, of {', '.join(BACKENDS)} (all)")
    ap.add_argument("--idle-mounts", default="1,4,16",
                    help="mount counts of the idle phase (1,4,16)")
    ap.add_argument("--idle-seconds", type=float, default=15.0, help="idle window (15)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds between the last mount and the idle window (2)")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle phase")
    ap.add_argument("--poll-us", type=float, default=200.0,
                    help="the reader's pause between two reads on B (200)")
    ap.add_argument("--gap-ms", type=float, default=20.0,
                    help="the writer's random pause before each write is up to this (20)")
    ap.add_argument("--timeout", type=float, default=5.0,
                    help="seconds B may take to show a sample (5)")
    ap.add_argument("--tierfs", default=os.environ.get("TIERFS_BIN", str(DEFAULT_TIERFS)),
                    help=f"the tierfs binary (default $TIERFS_BIN or {DEFAULT_TIERFS})")
    ap.add_argument("-o", dest="opts", action="append", default=[], metavar="OPT",
                    help="one more tierfs -o option for every mount (repeatable)")
    ap.add_argument("--seed", type=int, help="of the random pauses and contents")
    ap.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    ap.add_argument("--workdir", help="where the temporary directory goes (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    if any(b not in BACKENDS for b in backends):
        ap.error(f"--backends: one of {', '.join(BACKENDS)}")
    idle_counts = [] if args.no_idle else [int(x) for x in args.idle_mounts.split(",") if x]
    if args.samples < 1 or args.warmup < 0 or any(k < 1 for k in idle_counts):
        ap.error("need --samples >= 1, --warmup >= 0 and idle mount counts >= 1")
    tbin = Path(args.tierfs).resolve()
    if not os.access(tbin, os.X_OK):
        ap.error(f"{tbin}: not an executable (scripts/build.sh builds build/fs/tierfs)")
    need_pg = idle_counts or any(b != "sqlite" for b in backends)
    for tool in ["fusermount3"] + (["psql"] if need_pg else []):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found")
    if not os.path.exists("/dev/fuse"):
        ap.error("/dev/fuse is missing")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    cleanup = Cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="tierfs-propagation-", dir=args.workdir))
    if args.keep:
        log(f"work directory: {workdir} (kept)")
    else:
        cleanup.push(f"rm -r {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": platform.node(),
            "kernel": platform.release(), "cpus": os.cpu_count(),
            "tierfs": str(tbin), "tierfs_origin": tierfs_origin(tbin),
            "samples": args.samples, "warmup": args.warmup, "poll_us": args.poll_us,
            "gap_ms": args.gap_ms, "timeout_s": args.timeout, "seed": seed,
            "kernel_timeouts_s": KERNEL_TIMEOUT_S, "opts": args.opts,
            "loadavg_start": os.getloadavg()}
    results, idle = [], []
    try:
        servers = {}
        if need_pg:
            if os.geteuid() == 0:
                os.chmod(workdir, 0o711)  # the 'postgres' user must reach workdir/pg
            log("starting a private PostgreSQL")
            pg = tiers.PgServer(workdir / "pg")
            pg.start(cleanup)
            servers["pg"] = pg
            meta["postgres"] = (f"private, PostgreSQL {pg.version()}, max_connections "
                                f"{pg.settings('max_connections')['max_connections']}")
        if "redis+postgres" in backends:
            log("starting a private Redis")
            rs = tiers.RedisServer(workdir / "redis")
            rs.start(cleanup)
            servers["redis"] = rs
            meta["redis"] = f"private, Redis {rs.version()}"
        env = tierfs_env(workdir)
        for backend in backends:
            results.append(run_backend(backend, env, args, tbin, workdir, servers, cleanup,
                                       rng))
        for k in idle_counts:
            idle.append(idle_run(k, env, args, tbin, workdir, servers, cleanup))
        meta["loadavg_end"] = os.getloadavg()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}): cleaning up")
        return 130
    except (BenchError, tiers.ServerError, OSError) as e:
        log(f"error: {e}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        cleanup.run()

    print_report(meta, results, idle)
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "propagation": results, "idle": idle}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
