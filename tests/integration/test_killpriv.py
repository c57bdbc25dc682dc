"""tierfs clears set-ID bits itself (FUSE_HANDLE_KILLPRIV_V2, fs/killpriv.c):
the kernel stops asking for security.capability before writes, and the bits
still go as on a local filesystem."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import write_file

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

NOBODY = 65534
KILLPRIV_V2 = 1 << 28  # the FUSE_INIT flag
OVERWRITES = 5


def kernel_offers_killpriv_v2(m):
    """Whether the kernel's FUSE_INIT (printed by libfuse's debug output)
    offered FUSE_HANDLE_KILLPRIV_V2."""
    got = re.search(r"INIT: \d+\.\d+\s+flags=0x([0-9a-f]+)", m.stderr_text())
    assert got, f"no INIT request in the debug output:\n{m.stderr_text()[:2000]}"
    return int(got.group(1), 16) & KILLPRIV_V2 != 0


def requests_of(m, pid):
    """The opcodes of the requests process @pid sent to @m, in order."""
    return re.findall(r"opcode: (\w+) \(\d+\), nodeid: \d+, insize: \d+, pid: %d\b" % pid,
                      m.stderr_text())


@pytest.mark.sqlite_only
def test_overwrite_asks_no_capability(tierfs_factory):
    """Overwriting an existing file (open O_TRUNC, write, close) takes OPEN,
    WRITE, FLUSH (and RELEASE): no GETXATTR security.capability before the
    truncation or the write."""
    m = tierfs_factory(options=["debug"])
    if not kernel_offers_killpriv_v2(m):
        pytest.skip("this kernel does not offer FUSE_HANDLE_KILLPRIV_V2")
    path = m.path("f.json")
    write_file(path, b'{"v": 0}')
    script = ("import os, sys\n"
              "for i in range(int(sys.argv[2])):\n"
              "    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)\n"
              "    os.write(fd, b'{\"v\": %d}' % (i + 1))\n"
              "    os.close(fd)\n")
    p = subprocess.Popen([sys.executable, "-c", script, str(path), str(OVERWRITES)])
    assert p.wait() == 0
    ops = requests_of(m, p.pid)
    assert ops.count("WRITE") == OVERWRITES, ops
    assert ops.count("OPEN") == OVERWRITES, ops
    assert "GETXATTR" not in ops, ops
    assert path.read_bytes() == b'{"v": %d}' % OVERWRITES


def as_nobody(fd, dirfd, name, action):
    """Runs @action in a child process with uid and gid 65534 (no
    CAP_FSETID): "write" or "ftruncate" on descriptor @fd, or "open_trunc",
    an open(O_WRONLY | O_TRUNC) of @name in directory @dirfd."""
    code = {
        "write": "os.write(fd, b'x')",
        "ftruncate": "os.ftruncate(fd, 0)",
        "open_trunc": f"os.close(os.open({name!r}, os.O_WRONLY | os.O_TRUNC, dir_fd=dirfd))",
    }[action]

    def drop():
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)

    subprocess.run([sys.executable, "-c", f"import os\nfd, dirfd = {fd}, {dirfd}\n{code}\n"],
                   pass_fds=[fd, dirfd], preexec_fn=drop, check=True)


def mode_after(path, mode, action):
    """Makes @path a root-owned file of @mode (world-writable), does
    @action, returns the permission bits (07777) it has then."""
    write_file(path, b"data")
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    if action == "chown":
        os.chown(path, 1, 1)
    else:
        fd = os.open(path, os.O_RDWR)
        dirfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            if action == "root_write":
                os.write(fd, b"x")
            else:
                as_nobody(fd, dirfd, os.path.basename(path), action)
        finally:
            os.close(fd)
            os.close(dirfd)
    return os.stat(path).st_mode & 0o7777


@pytest.mark.sqlite_only
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write as another user")
def test_setid_bits_go_as_on_a_local_filesystem(tierfs_factory):
    """A write, truncation or O_TRUNC open by a caller without CAP_FSETID
    clears S_ISUID, and S_ISGID when the group may execute; root's write
    keeps them; chown clears them. Each case is compared with the same on a
    local filesystem (/dev/shm), and holds after a remount."""
    m = tierfs_factory(options=["allow_other"])
    local = tempfile.mkdtemp(prefix="tierfs-killpriv-", dir="/dev/shm")
    os.chmod(local, 0o755)
    try:
        cases = [(mode, action)
                 for mode in (0o6777, 0o6767, 0o4777, 0o2777, 0o2767, 0o0777)
                 for action in ("write", "ftruncate", "open_trunc", "root_write", "chown")]
        got, want = {}, {}
        for i, (mode, action) in enumerate(cases):
            want[i] = mode_after(os.path.join(local, f"f{i}"), mode, action)
            got[i] = mode_after(m.path(f"f{i}"), mode, action)
        wrong = [f"{oct(mode)} {action}: tierfs {oct(got[i])}, local {oct(want[i])}"
                 for i, (mode, action) in enumerate(cases) if got[i] != want[i]]
        assert not wrong, "\n".join(wrong)
        # the cases change something: the test can fail
        assert any(want[i] != mode for i, (mode, _) in enumerate(cases))
        assert any(want[i] == mode and mode & 0o6000 for i, (mode, _) in enumerate(cases))
        m.remount()
        after = {i: os.stat(m.path(f"f{i}")).st_mode & 0o7777 for i in range(len(cases))}
        assert after == got
    finally:
        shutil.rmtree(local)
