"""POSIX behaviour tools look at, through a real mount: a directory's
mtime and ctime follow the entries made, removed and renamed in it, and
persist."""

import errno
import os
import shutil
import subprocess
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


def write_all(fd, data, off):
    """Writes @data at @off; returns how much went in before an error
    (and the error), or len(data) and None."""
    done = 0
    while done < len(data):
        try:
            n = os.pwrite(fd, data[done:], off + done)
        except OSError as e:
            return done, e
        assert n > 0
        done += n
    return done, None


def test_open_files_hold_at_most_max_open_bytes(tierfs_factory):
    # 1 MiB for every working copy together: two 600 KiB writers do not fit
    m = tierfs_factory(options=["max_open_bytes=1048576"])
    big = os.urandom(600 * 1024)
    with open(m.path("c.bin"), "wb") as f:
        f.write(big)
    a = os.open(m.path("a.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    b = os.open(m.path("b.bin"), os.O_WRONLY | os.O_CREAT, 0o644)
    head = b"h" * 10240
    assert write_all(b, head, 0) == (len(head), None)
    assert write_all(a, big, 0) == (len(big), None)
    # the second writer: ENOSPC, after what fitted
    rest = os.urandom(500 * 1024)
    done, err = write_all(b, rest, len(head))
    assert err is not None and err.errno == errno.ENOSPC, err
    assert done < len(rest)
    # so does an open for writing that loads content, and a growing
    # ftruncate
    with pytest.raises(OSError) as e:
        os.open(m.path("c.bin"), os.O_RDWR)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as e:
        os.ftruncate(b, 2 * 1024 * 1024)
    assert e.value.errno == errno.ENOSPC
    assert os.stat(m.path("c.bin")).st_size == len(big)
    # the first writer closes: the second goes on, nothing it wrote lost
    os.close(a)
    assert write_all(b, rest[done:], len(head) + done) == (len(rest) - done,
                                                           None)
    os.close(b)
    for name, want in (("a.bin", big), ("b.bin", head + rest),
                       ("c.bin", big)):
        with open(m.path(name), "rb") as f:
            assert f.read() == want, name
    m.remount()
    with open(m.path("b.bin"), "rb") as f:
        assert f.read() == head + rest
    # a file larger than the bound can never be written whole
    with open(m.path("d.bin"), "wb") as f:
        with pytest.raises(OSError) as e:
            f.write(b"x" * (2 * 1024 * 1024))
            f.flush()
        assert e.value.errno == errno.ENOSPC


def nlink(path):
    return os.stat(path).st_nlink


def test_directory_nlink_counts_subdirectories(mnt):
    root = mnt.mnt
    assert nlink(root) == 2
    for d in ("a", "b", "c", "a/x", "a/y", "a/z"):
        os.mkdir(mnt.path(d))
    open(mnt.path("a", "f.json"), "w").close()  # files do not count
    assert nlink(root) == 5
    assert nlink(mnt.path("a")) == 5
    assert nlink(mnt.path("b")) == 2
    os.rmdir(mnt.path("a", "y"))
    assert nlink(mnt.path("a")) == 4
    os.rename(mnt.path("a", "x"), mnt.path("b", "x"))  # between parents
    assert (nlink(mnt.path("a")), nlink(mnt.path("b"))) == (3, 3)
    os.rename(mnt.path("c"), mnt.path("b", "c"))
    assert (nlink(root), nlink(mnt.path("b"))) == (4, 4)
    os.mkdir(mnt.path("e"))
    os.rename(mnt.path("e"), mnt.path("b", "x"))  # over an empty directory
    assert (nlink(root), nlink(mnt.path("b"))) == (4, 4)
    os.makedirs(mnt.path("deep", "1", "2", "3"))
    # ls -l (readdirplus) shows the same counts
    out = subprocess.run(["ls", "-l", mnt.mnt], capture_output=True,
                         text=True, check=True).stdout
    links = {ln.split()[-1]: int(ln.split()[1])
             for ln in out.splitlines()[1:]}
    assert links == {"a": 3, "b": 4, "deep": 3}, links
    want = sorted([".", "./a", "./a/z", "./b", "./b/x", "./b/c", "./deep",
                   "./deep/1", "./deep/1/2", "./deep/1/2/3"])

    def find_dirs():
        return sorted(subprocess.run(["find", ".", "-type", "d"],
                                     cwd=mnt.mnt, capture_output=True,
                                     text=True, check=True).stdout.split())

    assert find_dirs() == want
    mnt.remount()  # counted from L3 now
    assert [nlink(mnt.path(p)) for p in ("", "a", "b", "deep", "deep/1/2/3")
            ] == [5, 3, 4, 3, 2]
    out = subprocess.run(["ls", "-l", mnt.mnt], capture_output=True,
                         text=True, check=True).stdout
    assert {ln.split()[-1]: int(ln.split()[1])
            for ln in out.splitlines()[1:]} == {"a": 3, "b": 4, "deep": 3}
    assert find_dirs() == want  # find may trust nlink (leaf optimisation)
    out = subprocess.run(["find", ".", "-noleaf", "-type", "d"], cwd=mnt.mnt,
                         capture_output=True, text=True, check=True).stdout
    assert sorted(out.split()) == want
    os.rmdir(mnt.path("deep", "1", "2", "3"))
    assert nlink(mnt.path("deep", "1", "2")) == 2


def test_rename_refuses_descendant_ids_past_the_limit(mnt):
    # 28 levels of 100-byte names with 20 dots each: an ID segment is 140
    # bytes (a dot is escaped to 3), so the deepest ID below src is
    # 3 + 1 + 28 * 140 + 27 = 3951 bytes of the 4095 allowed
    comp = "x." * 20 + "y" * 60
    os.mkdir(mnt.path("src"))
    fd = os.open(mnt.path("src"), os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(28):
        os.mkdir(comp, dir_fd=fd)
        nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    with open(os.open("f.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd),
              "w") as f:
        f.write("{}")
    os.close(fd)
    os.mkdir(mnt.path("L" * 200))
    os.mkdir(mnt.path("b"))

    def refused():
        with pytest.raises(OSError) as e:
            os.rename(mnt.path("src"), mnt.path("L" * 200, "src"))
        assert e.value.errno == errno.ENAMETOOLONG
        assert os.path.isdir(mnt.path("src"))

    refused()  # the descendants are not persisted yet
    mnt.remount()
    refused()  # now L3 holds them
    # a move that keeps the IDs short enough works, and so does a rename
    # that makes the directory's own ID shorter
    os.rename(mnt.path("src"), mnt.path("b", "src"))
    os.rename(mnt.path("b", "src"), mnt.path("s"))
    assert os.path.isdir(mnt.path("s", comp))
