"""The write-ahead log's bound and lock: past wal_max_bytes new content is
refused with ENOSPC (and a log line that says why) without losing what was
accepted; persisting the queue frees the log; a second daemon cannot use a
store that one is serving."""

import errno
import os
import shutil
import subprocess

import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

NO_BACKGROUND_FLUSH = ["batch_flush_ms=60000", "batch_flush_count=1000000",
                       "batch_flush_bytes=268435456"]


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def test_wal_bound_refuses_with_enospc_and_keeps_accepted_writes(tierfs_factory):
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH + ["wal_max_bytes=300000"])
    accepted, refused = {}, None
    for i in range(20):
        rel, data = f"f{i}.bin", os.urandom(50_000)
        try:
            write_file(m.path(rel), data)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            refused = rel
            break
        accepted[rel] = data
    assert refused is not None, "the log accepted 1 MB past a 300 kB bound"
    # Five fit: they leave the log at 5 x 50,000 content bytes plus ~1.5 kB
    # of record headers (each file's create and its content). The sixth's
    # content record would take the log past the bound: 251,500 + 50,000 +
    # its header > 300,000, so it is refused whole.
    assert len(accepted) == 5, len(accepted)
    assert "write-ahead log" in m.stderr_text() and "wal_max_bytes" in m.stderr_text()
    # The refused file keeps its previous (empty) version; the rest is intact.
    assert read_file(m.path(refused)) == b""
    for rel, data in accepted.items():
        assert read_file(m.path(rel)) == data

    # fsync of the directory persists the queue, which empties the log.
    fd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    write_file(m.path(refused), b"now it fits")
    m.kill9()
    m.start()
    assert read_file(m.path(refused)) == b"now it fits"
    for rel, data in accepted.items():
        assert read_file(m.path(rel)) == data


def test_second_daemon_on_the_same_store_is_refused(tierfs_factory, tmp_path):
    # The lock is the write-ahead log's: the same command line names the
    # same log, beside the SQLite file or -o wal_path= with PostgreSQL.
    m = tierfs_factory()
    write_file(m.path("a.json"), b"[1]")
    other = tmp_path / "other.mnt"
    other.mkdir()
    proc = subprocess.run([*m.argv()[:-1], str(other)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=m.env(), timeout=60)
    # the engine cannot open (the log's lock is taken): exit 1
    assert proc.returncode == 1, proc.stderr
    assert "in use" in proc.stderr, proc.stderr
    assert not os.path.ismount(other)
    assert read_file(m.path("a.json")) == b"[1]"


@pytest.mark.sqlite_only
def test_second_daemon_through_a_symlink_is_refused(tierfs_factory, tmp_path):
    """Another spelling of the same SQLite file (a symlink, a relative path)
    names the same log, so it is refused too."""
    m = tierfs_factory()
    write_file(m.path("a.json"), b"[1]")
    link = tmp_path / "link.db"
    link.symlink_to(m.db)
    for store, cwd in ((str(link), None), (os.path.relpath(m.db, tmp_path), tmp_path)):
        other = tmp_path / "other.mnt"
        other.mkdir(exist_ok=True)
        proc = subprocess.run(
            [str(m.argv()[0]), f"--sqlite={store}", "-f", str(other)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=m.env(), timeout=60, cwd=cwd)
        assert proc.returncode == 1, proc.stderr
        assert "in use" in proc.stderr, proc.stderr
        assert not os.path.ismount(other)
    assert read_file(m.path("a.json")) == b"[1]"
