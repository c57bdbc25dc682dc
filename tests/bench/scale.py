#!/usr/bin/env python3
"""Scale benchmark: one directory of N entries listed through tierfs and
through passthrough_ll, and 8 concurrent writers persisting into PostgreSQL
against a raw batched upsert.

Listing (`--entries N`, default 1,000,000): the directory big/ with N small
files is made once per system, outside any mount: for tierfs through the
engine by tests/bench/fill (built by meson: `meson compile -C build`), in
batches of 10,000; for passthrough_ll directly in its source tmpfs. Each
system is mounted once; each round runs, interleaved over the systems,
`ls -f big | wc -l` and `find big | wc -l` (with --drop-caches, after
dropping the kernel's caches, as root: tierfs's store then comes from disk,
passthrough_ll's tmpfs stays in memory; by default the store's files stay
in the page cache, as the tmpfs does). tierfs lets the kernel cache a
listing, so without either option only the first round lists from the
store and the later ones from the kernel's cache; --forget makes the
kernel forget its unused dentries and inodes before each listing (as
root, drop_caches 2), the cached listing of big/ with them, while the
page cache (the store's files, the tmpfs) stays. The daemon's peak RSS (VmHWM)
is read after the listing rounds; then `ls -l big` (one lookup per entry:
the kernel keeps every inode until it forgets) runs once and the peak is
read again, with tierfs's node table (the tierfs_nodes metric) before and
after dropping the kernel's caches.

Persistence (`--files F`, default 20,000, `--writers W`, default 8; for
tierfs-pg, tierfs-redis-pg and tierfs-pg-held): W processes each make the directory wK and
write F/W JSON files into it through one mount; the time runs from their
start until PostgreSQL's entries table holds every row. The reference is
the raw batched upsert of tests/bench/tiers.py (the same F rows, 1000 per
transaction, multi-row INSERT ... ON CONFLICT, one `psql -f`) in another
database of the same server. Between rounds the files are removed and the
table drained back. Each line also shows the flusher's own rate (files /
the seconds its L3 apply took, while it shares the CPUs with the writers)
and the CPU seconds the writers (raw: psql), the daemon and the PostgreSQL
server used. pg-held is tierfs-pg with the changes held back in the mount
until the writers are done (batch_flush_* options that never come due);
reading user.tierfs.merkle of the root then commits them in one batch: the
time that takes is the persistence alone, with no writer competing for the
CPUs. pg-lib has no mount: W programs write the same items by ID
through the library (tests/bench/fill --json, each its own engine and
log, one eng_sync() at the end), into a new database each round; the
time runs from their start until PostgreSQL holds every row.

usage: tests/bench/scale.py [--entries N] [--files F] [--writers W]
                            [--repeat R] [--systems sqlite,redis-pg,pg,pg-held,pg-lib,ptl]
                            [--drop-caches | --forget]
                            [--tierfs-bin PATH] [--fill-bin PATH]
                            [--workdir DIR] [--keep]
smoke run: tests/bench/scale.py --smoke   (2,000 entries, 800 files)
"""

import argparse
import os
import resource
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

benchlib.PROG = "scale"

REPO = Path(__file__).resolve().parents[2]
SYSTEMS = ("sqlite", "redis-pg", "pg", "pg-held", "pg-lib", "ptl")
LIST_SYSTEMS = ("sqlite", "redis-pg", "ptl")  # pg lists as redis-pg does
PERSIST_SYSTEMS = ("pg", "redis-pg", "pg-held", "pg-lib")
# pg-held: the mount holds every change back (no batch is due before this
# much time, count or size) until the writers are done; reading
# user.tierfs.merkle of the root then commits them all in one batch
HELD_OPTS = "batch_flush_ms=3600000,batch_flush_count=10000000,batch_flush_bytes=1073741824"
PERSIST_TIMEOUT = 900.0


# --- helpers ------------------------------------------------------------------

def fs_type(path):
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], stdout=subprocess.PIPE,
                         text=True, check=False).stdout.strip()
    return out or "?"


def proc_status(pid, key):
    """A field of /proc/PID/status in KiB (VmHWM, VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def proc_cpu(pid, reaped=False):
    """CPU seconds (user + system, all threads) process @pid has used; with
    @reaped, plus those of its children it has waited for."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are 14-17
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def postmaster(pg):
    return int((pg.dir / "data" / "postmaster.pid").read_text().split()[0])


def pg_children(pg):
    """The pids of the PostgreSQL server @pg's processes but the
    postmaster (an exited one until the postmaster has reaped it)."""
    pm, kids = postmaster(pg), set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pm:
                    kids.add(int(d))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return kids


def pg_cpu(pg):
    """CPU seconds the PostgreSQL server @pg has used: the postmaster, its
    live children and those it has reaped (a backend that has exited but is
    not reaped yet is missed: see pg_settled())."""
    total = proc_cpu(postmaster(pg), reaped=True)
    for pid in pg_children(pg):
        try:
            total += proc_cpu(pid)
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


def pg_settled(pg, kids):
    """Waits until the server @pg has no process beyond @kids (those of a
    client that disconnected are reaped), at most 10 s."""
    benchlib.wait_for(lambda: pg_children(pg) <= kids, 10.0)


def children_cpu():
    """CPU seconds of the children this process has waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def drop_caches(level=3):
    """3: the page cache, dentries and inodes; 2: dentries and inodes."""
    if os.geteuid() != 0:
        return False
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(f"{level}\n")
    return True


def tierfs_nodes(mnt):
    for line in (Path(mnt) / ".tierfs" / "metrics").read_text().splitlines():
        if line.startswith("tierfs_nodes "):
            return int(line.split()[1])
    raise BenchError(f"no tierfs_nodes in {mnt}/.tierfs/metrics")


def timed_count(argv, cwd):
    """Runs @argv in @cwd, counting its output lines; (lines, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                         env=dict(os.environ, LC_ALL="C"))
    lines = 0
    for chunk in iter(lambda: p.stdout.read(1 << 16), b""):
        lines += chunk.count(b"\n")
    rc = p.wait()
    dt = time.perf_counter() - t0
    if rc != 0:
        raise BenchError(f"{' '.join(argv)} in {cwd} exited with {rc}")
    return lines, dt


def fresh_tmpfs(workdir, name, cleanup):
    d = workdir / name
    d.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(d)], check=True)
        cleanup.push(f"umount {d}", lambda: subprocess.run(["umount", "-l", str(d)]))
    return d


def tierfs_env(workdir):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TIERFS_SQLITE", "TIERFS_POSTGRES", "TIERFS_REDIS")
           and not k.startswith("PG")}
    env["PGPASSFILE"] = os.devnull
    env["XDG_DATA_HOME"] = str(workdir / "xdg-data")
    env["XDG_STATE_HOME"] = str(workdir / "xdg-state")
    return env


def payload(i):
    """File @i's content: bench.py's, and tests/bench/fill --json's."""
    return (f'{{"id": {i}, "name": "item-{i}", "rev": 0, "tags": ["bench", "tierfs"], '
            f'"value": {i * 0.5}}}\n').encode()


def file_name(i):
    return f"item{i:06d}.json"


# --- listing ------------------------------------------------------------------

def fill_tmpfs(root, n):
    big = root / "big"
    big.mkdir()
    for i in range(1, n + 1):
        fd = os.open(big / f"{i:07d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, f"{i}\n".encode())
        os.close(fd)


def fill_tierfs(fill_bin, store_args, wal, n, env):
    t0 = time.perf_counter()
    cp = subprocess.run([str(fill_bin), *store_args, f"--wal={wal}", "--dir=big",
                         f"--count={n}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, env=env)
    if cp.returncode != 0:
        raise BenchError(f"fill failed ({cp.returncode}): {cp.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def list_round(mounts, order, n, res, drop):
    for s in order:
        m = mounts[s]
        for key, argv in (("ls -f", ["ls", "-f", "big"]), ("find", ["find", "big"])):
            if drop:
                drop_caches(drop)
            lines, dt = timed_count(argv, m.mnt)
            want = n + 2 if key == "ls -f" else n + 1
            if lines != want:
                raise BenchError(f"{s}: {' '.join(argv)} listed {lines} lines, expected {want}")
            res[s][key].append(dt)
            log(f"{s}: {key}: {n / dt:,.0f} entries/s")


# --- persistence --------------------------------------------------------------

def writer(root, k, first, count, start):
    start.wait()
    d = Path(root) / f"w{k}"
    os.mkdir(d)
    for i in range(first, first + count):
        fd = os.open(d / file_name(i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, payload(i))
        os.close(fd)


def count_rows(sess):
    return int(sess.value("SELECT count(*) FROM entries"))


def metrics(mnt):
    """{name{labels}: value} from the mount's .tierfs/metrics."""
    out = {}
    for line in (Path(mnt) / ".tierfs" / "metrics").read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


FLUSH_KEYS = {
    "batches": "tierfs_batches_total",
    "records": "tierfs_batch_records_total",
    "l3": 'tierfs_tier_seconds_total{tier="l3",op="apply"}',
    "l2": 'tierfs_tier_seconds_total{tier="l2",op="apply"}',
    "l2tree": 'tierfs_tier_seconds_total{tier="l2",op="put_tree"}',
    "allocs": 'tierfs_tier_calls_total{tier="l3",op="alloc_ino"}',
    "feed": 'tierfs_tier_seconds_total{tier="l3",op="feed"}',
}


def persist_round(s, m, sess, pg, files, writers):
    """Returns (seconds until every row is in PostgreSQL, seconds until the
    last writer exited, {what the flusher did meanwhile}, {CPU seconds of
    the writers, the daemon @m and the server @pg until then}). pg-held:
    the writers' changes wait in the mount until reading
    user.tierfs.merkle of its root commits them, once the writers are done;
    the flusher's figures then also hold "held", the seconds that read
    took."""
    mnt = m.mnt
    base = count_rows(sess)
    m0 = metrics(mnt)
    cpu0 = {"writers": children_cpu(), "daemon": proc_cpu(m.pid), "pg": pg_cpu(pg)}
    per = files // writers
    t0, t_close = benchlib.run_together(
        lambda k, start: writer(str(mnt), k, k * per, per, start), writers, s)
    cpu_writers = children_cpu() - cpu0["writers"]
    held = None
    if s == "pg-held":
        if count_rows(sess) != base:
            raise BenchError(f"{s}: the mount committed changes before it was asked to")
        os.getxattr(mnt, "user.tierfs.merkle")
        held = time.perf_counter() - t_close
    t_all = wait_rows(sess, base + writers + writers * per, f"{s}: persisting", PERSIST_TIMEOUT)
    cpu = {"writers": cpu_writers, "daemon": proc_cpu(m.pid) - cpu0["daemon"],
           "pg": pg_cpu(pg) - cpu0["pg"]}
    m1 = metrics(mnt)
    flush = {k: m1.get(v, 0.0) - m0.get(v, 0.0) for k, v in FLUSH_KEYS.items()}
    flush["held"] = held
    for k in range(writers):
        shutil.rmtree(Path(mnt) / f"w{k}")
    if s == "pg-held":
        os.getxattr(mnt, "user.tierfs.merkle")
    wait_rows(sess, base, f"{s}: draining the removals", PERSIST_TIMEOUT)
    return t_all - t0, t_close - t0, flush, cpu


def lib_round(fill_bin, uri, sess, pg, files, writers, env, wal_dir):
    """pg-lib: as persist_round(), for @writers processes of tests/bench/fill
    writing the same items by ID into the database @uri, without a mount
    (no daemon, no flusher metrics)."""
    base = count_rows(sess)
    per = files // writers
    cpu0 = {"writers": children_cpu(), "pg": pg_cpu(pg)}
    t0 = time.perf_counter()
    benchlib.run_fill_programs(fill_bin, [f"--postgres={uri}"], wal_dir, writers, per, env,
                               "pg-lib: writers")
    t_close = time.perf_counter()
    t_all = wait_rows(sess, base + writers + writers * per, "pg-lib: persisting",
                      PERSIST_TIMEOUT)
    cpu = {"writers": children_cpu() - cpu0["writers"], "daemon": 0.0,
           "pg": pg_cpu(pg) - cpu0["pg"]}
    flush = {k: float("nan") for k in FLUSH_KEYS}
    flush["held"] = None
    return t_all - t0, t_close - t0, flush, cpu


# --- main ---------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1000000)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true",
                    help="2,000 entries, 800 files, one round")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the kernel's caches before each listing (as root): tierfs's "
                    "store is then read from disk, passthrough_ll's tmpfs stays in memory")
    ap.add_argument("--forget", action="store_true",
                    help="make the kernel forget its unused dentries and inodes before each "
                    "listing (as root): tierfs's cached listing goes, the page cache stays")
    ap.add_argument("--no-listing", action="store_true")
    ap.add_argument("--no-persist", action="store_true")
    ap.add_argument("--tierfs-bin", default=str(REPO / "build" / "fs" / "tierfs"))
    ap.add_argument("--fill-bin", default=str(REPO / "build" / "tests" / "fill"))
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.entries, args.files, args.repeat = 2000, 800, 1
    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r} (of {','.join(SYSTEMS)})")
    if args.forget and args.drop_caches:
        ap.error("--forget and --drop-caches exclude each other")
    if (args.forget or args.drop_caches) and os.geteuid() != 0:
        ap.error("--forget and --drop-caches need root")
    if args.entries < 1 or args.writers < 1 or args.files < args.writers or args.repeat < 1:
        ap.error("need entries >= 1, files >= writers >= 1, repeat >= 1")
    for b in (args.tierfs_bin, args.fill_bin):
        if not Path(b).exists():
            ap.error(f"{b} does not exist (meson compile -C build)")
    list_sys = [] if args.no_listing else [s for s in LIST_SYSTEMS if s in systems]
    pers_sys = [] if args.no_persist else [s for s in PERSIST_SYSTEMS if s in systems]

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    cleanup = Cleanup()
    workdir = Path(tempfile.mkdtemp(prefix="tierfs-scale-", dir=args.workdir))
    if not args.keep:
        cleanup.push(f"rm -r {workdir}", lambda: shutil.rmtree(workdir, ignore_errors=True))
    env = tierfs_env(workdir)
    tbin = Path(args.tierfs_bin)
    notes = [f"machine: {os.cpu_count()} CPUs, {os.uname().release}",
             f"tierfs: {tbin} {benchlib.tierfs_origin(tbin)}"]
    lres = {s: {"ls -f": [], "find": []} for s in list_sys}
    mem = {}
    pres = {s: [] for s in pers_sys}
    raw = []
    raw_cpu = []
    pg = redis = None
    try:
        if any(s != "sqlite" and s != "ptl" for s in list_sys + pers_sys):
            if os.geteuid() == 0:
                os.chmod(workdir, 0o711)
            pg = tiers.PgServer(workdir / "pg")
            pg.start(cleanup)
            redis = tiers.RedisServer(workdir / "redis")
            redis.start(cleanup)
            st = pg.settings("fsync", "synchronous_commit", "shared_buffers")
            notes.append(f"PostgreSQL {pg.version()} ({', '.join(f'{k}={v}' for k, v in st.items())}),"
                         f" Redis {redis.version()}, private, loopback")

        # --- (a) listing ---
        if list_sys:
            mounts = {}
            for s in list_sys:
                mnt = workdir / f"{s}.mnt"
                mnt.mkdir()
                t0 = time.perf_counter()
                if s == "ptl":
                    exe = build_passthrough_ll(workdir)
                    src = fresh_tmpfs(workdir, "ptl-src", cleanup)
                    fill_tmpfs(src, args.entries)
                    argv = [str(exe), "-f", "-o", f"source={src}", str(mnt)]
                    m_env = None
                    made = f"Python os.open/write/close in the source tmpfs"
                else:
                    if s == "sqlite":
                        store = [f"--sqlite={workdir / 'list.db'}"]
                        wal = workdir / "list-sqlite.wal"
                    else:
                        uri = pg.create_db("list_redis_pg")
                        store = [f"--postgres={uri}", f"--redis={redis.url}"]
                        wal = workdir / "list-redis-pg.wal"
                    fill_tierfs(args.fill_bin, store, workdir / f"fill-{s}.wal", args.entries,
                                env)
                    argv = [str(tbin), *store, "-f", "-o", f"wal_path={wal}", str(mnt)]
                    m_env = env
                    made = "tests/bench/fill"
                dt = time.perf_counter() - t0
                notes.append(f"{s}: {args.entries:,} entries made in {dt:.1f} s ({made})")
                log(f"{s}: {args.entries:,} entries made in {dt:.1f} s")
                m = FuseMount(s, argv, mnt, workdir / f"{s}-list.log", env=m_env)
                cleanup.push(f"unmount {s}", m.stop)
                m.start()
                mounts[s] = m
                mem[s] = {"start": proc_status(m.pid, "VmRSS")}
            for r in range(args.repeat):
                log(f"listing round {r + 1}")
                list_round(mounts, list_sys, args.entries, lres,
                           3 if args.drop_caches else 2 if args.forget else 0)
            for s in list_sys:
                m = mounts[s]
                mem[s]["list"] = proc_status(m.pid, "VmHWM")
                if s != "ptl":
                    mem[s]["nodes_list"] = tierfs_nodes(m.mnt)
                if s == "ptl" and args.entries + 100 > resource.getrlimit(
                        resource.RLIMIT_NOFILE)[0]:
                    # it holds an O_PATH descriptor per inode the kernel
                    # keeps: `ls -l` of N entries needs N of them
                    notes.append("ptl: no ls -l (it needs one descriptor per entry, more than "
                                 "RLIMIT_NOFILE)")
                    m.stop()
                    continue
                drop_caches()
                lines, dt = timed_count(["ls", "-l", "big"], m.mnt)
                if lines != args.entries + 1:
                    raise BenchError(f"{s}: ls -l listed {lines} lines")
                mem[s]["ls -l"] = proc_status(m.pid, "VmHWM")
                mem[s]["ls -l s"] = dt
                if s != "ptl":
                    mem[s]["nodes_lsl"] = tierfs_nodes(m.mnt)
                    drop_caches()
                    benchlib.wait_for(lambda: tierfs_nodes(m.mnt) < 100, 30.0)
                    mem[s]["nodes_forgot"] = tierfs_nodes(m.mnt)
                m.stop()

        # --- (b) persistence with concurrent writers ---
        if pers_sys:
            raw_uri = pg.create_db("scale_raw")
            tiers.psql(raw_uri, tiers.RAW_SCHEMA)
            raw_sess = tiers.PsqlSession(raw_uri)
            cleanup.push("close the psql session (raw)", raw_sess.close)
            per = args.files // args.writers
            rows = [(1000 + k * per + j, 2 + k, file_name(k * per + j).encode(),
                     payload(k * per + j)) for k in range(args.writers) for j in range(per)]
            raw_sql = workdir / "raw-upsert.sql"
            tiers.write_upsert_sql(raw_sql, rows, per_txn=1000)
            pmounts = {}
            for s in pers_sys:
                if s == "pg-lib":
                    continue  # a new database each round
                uri = pg.create_db("persist_" + s.replace("-", "_"))
                store = [f"--postgres={uri}"] + ([f"--redis={redis.url}"]
                                                  if s == "redis-pg" else [])
                mnt = workdir / f"{s}-persist.mnt"
                mnt.mkdir()
                opts = f"wal_path={workdir / (s + '-persist.wal')}"
                if s == "pg-held":
                    opts += "," + HELD_OPTS
                argv = [str(tbin), *store, "-f", "-o", opts, str(mnt)]
                m = FuseMount(s, argv, mnt, workdir / f"{s}-persist.log", env=env)
                cleanup.push(f"unmount {s} (persist)", m.stop)
                m.start()
                sess = tiers.PsqlSession(uri)
                cleanup.push(f"close the psql session ({s})", sess.close)
                pmounts[s] = (m, sess)
            for r in range(args.repeat):
                raw_sess.value("TRUNCATE entries, contents; SELECT 1")
                c0, p0, kids = children_cpu(), pg_cpu(pg), pg_children(pg)
                raw.append(tiers.psql_file(raw_uri, raw_sql))
                pg_settled(pg, kids)  # psql's backend exits after psql does
                raw_cpu.append({"psql": children_cpu() - c0, "pg": pg_cpu(pg) - p0})
                log(f"persist round {r + 1}: raw upsert {len(rows) / raw[-1]:,.0f} rows/s "
                    f"(CPU: psql {raw_cpu[-1]['psql']:.2f} s, PostgreSQL "
                    f"{raw_cpu[-1]['pg']:.2f} s)")
                for s in pers_sys:
                    if s == "pg-lib":
                        uri = pg.create_db(f"persist_pg_lib_{r + 1}")
                        wal_dir = workdir / f"pg-lib-{r + 1}"
                        wal_dir.mkdir()
                        fill_tierfs(args.fill_bin, [f"--postgres={uri}"], wal_dir / "init.wal",
                                    0, env)  # the schema, outside the timing
                        sess = tiers.PsqlSession(uri)
                        try:
                            t_all, t_close, fl, cpu = lib_round(
                                args.fill_bin, uri, sess, pg, args.files, args.writers, env,
                                wal_dir)
                        finally:
                            sess.close()
                    else:
                        m, sess = pmounts[s]
                        t_all, t_close, fl, cpu = persist_round(s, m, sess, pg, args.files,
                                                                args.writers)
                    pres[s].append((t_all, t_close, fl, cpu))
                    held = (f"the held batch committed {fl['held']:.2f} s after, "
                            if fl["held"] is not None else "")
                    if s == "pg-lib":
                        log(f"persist round {r + 1}: {s}: {len(rows) / t_all:,.0f} files/s "
                            f"persisted (writers done after {t_close:.2f} s, all in "
                            f"PostgreSQL after {t_all:.2f} s; CPU: writers "
                            f"{cpu['writers']:.2f} s, PostgreSQL {cpu['pg']:.2f} s)")
                        continue
                    log(f"persist round {r + 1}: {s}: {len(rows) / t_all:,.0f} files/s "
                        f"persisted (writers done after {t_close:.2f} s, {held}"
                        f"all in PostgreSQL after {t_all:.2f} s; {fl['batches']:.0f} "
                        f"batches of {fl['records'] / max(fl['batches'], 1):.0f} changes, "
                        f"L3 apply {fl['l3']:.2f} s, L2 {fl['l2'] + fl['l2tree']:.2f} s, "
                        f"{fl['allocs']:.0f} inode blocks, feed reads {fl['feed']:.2f} s; "
                        f"CPU: writers {cpu['writers']:.2f} s, daemon {cpu['daemon']:.2f} s, "
                        f"PostgreSQL {cpu['pg']:.2f} s)")
            for m, _ in pmounts.values():
                m.stop()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.run()

    print()
    print(f"scale.py: {args.entries:,} entries in one directory; {args.writers} writers x "
          f"{args.files // args.writers:,} files; {args.repeat} round(s), medians"
          f"{'; caches dropped before each listing' if args.drop_caches else ''}"
          f"{'; dentries and inodes dropped before each listing' if args.forget else ''}")
    for n in notes:
        print(f"  {n}")
    if list_sys:
        print()
        print(f"{'listing':<10} {'ls -f/s':>12} {'find/s':>12} {'ls -f/ptl':>10} {'find/ptl':>9}"
              f" {'RSS start':>10} {'peak list':>10} {'peak ls -l':>11} {'ls -l s':>8}"
              f" {'nodes':>22}")
        med = {s: {k: statistics.median(v) for k, v in lres[s].items()} for s in list_sys}
        for s in list_sys:
            rate = {k: args.entries / med[s][k] for k in med[s]}
            rel = {k: (f"{med['ptl'][k] / med[s][k]:.2f}x" if "ptl" in med else "-")
                   for k in med[s]}
            nodes = "-"
            if s != "ptl":
                nodes = (f"{mem[s]['nodes_list']}/{mem[s]['nodes_lsl']}/"
                         f"{mem[s]['nodes_forgot']}")
            lsl = (f"{mem[s]['ls -l'] / 1024:>9.1f}Mi {mem[s]['ls -l s']:>8.2f}"
                   if "ls -l" in mem[s] else f"{'-':>11} {'-':>8}")
            print(f"{s:<10} {rate['ls -f']:>12,.0f} {rate['find']:>12,.0f} {rel['ls -f']:>10}"
                  f" {rel['find']:>9} {mem[s]['start'] / 1024:>8.1f}Mi"
                  f" {mem[s]['list'] / 1024:>8.1f}Mi {lsl} {nodes:>22}")
        print("  RSS start: after mounting; peak list: VmHWM after the ls -f and find rounds;"
              " peak ls -l: VmHWM after one ls -l;")
        print("  nodes (tierfs): after the listings / after ls -l / after dropping the kernel's"
              " caches (FORGET)")
    if pers_sys:
        print()
        n = args.writers * (args.files // args.writers)
        raw_s = statistics.median(raw)
        rcpu = {k: statistics.median(x[k] for x in raw_cpu) for k in raw_cpu[0]}
        print(f"persistence, {args.writers} writers   files/s persisted   vs raw   "
              f"writers done (s)   all in PostgreSQL (s)   batches  changes/batch"
              f"  L3 apply (s)  L2 apply (s)  L3 rows/s  L3 vs raw  CPU s: writers/psql"
              f" daemon PostgreSQL")
        print(f"{'raw upsert (1 psql)':<28} {n / raw_s:>12,.0f} {'1.00x':>8} {'':>16} "
              f"{raw_s:>20.2f} {'':>10} {'':>14} {'':>13} {'':>13} {'':>10} {'':>7}"
              f" {rcpu['psql']:>21.2f} {'':>6} {rcpu['pg']:>10.2f}")
        for s in pers_sys:
            t_all = statistics.median(x[0] for x in pres[s])
            t_close = statistics.median(x[1] for x in pres[s])
            fl = {k: statistics.median(x[2][k] for x in pres[s]) for k in FLUSH_KEYS}
            cpu = {k: statistics.median(x[3][k] for x in pres[s]) for k in pres[s][0][3]}
            l3_rate = n / fl["l3"] if fl["l3"] > 0 else float("nan")
            if s == "pg-lib":
                print(f"{'tierfs-' + s:<28} {n / t_all:>12,.0f} {raw_s / t_all:>7.2f}x "
                      f"{t_close:>16.2f} {t_all:>20.2f} {'-':>10} {'-':>14} {'-':>13}"
                      f" {'-':>13} {'-':>10} {'-':>7}"
                      f" {cpu['writers']:>21.2f} {'-':>6} {cpu['pg']:>10.2f}")
                continue
            print(f"{'tierfs-' + s:<28} {n / t_all:>12,.0f} {raw_s / t_all:>7.2f}x "
                  f"{t_close:>16.2f} {t_all:>20.2f} {fl['batches']:>10.0f}"
                  f" {fl['records'] / max(fl['batches'], 1):>14.0f} {fl['l3']:>13.2f}"
                  f" {fl['l2'] + fl['l2tree']:>13.2f} {l3_rate:>10,.0f}"
                  f" {raw_s / fl['l3'] if fl['l3'] > 0 else float('nan'):>6.2f}x"
                  f" {cpu['writers']:>21.2f} {cpu['daemon']:>6.2f} {cpu['pg']:>10.2f}")
            if s == "pg-held":
                held = statistics.median(x[2]["held"] for x in pres[s])
                print(f"  pg-held: the held batch committed {held:.2f} s after the writers were"
                      f" done: {n / held:,.0f} rows/s, {raw_s / held:.2f}x the raw upsert's")
        print("  writers done: the last writer's last close; batches ... L2 apply: what the"
              " flusher did until PostgreSQL held every row (medians)")
        print("  L3 rows/s: files / L3 apply seconds, the flusher's own rate while it shares"
              " the CPUs with the writers; L3 vs raw: the raw upsert's seconds / L3 apply seconds"
              " (not the target, which is files/s persisted vs raw)")
        print("  CPU s: user + system seconds until PostgreSQL held every row: the writer"
              " processes (raw: psql), the tierfs daemon, the PostgreSQL server (all its"
              " processes; for tierfs also the count(*) polling)")
        if "pg-lib" in pers_sys:
            print("  pg-lib: no mount; the writers are tests/bench/fill --json processes, each"
                  " with its own engine and log, writing the items by ID and syncing once at"
                  " the end, into a new database each round")
        print("  pg-held: the mount holds the changes back (-o " + HELD_OPTS + ") until"
              " the writers are done; reading user.tierfs.merkle of the root then commits"
              " them in one batch, without writers competing for the CPUs")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
