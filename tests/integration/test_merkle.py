"""Merkle hashes (issue 4, items 1 and 3; docs/design.md §4):
user.tierfs.merkle of files and directories, kept in L3 in the batch's own
transaction, equal to `tierfs hash` over a copy of the tree made with tar,
and mirrored in Redis.

The definition (docs/merkle.md): a file's hash is the SHA-256 of its
content; a directory's is the SHA-256 over its children sorted by name
bytes of name | 0x00 | 'd' or 'f' | the child's 32-byte hash. It is
recomputed here in Python, independently of the C code, as a third opinion.
"""

import ctypes
import errno
import hashlib
import os
import shutil
import subprocess

import pytest

from conftest import TIERFS_BIN, run

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

MERKLE = "user.tierfs.merkle"
EMPTY = hashlib.sha256(b"").hexdigest()


def py_merkle(path):
    """The Merkle hash of @path (bytes or str), in Python: the oracle."""
    path = os.fsencode(path)
    if not os.path.isdir(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        child = os.path.join(path, name)
        is_dir = os.path.isdir(child)
        h.update(name + b"\0" + (b"d" if is_dir else b"f") + py_merkle(child))
    return h.digest()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def make_tree(root):
    """A tree with what makes the encoding matter: a JSON item x.json beside
    a directory x, names that are prefixes of each other, UTF-8 names and
    spaces, an empty file, an empty directory, binary bytes with NULs."""
    os.makedirs(os.path.join(root, "x", "deep", "deeper"))
    os.makedirs(os.path.join(root, "empty"))
    os.makedirs(os.path.join(root, "caf\u00e9 dir"))
    write(os.path.join(root, "x.json"), b'{"x": 1}')
    write(os.path.join(root, "x", "a.j"), b"\0\1\2" * 100)
    write(os.path.join(root, "x", "a.json"), b"[1, 2, 3]")
    write(os.path.join(root, "x", "ab"), b"")
    write(os.path.join(root, "x", "deep", "deeper", "leaf.json"), b'"leaf"')
    write(os.path.join(root, "caf\u00e9 dir", "\u65e5\u672c.txt"), "日本".encode())
    write(os.path.join(root, "z.bin"), bytes(range(256)) * 40)


def merkle(m, rel=""):
    return m.getfattr(m.path(rel) if rel else m.mnt, MERKLE)


def tierfs_hash(path):
    """`tierfs hash PATH`: the hex hash on its line."""
    cp = run([str(TIERFS_BIN), "hash", str(path)])
    line = cp.stdout.strip()
    assert line.endswith(f"  {path}"), line
    return line.split()[0]


def test_root_equals_hash_of_tar_copy(tierfs, tmp_path):
    """Issue 4 item 3: tar the mount, extract it elsewhere, `tierfs hash`
    of the copy equals the root's user.tierfs.merkle; one byte changed and
    they differ."""
    m = tierfs
    make_tree(m.mnt)
    root = merkle(m)
    assert len(root) == 64 and root != EMPTY
    archive = tmp_path / "tree.tar"
    copy = tmp_path / "copy"
    copy.mkdir()
    run(["tar", "-C", str(m.mnt), "-cf", str(archive), "."])
    run(["tar", "-C", str(copy), "-xf", str(archive)])
    assert tierfs_hash(copy) == root
    assert py_merkle(copy).hex() == root
    # a subdirectory's hash is the hash of the same subtree of the copy
    assert merkle(m, "x") == tierfs_hash(copy / "x")
    assert merkle(m, "x/deep") == py_merkle(copy / "x" / "deep").hex()
    assert merkle(m, "empty") == EMPTY

    data = bytearray((copy / "z.bin").read_bytes())
    data[1234] ^= 1
    (copy / "z.bin").write_bytes(bytes(data))
    assert tierfs_hash(copy) != root


def test_file_merkle_is_its_content_hash(tierfs):
    m = tierfs
    write(m.path("f.json"), b'{"k": "v"}')
    expected = hashlib.sha256(b'{"k": "v"}').hexdigest()
    assert merkle(m, "f.json") == expected
    assert m.getfattr(m.path("f.json"), "user.tierfs.hash") == expected


def test_merkle_follows_changes(tierfs):
    """Writes, renames and deletes change the hashes of every directory
    above them; metadata does not count; undoing a change restores the
    hash."""
    m = tierfs
    os.makedirs(m.path("a", "b"))
    write(m.path("a", "b", "c.json"), b"1")
    start_root, start_a, start_b = merkle(m), merkle(m, "a"), merkle(m, "a/b")

    write(m.path("a", "b", "c.json"), b"2")
    assert merkle(m, "a/b") != start_b
    assert merkle(m, "a") != start_a
    assert merkle(m) != start_root
    write(m.path("a", "b", "c.json"), b"1")
    assert (merkle(m), merkle(m, "a"), merkle(m, "a/b")) == (start_root, start_a, start_b)

    os.rename(m.path("a", "b", "c.json"), m.path("a", "c.json"))
    assert merkle(m, "a/b") == EMPTY
    assert merkle(m) != start_root
    os.rename(m.path("a", "c.json"), m.path("a", "b", "c.json"))
    assert merkle(m) == start_root

    os.chmod(m.path("a", "b", "c.json"), 0o600)
    os.utime(m.path("a", "b", "c.json"), (1, 1))
    run(["setfattr", "-n", "user.color", "-v", "red", str(m.path("a", "b", "c.json"))])
    run(["setfattr", "-n", "user.tierfs.state", "-v", "done", str(m.path("a", "b", "c.json"))])
    assert merkle(m) == start_root

    os.unlink(m.path("a", "b", "c.json"))
    assert merkle(m, "a/b") == EMPTY
    os.rmdir(m.path("a", "b"))
    os.rmdir(m.path("a"))
    assert merkle(m) == EMPTY


def test_json_item_beside_directory_are_two_children(tierfs):
    m = tierfs
    os.mkdir(m.path("x"))
    with_dir_only = merkle(m)
    write(m.path("x.json"), b"{}")
    both = merkle(m)
    assert both != with_dir_only
    h = hashlib.sha256()
    h.update(b"x\0d" + hashlib.sha256(b"").digest())
    h.update(b"x.json\0f" + hashlib.sha256(b"{}").digest())
    assert both == h.hexdigest()


def test_merkle_is_kept_in_l3(tierfs):
    """The value comes from L3: it survives a remount, and in PostgreSQL it
    is the root row's merkle column."""
    m = tierfs
    make_tree(m.mnt)
    root, sub = merkle(m), merkle(m, "x/deep")
    m.remount()
    assert merkle(m) == root
    assert merkle(m, "x/deep") == sub
    if m.store.uses_postgres:
        assert m.psql("SELECT encode(merkle, 'hex') FROM entries WHERE ino = 1") == root


def test_merkle_listed_on_root_only(tierfs):
    m = tierfs
    os.mkdir(m.path("d"))
    write(m.path("d", "f.json"), b"1")
    assert MERKLE in os.listxattr(m.mnt)
    assert MERKLE not in os.listxattr(m.path("d"))
    assert MERKLE not in os.listxattr(m.path("d", "f.json"))
    # readable by name everywhere
    assert len(merkle(m, "d")) == 64
    assert len(merkle(m, "d/f.json")) == 64


def test_merkle_read_only(tierfs):
    """A restore writing the synthetic name back is accepted and ignored."""
    m = tierfs
    write(m.path("f.json"), b"1")
    before = merkle(m)
    run(["setfattr", "-n", MERKLE, "-v", "0" * 64, str(m.mnt)])
    assert merkle(m) == before


@pytest.mark.stores("redis+postgres")
def test_tree_is_mirrored_in_redis(tierfs):
    """Every committed directory hash is in Redis under PREFIX t:INO."""
    m = tierfs
    make_tree(m.mnt)
    root = merkle(m)   # commits everything pending first
    url = m.store.redis_url

    def mirrored(rel):
        ino = os.stat(m.path(rel) if rel else m.mnt).st_ino
        cp = run(["redis-cli", "-u", url, "GET", f"{m.redis_prefix}t:{ino}"])
        return cp.stdout.strip()

    assert mirrored("") == root
    assert mirrored("x/deep/deeper") == merkle(m, "x/deep/deeper")
    assert mirrored("empty") == EMPTY
    ino = os.stat(m.path("empty")).st_ino
    os.rmdir(m.path("empty"))
    assert merkle(m) != root
    cp = run(["redis-cli", "-u", url, "EXISTS", f"{m.redis_prefix}t:{ino}"])
    assert cp.stdout.strip() == "0"


def test_merkle_sizes_and_removed_directory(tierfs):
    """fgetxattr(2) itself: size 0 measures (64), 63 bytes is ERANGE; a
    directory removed while still open answers ENOENT."""
    m = tierfs
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fgetxattr.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    libc.fgetxattr.restype = ctypes.c_ssize_t
    os.mkdir(m.path("gone"))
    fd = os.open(m.path("gone"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = ctypes.create_string_buffer(64)
        assert libc.fgetxattr(fd, MERKLE.encode(), None, 0) == 64
        assert libc.fgetxattr(fd, MERKLE.encode(), buf, 63) == -1
        assert ctypes.get_errno() == errno.ERANGE
        assert libc.fgetxattr(fd, MERKLE.encode(), buf, 64) == 64
        assert buf.raw.decode() == EMPTY
        os.rmdir(m.path("gone"))
        with pytest.raises(OSError) as err:
            os.getxattr(fd, MERKLE)
        assert err.value.errno == errno.ENOENT
    finally:
        os.close(fd)
