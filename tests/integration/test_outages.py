"""Outages and misbehaving tiers (issue 3, item 6): what a mount does when
Redis or PostgreSQL goes away mid-load, and when they are reachable but
answer with errors.

Every test here starts its own private servers, because it stops, restarts
or misconfigures them; the shared servers of TIERFS_TEST_POSTGRES and
TIERFS_TEST_REDIS are never used:
  * PostgreSQL through scripts/pg-test-server.sh (start / stop / resume on
    the same port) in a temp dir under /tmp that the 'postgres' user can
    reach; the superuser is reached over the unix socket in that dir;
  * Redis as a child redis-server on a fixed loopback port, so that it can
    be killed and started again on the same port.
A test skips when /usr/lib/postgresql/15/bin (or $PGBIN) or redis-server
is missing.

This module overrides conftest's `store` fixture so that tierfs_factory
(its teardown, watchdog and sanitizer checks) mounts on those private
servers: tests marked stores("postgres") mount on a private PostgreSQL
(store [postgres]), tests marked sqlite_only have L3 in SQLite and add
`-o redis=URL` themselves.

The tests of tiers that answer with errors check the behaviour docs/design.md
§5.8 and §6 describe: a refusal (permission denied, read-only) is not retried
into silence: close() succeeds (the change is in the write-ahead log),
fsync() fails with EACCES / EROFS, the log line says what happened, and
nothing is lost once the tier accepts writes again. A new file in a
directory the mount knows can be created while PostgreSQL is down
(test_create_during_postgres_outage, on its own so that its failure shows).

Redis is read with a tiny RESP client over a socket (exact bytes, NULs
included); keys are "{prefix}e:{ino}" hashes with fields "m" and "d", the
prefix "tierfs:" by default.

Environment:
    TIERFS_OUTAGE_SECONDS   how long PostgreSQL stays down in the mid-load
                            test (default 30, as issue 3 says)
    PGBIN                   PostgreSQL's programs (/usr/lib/postgresql/15/bin)
"""

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (TIERFS_BIN, PgServer, StoreConfig, in_mount_table, is_mounted,
                      psql, run, wait_for, write_file)

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

OUTAGE_SECONDS = float(os.environ.get("TIERFS_OUTAGE_SECONDS", "30"))

PROMPT = 15.0        # seconds a failing read or an fsync may take: not a hang
REDIS_BACK = 30.0    # the breaker lets a trial call through every 2 s
PERSIST = 60.0       # seconds to wait for PostgreSQL to hold what was written

PREFIX = "tierfs:"   # the default redis_prefix
ALL_BYTES = bytes(range(256))
JSON_DOC = ('{"name": "caf\u00e9 \u65e5\u672c", "list": [1, 2.5, null, true],\n'
            ' "nested": {"empty": {}, "s": "tab\\t nul\\u0000"}}\n  ').encode()
BINARY = b"\0\0\0" + ALL_BYTES * 3 + b"\0" * 100 + ALL_BYTES[::-1] + b"\0"


# --- files -----------------------------------------------------------------------

def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def content(rel, n):
    """Version @n of file @rel: a JSON text for .json, else binary with NULs;
    every version differs."""
    if rel.endswith(".json"):
        return json.dumps({"file": rel, "n": n, "pad": "x" * (n % 97)}).encode()
    return b"\0" + rel.encode() + b"\0" + n.to_bytes(4, "little") + os.urandom(64 + n % 300) + b"\0"


def timed(fn, limit, what):
    """Runs fn() in a thread and waits at most @limit seconds. Returns
    (value, error, elapsed): error is the OSError it raised, or None. Fails
    the test when the call is still blocked after @limit (a hang)."""
    box = {}

    def target():
        t0 = time.monotonic()
        try:
            box["value"] = fn()
        except OSError as e:
            box["error"] = e
        finally:
            box["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        pytest.fail(f"{what}: still blocked after {limit:.0f}s (a hang, not an error)")
    return box.get("value"), box.get("error"), box["elapsed"]


def describe(error):
    if error is None:
        return "succeeded"
    return f"failed with {errno.errorcode.get(error.errno, error.errno)} ({error.strerror})"


class LogMark:
    """The daemon's stderr from now on (the current run's log file)."""

    def __init__(self, m):
        self.path = m.logs[-1]
        self.offset = self.path.stat().st_size

    def text(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")


def lines_with(text, *words):
    """The lines of @text that contain every one of @words, case-insensitive."""
    return [ln for ln in text.splitlines() if all(w.lower() in ln.lower() for w in words)]


# --- Redis -------------------------------------------------------------------------

class RespError(Exception):
    pass


class Resp:
    """A minimal RESP2 client: call() sends one command, returns the reply
    (bytes for bulk strings, str for status, int, list, None) and raises
    RespError for an error reply."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def close(self):
        self.f.close()
        self.sock.close()

    def call(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("short bulk reply")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError(f"bad RESP line {line!r}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server, a child of the test, on a fixed loopback
    port (so it can come back on the same one), no persistence."""

    def __init__(self, workdir, args=()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = list(args)
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self):
        assert self.proc is None
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                 "--daemonize", "no", *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_for(lambda: self.proc.poll() is not None or self.answers(), 20)
        if not self.answers():
            self.kill()
            pytest.fail(f"redis-server on port {self.port} did not start:\n"
                        f"{(self.dir / 'redis.log').read_text(errors='replace')[-2000:]}")
        return self

    def answers(self):
        """True when the server answers PING (NOAUTH counts: it is up)."""
        try:
            c = Resp(self.port, timeout=2)
        except OSError:
            return False
        try:
            return c.call("PING") == "PONG"
        except RespError as e:
            return str(e).startswith("NOAUTH")
        except OSError:
            return False
        finally:
            c.close()

    def kill(self):
        """SIGKILL, like a crash; waits for the process to be gone."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        if proc is not None:
            proc.wait(timeout=30)

    def call(self, *args):
        c = Resp(self.port)
        try:
            return c.call(*args)
        finally:
            c.close()

    def entry(self, ino, field="d", prefix=PREFIX):
        """HGET {prefix}e:{ino} {field}, or None when the server is down."""
        try:
            return self.call("HGET", f"{prefix}e:{ino}", field)
        except (OSError, ConnectionError):
            return None


@pytest.fixture
def redis_factory(tmp_path):
    """Returns start(args=()) that starts a private RedisServer; every one
    is killed at teardown."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is missing (Debian package redis-server)")
    servers = []

    def start(args=()):
        r = RedisServer(tmp_path / f"redis{len(servers)}", args)
        servers.append(r)
        return r.start()

    yield start
    for r in servers:
        r.kill()


# --- PostgreSQL --------------------------------------------------------------------

@pytest.fixture
def store(request):
    """Overrides conftest's: [postgres] is a private server of this test
    (private_pg), [sqlite] is SQLite (the Redis tests add -o redis=URL)."""
    name = getattr(request, "param", "sqlite")
    if name == "postgres":
        pg = request.getfixturevalue("private_pg")
        return StoreConfig("postgres", pg=PgServer(pg.uri))
    assert name == "sqlite", f"{name}: not used in this module"
    return StoreConfig("sqlite")


def pg_contents(m, inos):
    """{ino: content as hex} of the rows of contents for @inos that psql
    can read now (empty while PostgreSQL is down)."""
    out = m.psql("SELECT ino, encode(data, 'hex') FROM contents WHERE ino IN "
                 f"({','.join(str(int(i)) for i in inos)})", check=False)
    rows = {}
    for line in (out or "").splitlines():
        ino, data = line.split("|")
        rows[int(ino)] = data
    return rows


def wal_bytes(m):
    return sum(p.stat().st_size for p in m.wal.glob("wal-*.log"))


# --- Redis: bytes, fill, outage -------------------------------------------------

@pytest.mark.sqlite_only
def test_redis_holds_the_bytes_written(tierfs_factory, redis_factory):
    r = redis_factory()
    m = tierfs_factory(options=[f"redis={r.url}"])
    files = {"doc.json": JSON_DOC, "all-bytes.bin": BINARY, "nul.json": b'"\\u0000"',
             "empty.bin": b""}
    for name, data in files.items():
        write_file(m.path(name), data, fsync=True)
    for name, data in files.items():
        ino = os.stat(m.path(name)).st_ino
        got = wait_for(lambda: r.entry(ino) == data, 10)
        assert got, f"{name}: redis has {r.entry(ino)!r} at {PREFIX}e:{ino} d, not the bytes written"
        meta = r.entry(ino, "m")
        assert meta[0] == 2, f"{name}: metadata format {meta[0]}"
        assert int.from_bytes(meta[1:9], "little") == len(data), f"{name}: size in 'm'"
        assert meta[9:41] == hashlib.sha256(data).digest(), f"{name}: hash in 'm'"
        assert sorted(r.call("HKEYS", f"{PREFIX}e:{ino}")) == [b"d", b"m"], name
    # Every key tierfs wrote is under its prefix.
    keys = r.call("KEYS", "*")
    assert keys and all(k.startswith(PREFIX.encode()) for k in keys), keys


@pytest.mark.sqlite_only
def test_an_l3_hit_fills_redis(tierfs_factory, redis_factory):
    r = redis_factory()
    m = tierfs_factory(options=[f"redis={r.url}"])
    os.mkdir(m.path("sub"))
    files = {"sub/doc.json": JSON_DOC, "sub/all-bytes.bin": BINARY, "other.json": b"[1]"}
    for rel, data in files.items():
        write_file(m.path(rel), data)
    inos = {rel: os.stat(m.path(rel)).st_ino for rel in files}
    m.unmount()
    assert r.call("FLUSHALL") == "OK"
    assert r.call("DBSIZE") == 0
    m.start()
    for rel in ("sub/doc.json", "sub/all-bytes.bin"):
        assert r.entry(inos[rel]) is None, f"{rel}: in redis before anything read it"
    for rel in ("sub/doc.json", "sub/all-bytes.bin"):
        # (a read also fills its siblings, read with it: engine/dirsnap.c)
        ino = inos[rel]
        assert read_file(m.path(rel)) == files[rel], rel
        assert wait_for(lambda: r.entry(ino) == files[rel], 10), \
            f"{rel}: the read from L3 did not fill redis (HGET d = {r.entry(ino)!r})"
        meta = r.entry(ino, "m")
        assert meta and int.from_bytes(meta[1:9], "little") == len(files[rel]), rel


@pytest.mark.sqlite_only
def test_redis_killed_mid_load_reads_and_writes_go_on(tierfs_factory, redis_factory):
    r = redis_factory()
    m = tierfs_factory(options=[f"redis={r.url}"])
    os.makedirs(m.path("cold"))
    os.makedirs(m.path("hot"))
    groups = {"before": 20, "during": 60, "after": 150}  # cold files, read in these phases
    # each cold file alone in its directory: a read of a file also reads
    # its siblings into L1 (engine/dirsnap.c), and these must each meet
    # redis as it is at their phase
    cold = {g: [f"cold/{g}{i}/f.{'json' if i % 2 else 'bin'}" for i in range(n)]
            for g, n in groups.items()}
    data = {}
    for names in cold.values():
        for rel in names:
            os.mkdir(m.path(os.path.dirname(rel)))
            data[rel] = content(rel, 0)
            write_file(m.path(rel), data[rel])
    hot = [f"hot/w{i}.{'json' if i % 2 else 'bin'}" for i in range(30)]
    m.remount()  # L1 empty: the cold files were not read since this mount

    lock = threading.Lock()        # the writer's files: written or read whole
    latest = {}                    # hot file -> the bytes of its last close
    errors = []
    stop = threading.Event()
    queue, queue_lock = [], threading.Lock()  # cold files for the reader
    counts = {"writes": 0, "reads": 0, "cold": 0}

    def writer():
        n = 0
        while not stop.is_set():
            rel = hot[n % len(hot)]
            new = content(rel, n)
            with lock:
                try:
                    write_file(m.path(rel), new, fsync=(n % 10 == 0))
                except OSError as e:
                    errors.append(f"write {rel} #{n}: {describe(e)}")
                else:
                    latest[rel] = new
                    counts["writes"] += 1
            n += 1
            stop.wait(0.005)  # load shaping, not synchronisation

    def reader():
        while not stop.is_set():
            with queue_lock:
                rel = queue.pop(0) if queue else None
            try:
                if rel is not None:
                    got = read_file(m.path(rel))
                    if got != data[rel]:
                        errors.append(f"read {rel}: wrong bytes")
                    counts["cold"] += 1
                else:
                    with lock:
                        if not latest:
                            continue
                        rel = random.choice(list(latest))
                        if read_file(m.path(rel)) != latest[rel]:
                            errors.append(f"read {rel}: not the last bytes written")
            except OSError as e:
                errors.append(f"read {rel}: {describe(e)}")
            counts["reads"] += 1
            stop.wait(0.002)  # load shaping

    def feed(names):
        with queue_lock:
            queue.extend(names)
        target = counts["cold"] + len(names)
        assert wait_for(lambda: counts["cold"] >= target or errors, 60), \
            f"the reader did not get through {len(names)} cold files"

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        feed(cold["before"])
        assert wait_for(lambda: counts["writes"] >= 20 or errors, 30)
        assert not errors, errors
        mark = LogMark(m)

        r.kill()  # mid-load
        writes_at_kill = counts["writes"]
        half = len(cold["during"]) // 2
        feed(cold["during"][:half])  # the first of them meet the dead server
        assert wait_for(lambda: lines_with(mark.text(), "redis is unavailable"), 30), \
            f"no 'redis is unavailable' line:\n{mark.text()[-3000:]}"
        # Trial calls every 2 s fail while redis is down: wait for two,
        # with the load going on.
        def failed_trials():
            text = mark.text()
            after_open = text[text.lower().index("redis is unavailable"):]
            return len(lines_with(after_open, "redis '", "cannot")) >= 2
        assert wait_for(failed_trials, 30), \
            f"no trial calls to the dead redis:\n{mark.text()[-3000:]}"
        feed(cold["during"][half:])  # with the breaker open
        assert wait_for(lambda: counts["writes"] >= writes_at_kill + 50 or errors, 60)
        assert m.proc.poll() is None, "the daemon exited"
        assert not errors, errors

        r.start()  # back, empty, on the same port
        # Read cold files one at a time until the breaker's trial call
        # finds redis back and a read from L3 fills it.
        after = list(cold["after"])
        filled = []
        deadline = time.monotonic() + REDIS_BACK
        while after and not filled and time.monotonic() < deadline:
            rel = after.pop(0)
            assert read_file(m.path(rel)) == data[rel], rel
            ino = os.stat(m.path(rel)).st_ino
            if wait_for(lambda: r.entry(ino) == data[rel], 0.2):
                filled.append(rel)
        assert filled, (f"redis was not refilled within {REDIS_BACK:.0f}s of coming back\n"
                        f"{mark.text()[-3000:]}")
        # From now on every read of a cold file fills it.
        rest = after[:20]
        assert len(rest) >= 10, "too few cold files left to check the refill"
        for rel in rest:
            assert read_file(m.path(rel)) == data[rel], rel
            ino = os.stat(m.path(rel)).st_ino
            assert wait_for(lambda: r.entry(ino) == data[rel], 10), \
                f"{rel}: read after redis came back, not filled into redis"
        # And the writer's changes reach redis again.
        writes_back = counts["writes"]
        assert wait_for(lambda: counts["writes"] >= writes_back + 2 * len(hot) or errors, 60)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer or reader hangs"
    assert not errors, errors
    for rel in hot:
        ino = os.stat(m.path(rel)).st_ino
        assert wait_for(lambda: r.entry(ino) == latest[rel], 10), \
            f"{rel}: redis does not hold its last version"
    assert m.proc.poll() is None, "the daemon exited"
    said = lines_with(m.stderr_text(), "redis is unavailable")
    assert len(said) == 1, f"'redis is unavailable' logged {len(said)} times: {said}"


# --- PostgreSQL outage -------------------------------------------------------------

@pytest.mark.stores("postgres")
def test_postgres_stopped_mid_load(tierfs_factory, private_pg):
    m = tierfs_factory()
    for d in ("tree/a/deep", "tree/b", "cold/x"):
        os.makedirs(m.path(d))
    known = ([f"tree/a/{i}.json" for i in range(10)] + [f"tree/a/deep/{i}.bin" for i in range(10)]
             + [f"tree/b/{i}.{'json' if i % 2 else 'bin'}" for i in range(10)])
    cold_names = [f"tree/a/cold{i}.bin" for i in range(3)]      # a known dir, unseen names
    cold_dirs = [f"cold/x/{i}.json" for i in range(3)]          # a dir never visited
    cold_data = [f"tree/b/stat{i}.bin" for i in range(3)]       # stat'ed, content never read
    cold = cold_names + cold_dirs + cold_data
    data = {rel: content(rel, 0) for rel in known + cold}
    for rel, d in data.items():
        write_file(m.path(rel), d)
    m.remount()  # L1 empty
    for rel in known:
        assert read_file(m.path(rel)) == data[rel], rel  # now this mount knows them
    for rel in cold_data:
        assert os.stat(m.path(rel)).st_size == len(data[rel])
    inos = {rel: os.stat(m.path(rel)).st_ino for rel in known}
    latest = {rel: data[rel] for rel in known}
    locks = {rel: threading.Lock() for rel in known}
    errors, fsyncs, counts = [], [], {"writes": 0, "reads": 0}
    stop = threading.Event()

    def writer():
        n = 1
        while not stop.is_set():
            rel = known[n % len(known)]
            new = content(rel, n)
            with locks[rel]:
                try:
                    fd = os.open(m.path(rel), os.O_WRONLY | os.O_TRUNC)  # an existing file
                    try:
                        os.write(fd, new)
                        if n % 7 == 0:
                            t0 = time.monotonic()
                            os.fsync(fd)
                            fsyncs.append(time.monotonic() - t0)
                    finally:
                        os.close(fd)
                except OSError as e:
                    errors.append(f"write {rel} #{n}: {describe(e)}")
                else:
                    latest[rel] = new
                    counts["writes"] += 1
            n += 1
            stop.wait(0.01)  # load shaping, not synchronisation

    def reader():
        while not stop.is_set():
            rel = random.choice(known)
            with locks[rel]:
                try:
                    if read_file(m.path(rel)) != latest[rel]:
                        errors.append(f"read {rel}: not the last bytes written")
                except OSError as e:
                    errors.append(f"read {rel}: {describe(e)}")
            counts["reads"] += 1
            stop.wait(0.005)

    mark = LogMark(m)
    private_pg.stop()
    t_stop = time.monotonic()
    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    cold_results = []
    try:
        for t in threads:
            t.start()
        # Cold reads throughout the outage: each fails with EIO, promptly.
        i = 0
        while time.monotonic() - t_stop < OUTAGE_SECONDS:
            rel = cold[i % len(cold)]
            val, err, took = timed(lambda: read_file(m.path(rel)), PROMPT, f"read of cold {rel}")
            cold_results.append((rel, err, took))
            if err is None and val != data[rel]:
                errors.append(f"read of cold {rel}: wrong bytes")
            i += 1
            stop.wait(min(1.0, max(0.0, OUTAGE_SECONDS - (time.monotonic() - t_stop))))
            if errors:
                break
        in_log = wal_bytes(m)
        stop.set()
        for t in threads:
            t.join(PROMPT + 30)
        assert not any(t.is_alive() for t in threads), "a writer or reader hangs during the outage"
        assert m.proc.poll() is None, "the daemon exited during the outage"
    finally:
        stop.set()
        private_pg.resume()
    outage_log = mark.text()

    assert not errors, f"{len(errors)} failures during the outage: {errors[:10]}"
    assert counts["writes"] >= 10 and counts["reads"] >= 10, counts
    assert fsyncs, "no fsync ran during the outage"
    assert max(fsyncs) < PROMPT, f"an fsync took {max(fsyncs):.1f}s"
    assert in_log > 0, "the write-ahead log was empty during the outage"
    # What no tier holds fails with EIO: a directory never visited. The
    # files of known directories were read ahead into L1 with the known
    # files beside them (engine/dirsnap.c), so they still read right.
    held = set(cold_names + cold_data)
    bad = [(rel, describe(err), f"{took:.1f}s") for rel, err, took in cold_results
           if rel not in held and (err is None or err.errno != errno.EIO)]
    assert cold_results and not bad, f"cold reads during the outage, expected EIO: {bad}"
    bad = [(rel, describe(err)) for rel, err, took in cold_results if rel in held and err]
    assert not bad, f"reads of files read ahead before the outage failed: {bad}"
    assert lines_with(outage_log, "write-ahead log"), \
        f"no log line says the changes wait in the write-ahead log:\n{outage_log[-3000:]}"

    # PostgreSQL is back: everything lands, the log drains, the mount serves.
    want = {inos[rel]: latest[rel].hex() for rel in known}
    ok = wait_for(lambda: pg_contents(m, want) == want, PERSIST, interval=0.5)
    if not ok:
        got = pg_contents(m, want)
        missing = [rel for rel in known if got.get(inos[rel]) != want[inos[rel]]]
        pytest.fail(f"{len(missing)} files lack their last bytes in PostgreSQL "
                    f"{PERSIST:.0f}s after it came back: {missing[:10]}\n{mark.text()[-3000:]}")
    assert wait_for(lambda: wal_bytes(m) == 0, PERSIST, interval=0.2), \
        f"the write-ahead log still holds {wal_bytes(m)} bytes: " \
        f"{[(p.name, p.stat().st_size) for p in m.wal.glob('wal-*.log')]}"
    assert m.proc.poll() is None, "the daemon exited"
    for rel in known:
        assert read_file(m.path(rel)) == latest[rel], rel
    for rel in cold:
        assert read_file(m.path(rel)) == data[rel], f"{rel}: unreadable after PostgreSQL came back"
    write_file(m.path("tree/after.json"), b'{"after": true}', fsync=True)
    ino = os.stat(m.path("tree/after.json")).st_ino
    assert pg_contents(m, [ino]) == {ino: b'{"after": true}'.hex()}


@pytest.mark.stores("postgres")
def test_create_during_postgres_outage(tierfs_factory, private_pg):
    """Desired (docs/design.md §5.3 and §5.8: the cuckoo filter rules out
    absent names without L3): a new file in a directory this mount knows
    can be created while PostgreSQL is down, and lands there when it is
    back."""
    m = tierfs_factory()
    os.makedirs(m.path("known"))
    for i in range(5):
        write_file(m.path(f"known/{i}.json"), f"[{i}]".encode())
    m.remount()
    assert sorted(os.listdir(m.path("known"))) == sorted(f"{i}.json" for i in range(5))
    for i in range(5):
        assert read_file(m.path(f"known/{i}.json")) == f"[{i}]".encode()

    # The negative-lookup filter is built in the background after a mount;
    # only a complete (trusted) one can vouch for a name without PostgreSQL.
    deadline = time.monotonic() + 60
    while not json.loads(read_file(m.path(".tierfs", "status")))["filter"]["trusted"]:
        assert time.monotonic() < deadline, "the negative-lookup filter was never trusted"
        time.sleep(0.01)

    names = [f"known/new{i}.{'json' if i % 2 else 'bin'}" for i in range(4)]
    new = {rel: content(rel, i) for i, rel in enumerate(names)}
    outcomes = {}
    mark = LogMark(m)
    private_pg.stop()
    try:
        for rel, d in new.items():
            _, err, took = timed(lambda: write_file(m.path(rel), d, fsync=rel.endswith("0.bin")),
                                 PROMPT, f"create {rel}")
            outcomes[rel] = (err, took)
        readback = {}
        for rel, d in new.items():
            if outcomes[rel][0] is None:
                _, err, _ = timed(lambda: read_file(m.path(rel)) == d, PROMPT, f"read {rel}")
                readback[rel] = err
        # a directory's Merkle hash is L3's: unknowable now (EIO, at once);
        # a file's is its content hash, known here
        _, merkle_err, _ = timed(lambda: os.getxattr(m.mnt, "user.tierfs.merkle"),
                                 PROMPT, "read the root's merkle")
        file_merkle = os.getxattr(m.path(names[1]), "user.tierfs.merkle").decode()
        outage_log = mark.text()
    finally:
        private_pg.resume()
    failed = {rel: f"{describe(err)} after {took:.1f}s" for rel, (err, took) in outcomes.items()
              if err is not None}
    assert not failed, (f"creating files in a known directory while PostgreSQL is down: {failed}\n"
                        f"daemon stderr meanwhile:\n{outage_log[-3000:]}")
    assert not any(readback.values()), readback
    for rel, d in new.items():
        assert read_file(m.path(rel)) == d, rel
    want = {os.stat(m.path(rel)).st_ino: d.hex() for rel, d in new.items()}
    assert wait_for(lambda: pg_contents(m, want) == want, PERSIST, interval=0.5), \
        "the files created during the outage are not in PostgreSQL after it came back"
    assert isinstance(merkle_err, OSError) and merkle_err.errno == errno.EIO, merkle_err
    assert file_merkle == hashlib.sha256(new[names[1]]).hexdigest()
    # and once it is back, the root's hash covers what was written meanwhile
    root = os.getxattr(m.mnt, "user.tierfs.merkle").decode()
    assert run([str(TIERFS_BIN), "hash", str(m.mnt)]).stdout.split()[0] == root


# --- tiers that answer with errors -------------------------------------------------

def refused_writes(m, tag):
    """Writes two files while L3 refuses writes: a.bin closed and then
    fsynced through a new descriptor; b.json fsynced before its close.
    Returns ({what: error or None}, {rel: bytes})."""
    files = {f"{tag}-a.bin": BINARY, f"{tag}-b.json": JSON_DOC}
    seen = {}
    a, b = files
    _, seen[f"close {a}"], _ = timed(lambda: write_file(m.path(a), files[a]), PROMPT, f"write {a}")
    _, seen[f"fsync {a}"], _ = timed(lambda: fsync_path(m.path(a)), PROMPT, f"fsync {a}")
    fd = os.open(m.path(b), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, files[b])
        _, seen[f"fsync {b}"], _ = timed(lambda: os.fsync(fd), PROMPT, f"fsync {b}")
    finally:
        try:
            os.close(fd)
            seen[f"close {b}"] = None
        except OSError as e:
            seen[f"close {b}"] = e
    return seen, files


def check_refusal(seen, log, want_errno, log_words):
    """The desired behaviour: closes succeed, fsyncs fail with @want_errno,
    a log line holds @log_words. Returns the list of what differs."""
    problems = []
    for what, err in seen.items():
        if what.startswith("close") and err is not None:
            problems.append(f"{what} {describe(err)}; expected success (the change is in the log)")
        if what.startswith("fsync") and (err is None or err.errno != want_errno):
            problems.append(f"{what} {describe(err)}; expected {errno.errorcode[want_errno]}")
    if not lines_with(log, *log_words):
        problems.append(f"no log line says {' '.join(log_words)!r}")
    return problems


def check_nothing_lost(m, files):
    m.remount()
    want = {os.stat(m.path(rel)).st_ino: d.hex() for rel, d in files.items()}
    assert wait_for(lambda: pg_contents(m, want) == want, PERSIST, interval=0.5), \
        "a file whose close() returned is not in PostgreSQL once writes are allowed again"
    for rel, d in files.items():
        assert read_file(m.path(rel)) == d, rel


@pytest.mark.stores("postgres")
def test_postgres_permission_denied_is_reported(tierfs_factory, private_pg):
    m = tierfs_factory()
    write_file(m.path("before.json"), b'{"before": 1}', fsync=True)
    ino = os.stat(m.path("before.json")).st_ino
    assert pg_contents(m, [ino]) == {ino: b'{"before": 1}'.hex()}
    schema = m.pg.name
    mark = LogMark(m)
    private_pg.su(f'REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" FROM tierfs')
    try:
        seen, files = refused_writes(m, "denied")
        wait_for(lambda: lines_with(mark.text(), "permission denied"), PROMPT)
        log = mark.text()
    finally:
        private_pg.su(f'GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO tierfs')
    assert m.proc.poll() is None, "the daemon exited"
    problems = check_refusal(seen, log, errno.EACCES, ["permission denied"])
    check_nothing_lost(m, files)
    assert not problems, "\n".join(problems) + f"\ndaemon stderr:\n{log[-3000:]}"


@pytest.mark.stores("postgres")
def test_postgres_read_only_is_reported(tierfs_factory, private_pg):
    m = tierfs_factory()
    write_file(m.path("before.json"), b'{"before": 1}', fsync=True)

    def read_only(on):
        private_pg.su("ALTER DATABASE tierfs " +
                      ("SET default_transaction_read_only = on" if on
                       else "RESET default_transaction_read_only"), db="postgres")
        # The setting reaches new sessions only: make tierfs reconnect.
        private_pg.su("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                      "WHERE usename = 'tierfs' AND pid <> pg_backend_pid()", db="postgres")

    mark = LogMark(m)
    read_only(True)
    try:
        assert psql(m.pg.uri, "SHOW default_transaction_read_only") == "on"
        seen, files = refused_writes(m, "ro")
        wait_for(lambda: lines_with(mark.text(), "read-only"), PROMPT)
        log = mark.text()
    finally:
        read_only(False)
    assert m.proc.poll() is None, "the daemon exited"
    problems = check_refusal(seen, log, errno.EROFS, ["read-only"])
    check_nothing_lost(m, files)
    assert not problems, "\n".join(problems) + f"\ndaemon stderr:\n{log[-3000:]}"


@pytest.mark.sqlite_only
def test_redis_read_only_replica(tierfs_factory, redis_factory):
    r = redis_factory()
    m = tierfs_factory(options=[f"redis={r.url}"])
    write_file(m.path("a.json"), b'{"v": 1}', fsync=True)
    ino_a = os.stat(m.path("a.json")).st_ino
    assert wait_for(lambda: r.entry(ino_a) == b'{"v": 1}', 10), "redis is not in use"
    mark = LogMark(m)
    assert r.call("REPLICAOF", "127.0.0.1", "1") == "OK"
    with pytest.raises(RespError, match="^READONLY"):
        r.call("SET", "probe", "x")

    files = {"a.json": b'{"v": 2}', "b.bin": BINARY, "c.json": JSON_DOC}
    for rel, d in files.items():
        write_file(m.path(rel), d, fsync=rel == "b.bin")
    for rel, d in files.items():
        assert read_file(m.path(rel)) == d, rel
    # l2_redis.c logs Redis's own refusal: "redis '...': cannot ...:
    # READONLY You can't write against a read only replica."
    assert wait_for(lambda: lines_with(mark.text(), "redis", "cannot", "READONLY"), PROMPT), \
        f"no log line says redis is read-only:\n{mark.text()[-3000:]}"
    # Redis still holds version 1 of a.json: L3 is the truth.
    assert r.entry(ino_a) == b'{"v": 1}'
    m.remount()
    for rel, d in files.items():
        assert read_file(m.path(rel)) == d, f"{rel}: stale bytes after remount"
    assert m.proc.poll() is None


def authed_hget(r, password, ino):
    c = Resp(r.port)
    try:
        c.call("AUTH", password)
        return c.call("HGET", f"{PREFIX}e:{ino}", "d")
    finally:
        c.close()


@pytest.mark.sqlite_only
def test_redis_wrong_password_refuses_the_mount(tierfs_factory, redis_factory):
    good = "good-" + os.urandom(6).hex()
    wrong = "wrong-" + os.urandom(6).hex()
    r = redis_factory(["--requirepass", good])
    # The right password mounts and is used: the refusal below is about
    # the password only.
    ok = tierfs_factory(name="good", options=[f"redis=redis://:{good}@127.0.0.1:{r.port}"])
    write_file(ok.path("x.bin"), BINARY, fsync=True)
    ino = os.stat(ok.path("x.bin")).st_ino
    assert wait_for(lambda: authed_hget(r, good, ino) == BINARY, 10)
    ok.unmount()

    m = tierfs_factory(start=False, options=[f"redis=redis://:{wrong}@127.0.0.1:{r.port}"])
    try:
        proc = subprocess.run(m.argv(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", env=dict(m.env(), LC_ALL="C.UTF-8"),
                              timeout=120)
    finally:
        if in_mount_table(m.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    # the engine cannot open (eng_open fails): exit 1
    assert proc.returncode == 1, f"tierfs did not refuse a wrong redis password:\n{out}"
    assert not is_mounted(m.mnt)
    assert wrong not in out and good not in out, f"the output quotes a password: {out!r}"
    assert "authentication" in out.lower(), f"the message does not name authentication: {out!r}"
