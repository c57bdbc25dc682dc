"""`tierfs verify [--repair]` (issue 4, item 4): compares the Redis mirror with
L3 from the root down, reports exactly the drift made behind tierfs's back
with redis-cli, repairs it from L3, and reads return the right bytes after.

Keys (engine/l2_redis_keys.c): PREFIX e:INO is a file's hash with fields m (the
metadata blob) and d (the content); PREFIX t:INO a directory's Merkle hash
in hex. Inode numbers are the st_ino the mount reports.
"""

import hashlib
import os
import shutil

import pytest

from conftest import TIERFS_BIN, TierfsMount, redis_drop_prefix, run

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

pytestmark = pytest.mark.stores("redis+postgres")


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


FILES = {
    "top.json": b'{"top": true}',
    "a/one.json": b'{"one": 1}',
    "a/two.bin": b"\0two\0" * 50,
    "a/b/three.json": b"[3]",
    "a/b/four.bin": b"four" * 1000,
    "c/five.json": b'"five"',
    "c/six.bin": b"",
}


class Tree:
    """A mount filled with FILES, every change committed, and helpers to
    reach its keys in Redis."""

    def __init__(self, m):
        self.m = m
        self.url = m.store.redis_url
        for rel, data in FILES.items():
            os.makedirs(os.path.dirname(m.path(rel)), exist_ok=True)
            write(m.path(rel), data)
        # reading the root's Merkle hash commits every pending change
        assert len(m.getfattr(m.mnt, "user.tierfs.merkle")) == 64
        self.ino = {rel: os.stat(m.path(rel)).st_ino for rel in FILES}
        for d in ("a", "a/b", "c"):
            self.ino[d] = os.stat(m.path(d)).st_ino
        self.ino[""] = os.stat(m.mnt).st_ino

    def redis(self, *args):
        return run(["redis-cli", "-u", self.url, *args]).stdout.strip()

    def ekey(self, rel):
        return f"{self.m.redis_prefix}e:{self.ino[rel]}"

    def tkey(self, rel):
        return f"{self.m.redis_prefix}t:{self.ino[rel]}"

    def verify(self, *flags):
        return run([str(TIERFS_BIN), "verify", *flags, f"--postgres={self.m.pg.uri}",
                    f"--redis={self.url}", "-o", f"redis_prefix={self.m.redis_prefix}"],
                   check=False)


def findings(out):
    """{(what, path)} of verify's finding lines."""
    found = set()
    for line in out.splitlines():
        if " (inode " in line:
            what, rest = line.split(": ", 1)
            found.add((what, rest.split(" (inode ")[0]))
    return found


@pytest.fixture
def tree(tierfs):
    return Tree(tierfs)


def test_clean_store_verifies(tree):
    # an empty state tag: L3 keeps it as none, Redis as "" (not drift)
    run(["setfattr", "-n", "user.tierfs.state", "-v", "", str(tree.m.path("a/one.json"))])
    run(["setfattr", "-n", "user.tierfs.state", "-v", "set", str(tree.m.path("a/two.bin"))])
    assert len(tree.m.getfattr(tree.m.mnt, "user.tierfs.merkle")) == 64
    cp = tree.verify()
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert findings(cp.stdout) == set()
    # 4 directories (root, a, a/b, c) and every file
    assert f"checked 4 directories and {len(FILES)} files" in cp.stdout
    assert "0 findings" in cp.stdout


def test_reports_exactly_the_drift_and_repairs_it(tree):
    t = tree
    # every key the test breaks exists first: the test breaks real keys
    for rel in ("a/one.json", "a/b/three.json", "c/five.json"):
        assert t.redis("EXISTS", t.ekey(rel)) == "1"
    for rel in ("a/b", ""):
        assert t.redis("EXISTS", t.tkey(rel)) == "1"

    t.redis("DEL", t.ekey("a/one.json"))                        # missing
    t.redis("HSET", t.ekey("a/b/three.json"), "d", "[4]")       # same size, wrong bytes
    # metadata of this format (first byte 2) that does not decode; a blob
    # of another format would read as absent (an older or newer tierfs's)
    t.redis("EVAL", "return redis.call('HSET', KEYS[1], 'm', string.char(2) .. 'garbage')",
            "1", t.ekey("c/five.json"))
    t.redis("DEL", t.tkey("a/b"))                               # mirror missing
    t.redis("SET", t.tkey(""), "0" * 64)                        # mirror wrong
    t.redis("SET", t.tkey("c"), "not a hash")                   # mirror garbage

    expected = {
        ("missing item", "/a/one.json"),
        ("corrupt item", "/a/b/three.json"),
        ("corrupt item", "/c/five.json"),
        ("missing tree hash", "/a/b"),
        ("tree hash differs", "/"),
        ("tree hash differs", "/c"),
    }
    cp = t.verify()
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert findings(cp.stdout) == expected, cp.stdout
    assert "/c (inode" in cp.stdout and "redis holds no valid hash" in cp.stdout
    assert "6 findings, 0 repaired" in cp.stdout

    cp = t.verify("--repair")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert findings(cp.stdout) == expected, cp.stdout
    assert cp.stdout.count("; repaired") == 6
    assert "6 findings, 6 repaired" in cp.stdout

    cp = t.verify()
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "0 findings" in cp.stdout

    # Redis holds L3's bytes again, and reads through a fresh mount are right
    assert t.redis("HGET", t.ekey("a/b/three.json"), "d") == "[3]"
    assert t.redis("GET", t.tkey("")) == t.m.getfattr(t.m.mnt, "user.tierfs.merkle")
    t.m.remount()
    for rel, data in FILES.items():
        with open(t.m.path(rel), "rb") as f:
            assert f.read() == data, rel


def test_stale_entry_is_reported(tree):
    """An entry of an older version (what a batch Redis missed leaves
    behind) is stale, and --repair brings the current one."""
    t = tree
    backup = f"{t.m.redis_prefix}backup"
    assert t.redis("COPY", t.ekey("top.json"), backup) == "1"
    write(t.m.path("top.json"), b'{"top": false}')
    assert len(t.m.getfattr(t.m.mnt, "user.tierfs.merkle")) == 64
    version = int(t.m.getfattr(t.m.path("top.json"), "user.tierfs.version"))
    assert t.redis("COPY", backup, t.ekey("top.json"), "REPLACE") == "1"
    t.redis("DEL", backup)
    cp = t.verify()
    assert cp.returncode == 1
    assert findings(cp.stdout) == {("stale item", "/top.json")}, cp.stdout
    assert f"version {version - 1}, L3 has {version}" in cp.stdout
    cp = t.verify("--repair")
    assert "1 findings, 1 repaired" in cp.stdout
    assert t.redis("HGET", t.ekey("top.json"), "d") == '{"top": false}'
    assert t.verify().returncode == 0


def test_orphans_are_found_and_dropped(tree):
    """Keys of inodes L3's tree has not (or has as the other kind): what
    deletes Redis missed leave behind. Found by the full walk only,
    deleted by --repair; other trees' keys (another prefix) are left
    alone."""
    t = tree
    p = t.m.redis_prefix
    t.redis("HSET", f"{p}e:999999", "m", "x", "d", "y")          # no such inode
    t.redis("SET", f"{p}t:888888", "0" * 64)                    # no such inode
    t.redis("SET", t.tkey("top.json"), "0" * 64)                # a file is no directory
    t.redis("HSET", t.ekey("a"), "m", "x", "d", "y")            # a directory is no file
    other = f"other{p}e:999999"
    t.redis("SET", other, "not ours")
    try:
        cp = t.verify()
        assert cp.returncode == 1, cp.stdout + cp.stderr
        lines = [l for l in cp.stdout.splitlines() if l.startswith("orphan")]
        assert sorted(lines) == sorted([
            "orphan item: (not in L3) (inode 999999): redis holds an entry of no file of L3's tree",
            f"orphan item: (not in L3) (inode {t.ino['a']}): redis holds an entry of no file of L3's tree",
            "orphan tree hash: (not in L3) (inode 888888): redis holds a hash of no directory of L3's tree",
            f"orphan tree hash: (not in L3) (inode {t.ino['top.json']}): redis holds a hash of no directory of L3's tree",
        ]), cp.stdout
        assert "4 findings" in cp.stdout
        assert t.verify("--quick").returncode == 0   # quick trusts the mirror
        cp = t.verify("--repair")
        assert "4 findings, 4 repaired" in cp.stdout, cp.stdout
        assert t.verify().returncode == 0
        for key in (f"{p}e:999999", f"{p}t:888888", t.tkey("top.json"), t.ekey("a")):
            assert t.redis("EXISTS", key) == "0", key
        # the file's own entry and the directory's own hash stayed
        assert t.redis("EXISTS", t.ekey("top.json")) == "1"
        assert t.redis("EXISTS", t.tkey("a")) == "1"
        assert t.redis("GET", other) == "not ours"
    finally:
        t.redis("DEL", other)


def test_corrupt_content_is_never_served(tree):
    """Even before a repair, a read does not return bytes from Redis that
    do not match the item's hash: it falls through to L3."""
    t = tree
    t.redis("HSET", t.ekey("a/b/four.bin"), "d", "FOUR" * 1000)
    t.m.remount()
    with open(t.m.path("a/b/four.bin"), "rb") as f:
        assert f.read() == FILES["a/b/four.bin"]
    assert "redis holds corrupt content" in t.m.stderr_text()
    # the read-through wrote L3's bytes back
    assert hashlib.sha256(t.redis("HGET", t.ekey("a/b/four.bin"), "d").encode()).digest() == \
        hashlib.sha256(FILES["a/b/four.bin"]).digest()


def test_quick_trusts_the_mirror(tree):
    """--quick descends only where a directory's mirrored hash differs: it
    finds an item below such a directory, and does not look below one in
    step."""
    t = tree
    t.redis("DEL", t.ekey("c/five.json"))    # below c, whose hash stays right
    t.redis("DEL", t.ekey("a/b/four.bin"))
    t.redis("SET", t.tkey("a/b"), "f" * 64)
    t.redis("SET", t.tkey("a"), "e" * 64)
    t.redis("SET", t.tkey(""), "d" * 64)
    cp = t.verify("--quick")
    assert cp.returncode == 1
    assert findings(cp.stdout) == {
        ("tree hash differs", "/"),
        ("tree hash differs", "/a"),
        ("tree hash differs", "/a/b"),
        ("missing item", "/a/b/four.bin"),
    }, cp.stdout
    assert "(quick)" in cp.stdout
    cp = t.verify()
    assert ("missing item", "/c/five.json") in findings(cp.stdout)


def test_progress_and_errors(tree):
    t = tree
    cp = t.verify("--progress")
    assert cp.returncode == 0
    assert "tierfs verify: " in cp.stderr and " entries, 0 findings" in cp.stderr
    cp = run([str(TIERFS_BIN), "verify", f"--postgres={t.m.pg.uri}"], check=False)
    assert cp.returncode == 2 and "--redis" in cp.stderr
    cp = run([str(TIERFS_BIN), "verify", f"--postgres={t.m.pg.uri}",
              "--redis=redis://127.0.0.1:1"], check=False)
    assert cp.returncode == 2 and "cannot open" in cp.stderr
    cp = run([str(TIERFS_BIN), "verify", "--bogus"], check=False)
    assert cp.returncode == 2
    # a SQLite store that does not exist is not created empty
    missing = t.m.base / "no-such.db"
    cp = run([str(TIERFS_BIN), "verify", f"--sqlite={missing}", f"--redis={t.url}"],
             check=False)
    assert cp.returncode == 2 and "No such file" in cp.stderr, cp.stderr
    assert not missing.exists()
    # no store named: not the default SQLite file, which Redis never cached
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFS_")}
    env["XDG_DATA_HOME"] = str(t.m.base / "xdg")
    cp = run([str(TIERFS_BIN), "verify", f"--redis={t.url}"], check=False, env=env)
    assert cp.returncode == 2 and "name the store" in cp.stderr, cp.stderr
    assert not (t.m.base / "xdg" / "tierfs").exists() or \
        not any((t.m.base / "xdg" / "tierfs").iterdir())


def test_usage():
    cp = run([str(TIERFS_BIN), "verify", "--help"], check=False)
    assert cp.returncode == 0 and cp.stdout.startswith("usage: tierfs verify")
    cp = run([str(TIERFS_BIN), "verify", "--sqlite=/nonexistent.db", "--redis=redis://x",
              "junk"], check=False)
    assert cp.returncode == 2 and "unknown argument 'junk'" in cp.stderr, cp.stderr


@pytest.mark.skipif(not os.environ.get("TIERFS_TEST_REDIS"),
                    reason="TIERFS_TEST_REDIS is unset (scripts/test.sh starts a private Redis)")
def test_sqlite_store_and_default_prefix(tmp_path):
    """L3 in SQLite, Redis under the default prefix (no -o redis_prefix)."""
    url = os.environ["TIERFS_TEST_REDIS"]
    m = TierfsMount(tmp_path, options=[f"redis={url}"])
    m.start()
    try:
        os.mkdir(m.path("d"))
        write(m.path("d", "f.json"), b'{"f": 1}')
        write(m.path("g.bin"), b"g")
        assert len(m.getfattr(m.mnt, "user.tierfs.merkle")) == 64
        ino = os.stat(m.path("d", "f.json")).st_ino
        m.unmount()
        verify = [str(TIERFS_BIN), "verify", f"--sqlite={m.db}", f"--redis={url}"]
        cp = run(verify, check=False)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert "checked 2 directories and 2 files: 0 findings" in cp.stdout
        run(["redis-cli", "-u", url, "DEL", f"tierfs:e:{ino}"])
        cp = run(verify, check=False)
        assert cp.returncode == 1
        assert findings(cp.stdout) == {("missing item", "/d/f.json")}, cp.stdout
    finally:
        if m.proc is not None:
            m.unmount()
        redis_drop_prefix(url, "tierfs:")
