"""Several mounts share one store: what one mount does, the others see.

Each test mounts one store two or three times (the same SQLite file, or
the same PostgreSQL store and Redis prefix), each mount with a write-ahead
log of its own, and with kernel timeouts of ten minutes: a change can only
reach another mount's kernel through the change feed (L3's change records
and the kernel notifications they cause), never by a timeout running out.
Every check waits for its condition with a deadline (VISIBLE seconds),
polling; the deadline is far above the propagation the feed gives (see
docs/benchmarks.md), so that a loaded machine does not fail a test.
"""

import errno
import json
import os
import random
import subprocess
import threading

import pytest

from conftest import TIERFS_BIN, fuse_unavailable_reason, run, wait_for
from test_items_cmd import Cli

pytestmark = pytest.mark.skipif(fuse_unavailable_reason() is not None,
                                reason=fuse_unavailable_reason() or "")

LONG = ["entry_timeout=600", "attr_timeout=600"]
VISIBLE = 10.0


def mounts(make, n=2):
    a = make(options=LONG)
    return [a] + [make(share=a, options=LONG) for _ in range(n - 1)]


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def sees(path, content):
    """Waits until @path reads as @content (None: absent); returns it."""
    got = wait_for(lambda: read(path) == content, VISIBLE)
    return got and read(path) == content


def gone(path):
    return wait_for(lambda: not os.path.lexists(path), VISIBLE)


def synced(m):
    """Persists everything @m holds (fsync of the root commits the queue)."""
    fd = os.open(m.mnt, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def xattr(path, name):
    try:
        return os.getxattr(path, name)
    except OSError:
        return None


def test_the_issue_repro_a_file_made_on_one_mount_is_seen_on_the_other(tierfs_factory):
    a, b = mounts(tierfs_factory)
    os.mkdir(a.path("user"))
    write(a.path("user", "1.json"), b'{"v":1}')
    assert sees(b.path("user", "1.json"), b'{"v":1}')
    write(a.path("user", "1.json"), b'{"v":2}')
    assert sees(b.path("user", "1.json"), b'{"v":2}')
    # B writes into the directory A made
    write(b.path("user", "2.json"), b'{"v":"b"}')
    assert sees(a.path("user", "2.json"), b'{"v":"b"}')
    assert sorted(os.listdir(a.path("user"))) == ["1.json", "2.json"]
    assert sorted(os.listdir(b.path("user"))) == ["1.json", "2.json"]


def test_a_negative_lookup_does_not_hide_a_later_create(tierfs_factory):
    a, b = mounts(tierfs_factory)
    assert not os.path.exists(b.path("late.json"))  # cached as absent
    write(a.path("late.json"), b"[1]")
    assert sees(b.path("late.json"), b"[1]")


def test_a_longer_rewrite_is_read_whole_after_an_earlier_read(tierfs_factory):
    """The case a peer's users reported: B has read the file; A rewrites it
    longer; B's next read returns all of the new bytes, not the old size."""
    a, b = mounts(tierfs_factory)
    write(a.path("f.json"), b'"short"')
    assert sees(b.path("f.json"), b'"short"')
    assert os.stat(b.path("f.json")).st_size == 7
    longer = b'"' + b"x" * 5000 + b'"'
    write(a.path("f.json"), longer)
    assert sees(b.path("f.json"), longer)
    assert os.stat(b.path("f.json")).st_size == len(longer)


def test_metadata_changes_are_seen(tierfs_factory):
    a, b = mounts(tierfs_factory)
    write(a.path("m.json"), b"{}")
    assert sees(b.path("m.json"), b"{}")
    os.chmod(a.path("m.json"), 0o600)
    os.setxattr(a.path("m.json"), "user.color", b"blue")
    os.utime(a.path("m.json"), ns=(1_000_000_000, 2_000_000_123))
    synced(a)
    assert wait_for(lambda: os.stat(b.path("m.json")).st_mode & 0o777 == 0o600, VISIBLE)
    assert wait_for(lambda: xattr(b.path("m.json"), "user.color") == b"blue", VISIBLE)
    assert wait_for(lambda: os.stat(b.path("m.json")).st_mtime_ns == 2_000_000_123, VISIBLE)


def test_renames_of_files_and_directories_are_seen(tierfs_factory):
    a, b = mounts(tierfs_factory)
    os.makedirs(a.path("d", "e"))
    write(a.path("d", "e", "x.json"), b"1")
    write(a.path("f.json"), b"2")
    assert sees(b.path("d", "e", "x.json"), b"1")
    assert sees(b.path("f.json"), b"2")
    os.rename(a.path("f.json"), a.path("d", "g.json"))
    os.rename(a.path("d"), a.path("moved"))
    synced(a)
    assert gone(b.path("f.json"))
    assert gone(b.path("d"))
    assert sees(b.path("moved", "g.json"), b"2")
    assert sees(b.path("moved", "e", "x.json"), b"1")


def test_a_move_into_a_directory_the_other_mount_never_saw(tierfs_factory):
    """B holds the file (it is open); A moves it into a directory B has
    never looked up: B follows it there and its writes land there."""
    a, b = mounts(tierfs_factory)
    write(a.path("f.json"), b'"one"')
    assert sees(b.path("f.json"), b'"one"')
    fd = os.open(b.path("f.json"), os.O_RDWR)
    try:
        os.makedirs(a.path("new", "deep"))
        os.rename(a.path("f.json"), a.path("new", "deep", "f.json"))
        synced(a)
        assert gone(b.path("f.json"))
        assert sees(b.path("new", "deep", "f.json"), b'"one"')
        os.ftruncate(fd, 0)
        os.pwrite(fd, b'"two"', 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert sees(a.path("new", "deep", "f.json"), b'"two"')
    assert not os.path.exists(a.path("f.json"))


def test_unlink_and_rmdir_are_seen(tierfs_factory):
    a, b = mounts(tierfs_factory)
    os.mkdir(a.path("d"))
    write(a.path("d", "x.json"), b"1")
    assert sees(b.path("d", "x.json"), b"1")
    os.unlink(a.path("d", "x.json"))
    os.rmdir(a.path("d"))
    synced(a)
    assert gone(b.path("d", "x.json"))
    assert gone(b.path("d"))
    assert os.listdir(b.mnt) == []


def test_a_name_deleted_and_made_again_is_the_new_file(tierfs_factory):
    a, b = mounts(tierfs_factory)
    write(a.path("r.json"), b'"old"')
    assert sees(b.path("r.json"), b'"old"')
    old_ino = os.stat(b.path("r.json")).st_ino
    os.unlink(a.path("r.json"))
    write(a.path("r.json"), b'"new"')
    assert sees(b.path("r.json"), b'"new"')
    assert os.stat(b.path("r.json")).st_ino != old_ino
    assert os.stat(b.path("r.json")).st_ino == os.stat(a.path("r.json")).st_ino


def test_versions_are_the_same_on_every_mount(tierfs_factory):
    a, b, c = mounts(tierfs_factory, 3)
    for i in range(3):
        write(a.path("v.json"), b"%d" % i)
    write(b.path("w.json"), b"0")
    assert sees(c.path("v.json"), b"2")
    assert sees(c.path("w.json"), b"0")

    def versions():
        return {xattr(m.path("v.json"), "user.tierfs.version") for m in (a, b, c)}
    assert wait_for(lambda: len(versions()) == 1, VISIBLE), versions()
    # the one writer goes on from where the store is
    write(b.path("v.json"), b"9")
    assert sees(a.path("v.json"), b"9")
    assert wait_for(lambda: len(versions()) == 1, VISIBLE), versions()
    v = int(versions().pop())
    assert v >= 4


def test_same_name_created_on_two_mounts_ends_as_one_file(tierfs_factory):
    a, b = mounts(tierfs_factory)
    os.mkdir(a.path("d"))
    assert wait_for(lambda: os.path.isdir(b.path("d")), VISIBLE)
    write(a.path("d", "same.json"), b'"a"')
    write(b.path("d", "same.json"), b'"b"')
    synced(a)
    synced(b)

    def agreed():
        ra, rb = read(a.path("d", "same.json")), read(b.path("d", "same.json"))
        return ra is not None and ra == rb
    assert wait_for(agreed, VISIBLE)
    assert read(a.path("d", "same.json")) in (b'"a"', b'"b"')
    assert os.listdir(a.path("d")) == ["same.json"]
    assert os.listdir(b.path("d")) == ["same.json"]


def test_a_racing_rmdir_is_dropped_and_counted(tierfs_factory):
    """B removes a directory it sees empty while A, before B's batch
    commits, puts a file in it: the rmdir is dropped at commit, the file
    stays, and the race is counted."""
    a, b = mounts(tierfs_factory)
    os.mkdir(a.path("d"))
    synced(a)
    assert wait_for(lambda: os.path.isdir(b.path("d")), VISIBLE)
    # B's rmdir waits in B's queue; A's create commits first
    b_fd = os.open(b.mnt, os.O_RDONLY)
    os.rmdir(b.path("d"))
    write(a.path("d", "kept.json"), b'"kept"')
    os.fsync(b_fd)
    os.close(b_fd)
    assert sees(b.path("d", "kept.json"), b'"kept"')
    assert read(a.path("d", "kept.json")) == b'"kept"'
    metrics = (b.path(".tierfs", "metrics"))
    text = read(metrics).decode() + read(a.path(".tierfs", "metrics")).decode()
    races = sum(int(l.split()[-1]) for l in text.splitlines()
                if l.startswith("tierfs_races_total"))
    assert races >= 1, text
    # the mount whose rmdir was dropped lists it in its status
    status = json.loads(run([str(TIERFS_BIN), "status", "--json", str(b.mnt)],
                            check=False).stdout)
    assert status["races"]["count"] >= 1, status
    assert any("removal of a directory" in r["what"]
               for r in status["races"]["recent"]), status
    text = run([str(TIERFS_BIN), "status", str(b.mnt)], check=False).stdout
    assert "races with other writers, settled by L3" in text, text


def test_three_mounts_converge_on_one_merkle_hash(tierfs_factory):
    ms = mounts(tierfs_factory, 3)
    rng = random.Random(11)
    for i in range(60):
        m = rng.choice(ms)
        d = m.path(f"d{rng.randrange(4)}")
        os.makedirs(d, exist_ok=True)
        write(d / f"f{rng.randrange(10)}.json", b'{"i":%d}' % i)
    for m in ms:
        synced(m)

    def hashes():
        out = set()
        for m in ms:
            out.add(run([str(TIERFS_BIN), "hash", str(m.mnt)]).stdout.split()[0])
            out.add(xattr(m.mnt, "user.tierfs.merkle").decode())
        return out
    assert wait_for(lambda: len(hashes()) == 1, VISIBLE), hashes()


def test_a_mount_killed_while_others_write_loses_nothing_of_theirs(tierfs_factory):
    a, b, c = mounts(tierfs_factory, 3)
    write(a.path("before.json"), b"1")
    assert sees(c.path("before.json"), b"1")
    c.kill9()
    for i in range(20):
        write(a.path(f"a{i}.json"), b"%d" % i)
        write(b.path(f"b{i}.json"), b"%d" % i)
    c.start()
    for i in range(20):
        assert sees(c.path(f"a{i}.json"), b"%d" % i)
        assert sees(c.path(f"b{i}.json"), b"%d" % i)


def test_eight_mounts_writing_at_once(tierfs_factory):
    ms = mounts(tierfs_factory, 8)
    errors = []

    def writer(k, m):
        try:
            os.makedirs(m.path(f"w{k}"), exist_ok=True)
            for i in range(10):
                write(m.path(f"w{k}", f"{i}.json"), b'{"k":%d,"i":%d}' % (k, i))
        except OSError as e:
            errors.append((k, e))
    threads = [threading.Thread(target=writer, args=(k, m)) for k, m in enumerate(ms)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for m in ms:
        for k in range(8):
            for i in range(10):
                assert sees(m.path(f"w{k}", f"{i}.json"), b'{"k":%d,"i":%d}' % (k, i))


def test_a_directory_link_count_follows_the_other_mount(tierfs_factory):
    a, b = mounts(tierfs_factory)
    os.mkdir(a.path("d"))
    assert wait_for(lambda: os.path.isdir(b.path("d")), VISIBLE)
    assert os.stat(b.path("d")).st_nlink == 2
    os.mkdir(a.path("d", "s1"))
    os.mkdir(a.path("d", "s2"))
    synced(a)
    assert wait_for(lambda: os.stat(b.path("d")).st_nlink == 4, VISIBLE)
    os.rmdir(a.path("d", "s1"))
    synced(a)
    assert wait_for(lambda: os.stat(b.path("d")).st_nlink == 3, VISIBLE)


def test_a_program_and_a_mount_share_the_store(tierfs_factory, tmp_path):
    """`tierfs put` while a mount runs is seen by the mount; the mount's
    write is seen by `tierfs get`; `tierfs rm` removes it from the mount."""
    (a,) = mounts(tierfs_factory, 1)
    cli = Cli(a, tmp_path)
    assert not os.path.exists(a.path("user", "7.json"))  # cached as absent
    cli("put", "user.7", input=b'{"from":"cli"}')
    assert sees(a.path("user", "7.json"), b'{"from":"cli"}')
    write(a.path("user", "8.json"), b'{"from":"mount"}')
    assert cli("get", "user.8").stdout == b'{"from":"mount"}'
    cli("put", "user.7", input=b'{"from":"cli","v":2}')
    assert sees(a.path("user", "7.json"), b'{"from":"cli","v":2}')
    assert int(xattr(a.path("user", "7.json"), "user.tierfs.version")) == 2
    cli("rm", "user.7")
    assert gone(a.path("user", "7.json"))
    assert sorted(os.listdir(a.path("user"))) == ["8.json"]


def tree_of(m):
    """Every entry reachable from @m's root: {relative path: None for a
    directory, the bytes of a file}."""
    out = {}
    for top, dirs, files in os.walk(m.mnt):
        rel = os.path.relpath(top, m.mnt)
        for d in dirs:
            out[os.path.normpath(os.path.join(rel, d))] = None
        for f in files:
            out[os.path.normpath(os.path.join(rel, f))] = read(os.path.join(top, f))
    return out


def races(*ms):
    text = "".join(read(m.path(".tierfs", "metrics")).decode() for m in ms)
    return sum(int(l.split()[-1]) for l in text.splitlines()
               if l.startswith("tierfs_races_total"))


def converge(ms, files):
    """Waits until every mount of @ms shows one tree, in which the files
    @files ({name: bytes}) are each reachable once from the root, and
    `tierfs hash` of each mount is its root's user.tierfs.merkle; returns
    the tree."""
    def agreed():
        trees = [tree_of(m) for m in ms]
        if any(t != trees[0] for t in trees):
            return False
        found = {os.path.basename(p): v for p, v in trees[0].items() if v is not None}
        return found == files and len(found) == sum(v is not None for v in trees[0].values())

    def hashes():
        out = set()
        for m in ms:
            out.add(run([str(TIERFS_BIN), "hash", str(m.mnt)]).stdout.split()[0])
            out.add(xattr(m.mnt, "user.tierfs.merkle").decode())
        return out
    assert wait_for(agreed, VISIBLE), [tree_of(m) for m in ms]
    assert wait_for(lambda: len(hashes()) == 1, VISIBLE), hashes()
    return tree_of(ms[0])


def slow_pair(make):
    """A, and B whose changes wait in its queue until an fsync commits
    them: B's changes are made before A's are visible to it."""
    a = make(options=LONG)
    b = make(share=a, options=LONG + ["batch_flush_ms=600000"])
    return a, b


def test_opposite_directory_moves_on_two_mounts_converge(tierfs_factory):
    """A moves x into y while B, not knowing, moves y into x. B's batch
    also sets x's times, at the place B knows (the root): the later batch
    puts x back, and both mounts end at one tree with both files."""
    a, b = slow_pair(tierfs_factory)
    os.makedirs(a.path("x"))
    os.makedirs(a.path("y"))
    write(a.path("x", "fx.json"), b'"x"')
    write(a.path("y", "fy.json"), b'"y"')
    assert sees(b.path("x", "fx.json"), b'"x"')
    assert sees(b.path("y", "fy.json"), b'"y"')
    # open directories keep their nodes: a node a record could not place
    # is not forgotten by the kernel meanwhile
    held = [os.open(m.path(d), os.O_RDONLY) for m in (a, b) for d in ("x", "y")]
    try:
        os.rename(b.path("y"), b.path("x", "y"))  # waits in B's queue
        os.rename(a.path("x"), a.path("y", "x"))
        synced(a)
        synced(b)
        tree = converge([a, b], {"fx.json": b'"x"', "fy.json": b'"y"'})
    finally:
        for fd in held:
            os.close(fd)
    assert tree.keys() in ({"x", "x/fx.json", "x/y", "x/y/fy.json"},
                           {"y", "y/fy.json", "y/x", "y/x/fx.json"}), tree


def test_a_move_that_would_close_a_cycle_is_dropped(tierfs_factory):
    """A moves x into y while B, not knowing, moves y into x/w: together
    they would detach x, w and y from the root as a cycle. B's move is
    dropped at commit and counted; B learns it from the feed, and both
    mounts show A's tree."""
    a, b = slow_pair(tierfs_factory)
    os.makedirs(a.path("x", "w"))
    os.makedirs(a.path("y"))
    write(a.path("x", "fx.json"), b'"x"')
    write(a.path("y", "fy.json"), b'"y"')
    assert sees(b.path("x", "fx.json"), b'"x"')
    assert sees(b.path("y", "fy.json"), b'"y"')
    assert wait_for(lambda: os.path.isdir(b.path("x", "w")), VISIBLE)
    held = [os.open(m.path(d), os.O_RDONLY) for m in (a, b) for d in ("x", "y")]
    try:
        os.rename(b.path("y"), b.path("x", "w", "y"))  # waits in B's queue
        os.rename(a.path("x"), a.path("y", "x"))
        synced(a)
        synced(b)
        tree = converge([a, b], {"fx.json": b'"x"', "fy.json": b'"y"'})
    finally:
        for fd in held:
            os.close(fd)
    assert tree.keys() == {"y", "y/fy.json", "y/x", "y/x/fx.json", "y/x/w"}, tree
    assert races(b) >= 1
    assert "close a cycle" in b.stderr_text()


def test_a_write_to_a_file_deleted_elsewhere_puts_it_again(tierfs_factory):
    """B has the file open and writes; A unlinks it; B's fsync commits
    the write after the unlink: the file is back on both mounts, with B's
    content (a write to an entry deleted elsewhere puts it again)."""
    a, b = mounts(tierfs_factory)
    write(a.path("d.json"), b'"old"')
    assert sees(b.path("d.json"), b'"old"')
    fd = os.open(b.path("d.json"), os.O_RDWR)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b'"from b"', 0)
        os.unlink(a.path("d.json"))
        write(a.path("after.json"), b"1")  # B has read the unlink once it sees this
        assert sees(b.path("after.json"), b"1")
        assert sees(a.path("d.json"), None)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert sees(b.path("d.json"), b'"from b"')
    assert sees(a.path("d.json"), b'"from b"')
    assert sorted(os.listdir(a.mnt)) == sorted(os.listdir(b.mnt)) == ["after.json", "d.json"]


@pytest.mark.sqlite_only
def test_a_file_gone_from_the_store_opens_as_absent(tierfs_factory):
    """A file this mount knows, whose row another writer removed before the
    feed said so, opens as absent, not as an I/O error: tierfs answers
    ESTALE and the kernel looks the name up again. A row deleted by hand
    makes that window last (no feed record ever reports it)."""
    import sqlite3
    m = tierfs_factory(options=LONG)
    with open(m.path("x.json"), "wb") as f:
        f.write(b'"x"')
    with open(m.path("y.json"), "wb") as f:
        f.write(b'"y"')
    m.remount()  # empty L1: the content must come from L3
    ino = os.stat(m.path("x.json")).st_ino
    os.stat(m.path("y.json"))
    with sqlite3.connect(str(m.db), isolation_level=None, timeout=30) as db:
        db.execute(f"DELETE FROM contents WHERE ino = {ino}")
        db.execute(f"DELETE FROM entries WHERE ino = {ino}")
    with pytest.raises(FileNotFoundError):
        open(m.path("x.json"), "rb").read()
    assert sorted(os.listdir(m.mnt)) == ["y.json"]
    assert read(m.path("y.json")) == b'"y"'
