#!/usr/bin/python3
"""Side-by-side benchmark: tierfs vs libfuse's passthrough_ll over tmpfs vs
raw tmpfs, the same workloads in the same run (DESIGN section 10: targets
are ratios to references measured on the same machine at the same time).

Workloads, on a tree of FILES small JSON files spread over DIRS directories:
    create   create+write+close of every file (os.open/os.write/os.close)
    stat     stat() of every file
    read     open+read+close of every file
    ls -l    one `ls -l` of all the directories (entries/s)
    tar      `tar -cf - TREE`, its output read and dropped by this script
             (GNU tar skips reading file data when its archive *is*
             /dev/null, so a plain `tar cf /dev/null` would measure stat only)
    unlink   unlink() of every file

Systems:
    tierfs          build/fs/tierfs --sqlite=<fresh file> -f MNT (the SQLite
                    file lives in the work directory, on disk by default)
    passthrough_ll  built here from /usr/share/doc/libfuse3-dev/examples
                    (passthrough_ll.c or .c.gz), `passthrough_ll -f -o
                    source=SRC MNT` with its default options, SRC on tmpfs
    tmpfs           the same workloads on tmpfs directly (the ceiling)

As root, fresh tmpfs instances are mounted for passthrough_ll's source and
the tmpfs column; otherwise fresh directories under /dev/shm are used.
Every mount made here is unmounted on exit (normal, error, Ctrl-C, SIGTERM).

usage: tests/bench/bench.py [--files N] [--dirs D] [--repeat R]
                            [--systems tierfs,passthrough_ll,tmpfs]
                            [--tierfs-bin PATH] [-o TIERFS_OPT ...]
                            [--workdir DIR] [--keep]
environment: BENCH_FILES, BENCH_DIRS, BENCH_REPEAT, TIERFS_BIN
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

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = Path("/usr/share/doc/libfuse3-dev/examples")
MOUNT_TIMEOUT = 30.0
EXIT_TIMEOUT = 300.0
SYSTEMS = ("tierfs", "passthrough_ll", "tmpfs")
WORKLOADS = [  # (key, label, unit)
    ("create", "create+write+close", "files/s"),
    ("stat", "stat", "files/s"),
    ("read", "open+read+close", "files/s"),
    ("ls", "ls -l every dir", "entries/s"),
    ("tar", "tar -cf - | (dropped)", "files/s"),
    ("unlink", "unlink", "files/s"),
]


INTERRUPTED = []  # signals received


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


def wait_for(predicate, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def fs_type(path):
    out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], stdout=subprocess.PIPE,
                         text=True, check=False).stdout.strip()
    return out or "?"


class Cleanup:
    """A stack of undo actions, run in reverse order, each one guarded."""

    def __init__(self):
        self.actions = []

    def push(self, what, fn):
        self.actions.append((what, fn))

    def run(self):
        while self.actions:
            what, fn = self.actions.pop()
            try:
                fn()
            except Exception as e:  # keep undoing the rest
                log(f"cleanup: {what}: {e}")


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


class FuseMount:
    """A FUSE daemon started in the foreground on MNT; unmounted by stop()."""

    def __init__(self, name, argv, mnt, logfile, env=None):
        self.name, self.argv, self.mnt, self.logfile = name, argv, mnt, logfile
        self.proc = None
        self.env = env
        self.drain_seconds = None

    def start(self):
        with open(self.logfile, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, env=self.env)
        ok = wait_for(lambda: os.path.ismount(self.mnt) or self.proc.poll() is not None,
                      MOUNT_TIMEOUT)
        if not ok or not os.path.ismount(self.mnt):
            self.stop()
            raise BenchError(f"{self.name} did not mount {self.mnt}: "
                             f"{shlex.join(self.argv)}\n{self.logfile.read_text(errors='replace')}")

    def stop(self):
        """Unmounts and waits for the daemon to exit (tierfs drains first);
        kills it when it does not. Safe to call twice."""
        if self.proc is None:
            return
        t0 = time.perf_counter()
        timeout = EXIT_TIMEOUT
        if os.path.ismount(self.mnt):
            cp = subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False,
                                stderr=subprocess.PIPE)
            if cp.returncode != 0:
                log(f"{self.name}: {cp.stderr.decode(errors='replace').strip()}: detaching it")
                # Busy (interrupted mid-workload): detach it, then ask the
                # daemon to finish (tierfs persists everything on SIGTERM).
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
                self.proc.send_signal(signal.SIGTERM)
                timeout = 60.0
        try:
            self.proc.wait(timeout=timeout)
            self.drain_seconds = time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not exit {timeout:.0f}s after unmount: killing it")
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            if f" {self.mnt} " in f.read():
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)


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


def run_workloads(root, nfiles, ndirs):
    """Runs every workload on a fresh tree under @root; returns
    {key: (ops, seconds)}."""
    dirs, files = layout(root, nfiles, ndirs)
    datas = [payload(i) for i in range(nfiles)]
    res = {}
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

    t0 = time.perf_counter()
    for p in files:
        os.stat(p)
    res["stat"] = (nfiles, time.perf_counter() - t0)

    t0 = time.perf_counter()
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=int(os.environ.get("BENCH_FILES", 10000)))
    ap.add_argument("--dirs", type=int, default=int(os.environ.get("BENCH_DIRS", 100)))
    ap.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", 1)),
                    help="run everything R times, report the median")
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help="comma-separated subset of " + ",".join(SYSTEMS))
    ap.add_argument("--tierfs-bin", default=os.environ.get("TIERFS_BIN",
                                                           str(REPO / "build" / "fs" / "tierfs")))
    ap.add_argument("-o", dest="tierfs_opts", action="append", default=[],
                    help="tierfs -o option (repeatable)")
    ap.add_argument("--workdir", help="where the temp dir (and tierfs's SQLite file) goes "
                    "(default: $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}")
    if args.files < 1 or args.dirs < 1 or args.dirs > args.files or args.repeat < 1:
        ap.error("need 1 <= dirs <= files and repeat >= 1")
    for tool in ["fusermount3", "gcc", "pkg-config", "tar", "ls"]:
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
    mounts = {}
    roots = {}
    notes = []
    results = {s: [] for s in systems}
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
            mounts["passthrough_ll"], roots["passthrough_ll"] = m, mnt
            notes.append(f"passthrough_ll: {shlex.join(m.argv)}  (source on {fs_type(src)})")
        if "tmpfs" in systems:
            roots["tmpfs"] = fresh_tmpfs(workdir, "raw", cleanup)
            notes.append(f"tmpfs: {roots['tmpfs']}  ({fs_type(roots['tmpfs'])})")
        if "tierfs" in systems:
            tbin = Path(args.tierfs_bin)
            mnt = workdir / "tierfs.mnt"
            mnt.mkdir()
            db = workdir / "tierfs.db"
            argv = [str(tbin), f"--sqlite={db}", "-f"]
            if args.tierfs_opts:
                argv += ["-o", ",".join(args.tierfs_opts)]
            argv.append(str(mnt))
            env = {k: v for k, v in os.environ.items()
                   if k not in ("TIERFS_SQLITE", "TIERFS_POSTGRES", "TIERFS_REDIS")}
            m = FuseMount("tierfs", argv, mnt, workdir / "tierfs.log", env=env)
            cleanup.push("unmount tierfs", m.stop)
            try:
                if not tbin.exists():
                    raise BenchError(f"{tbin} does not exist (scripts/build.sh builds it)")
                m.start()
                mounts["tierfs"], roots["tierfs"] = m, mnt
                notes.append(f"tierfs: {shlex.join(argv)}  (SQLite on {fs_type(workdir)})")
            except BenchError as e:
                log(f"tierfs column skipped: {e}")
                notes.append(f"tierfs: NOT RUN ({str(e).splitlines()[0]})")
                systems.remove("tierfs")

        log(f"{args.files} files in {args.dirs} dirs, {args.repeat} round(s), "
            f"systems: {', '.join(systems)}")
        for r in range(args.repeat):
            for s in systems:  # interleaved, so machine noise hits every column alike
                log(f"round {r + 1}: {s}")
                results[s].append(run_workloads(roots[s], args.files, args.dirs))

        # Stop the daemons now, to report tierfs's drain at unmount.
        for m in mounts.values():
            m.stop()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.run()

    def rate(s, key):
        if s not in systems or not results.get(s):
            return None
        return statistics.median(ops / sec for ops, sec in (rr[key] for rr in results[s]))

    print()
    print(f"tierfs benchmark  {time.strftime('%Y-%m-%d %H:%M:%S %z')}  "
          f"{platform.node()}  Linux {platform.release()}  {os.cpu_count()} CPUs")
    print(f"{args.files} small JSON files ({len(payload(0))}-{len(payload(args.files - 1))} bytes) "
          f"in {args.dirs} directories; median of {args.repeat} round(s); ops/s, higher is better")
    for n in notes:
        print(f"  {n}")
    print()
    head = ["workload", "unit", "tierfs", "passthrough_ll", "tierfs/ptl", "tmpfs",
            "tierfs/tmpfs", "ptl/tmpfs"]
    rows = []
    for key, label, unit in WORKLOADS:
        t, p, f = rate("tierfs", key), rate("passthrough_ll", key), rate("tmpfs", key)
        rows.append([label, unit, fmt_rate(t), fmt_rate(p), fmt_ratio(t, p), fmt_rate(f),
                     fmt_ratio(t, f), fmt_ratio(p, f)])
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join(h.ljust(widths[i]) if i < 2 else h.rjust(widths[i]) for i, h in enumerate(head))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(r)))
    tm = mounts.get("tierfs")
    if tm is not None and tm.drain_seconds is not None:
        print(f"\ntierfs: unmount to exit (drain) took {tm.drain_seconds:.2f}s")
    if args.keep:
        print(f"work directory kept: {workdir}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
    except BaseException as e:
        if not INTERRUPTED:
            raise
        # An interrupted FUSE call may surface as EINTR/EBADF rather than
        # KeyboardInterrupt: any exception after a signal is the signal.
        log(f"interrupted by signal {INTERRUPTED[0]} ({type(e).__name__}: {e}); mounts cleaned up")
        sys.exit(130)
