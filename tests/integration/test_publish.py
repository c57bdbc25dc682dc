"""What a writer means is what gets published: shell redirects, dd, tee, cp
and python through a real mount, checked by content and by
user.tierfs.version.

A shell's `cmd > x.json` opens with O_TRUNC, dup2()s the descriptor and
closes the original before cmd writes: that first close (a FLUSH) must not
publish an empty version. A truncation that no write follows is published
when the last descriptor closes (`: > x.json` empties the file); one that
writes follow is published with them, or not at all when they are refused
(invalid JSON, over max_item_bytes)."""

import os
import shutil
import subprocess

import pytest

from conftest import read_settled, wait_for

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)


def version(mnt, name):
    return int(os.getxattr(mnt.path(name), "user.tierfs.version"))


def content(mnt, name):
    with open(mnt.path(name), "rb") as f:
        return f.read()


def bash(mnt, script):
    """Runs @script in bash in the mount; returns the CompletedProcess."""
    return subprocess.run(["bash", "-c", script], cwd=mnt.path(),
                          capture_output=True, timeout=60,
                          env=dict(os.environ, LC_ALL="C.UTF-8"))


@pytest.fixture
def mnt(tierfs_factory):
    m = tierfs_factory(options=["max_item_bytes=65536"])
    with open(m.path("x.json"), "wb") as f:
        f.write(b'{"a": 1}')
    return m


def test_redirect_of_valid_json_publishes_one_version(mnt):
    v = version(mnt, "x.json")
    assert bash(mnt, "echo '{\"b\": 2}' > x.json").returncode == 0
    assert content(mnt, "x.json") == b'{"b": 2}\n'
    assert version(mnt, "x.json") == v + 1


def test_redirect_of_invalid_json_keeps_the_file(mnt):
    v = version(mnt, "x.json")
    # bash ignores the error of the last close: it exits 0
    assert bash(mnt, "echo 'not json' > x.json").returncode == 0
    assert read_settled(mnt.path("x.json"), b'{"a": 1}') == b'{"a": 1}'
    assert version(mnt, "x.json") == v


def test_oversize_redirect_keeps_the_file(mnt):
    v = version(mnt, "x.json")
    r = bash(mnt, "head -c 100000 /dev/zero > x.json")
    assert r.returncode == 1
    assert b"File too large" in r.stderr
    assert read_settled(mnt.path("x.json"), b'{"a": 1}') == b'{"a": 1}'
    assert version(mnt, "x.json") == v


def test_empty_redirect_empties_the_file(mnt):
    v = version(mnt, "x.json")
    assert bash(mnt, ": > x.json").returncode == 0
    assert os.stat(mnt.path("x.json")).st_size == 0
    assert content(mnt, "x.json") == b""
    assert version(mnt, "x.json") == v + 1
    mnt.remount()
    assert content(mnt, "x.json") == b""
    assert version(mnt, "x.json") == v + 1


def test_dd_of_invalid_json_keeps_the_file(mnt):
    v = version(mnt, "x.json")
    r = subprocess.run(["dd", "if=/dev/zero", f"of={mnt.path('x.json')}",
                        "bs=1k", "count=1"], capture_output=True, timeout=60,
                       env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert r.returncode == 1
    assert b"Invalid argument" in r.stderr
    assert read_settled(mnt.path("x.json"), b'{"a": 1}') == b'{"a": 1}'
    assert version(mnt, "x.json") == v


def test_dd_and_tee_of_valid_json_publish_once(mnt):
    v = version(mnt, "x.json")
    r = subprocess.run(["dd", f"of={mnt.path('x.json')}"], input=b"[1, 2]",
                       capture_output=True, timeout=60)
    assert r.returncode == 0
    assert content(mnt, "x.json") == b"[1, 2]"
    assert version(mnt, "x.json") == v + 1
    r = subprocess.run(["tee", str(mnt.path("x.json"))], input=b"[3]",
                       capture_output=True, timeout=60)
    assert r.returncode == 0
    assert content(mnt, "x.json") == b"[3]"
    assert version(mnt, "x.json") == v + 2


def test_cp_over_a_file_publishes_once(mnt, tmp_path):
    src = tmp_path / "src.json"
    src.write_bytes(b'{"copied": true}')
    v = version(mnt, "x.json")
    subprocess.run(["cp", str(src), str(mnt.path("x.json"))], check=True,
                   timeout=60)
    assert content(mnt, "x.json") == b'{"copied": true}'
    assert version(mnt, "x.json") == v + 1


def test_python_truncate_then_fsync_publishes_the_truncation(mnt):
    v = version(mnt, "x.json")
    fd = os.open(mnt.path("x.json"), os.O_WRONLY | os.O_TRUNC)
    try:
        os.fsync(fd)  # durable: the truncation is published now
        assert version(mnt, "x.json") == v + 1
    finally:
        os.close(fd)
    assert content(mnt, "x.json") == b""
    assert version(mnt, "x.json") == v + 1


def test_a_read_only_open_with_o_trunc_truncates(mnt):
    """open(O_RDONLY | O_TRUNC) empties the file, as on a local Linux
    filesystem, and publishes the truncation once: as a truncation no
    write followed, at the release, which the kernel sends after close()
    has returned."""
    v = version(mnt, "x.json")
    fd = os.open(mnt.path("x.json"), os.O_RDONLY | os.O_TRUNC)
    try:
        assert os.read(fd, 100) == b""
    finally:
        os.close(fd)
    assert content(mnt, "x.json") == b""
    assert wait_for(lambda: version(mnt, "x.json") != v, 30), "the truncation was not published"
    assert version(mnt, "x.json") == v + 1

def test_python_dup_closed_first_then_invalid_write(mnt):
    """The shell's dance done by hand: a dup of an O_TRUNC descriptor is
    closed before the write; the refused write leaves the old content."""
    v = version(mnt, "x.json")
    fd = os.open(mnt.path("x.json"), os.O_WRONLY | os.O_TRUNC)
    fd2 = os.dup(fd)
    os.close(fd)  # FLUSH of a truncation only: not published
    assert version(mnt, "x.json") == v
    os.write(fd2, b"{broken")
    with pytest.raises(OSError) as info:
        os.close(fd2)
    assert info.value.errno == 22  # EINVAL
    assert read_settled(mnt.path("x.json"), b'{"a": 1}') == b'{"a": 1}'
    assert version(mnt, "x.json") == v
