"""Fixtures that mount tierfs for real, for the integration tests.

Every test gets its own temporary directory holding the mountpoint, the
daemon's stderr logs and, with SQLite, the database (the L3 store). The
daemon runs in the foreground (-f) as a child process; the fixture waits for
the mount with a deadline, and at teardown unmounts with fusermount3, waits
for the daemon to exit (it must drain every pending write first), and fails
the test when the daemon exited non-zero after a clean unmount or when any
of its logs holds a sanitizer report.

Store configurations. Every test that uses the `tierfs` or `tierfs_factory`
fixture runs once per entry of STORE_CONFIGS (the one list to extend), with
that name as its id: test_x[sqlite], test_x[postgres], ...; the `store`
fixture says which one a test is running. A test that only makes sense for
some of them says so with a marker, never by running twice:

    @pytest.mark.sqlite_only                    SQLite only
    @pytest.mark.stores("postgres", ...)        these configurations only

A configuration whose server or tierfs support is missing is skipped with
the reason, not failed:
    sqlite          always runs
    postgres        needs TIERFS_TEST_POSTGRES
    redis+postgres  needs `tierfs --help` to mention --redis=URL (checked
                    once per session), TIERFS_TEST_REDIS and
                    TIERFS_TEST_POSTGRES

PostgreSQL isolation. TIERFS_TEST_POSTGRES names one private server (see
scripts/pg-test-server.sh; a role that owns one database). Every TierfsMount
gets a fresh, empty store of its own there, which its remounts reuse and
which is dropped, best effort, at teardown; the daemon gets a URI that
points at it and nothing else. The route is picked once per session from
what the role may do (PgServer.__init__):
  * the role may create databases (CREATEDB or superuser): one database
    per mount, "tierfs_t<pid>_<rand>_<n>", the URI's path replaced by it;
    dropped WITH (FORCE);
  * otherwise (the role of scripts/pg-test-server.sh: it owns database
    'tierfs' but has no CREATEDB, and the tests have no superuser access:
    the server's socket directory is not in the URI): one schema per mount
    in the URI's database, created by that role, and the URI gains the
    libpq parameter options=-csearch_path=<schema> (percent-encoded).
    tierfs creates its tables unqualified, in the first schema of the
    search_path, so each mount sees only its own tables. Dropped CASCADE.
All of this runs through psql over the URI (postgresql-client). The
write-ahead log of a PostgreSQL mount is -o wal_path=<tmp>/<name>.wal.

Tools are run with LC_ALL=C.UTF-8 so that error messages are the English
strerror() texts the tests look for. The daemon's environment loses the
store variables (TIERFS_*) and libpq's PG* variables of the caller, and its
PGPASSFILE names a file that does not exist, so only what a test says
reaches the store.

Environment:
    TIERFS_BIN            the binary (default <repo>/build/fs/tierfs)
    TIERFS_TEST_TIMEOUT   per-test watchdog in seconds (default 600): when
                          it fires, the daemons are killed and the mounts
                          detached, so a hung FUSE call fails instead of
                          hanging the run
    TIERFS_TEST_POSTGRES  libpq URI of a private PostgreSQL server
                          (scripts/test.sh starts one); unset: the
                          PostgreSQL configurations are skipped
    TIERFS_TEST_REDIS     redis:// URL of a private Redis server

The test modules skip themselves when /dev/fuse or fusermount3 is missing
(pytest cannot skip from a conftest).
"""

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
TIERFS_BIN = Path(os.environ.get("TIERFS_BIN", REPO / "build" / "fs" / "tierfs"))
PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))  # PostgreSQL's programs
PG_SCRIPT = REPO / "scripts" / "pg-test-server.sh"

MOUNT_TIMEOUT = 30.0  # seconds to wait for the mount to appear
EXIT_TIMEOUT = 120.0  # seconds to wait for the daemon to exit after unmount
TOOL_TIMEOUT = 300.0  # seconds any single tool may run
TEST_TIMEOUT = float(os.environ.get("TIERFS_TEST_TIMEOUT", "600"))

# What a sanitizer prints: ASan's and LSan's errors, UBSan's runtime errors
# and every ThreadSanitizer report ("WARNING: ThreadSanitizer: data race",
# "... lock-order-inversion", "FATAL: ThreadSanitizer: unexpected memory
# mapping", ...).
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer", "ThreadSanitizer:")

# Store settings inherited from the caller's environment would send the
# daemon elsewhere: the tests always say which store they want.
STORE_ENV = ("TIERFS_SQLITE", "TIERFS_POSTGRES", "TIERFS_REDIS", "TIERFS_CONFIG")

TOOL_ENV = dict(os.environ, LC_ALL="C.UTF-8")
TOOL_ENV.pop("LANGUAGE", None)

# The store configurations of the functional suite, in test id order: the
# one place to add one (then teach StoreConfig, the `store` fixture and
# TierfsMount.argv() what it needs).
STORE_CONFIGS = ("sqlite", "postgres", "redis+postgres")

# What `tierfs --help` says once the Redis tier is built in: until then the
# configurations with Redis are skipped.
REDIS_HELP_MARK = "--redis=URL"

PSQL_TIMEOUT = 60.0  # seconds any psql call may run

# psql talks to the server named by its URI only: libpq variables of the
# caller (PGHOST, PGOPTIONS, ...) stay out.
PSQL_ENV = {k: v for k, v in TOOL_ENV.items() if not k.startswith("PG")}
PSQL_ENV["PGCONNECT_TIMEOUT"] = "10"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "sqlite_only: run only in the sqlite store configuration "
        "(tests of SQLite files, paths and command-line forms)")
    config.addinivalue_line(
        "markers", "stores(*names): run only in these store configurations "
        f"(of {', '.join(STORE_CONFIGS)})")


def pytest_generate_tests(metafunc):
    """Runs every test that uses the `store` fixture (directly or through
    `tierfs` / `tierfs_factory`) once per store configuration, less those
    its sqlite_only / stores(...) markers rule out."""
    if "store" not in metafunc.fixturenames:
        return
    configs = list(STORE_CONFIGS)
    for mark in metafunc.definition.iter_markers("stores"):
        unknown = set(mark.args) - set(STORE_CONFIGS)
        if unknown or not mark.args:
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: stores{mark.args!r}: "
                f"not among {STORE_CONFIGS}")
        configs = [c for c in configs if c in mark.args]
    if metafunc.definition.get_closest_marker("sqlite_only"):
        configs = [c for c in configs if c == "sqlite"]
    metafunc.parametrize("store", configs, ids=configs, indirect=True)


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


def write_file(path, data, fsync=False):
    """Writes @data over @path (created or truncated); fsyncs the descriptor
    before closing it with @fsync. Raises OSError from any step."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_settled(path, expected, timeout=10.0):
    """Reads @path until it holds @expected or @timeout seconds pass, and
    returns what it read last: the check that a close() tierfs refused
    (EINVAL, EFBIG) left the previous content. The refused bytes stay in
    the file's working copy, which readers on the mount see, until the
    daemon handles the file's RELEASE (docs/decisions.md, "Failed
    validation keeps the working copy until the last close"), and the
    kernel sends RELEASE in the background once close() has returned: a
    read right after close() may come first, above all from a slow
    (sanitizer) build on a busy machine."""
    def read():
        with open(path, "rb") as f:
            return f.read()
    value = read()
    deadline = time.monotonic() + timeout
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


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


def psql(uri, *sql, check=True):
    """Runs each statement of @sql (one psql -c each, in one session) on the
    database of @uri: no psqlrc, unaligned, tuples only, stop at the first
    error. Returns psql's stdout without the final newline (the rows of
    every statement, one per line, columns split by '|'), or None when psql
    fails and not @check; with @check a failure fails the test."""
    __tracebackhide__ = True
    argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", uri]
    for stmt in sql:
        argv += ["-c", stmt]
    cp = run(argv, check=check, env=PSQL_ENV, timeout=PSQL_TIMEOUT)
    return cp.stdout.rstrip("\n") if cp.returncode == 0 else None


def uri_with(uri, path=None, param=None):
    """@uri (a libpq URI) with its path (the database) replaced by @path
    and/or the query parameter @param, a (key, value) pair, appended;
    @value is percent-encoded."""
    parts = urlsplit(uri)
    if path is not None:
        parts = parts._replace(path=path)
    if param is not None:
        key, value = param
        item = f"{key}={quote(value, safe='')}"
        parts = parts._replace(query=f"{parts.query}&{item}" if parts.query else item)
    return urlunsplit(parts)


class PgStore:
    """One fresh PostgreSQL store for one TierfsMount: a database or a
    schema named @name on the server, and the URI that reaches it (and only
    it)."""

    def __init__(self, server, name, uri):
        self.server = server
        self.name = name
        self.uri = uri
        self.password = server.password

    def psql(self, *sql, check=True):
        """psql() on this store: unqualified names are its tables."""
        __tracebackhide__ = True
        return psql(self.uri, *sql, check=check)


class PgServer:
    """The PostgreSQL server of TIERFS_TEST_POSTGRES, and the route by
    which it gives each mount a fresh store (see the module's docstring):
    "database" when the URI's role may create databases, else "schema"."""

    def __init__(self, uri):
        self.uri = uri
        self.password = urlsplit(uri).password
        may = psql(uri, "SELECT rolcreatedb OR rolsuper FROM pg_roles "
                        "WHERE rolname = current_user")
        self.route = "database" if may == "t" else "schema"
        # Unique across runs that share a server, and lowercase: no quoting
        # games in SQL or in search_path.
        self._prefix = f"tierfs_t{os.getpid()}_{secrets.token_hex(3)}"
        self._count = 0

    def create(self):
        """Creates an empty database or schema and returns its PgStore.
        Fails the test when the server refuses."""
        __tracebackhide__ = True
        self._count += 1
        name = f"{self._prefix}_{self._count}"
        if self.route == "database":
            psql(self.uri, f'CREATE DATABASE "{name}"')
            uri = uri_with(self.uri, path=f"/{name}")
        else:
            psql(self.uri, f'CREATE SCHEMA "{name}"')
            uri = uri_with(self.uri, param=("options", f"-csearch_path={name}"))
        return PgStore(self, name, uri)

    def drop(self, store):
        """Drops @store, best effort (a failure is ignored)."""
        if self.route == "database":
            psql(self.uri, f'DROP DATABASE IF EXISTS "{store.name}" WITH (FORCE)', check=False)
        else:
            psql(self.uri, f'DROP SCHEMA IF EXISTS "{store.name}" CASCADE', check=False)


def redis_drop_prefix(url, prefix):
    """Deletes every key of the Redis server at @url under @prefix, best
    effort."""
    if shutil.which("redis-cli") is None:
        return
    script = ("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
              "redis.call('DEL', k) end return 0")
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
    try:
        subprocess.run(["redis-cli", "-u", url, "EVAL", script, "0", pattern],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=TOOL_ENV, timeout=PSQL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        pass


class StoreConfig:
    """One entry of STORE_CONFIGS as a test runs it: its @name and the
    servers it uses (@pg, a PgServer; @redis_url)."""

    def __init__(self, name, pg=None, redis_url=None):
        assert name in STORE_CONFIGS, name
        self.name = name
        self.parts = name.split("+")
        self.pg = pg
        self.redis_url = redis_url

    @property
    def uses_postgres(self):
        return "postgres" in self.parts

    @property
    def uses_redis(self):
        return "redis" in self.parts

    def __repr__(self):
        return f"StoreConfig({self.name!r})"


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
    """One tierfs daemon serving one mountpoint on one store: a SQLite
    database, or (@store of a PostgreSQL configuration) a fresh PostgreSQL
    database or schema of its own (@pg, a PgStore), created here, with its
    write-ahead log in @wal.

    start() mounts; unmount() unmounts cleanly and checks the exit; remount()
    does both on the same store; kill9() kills the daemon with SIGKILL and
    detaches the dead mount; sigterm() stops it with SIGTERM. Each start()
    logs stderr to its own file; stderr_text() returns all of them.
    drop_store() drops the PostgreSQL store (and Redis keys), best effort.

    @share (another TierfsMount) makes this mount a second user of that
    mount's store: the same SQLite file, or the same PostgreSQL store and
    Redis prefix, with a write-ahead log of its own (-o wal_path). Only the
    mount that made a store drops it.
    """

    def __init__(self, base, name="m", options=(), args=None, env=None, sqlite=None,
                 store=None, share=None):
        self.base = Path(base)
        self.mnt = self.base / f"{name}.mnt"
        self.store = store or StoreConfig("sqlite")
        self.pg = None
        self.owns_store = share is None
        self.redis_prefix = None
        if share is not None:
            self.db = share.db
            self.pg = share.pg
            self.redis_prefix = share.redis_prefix
            self.wal = self.base / f"{name}.wal"
            options = [f"wal_path={self.wal}", *options] if self.pg is None else options
        elif self.store.uses_postgres:
            assert sqlite is None, "sqlite= in a PostgreSQL configuration: mark the test sqlite_only"
            self.db = None
            self.wal = self.base / f"{name}.wal"
            self.pg = self.store.pg.create()
            if self.store.uses_redis:
                self.redis_prefix = f"{self.pg.name}:"
        else:
            self.db = Path(sqlite) if sqlite else self.base / f"{name}.db"
            self.wal = Path(f"{self.db}.tierfs-wal")
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
        options = list(self.options)
        if self.pg is None:
            argv = [str(TIERFS_BIN), f"--sqlite={self.db}", "-f"]
        else:
            argv = [str(TIERFS_BIN), f"--postgres={self.pg.uri}"]
            options.insert(0, f"wal_path={self.wal}")
            if self.store.uses_redis:
                argv.append(f"--redis={self.store.redis_url}")
                options.insert(1, f"redis_prefix={self.redis_prefix}")
            argv.append("-f")
        if options:
            argv += ["-o", ",".join(options)]
        return argv + [str(self.mnt)]

    def env(self):
        env = dict(os.environ)
        for k in list(env):
            if k in STORE_ENV or k.startswith("PG"):
                del env[k]
        # Never the user's ~/.pgpass: a test that wants one says so.
        env["PGPASSFILE"] = str(self.base / "no-such-pgpass")
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

    def drop_store(self):
        """Drops this mount's PostgreSQL store and Redis keys, best effort.
        The daemon must not be running."""
        pg, self.pg = self.pg, None
        if not self.owns_store:
            return
        if pg is not None:
            pg.server.drop(pg)
        if self.redis_prefix and self.store.redis_url:
            redis_drop_prefix(self.store.redis_url, self.redis_prefix)

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

    def psql(self, *sql, check=True):
        """psql() on this mount's PostgreSQL store (its tables unqualified)."""
        __tracebackhide__ = True
        assert self.pg is not None, f"{self.store.name}: no PostgreSQL store"
        return self.pg.psql(*sql, check=check)

    def getfattr(self, path, name, check=True):
        """The value of xattr @name of @path via getfattr, or None when
        getfattr fails and not @check."""
        __tracebackhide__ = True
        cp = run(["getfattr", "--only-values", "-n", name, str(path)], check=check)
        return cp.stdout if cp.returncode == 0 else None


@pytest.fixture(scope="session")
def tierfs_help():
    """What `tierfs --help` prints (stdout and stderr), asked once per
    session; '' when the binary cannot run."""
    try:
        cp = subprocess.run([str(TIERFS_BIN), "--help"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, errors="replace",
                            env=TOOL_ENV, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return cp.stdout + cp.stderr


@pytest.fixture(scope="session")
def pg_server():
    """The PgServer of TIERFS_TEST_POSTGRES, or None when it is unset. A
    server that is named but unreachable fails (errors) every test that
    needs it: only an unset variable skips."""
    uri = os.environ.get("TIERFS_TEST_POSTGRES")
    if not uri:
        return None
    if shutil.which("psql") is None:
        pytest.fail("TIERFS_TEST_POSTGRES is set but psql is missing (Debian package postgresql-client)")
    return PgServer(uri)


class PrivatePg:
    """A private PostgreSQL server of scripts/pg-test-server.sh in @top/pg
    that a test may stop: uri (role tierfs), stop(), resume() (the same
    port), and su() for SQL as the superuser over the unix socket."""

    def __init__(self, top):
        self.dir = Path(top) / "pg"
        self.uri = None
        self.port = None

    def _script(self, verb, check=True):
        __tracebackhide__ = True
        return run(["bash", str(PG_SCRIPT), verb, str(self.dir)], check=check, timeout=120)

    def start(self):
        self.uri = self._script("start").stdout.strip()
        self.port = int((self.dir / "port").read_text())

    def stop(self):
        self._script("stop")

    def resume(self):
        self._script("resume")

    def su(self, *sql, db="tierfs"):
        """Runs @sql as the superuser 'postgres' on database @db."""
        __tracebackhide__ = True
        return psql(f"host={self.dir} port={self.port} user=postgres dbname={db}", *sql)


@pytest.fixture
def private_pg():
    """A started PrivatePg, of this test alone, stopped and removed at
    teardown; skips when PostgreSQL 15 or psql is missing."""
    if not (PGBIN / "initdb").exists() or not (PGBIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL 15 is missing ({PGBIN})")
    if shutil.which("psql") is None:
        pytest.skip("psql is missing (Debian package postgresql-client)")
    # Not under pytest's tmp_path: its 0700 parents keep 'postgres' out.
    top = Path(tempfile.mkdtemp(prefix="tierfs-private-pg."))
    os.chmod(top, 0o755)
    pg = PrivatePg(top)
    try:
        pg.start()
        yield pg
    finally:
        if (pg.dir / "data").exists():
            pg._script("stop", check=False)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def store(request):
    """The StoreConfig this test runs in (pytest_generate_tests gives the
    name); skips the test when the configuration cannot run here."""
    cfg = StoreConfig(getattr(request, "param", "sqlite"))
    if cfg.uses_redis:
        if REDIS_HELP_MARK not in request.getfixturevalue("tierfs_help"):
            pytest.skip(f"{cfg.name}: this tierfs has no Redis tier yet "
                        f"(`{TIERFS_BIN.name} --help` does not mention {REDIS_HELP_MARK})")
        cfg.redis_url = os.environ.get("TIERFS_TEST_REDIS")
        if not cfg.redis_url:
            pytest.skip(f"{cfg.name}: TIERFS_TEST_REDIS is unset (scripts/test.sh starts a private Redis)")
    if cfg.uses_postgres:
        cfg.pg = request.getfixturevalue("pg_server")
        if cfg.pg is None:
            pytest.skip(f"{cfg.name}: TIERFS_TEST_POSTGRES is unset "
                        "(scripts/test.sh starts a private PostgreSQL)")
    return cfg


@pytest.fixture
def tierfs_factory(tmp_path, store):
    """Returns make(**kwargs) that creates and starts a TierfsMount in this
    test's temp dir, in this test's store configuration (kwargs as
    TierfsMount; start=False to only create it). In a PostgreSQL
    configuration each mount gets a fresh store of its own. At teardown
    every mount still running is unmounted cleanly, the test fails on
    sanitizer reports in any daemon log, and the stores are dropped."""
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
        kwargs.setdefault("store", store)
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
    for m in mounts:
        m.drop_store()
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def tierfs(tierfs_factory):
    """A started TierfsMount with the default options."""
    return tierfs_factory()

