"""POSIX behaviour tools look at, through a real mount: a directory's
mtime and ctime follow the entries made, removed and renamed in it, and
persist."""

import os
import shutil
import time

import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

PAST = 1_000_000_000 * 10**9  # 2001-09-09, in ns


def set_past(path):
    os.utime(path, ns=(PAST, PAST))
    assert os.stat(path).st_mtime_ns == PAST


def assert_touched(path, since_ns):
    st = os.stat(path)
    assert st.st_mtime_ns >= since_ns, (st.st_mtime_ns, since_ns)
    assert st.st_ctime_ns >= since_ns, (st.st_ctime_ns, since_ns)
    assert st.st_mtime_ns <= time.time_ns() + 10**9


@pytest.fixture
def mnt(tierfs_factory):
    # every stat reaches the daemon: what is checked is tierfs's answer
    return tierfs_factory(options=["attr_timeout=0", "entry_timeout=0"])


def test_directory_times_follow_its_entries(mnt):
    d, e = mnt.path("d"), mnt.path("e")
    os.mkdir(d)
    os.mkdir(e)
    steps = [
        ("create", lambda: open(os.path.join(d, "f.json"), "w").close(), [d]),
        ("mkdir", lambda: os.mkdir(os.path.join(d, "sub")), [d]),
        ("rename in place", lambda: os.rename(os.path.join(d, "f.json"),
                                              os.path.join(d, "g.json")), [d]),
        ("rename across", lambda: os.rename(os.path.join(d, "g.json"),
                                            os.path.join(e, "g.json")), [d, e]),
        ("unlink", lambda: os.unlink(os.path.join(e, "g.json")), [e]),
        ("rmdir", lambda: os.rmdir(os.path.join(d, "sub")), [d]),
    ]
    for what, op, dirs in steps:
        for x in (d, e):
            set_past(x)
        t0 = time.time_ns()
        op()
        for x in dirs:
            assert_touched(x, t0 - 10**6)
        for x in {d, e} - set(dirs):
            assert os.stat(x).st_mtime_ns == PAST, what
    # the times are stored, not made up
    set_past(e)
    t0 = time.time_ns()
    os.mkdir(os.path.join(d, "last"))
    mtime = os.stat(d).st_mtime_ns
    mnt.remount()
    assert os.stat(d).st_mtime_ns == mtime
    assert mtime >= t0 - 10**6
    assert os.stat(e).st_mtime_ns == PAST


def test_root_times_follow_its_entries(mnt):
    set_past(mnt.mnt)
    t0 = time.time_ns()
    open(mnt.path("x.bin"), "wb").close()
    assert_touched(mnt.mnt, t0 - 10**6)


@pytest.mark.parametrize("options", [[], ["attr_timeout=0", "entry_timeout=0"]],
                         ids=["cached", "uncached"])
def test_truncate_updates_ctime(tierfs_factory, options):
    """ftruncate through an open descriptor changes ctime at once, in the
    attributes setattr answers (the kernel caches them) and in getattr,
    though the new size is published only at close; so do truncate by
    path and O_TRUNC. pjdfstest ftruncate/00.t checks the first."""
    m = tierfs_factory(options=options)
    path = m.path("f")
    with open(path, "wb") as f:
        f.write(b"0123456789")
    os.utime(path, ns=(PAST, PAST))
    before = os.stat(path)
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 123)
        st = os.fstat(fd)
        assert st.st_size == 123
        assert st.st_ctime_ns > before.st_ctime_ns
        assert st.st_mtime_ns > PAST
        assert os.stat(path).st_ctime_ns == st.st_ctime_ns
    finally:
        os.close(fd)
    assert os.stat(path).st_ctime_ns >= st.st_ctime_ns
    # by path, without a writer
    os.utime(path, ns=(PAST, PAST))
    before = os.stat(path)
    os.truncate(path, 5)
    st = os.stat(path)
    assert (st.st_size, st.st_mtime_ns > PAST) == (5, True)
    assert st.st_ctime_ns > before.st_ctime_ns
