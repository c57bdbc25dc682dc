"""What the benchmark scripts in tests/bench share: errors and logging, a
cleanup stack, polling with a deadline, and a FUSE daemon run in the
foreground (mounted, waited for, unmounted, drained). The private servers
are in tiers.py.

A script imports it after putting its own directory first on sys.path, so
that it runs from any working directory:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib
and names itself for log() with benchlib.PROG = "name".

The name does not start with test_: pytest collects nothing here.
"""

import gzip
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PROG = "bench"        # the prefix of log()'s lines; each script sets its own
MOUNT_TIMEOUT = 30.0  # seconds for a mount to appear
POLL = 0.02           # seconds between polls of a condition


def log(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


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


def wait_for(predicate, timeout, interval=POLL):
    """Polls @predicate until it returns a true value or @timeout seconds
    pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def in_mount_table(path):
    target = os.fsencode(os.path.realpath(path))
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].replace(b"\\040", b" ") == target:
                return True
    return False


def tierfs_origin(tbin):
    """'built in DIR, whose HEAD is now 1234abc' for a binary in a git work
    tree (the build itself may be older than HEAD), best effort."""
    try:
        top = subprocess.run(["git", "-C", str(Path(tbin).resolve().parent), "rev-parse",
                              "--show-toplevel", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    parts = top.stdout.split()
    if top.returncode != 0 or len(parts) != 2:
        return ""
    return f"built in {parts[0]}, whose HEAD is now {parts[1]}"


class FuseMount:
    """A FUSE daemon (@argv, which runs it in the foreground) on @mnt, its
    output in @logfile; stop() unmounts and waits for it to exit.

    @name names it in messages; @exit_timeout is how long stop() waits for
    the daemon to drain and exit after the unmount; @cwd is the daemon's
    working directory (None: this process's). After stop(), @exit_status is
    its exit status and @drain_seconds (on a clean exit) how long the unmount
    and the exit took."""

    def __init__(self, name, argv, mnt, logfile, env=None, exit_timeout=300.0, cwd=None):
        self.name, self.argv, self.mnt, self.logfile, self.env = name, argv, mnt, logfile, env
        self.exit_timeout, self.cwd = exit_timeout, cwd
        self.proc = None
        self.exit_status = None
        self.drain_seconds = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def log_text(self):
        try:
            return Path(self.logfile).read_text(errors="replace")
        except OSError:
            return ""

    def start(self):
        with open(self.logfile, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, env=self.env, cwd=self.cwd)
        wait_for(lambda: os.path.ismount(self.mnt) or self.proc.poll() is not None,
                 MOUNT_TIMEOUT)
        if not os.path.ismount(self.mnt):
            rc = self.proc.poll()
            self.stop()
            why = f"within {MOUNT_TIMEOUT:.0f}s" if rc is None else f"(exit status {rc})"
            raise BenchError(f"{self.name} did not mount {self.mnt} {why}: "
                             f"{shlex.join(self.argv)}\n{self.log_text()[-2000:]}")

    def stop(self):
        """fusermount3 -u, then waits for the daemon to drain and exit (tierfs
        persists everything first); detaches the mount and signals, then
        kills, when that fails. Safe to call twice."""
        if self.proc is None:
            return
        t0 = time.perf_counter()
        timeout = self.exit_timeout
        if os.path.ismount(self.mnt):
            cp = subprocess.run(["fusermount3", "-u", str(self.mnt)], stderr=subprocess.PIPE,
                                text=True)
            if cp.returncode != 0:
                # Busy (interrupted mid-workload): detach it, then ask the
                # daemon to finish (tierfs persists everything on SIGTERM).
                log(f"fusermount3 -u {self.mnt}: {cp.stderr.strip()}: detaching it")
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)])
                self.proc.send_signal(signal.SIGTERM)
                timeout = 60.0
        try:
            self.exit_status = self.proc.wait(timeout=timeout)
            self.drain_seconds = time.perf_counter() - t0
        except subprocess.TimeoutExpired:
            log(f"{self.name} on {self.mnt} did not exit {timeout:.0f}s after the unmount: "
                "killing it")
            self.proc.kill()
            self.exit_status = self.proc.wait()
        self.proc = None
        if in_mount_table(self.mnt):  # a dead mount
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)])
        if self.exit_status != 0:
            log(f"{self.name} on {self.mnt} exited with status {self.exit_status}\n"
                f"{self.log_text()[-2000:]}")

    def remount(self):
        """Unmounts (tierfs drains first) and mounts again with the same
        command line: a fresh daemon, and fresh kernel caches for @mnt."""
        self.stop()
        self.start()


EXAMPLES = Path("/usr/share/doc/libfuse3-dev/examples")


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


def run_together(target, n, what):
    """Runs target(k, start) in @n forked processes (k = 0 .. n-1), each
    waiting on the event @start, which is set once all have started;
    returns (when it was set, when the last had exited) from
    time.perf_counter(), or raises BenchError naming @what when one exited
    with an error."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(k, start)) for k in range(n)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
    t_done = time.perf_counter()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise BenchError(f"{what}: writers exited with {failed}")
    return t0, t_done


def run_fill_programs(fill_bin, store_args, wal_dir, writers, per, env, what):
    """Runs @writers tests/bench/fill --json processes at once (store
    options @store_args, each its own log under @wal_dir), program k writing
    the items wK.item<k*per> ... of the next @per numbers; returns when all
    have exited, or raises BenchError naming @what with the failed ones'
    exit codes and the end of their stderr. @per = 0 makes the schema
    only."""
    procs = [subprocess.Popen([str(fill_bin), *store_args, f"--wal={wal_dir / f'w{k}.wal'}",
                               f"--dir=w{k}", f"--first={k * per}", f"--count={per}", "--json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env)
             for k in range(writers)]
    errors = [(p.communicate()[1], p.returncode) for p in procs]
    failed = [f"exit {rc}: {err.strip()[-500:]}" for err, rc in errors if rc != 0]
    if failed:
        raise BenchError(f"{what} failed: {failed}")


def wait_rows(sess, expected, what, timeout, interval=0.005):
    """Polls PostgreSQL session @sess until its entries table holds
    @expected rows; returns the perf_counter() of the poll that saw it."""
    deadline = time.monotonic() + timeout
    while True:
        n = int(sess.value("SELECT count(*) FROM entries"))
        if n == expected:
            return time.perf_counter()
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: entries holds {n} rows after {timeout:.0f}s, "
                             f"expected {expected}")
        time.sleep(interval)
