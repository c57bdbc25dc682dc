"""No poison: a change the store refuses for good (here: a constraint a
database administrator added) is set aside in quarantine.log beside the
write-ahead log, reported by `tierfs status` and the metrics, and every
other change still commits. Real mounts, real PostgreSQL and SQLite."""

import errno
import json
import os
import shutil
import subprocess

import pytest

from conftest import TIERFS_BIN, wait_for

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def status(m):
    with open(m.path(".tierfs", "status"), "rb") as f:
        return json.load(f)


def forbid_poison(m, store):
    """A constraint L3 enforces from now on: no entry named poison.json."""
    if store.uses_postgres:
        m.psql("ALTER TABLE entries ADD CONSTRAINT no_poison CHECK "
               "(name <> convert_to('poison.json', 'UTF8'))")
    else:
        subprocess.run(
            ["sqlite3", str(m.db),
             "PRAGMA busy_timeout = 10000; "
             "CREATE TRIGGER no_poison BEFORE INSERT ON entries "
             "WHEN NEW.name = CAST('poison.json' AS BLOB) "
             "BEGIN SELECT RAISE(ABORT, 'no poison here'); END;"],
            check=True, capture_output=True, timeout=60)


def l3_names(m, store):
    if store.uses_postgres:
        out = m.psql("SELECT convert_from(name, 'UTF8') FROM entries WHERE parent = 1")
    else:
        out = subprocess.run(["sqlite3", "-readonly", str(m.db),
                              "SELECT CAST(name AS TEXT) FROM entries WHERE parent = 1"],
                             check=True, capture_output=True, text=True,
                             timeout=60).stdout.strip()
    return set(out.split("\n")) if out else set()


def test_a_refused_change_is_set_aside_and_the_rest_commits(tierfs, store):
    m = tierfs
    write_file(m.path("before.json"), b"[0]")
    forbid_poison(m, store)
    write_file(m.path("a.json"), b"[1]")
    # its fsync says it is not durable: L3 refused it, it is set aside
    fd = os.open(m.path("poison.json"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"[2]")
        with pytest.raises(OSError) as info:
            os.fsync(fd)
        assert info.value.errno == errno.EIO
    finally:
        os.close(fd)
    write_file(m.path("b.json"), b"[3]")
    st = status(m)
    assert st["quarantine"]["changes"] == 1, st
    assert st["quarantine"]["recent"][0]["name"] == "poison.json"
    # PostgreSQL's check violation is a refused value; SQLite reports a
    # trigger's RAISE(ABORT) as a constraint
    assert st["quarantine"]["recent"][0]["error"] == (
        "Invalid argument" if store.uses_postgres else "File exists")
    qfile = st["quarantine"]["file"]
    assert os.path.getsize(qfile) > 0
    assert b"poison.json" in open(qfile, "rb").read()
    assert st["queue"]["changes"] == 0 and st["queue"]["not_persisted"] == 0
    with open(m.path(".tierfs", "metrics")) as f:
        assert "tierfs_quarantined_total 1\n" in f.read()
    out = subprocess.run([str(TIERFS_BIN), "status", str(m.mnt)],
                         capture_output=True, text=True, timeout=60)
    assert "quarantine: 1 changes L3 refused" in out.stdout, out.stdout
    assert "refuses the change of inode" in m.stderr_text()
    # L3 has the rest, not the refused one
    names = l3_names(m, store)
    assert {"before.json", "a.json", "b.json"} <= names
    assert "poison.json" not in names
    # later changes go on; the store mounts again, without it
    write_file(m.path("c.json"), b"[4]")
    m.remount()
    assert sorted(os.listdir(m.mnt)) == ["a.json", "b.json", "before.json", "c.json"]
    assert status(m)["quarantine"]["changes"] == 0  # counted per mount
