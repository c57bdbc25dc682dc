"""Files unlinked while open, driven the way stress-ng's copy-file stressor
drives them: create a file, unlink it at once, size it with ftruncate, then
copy between two such files with copy_file_range and compare with pread.

stress-ng --copy-file sizes its source file to at least 128 MiB (the
default is 256 MiB over all instances), which is past the default
max_item_bytes (16 MiB): the ftruncate fails with EFBIG, as it must. stress-ng
then reports "ftruncate failed, errno=2": it statfs()es the unlinked name
to name the file system in its message, and that ENOENT overwrites errno
before it is printed. The stressor itself runs here with max_item_bytes
raised to fit it."""

import errno
import os
import shutil

import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

MIB = 1024 * 1024


def open_unlinked(path):
    """Creates @path read-write, unlinks it and returns the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.unlink(path)
    return fd


def copy_range(fd_in, fd_out, count, off_in, off_out):
    """copy_file_range() until @count bytes are copied (it may copy less)."""
    done = 0
    while done < count:
        n = os.copy_file_range(fd_in, fd_out, count - done,
                               off_in + done, off_out + done)
        assert n > 0, (count, done)
        done += n
    return done


@pytest.mark.parametrize("name", ["f-orig", "f.json"])
def test_copy_between_unlinked_files(tierfs, name):
    size = 1 * MIB
    src = open_unlinked(tierfs.path(name))
    dst = open_unlinked(tierfs.path("copy-" + name))
    try:
        assert not tierfs.path(name).exists()
        os.ftruncate(src, size)
        os.ftruncate(dst, size)
        assert os.fstat(src).st_size == size
        assert os.pread(src, 4096, size - 4096) == bytes(4096)

        data = os.urandom(size)
        for off in range(0, size, 64 * 1024):
            assert os.pwrite(src, data[off:off + 64 * 1024], off) == 64 * 1024
        assert copy_range(src, dst, size, 0, 0) == size
        assert os.pread(dst, size, 0) == data
        # unaligned pieces to other offsets, as the stressor does
        copy_range(src, dst, 12345, 1000, 500000)
        expect = bytearray(data)
        expect[500000:500000 + 12345] = data[1000:1000 + 12345]
        assert os.pread(dst, size, 0) == bytes(expect)

        # shrink and grow again: the cut bytes come back as zeros
        os.ftruncate(dst, 4096)
        os.ftruncate(dst, 8192)
        assert os.pread(dst, 8192, 0) == bytes(expect[:4096]) + bytes(4096)
        os.fsync(src)
        os.fsync(dst)
        assert os.fstat(dst).st_size == 8192
    finally:
        os.close(src)
        os.close(dst)
    assert os.listdir(tierfs.mnt) == []
    tierfs.remount()
    assert os.listdir(tierfs.mnt) == []


def test_truncate_of_unlinked_file_past_max_item_bytes(tierfs_factory):
    m = tierfs_factory(options=["max_item_bytes=1048576"])
    path = m.path("big-orig")
    fd = open_unlinked(path)
    try:
        with pytest.raises(OSError) as info:
            os.ftruncate(fd, 2 * MIB)
        assert info.value.errno == errno.EFBIG
        # what stress-ng looks at next, and then prints as the error
        with pytest.raises(FileNotFoundError):
            os.statvfs(path)
        # the descriptor still works below the limit
        os.ftruncate(fd, MIB)
        assert os.fstat(fd).st_size == MIB
        assert os.pwrite(fd, b"tail", MIB - 4) == 4
        assert os.pread(fd, 8, MIB - 8) == bytes(4) + b"tail"
    finally:
        os.close(fd)
    assert os.listdir(m.mnt) == []


def test_stress_ng_copy_file(tierfs_factory):
    if shutil.which("stress-ng") is None:
        pytest.skip("stress-ng is missing (scripts/deps.sh installs it)")
    # the stressor's smallest file is 128 MiB; it copies into a second one
    m = tierfs_factory(options=[f"max_item_bytes={256 * MIB}"])
    cp = m.run(["stress-ng", "--copy-file", "1", "--copy-file-bytes", "128M",
                "--copy-file-ops", "200", "--verify", "-t", "120",
                "--temp-path", str(m.mnt)], check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "successful run completed" in cp.stdout + cp.stderr
    assert os.listdir(m.mnt) == []
