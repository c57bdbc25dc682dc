"""Private PostgreSQL and Redis servers for tests/bench/bench.py, a psql
session to poll PostgreSQL with, and the raw batched upsert that is the
PostgreSQL reference (docs/design.md §13: a raw batched PostgreSQL upsert
of the same rows is the reference for persistence).

Only the standard library and the command-line clients (psql, redis-cli):
psycopg is not available. The servers are started and stopped with
scripts/pg-test-server.sh and scripts/redis-test-server.sh, fresh in a
directory the caller owns; every start registers its stop with the caller's
cleanup stack *before* it starts, so a server that half-started (or a start
interrupted by Ctrl-C) is stopped too.
"""

import hashlib
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
PG_SCRIPT = REPO / "scripts" / "pg-test-server.sh"
REDIS_SCRIPT = REPO / "scripts" / "redis-test-server.sh"
PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))
TOOL_TIMEOUT = 120.0

# The tables of tierfs's PostgreSQL store (engine/l3_pg_schema.c, without
# the merkle column), with the same constraints and indexes: the raw upsert
# writes rows shaped like the ones tierfs writes.
RAW_SCHEMA = """
CREATE TABLE entries (
    ino bigint PRIMARY KEY,
    parent bigint NOT NULL,
    name bytea NOT NULL,
    stem bytea,
    kind smallint NOT NULL,
    size bigint NOT NULL,
    hash bytea,
    version bigint NOT NULL,
    mtime_ns bigint NOT NULL,
    ctime_ns bigint NOT NULL,
    mode integer NOT NULL,
    uid bigint NOT NULL,
    gid bigint NOT NULL,
    explicit_dir boolean NOT NULL,
    state text,
    xattrs bytea,
    atime_ns bigint NOT NULL,
    CONSTRAINT entries_parent_name UNIQUE (parent, name) INCLUDE (ino, kind)
);
CREATE UNIQUE INDEX entries_parent_stem ON entries (parent, stem) WHERE stem IS NOT NULL;
CREATE INDEX entries_parent_ino ON entries (parent, ino) INCLUDE (name, kind);
CREATE TABLE contents (
    ino bigint PRIMARY KEY,
    data bytea NOT NULL
);
"""

ENTRY_COLS = ("ino", "parent", "name", "stem", "kind", "size", "hash", "version", "mtime_ns",
              "ctime_ns", "mode", "uid", "gid", "explicit_dir", "state", "xattrs", "atime_ns")


class ServerError(Exception):
    pass


def tool_env():
    """The environment for psql/redis-cli: none of the user's PG* settings
    or ~/.pgpass (every URI here carries its password)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSFILE"] = os.devnull
    env["PGCONNECT_TIMEOUT"] = "10"
    return env


def run_tool(argv, what, timeout=TOOL_TIMEOUT, **kw):
    try:
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=tool_env(), timeout=timeout,
                            **kw)
    except subprocess.TimeoutExpired as e:
        raise ServerError(f"{what}: timed out after {timeout:.0f}s") from e
    except OSError as e:
        raise ServerError(f"{what}: {e}") from e
    if cp.returncode != 0:
        raise ServerError(f"{what} failed (exit {cp.returncode}): {cp.stderr.strip()}")
    return cp.stdout


def uri_with_db(uri, db):
    u = urlsplit(uri)
    return urlunsplit((u.scheme, u.netloc, "/" + db, u.query, u.fragment))


def redact(uri):
    u = urlsplit(uri)
    if u.password is None:
        return uri
    netloc = u.netloc.replace(":" + u.password + "@", ":****@")
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


class PgServer:
    """A private PostgreSQL server in @dir (scripts/pg-test-server.sh). As
    root the server runs as the 'postgres' user, so every directory above
    @dir must be searchable by that user."""

    def __init__(self, dir):
        self.dir = Path(dir)
        self.uri = None  # the role 'tierfs', owner of the database 'tierfs'
        self.port = None

    def start(self, cleanup):
        if not (PGBIN / "initdb").exists():
            raise ServerError(f"no {PGBIN}/initdb (install postgresql-15)")
        cleanup.push(f"stop PostgreSQL in {self.dir}", self.stop)
        self.dir.mkdir()
        out = run_tool([str(PG_SCRIPT), "start", str(self.dir)], "pg-test-server.sh start",
                       timeout=180.0)
        self.uri = out.strip().splitlines()[-1]
        self.port = int((self.dir / "port").read_text().strip())
        return self.uri

    def stop(self):
        if (self.dir / "data" / "postmaster.pid").exists():
            run_tool([str(PG_SCRIPT), "stop", str(self.dir)], "pg-test-server.sh stop",
                     timeout=180.0)

    def superuser(self, *sqls, db="postgres"):
        """Runs @sqls as the superuser, over the unix socket in @dir (trusted)."""
        argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir),
                "-p", str(self.port), "-U", "postgres", "-d", db]
        for s in sqls:
            argv += ["-c", s]
        return run_tool(argv, f"psql (superuser): {sqls[0][:60]}")

    def create_db(self, name):
        """A new empty database @name owned by the role 'tierfs'; its URI."""
        self.superuser(f'CREATE DATABASE "{name}" OWNER tierfs')
        return uri_with_db(self.uri, name)

    def version(self):
        return self.superuser("SHOW server_version").strip()

    def settings(self, *names):
        return {n: self.superuser(f"SHOW {n}").strip() for n in names}


def psql(uri, *sqls):
    argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", uri]
    for s in sqls:
        argv += ["-c", s]
    return run_tool(argv, f"psql: {sqls[0][:60]}")


def psql_file(uri, path):
    """Runs the SQL script @path with psql -f; returns the seconds from
    starting psql to its exit (connect, send, execute, commit)."""
    argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", uri, "-f", str(path)]
    t0 = time.perf_counter()
    run_tool(argv, f"psql -f {path}", timeout=3600.0)
    return time.perf_counter() - t0


class PsqlSession:
    """One long-lived psql process: queries cost a round trip (about 0.2 ms),
    not a process start and a login (about 30 ms), so polling is cheap and
    fine-grained."""

    def __init__(self, uri):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", uri],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, env=tool_env())

    def value(self, sql):
        """The first column of the single row @sql returns."""
        try:
            self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, ValueError):
            line = ""
        if not line:
            err = ""
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()
            raise ServerError(f"psql session: no answer to {sql!r}: {err.strip()}")
        return line.rstrip("\n")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisServer:
    """A private Redis server in @dir (scripts/redis-test-server.sh): no
    persistence, no password."""

    def __init__(self, dir):
        self.dir = Path(dir)
        self.url = None

    def start(self, cleanup):
        cleanup.push(f"stop Redis in {self.dir}", self.stop)
        self.dir.mkdir()
        out = run_tool([str(REDIS_SCRIPT), "start", str(self.dir)], "redis-test-server.sh start",
                       timeout=60.0)
        self.url = out.strip().splitlines()[-1]
        return self.url

    def stop(self):
        if (self.dir / "redis.pid").exists():
            run_tool([str(REDIS_SCRIPT), "stop", str(self.dir)], "redis-test-server.sh stop",
                     timeout=60.0)

    def cli(self, *args):
        return run_tool(["redis-cli", "-u", self.url, *args], f"redis-cli {args[0]}").strip()

    def dbsize(self):
        return int(self.cli("DBSIZE"))

    def stats(self):
        """(keyspace_hits, keyspace_misses) since the server started."""
        info = dict(line.split(":", 1) for line in self.cli("INFO", "stats").splitlines()
                    if ":" in line)
        return int(info["keyspace_hits"]), int(info["keyspace_misses"])

    def version(self):
        for line in self.cli("INFO", "server").splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"


# --- the raw upsert reference ---------------------------------------------------

def _hex(b):
    return "'\\x" + b.hex() + "'"


def write_upsert_sql(path, rows, per_txn=1000):
    """Writes to @path a SQL script that upserts @rows, a list of (ino,
    parent, name, data) with name and data as bytes, into entries and
    contents: per transaction of @per_txn files, one multi-row
    INSERT ... ON CONFLICT (ino) DO UPDATE into entries and one into
    contents. The rows carry what tierfs writes for a new JSON file: stem,
    size, SHA-256, version 1, times, mode, owner."""
    now = time.time_ns()
    mode = 0o100644
    uid, gid = os.getuid(), os.getgid()
    upd_e = ", ".join(f"{c} = EXCLUDED.{c}" for c in ENTRY_COLS[1:])
    with open(path, "w", encoding="ascii") as f:
        for start in range(0, len(rows), per_txn):
            chunk = rows[start:start + per_txn]
            f.write("BEGIN;\n")
            f.write(f"INSERT INTO entries ({', '.join(ENTRY_COLS)}) VALUES\n")
            vals = []
            for ino, parent, name, data in chunk:
                stem = name[:-5] if name.endswith(b".json") else name
                vals.append(f"({ino},{parent},{_hex(name)},{_hex(stem)},1,{len(data)},"
                            f"{_hex(hashlib.sha256(data).digest())},1,{now},{now},{mode},"
                            f"{uid},{gid},false,NULL,NULL,{now})")
            f.write(",\n".join(vals))
            f.write(f"\nON CONFLICT (ino) DO UPDATE SET {upd_e};\n")
            f.write("INSERT INTO contents (ino, data) VALUES\n")
            f.write(",\n".join(f"({ino},{_hex(data)})" for ino, _p, _n, data in chunk))
            f.write("\nON CONFLICT (ino) DO UPDATE SET data = EXCLUDED.data;\n")
            f.write("COMMIT;\n")
