"""The tiers underneath, checked from outside tierfs: what a mount on
PostgreSQL stores is in PostgreSQL, byte for byte, as psql sees it (names as
bytea under their parent, inode numbers as the ino column, content in the
contents table); an unmount leaves nothing in the write-ahead log; kill -9
after close() loses nothing because the log is replayed into PostgreSQL at
the next start; a wrong password is refused with a reason that does not
quote it, and a running daemon's command line does not show the password.

Every query goes through psql on the mount's own store (conftest.py: a
fresh database or schema per mount), so unqualified table names are this
test's tables."""

import os
import secrets
import shutil
import stat
import subprocess
from urllib.parse import urlsplit

import pytest

from conftest import TIERFS_BIN, in_mount_table, is_mounted

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

pytestmark = pytest.mark.stores("postgres", "redis+postgres")

# Flush thresholds no test reaches: only an unmount, an fsync or the log's
# replay can put anything in PostgreSQL.
NO_BACKGROUND_FLUSH = ["batch_flush_ms=60000", "batch_flush_count=1000000",
                       "batch_flush_bytes=268435456"]

KIND_DIR, KIND_JSON, KIND_BINARY = 0, 1, 2  # enum item_kind, the kind column
ROOT_INO = 1

ALL_BYTES = bytes(range(256))
JSON_DOC = ('{"name": "caf\u00e9 \u65e5\u672c", "list": [1, 2.5, null, true],\n'
            ' "nested": {"empty": {}, "s": "tab\\t nul\\u0000"}}\n  ').encode()
BINARY = b"\0\0\0" + ALL_BYTES * 3 + b"\0" * 100 + ALL_BYTES[::-1] + b"\0"


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def kind_of(name, st):
    if stat.S_ISDIR(st.st_mode):
        return KIND_DIR
    return KIND_JSON if name.endswith(b".json") else KIND_BINARY


def pg_entry(m, parent, name):
    """The row of @name (str or bytes) under inode @parent as psql returns
    it: (ino, kind, size, content as hex, '' when there is no content row),
    or None when there is no such row."""
    if isinstance(name, str):
        name = os.fsencode(name)
    out = m.psql(
        "SELECT e.ino, e.kind, e.size, coalesce(encode(c.data, 'hex'), '')"
        " FROM entries e LEFT JOIN contents c ON c.ino = e.ino"
        f" WHERE e.parent = {int(parent)} AND e.name = decode('{name.hex()}', 'hex')")
    if not out:
        return None
    ino, kind, size, data = out.split("|")
    return int(ino), int(kind), int(size), data


def pg_tree(m):
    """{path: (ino, kind, size)} of every row of entries, the path (bytes)
    built from the parent and name columns, b"." for the root."""
    rows = {}
    for line in m.psql("SELECT ino, parent, encode(name, 'hex'), kind, size FROM entries").splitlines():
        ino, parent, name, kind, size = line.split("|")
        rows[int(ino)] = (int(parent), bytes.fromhex(name), int(kind), int(size))
    assert [ino for ino, row in rows.items() if row[0] == 0] == [ROOT_INO], "not one root row"

    def path(ino, depth=0):
        parent, name = rows[ino][:2]
        assert depth < 100, f"a cycle through ino {ino}"
        return b"." if parent == 0 else path(parent, depth + 1) + b"/" + name

    return {path(ino): (ino, kind, size) for ino, (_p, _n, kind, size) in rows.items()}


def mount_tree(m):
    """{path: (st_ino, kind, size)} of every entry of the mount as lstat
    sees it (size 0 for directories, as the size column holds)."""
    root = os.fsencode(m.mnt)
    st = os.lstat(root)
    tree = {b".": (st.st_ino, KIND_DIR, 0)}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = kind_of(name, st)
            tree[b"./" + os.path.relpath(p, root)] = (
                st.st_ino, kind, 0 if kind == KIND_DIR else st.st_size)
    return tree


def wal_bytes(m):
    """Bytes in the segments of the mount's write-ahead log."""
    return sum(p.stat().st_size for p in m.wal.glob("wal-*.log"))


def pg_password(m):
    password = urlsplit(m.pg.uri).password
    assert password, f"the test server's URI has no password: {m.pg.uri}"
    return password


# --- content and names -------------------------------------------------------

def test_json_and_binary_bytes_equal_the_contents_table(tierfs):
    m = tierfs
    files = {"doc.json": JSON_DOC, "all-bytes.bin": BINARY,
             "nul.json": b'"\\u0000"', "empty.bin": b""}
    for name, data in files.items():
        write_file(m.path(name), data)
        fsync_path(m.path(name))

    def check():
        assert os.stat(m.mnt).st_ino == ROOT_INO
        for name, data in files.items():
            row = pg_entry(m, ROOT_INO, name)
            assert row is not None, f"{name}: no row in entries"
            ino, kind, size, hexdata = row
            assert hexdata == data.hex(), f"{name}: psql returns other bytes"
            assert size == len(data), name
            assert kind == (KIND_JSON if name.endswith(".json") else KIND_BINARY), name
            assert ino == os.stat(m.path(name)).st_ino, name
            assert read_file(m.path(name)) == data, name

    check()
    assert m.psql("SELECT count(*) FROM contents WHERE octet_length(data) > 0") == "3"
    m.remount()
    check()


def test_names_are_stored_as_bytea_under_their_parent(tierfs):
    m = tierfs
    m.sh("""mkdir -p 'a/b c/d.e' 'caf\u00e9' x && printf 1 > 'a/b c/d.e/1.json' &&
            printf x > 'caf\u00e9/\u65e5\u672c.bin' && printf '{}' > x.json &&
            printf p > 'a/100%' && printf h > 'a/.hidden' && printf m > a/moved.bin &&
            mv a/moved.bin 'a/b c/renamed.bin' && printf g > a/gone && rm a/gone""")
    fsync_path(m.mnt)  # persists the queue

    expect = ["a", "a/b c", "a/b c/d.e", "a/b c/d.e/1.json", "caf\u00e9",
              "caf\u00e9/\u65e5\u672c.bin", "x", "x.json", "a/100%", "a/.hidden",
              "a/b c/renamed.bin"]
    for rel in expect:
        path = m.path(rel)
        parent_ino = os.stat(path.parent).st_ino
        row = pg_entry(m, parent_ino, path.name)
        assert row is not None, f"{rel}: no row named {os.fsencode(path.name)!r} under ino {parent_ino}"
        assert row[0] == os.stat(path).st_ino, rel
        assert row[1] == kind_of(os.fsencode(path.name), os.stat(path)), rel
    assert pg_entry(m, os.stat(m.path("a")).st_ino, "moved.bin") is None
    assert pg_entry(m, os.stat(m.path("a")).st_ino, "gone") is None
    # Each directory's rows are exactly its listing.
    for rel in [".", "a", "a/b c", "caf\u00e9"]:
        ino = os.stat(m.path(rel)).st_ino
        names = m.psql(f"SELECT encode(name, 'hex') FROM entries WHERE parent = {ino} ORDER BY name")
        assert sorted(bytes.fromhex(h) for h in names.split()) == sorted(os.listdir(os.fsencode(m.path(rel)))), rel


def test_stat_inode_numbers_equal_the_ino_column(tierfs):
    m = tierfs
    for i in range(30):
        d = m.path(f"d{i % 3}", f"s{i % 4}")
        os.makedirs(d, exist_ok=True)
        write_file(d / (f"{i}.json" if i % 2 else f"{i}.bin"), f'{{"i": {i}}}'.encode())
    m.sh("mkdir -p empty/dir && mv d0 moved && printf x > moved/extra.bin")
    fsync_path(m.mnt)
    tree = mount_tree(m)
    assert len(tree) > 40
    assert pg_tree(m) == tree
    m.remount()
    assert mount_tree(m) == tree
    assert pg_tree(m) == tree


# --- durability -------------------------------------------------------------------

def test_after_unmount_everything_is_in_postgres_without_the_log(tierfs_factory):
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH)
    os.makedirs(m.path("sub", "deeper"))
    files = {"top.json": JSON_DOC, "sub/bin": BINARY,
             "sub/deeper/big.bin": os.urandom(300_000)}
    for i in range(50):
        files[f"sub/{i}.json"] = f'[{i}]'.encode()
    for rel, data in files.items():
        write_file(m.path(rel), data)
    inos = {rel: os.stat(m.path(rel)).st_ino for rel in files}
    parents = {rel: os.stat(m.path(rel).parent).st_ino for rel in files}
    m.unmount()  # no fsync: the unmount alone drains the queue

    shutil.rmtree(m.wal)  # the log is not needed any more
    for rel, data in files.items():
        row = pg_entry(m, parents[rel], os.path.basename(rel))
        assert row is not None, f"{rel} is not in PostgreSQL after the unmount"
        assert row[0] == inos[rel] and row[3] == data.hex(), rel
    m.start()
    for rel, data in files.items():
        assert read_file(m.path(rel)) == data, rel


def test_kill9_after_close_replays_the_log_into_postgres(tierfs_factory):
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH)
    write_file(m.path("old.json"), b'{"v": "persisted"}')
    write_file(m.path("gone.bin"), b"persisted, then deleted")
    m.remount()  # both are in PostgreSQL now
    assert pg_entry(m, ROOT_INO, "gone.bin") is not None

    # Closed, never fsynced; the thresholds are never reached.
    write_file(m.path("old.json"), b'{"v": "rewritten"}')
    os.unlink(m.path("gone.bin"))
    os.mkdir(m.path("new"))
    files = {"new/doc.json": JSON_DOC, "new/all-bytes.bin": BINARY, "top.bin": os.urandom(100_000)}
    for i in range(20):
        files[f"new/{i}.json"] = f'{{"n": {i}}}'.encode()
    for rel, data in files.items():
        write_file(m.path(rel), data)
    inos = {rel: os.stat(m.path(rel)).st_ino for rel in files}
    new_ino = os.stat(m.path("new")).st_ino

    # Only the log holds these changes: PostgreSQL has none of them yet.
    assert pg_entry(m, ROOT_INO, "old.json")[3] == b'{"v": "persisted"}'.hex()
    assert pg_entry(m, ROOT_INO, "gone.bin") is not None
    assert pg_entry(m, ROOT_INO, "new") is None
    assert pg_entry(m, ROOT_INO, "top.bin") is None
    assert wal_bytes(m) > sum(len(d) for d in files.values())

    m.kill9()
    m.start()  # replays the log before it serves anything

    # Checked in PostgreSQL before any request reaches the new daemon.
    assert pg_entry(m, ROOT_INO, "old.json")[3] == b'{"v": "rewritten"}'.hex()
    assert pg_entry(m, ROOT_INO, "gone.bin") is None
    row = pg_entry(m, ROOT_INO, "new")
    assert row is not None and row[0] == new_ino and row[1] == KIND_DIR
    for rel, data in files.items():
        parent = new_ino if rel.startswith("new/") else ROOT_INO
        row = pg_entry(m, parent, os.path.basename(rel))
        assert row is not None, f"{rel}: not in PostgreSQL after the replay"
        assert row[0] == inos[rel], rel
        assert row[3] == data.hex(), f"{rel}: other bytes in PostgreSQL"
    assert wal_bytes(m) == 0, "the replayed records are still in the log"
    # And the mount agrees.
    for rel, data in files.items():
        assert read_file(m.path(rel)) == data, rel
    assert sorted(os.listdir(m.mnt)) == ["new", "old.json", "top.bin"]


# --- passwords --------------------------------------------------------------------

def argv_with_postgres(m, uri, form):
    """m.argv() with the PostgreSQL URI given as @uri in @form ("--postgres",
    "-o" or "env"); returns (argv, extra environment)."""
    argv = m.argv()
    i = argv.index(f"--postgres={m.pg.uri}")
    if form == "--postgres":
        argv[i] = f"--postgres={uri}"
        return argv, {}
    del argv[i]
    if form == "-o":
        o = argv.index("-o")
        argv[o + 1] = f"postgres={uri},{argv[o + 1]}"
        return argv, {}
    assert form == "env", form
    return argv, {"TIERFS_POSTGRES": uri}


@pytest.mark.parametrize("form", ["--postgres", "-o", "env"])
def test_wrong_password_is_refused_without_quoting_it(tierfs_factory, form):
    m = tierfs_factory(start=False)
    good = pg_password(m)
    wrong = f"wrong-{secrets.token_hex(6)}"
    parts = urlsplit(m.pg.uri)
    bad_uri = parts._replace(netloc=parts.netloc.replace(f":{good}@", f":{wrong}@", 1)).geturl()
    assert wrong in bad_uri and good not in bad_uri
    argv, extra = argv_with_postgres(m, bad_uri, form)
    env = dict(m.env(), **extra)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", env=env, timeout=120)
    finally:
        if in_mount_table(m.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(m.mnt)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    # the engine cannot open (eng_open fails): exit 1
    assert proc.returncode == 1, f"tierfs did not refuse a wrong password:\n{out}"
    assert not is_mounted(m.mnt)
    assert "authentication" in out.lower(), f"the message does not say why: {out!r}"
    assert wrong not in out, f"the output quotes the wrong password: {out!r}"
    assert good not in out, f"the output quotes the password: {out!r}"


@pytest.mark.parametrize("form", ["--postgres", "-o"])
def test_running_daemon_command_line_hides_the_password(tierfs_factory, form):
    m = tierfs_factory(start=False)
    password = pg_password(m)
    argv, _ = argv_with_postgres(m, m.pg.uri, form)
    assert argv[0] == str(TIERFS_BIN)
    m.args = argv[1:]
    m.start()
    write_file(m.path("x.json"), b'{"seen": true}')
    fsync_path(m.path("x.json"))
    assert pg_entry(m, ROOT_INO, "x.json")[3] == b'{"seen": true}'.hex()

    host = urlsplit(m.pg.uri).hostname.encode()

    # The daemon masks its arguments in place before it mounts.
    with open(f"/proc/{m.proc.pid}/cmdline", "rb") as f:
        seen = f.read()
    assert host in seen and str(m.mnt).encode() in seen, seen  # the right process
    assert password.encode() not in seen, f"/proc/{m.proc.pid}/cmdline shows the password: {seen!r}"
    ps = m.run(["ps", "-ww", "-o", "args=", "-p", str(m.proc.pid)]).stdout
    assert str(m.mnt) in ps and password not in ps, ps

    xattrs = m.run(["getfattr", "-R", "-d", "-m", "-", "."], check=False)
    assert password not in xattrs.stdout + xattrs.stderr
    m.unmount()
    assert password not in m.stderr_text()
