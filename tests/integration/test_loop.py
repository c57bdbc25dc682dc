"""The session loop (fs/loop.c): one worker reads and handles requests
while they are quick; a request that waits hands reading on, so the others
are still served."""

import os
import platform
import shutil
import subprocess
import sys
import time

import pytest

from conftest import PSQL_ENV, wait_for, write_file

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

OTHERS = 50          # requests served while the fsync waits
OTHERS_DEADLINE = 20.0  # seconds they may take in all (~50 ms unloaded)
LOCK_DEADLINE = 30.0


FSYNC_NR = {"x86_64": 74, "aarch64": 82}.get(platform.machine())
OTHERS_SCRIPT = """
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(root, "a.json"), "rb") as f:
        assert f.read() == b'{"a": 1}'
    os.stat(os.path.join(root, "a.json"))
    with open(os.path.join(root, "c%d.json" % i), "wb") as f:
        f.write(b'{"c": %d}' % i)
"""


def in_fsync(pid):
    """Whether process @pid is inside fsync(2) (/proc/PID/syscall)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] == str(FSYNC_NR)
    except (OSError, IndexError):
        return False


@pytest.mark.stores("postgres")
@pytest.mark.skipif(FSYNC_NR is None, reason="fsync's system call number is not known here")
def test_a_waiting_fsync_does_not_stop_the_others(tierfs_factory):
    """An fsync waits for a commit that a lock held on L3's entries table
    stops; meanwhile another process stats, reads and creates files in the
    mount, and the fsync is still waiting when they are done. (With one
    thread serving every request, they would wait for the fsync.)"""
    m = tierfs_factory()
    write_file(m.path("a.json"), b'{"a": 1}', fsync=True)
    locker = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", m.pg.uri],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=PSQL_ENV)
    fsyncer = None
    try:
        locker.stdin.write("BEGIN;\nLOCK TABLE entries IN ACCESS EXCLUSIVE MODE;\n\\echo locked\n")
        locker.stdin.flush()
        assert locker.stdout.readline().strip() == "locked"
        script = ("import os, sys\n"
                  "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
                  "os.write(fd, b'{\"b\": 1}')\n"
                  "os.fsync(fd)\n"
                  "os.close(fd)\n")
        fsyncer = subprocess.Popen([sys.executable, "-c", script, str(m.path("b.json"))])
        # the fsync waits for a commit the lock holds back
        assert wait_for(lambda: in_fsync(fsyncer.pid), LOCK_DEADLINE), "no fsync started"
        t0 = time.monotonic()
        try:
            subprocess.run([sys.executable, "-c", OTHERS_SCRIPT, str(m.mnt), str(OTHERS)],
                           check=True, timeout=OTHERS_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{OTHERS} stats, reads and creates waited behind the fsync "
                        f"for {OTHERS_DEADLINE:.0f}s")
        took = time.monotonic() - t0
        assert in_fsync(fsyncer.pid), f"the fsync returned while L3 was locked ({took:.1f}s)"
    finally:
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(timeout=LOCK_DEADLINE)
        if fsyncer is not None:
            assert fsyncer.wait(timeout=LOCK_DEADLINE) == 0
    assert m.path("b.json").read_bytes() == b'{"b": 1}'
    assert sorted(os.listdir(m.mnt)) == sorted(["a.json", "b.json"] +
                                               [f"c{i}.json" for i in range(OTHERS)])
