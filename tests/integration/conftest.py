"""Fixtures that mount tierfs for real, for the integration tests.

Every test gets its own temporary directory holding the SQLite database (the
L3 store), the mountpoint and the daemon's stderr logs. The daemon runs in
the foreground (-f) as a child process; the fixture waits for the mount with
a deadline, and at teardown unmounts with fusermount3, waits for the daemon
to exit (it must drain every pending write first), and fails the test when
the daemon exited non-zero after a clean unmount or when any of its logs
holds a sanitizer report.

Tools are run with LC_ALL=C.UTF-8 so that error messages are the English
strerror() texts the tests look for.

Environment:
    TIERFS_BIN            the binary (default <repo>/build/fs/tierfs)
    TIERFS_TEST_TIMEOUT   per-test watchdog in seconds (default 600): when
                          it fires, the daemons are killed and the mounts
                          detached, so a hung FUSE call fails instead of
                          hanging the run

The test modules skip themselves when /dev/fuse or fusermount3 is missing
(pytest cannot skip from a conftest).
"""

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIERFS_BIN = Path(os.environ.get("TIERFS_BIN", REPO / "build" / "fs" / "tierfs"))

MOUNT_TIMEOUT = 30.0  # seconds to wait for the mount to appear
EXIT_TIMEOUT = 120.0  # seconds to wait for the daemon to exit after unmount
TOOL_TIMEOUT = 300.0  # seconds any single tool may run
TEST_TIMEOUT = float(os.environ.get("TIERFS_TEST_TIMEOUT", "600"))

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")

# Store settings inherited from the caller's environment would send the
# daemon elsewhere: the tests always say which store they want.
STORE_ENV = ("TIERFS_SQLITE", "TIERFS_POSTGRES", "TIERFS_REDIS", "TIERFS_CONFIG")

TOOL_ENV = dict(os.environ, LC_ALL="C.UTF-8")
TOOL_ENV.pop("LANGUAGE", None)


def fuse_unavailable_reason():
    """Why FUSE mounts cannot work here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing: FUSE mounts are impossible here"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (Debian package fuse3)"
    return None


def wait_for(predicate, timeout, interval=0.02):
    """Polls @predicate until it returns a true value or @timeout seconds
    pass; returns its last value. A wait for a condition, not a sleep used as
    synchronisation."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def run(argv, cwd=None, check=True, input=None, env=None, timeout=TOOL_TIMEOUT):
    """Runs a tool and returns the CompletedProcess (text mode, output
    captured). With @check, a non-zero exit fails the test with the tool's
    output."""
    __tracebackhide__ = True
    cp = subprocess.run(
        argv,
        cwd=cwd,
        input=input,
        env=env or TOOL_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="surrogateescape",
        timeout=timeout,
    )
    if check and cp.returncode != 0:
        pytest.fail(
            f"{argv!r} exited {cp.returncode}\n"
            f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
        )
    return cp


def is_mounted(path):
    """True when @path is a live mountpoint. A dead FUSE mount (ENOTCONN)
    counts as not mounted, as with os.path.ismount; see in_mount_table()."""
    return os.path.ismount(path)


def _unescape_mount_field(field):
    # /proc/self/mounts writes space, tab, newline and backslash as \ooo.
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


def in_mount_table(path):
    """True when /proc/self/mounts lists @path, dead FUSE mounts included."""
    target = os.fsencode(os.path.realpath(path))
    with open("/proc/self/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and _unescape_mount_field(fields[1]) == target:
                return True
    return False


class TierfsMount:
    """One tierfs daemon serving one mountpoint on one SQLite database.

    start() mounts; unmount() unmounts cleanly and checks the exit; remount()
    does both on the same database; kill9() kills the daemon with SIGKILL and
    detaches the dead mount; sigterm() stops it with SIGTERM. Each start()
    logs stderr to its own file; stderr_text() returns all of them.
    """

    def __init__(self, base, name="m", options=(), args=None, env=None, sqlite=None):
        self.base = Path(base)
        self.mnt = self.base / f"{name}.mnt"
        self.db = Path(sqlite) if sqlite else self.base / f"{name}.db"
        self.name = name
        self.options = list(options)
        self.args = args  # full argument list (without the binary) overriding the default
        self.env_overrides = dict(env or {})
        self.proc = None
        self.logs = []
        self.runs = 0
        self.mnt.mkdir(parents=True, exist_ok=True)

    # -- process control -------------------------------------------------

    def argv(self):
        if self.args is not None:
            return [str(TIERFS_BIN), *self.args]
        argv = [str(TIERFS_BIN), f"--sqlite={self.db}", "-f"]
        if self.options:
            argv += ["-o", ",".join(self.options)]
        return argv + [str(self.mnt)]

    def env(self):
        env = dict(os.environ)
        for k in STORE_ENV:
            env.pop(k, None)
        # The embedded default must never land in the user's home.
        env["XDG_DATA_HOME"] = str(self.base / "xdg-data")
        env["XDG_STATE_HOME"] = str(self.base / "xdg-state")
        env.update(self.env_overrides)
        return env

    def start(self):
        assert self.proc is None, "already running"
        if not TIERFS_BIN.exists():
            pytest.fail(f"tierfs binary not found: {TIERFS_BIN} (build it or set TIERFS_BIN)")
        log = self.base / f"{self.name}.stderr.{self.runs}.log"
        self.runs += 1
        self.logs.append(log)
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=self.env(),
            )

        def ready():
            return is_mounted(self.mnt) or self.proc.poll() is not None

        wait_for(ready, MOUNT_TIMEOUT)
        if not is_mounted(self.mnt):
            rc = self.proc.poll()
            if rc is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            pytest.fail(
                f"tierfs did not mount {self.mnt} within {MOUNT_TIMEOUT:.0f}s "
                f"(exit status {rc})\ncommand: {self.argv()}\nstderr:\n{log.read_text(errors='replace')}"
            )
        return self

    def _wait_exit(self, what):
        try:
            return self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self._detach()
            pytest.fail(f"tierfs did not exit within {EXIT_TIMEOUT:.0f}s after {what}\n{self.stderr_text()}")

    def _detach(self):
        if in_mount_table(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def unmount(self):
        """fusermount3 -u, then waits for the daemon to drain and exit. Fails
        the test if either fails or the daemon exits non-zero."""
        assert self.proc is not None, "not running"
        cp = run(["fusermount3", "-u", str(self.mnt)], check=False)
        if cp.returncode != 0:
            # Busy or broken: leave nothing behind, but report it.
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self._detach()
            pytest.fail(f"fusermount3 -u {self.mnt} failed: {cp.stderr}\n{self.stderr_text()}")
        rc = self._wait_exit("fusermount3 -u")
        self.proc = None
        if rc != 0:
            pytest.fail(f"tierfs exited with status {rc} after a clean unmount\n{self.stderr_text()}")
        assert not is_mounted(self.mnt)

    def remount(self):
        self.unmount()
        return self.start()

    def kill9(self):
        """Kills the daemon with SIGKILL (no chance to flush) and detaches
        the dead mount with fusermount3 -u -z."""
        assert self.proc is not None, "not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=EXIT_TIMEOUT)
        self.proc = None
        run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
        assert not in_mount_table(self.mnt), f"{self.mnt} still mounted after kill -9 and fusermount3 -u -z"

    def sigterm(self):
        """Sends SIGTERM and waits for the daemon to exit; returns its exit
        status. The daemon must unmount by itself."""
        assert self.proc is not None, "not running"
        self.proc.send_signal(signal.SIGTERM)
        rc = self._wait_exit("SIGTERM")
        self.proc = None
        return rc

    def abort(self):
        """Watchdog and last-resort cleanup: kill and detach, no checks."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self._detach()

    def stderr_text(self):
        parts = []
        for log in self.logs:
            try:
                parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')}")
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    # -- conveniences for tests -----------------------------------------

    def path(self, *parts):
        return self.mnt.joinpath(*parts)

    def sh(self, script, check=True, input=None, cwd=None):
        """Runs @script with sh -c in the mount (or @cwd)."""
        __tracebackhide__ = True
        return run(["sh", "-c", script], cwd=cwd or self.mnt, check=check, input=input)

    def run(self, argv, check=True, input=None, cwd=None):
        __tracebackhide__ = True
        return run(argv, cwd=cwd or self.mnt, check=check, input=input)

    def getfattr(self, path, name, check=True):
        """The value of xattr @name of @path via getfattr, or None when
        getfattr fails and not @check."""
        __tracebackhide__ = True
        cp = run(["getfattr", "--only-values", "-n", name, str(path)], check=check)
        return cp.stdout if cp.returncode == 0 else None


@pytest.fixture
def tierfs_factory(tmp_path):
    """Returns make(**kwargs) that creates and starts a TierfsMount in this
    test's temp dir (kwargs as TierfsMount; start=False to only create it).
    At teardown every mount still running is unmounted cleanly, and the test
    fails on sanitizer reports in any daemon log."""
    mounts = []
    fired = threading.Event()

    def watchdog():
        fired.set()
        for m in mounts:
            m.abort()

    timer = threading.Timer(TEST_TIMEOUT, watchdog)
    timer.daemon = True
    timer.start()

    def make(start=True, name=None, **kwargs):
        name = name or f"m{len(mounts)}"
        m = TierfsMount(tmp_path, name=name, **kwargs)
        mounts.append(m)
        if start:
            m.start()
        return m

    try:
        yield make
    finally:
        timer.cancel()
    problems = []
    if fired.is_set():
        problems.append(f"watchdog: the test ran longer than {TEST_TIMEOUT:.0f}s; daemons were killed")
    for m in mounts:
        if m.proc is not None:
            try:
                m.unmount()
            except BaseException as e:  # pytest.fail raises a BaseException
                m.abort()
                problems.append(f"{m.mnt}: teardown unmount failed: {e}")
        else:
            m.abort()  # a dead mount left by a failed test
        text = m.stderr_text()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                problems.append(f"{m.mnt}: daemon stderr contains {marker!r}:\n{text}")
                break
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def tierfs(tierfs_factory):
    """A started TierfsMount with the default options."""
    return tierfs_factory()

