"""The command line: store selection (--sqlite, -o sqlite=, TIERFS_SQLITE,
the embedded default; SQLite only) and -o tuning options, unknown ones
refused (every store configuration)."""

import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import TIERFS_BIN

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("opts", ["no_such_option=1", "attr_timeout=1,bogus_flag"])
def test_unknown_option_is_refused(tierfs_factory, opts):
    m = tierfs_factory(start=False)
    argv = m.argv()[:-1] + ["-o", opts, str(m.mnt)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=m.env())
    deadline = time.monotonic() + 30
    while proc.poll() is None and not os.path.ismount(m.mnt) and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:  # it mounted or hangs: clean up, then fail
        proc.kill()
        proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pytest.fail(f"tierfs accepted -o {opts}")
    out, err = proc.communicate()
    # libfuse refuses the option (fuse_session_new): usage errors exit 2
    assert proc.returncode == 2, err
    bad = opts.split(",")[-1].split("=")[0]
    assert bad in err, f"the message does not name the option: {err!r}"
    assert not os.path.ismount(m.mnt)


@pytest.mark.sqlite_only
def test_sqlite_option_forms(tierfs_factory, tmp_path):
    db = tmp_path / "shared.db"
    # -o sqlite=FILE
    m = tierfs_factory(name="o", args=["-f", "-o", f"sqlite={db}", str(tmp_path / "o.mnt")])
    write_file(m.path("one.json"), b"1")
    m.unmount()
    assert db.exists()
    # TIERFS_SQLITE
    m = tierfs_factory(name="e", args=["-f", str(tmp_path / "e.mnt")], env={"TIERFS_SQLITE": str(db)})
    assert read_file(m.path("one.json")) == b"1"
    write_file(m.path("two.json"), b"2")
    m.unmount()
    # --sqlite=FILE
    m = tierfs_factory(name="s", sqlite=db)
    assert sorted(os.listdir(m.mnt)) == ["one.json", "two.json"]



@pytest.mark.sqlite_only
def test_a_mistyped_command_mounts_nothing(tmp_path):
    """A bare STORE word that is no file is taken for a mistyped command:
    refused, nothing made or mounted; sqlite:NAME and ./NAME still make a
    new store."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for word in ("stauts", "sync"):
        r = subprocess.run([str(TIERFS_BIN), word, str(mnt)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert r.returncode != 0
        assert f"'{word}' is neither a command nor an existing file" in r.stderr, r.stderr
        assert not os.path.ismount(mnt)
        assert not (tmp_path / word).exists()
    for source in ("sqlite:new.db", "./other.db"):
        r = subprocess.run([str(TIERFS_BIN), source, str(mnt)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=30)
        try:
            assert r.returncode == 0, r.stderr
            assert os.path.ismount(mnt)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
    assert (tmp_path / "new.db").is_file() and (tmp_path / "other.db").is_file()

@pytest.mark.sqlite_only
def test_embedded_default_store(tierfs_factory, tmp_path):
    """No store option: $XDG_DATA_HOME/tierfs/tierfs.db, directory created."""
    xdg = tmp_path / "xdg-data"
    assert not xdg.exists()
    m = tierfs_factory(name="d", args=["-f", str(tmp_path / "d.mnt")])
    write_file(m.path("x.json"), b'{"default": true}')
    m.unmount()
    assert (xdg / "tierfs" / "tierfs.db").is_file()
    m.start()
    assert read_file(m.path("x.json")) == b'{"default": true}'


def test_tuning_options_accepted_and_applied(tierfs_factory):
    m = tierfs_factory(options=[
        "l1_max_bytes=67108864", "batch_flush_count=10", "batch_flush_bytes=65536",
        "batch_flush_ms=50", "max_item_bytes=1048576", "max_open_bytes=4194304",
        "entry_timeout=1",
        "attr_timeout=1", "uid=1234", "gid=2345", "file_mode=0640", "dir_mode=0750"])
    write_file(m.path("f.json"), b"{}")
    os.mkdir(m.path("d"))
    out = m.run(["stat", "-c", "%u %g %a %F", "f.json", "d"]).stdout.splitlines()
    assert out == ["1234 2345 640 regular file", "1234 2345 750 directory"]
    for i in range(25):  # more than batch_flush_count
        write_file(m.path("d", f"{i}.json"), b"[]")
    m.remount()
    assert len(os.listdir(m.path("d"))) == 25


def test_secrets_are_masked(tmp_path):
    """A conninfo password with spaces around '=' and inside quotes is
    hidden from ps, and a store argument tierfs refuses is echoed without
    its password."""
    from conftest import TIERFS_BIN
    import socket

    # a server that takes the TCP connection and never answers: libpq waits
    # (connect_timeout) while we read the command line
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    conninfo = (f"host=127.0.0.1 port={port} dbname=x user=u "
                f"password = 's3cret \\' w0rdy' connect_timeout=10")
    proc = subprocess.Popen([str(TIERFS_BIN), "verify", f"--postgres={conninfo}",
                             "--redis=redis://127.0.0.1:1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        cmdline = b""
        while time.monotonic() < deadline and proc.poll() is None:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                cmdline = f.read()
            if b"*" in cmdline:
                break
            time.sleep(0.01)  # polling the process's state, with a deadline
        assert b"password = ****" in cmdline, cmdline
        assert b"s3cret" not in cmdline and b"w0rdy" not in cmdline, cmdline
        assert b"connect_timeout=10" in cmdline  # only the password went
    finally:
        proc.kill()
        proc.wait()
        srv.close()

    mnt = tmp_path / "m"
    mnt.mkdir()
    r = subprocess.run([str(TIERFS_BIN), "postgresql://u:s3cret@127.0.0.1/db", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r
    assert re.search(r"'postgresql://u:\*+@127\.0\.0\.1/db'", r.stderr), r.stderr
    assert "s3cret" not in r.stderr
