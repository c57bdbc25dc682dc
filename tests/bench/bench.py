#!/usr/bin/python3
"""Side-by-side benchmark: tierfs on each of its stores vs libfuse's
passthrough_ll over tmpfs vs raw tmpfs, the same workloads in the same run
(docs/design.md §13: targets are ratios to references measured on the same
machine at the same time).

Workloads, on a tree of FILES small JSON files spread over DIRS directories,
in this order:
    create   create+write+close of every file (os.open/os.write/os.close),
             timed to the last close
    persist  (tierfs-pg, tierfs-redis-pg) the same creates timed from the
             first create until PostgreSQL holds every row: `SELECT count(*)
             FROM entries` (polled every 5 ms over one psql session) equals
             root + DIRS + FILES; also shown: the lag from the last close
             to that moment (ms)
    raw      (the PostgreSQL reference, measured in each PostgreSQL system's
             round just before its creates) the same FILES rows upserted into
             tables shaped like tierfs's entries and contents, in the same
             PostgreSQL server: one multi-row INSERT ... ON CONFLICT into each
             table per transaction of 1000 files, as a generated SQL script
             run with `psql -f`, timed end to end (psql start and login
             included). A row is one file: an entries row and its contents row
    stat     stat() of every file
    read     open+read+close of every file (warm: just written)
    ls -l    one `ls -l` of all the directories (entries/s)
    tar      `tar -cf - TREE`, its output read and dropped by this script
             (GNU tar skips reading file data when its archive *is*
             /dev/null, so a plain `tar cf /dev/null` would measure stat only)
    cold     open+read+close of every file after a remount (tierfs's L1 and
             the kernel's FUSE caches empty) and `sync; echo 3 >
             /proc/sys/vm/drop_caches` (root only; otherwise noted):
               from redis     tierfs-redis-pg: Redis holds every file (they
                              were written through); only its content comes
                              from Redis, names are looked up in PostgreSQL
               from postgres  tierfs-redis-pg after FLUSHALL, and tierfs-pg
               from sqlite    tierfs-sqlite
             passthrough_ll is remounted too and tmpfs only has its caches
             dropped; their one cold figure is shown in every cold row
    unlink   unlink() of every file

Systems:
    tierfs-sqlite   build/fs/tierfs --sqlite=<fresh file> -f MNT (the SQLite
                    file lives in the work directory, on disk by default)
    tierfs-pg       build/fs/tierfs --postgres=URI -o wal_path=DIR -f MNT, on a
                    fresh database of a private PostgreSQL server
    tierfs-redis-pg the same plus --redis=URL, a private Redis server
    passthrough_ll  built here from /usr/share/doc/libfuse3-dev/examples
                    (passthrough_ll.c or .c.gz), `passthrough_ll -f -o
                    source=SRC MNT` with its default options, SRC on tmpfs
    tmpfs           the same workloads on tmpfs directly (the ceiling)

The private servers are started, fresh, in the work directory with
scripts/pg-test-server.sh (fsync on; as root the server runs as the
'postgres' user) and scripts/redis-test-server.sh (no persistence) when a
system that needs them is selected. tierfs-pg and tierfs-redis-pg get a
database each; the raw upsert one more. As root, fresh tmpfs instances are
mounted for passthrough_ll's source and the tmpfs column; otherwise fresh
directories under /dev/shm are used. Every mount made here is unmounted and
every server stopped on exit (normal, error, Ctrl-C, SIGTERM).

usage: tests/bench/bench.py [--files N] [--dirs D] [--repeat R]
                            [--systems tierfs-sqlite,tierfs-pg,...]
                            [--tierfs-bin PATH] [-o TIERFS_OPT ...]
                            [--workdir DIR] [--keep]
environment: BENCH_FILES, BENCH_DIRS, BENCH_REPEAT, TIERFS_BIN, PGBIN
quick smoke run: tests/bench/bench.py --files 500 --dirs 10
"""

import argparse
import gzip
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiers  # noqa: E402  (tests/bench/tiers.py)
from benchlib import BenchError, Cleanup, FuseMount, log  # noqa: E402
import benchlib  # noqa: E402

benchlib.PROG = "bench"

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = Path("/usr/share/doc/libfuse3-dev/examples")
PERSIST_TIMEOUT = 600.0  # seconds for PostgreSQL to hold every row
POLL_INTERVAL = 0.005
RAW_ROWS_PER_TXN = 1000
TIERFS_SYSTEMS = ("tierfs-sqlite", "tierfs-pg", "tierfs-redis-pg")
PG_SYSTEMS = ("tierfs-pg", "tierfs-redis-pg")
SYSTEMS = TIERFS_SYSTEMS + ("passthrough_ll", "tmpfs")
ALIASES = {"tierfs": "tierfs-sqlite", "ptl": "passthrough_ll"}
SHORT = {"tierfs-sqlite": "sqlite", "tierfs-pg": "pg", "tierfs-redis-pg": "redis-pg",
         "passthrough_ll": "ptl", "tmpfs": "tmpfs"}
COLD_KEYS = ("cold_redis", "cold_pg", "cold_sqlite")
ROWS = [  # (key, label, unit), in the order the workloads run
    ("create", "create+write+close (to last close)", "files/s"),
    ("persist", "create, until all rows in postgres", "files/s"),
    ("raw", "raw upsert, same rows, same postgres", "rows/s"),
    ("persist/raw", "  persisted / raw upsert", "ratio"),
    ("tail", "  last close to all rows in postgres", "ms"),
    ("stat", "stat", "files/s"),
    ("read", "open+read+close (warm)", "files/s"),
    ("ls", "ls -l every dir", "entries/s"),
    ("tar", "tar -cf - | (dropped)", "files/s"),
    ("cold_redis", "cold read (from redis)", "files/s"),
    ("cold_pg", "cold read (from postgres)", "files/s"),
    ("cold_sqlite", "cold read (from sqlite)", "files/s"),
    ("cold/read", "  cold read from L3 / warm read", "ratio"),
    ("unlink", "unlink", "files/s"),
]


INTERRUPTED = []  # signals received


def fs_type(path):
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], stdout=subprocess.PIPE,
                         text=True, check=False).stdout.strip()
    return out or "?"


# --- setup -----------------------------------------------------------------

def fresh_tmpfs(workdir, name, cleanup):
    """A fresh empty directory on tmpfs: its own tmpfs mount as root, a new
    directory under /dev/shm otherwise."""
    if os.geteuid() == 0:
        d = workdir / name
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(d)], check=True)
        cleanup.push(f"umount {d}", lambda: subprocess.run(["umount", "-l", str(d)], check=False))
        return d
    shm = Path("/dev/shm")
    if not shm.is_dir() or fs_type(shm) != "tmpfs":
        raise BenchError("not root and /dev/shm is not a tmpfs: no tmpfs to use")
    d = Path(tempfile.mkdtemp(prefix=f"tierfs-bench-{name}-", dir=shm))
    cleanup.push(f"rm -r {d}", lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def build_passthrough_ll(workdir):
    src_dir = workdir / "passthrough_ll-src"
    src_dir.mkdir()
    found = None
    for f in sorted(EXAMPLES.glob("*")):
        if f.name.endswith(".gz"):
            out = src_dir / f.name[:-3]
            with gzip.open(f, "rb") as i, open(out, "wb") as o:
                shutil.copyfileobj(i, o)
        elif f.suffix in (".c", ".h"):
            out = src_dir / f.name
            shutil.copyfile(f, out)
        else:
            continue
        if out.name == "passthrough_ll.c":
            found = out
    if found is None:
        raise BenchError(f"no passthrough_ll.c[.gz] in {EXAMPLES} (install libfuse3-dev)")
    pc = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], stdout=subprocess.PIPE,
                        text=True)
    if pc.returncode != 0:
        raise BenchError("pkg-config fuse3 failed (install libfuse3-dev and pkg-config)")
    exe = workdir / "passthrough_ll"
    cmd = ["gcc", "-O2", "-Wall", "-o", str(exe), str(found), "-I", str(src_dir)] + pc.stdout.split()
    cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if cp.returncode != 0:
        raise BenchError(f"building passthrough_ll failed:\n{shlex.join(cmd)}\n{cp.stdout}")
    return exe


# --- systems -------------------------------------------------------------------

class System:
    """One column: where its tree lives (@root), its FUSE daemon (@mount,
    None for tmpfs), and for the PostgreSQL systems a psql session on its
    database (@pg) and the Redis server it uses (@redis)."""

    def __init__(self, name, root, mount=None, pg=None, redis=None):
        self.name, self.root, self.mount, self.pg, self.redis = name, root, mount, pg, redis

    def flush_redis_remount(self):
        self.mount.stop()
        self.redis.cli("FLUSHALL")
        self.mount.start()

    def cold_phases(self):
        """[(result key, what to do before dropping caches and reading)]"""
        if self.name == "tierfs-redis-pg":
            return [("cold_redis", self.mount.remount), ("cold_pg", self.flush_redis_remount)]
        if self.name == "tierfs-pg":
            return [("cold_pg", self.mount.remount)]
        if self.name == "tierfs-sqlite":
            return [("cold_sqlite", self.mount.remount)]
        if self.mount is not None:  # passthrough_ll
            return [("cold_ref", self.mount.remount)]
        return [("cold_ref", lambda: None)]  # tmpfs


class Bench:
    """What every round shares: the raw upsert reference and dropping the
    kernel's caches."""

    def __init__(self):
        self.raw_uri = None  # the raw upsert's database
        self.raw_sql = None  # its generated script
        self.raw_session = None
        self.drop_note = None  # why caches were not dropped

    def raw_upsert(self):
        """Empties the reference tables (not timed), then runs the upsert
        script; returns its seconds, end to end."""
        self.raw_session.value("TRUNCATE entries, contents; SELECT 1")
        return tiers.psql_file(self.raw_uri, self.raw_sql)

    def drop_caches(self):
        if os.geteuid() != 0:
            self.drop_note = "not root: kernel caches NOT dropped before the cold reads"
            return
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError as e:
            self.drop_note = f"drop_caches failed ({e}): kernel caches NOT dropped"


def wait_rows(sess, expected, what):
    """Polls `SELECT count(*) FROM entries` until it is @expected; returns
    the perf_counter() of the first poll that saw it."""
    deadline = time.monotonic() + PERSIST_TIMEOUT
    while True:
        n = int(sess.value("SELECT count(*) FROM entries"))
        if n == expected:
            return time.perf_counter()
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: entries holds {n} rows after {PERSIST_TIMEOUT:.0f}s, "
                             f"expected {expected}")
        time.sleep(POLL_INTERVAL)


# --- workloads ---------------------------------------------------------------

def close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass


def layout(root, nfiles, ndirs):
    dirs = [root / f"d{d:03d}" for d in range(ndirs)]
    files = [dirs[i % ndirs] / f"item{i:06d}.json" for i in range(nfiles)]
    return dirs, files


def payload(i):
    return (f'{{"id": {i}, "name": "item-{i}", "tags": ["bench", "tierfs"], '
            f'"value": {i * 0.5}}}\n').encode()


def read_all(files, datas):
    for p, data in zip(files, datas):
        fd = os.open(p, os.O_RDONLY)
        try:
            got = os.read(fd, 65536)
        except BaseException:
            close_quietly(fd)
            raise
        os.close(fd)
        if got != data:
            raise BenchError(f"{p}: read back {len(got)} bytes that differ from what was written")


def run_workloads(sx, bench, nfiles, ndirs):
    """Runs every workload on a fresh tree under @sx.root; returns
    {key: (ops, seconds)}, plus {"redis": {...}} for a system with Redis."""
    root = sx.root
    dirs, files = layout(root, nfiles, ndirs)
    datas = [payload(i) for i in range(nfiles)]
    res = {}

    if sx.pg is not None:
        # The previous round's unlinks are in PostgreSQL (only the root is
        # left), so the server is idle for the reference and for the creates.
        wait_rows(sx.pg, 1, f"{sx.name}: before the round")
        res["raw"] = (nfiles, bench.raw_upsert())

    for d in dirs:
        os.mkdir(d)

    t0 = time.perf_counter()
    for p, data in zip(files, datas):
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        except BaseException:  # leave no descriptor open in the mount
            close_quietly(fd)
            raise
        os.close(fd)
    res["create"] = (nfiles, time.perf_counter() - t0)
    if sx.pg is not None:
        t_all = wait_rows(sx.pg, 1 + ndirs + nfiles, f"{sx.name}: persisting the creates")
        res["persist"] = (nfiles, t_all - t0)

    t0 = time.perf_counter()
    for p in files:
        os.stat(p)
    res["stat"] = (nfiles, time.perf_counter() - t0)

    t0 = time.perf_counter()
    read_all(files, datas)
    res["read"] = (nfiles, time.perf_counter() - t0)

    t0 = time.perf_counter()
    cp = subprocess.run(["ls", "-l"] + [d.name for d in dirs], cwd=root, stdout=subprocess.PIPE,
                        env=dict(os.environ, LC_ALL="C"), check=True)
    res["ls"] = (nfiles, time.perf_counter() - t0)
    listed = sum(1 for line in cp.stdout.splitlines() if line.startswith(b"-"))
    if listed != nfiles:
        raise BenchError(f"ls -l under {root} listed {listed} files, expected {nfiles}")

    # tar's output is read and dropped here (what `| cat >/dev/null` does).
    t0 = time.perf_counter()
    tar = subprocess.Popen(["tar", "-cf", "-"] + [d.name for d in dirs], cwd=root,
                           stdout=subprocess.PIPE)
    try:
        while tar.stdout.read(1 << 20):
            pass
    finally:
        tar.stdout.close()
        if tar.poll() is None and sys.exc_info()[0] is not None:
            tar.kill()
        rc = tar.wait()
    res["tar"] = (nfiles, time.perf_counter() - t0)
    if rc != 0:
        raise BenchError(f"tar under {root} exited {rc}")

    for key, prepare in sx.cold_phases():
        prepare()  # remount (and FLUSHALL): not timed
        bench.drop_caches()
        if sx.redis is not None:
            keys0, (hits0, misses0) = sx.redis.dbsize(), sx.redis.stats()
        t0 = time.perf_counter()
        read_all(files, datas)
        res[key] = (nfiles, time.perf_counter() - t0)
        if sx.redis is not None:
            hits1, misses1 = sx.redis.stats()
            res.setdefault("redis", {})[key] = dict(keys_before=keys0, hits=hits1 - hits0,
                                                    misses=misses1 - misses0,
                                                    keys_after=sx.redis.dbsize())

    t0 = time.perf_counter()
    for p in files:
        os.unlink(p)
    res["unlink"] = (nfiles, time.perf_counter() - t0)

    for d in dirs:
        os.rmdir(d)
    return res


# --- main ----------------------------------------------------------------------

def fmt_rate(v):
    return "n/a" if v is None else f"{v:,.0f}"


def fmt_ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def tierfs_env(workdir):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TIERFS_SQLITE", "TIERFS_POSTGRES", "TIERFS_REDIS")
           and not k.startswith("PG")}
    env["PGPASSFILE"] = os.devnull  # the URI carries the password
    env["XDG_DATA_HOME"] = str(workdir / "xdg-data")  # nothing lands in $HOME
    env["XDG_STATE_HOME"] = str(workdir / "xdg-state")
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=int(os.environ.get("BENCH_FILES", 10000)))
    ap.add_argument("--dirs", type=int, default=int(os.environ.get("BENCH_DIRS", 100)))
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", 1)),
                    help="run everything R times, report the median")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated subset of " + ",".join(SYSTEMS)
                    + " ('tierfs' means tierfs-sqlite)")
    ap.add_argument("--tierfs-bin", default=os.environ.get("TIERFS_BIN",
                                                           str(REPO / "build" / "fs" / "tierfs")))
    ap.add_argument("-o", dest="tierfs_opts", action="append", default=[],
                    help="tierfs -o option (repeatable), for every tierfs system")
    ap.add_argument("--workdir", help="where the temp dir (tierfs's SQLite file, the write-ahead "
                    "logs, PostgreSQL's data directory) goes (default: $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    requested = []
    for s in args.systems.split(","):
        s = ALIASES.get(s, s)
        if not s:
            continue
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
        if s not in requested:
            requested.append(s)
    requested.sort(key=SYSTEMS.index)
    systems = list(requested)  # those that actually run
    if args.files < 1 or args.dirs < 1 or args.dirs > args.files or args.repeat < 1:
        ap.error("need 1 <= dirs <= files and repeat >= 1")
    tools = ["fusermount3", "gcc", "pkg-config", "tar", "ls"]
    if any(s in PG_SYSTEMS for s in systems):
        tools.append("psql")
    if "tierfs-redis-pg" in systems:
        tools.append("redis-cli")
    for tool in tools:
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found (scripts/deps.sh installs it)")

    def on_signal(signum, _frame):
        INTERRUPTED.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    cleanup = Cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="tierfs-bench-", dir=args.workdir))
    if not args.keep:
        cleanup.push(f"rm -r {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    sx = {}  # name -> System
    notes = []
    results = {s: [] for s in systems}
    bench = Bench()
    pg = redis = None
    mounts = {}

    def skip(names, why):
        for s in names:
            if s in systems:
                systems.remove(s)
                notes.append(f"{s}: NOT RUN ({why})")
                log(f"{s} column skipped: {why}")

    try:
        if "passthrough_ll" in systems:
            exe = build_passthrough_ll(workdir)
            src = fresh_tmpfs(workdir, "ptl-src", cleanup)
            mnt = workdir / "ptl.mnt"
            mnt.mkdir()
            m = FuseMount("passthrough_ll", [str(exe), "-f", "-o", f"source={src}", str(mnt)],
                          mnt, workdir / "passthrough_ll.log")
            cleanup.push("unmount passthrough_ll", m.stop)
            m.start()
            sx["passthrough_ll"] = System("passthrough_ll", mnt, mount=m)
            notes.append(f"passthrough_ll: {shlex.join(m.argv)}  (source on {fs_type(src)})")
        if "tmpfs" in systems:
            root = fresh_tmpfs(workdir, "raw", cleanup)
            sx["tmpfs"] = System("tmpfs", root)
            notes.append(f"tmpfs: {root}  ({fs_type(root)})")

        # The private servers, fresh, in the work directory. Their stops are
        # pushed before any mount's, so they run after every unmount (tierfs
        # drains into PostgreSQL when it is unmounted).
        if any(s in PG_SYSTEMS for s in systems):
            if os.geteuid() == 0:
                os.chmod(workdir, 0o711)  # the 'postgres' user must reach workdir/pg
            pg = tiers.PgServer(workdir / "pg")
            try:
                pg.start(cleanup)
                bench.raw_uri = pg.create_db("bench_raw")
                tiers.psql(bench.raw_uri, tiers.RAW_SCHEMA)
                bench.raw_session = tiers.PsqlSession(bench.raw_uri)
                cleanup.push("close the psql session (raw)", bench.raw_session.close)
                dirs, files = layout(Path("/"), args.files, args.dirs)
                bench.raw_sql = workdir / "raw-upsert.sql"
                tiers.write_upsert_sql(
                    bench.raw_sql,
                    [(1000 + i, 2 + i % args.dirs, p.name.encode(), payload(i))
                     for i, p in enumerate(files)],
                    per_txn=RAW_ROWS_PER_TXN)
                t0 = time.perf_counter()
                tiers.psql(bench.raw_uri, "SELECT 1")
                login_ms = (time.perf_counter() - t0) * 1000
                st = pg.settings("fsync", "synchronous_commit", "shared_buffers")
                notes.append(
                    f"postgres: PostgreSQL {pg.version()}, private, 127.0.0.1:{pg.port}, data on "
                    f"{fs_type(workdir)} ({', '.join(f'{k}={v}' for k, v in st.items())})")
                notes.append(
                    f"raw upsert: {args.files} files, one entries row + one contents row each, "
                    f"{RAW_ROWS_PER_TXN} files per transaction, multi-row INSERT ... ON "
                    f"CONFLICT (ino) DO UPDATE, `psql -f` ({bench.raw_sql.stat().st_size:,} "
                    f"bytes of SQL) timed end to end; psql start + login alone took "
                    f"{login_ms:.0f} ms")
            except tiers.ServerError as e:
                skip(PG_SYSTEMS, f"PostgreSQL: {str(e).splitlines()[0]}")
        if "tierfs-redis-pg" in systems:
            redis = tiers.RedisServer(workdir / "redis")
            try:
                redis.start(cleanup)
                notes.append(f"redis: Redis {redis.version()}, private, {redis.url}, "
                             "no persistence")
            except tiers.ServerError as e:
                skip(["tierfs-redis-pg"], f"Redis: {str(e).splitlines()[0]}")

        tbin = Path(args.tierfs_bin)
        for s in [s for s in systems if s in TIERFS_SYSTEMS]:
            if not tbin.exists():
                skip([s], f"{tbin} does not exist (scripts/build.sh builds it)")
                continue
            mnt = workdir / f"{s}.mnt"
            mnt.mkdir()
            opts = list(args.tierfs_opts)
            session = None
            try:
                if s == "tierfs-sqlite":
                    argv = [str(tbin), f"--sqlite={workdir / 'tierfs.db'}"]
                    where = f"SQLite on {fs_type(workdir)}"
                else:
                    uri = pg.create_db(s.replace("-", "_"))
                    argv = [str(tbin), f"--postgres={uri}"]
                    opts.insert(0, f"wal_path={workdir / (s + '.wal')}")
                    if s == "tierfs-redis-pg":
                        argv.append(f"--redis={redis.url}")
                    where = f"log on {fs_type(workdir)}"
                    session = tiers.PsqlSession(uri)
                    cleanup.push(f"close the psql session ({s})", session.close)
                argv.append("-f")
                if opts:
                    argv += ["-o", ",".join(opts)]
                argv.append(str(mnt))
                m = FuseMount(s, argv, mnt, workdir / f"{s}.log", env=tierfs_env(workdir))
                cleanup.push(f"unmount {s}", m.stop)
                m.start()
            except (BenchError, tiers.ServerError) as e:
                skip([s], str(e).splitlines()[0])
                continue
            mounts[s] = m
            sx[s] = System(s, mnt, mount=m, pg=session,
                           redis=redis if s == "tierfs-redis-pg" else None)
            shown = ["--postgres=" + tiers.redact(a[len("--postgres="):])
                     if a.startswith("--postgres=") else a for a in argv]
            notes.append(f"{s}: {shlex.join(shown)}  ({where})")

        if not systems:
            raise BenchError("no system to run")
        log(f"{args.files} files in {args.dirs} dirs, {args.repeat} round(s), "
            f"systems: {', '.join(systems)}")
        for r in range(args.repeat):
            for s in systems:  # interleaved, so machine noise hits every column alike
                log(f"round {r + 1}: {s}")
                results[s].append(run_workloads(sx[s], bench, args.files, args.dirs))

        # Stop the daemons now, to report tierfs's drain at unmount.
        for x in sx.values():
            if x.mount is not None:
                x.mount.stop()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.run()

    def rate(s, key):
        if s not in systems or not results.get(s):
            return None
        if key == "persist/raw":
            return ratio(rate(s, "persist"), rate(s, "raw"))
        if key == "tail":  # the persistence lag, from the median round
            got = [rr["persist"][1] - rr["create"][1] for rr in results[s] if "persist" in rr]
            return statistics.median(got) * 1000 if got else None
        if key == "cold/read":
            cold = None
            for k in ("cold_pg", "cold_sqlite", "cold_ref"):  # the cold read from L3
                cold = rate(s, k)
                if cold is not None:
                    break
            return ratio(cold, rate(s, "read"))
        if key in COLD_KEYS and s in ("passthrough_ll", "tmpfs"):
            key = "cold_ref"
        got = [rr[key] for rr in results[s] if key in rr]
        if not got:
            return None
        return statistics.median(ops / sec for ops, sec in got)

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    print()
    print(f"tierfs benchmark  {time.strftime('%Y-%m-%d %H:%M:%S %z')}  "
          f"{platform.node()}  Linux {platform.release()}  {os.cpu_count()} CPUs")
    print(f"{args.files} small JSON files ({len(payload(0))}-{len(payload(args.files - 1))} bytes) "
          f"in {args.dirs} directories; median of {args.repeat} round(s); higher is better")
    for n in notes:
        print(f"  {n}")
    if bench.drop_note:
        print(f"  cold reads: {bench.drop_note}")
    elif any(k.startswith("cold") for rr in results.values() for r in rr for k in r):
        print("  cold reads: after a remount and `sync; echo 3 > /proc/sys/vm/drop_caches`; "
              "passthrough_ll/tmpfs: one cold figure, shown in each cold row")
    print()
    cols = list(requested)
    tierfs_cols = [s for s in cols if s in TIERFS_SYSTEMS]
    ratio_cols = []
    if "passthrough_ll" in cols:
        ratio_cols = [(s, "passthrough_ll") for s in tierfs_cols]
        if "tmpfs" in cols:
            ratio_cols.append(("passthrough_ll", "tmpfs"))
    head = (["workload", "unit"] + cols
            + [f"{SHORT[a]}/{SHORT[b]}" for a, b in ratio_cols])
    rows = []
    owners = {"cold_redis": ("tierfs-redis-pg",), "cold_pg": PG_SYSTEMS,
              "cold_sqlite": ("tierfs-sqlite",)}
    for key, label, unit in ROWS:
        vals = {s: rate(s, key) for s in cols}
        if all(v is None for v in vals.values()):
            continue
        if key in owners and not any(s in cols for s in owners[key]):
            if tierfs_cols or key != "cold_sqlite":
                continue  # the references' cold figure, once, without tierfs
            label = "cold read (remount, drop caches)"
        if unit in ("ratio", "ms"):
            form = "{:.2f}x" if unit == "ratio" else "{:,.0f}"
            cells = ["n/a" if vals[s] is None else form.format(vals[s]) for s in cols]
            cells += ["" for _ in ratio_cols]
        else:
            cells = [fmt_rate(vals[s]) for s in cols]
            cells += [fmt_ratio(vals[a], vals[b]) for a, b in ratio_cols]
        rows.append([label, unit] + cells)
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join(h.ljust(widths[i]) if i < 2 else h.rjust(widths[i]) for i, h in enumerate(head))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])
                        for i, c in enumerate(r)).rstrip())
    print()
    for s in tierfs_cols:
        m = mounts.get(s)
        if m is not None and m.drain_seconds is not None:
            print(f"{s}: unmount to exit (drain) took {m.drain_seconds:.2f}s")
    if results.get("tierfs-redis-pg"):
        rd = results["tierfs-redis-pg"][-1].get("redis", {})
        for key, label in (("cold_redis", "from redis"), ("cold_pg", "from postgres")):
            d = rd.get(key)
            if d:
                print(f"tierfs-redis-pg cold read ({label}), last round: Redis held "
                      f"{d['keys_before']:,} keys before, {d['hits']:,} hits, "
                      f"{d['misses']:,} misses, {d['keys_after']:,} keys after")
    if args.keep:
        print(f"work directory kept: {workdir}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, tiers.ServerError) as e:
        log(f"error: {e}")
        sys.exit(1)
    except BaseException as e:
        if not INTERRUPTED:
            raise
        # An interrupted FUSE call may surface as EINTR/EBADF rather than
        # KeyboardInterrupt: any exception after a signal is the signal.
        log(f"interrupted by signal {INTERRUPTED[0]} ({type(e).__name__}: {e}); "
            "mounts and servers cleaned up")
        sys.exit(130)
