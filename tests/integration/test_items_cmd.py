"""`tierfs put|get|rm|ls|stat` (fs/items_cmd.c): items by ID from the shell,
on the store a mount uses, with the mount's store options.

Each command opens the engine one-shot with a private write-ahead log in a
fresh directory under $TMPDIR; every test checks that none is left behind.
A put or rm exits 0 only once L3 committed the change: the tests read the
row back with sqlite3 or psql right after the command returns, and a mount
(or a remount) shows it. Content is checked byte for byte (NUL bytes in a
binary item), JSON validation and max_item_bytes refuse before anything is
written, and `ls` pages through directories larger than a listing page.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import SANITIZER_MARKERS, TIERFS_BIN, TOOL_ENV, run

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)


def store_args(m):
    """The store options that name mount @m's store, as the mount got them."""
    if m.pg is None:
        return [f"--sqlite={m.db}"]
    args = [f"--postgres={m.pg.uri}"]
    if m.store.uses_redis:
        args += [f"--redis={m.store.redis_url}", "-o", f"redis_prefix={m.redis_prefix}"]
    return args


class Cli:
    """Runs `tierfs VERB STORE_OPTIONS ARGS...` on mount @m's store, in the
    mount's environment (no TIERFS_*/PG* of the caller) with TMPDIR a
    directory of the test's own, so that leftover logs can be seen."""

    def __init__(self, m, tmp_path):
        self.m = m
        self.tmp = tmp_path / "cli-tmp"
        self.tmp.mkdir(exist_ok=True)
        self.env = dict(m.env(), TMPDIR=str(self.tmp), LC_ALL="C.UTF-8")

    def __call__(self, verb, *args, input=b"", store=None, expect=0):
        argv = [str(TIERFS_BIN), verb, *(store_args(self.m) if store is None else store), *args]
        cp = subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=self.env, timeout=120)
        if expect is not None and cp.returncode != expect:
            pytest.fail(f"{argv!r} exited {cp.returncode}, want {expect}\n"
                        f"stdout: {cp.stdout[:2000]!r}\nstderr: {cp.stderr.decode(errors='replace')}")
        err = cp.stderr.decode(errors="replace")
        assert not any(mark in err for mark in SANITIZER_MARKERS), err
        left = sorted(p.name for p in self.tmp.iterdir())
        assert left == [], f"{verb} left its log behind: {left}"
        return cp

    def ids(self, *args):
        return self("ls", *args).stdout.decode().splitlines()

    def stat(self, *args):
        return json.loads(self("stat", "--json", *args).stdout)


@pytest.fixture
def cli_store(tierfs_factory, tmp_path):
    """A store with no mount running (created by a mount that came and
    went), and the Cli on it."""
    m = tierfs_factory()
    m.unmount()
    return m, Cli(m, tmp_path)


def committed(m, dirname, name):
    """(version, content) of the entry @name in the root's directory
    @dirname as L3 holds it now, or None: read behind tierfs's back."""
    if m.pg is None:
        sql = ("SELECT e.version, hex(COALESCE(c.data, X'')) FROM entries e "
               "JOIN entries p ON e.parent = p.ino AND p.parent = 1 "
               "LEFT JOIN contents c ON c.ino = e.ino "
               f"WHERE p.name = CAST('{dirname}' AS BLOB) AND e.name = CAST('{name}' AS BLOB)")
        out = run(["sqlite3", "-readonly", "-noheader", "-separator", "|", str(m.db), sql]).stdout.strip()
    else:
        sql = ("SELECT e.version, encode(COALESCE(c.data, ''::bytea), 'hex') FROM entries e "
               "JOIN entries p ON e.parent = p.ino AND p.parent = 1 "
               "LEFT JOIN contents c ON c.ino = e.ino "
               f"WHERE p.name = '{dirname}'::bytea AND e.name = '{name}'::bytea")
        out = m.psql(sql)
    if not out:
        return None
    version, data = out.split("|")
    return int(version), bytes.fromhex(data)


def test_put_get_round_trip(cli_store, tmp_path):
    m, cli = cli_store
    doc = b'{"name": "ada", "langs": ["c"]}\n'
    cli("put", "user.1", input=doc)
    assert cli("get", "user.1").stdout == doc
    assert committed(m, "user", "1.json") == (1, doc)

    f = tmp_path / "two.json"
    f.write_bytes(b"[1, 2]")
    cli("put", "user.2", str(f))
    cli("put", "user.3", "-", input=b"3")  # "-" is stdin
    assert cli("get", "user.2").stdout == b"[1, 2]"
    assert cli("get", "user.3").stdout == b"3"

    blob = bytes(range(256)) * 3 + b"\0\0end\0"
    cli("put", "--binary", "bin.raw%2Ebytes", input=blob)
    assert cli("get", "--binary", "bin.raw%2Ebytes").stdout == blob
    empty = cli("put", "--binary", "bin.empty")
    assert empty.stdout == b""
    assert cli("get", "--binary", "bin.empty").stdout == b""
    # an empty JSON file is allowed, as on a mount
    cli("put", "user.empty", input=b"")
    assert cli("get", "user.empty").stdout == b""

    # a mount shows the same items as files
    m.start()
    assert m.path("user", "1.json").read_bytes() == doc
    assert m.path("bin", "raw.bytes").read_bytes() == blob
    assert m.path("bin", "empty").read_bytes() == b""


def test_kinds_are_apart(cli_store):
    m, cli = cli_store
    cli("put", "--binary", "k.x", input=b"bytes")
    cp = cli("get", "k.x", expect=1)
    assert b"there is a binary item 'k.x': add --binary" in cp.stderr
    # the same item ID cannot be both kinds
    cp = cli("put", "k.x", input=b"{}", expect=1)
    assert b"binary item with this ID exists" in cp.stderr
    assert cli("get", "--binary", "k.x").stdout == b"bytes"
    # a binary item whose name would read back as JSON has no path
    cp = cli("put", "--binary", "k.y%2Ejson", input=b"x", expect=2)
    assert b"cannot end in .json" in cp.stderr


def test_invalid_json_is_refused_and_nothing_written(cli_store):
    m, cli = cli_store
    cli("put", "user.1", input=b'{"v": 1}')
    for bad in (b"not json", b'{"v": 2', b'{"v": 2} trailing', b"\xff"):
        cp = cli("put", "user.1", input=bad, expect=1)
        assert b"not valid JSON" in cp.stderr and b"nothing written" in cp.stderr
        cp = cli("put", "user.new", input=bad, expect=1)
    assert cli("get", "user.1").stdout == b'{"v": 1}'
    assert committed(m, "user", "1.json") == (1, b'{"v": 1}')
    assert committed(m, "user", "new.json") is None
    assert cli.ids("user") == ["user.1"]
    # the same bytes are fine as a binary item
    cli("put", "--binary", "user.raw", input=b"not json")


def test_size_limit(cli_store, tmp_path):
    m, cli = cli_store
    limit = ["-o", "max_item_bytes=1000"]
    cli("put", "--binary", "big.ok", *limit, input=b"x" * 1000)
    cp = cli("put", "--binary", "big.no", *limit, input=b"x" * 1001, expect=1)
    assert b"larger than max_item_bytes (1000)" in cp.stderr
    f = tmp_path / "big.json"
    f.write_bytes(b'"' + b"y" * 2000 + b'"')
    cli("put", "big.file", str(f), *limit, expect=1)
    assert committed(m, "big", "no") is None
    assert committed(m, "big", "file.json") is None
    assert cli.ids("big") == ["big.ok"]
    # the default limit (16 MiB) passes the bigger file
    cli("put", "big.file", str(f))
    assert cli("get", "big.file").stdout == f.read_bytes()


def test_rm(cli_store):
    m, cli = cli_store
    cli("put", "user.1", input=b"1")
    cli("put", "--binary", "user.2", input=b"2")
    cli("rm", "user.1")
    assert committed(m, "user", "1.json") is None
    cp = cli("get", "user.1", expect=1)
    assert b"no JSON item 'user.1'" in cp.stderr
    cp = cli("rm", "user.1", expect=1)
    assert b"no JSON item 'user.1'" in cp.stderr
    cli("rm", "--binary", "user.2")
    assert cli.ids() == []
    m.start()
    assert not m.path("user").exists()  # implicit directories went too


def test_ls_prefix_and_paging(tierfs_factory, tmp_path):
    m = tierfs_factory()
    # a tree bigger than a listing page (128) in one directory, written
    # through the mount
    os.makedirs(m.path("big"))
    for i in range(300):
        m.path("big", f"{i:04d}.json").write_bytes(b"{}")
    os.makedirs(m.path("user", "sub", "deep"))
    os.makedirs(m.path("username"))
    for rel, data in {"user/1.json": b"1", "user/2": b"2", "user/sub/3.json": b"3",
                      "user/sub/deep/4.json": b"4", "user.json": b"0",
                      "username/5.json": b"5", "user/a.b.json": b"6"}.items():
        m.path(rel).write_bytes(data)
    os.makedirs(m.path("user", "empty"))
    m.unmount()
    cli = Cli(m, tmp_path)

    big = [f"big.{i:04d}" for i in range(300)]
    assert cli.ids("big") == big
    # depth first, in readdir's order (inode numbers: the order they were
    # made in): sub/ (with deep/ before 3.json), 1.json, 2, a.b.json, empty/
    under_user = ["user.sub.deep.4", "user.sub.3", "user.1", "user.2", "user.a%2Eb"]
    assert cli.ids("user") == under_user
    assert cli.ids("user.sub") == ["user.sub.deep.4", "user.sub.3"]
    # the root: big/, user/, username/, user.json
    assert cli.ids() == big + under_user + ["username.5", "user"]
    assert cli.ids("--", "user") == under_user
    # nothing there: no output, exit 0
    assert cli.ids("nothing") == []
    assert cli.ids("user.empty") == []
    assert cli.ids("user.1") == []  # an item, not a directory
    for bad in ("user.", ".user", "user..sub", "a%zz"):
        cp = cli("ls", bad, expect=2)
        assert b"bad prefix" in cp.stderr
    # a reader that went away (| head): the call ends quietly, and still
    # removes its log
    r, w = os.pipe()
    os.close(r)
    try:
        cp = subprocess.run([str(TIERFS_BIN), "ls", *store_args(m)], stdout=w,
                            stderr=subprocess.PIPE, env=cli.env, timeout=120)
    finally:
        os.close(w)
    assert cp.returncode == 1 and cp.stderr == b""
    assert list(cli.tmp.iterdir()) == []
    # every listed ID reads back as an item of some kind
    for i in under_user:
        kind = [] if i != "user.2" else ["--binary"]
        assert cli("get", *kind, i).stdout


def test_stat(cli_store):
    m, cli = cli_store
    doc1, doc2 = b'{"v": 1}', b'{"v": 22}'
    cli("put", "user.1", input=doc1)
    s1 = cli.stat("user.1")
    assert s1["id"] == "user.1" and s1["kind"] == "json"
    assert s1["version"] == 1
    assert s1["size"] == len(doc1)
    assert s1["hash"] == hashlib.sha256(doc1).hexdigest()
    assert s1["status"] == "synced"
    assert "l3" in s1["tiers"].split(",")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", s1["mtime"])

    cli("put", "user.1", input=doc2)
    s2 = cli.stat("user.1")
    assert s2["version"] == 2
    assert s2["hash"] == hashlib.sha256(doc2).hexdigest()
    assert s2["size"] == len(doc2)
    assert s2["mtime_ns"] >= s1["mtime_ns"]
    assert s2["inode"] == s1["inode"]

    text = cli("stat", "user.1").stdout.decode()
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    assert list(lines) == ["id", "kind", "version", "size", "hash", "status",
                           "tiers", "mtime", "mtime_ns", "inode"]
    assert lines["version"] == "2" and lines["hash"] == s2["hash"]
    assert lines["mtime"] == s2["mtime"]

    cli("put", "--binary", "user.b", input=b"\0")
    sb = cli.stat("--binary", "user.b")
    assert sb["kind"] == "binary" and sb["size"] == 1
    cp = cli("stat", "user.b", expect=1)
    assert b"add --binary" in cp.stderr
    cp = cli("stat", "user", expect=1)  # the directory user/
    assert b"no JSON item 'user'" in cp.stderr

    # a mount reports the same version and hash
    m.start()
    assert m.getfattr(m.path("user", "1.json"), "user.tierfs.version") == "2"
    assert m.getfattr(m.path("user", "1.json"), "user.tierfs.hash") == s2["hash"]


def test_put_while_mounted(tierfs_factory, tmp_path):
    """A put into the store of a running mount commits to L3 before it
    returns; a remount shows it. (The running mount is not told: that is
    the change feed's business.)"""
    m = tierfs_factory()
    m.path("mine.json").write_bytes(b'"mount"')
    cli = Cli(m, tmp_path)
    for i in range(5):
        doc = json.dumps({"i": i}).encode()
        cli("put", f"cli.{i}", input=doc)
        assert committed(m, "cli", f"{i}.json") == (1, doc)
    cli("put", "cli.0", input=b"[0]")
    assert committed(m, "cli", "0.json") == (2, b"[0]")
    assert cli("get", "cli.3").stdout == b'{"i": 3}'
    assert cli.ids("cli") == [f"cli.{i}" for i in range(5)]
    cli("rm", "cli.4")
    assert committed(m, "cli", "4.json") is None
    # the mount goes on working beside it
    m.path("mine2.json").write_bytes(b"2")
    m.remount()
    assert sorted(os.listdir(m.path("cli"))) == [f"{i}.json" for i in range(4)]
    assert m.path("cli", "0.json").read_bytes() == b"[0]"
    assert m.path("mine.json").read_bytes() == b'"mount"'
    assert m.path("mine2.json").read_bytes() == b"2"
    assert m.getfattr(m.path("cli", "0.json"), "user.tierfs.version") == "2"


def test_errors(cli_store, tmp_path):
    m, cli = cli_store
    for bad in ("user..1", ".x", "x.", "a/b", "x%41", "ctl\x01"):
        cp = cli("get", bad, expect=2)
        assert b"bad ID" in cp.stderr
        cp = cli("put", bad, input=b"{}", expect=2)
        assert b"bad ID" in cp.stderr
    cp = cli("put", "a" * 300, input=b"{}", expect=2)
    assert b"too long" in cp.stderr
    cp = cli("get", "user.none", expect=1)
    assert b"no JSON item 'user.none'" in cp.stderr
    # usage
    assert b"no ID given" in cli("get", expect=2).stderr
    assert b"too many arguments" in cli("get", "a", "b", expect=2).stderr
    assert b"unknown option" in cli("get", "-o", "no_such=1", "a", expect=2).stderr
    assert b"unknown option" in cli("ls", "-f", expect=2).stderr
    assert b"usage: tierfs put" in cli("put", "--help").stdout
    # a store that is not there is not made, except by put (as a mount)
    missing = tmp_path / "missing.db"
    for verb in ("get", "rm", "stat", "ls"):
        cp = cli(verb, "x", store=[f"--sqlite={missing}"], expect=2)
        assert b"cannot open the store" in cp.stderr
        assert not missing.exists()
    cp = cli("put", "x", store=[f"--sqlite={tmp_path}/no/such/dir/s.db"], input=b"{}", expect=2)
    assert b"cannot open the store" in cp.stderr
    cp = cli("put", "x", store=[f"--sqlite={missing}"], input=b"{}")
    assert cli("get", "x", store=[f"--sqlite={missing}"]).stdout == b"{}"


@pytest.mark.stores("postgres")
def test_unreachable_postgres(tierfs_factory, tmp_path):
    m = tierfs_factory(start=False)
    cli = Cli(m, tmp_path)
    dead = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    cp = cli("put", "x", store=[f"--postgres={dead}", "-o", f"wal_path={tmp_path}/cli-tmp"],
             input=b"{}", expect=2)
    assert b"cannot open the store" in cp.stderr


def test_help_lists_the_commands():
    out = run([str(TIERFS_BIN), "--help"], env=TOOL_ENV).stdout
    for verb in ("put", "get", "rm", "ls", "stat"):
        assert f"tierfs {verb} " in out
