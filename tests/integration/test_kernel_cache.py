"""The kernel caches what tierfs shows for long: names and attributes (the
entry and attribute timeouts), directory listings (kept across opens), and
on a read-only mount file pages across opens, with no open, flush or
release reaching the daemon. These tests check that the caches never show
a stale state: this mount's own changes show at once, and another mount's
changes reach them through the change feed.

The mounts use kernel timeouts of ten minutes, so a change can reach a
cache only through the kernel's own bookkeeping or a notification the feed
causes, never by a timeout running out. Waits poll with a deadline, as in
test_sharing.py.
"""

import errno
import json
import os
import subprocess

import pytest

from conftest import TIERFS_BIN, fuse_unavailable_reason, run, wait_for
from test_sharing import read, synced, write

pytestmark = pytest.mark.skipif(fuse_unavailable_reason() is not None,
                                reason=fuse_unavailable_reason() or "")

LONG = ["entry_timeout=600", "attr_timeout=600"]
VISIBLE = 10.0


def ls(path):
    return sorted(os.listdir(path))


def metric(m, name):
    """The value of @name (a full name with labels, or one without) in
    @m's .tierfs/metrics."""
    with open(m.path(".tierfs", "metrics")) as f:
        for line in f:
            if line.startswith(name + " "):
                return float(line.split()[-1])
    raise AssertionError(f"{name} is not in {m.mnt}/.tierfs/metrics")


def l3_calls(m, op):
    """How many times @m's engine asked L3 for @op (its metrics)."""
    want = f'tierfs_tier_calls_total{{tier="l3",op="{op}"}} '
    with open(m.path(".tierfs", "metrics")) as f:
        for line in f:
            if line.startswith(want):
                return int(line.split()[-1])
    raise AssertionError(f"{want} is not in {m.mnt}/.tierfs/metrics")


def listed_by_kernel(m, path):
    """Tells whether a listing of @path is served by the kernel: listed
    twice, the second time the engine does not list L3. (Waits while
    records of changes made before still reach @m through the feed and
    drop the listing.)"""
    def twice():
        first = ls(path)
        before = l3_calls(m, "list")
        return ls(path) == first and l3_calls(m, "list") == before
    return wait_for(twice, VISIBLE)


# --- listings ---------------------------------------------------------------


def test_a_cached_listing_shows_this_mounts_own_changes_at_once(tierfs_factory):
    m = tierfs_factory(options=LONG)
    os.makedirs(m.path("d", "sub"))
    os.mkdir(m.path("e"))
    write(m.path("d", "a.bin"), b"a")
    write(m.path("d", "b.bin"), b"b")
    assert ls(m.path("d")) == ["a.bin", "b.bin", "sub"]
    assert listed_by_kernel(m, m.path("d")), "the listing is not cached"

    write(m.path("d", "c.bin"), b"c")
    assert ls(m.path("d")) == ["a.bin", "b.bin", "c.bin", "sub"]
    os.unlink(m.path("d", "a.bin"))
    assert ls(m.path("d")) == ["b.bin", "c.bin", "sub"]
    os.rename(m.path("d", "b.bin"), m.path("d", "b2.bin"))
    assert ls(m.path("d")) == ["b2.bin", "c.bin", "sub"]
    assert ls(m.path("e")) == []
    os.rename(m.path("d", "b2.bin"), m.path("e", "b2.bin"))
    assert ls(m.path("d")) == ["c.bin", "sub"]
    assert ls(m.path("e")) == ["b2.bin"]
    os.mkdir(m.path("d", "new"))
    os.rmdir(m.path("d", "sub"))
    assert ls(m.path("d")) == ["c.bin", "new"]
    os.rename(m.path("d", "new"), m.path("e", "new"))
    assert ls(m.path("d")) == ["c.bin"]
    assert ls(m.path("e")) == ["b2.bin", "new"]
    # a rename over an existing name
    write(m.path("e", "x.bin"), b"x")
    assert ls(m.path("e")) == ["b2.bin", "new", "x.bin"]
    os.rename(m.path("e", "x.bin"), m.path("e", "b2.bin"))
    assert ls(m.path("e")) == ["b2.bin", "new"]
    # and what ls -l shows: the new sizes
    write(m.path("d", "c.bin"), b"longer")
    assert {e.name: e.stat().st_size for e in os.scandir(m.path("d"))} == {"c.bin": 6}


def two_mounts(make):
    a = make(options=LONG)
    return a, make(share=a, options=LONG)


def settles(path, want):
    """Waits until the listing of @path is @want; returns it (None while
    @path is not there)."""
    def listing():
        try:
            return ls(path)
        except FileNotFoundError:
            return None
    wait_for(lambda: listing() == want, VISIBLE)
    return listing()


def test_another_mounts_changes_reach_a_cached_listing(tierfs_factory):
    a, b = two_mounts(tierfs_factory)
    os.makedirs(a.path("d"))
    os.mkdir(a.path("e"))
    for name in ("keep.bin", "gone.bin", "renamed.bin", "moved.bin", "over.bin"):
        write(a.path("d", name), name.encode())
    want_d = ["gone.bin", "keep.bin", "moved.bin", "over.bin", "renamed.bin"]
    synced(a)
    assert settles(b.path("d"), want_d) == want_d
    assert settles(b.path("e"), []) == []
    assert listed_by_kernel(b, b.path("d")), "B's listing is not cached"

    write(a.path("d", "new.bin"), b"new")
    want_d = sorted(want_d + ["new.bin"])
    assert settles(b.path("d"), want_d) == want_d, "a create elsewhere"

    os.unlink(a.path("d", "gone.bin"))
    want_d.remove("gone.bin")
    assert settles(b.path("d"), want_d) == want_d, "an unlink elsewhere"

    os.rename(a.path("d", "renamed.bin"), a.path("d", "renamed2.bin"))
    want_d = sorted(set(want_d) - {"renamed.bin"} | {"renamed2.bin"})
    assert settles(b.path("d"), want_d) == want_d, "a rename elsewhere"

    # B lists e again (cached empty), then A moves a file there
    assert ls(b.path("e")) == []
    os.rename(a.path("d", "moved.bin"), a.path("e", "moved.bin"))
    want_d.remove("moved.bin")
    assert settles(b.path("d"), want_d) == want_d, "a move's source"
    assert settles(b.path("e"), ["moved.bin"]) == ["moved.bin"], "a move's target"

    os.rename(a.path("d", "over.bin"), a.path("e", "moved.bin"))
    want_d.remove("over.bin")
    assert settles(b.path("d"), want_d) == want_d, "a move over a name"
    assert read(b.path("e", "moved.bin")) is not None

    os.mkdir(a.path("d", "sub"))
    want_d = sorted(want_d + ["sub"])
    assert settles(b.path("d"), want_d) == want_d, "a mkdir elsewhere"
    os.rmdir(a.path("d", "sub"))
    want_d.remove("sub")
    assert settles(b.path("d"), want_d) == want_d, "an rmdir elsewhere"
    # B listed while the feed brought the changes: the kernel caches the
    # listing again (a listing whose cache the feed dropped while it was
    # being filled would stay uncached)
    assert listed_by_kernel(b, b.path("d"))
    assert listed_by_kernel(b, b.path("e"))


def test_an_entry_listed_but_never_looked_up_goes_from_the_listing(tierfs_factory):
    """Past the first page the kernel lists without attributes, so B holds
    no node for most entries of a big directory: a record saying one is
    gone does not say where it was; the directory's own record (its times)
    drops the listing."""
    a, b = two_mounts(tierfs_factory)
    os.mkdir(a.path("big"))
    names = [f"entry-{i:04d}.bin" for i in range(300)]
    for name in names:
        with open(a.path("big", name), "wb") as f:
            f.write(b"x")
    synced(a)
    assert settles(b.path("big"), names) == names
    assert listed_by_kernel(b, b.path("big"))
    victim = names[-3]
    os.unlink(a.path("big", victim))
    names.remove(victim)
    assert settles(b.path("big"), names) == names
    assert listed_by_kernel(b, b.path("big"))


# B's own changes wait in its queue (not committed) while A's arrive.
QUEUED = LONG + ["batch_flush_ms=600000", "batch_flush_count=100000",
                 "batch_flush_bytes=100000000"]


def put(path, data):
    """Writes @path without fsync: the change stays in the mount's queue."""
    with open(path, "wb") as f:
        f.write(data)


def test_a_listing_takes_other_mounts_changes_while_own_ones_wait(tierfs_factory):
    """While B has an uncommitted change in d, A's record of d itself is
    not applied on B (B's own change commits later and wins); the records
    of the entries A made and removed in d must still drop B's listing,
    though B never looked those names up."""
    a = tierfs_factory(options=LONG)
    b = tierfs_factory(share=a, options=QUEUED)
    os.mkdir(a.path("d"))
    names = [f"old-{i:03d}.bin" for i in range(300)]
    for name in names:
        put(a.path("d", name), b"o")
    synced(a)
    assert settles(b.path("d"), names) == names
    put(b.path("d", "mine.bin"), b"mine")  # d is now pending on B
    names = sorted(names + ["mine.bin"])
    assert ls(b.path("d")) == names
    assert listed_by_kernel(b, b.path("d"))

    write(a.path("d", "theirs.bin"), b"theirs")
    names = sorted(names + ["theirs.bin"])
    assert settles(b.path("d"), names) == names, "a create elsewhere"
    # an entry B listed but never looked up (past the first page)
    os.unlink(a.path("d", "old-290.bin"))
    synced(a)
    names.remove("old-290.bin")
    assert settles(b.path("d"), names) == names, "an unlink elsewhere"
    synced(b)
    assert settles(a.path("d"), names) == names


# --- read-only mounts -------------------------------------------------------


def requests(m, op):
    """How many @op requests @m's daemon logged (-o debug)."""
    return m.stderr_text().count(f"opcode: {op} ")


def test_a_read_only_mount_keeps_no_open_state_and_refuses_changes(tierfs_factory):
    a = tierfs_factory(options=LONG)
    os.mkdir(a.path("d"))
    files = {f"f{i}.bin": bytes([65 + i]) * (1000 * i + 1) for i in range(5)}
    for name, data in files.items():
        write(a.path("d", name), data)
    write(a.path("d", "x.json"), b'{"k": 1}')
    big = [f"entry-{i:04d}.bin" for i in range(500)]  # many readdir calls
    os.makedirs(a.path("d", "big", "deeper"))
    for name in big:
        with open(a.path("d", "big", name), "wb") as f:
            f.write(name.encode())
    synced(a)
    b = tierfs_factory(share=a, options=LONG + ["ro", "debug"])
    for _ in range(3):
        for name, data in files.items():
            assert read(b.path("d", name)) == data
        walked = {os.path.relpath(os.path.join(top, n), b.path("d"))
                  for top, dirs, names in os.walk(b.path("d")) for n in dirs + names}
        assert walked == {*files, "x.json", "big", "big/deeper",
                          *(f"big/{n}" for n in big)}
        assert ls(b.path("d", "big")) == sorted(big + ["deeper"])
    # one open answered ENOSYS, after which the kernel sends none, nor a
    # flush or release; the pages stay cached across opens. Likewise for
    # directories, whose listings (several calls for big/) stay cached.
    assert requests(b, "OPEN") == 1, requests(b, "OPEN")
    assert requests(b, "FLUSH") <= 1
    assert requests(b, "RELEASE") == 0
    assert requests(b, "OPENDIR") == 1, requests(b, "OPENDIR")
    assert requests(b, "RELEASEDIR") == 0
    assert requests(b, "READDIRPLUS") + requests(b, "READDIR") >= 4
    reads = requests(b, "READ")
    assert reads >= len(files)
    for name, data in files.items():
        assert read(b.path("d", name)) == data
    assert requests(b, "READ") == reads, "pages were not kept across opens"

    # every change is refused, and A's store is untouched
    def erofs(fn, *args):
        with pytest.raises(OSError) as e:
            fn(*args)
        assert e.value.errno == errno.EROFS, (fn, e.value)
    erofs(os.open, b.path("d", "f1.bin"), os.O_WRONLY)
    erofs(os.open, b.path("d", "f1.bin"), os.O_RDONLY | os.O_TRUNC)
    erofs(os.open, b.path("d", "new.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    erofs(os.unlink, b.path("d", "f1.bin"))
    erofs(os.mkdir, b.path("d", "sub"))
    erofs(os.rmdir, b.path("d"))
    erofs(os.rename, b.path("d", "f1.bin"), b.path("d", "g.bin"))
    erofs(os.chmod, b.path("d", "f1.bin"), 0o600)
    erofs(os.truncate, b.path("d", "f1.bin"), 0)
    erofs(os.setxattr, b.path("d", "f1.bin"), "user.tierfs.state", b"x")
    erofs(os.utime, b.path("d", "f1.bin"), (1, 1))
    assert ls(a.path("d")) == sorted([*files, "x.json", "big"])
    assert read(a.path("d", "f1.bin")) == files["f1.bin"]
    # fsync of a read-only descriptor succeeds
    fd = os.open(b.path("d", "f1.bin"), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    assert subprocess.run(["grep", "-r", "-l", "BBB", b.path("d")], capture_output=True,
                          text=True).stdout.split() == [str(b.path("d", "f1.bin"))]


def test_a_read_only_mount_reads_what_another_mount_writes(tierfs_factory):
    a = tierfs_factory(options=LONG)
    os.mkdir(a.path("d"))
    write(a.path("d", "same.bin"), b"version-1")
    write(a.path("d", "grows.bin"), b"short")
    write(a.path("d", "gone.bin"), b"gone")
    synced(a)
    b = tierfs_factory(share=a, options=LONG + ["ro"])
    assert read(b.path("d", "same.bin")) == b"version-1"  # in B's page cache
    assert read(b.path("d", "grows.bin")) == b"short"
    assert read(b.path("d", "gone.bin")) == b"gone"
    assert ls(b.path("d")) == ["gone.bin", "grows.bin", "same.bin"]

    write(a.path("d", "same.bin"), b"version-2")  # the same size
    assert wait_for(lambda: read(b.path("d", "same.bin")) == b"version-2", VISIBLE), \
        read(b.path("d", "same.bin"))
    write(a.path("d", "grows.bin"), b"much longer than before" * 300)
    assert wait_for(lambda: read(b.path("d", "grows.bin")) == b"much longer than before" * 300,
                    VISIBLE)
    os.unlink(a.path("d", "gone.bin"))
    write(a.path("d", "new.bin"), b"new")
    assert settles(b.path("d"), ["grows.bin", "new.bin", "same.bin"]) == \
        ["grows.bin", "new.bin", "same.bin"]
    assert read(b.path("d", "gone.bin")) is None
    assert read(b.path("d", "new.bin")) == b"new"


def test_control_files_work_on_a_read_only_mount(tierfs_factory):
    a = tierfs_factory(options=LONG)
    write(a.path("f.bin"), b"f")
    synced(a)
    b = tierfs_factory(share=a, options=LONG + ["ro"])
    assert read(b.path("f.bin")) == b"f"  # the first open: no more opens after it
    assert ls(b.path(".tierfs")) == ["metrics", "status"]
    assert ".tierfs" not in os.listdir(b.mnt)
    for _ in range(20):
        status = json.loads(read(b.path(".tierfs", "status")))
        assert status["state"] in ("ok", "degraded"), status
        text = read(b.path(".tierfs", "metrics")).decode()
        assert text.endswith("\n") and "tierfs_l3_up 1\n" in text
        assert os.stat(b.path(".tierfs", "metrics")).st_size >= len(text) // 2
    # what they say follows the engine: content B reads enters its L1
    before = metric(b, "tierfs_l1_items")
    for i in range(3):
        write(a.path(f"g{i}.bin"), b"g")
    synced(a)
    for i in range(3):
        assert wait_for(lambda: read(b.path(f"g{i}.bin")) == b"g", VISIBLE)
    assert wait_for(lambda: metric(b, "tierfs_l1_items") >= before + 3, VISIBLE)
    assert run([str(TIERFS_BIN), "status", str(b.mnt)]).returncode == 0


def test_a_read_only_open_on_a_read_write_mount_sends_no_flush(tierfs_factory):
    """A close publishes what its open wrote; a read-only open wrote
    nothing, so its close sends RELEASE only. Opens that may write, and
    O_RDONLY|O_TRUNC (which truncates), still flush."""
    m = tierfs_factory(options=LONG + ["debug"])
    write(m.path("f.json"), b'{"k": 1}')
    flushes, releases = requests(m, "FLUSH"), requests(m, "RELEASE")
    for _ in range(5):
        assert read(m.path("f.json")) == b'{"k": 1}'
    assert requests(m, "FLUSH") == flushes
    assert wait_for(lambda: requests(m, "RELEASE") >= releases + 5, VISIBLE)
    fd = os.open(m.path("f.json"), os.O_RDWR)
    os.close(fd)
    assert requests(m, "FLUSH") == flushes + 1
    fd = os.open(m.path("f.json"), os.O_RDONLY | os.O_TRUNC)
    os.close(fd)
    assert requests(m, "FLUSH") == flushes + 2
    assert read(m.path("f.json")) == b""
    write(m.path("f.json"), b'{"k": 2}')
    assert requests(m, "FLUSH") == flushes + 3
    synced(m)
    assert read(m.path("f.json")) == b'{"k": 2}'


@pytest.mark.sqlite_only
def test_the_last_of_ro_and_rw_wins(tierfs_factory):
    m = tierfs_factory(options=["ro", "rw"])
    write(m.path("f.bin"), b"f")
    m.unmount()
    m.options = ["rw", "ro"]
    m.start()
    assert read(m.path("f.bin")) == b"f"
    with pytest.raises(OSError) as e:
        write(m.path("g.bin"), b"g")
    assert e.value.errno == errno.EROFS
