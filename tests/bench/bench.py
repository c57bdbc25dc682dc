#!/usr/bin/python3
"""Side-by-side benchmark: tierfs on each of its stores vs libfuse's
passthrough_ll over tmpfs vs raw tmpfs, the same workloads in one run, the
systems interleaved (docs/design.md §13: targets are ratios to references
measured on the same machine at the same time).

Workloads, on a tree of FILES small JSON files spread over DIRS directories,
in this order, every round:
    raw       (tierfs-pg, tierfs-redis-pg; the PostgreSQL reference, just
              before the creates) the same FILES rows upserted into tables
              shaped like tierfs's entries and contents, in the same
              PostgreSQL server: one multi-row INSERT ... ON CONFLICT into
              each table per transaction of 1000 files, as a generated SQL
              script run with `psql -f`, timed end to end (psql start and
              login included). A row is one file: an entries row and its
              contents row
    create    create+write+close of every file (os.open/os.write/os.close),
              timed to the last close
    persist   (PostgreSQL systems) the same creates timed from the first
              create until PostgreSQL holds every row: `SELECT count(*) FROM
              entries` (polled every 5 ms over one psql session) equals root +
              DIRS + FILES; also shown: the lag from the last close to that
              moment (ms)
    stat      stat() of every file, first pass (just created)
    stat hot  stat() of every file again, right after, 5 passes timed
              together: the kernel's attribute cache, where the system
              keeps one (passthrough_ll's default keeps attributes for 1 s)
    read      open+read+close of every file (warm: just written), content
              checked
    ls -l     one `ls -l` of all the directories (entries/s): the first
              listing since the files were made
    ls -l hot the same `ls -l` again, right after, 5 passes timed
              together: what the kernel cached
    find      `find` of all the directories, output read and dropped here
              (entries/s: files and directories)
    find hot  the same `find` again, right after, 5 passes timed together
              (a pass over cached data takes milliseconds; request counts
              of these rows are for the 5 passes)
    grep -r   `grep -r NEEDLE` of all the directories: reads every file;
              NEEDLE is in exactly one file, which must be the one listed
    tar       `tar -cf -` of all the directories, its output read and
              dropped by this script (GNU tar skips reading file data when
              its archive *is* /dev/null, so a plain `tar cf /dev/null` would
              measure stat only)
    overwrite open(O_WRONLY|O_TRUNC)+write+close of every existing file, new
              content of the same length (later reads check it)
    cold stat stat() of every file after a remount (tierfs's L1 and the
              kernel's FUSE caches empty) and `sync; echo 3 >
              /proc/sys/vm/drop_caches` (root only; otherwise noted)
    cold read open+read+close of every file after another remount and
              drop_caches:
                from redis     tierfs-redis-pg: Redis holds every file (they
                               were written through); only its content comes
                               from Redis, names are looked up in PostgreSQL
                from postgres  tierfs-redis-pg after FLUSHALL, and tierfs-pg
                from sqlite    tierfs-sqlite
              passthrough_ll is remounted too and tmpfs only has its caches
              dropped; their one cold figure is the reference of every cold
              read row
    unlink    unlink() of every file
    8 writers (PostgreSQL systems) 8 processes started together, each
              making a directory wK and creating its eighth of the files in
              it, timed from the start until PostgreSQL holds every row; the
              ratio to the raw upsert is the persistence target's
    8 programs (PostgreSQL systems, when tests/bench/fill is built) the
              same files as the 8 writers, written by ID by 8 programs
              started together (tests/bench/fill --json, each its own engine
              and log, one sync at the end), into a new database of the
              same server (and the system's Redis, under a prefix of their
              own), without a mount; timed from the start until PostgreSQL
              holds every row; the database is dropped after. The
              persistence target is on this row too
The read-only system runs, on a tree made through a read-write mount of its
store and then remounted with `-o ro`: stat, stat hot, read (after one
untimed read pass that fills the caches), ls -l, find, grep -r, tar.

Systems:
    tierfs-sqlite   build/fs/tierfs --sqlite=<fresh file> -f MNT (the SQLite
                    file lives in the work directory, on disk by default)
    tierfs-pg       build/fs/tierfs --postgres=URI -o wal_path=DIR -f MNT, on a
                    fresh database of a private PostgreSQL server
    tierfs-redis-pg the same plus --redis=URL, a private Redis server
    tierfs-redis-pg-ro
                    the same on a database of its own (Redis keys under
                    another redis_prefix), mounted with `-o ro` for the
                    read workloads
    passthrough_ll  built here from /usr/share/doc/libfuse3-dev/examples
                    (passthrough_ll.c or .c.gz), `passthrough_ll -f -o
                    source=SRC MNT` with its default options, SRC on tmpfs
    tmpfs           the same workloads on tmpfs directly (the ceiling)

Rounds: --repeat R rounds. A round steps through the systems workload by
workload: the first workload of each system in turn, then the second, ...
(every system's warm workloads come before any cold one: dropping the
kernel's caches empties every system's), so that the same workload of every
system runs within seconds of the others' and a burst of load on the shared
machine falls on all columns alike. Each round starts with the next system
of the previous round's order (rotated by one). A tierfs system waits,
untimed, for its queue of changes to L3 to empty after the creates, the
overwrites and the unlinks. Figures are medians over the rounds; ratios are
ratios of medians. The load average at the start of each round is logged
and kept in the JSON. Each row carries its target (a minimum ratio
to passthrough_ll, tmpfs or the raw upsert), marked pass or FAIL per tierfs
column; the targets are stated for redis+postgres, the other stores are
marked against the same bar for comparison.

The private servers are started, fresh, in the work directory with
scripts/pg-test-server.sh (fsync on; as root the server runs as the
'postgres' user) and scripts/redis-test-server.sh (no persistence) when a
system that needs them is selected. Each PostgreSQL system gets a database;
the raw upsert one more. As root, fresh tmpfs instances are mounted for
passthrough_ll's source and the tmpfs column; otherwise fresh directories
under /dev/shm are used. Every mount made here is unmounted and every server
stopped on exit (normal, error, Ctrl-C, SIGTERM).

--json FILE writes every round's figures (ops and seconds per workload), the
medians, the ratios, the targets and their marks, the command and the
machine; scripts/bench-chart.sh renders a chart from such a file.

usage: tests/bench/bench.py [--files N] [--dirs D] [--repeat R]
                            [--systems tierfs-sqlite,tierfs-pg,...]
                            [--tierfs-bin PATH] [--fill-bin PATH] [-o TIERFS_OPT ...]
                            [--json FILE] [--workdir DIR] [--keep]
environment: BENCH_FILES, BENCH_DIRS, BENCH_REPEAT, TIERFS_BIN, PGBIN
quick smoke run: tests/bench/bench.py --files 500 --dirs 10
"""

import argparse
import json
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
from benchlib import BenchError, Cleanup, FuseMount, build_passthrough_ll, log, wait_rows  # noqa: E402
import benchlib  # noqa: E402

benchlib.PROG = "bench"

REPO = Path(__file__).resolve().parents[2]
PERSIST_TIMEOUT = 600.0  # seconds for PostgreSQL to hold every row
RAW_ROWS_PER_TXN = 1000
RO = "tierfs-redis-pg-ro"
TIERFS_SYSTEMS = ("tierfs-sqlite", "tierfs-pg", "tierfs-redis-pg", RO)
PG_SYSTEMS = ("tierfs-pg", "tierfs-redis-pg", RO)
REDIS_SYSTEMS = ("tierfs-redis-pg", RO)
PTL, TMPFS = "passthrough_ll", "tmpfs"
SYSTEMS = TIERFS_SYSTEMS + (PTL, TMPFS)
ALIASES = {"tierfs": "tierfs-sqlite", "ptl": PTL, "ro": RO}
SHORT = {"tierfs-sqlite": "sqlite", "tierfs-pg": "pg", "tierfs-redis-pg": "redis-pg",
         RO: "ro", PTL: "ptl", TMPFS: "tmpfs"}
WRITERS = 8  # the concurrent writers of the persistence target
HOT_PASSES = 5  # passes timed together in a second-pass row
COLD_KEYS = ("cold_redis", "cold_pg", "cold_sqlite")
ROWS = [  # (key, label, unit), in the order the workloads run
    ("create", "create+write+close (to last close)", "files/s"),
    ("persist", "create, until all rows in postgres", "files/s"),
    ("raw", "raw upsert, same rows, same postgres", "rows/s"),
    ("persist/raw", "  persisted / raw upsert (1 writer)", "ratio"),
    ("tail", "  last close to all rows in postgres", "ms"),
    ("stat", "stat, first pass", "files/s"),
    ("stat_hot", "stat hot (second pass)", "files/s"),
    ("read", "open+read+close (warm)", "files/s"),
    ("ls", "ls -l every dir", "entries/s"),
    ("ls_hot", "ls -l again (second pass)", "entries/s"),
    ("find", "find every dir", "entries/s"),
    ("find_hot", "find again (second pass)", "entries/s"),
    ("grep", "grep -r (reads every file)", "files/s"),
    ("tar", "tar -cf - | (dropped)", "files/s"),
    ("overwrite", "open O_TRUNC+write+close", "files/s"),
    ("cold_stat", "cold stat (remount, drop caches)", "files/s"),
    ("cold_redis", "cold read (from redis)", "files/s"),
    ("cold_pg", "cold read (from postgres)", "files/s"),
    ("cold_sqlite", "cold read (from sqlite)", "files/s"),
    ("cold/read", "  cold read from L3 / warm read", "ratio"),
    ("unlink", "unlink", "files/s"),
    ("persist8", "8 writers, until all rows in postgres", "files/s"),
    ("persist8/raw", "  8 writers persisted / raw upsert", "ratio"),
    ("lib8", "8 programs by ID, until all rows in postgres", "files/s"),
    ("lib8/raw", "  8 programs persisted / raw upsert", "ratio"),
]
RO_KEYS = ("stat", "stat_hot", "read", "ls", "ls_hot", "find", "find_hot", "grep", "tar")
# The targets: (reference, minimum ratio to it), for a read-write tierfs
# column; a read-only column's replace them for its workloads. stat, ls -l
# and find have theirs for what the kernel cached (the second pass); the
# first pass is shown without one.
TARGETS = {
    "create": (PTL, 1.0), "overwrite": (PTL, 1.0), "unlink": (PTL, 1.0),
    "stat_hot": (TMPFS, 0.85), "ls_hot": (TMPFS, 0.85), "find_hot": (TMPFS, 0.85),
    "read": (PTL, 2.0), "grep": (PTL, 2.0), "tar": (PTL, 2.0),
    "cold_stat": (PTL, 1.0), "cold_redis": (PTL, 1.0), "cold_pg": (PTL, 1.0),
    "cold_sqlite": (PTL, 1.0),
    "persist8/raw": ("raw", 0.8), "lib8/raw": ("raw", 0.8),
}
RO_TARGETS = {"stat_hot": (TMPFS, 0.85), "ls_hot": (TMPFS, 0.85), "find_hot": (TMPFS, 0.85),
              "read": (TMPFS, 0.75), "grep": (TMPFS, 0.75), "tar": (TMPFS, 0.75)}


def target(system, key):
    """(reference, minimum) for @system's @key row, or None."""
    if system == RO:
        return RO_TARGETS.get(key)
    if system in TIERFS_SYSTEMS:
        return TARGETS.get(key)
    return None


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


# --- systems -------------------------------------------------------------------

class System:
    """One column: where its tree lives (@root), its FUSE daemon (@mount,
    None for tmpfs), and for the PostgreSQL systems a psql session on its
    database (@pg) and the Redis server it uses (@redis). A read-only system
    has @ro_argv: its daemon's command line with `-o ro` (@mount's own argv is
    the read-write one, which makes and removes the tree)."""

    def __init__(self, name, root, mount=None, pg=None, redis=None, ro_argv=None):
        self.name, self.root, self.mount, self.pg, self.redis = name, root, mount, pg, redis
        self.ro_argv = ro_argv
        self.rw_argv = mount.argv if mount is not None else None

    def flush_redis_remount(self):
        self.mount.stop()
        self.redis.cli("FLUSHALL")
        self.mount.start()

    def remount_as(self, argv):
        self.mount.stop()
        self.mount.argv = argv
        self.mount.start()

    def cold_phases(self):
        """[(result key, what to do before dropping caches, "stat" or "read")]"""
        remount = self.mount.remount if self.mount is not None else (lambda: None)
        phases = [("cold_stat", remount, "stat")]
        if self.name == "tierfs-redis-pg":
            phases += [("cold_redis", remount, "read"),
                       ("cold_pg", self.flush_redis_remount, "read")]
        elif self.name == "tierfs-pg":
            phases.append(("cold_pg", remount, "read"))
        elif self.name == "tierfs-sqlite":
            phases.append(("cold_sqlite", remount, "read"))
        else:  # passthrough_ll (remounted) and tmpfs (caches dropped only)
            phases.append(("cold_ref", remount, "read"))
        return phases


class Bench:
    """What every round shares: the raw upsert reference and dropping the
    kernel's caches."""

    def __init__(self):
        self.raw_uri = None  # the raw upsert's database
        self.raw_sql = None  # its generated script
        self.raw_session = None
        self.drop_note = None  # why caches were not dropped
        # for the 8 programs: tests/bench/fill, the PostgreSQL server, the
        # environment and directory of their runs, and how many ran
        self.fill_bin = None
        self.pg = None
        self.env = None
        self.workdir = None
        self.lib_runs = 0

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


def payload(i, rev=0):
    """File @i's content; every @rev (0-9) has the same length."""
    return (f'{{"id": {i}, "name": "item-{i}", "rev": {rev}, "tags": ["bench", "tierfs"], '
            f'"value": {i * 0.5}}}\n').encode()


def needle(nfiles):
    """A string that exactly one file holds (any revision), and its index."""
    i = nfiles // 2
    return f'"name": "item-{i}",', i


C_ENV = dict(os.environ, LC_ALL="C")


def write_all(files, datas, flags):
    for p, data in zip(files, datas):
        fd = os.open(p, flags, 0o644)
        try:
            os.write(fd, data)
        except BaseException:  # leave no descriptor open in the mount
            close_quietly(fd)
            raise
        os.close(fd)


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


def stat_all(files):
    for p in files:
        os.stat(p)


class OpCounter:
    """Counts the requests the kernel sends to one FUSE mount, by opcode,
    with the fuse_request_send tracepoint, in a tracefs instance of its own
    (root only; the kernel must have the fuse trace events). @root is the
    mount being counted, None while counting is off."""

    def __init__(self, workdir, cleanup):
        self.root = None
        tracefs = None
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "tracefs":
                    tracefs = Path(fields[1])
                    break
        if tracefs is None:
            tracefs = workdir / "tracefs"
            tracefs.mkdir()
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(tracefs)], check=True)
            cleanup.push(f"umount {tracefs}",
                         lambda: subprocess.run(["umount", str(tracefs)], check=False))
        if not (tracefs / "events" / "fuse" / "fuse_request_send").is_dir():
            raise BenchError(f"{tracefs}: no fuse/fuse_request_send trace event in this kernel")
        self.dir = tracefs / "instances" / f"tierfs-bench-{os.getpid()}"
        self.dir.mkdir()
        cleanup.push(f"rmdir {self.dir}", lambda: self.dir.rmdir())
        (self.dir / "buffer_size_kb").write_text("32768\n")
        self.event = self.dir / "events" / "fuse" / "fuse_request_send"

    def tier_calls(self):
        """{"tier op": calls} from tierfs's metrics, {} for another
        filesystem (read before tracing starts and after it stops)."""
        try:
            text = (self.root / ".tierfs" / "metrics").read_text()
        except OSError:
            return {}
        calls = {}
        for line in text.splitlines():
            if line.startswith("tierfs_tier_calls_total{"):
                labels, value = line[len("tierfs_tier_calls_total{"):].split("} ")
                kv = dict(x.split("=", 1) for x in labels.split(","))
                calls[f"{kv['tier'].strip(chr(34))} {kv['op'].strip(chr(34))}"] = int(value)
        return calls

    def start(self):
        self.calls0 = self.tier_calls()
        # The connection is the mount's device number (major 0 for FUSE).
        conn = os.minor(os.stat(self.root).st_dev)
        (self.event / "filter").write_text(f"connection == {conn}\n")
        with open(self.dir / "trace", "w"):
            pass  # opened for writing with O_TRUNC: empties the buffer
        (self.event / "enable").write_text("1\n")

    def stop(self):
        """({opcode name: requests}, {"tier op": calls}) since start()."""
        (self.event / "enable").write_text("0\n")
        for stats in (self.dir / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                if line.startswith("overrun:") and int(line.split()[1]) != 0:
                    raise BenchError(f"{stats}: the trace buffer overflowed: use fewer files")
        counts = {}
        with open(self.dir / "trace") as f:
            for line in f:
                if line.startswith("#"):
                    continue
                i = line.find("(FUSE_")
                if i >= 0:
                    op = line[i + 6:line.index(")", i)]
                    counts[op] = counts.get(op, 0) + 1
        calls = {k: v - self.calls0.get(k, 0) for k, v in self.tier_calls().items()}
        return counts, {k: v for k, v in calls.items() if v}


COUNTER = None  # an OpCounter with --count-requests
COLD = "cold"  # what a round yields before its first cold phase


def timed(sx, res, key, ops, fn, *args):
    """Runs fn(*args), records (@ops, seconds) as res[@key] and, while
    requests are counted and @sx is a FUSE system, res["requests"][@key]."""
    counting = COUNTER is not None and sx.mount is not None
    if counting:
        COUNTER.root = sx.root
        COUNTER.start()
    t0 = time.perf_counter()
    out = fn(*args)
    res[key] = (ops, time.perf_counter() - t0)
    if counting:
        fuse, tiers_ = COUNTER.stop()
        res.setdefault("requests", {})[key] = fuse
        if tiers_:
            res.setdefault("tier_calls", {})[key] = tiers_
    return out


def passes(fn, *args):
    """fn(*args) HOT_PASSES times in a row: a pass over what the kernel
    cached takes a few milliseconds, too short to time once on a shared
    machine."""
    for _ in range(HOT_PASSES):
        fn(*args)


def settle(sx):
    """Waits (not timed) until tierfs on @sx has no change waiting for L3
    (its tierfs_queue_changes metric is 0), so that no persistence runs
    during the next workload; nothing to wait for on the references."""
    if sx.name not in TIERFS_SYSTEMS:
        return
    metrics = sx.root / ".tierfs" / "metrics"

    def queued():
        for line in metrics.read_text().splitlines():
            if line.startswith("tierfs_queue_changes "):
                return int(line.split()[1])
        raise BenchError(f"{metrics} has no tierfs_queue_changes")

    if not benchlib.wait_for(lambda: queued() == 0, PERSIST_TIMEOUT):
        raise BenchError(f"{sx.name}: {queued()} changes still wait for L3 after "
                         f"{PERSIST_TIMEOUT:.0f}s")


def run_ls(root, dirs, nfiles):
    cp = subprocess.run(["ls", "-l"] + [d.name for d in dirs], cwd=root, stdout=subprocess.PIPE,
                        env=C_ENV, check=True)
    listed = sum(1 for line in cp.stdout.splitlines() if line.startswith(b"-"))
    if listed != nfiles:
        raise BenchError(f"ls -l under {root} listed {listed} files, expected {nfiles}")


def run_find(root, dirs, nfiles):
    cp = subprocess.run(["find"] + [d.name for d in dirs], cwd=root, stdout=subprocess.PIPE,
                        env=C_ENV, check=True)
    found = cp.stdout.count(b"\n")
    if found != nfiles + len(dirs):
        raise BenchError(f"find under {root} printed {found} names, "
                         f"expected {nfiles + len(dirs)}")


def run_grep(root, dirs, files):
    what, i = needle(len(files))
    cp = subprocess.run(["grep", "-r", "-l", "-F", what] + [d.name for d in dirs], cwd=root,
                        stdout=subprocess.PIPE, env=C_ENV)
    want = f"{files[i].parent.name}/{files[i].name}\n".encode()
    if cp.returncode != 0 or cp.stdout != want:
        raise BenchError(f"grep -r under {root} exited {cp.returncode} listing "
                         f"{cp.stdout[:200]!r}, expected {want!r}")


def run_tar(root, dirs):
    # tar's output is read and dropped here (what `| cat >/dev/null` does).
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
    if rc != 0:
        raise BenchError(f"tar under {root} exited {rc}")


def tree_workloads(sx, res, dirs, files):
    """ls -l, find, grep -r and tar of the tree, timed into @res, one per
    step (a generator, as run_workloads())."""
    nfiles = len(files)
    # each second pass right after its first, in one step, as for stat
    timed(sx, res, "ls", nfiles, run_ls, sx.root, dirs, nfiles)
    timed(sx, res, "ls_hot", HOT_PASSES * nfiles, passes, run_ls, sx.root, dirs, nfiles)
    yield "ls"
    timed(sx, res, "find", nfiles + len(dirs), run_find, sx.root, dirs, nfiles)
    timed(sx, res, "find_hot", HOT_PASSES * (nfiles + len(dirs)), passes, run_find, sx.root,
          dirs, nfiles)
    yield "find"
    timed(sx, res, "grep", nfiles, run_grep, sx.root, dirs, files)
    yield "grep"
    timed(sx, res, "tar", nfiles, run_tar, sx.root, dirs)
    yield "tar"


def run_workloads(sx, bench, nfiles, ndirs):
    """One round of @sx, a step at a time: a generator that runs one
    workload per next() on a fresh tree under @sx.root and yields its key;
    it yields COLD before the first cold phase, and returns {key: (ops,
    seconds)}, plus {"redis": {...}} for a system with Redis. run_round()
    steps every system in turn, so that each workload of every system runs
    within seconds of the others'."""
    if sx.ro_argv is not None:
        return (yield from run_ro_workloads(sx, nfiles, ndirs))
    root = sx.root
    dirs, files = layout(root, nfiles, ndirs)
    datas = [payload(i) for i in range(nfiles)]
    res = {}

    if sx.pg is not None:
        # The previous round's unlinks are in PostgreSQL (only the root is
        # left), so the server is idle for the reference and for the creates.
        wait_rows(sx.pg, 1, f"{sx.name}: before the round", PERSIST_TIMEOUT)
        res["raw"] = (nfiles, bench.raw_upsert())
        yield "raw"

    for d in dirs:
        os.mkdir(d)
    t0 = time.perf_counter()
    timed(sx, res, "create", nfiles, write_all, files, datas,
          os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    if sx.pg is not None:
        t_all = wait_rows(sx.pg, 1 + ndirs + nfiles, f"{sx.name}: persisting the creates", PERSIST_TIMEOUT)
        res["persist"] = (nfiles, t_all - t0)
    settle(sx)
    yield "create"

    # The second pass right after the first, in one step: passthrough_ll's
    # attributes are cached for 1 s only.
    timed(sx, res, "stat", nfiles, stat_all, files)
    timed(sx, res, "stat_hot", HOT_PASSES * nfiles, passes, stat_all, files)
    yield "stat"
    timed(sx, res, "read", nfiles, read_all, files, datas)
    yield "read"
    yield from tree_workloads(sx, res, dirs, files)

    datas = [payload(i, 1) for i in range(nfiles)]
    timed(sx, res, "overwrite", nfiles, write_all, files, datas, os.O_WRONLY | os.O_TRUNC)
    settle(sx)
    yield "overwrite"

    # Dropping the kernel's caches empties every system's: run_round() waits
    # until every system has done its warm workloads.
    yield COLD
    phases = sx.cold_phases()
    for i, (key, prepare, what) in enumerate(phases):
        prepare()  # remount (and FLUSHALL): not timed
        bench.drop_caches()
        if sx.redis is not None:
            keys0, (hits0, misses0) = sx.redis.dbsize(), sx.redis.stats()
        if what == "stat":
            timed(sx, res, key, nfiles, stat_all, files)
        else:
            timed(sx, res, key, nfiles, read_all, files, datas)
        if sx.redis is not None:
            hits1, misses1 = sx.redis.stats()
            res.setdefault("redis", {})[key] = dict(keys_before=keys0, hits=hits1 - hits0,
                                                    misses=misses1 - misses0,
                                                    keys_after=sx.redis.dbsize())
        if i < len(phases) - 1:
            yield key

    # The unlinks in the same step as the last cold read: another system's
    # drop_caches in between would empty this one's dentries.
    timed(sx, res, "unlink", nfiles, lambda: [os.unlink(p) for p in files])
    for d in dirs:
        os.rmdir(d)
    settle(sx)
    if sx.pg is not None:  # the next round runs on an idle server
        wait_rows(sx.pg, 1, f"{sx.name}: persisting the unlinks", PERSIST_TIMEOUT)
    yield "unlink"

    if sx.pg is not None:
        res["persist8"] = persist_writers(sx, nfiles, WRITERS)
        yield "persist8"
        if bench.fill_bin is not None:
            res["lib8"] = persist_programs(sx, bench, nfiles, WRITERS)
            yield "lib8"
    return res


def persist_writers(sx, nfiles, writers):
    """@writers processes started together, each making directory wK under
    @sx.root and creating its share of @nfiles files in it; returns (files,
    seconds from the start until PostgreSQL holds every row). Then removes
    them and waits until PostgreSQL has only the root again."""
    per = nfiles // writers

    def one(k, start):
        start.wait()
        d = sx.root / f"w{k}"
        os.mkdir(d)
        first = k * per
        write_all([d / f"item{i:06d}.json" for i in range(first, first + per)],
                  [payload(i) for i in range(first, first + per)],
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    t0, _ = benchlib.run_together(one, writers, sx.name)
    t_all = wait_rows(sx.pg, 1 + writers + writers * per,
                      f"{sx.name}: persisting {writers} writers' files", PERSIST_TIMEOUT)
    for k in range(writers):
        shutil.rmtree(sx.root / f"w{k}")
    settle(sx)
    wait_rows(sx.pg, 1, f"{sx.name}: persisting the removals", PERSIST_TIMEOUT)
    return writers * per, t_all - t0


def persist_programs(sx, bench, nfiles, writers):
    """@writers programs started together, each a tests/bench/fill --json
    process writing by ID the items whose files persist_writers() makes,
    into a new database of @sx's server (and @sx's Redis, if any, under a
    key prefix of their own); returns (items, seconds from the start until
    PostgreSQL holds every row). The schema is made before the timing; the
    database and the keys are dropped after."""
    per = nfiles // writers
    bench.lib_runs += 1
    name = f"lib8_{sx.name.replace('-', '_')}_{bench.lib_runs}"
    uri = bench.pg.create_db(name)
    wal = bench.workdir / name
    (wal / "init").mkdir(parents=True)
    store = [f"--postgres={uri}"]
    if sx.redis is not None:
        store += [f"--redis={sx.redis.url}", f"--redis-prefix={name}:"]

    benchlib.run_fill_programs(bench.fill_bin, store, wal / "init", 1, 0, bench.env,
                               f"{sx.name}: making the programs' schema")
    session = tiers.PsqlSession(uri)
    try:
        base = int(session.value("SELECT count(*) FROM entries"))
        t0 = time.perf_counter()
        benchlib.run_fill_programs(bench.fill_bin, store, wal, writers, per, bench.env,
                                   f"{sx.name}: {writers} programs")
        t_all = wait_rows(session, base + writers + writers * per,
                          f"{sx.name}: {writers} programs' items", PERSIST_TIMEOUT)
    finally:
        session.close()
    bench.pg.superuser(f'DROP DATABASE "{name}"')
    if sx.redis is not None:
        sx.redis.cli("EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
                     "redis.call('DEL', k) end", "0", f"{name}:*")
    return writers * per, t_all - t0


def run_ro_workloads(sx, nfiles, ndirs):
    """The read-only system, as run_workloads(): the tree made through the
    read-write mount (not timed) and persisted, a remount with `-o ro`, the
    read workloads, a remount read-write to remove the tree. All of it comes
    before COLD: the others' cold phases drop the kernel's caches."""
    root = sx.root
    dirs, files = layout(root, nfiles, ndirs)
    datas = [payload(i) for i in range(nfiles)]
    res = {}
    wait_rows(sx.pg, 1, f"{sx.name}: before the round", PERSIST_TIMEOUT)
    for d in dirs:
        os.mkdir(d)
    write_all(files, datas, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    wait_rows(sx.pg, 1 + ndirs + nfiles, f"{sx.name}: persisting the creates", PERSIST_TIMEOUT)
    settle(sx)

    sx.remount_as(sx.ro_argv)
    try:
        if not os.statvfs(root).f_flag & os.ST_RDONLY:
            raise BenchError(f"{sx.name}: {root} is not read-only after mounting with -o ro")
        yield "mounted ro"
        timed(sx, res, "stat", nfiles, stat_all, files)
        timed(sx, res, "stat_hot", HOT_PASSES * nfiles, passes, stat_all, files)
        yield "stat"
        read_all(files, datas)  # fills tierfs's L1 and the kernel's caches
        timed(sx, res, "read", nfiles, read_all, files, datas)
        yield "read"
        yield from tree_workloads(sx, res, dirs, files)
    finally:
        sx.remount_as(sx.rw_argv)

    for p in files:
        os.unlink(p)
    for d in dirs:
        os.rmdir(d)
    wait_rows(sx.pg, 1, f"{sx.name}: persisting the unlinks", PERSIST_TIMEOUT)
    yield COLD
    return res


def run_round(order, sx, bench, nfiles, ndirs):
    """One round: every system's workloads, a step of each system in turn
    (in @order), the warm ones of every system before any cold one; returns
    {system: its results}."""
    gens = {s: run_workloads(sx[s], bench, nfiles, ndirs) for s in order}
    out = {}
    for _stage in ("warm", "cold"):
        active = [s for s in order if s not in out]
        while active:
            for s in list(active):
                try:
                    step = next(gens[s])
                except StopIteration as done:
                    out[s] = done.value
                    active.remove(s)
                    continue
                if step == COLD:
                    active.remove(s)  # until every system is there
    return out


# --- report ----------------------------------------------------------------------

def ref_key(ref, key):
    """The reference's row for tierfs's @key: the references have one cold
    read figure."""
    return "cold_ref" if key in COLD_KEYS and ref in (PTL, TMPFS) else key


def summarize(requested, systems, results, args, commit):
    """Everything measured, as one JSON-able dict: every round's figures, the
    medians (ops/s; "tail" in ms; "persist/raw", "persist8/raw",
    "lib8/raw" and "cold/read" ratios), the ratios to passthrough_ll and
    tmpfs, the targets and their marks."""
    med = {}
    for s in systems:
        rounds = results.get(s) or []
        keys = sorted({k for rr in rounds for k in rr if k not in ("redis", "requests", "tier_calls")})
        m = {k: statistics.median(rr[k][0] / rr[k][1] for rr in rounds if k in rr)
             for k in keys}
        for k in ("persist8", "lib8"):
            if k in m and "raw" in m:
                m[k + "/raw"] = m[k] / m["raw"]
        if "persist" in m and "raw" in m:
            m["persist/raw"] = m["persist"] / m["raw"]
            m["tail"] = statistics.median(rr["persist"][1] - rr["create"][1]
                                          for rr in rounds if "persist" in rr) * 1000
        cold = next((m[k] for k in ("cold_pg", "cold_sqlite", "cold_ref") if k in m), None)
        if cold is not None and m.get("read"):
            m["cold/read"] = cold / m["read"]
        med[s] = m

    ratios, targets = {}, {}
    for s in systems:
        if s not in TIERFS_SYSTEMS and s != PTL:
            continue
        refs = [r for r in (PTL, TMPFS) if r in med and r != s]
        for key, _label, unit in ROWS:
            mine = med[s].get(ref_key(s, key))
            if unit in ("ratio", "ms") or mine is None:
                continue
            for r in refs:
                v = med[r].get(ref_key(r, key))
                if v:
                    ratios.setdefault(s, {}).setdefault(key, {})[r] = mine / v
    for s in systems:
        for key, _label, _unit in ROWS:
            t = target(s, key)
            if t is None or key not in med[s]:
                continue
            ref, least = t
            got = med[s][key] if ref == "raw" else ratios.get(s, {}).get(key, {}).get(ref)
            if got is not None:
                targets.setdefault(s, {})[key] = dict(ref=ref, min=least, ratio=got,
                                                      passed=got >= least)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": shlex.join(sys.argv).replace(str(REPO) + "/", ""),  # from the top
        "tierfs_commit": commit,
        "machine": machine(),
        "files": args.files, "dirs": args.dirs, "repeat": args.repeat,
        "systems": [s for s in requested if s in systems],
        "rows": [dict(key=k, label=label, unit=unit) for k, label, unit in ROWS],
        "rounds": {s: [{k: (v if k in ("redis", "requests", "tier_calls") else dict(ops=v[0], seconds=v[1]))
                        for k, v in rr.items()} for rr in results.get(s, [])]
                   for s in systems},
        "median": med,
        "ratios": ratios,
        "targets": targets,
        # the FUSE requests of each workload, last round, by opcode
        "requests": {s: results[s][-1]["requests"] for s in systems
                     if results.get(s) and "requests" in results[s][-1]},
        # tierfs's calls to its tiers in each workload, last round (metrics)
        "tier_calls": {s: results[s][-1]["tier_calls"] for s in systems
                       if results.get(s) and "tier_calls" in results[s][-1]},
    }


def print_tables(report, markdown=False):
    """The figures, the ratios, the targets: three tables, as plain text or
    as Markdown."""
    cols = report["systems"]
    med, ratios, targets = report["median"], report["ratios"], report["targets"]
    rows = [(r["key"], r["label"], r["unit"]) for r in report["rows"]]
    tcols = [s for s in cols if s in TIERFS_SYSTEMS]
    has_cold_rows = any(k in med[s] for s in tcols for k in COLD_KEYS)

    def table(head, body, title, nleft=2):
        if not body:
            return
        print(title if not markdown else f"**{title}**")
        print()
        if markdown:
            print("| " + " | ".join(head) + " |")
            print("|" + "|".join("---" if i < nleft else "---:" for i in range(len(head))) + "|")
            for r in body:
                print("| " + " | ".join(c.strip().replace("|", "\\|") or " " for c in r) + " |")
        else:
            widths = [max(len(r[i]) for r in body + [head]) for i in range(len(head))]
            line = "  ".join(h.ljust(widths[i]) if i < nleft else h.rjust(widths[i])
                             for i, h in enumerate(head))
            print(line)
            print("-" * len(line))
            for r in body:
                print("  ".join(c.ljust(widths[i]) if i < nleft else c.rjust(widths[i])
                                for i, c in enumerate(r)).rstrip())
        print()

    # 0. the summary: the column the targets are set for (redis+postgres,
    # else the first tierfs one), then the read-only column's rows
    main = next((s for s in ("tierfs-redis-pg",) + TIERFS_SYSTEMS if s in tcols and s != RO),
                None)
    body = []
    for s in [x for x in (main, RO) if x in tcols]:
        for key, label, unit in rows:
            v = med.get(s, {}).get(key)
            if v is None or (s == RO and key not in RO_KEYS):
                continue
            refs = [med.get(r, {}).get(ref_key(r, key)) if r in cols else None
                    for r in (PTL, TMPFS)]
            rat = ratios.get(s, {}).get(key, {})
            m = targets.get(s, {}).get(key)
            t = target(s, key)
            if unit in ("ratio", "ms"):
                if m is None:
                    continue
                cells = [f"{v:.2f}x", "", "", "", ""]
            else:
                cells = [fmt_rate(v)] + ["" if x is None else fmt_rate(x) for x in refs] + [
                    "" if rat.get(r) is None else fmt_ratio(rat[r]) for r in (PTL, TMPFS)]
            goal = "" if t is None else f">= {t[1]:.2f}x {SHORT.get(t[0], t[0])}"
            shown = "" if m is None else f"{m['ratio']:.2f}"
            if m is not None and not m["passed"] and float(shown) >= m["min"]:
                shown = f"{m['ratio']:.3f}"
            mark = "" if m is None else f"{shown}x {'pass' if m['passed'] else 'FAIL'}"
            if s == RO:
                label = "read-only: " + (
                    "stat, first pass (just mounted)" if key == "stat" else label.strip())
            body.append([label.strip(), unit] + cells
                        + [goal, mark])
    if main is not None:
        table(["workload", "unit", SHORT[main], "ptl", "tmpfs", "/ptl", "/tmpfs",
               "target", "result"], body,
              f"Summary: {main} (the targets are set for it)"
              + (f", then {RO}" if RO in tcols else ""))

    # 1. the figures
    body = []
    for key, label, unit in rows:
        vals = {}
        for s in cols:
            k = key
            if key in COLD_KEYS and s in (PTL, TMPFS):
                k = "cold_ref"
            vals[s] = med.get(s, {}).get(k)
        if key == "cold_sqlite" and not has_cold_rows:
            label = "cold read (remount, drop caches)"  # the references alone
        elif key in COLD_KEYS and not any(key in med[s] for s in tcols):
            continue
        if all(v is None for v in vals.values()):
            continue
        if unit in ("ratio", "ms"):
            form = "{:.2f}x" if unit == "ratio" else "{:,.0f}"
            cells = ["" if vals[s] is None else form.format(vals[s]) for s in cols]
        else:
            cells = ["" if vals[s] is None else fmt_rate(vals[s]) for s in cols]
        body.append([label, unit] + cells)
    table(["workload", "unit"] + [SHORT[s] for s in cols], body,
          f"Median of {report['repeat']} round(s), {report['files']} files in "
          f"{report['dirs']} directories (higher is better)")

    # 2. the ratios
    pairs = [(s, r) for s in tcols for r in (PTL, TMPFS) if r in cols]
    if PTL in cols and TMPFS in cols:
        pairs.append((PTL, TMPFS))
    body = []
    for key, label, unit in rows:
        cells = [ratios.get(s, {}).get(key, {}).get(r) for s, r in pairs]
        if all(c is None for c in cells):
            continue
        body.append([label] + ["" if c is None else fmt_ratio(c) for c in cells])
    table(["workload"] + [f"{SHORT[s]}/{SHORT[r]}" for s, r in pairs], body,
          "Ratios of the medians", nleft=1)

    # 3. the targets: one column for the read-write systems' target, one for
    # the read-only system's
    rw = [s for s in tcols if s != RO]
    body = []
    for key, label, unit in rows:
        def cell(s):
            m = targets.get(s, {}).get(key)
            if m is None:
                return ""
            shown = f"{m['ratio']:.2f}"
            if not m["passed"] and float(shown) >= m["min"]:
                shown = f"{m['ratio']:.3f}"  # 0.7996 is not 0.80
            return f"{shown}x {'pass' if m['passed'] else 'FAIL'}"

        def goal(s):
            t = target(s, key)
            return "" if t is None else f">= {t[1]:.2f}x {SHORT.get(t[0], t[0])}"

        cells = [cell(s) for s in rw]
        shown = [goal(rw[0]) if rw and any(cells) else ""] + cells
        if RO in tcols:
            shown += [goal(RO) if cell(RO) else "", cell(RO)]
        if any(shown):
            body.append([label] + shown)
    head = ["workload", "target"] + [SHORT[s] for s in rw]
    if RO in tcols:
        head += ["target (ro)", SHORT[RO]]
    table(head, body, "Targets (ratio to the reference, pass or FAIL)", nleft=1)

    # 4. the FUSE requests, with --count-requests
    reqs = report.get("requests") or {}
    calls = report.get("tier_calls") or {}
    body = []
    for key, label, unit in rows:
        for s in cols:
            got = reqs.get(s, {}).get(key)
            if got is None:
                continue
            n = report["files"]
            by = ", ".join(f"{op} {c / n:.2f}" for op, c in
                           sorted(got.items(), key=lambda kv: (-kv[1], kv[0])))
            tc = calls.get(s, {}).get(key, {})
            tc = ", ".join(f"{op} {c / n:.2f}" for op, c in
                           sorted(tc.items(), key=lambda kv: (-kv[1], kv[0])))
            body.append([label, SHORT[s], f"{sum(got.values()) / n:.2f}", by, tc])
    table(["workload", "system", "per file", "by opcode, per file", "tierfs tier calls, per file"],
          body,
          "FUSE requests per file (counted with the fuse_request_send trace event; last round)",
          nleft=2)


# --- main ----------------------------------------------------------------------

def fmt_rate(v):
    return "n/a" if v is None else f"{v:,.0f}"


def fmt_ratio(v):
    return "n/a" if v is None else f"{v:.2f}x"


def machine():
    """What the figures were measured on, from /proc and uname."""
    info = {"node": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
                break
    except OSError:
        pass
    return info


def load_average():
    """The 1, 5 and 15 minute load averages, as /proc/loadavg shows them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def git_head():
    """The repository's commit, "-dirty" when the sources of the build
    (not the docs or the tests) differ from it."""
    cp = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True, check=False)
    if cp.returncode != 0:
        return None
    diff = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--",
                           "engine", "fs", "meson.build", "meson_options.txt"], check=False)
    return cp.stdout.strip() + ("-dirty" if diff.returncode != 0 else "")


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
    ap.add_argument("--fill-bin", default=str(REPO / "build" / "tests" / "fill"),
                    help="tests/bench/fill, for the 8 programs (built by meson)")
    ap.add_argument("-o", dest="tierfs_opts", action="append", default=[],
                    help="tierfs -o option (repeatable), for every tierfs system")
    ap.add_argument("--workdir", help="where the temp dir (tierfs's SQLite file, the write-ahead "
                    "logs, PostgreSQL's data directory) goes (default: $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", metavar="FILE",
                    help="write every round's figures, the medians, ratios and targets to FILE")
    ap.add_argument("--count-requests", action="store_true",
                    help="count each workload's FUSE requests by opcode (root; tracing "
                    "slows the FUSE columns down: use a separate run for the timings)")
    ap.add_argument("--report", metavar="FILE",
                    help="run nothing: print the tables of a file written by --json")
    ap.add_argument("--markdown", action="store_true", help="with --report: as Markdown")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            print_tables(json.load(f), markdown=args.markdown)
        return 0

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
    tools = ["fusermount3", "gcc", "pkg-config", "tar", "ls", "find", "grep"]
    if any(s in PG_SYSTEMS for s in systems):
        tools.append("psql")
    if any(s in REDIS_SYSTEMS for s in systems):
        tools.append("redis-cli")
    for tool in tools:
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found (scripts/deps.sh installs it)")
    if args.count_requests and os.geteuid() != 0:
        ap.error("--count-requests needs root (it uses the kernel's trace events)")

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
    orders = []  # each round's order of the systems
    loads = []  # the load average at the start of each round, and at the end
    bench = Bench()
    pg = redis = None
    mounts = {}

    def skip(names, why):
        for s in names:
            if s in systems:
                systems.remove(s)
                notes.append(f"{s}: NOT RUN ({why})")
                log(f"{s} column skipped: {why}")

    global COUNTER
    commit = git_head()  # at the start: the tree may change during the run
    try:
        if args.count_requests:
            COUNTER = OpCounter(workdir, cleanup)
            notes.append("FUSE requests counted with the fuse_request_send trace event: "
                         "tracing slows the FUSE columns; do not compare these timings")
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
                bench.pg, bench.env, bench.workdir = pg, tierfs_env(workdir), workdir
                if Path(args.fill_bin).exists():
                    bench.fill_bin = Path(args.fill_bin)
                else:
                    notes.append(f"8 programs: NOT RUN ({args.fill_bin} does not exist; "
                                 "meson compile -C build builds it)")
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
        if any(s in REDIS_SYSTEMS for s in systems):
            redis = tiers.RedisServer(workdir / "redis")
            try:
                redis.start(cleanup)
                notes.append(f"redis: Redis {redis.version()}, private, {redis.url}, "
                             "no persistence")
            except tiers.ServerError as e:
                skip(REDIS_SYSTEMS, f"Redis: {str(e).splitlines()[0]}")

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
                    if s in REDIS_SYSTEMS:
                        argv.append(f"--redis={redis.url}")
                    if s == RO:  # its own keys in the shared Redis server
                        opts.append("redis_prefix=tierfs-ro:")
                    where = f"log on {fs_type(workdir)}"
                    session = tiers.PsqlSession(uri)
                    cleanup.push(f"close the psql session ({s})", session.close)
                argv.append("-f")
                ro_argv = None
                if s == RO:
                    ro_argv = argv + ["-o", ",".join(opts + ["ro"]), str(mnt)]
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
                           redis=redis if s == "tierfs-redis-pg" else None, ro_argv=ro_argv)
            shown = ["--postgres=" + tiers.redact(a[len("--postgres="):])
                     if a.startswith("--postgres=") else a for a in (ro_argv or argv)]
            notes.append(f"{s}: {shlex.join(shown)}  ({where})"
                         + ("; the tree is made and removed without `ro`" if ro_argv else ""))

        if not systems:
            raise BenchError("no system to run")
        log(f"{args.files} files in {args.dirs} dirs, {args.repeat} round(s), "
            f"systems: {', '.join(systems)}")
        for r in range(args.repeat):
            # Interleaved, each round's order rotated by one, so that drift in
            # the machine's load hits every column alike.
            k = r % len(systems)
            order = systems[k:] + systems[:k]
            orders.append(order)
            log(f"round {r + 1}/{args.repeat}: {', '.join(order)}; load average "
                f"{load_average()}")
            loads.append(load_average())
            got = run_round(order, sx, bench, args.files, args.dirs)
            for s in order:
                results[s].append(got[s])
        loads.append(load_average())

        # Stop the daemons now, to report tierfs's drain at unmount.
        for x in sx.values():
            if x.mount is not None:
                x.mount.stop()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.run()

    report = summarize(requested, systems, results, args, commit)
    print()
    print(f"tierfs benchmark  {report['date']}  {platform.node()}  Linux {platform.release()}  "
          f"{os.cpu_count()} CPUs  tierfs {report['tierfs_commit'] or '?'}")
    print(f"{args.files} small JSON files ({len(payload(0))} to {len(payload(args.files - 1))} "
          f"bytes) in {args.dirs} directories; median of {args.repeat} round(s), the systems "
          "interleaved; higher is better")
    for n in notes:
        print(f"  {n}")
    if bench.drop_note:
        notes.append(f"cold: {bench.drop_note}")
        print(f"  cold: {bench.drop_note}")
    elif any(k.startswith("cold") for rr in results.values() for r in rr for k in r):
        print("  cold: after a remount and `sync; echo 3 > /proc/sys/vm/drop_caches`; "
              "passthrough_ll/tmpfs: one cold read figure, the reference of each cold read row")
    print()
    print_tables(report)
    print()
    cols = list(requested)
    tierfs_cols = [s for s in cols if s in TIERFS_SYSTEMS]
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
    if args.json:
        report["notes"] = notes
        report["drain_seconds"] = {s: mounts[s].drain_seconds for s in tierfs_cols
                                   if s in mounts and mounts[s].drain_seconds is not None}
        report["round_orders"] = orders
        report["load_averages"] = loads
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        print(f"figures written to {args.json}")
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
