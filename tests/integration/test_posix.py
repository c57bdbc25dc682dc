"""POSIX behaviour tools look at, through a real mount: a directory's
mtime and ctime follow the entries made, removed and renamed in it, and
persist; atime is what utimensat set (the mount is noatime), kept by every
other change and by every tier: the write-ahead log (kill -9), L3
(remount), Redis; a log the previous build left (records without atime)
still replays."""

import errno
import os
import shutil
import sqlite3
import struct
import subprocess
import time
import zlib

import pytest

from conftest import TIERFS_BIN, run, wait_for
from test_kernel_cache import metric

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


# --- atime -------------------------------------------------------------

A_PAST = -86_400_500_000_000            # touch -a -d @-86400.5: 1969, half a second
M_2200 = 7_258_118_400_123_456_789      # 2200-01-01 00:00:00.123456789 UTC
BEYOND_U32 = (2**32 + 7) * 10**9 + 1    # 2106, past u32 seconds, 1 ns
NO_BACKGROUND_FLUSH = ["batch_flush_ms=60000", "batch_flush_count=1000000",
                       "batch_flush_bytes=268435456"]


def times(path):
    st = os.stat(path)
    return st.st_atime_ns, st.st_mtime_ns


def l3_times(m, ino):
    """(atime_ns, mtime_ns) of @ino in L3 itself."""
    sql = f"SELECT atime_ns, mtime_ns FROM entries WHERE ino = {ino}"
    if m.pg is not None:
        a, mt = m.psql(sql).split("|")
        return int(a), int(mt)
    with sqlite3.connect(f"file:{m.db}?mode=ro", uri=True) as db:
        return tuple(db.execute(sql).fetchone())


def test_atime_is_set_by_utimensat_only(mnt):
    m = mnt
    f, d = m.path("f.bin"), m.path("d")
    # new entries: atime = mtime = the creation time
    t0 = time.time_ns()
    os.mkdir(d)
    os.close(os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    for x in (f, d):
        st = os.stat(x)
        assert st.st_atime_ns == st.st_mtime_ns == st.st_ctime_ns >= t0 - 10**6, x

    # touch -a / -m: the other time is left alone (UTIME_OMIT)
    m.run(["touch", "-a", "-d", "@-86400.5", "f.bin"])
    mtime = os.stat(f).st_mtime_ns
    assert times(f) == (A_PAST, mtime)
    m.run(["touch", "-m", "-d", "2200-01-01 00:00:00.123456789 UTC", "f.bin"])
    assert times(f) == (A_PAST, M_2200)
    assert m.run(["stat", "-c", "%X %Y", "f.bin"]).stdout.split() == ["-86401", "7258118400"]
    # both, to the nanosecond, past u32 seconds and before 1970
    os.utime(f, ns=(BEYOND_U32, -1))
    assert times(f) == (BEYOND_U32, -1)
    # UTIME_NOW for atime only
    t0 = time.time_ns()
    m.run(["touch", "-a", "f.bin"])
    atime, mtime = times(f)
    assert mtime == -1 and t0 - 10**6 <= atime <= time.time_ns() + 10**6
    ctime = os.stat(f).st_ctime_ns
    assert ctime >= t0 - 10**6   # utimensat is a change

    # nothing else moves it: reads (noatime), writes, chmod, xattrs, rename
    os.utime(f, ns=(A_PAST, M_2200))
    os.utime(d, ns=(BEYOND_U32, M_2200))
    with open(f, "ab") as fh:
        fh.write(b"more")
    assert os.stat(f).st_mtime_ns != M_2200
    m.run(["cat", "f.bin"])
    m.run(["ls", "-lR", "."])
    os.chmod(f, 0o600)
    m.run(["setfattr", "-n", "user.x", "-v", "1", "f.bin"])
    os.rename(f, m.path("d", "g.bin"))
    g = m.path("d", "g.bin")
    assert os.stat(g).st_atime_ns == A_PAST
    assert os.stat(d).st_atime_ns == BEYOND_U32   # its mtime moved, its atime not
    assert os.stat(d).st_mtime_ns != M_2200

    want = {x: times(x) for x in (g, d)}
    ino = {x: os.stat(x).st_ino for x in (g, d)}
    m.remount()
    assert {x: times(x) for x in (g, d)} == want
    for x in (g, d):
        assert l3_times(m, ino[x]) == want[x], x


def test_atime_survives_kill9(tierfs_factory):
    """Only the write-ahead log holds the change when the daemon dies."""
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH + ["attr_timeout=0", "entry_timeout=0"])
    os.mkdir(m.path("d"))
    with open(m.path("d", "f.json"), "w") as fh:
        fh.write("{}")
    os.utime(m.path("d", "f.json"), ns=(A_PAST, M_2200))
    m.run(["touch", "-a", "-d", "@4294967303.000000001", "d"])
    want = {x: times(m.path(*x)) for x in (("d",), ("d", "f.json"))}
    assert want[("d", "f.json")] == (A_PAST, M_2200)
    assert want[("d",)][0] == BEYOND_U32
    m.kill9()
    m.start()
    assert {x: times(m.path(*x)) for x in want} == want
    m.remount()   # and once L3 has them
    assert {x: times(m.path(*x)) for x in want} == want


WAL_MAGIC_V1, WAL_MAGIC = 0x54465731, 0x54465732   # engine/wal.h


def downgrade_log(wal_dir):
    """Rewrites every record of the log in @wal_dir in the layout of the
    build before atime_ns (engine/wal.h): magic "TFW1", no atime_ns after
    mtime_ns. Returns how many records it rewrote."""
    count = 0
    for name in sorted(os.listdir(wal_dir)):
        if not (name.startswith("wal-") and name.endswith(".log")):
            continue
        path = os.path.join(wal_dir, name)
        with open(path, "rb") as fh:
            data = fh.read()
        out, off = bytearray(), 0
        while off < len(data):
            magic, blen, _crc = struct.unpack_from("<III", data, off)
            assert magic == WAL_MAGIC, f"{name}: a record at {off} is not the current layout"
            body = data[off + 12:off + 12 + blen]
            name_len = struct.unpack_from("<H", body, 25)[0]
            at = 87 + name_len                   # just after mtime_ns
            old = body[:at] + body[at + 8:]
            out += struct.pack("<III", WAL_MAGIC_V1, len(old), zlib.crc32(old)) + old
            off += 12 + blen
            count += 1
        with open(path, "wb") as fh:
            fh.write(out)
    return count


def test_log_of_the_previous_build_replays(tierfs_factory):
    """A store whose log the previous build left (killed before the log
    drained) mounts, with every change; atime is mtime, as that build
    showed it."""
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH)
    os.mkdir(m.path("d"))
    with open(m.path("d", "a.json"), "w") as fh:
        fh.write('{"a": 1}')
    with open(m.path("b.bin"), "wb") as fh:
        fh.write(b"\0b" * 1000)
    os.utime(m.path("b.bin"), ns=(A_PAST, M_2200))
    m.kill9()
    assert downgrade_log(m.wal) >= 4
    m.start()
    with open(m.path("d", "a.json")) as fh:
        assert fh.read() == '{"a": 1}'
    with open(m.path("b.bin"), "rb") as fh:
        assert fh.read() == b"\0b" * 1000
    assert times(m.path("b.bin")) == (M_2200, M_2200)
    st = os.stat(m.path("d", "a.json"))
    assert st.st_atime_ns == st.st_mtime_ns
    # and the mount goes on in the current layout
    os.utime(m.path("b.bin"), ns=(A_PAST, M_2200))
    m.remount()
    assert times(m.path("b.bin")) == (A_PAST, M_2200)


def redis_blob(m, ino):
    """The metadata blob of @ino in Redis, byte for byte (b"" when absent)."""
    cp = subprocess.run(["redis-cli", "-u", m.store.redis_url, "--raw", "HGET",
                         f"{m.redis_prefix}e:{ino}", "m"],
                        capture_output=True, check=True, timeout=60)
    return cp.stdout[:-1]   # --raw adds a newline


def redis_set_blob(m, ino, blob):
    subprocess.run(["redis-cli", "-u", m.store.redis_url, "-x", "HSET",
                    f"{m.redis_prefix}e:{ino}", "m"],
                   input=blob, capture_output=True, check=True, timeout=60)


def verify(m, *flags):
    return run([str(TIERFS_BIN), "verify", *flags, f"--postgres={m.pg.uri}",
                f"--redis={m.store.redis_url}", "-o", f"redis_prefix={m.redis_prefix}"],
               check=False)


@pytest.mark.stores("redis+postgres")
def test_atime_in_redis(tierfs):
    """Redis's blob (format 2, engine/l2_redis_keys.c) carries atime, and
    tierfs verify compares it; a blob of the previous format 1 is a miss,
    filled again from L3."""
    m = tierfs
    # y.bin in a directory of its own: a read of x.bin would read its
    # siblings ahead (engine/dirsnap.c) and so fill y's blob too
    os.mkdir(m.path("sub"))
    for name in ("x.bin", "sub/y.bin"):
        with open(m.path(name), "wb") as fh:
            fh.write(os.path.basename(name).encode())
        os.utime(m.path(name), ns=(A_PAST, M_2200))
    ino = {n: os.stat(m.path(n)).st_ino for n in ("x.bin", "sub/y.bin")}
    # reading the root's Merkle hash commits every pending change
    assert len(m.getfattr(m.mnt, "user.tierfs.merkle")) == 64
    for n in ino:
        blob = redis_blob(m, ino[n])
        assert blob[0] == 2
        assert struct.unpack_from("<qq", blob, 59) == (M_2200, A_PAST)
    cp = verify(m)
    assert cp.returncode == 0 and "0 findings" in cp.stdout, cp.stdout + cp.stderr

    # a blob as the previous build wrote it: format 1, no atime_ns
    for n in ino:
        blob = redis_blob(m, ino[n])
        redis_set_blob(m, ino[n], bytes([1]) + blob[1:67] + blob[75:])
    cp = verify(m)
    assert cp.returncode == 1 and "2 findings" in cp.stdout, cp.stdout + cp.stderr
    m.remount()   # an empty L1: reads go to Redis
    with open(m.path("x.bin"), "rb") as fh:
        assert fh.read() == b"x.bin"
    assert times(m.path("x.bin")) == (A_PAST, M_2200)
    assert wait_for(lambda: redis_blob(m, ino["x.bin"])[:1] == b"\x02", 10)
    cp = verify(m, "--repair")
    assert cp.returncode == 1 and "1 findings, 1 repaired" in cp.stdout, cp.stdout + cp.stderr
    assert struct.unpack_from("<q", redis_blob(m, ino["sub/y.bin"]), 67) == (A_PAST,)
    assert verify(m).returncode == 0


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
    # the release that frees c's working copy comes after close() returns
    assert wait_for(lambda: metric(m, "tierfs_open_bytes") == 0, 10.0)
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
    # (once the release that frees a's working copy has come)
    os.close(a)
    assert wait_for(lambda: metric(m, "tierfs_open_bytes") < len(big), 10.0)
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
