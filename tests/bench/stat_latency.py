#!/usr/bin/python3
"""stat() latency of a cached file while another process writes.

What it measures: the latency of os.stat() on one small file that tierfs
already holds in L1, first on an idle mount (the baseline) and then while
ANOTHER process (the writer) creates 10,000 JSON files (small, or --bytes
long) in the same PostgreSQL-backed mount. Every stat is timed on its own
(time.perf_counter_ns() around the call); the script reports the count, p50,
p99, p99.9 and max in microseconds per phase, and the writer's files/s. With
the engine's one big mutex held across slow work (PostgreSQL round trips,
fdatasync of the write-ahead log, SHA-256, JSON parsing), the loaded tail
shows how long a stat waits behind the writer and the flusher.

How it runs:
  1. starts a private PostgreSQL (scripts/pg-test-server.sh start DIR, found
     beside this script, ../../scripts) unless --postgres URI is given; with
     --postgres the benchmark gets a fresh schema of its own there (psql
     CREATE SCHEMA; the URI gains options=-csearch_path=...), dropped at the
     end;
  2. mounts tierfs in the foreground on a temporary directory:
         tierfs --postgres=URI -f -o wal_path=DIR,entry_timeout=0,attr_timeout=0 MNT
     entry_timeout=0 and attr_timeout=0 make the kernel ask the daemon on
     every stat (LOOKUP + GETATTR); --default-timeouts keeps tierfs's
     defaults (1 s) instead, so most stats are answered by the kernel;
  3. creates MNT/hot.json and reads it once (now cached in tierfs);
  4. loaded phase, --runs times: waits until tierfs has persisted everything
     (MNT/.tierfs/status: queue empty), starts the writer, a child python3
     process that creates MNT/load-K/dNNN/fNNN.json (--dirs x --files/--dirs
     files of {"i": N}, each os.open(O_CREAT)+os.write+os.close), and stats
     hot.json as fast as it can from the moment the writer says it starts
     until the writer exits;
  5. baseline phase: once the writes are persisted, stats hot.json with no
     writer for as many seconds as the median loaded run lasted (or
     --baseline-seconds);
  6. prints the table, writes --json FILE, unmounts (fusermount3 -u, waiting
     for the daemon to drain and exit), stops PostgreSQL and removes the
     temporary directory, also on error, Ctrl-C or SIGTERM.

Python's garbage collector is off while timing. The measuring process, the
writer, the daemon and PostgreSQL share the machine's CPUs: on a small or
busy machine the tail includes scheduling noise, hence --runs.

Run as root or as a user who may mount FUSE (fusermount3). PostgreSQL does
not run as root; as root, pg-test-server.sh runs it as the 'postgres' user.
This is a benchmark, not a test: pytest does not collect it.

usage:
  tests/bench/stat_latency.py [--runs N] [--files 10000] [--dirs 100] [--bytes N]
        [--tierfs PATH] [--postgres URI] [--default-timeouts] [-o OPT]...
        [--baseline-seconds S] [--json FILE] [--workdir DIR] [--keep]
e.g.
  /usr/bin/python3 tests/bench/stat_latency.py --runs 3 --json /tmp/stat.json
  /usr/bin/python3 tests/bench/stat_latency.py --tierfs /other/build/fs/tierfs
"""

import argparse
import array
import gc
import json
import math
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
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

benchlib.PROG = "stat_latency"
REPO = HERE.parents[1]
DEFAULT_TIERFS = REPO / "build" / "fs" / "tierfs"

EXIT_TIMEOUT = 300.0     # seconds for the daemon to drain and exit after unmount
DRAIN_TIMEOUT = 300.0    # seconds for tierfs to persist what was written
WRITER_START_TIMEOUT = 60.0
PG_TIMEOUT = 180.0       # pg-test-server.sh start/stop, psql
EXIT_CHECK_EVERY = 32    # stats between two checks whether the writer exited

PERCENTILES = (("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9))


def run_tool(argv, what, env=None, timeout=PG_TIMEOUT):
    """Runs a tool; returns its stdout; BenchError when it fails."""
    try:
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{what}: {e}") from e
    if cp.returncode != 0:
        raise BenchError(f"{what} failed (exit {cp.returncode}): {cp.stderr.strip()}")
    return cp.stdout


# --- PostgreSQL ---------------------------------------------------------------

def with_search_path(uri, schema):
    """@uri (URI or key=value conninfo) that puts @schema first in the
    search_path, where tierfs creates its tables."""
    if uri.startswith(("postgresql://", "postgres://")):
        u = urlsplit(uri)
        item = "options=" + quote(f"-csearch_path={schema}", safe="")
        return urlunsplit(u._replace(query=f"{u.query}&{item}" if u.query else item))
    return f"{uri} options='-csearch_path={schema}'"


def psql(uri, sql, env):
    return run_tool(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", uri,
                     "-c", sql], f"psql: {sql[:60]}", env=env).strip()


# --- the mount ------------------------------------------------------------------

class Mount(FuseMount):
    """tierfs -f on @mnt; stop() unmounts and waits for the daemon to exit."""

    def __init__(self, argv, mnt, logfile, env):
        super().__init__("tierfs", argv, mnt, logfile, env, exit_timeout=EXIT_TIMEOUT, cwd="/")

    def status(self):
        """The mount's .tierfs/status as a dict, or None when unreadable."""
        try:
            with open(self.mnt / ".tierfs" / "status", "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def wait_persisted(self, timeout=DRAIN_TIMEOUT):
        """Waits until tierfs's queue is empty (every change is in
        PostgreSQL). Returns False when the status file has no queue (an
        older tierfs): nothing to wait on then."""
        st = self.status()
        if not st or not isinstance(st.get("queue"), dict):
            return False

        def empty():
            q = (self.status() or {}).get("queue") or {}
            return q.get("changes", 0) == 0 and q.get("not_persisted", 0) == 0

        if not wait_for(empty, timeout):
            raise BenchError(f"tierfs still has unpersisted changes after {timeout:.0f}s: "
                             f"{(self.status() or {}).get('queue')}")
        return True


# --- the writer (a child process) -------------------------------------------------

def writer_main(root, nfiles, ndirs, nbytes=0):
    """The writer child: says "ready", then creates @nfiles files of
    {"i": N} in @ndirs directories under @root (each os.open + os.write +
    os.close), padded to @nbytes with a JSON string when @nbytes is larger,
    then prints {"files": N, "seconds": S} and exits."""
    root = Path(root)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    t0 = time.perf_counter_ns()
    os.mkdir(root)
    dirs = [root / f"d{d:03d}" for d in range(ndirs)]
    for d in dirs:
        os.mkdir(d)
    for i in range(nfiles):
        path = dirs[i % ndirs] / f"f{i // ndirs:03d}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            doc = b'{"i": %d}' % i
            if nbytes > len(doc) + 10:
                doc = b'{"i": %d, "p": "%s"}' % (i, b"x" * (nbytes - len(doc) - 9))
            os.write(fd, doc)
        finally:
            os.close(fd)
    seconds = (time.perf_counter_ns() - t0) / 1e9
    sys.stdout.write(json.dumps({"files": nfiles, "seconds": seconds}) + "\n")
    sys.stdout.flush()


class Writer:
    """The writer as a child process of this script (--writer-child)."""

    def __init__(self, root, nfiles, ndirs, logfile, nbytes=0):
        self.logfile = logfile
        with open(logfile, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", str(Path(__file__).resolve()), "--writer-child",
                 str(root), str(nfiles), str(ndirs), str(nbytes)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd="/")

    def wait_ready(self):
        ready, _, _ = select.select([self.proc.stdout], [], [], WRITER_START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if line != b"ready\n":
            self.kill()
            raise BenchError(f"the writer did not start: {self.log_tail()}")

    def result(self):
        """After the exit: {"files", "seconds"}; BenchError when it failed."""
        out = self.proc.stdout.read()
        rc = self.proc.wait()
        if rc != 0:
            raise BenchError(f"the writer exited with status {rc}: {self.log_tail()}")
        return json.loads(out)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log_tail(self):
        try:
            return self.logfile.read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""


# --- measuring --------------------------------------------------------------------

def stat_until_deadline(path, seconds):
    """Stats @path for @seconds; returns (latencies in ns, seconds)."""
    lat = array.array("q")
    append, stat, clock = lat.append, os.stat, time.perf_counter_ns
    start = clock()
    end = start + int(seconds * 1e9)
    gc.disable()
    try:
        t1 = start
        while t1 < end:
            t0 = clock()
            stat(path)
            t1 = clock()
            append(t1 - t0)
    finally:
        gc.enable()
    return lat, (t1 - start) / 1e9


def stat_while_running(path, proc, timeout):
    """Stats @path until @proc exits; returns (latencies in ns, seconds)."""
    lat = array.array("q")
    append, stat, clock, poll = lat.append, os.stat, time.perf_counter_ns, proc.poll
    start = clock()
    limit = start + int(timeout * 1e9)
    n = 0
    gc.disable()
    try:
        while True:
            t0 = clock()
            stat(path)
            t1 = clock()
            append(t1 - t0)
            n += 1
            if n % EXIT_CHECK_EVERY == 0:
                if poll() is not None:
                    break
                if t1 > limit:
                    raise BenchError(f"the writer still runs after {timeout:.0f}s")
    finally:
        gc.enable()
    return lat, (clock() - start) / 1e9


def summarize(lat, seconds):
    """count, seconds, stats/s and the percentiles (nearest rank) and max,
    in microseconds."""
    s = sorted(lat)
    n = len(s)
    out = {"count": n, "seconds": round(seconds, 3),
           "stats_per_s": round(n / seconds) if seconds > 0 else None}
    for name, p in PERCENTILES:
        out[f"{name}_us"] = round(s[max(0, math.ceil(p / 100 * n) - 1)] / 1000, 1) if n else None
    out["max_us"] = round(s[-1] / 1000, 1) if n else None
    return out


# --- report -----------------------------------------------------------------------

COLUMNS = [("phase", "phase", "<", 10), ("count", "stats", ">", 9),
           ("p50_us", "p50 us", ">", 9), ("p99_us", "p99 us", ">", 9),
           ("p99.9_us", "p99.9 us", ">", 9), ("max_us", "max us", ">", 10),
           ("seconds", "seconds", ">", 8), ("writer_files_per_s", "writer files/s", ">", 15)]


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table(rows):
    lines = ["  ".join(f"{head:{align}{width}}" for _k, head, align, width in COLUMNS)]
    lines.append("  ".join("-" * width for *_x, width in COLUMNS))
    for r in rows:
        lines.append("  ".join(f"{fmt(r.get(k)):{align}{width}}" for k, _h, align, width in COLUMNS))
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------

def main():
    if len(sys.argv) == 6 and sys.argv[1] == "--writer-child":
        writer_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        os._exit(0)  # no interpreter teardown: the parent stops timing at the exit

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the top of this file for what it does.")
    ap.add_argument("--runs", type=int, default=1,
                    help="loaded phases, each on a fresh directory (default 1)")
    ap.add_argument("--files", type=int, default=10000, help="files per writer (default 10000)")
    ap.add_argument("--dirs", type=int, default=100, help="directories per writer (default 100)")
    ap.add_argument("--bytes", type=int, default=0,
                    help="pad each file to this many bytes of JSON (default: {\"i\": N} only)")
    ap.add_argument("--tierfs", default=os.environ.get("TIERFS_BIN", str(DEFAULT_TIERFS)),
                    help=f"the tierfs binary (default $TIERFS_BIN or {DEFAULT_TIERFS})")
    ap.add_argument("--postgres", metavar="URI",
                    help="use this PostgreSQL (a fresh schema in it) instead of a private server")
    ap.add_argument("--default-timeouts", action="store_true",
                    help="keep tierfs's default entry_timeout/attr_timeout (the kernel then "
                    "answers most stats) instead of 0")
    ap.add_argument("-o", dest="opts", action="append", default=[], metavar="OPT",
                    help="one more tierfs -o option (repeatable)")
    ap.add_argument("--baseline-seconds", type=float,
                    help="length of the baseline (default: the median loaded run's)")
    ap.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds one writer may run (default 1800)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers to FILE as JSON")
    ap.add_argument("--workdir", help="where the temporary directory goes (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.runs < 1 or args.dirs < 1 or args.files < args.dirs:
        ap.error("need --runs >= 1 and 1 <= --dirs <= --files")
    tbin = Path(args.tierfs).resolve()
    if not os.access(tbin, os.X_OK):
        ap.error(f"{tbin}: not an executable (scripts/build.sh builds build/fs/tierfs)")
    for tool in ["fusermount3"] + (["psql"] if args.postgres else []):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found")
    if not os.path.exists("/dev/fuse"):
        ap.error("/dev/fuse is missing")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    cleanup = Cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="tierfs-stat-latency-", dir=args.workdir))
    if args.keep:
        log(f"work directory: {workdir} (kept)")
    else:
        cleanup.push(f"rm -r {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "host": platform.node(),
            "kernel": platform.release(), "cpus": os.cpu_count(),
            "tierfs": str(tbin), "tierfs_origin": tierfs_origin(tbin),
            "files": args.files, "dirs": args.dirs, "bytes": args.bytes, "runs": args.runs,
            "loadavg_start": os.getloadavg()}
    runs = []
    baseline = None
    try:
        # PostgreSQL: a private server, or a fresh schema on the given one.
        if args.postgres:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFS_")}
            schema = f"tierfs_stat_{os.getpid()}_{os.urandom(3).hex()}"
            psql(args.postgres, f'CREATE SCHEMA "{schema}"', env)
            cleanup.push(f"drop schema {schema}",
                         lambda: psql(args.postgres, f'DROP SCHEMA "{schema}" CASCADE', env))
            uri = with_search_path(args.postgres, schema)
            meta["postgres"] = f"{tiers.redact(args.postgres)}, schema {schema}"
        else:
            if os.geteuid() == 0:
                os.chmod(workdir, 0o711)  # the 'postgres' user must reach workdir/pg
            log("starting a private PostgreSQL")
            env = tiers.tool_env()
            uri = tiers.PgServer(workdir / "pg").start(cleanup)
            meta["postgres"] = f"private, {tiers.redact(uri)}"
        if shutil.which("psql"):
            try:
                meta["postgres"] += ", PostgreSQL " + psql(uri, "SHOW server_version", env)
            except BenchError:
                pass
        env = {k: v for k, v in env.items() if not k.startswith("TIERFS_")}
        env["XDG_DATA_HOME"] = str(workdir / "xdg-data")  # nothing lands in $HOME
        env["XDG_STATE_HOME"] = str(workdir / "xdg-state")

        # The mount.
        mnt = workdir / "mnt"
        mnt.mkdir()
        opts = [f"wal_path={workdir / 'wal'}"]
        if not args.default_timeouts:
            opts += ["entry_timeout=0", "attr_timeout=0"]
        opts += args.opts
        argv = [str(tbin), f"--postgres={uri}", "-f", "-o", ",".join(opts), str(mnt)]
        meta["command"] = shlex.join(a if not a.startswith("--postgres=")
                                     else "--postgres=" + tiers.redact(a[len("--postgres="):])
                                     for a in argv)
        mount = Mount(argv, mnt, workdir / "tierfs.log", env)
        cleanup.push("unmount tierfs", mount.stop)
        log(f"mounting: {meta['command']}")
        mount.start()

        # The cached file.
        hot = mnt / "hot.json"
        hot.write_bytes(b'{"hot": true}\n')
        if hot.read_bytes() != b'{"hot": true}\n':
            raise BenchError(f"{hot} reads back something else")
        can_wait = mount.wait_persisted()
        if not can_wait:
            log("this tierfs has no queue in .tierfs/status: phases do not wait for persistence")

        for k in range(1, args.runs + 1):
            if can_wait:  # each run starts on a quiet mount
                mount.wait_persisted()
            log(f"loaded run {k}/{args.runs}: writing {args.files} files")
            w = Writer(mnt / f"load-{k}", args.files, args.dirs, workdir / "writer.log",
                       args.bytes)
            cleanup.push(f"stop writer {k}", w.kill)
            w.wait_ready()
            lat, seconds = stat_while_running(hot, w.proc, args.timeout)
            res = w.result()
            row = {"phase": f"loaded {k}", **summarize(lat, seconds),
                   "writer_files": res["files"], "writer_seconds": round(res["seconds"], 3),
                   "writer_files_per_s": round(res["files"] / res["seconds"])}
            del lat
            runs.append(row)
            log(f"  {row['count']} stats, p99 {row['p99_us']} us, max {row['max_us']} us, "
                f"writer {row['writer_files_per_s']} files/s")

        base_s = args.baseline_seconds or statistics.median(r["seconds"] for r in runs)
        if can_wait:
            mount.wait_persisted()
        log(f"baseline: {base_s:.1f} s of stats with no writer")
        lat, seconds = stat_until_deadline(hot, base_s)
        baseline = {"phase": "baseline", **summarize(lat, seconds)}
        del lat
        meta["loadavg_end"] = os.getloadavg()
        mount.stop()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}): cleaning up")
        return 130
    except (BenchError, tiers.ServerError) as e:
        log(f"error: {e}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the cleanup finish
        cleanup.run()

    median = {"p99_us": statistics.median(r["p99_us"] for r in runs),
              "max_us": statistics.median(r["max_us"] for r in runs),
              "writer_files_per_s": statistics.median(r["writer_files_per_s"] for r in runs)}
    print(f"tierfs stat latency  {meta['date']}  {meta['host']}  Linux {meta['kernel']}  "
          f"{meta['cpus']} CPUs  load average {meta['loadavg_start'][0]:.2f} at start, "
          f"{meta['loadavg_end'][0]:.2f} at end")
    print(f"  tierfs: {meta['tierfs']}" + (f" ({meta['tierfs_origin']})"
                                           if meta["tierfs_origin"] else ""))
    print(f"  mount: {meta['command']}")
    print(f"  postgres: {meta['postgres']}")
    print(f"  stat() of a cached file (hot.json) as fast as possible; loaded: while another "
          f"process creates {args.files} files of {{\"i\": N}} in {args.dirs} dirs; "
          f"baseline: no writer")
    print("  kernel caches: " + ("tierfs's default entry_timeout/attr_timeout (most stats "
                                 "never reach the daemon)" if args.default_timeouts else
                                 "entry_timeout=0,attr_timeout=0 (every stat reaches the daemon)"))
    print(f"  latencies in microseconds; exit status of tierfs after the unmount: "
          f"{mount.exit_status}")
    print()
    print(table([baseline] + runs))
    print()
    print(f"median of {len(runs)} loaded run(s): p99 {median['p99_us']:,.1f} us, "
          f"max {median['max_us']:,.1f} us, writer {median['writer_files_per_s']:,.0f} files/s")
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "baseline": baseline, "runs": runs,
                       "median_of_runs": median, "tierfs_exit_status": mount.exit_status},
                      f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
