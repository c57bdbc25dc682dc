"""What is read is checked: rows an administrator or a bug put straight into
L3 (with psql or sqlite3) that break tierfs's rules are skipped with a log
line and counted (tierfs_corrupt_total); the rest of their directory still
lists and reads. Real mounts, real PostgreSQL and SQLite."""

import errno
import os
import re
import shutil
import subprocess

import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

S_IFREG, S_IFDIR = 0o100000, 0o040000
ZERO = "00" * 32

# (ino offset, name bytes as hex, kind, size, mode, why it is bad)
HOSTILE = [
    (1, b"a/b".hex(), 2, 1, S_IFREG | 0o644, "a '/' in the name"),
    (2, b"c\x01d".hex(), 2, 1, S_IFREG | 0o644, "a control byte"),
    (3, b"..".hex(), 0, 0, S_IFDIR | 0o755, "a name that is .."),
    (4, b"dirfile".hex(), 0, 0, S_IFREG | 0o644, "a directory with a file's mode"),
    (5, b"huge.bin".hex(), 2, 1 << 40, S_IFREG | 0o644, "more than max_item_bytes"),
]


def insert_sql(parent, base, blob):
    rows = []
    for off, name, kind, size, mode, _ in HOSTILE:
        rows.append(f"({base + off}, {parent}, {blob(name)}, "
                    f"{'NULL' if kind == 0 else blob(name)}, {kind}, {size}, "
                    f"{'NULL' if kind == 0 else blob(ZERO)}, 1, 0, 0, {mode}, 0, 0, "
                    f"{'true' if kind == 0 else 'false'}, NULL, NULL, NULL, 0)")
    return ("INSERT INTO entries (ino, parent, name, stem, kind, size, hash, version, "
            "mtime_ns, ctime_ns, mode, uid, gid, explicit_dir, state, xattrs, merkle, "
            "atime_ns) "
            "VALUES " + ", ".join(rows))


def corrupt_count(m):
    with open(m.path(".tierfs", "metrics")) as f:
        text = f.read()
    found = re.search(r'^tierfs_corrupt_total\{tier="l3"\} (\d+)$', text, re.M)
    assert found, text
    return int(found.group(1))


@pytest.mark.stores("sqlite", "postgres")
def test_hostile_rows_are_skipped(tierfs_factory, store):
    m = tierfs_factory(options=["max_item_bytes=1048576"])
    os.mkdir(m.path("d"))
    for name in ("a.json", "b.json"):
        with open(m.path("d", name), "wb") as f:
            f.write(b"[1]")
            os.fsync(f.fileno())
    parent = os.stat(m.path("d")).st_ino
    base = 1 << 40  # far above any inode number tierfs handed out
    m.unmount()
    if store.uses_postgres:
        m.psql(insert_sql(parent, base, lambda h: f"'\\x{h}'::bytea")
               .replace("true", "true").replace("false", "false"))
    else:
        subprocess.run(["sqlite3", str(m.db),
                        insert_sql(parent, base, lambda h: f"x'{h}'")
                        .replace("true", "1").replace("false", "0")],
                       check=True, capture_output=True, timeout=60)
    m.start()
    assert sorted(os.listdir(m.path("d"))) == ["a.json", "b.json"]
    with open(m.path("d", "a.json"), "rb") as f:
        assert f.read() == b"[1]"
    # looked up by name, they answer as corrupt structures do on any
    # filesystem: EUCLEAN ("Structure needs cleaning")
    for name in ("dirfile", "huge.bin"):
        with pytest.raises(OSError) as info:
            os.stat(m.path("d", name))
        assert info.value.errno == errno.EUCLEAN, name
    assert corrupt_count(m) >= len(HOSTILE)
    log = m.stderr_text()
    assert "corrupt entry" in log and "max_item_bytes" in log
    # the good entries still change and persist around them
    with open(m.path("d", "c.json"), "wb") as f:
        f.write(b"[2]")
    os.unlink(m.path("d", "b.json"))
    m.remount()
    assert sorted(os.listdir(m.path("d"))) == ["a.json", "c.json"]
