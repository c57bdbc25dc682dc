"""`tierfs hash [--progress] PATH...`: the Merkle hash of engine/merkle.h over
ordinary directories, no mount needed.

The oracle is an independent implementation of the definition written here
(hashlib, os.scandir over bytes paths, children sorted by their name bytes),
compared with the command on a random tree (seeded; the seed is in the test
id's output on failure), on a copy of it made with tar, and after changes
that must or must not move the hash. Then the refusals (a symbolic link or a
fifo in the tree, a missing PATH, usage errors), a tree 1,000 levels deep
(paths far longer than PATH_MAX) hashed with few file descriptors, and the
progress report on a pipe and on a terminal.
"""

import errno
import hashlib
import os
import pty
import pwd
import random
import re
import resource
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import TIERFS_BIN, TOOL_ENV, TOOL_TIMEOUT, run

SEED = 0x7469657266730011
MIB = 1 << 20
LINE = re.compile(r"^([0-9a-f]{64})  (.*)$")
REFUSED = "tierfs holds only regular files and directories"


@pytest.fixture(autouse=True)
def _binary():
    if not TIERFS_BIN.exists():
        pytest.fail(f"tierfs binary not found: {TIERFS_BIN} (build it or set TIERFS_BIN)")


# ---- the oracle --------------------------------------------------------------

def oracle(path):
    """The Merkle hash (32 bytes) of @path (str or bytes), from the definition:
    a file hashes its content, a directory the concatenation over its children
    sorted by name bytes of name | 0x00 | 'd' or 'f' | child hash."""
    path = os.fsencode(path)
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(MIB), b""):
                h.update(chunk)
        return h.digest()
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path!r} is neither a file nor a directory")
    with os.scandir(path) as it:
        children = sorted(it, key=lambda e: e.name)  # bytes: memcmp order
    h = hashlib.sha256()
    for e in children:
        kind = b"d" if e.is_dir(follow_symlinks=False) else b"f"
        h.update(e.name + b"\0" + kind + oracle(e.path))
    return h.digest()


def hash_cmd(*args, check_rc=0, **kw):
    """Runs `tierfs hash ARGS`; checks its exit status when @check_rc is not
    None and returns the CompletedProcess."""
    cp = run([str(TIERFS_BIN), "hash", *map(str, args)], check=False, **kw)
    if check_rc is not None:
        assert cp.returncode == check_rc, (
            f"exit {cp.returncode}, want {check_rc}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    return cp


def tierfs_hash(path):
    """The hash `tierfs hash PATH` prints (hex), checking its line and
    that it stays silent on stderr (not a terminal, no --progress)."""
    cp = hash_cmd(path)
    assert cp.stderr == ""
    lines = cp.stdout.splitlines()
    assert len(lines) == 1, cp.stdout
    m = LINE.match(lines[0])
    assert m, lines[0]
    assert m.group(2) == str(path)
    return m.group(1)


# ---- trees -------------------------------------------------------------------

# Names that sort differently as bytes, by locale or as code points, that
# are prefixes of each other, that hold spaces, UTF-8, and one that is not
# UTF-8 at all.
NAME_POOL = [b"a", b"a.json", b"ab", b"a b", b" lead", b"trail ", b"B", b"b",
             b"x", b"x.json", b"\xc3\xa9t\xc3\xa9", b"\xe6\x97\xa5\xe6\x9c\xac.json",
             b"caf\xe9", b"\xff", b"-dash", b".hidden", b"0", b"10", b"9"]


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def make_tree(root, rng):
    """Builds a random tree at @root (bytes or str) and returns how many
    files it holds and their bytes."""
    root = os.fsencode(root)
    os.mkdir(root)
    stats = {"files": 0, "bytes": 0}

    def file(path, data):
        write(path, data)
        stats["files"] += 1
        stats["bytes"] += len(data)

    # what every tree holds
    os.mkdir(os.path.join(root, b"empty dir"))
    file(os.path.join(root, b"empty file"), b"")
    file(os.path.join(root, b"big.bin"), rng.randbytes(5 * MIB))
    os.mkdir(os.path.join(root, b"x"))
    file(os.path.join(root, b"x", b"inner.json"), b'{"in": true}')
    file(os.path.join(root, b"x.json"), b'{"x": 1}')
    os.mkdir(os.path.join(root, b"non-utf8 \xff\xfe"))
    file(os.path.join(root, b"non-utf8 \xff\xfe", b"\x80"), b"raw")

    def fill(d, depth):
        for name in rng.sample(NAME_POOL, rng.randint(0, 7)):
            p = os.path.join(d, name)
            if os.path.lexists(p):
                continue
            if depth < 4 and rng.random() < 0.4:
                os.mkdir(p)
                fill(p, depth + 1)
            else:
                file(p, rng.randbytes(rng.choice([0, 1, 17, 4096, 70000])))

    fill(root, 0)
    fill(os.path.join(root, b"x"), 1)
    return stats


@pytest.fixture
def tree(tmp_path):
    """A random tree at tmp_path/tree, built from SEED."""
    root = tmp_path / "tree"
    make_tree(root, random.Random(SEED))
    return root


# ---- the hash is the definition's --------------------------------------------

def test_random_tree_equals_the_oracle(tmp_path):
    for i in range(4):
        seed = SEED + i
        root = tmp_path / f"tree{i}"
        make_tree(root, random.Random(seed))
        assert tierfs_hash(root) == oracle(root).hex(), f"seed {seed:#x}"


def test_known_small_tree(tmp_path):
    """A tree small enough to check by hand, against hashlib directly:
    prefix names, a file beside a directory of the same stem, an empty
    directory and an empty file."""
    root = tmp_path / "small"
    root.mkdir()
    write(root / "a", b"A")
    write(root / "a.json", b"{}")
    (root / "ab").mkdir()
    (root / "x").mkdir()
    write(root / "x" / "y", b"hi")
    write(root / "x.json", b'{"x":1}')
    write(root / "z", b"")
    H = lambda b: hashlib.sha256(b).digest()  # noqa: E731
    x = H(b"y\0f" + H(b"hi"))
    want = H(b"a\0f" + H(b"A") + b"a.json\0f" + H(b"{}") + b"ab\0d" + H(b"")
             + b"x\0d" + x + b"x.json\0f" + H(b'{"x":1}') + b"z\0f" + H(b""))
    assert tierfs_hash(root) == want.hex()
    assert tierfs_hash(root / "ab") == H(b"").hex()  # an empty directory
    assert tierfs_hash(root / "z") == H(b"").hex()  # an empty file
    assert tierfs_hash(root / "x") == x.hex()


def test_a_file_hashes_as_sha256sum_does(tree):
    big = tree / "big.bin"
    out = run(["sha256sum", str(big)]).stdout
    assert hash_cmd(big).stdout == out


def test_tar_copy_hashes_equal(tree, tmp_path):
    archive = tmp_path / "tree.tar"
    copy = tmp_path / "copy"
    copy.mkdir()
    run(["tar", "-C", str(tree), "-cf", str(archive), "."])
    run(["tar", "-C", str(copy), "-xf", str(archive)])
    before = tierfs_hash(tree)
    assert tierfs_hash(copy) == before
    assert oracle(copy).hex() == before


# ---- what changes the hash and what does not ---------------------------------

def test_one_byte_changes_the_hash(tree):
    before = tierfs_hash(tree)
    big = tree / "big.bin"
    with open(big, "r+b") as f:
        f.seek(3 * MIB + 5)
        b = f.read(1)
        f.seek(3 * MIB + 5)
        f.write(bytes([b[0] ^ 0x01]))
    after = tierfs_hash(tree)
    assert after != before
    assert after == oracle(tree).hex()
    with open(big, "r+b") as f:
        f.seek(3 * MIB + 5)
        f.write(b)
    assert tierfs_hash(tree) == before


def test_rename_changes_the_hash(tree):
    before = tierfs_hash(tree)
    os.rename(tree / "x.json", tree / "y.json")
    after = tierfs_hash(tree)
    assert after != before
    assert after == oracle(tree).hex()
    os.rename(tree / "y.json", tree / "x.json")
    assert tierfs_hash(tree) == before
    # a file moved into a directory of the same stem
    os.rename(tree / "x.json", tree / "x" / "moved.json")
    assert tierfs_hash(tree) != before


def test_a_file_and_an_empty_directory_differ(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write(a / "n", b"")
    (b / "n").mkdir()  # same name, same (empty) content hash, other type
    assert tierfs_hash(a) != tierfs_hash(b)


def test_metadata_does_not_change_the_hash(tree):
    before = tierfs_hash(tree)
    f, d = tree / "x.json", tree / "x"
    os.chmod(f, 0o600)
    os.chmod(d, 0o700)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert tierfs_hash(tree) == before
    run(["touch", "-m", "-d", "2001-02-03 04:05:06", str(f), str(d), str(tree)])
    assert os.stat(f).st_mtime == os.stat(d).st_mtime < 1e9
    assert tierfs_hash(tree) == before
    cp = run(["setfattr", "-n", "user.x", "-v", "1", str(f)], check=False)
    if cp.returncode != 0 and "Operation not supported" in cp.stderr:
        pytest.skip(f"user xattrs unsupported here: {cp.stderr.strip()}")
    assert cp.returncode == 0, cp.stderr
    run(["setfattr", "-n", "user.x", "-v", "2", str(d)])
    assert os.getxattr(f, "user.x") == b"1"
    assert tierfs_hash(tree) == before


# ---- refusals and errors -----------------------------------------------------

def test_symlink_is_refused(tree, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write(other / "f", b"f")
    want_other = oracle(other).hex()
    os.symlink("../x.json", tree / "x" / "link")  # a link to a file
    cp = hash_cmd(tree, other, check_rc=1)
    assert cp.stderr == f"tierfs hash: {tree}/x/link: a symbolic link: {REFUSED}\n"
    # no line for the tree, and the next PATH was still hashed
    assert cp.stdout == f"{want_other}  {other}\n"


def test_symlink_to_a_directory_is_not_followed(tree):
    os.symlink(".", tree / "x" / "loop")  # following it would never end
    cp = hash_cmd(tree, check_rc=1)
    assert cp.stdout == ""
    assert cp.stderr == f"tierfs hash: {tree}/x/loop: a symbolic link: {REFUSED}\n"


def test_fifo_is_refused(tree):
    os.mkfifo(tree / "empty dir" / "pipe")
    cp = hash_cmd(tree, check_rc=1)  # and does not block opening it
    assert cp.stdout == ""
    assert cp.stderr == f"tierfs hash: {tree}/empty dir/pipe: a fifo: {REFUSED}\n"


def test_missing_path(tree, tmp_path):
    missing = tmp_path / "no such"
    cp = hash_cmd(missing, tree, check_rc=1)
    assert cp.stderr == f"tierfs hash: {missing}: {os.strerror(errno.ENOENT)}\n"
    assert cp.stdout == f"{oracle(tree).hex()}  {tree}\n"


def test_unreadable_file(tmp_path):
    """A file the caller may not read: exit 1, its path and the reason on
    stderr, no hash line. Root reads everything, so as root the command runs
    as 'nobody' (setpriv), on a tree and a copy of the binary in a
    world-searchable directory (pytest's tmp_path is root's alone)."""
    prefix, binary, base = [], TIERFS_BIN, tmp_path
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv is missing (Debian package util-linux)")
        pw = pwd.getpwnam("nobody")
        base = Path(tempfile.mkdtemp(prefix="tierfs-hash-"))
        os.chmod(base, 0o755)
        binary = base / "tierfs"
        shutil.copy2(TIERFS_BIN, binary)
        os.chmod(binary, 0o755)
        prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                  "--clear-groups"]
    try:
        tree = base / "tree"
        (tree / "x").mkdir(parents=True)
        os.chmod(tree, 0o755)
        os.chmod(tree / "x", 0o755)
        f = tree / "x" / "inner.json"
        write(f, b'{"in": true}')
        os.chmod(f, 0)
        cp = run([*prefix, str(binary), "hash", str(tree)], check=False)
        assert cp.returncode == 1, cp.stdout + cp.stderr
        assert cp.stdout == ""
        assert cp.stderr == f"tierfs hash: {f}: cannot open: {os.strerror(errno.EACCES)}\n"
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


def test_two_paths_two_lines(tree, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    cp = hash_cmd(tree, f"{other}/.", tree / "big.bin")
    assert cp.stdout.splitlines() == [
        f"{oracle(tree).hex()}  {tree}",
        f"{hashlib.sha256(b'').hexdigest()}  {other}/.",
        f"{oracle(tree / 'big.bin').hex()}  {tree}/big.bin",
    ]
    assert cp.stderr == ""


def test_path_with_newline_is_escaped_as_sha256sum_does(tmp_path):
    f = tmp_path / "new\nline\\"
    write(f, b"content")
    out = hash_cmd(f).stdout
    assert out == run(["sha256sum", str(f)]).stdout
    assert out == f"\\{hashlib.sha256(b'content').hexdigest()}  {tmp_path}/new\\nline\\\\\n"


def test_usage_errors():
    cp = hash_cmd(check_rc=2)
    assert cp.stdout == ""
    assert "usage: tierfs hash" in cp.stderr
    cp = hash_cmd("--no-such-option", ".", check_rc=2)
    assert cp.stdout == ""
    assert "'--no-such-option'" in cp.stderr and "usage: tierfs hash" in cp.stderr
    cp = hash_cmd("--help", check_rc=0)
    assert cp.stdout.startswith("usage: tierfs hash [--progress] PATH...")
    assert cp.stderr == ""


def test_double_dash_ends_options(tmp_path):
    write(tmp_path / "--progress", b"p")
    cp = hash_cmd("--", "--progress", cwd=tmp_path)
    assert cp.stdout == f"{hashlib.sha256(b'p').hexdigest()}  --progress\n"
    assert cp.stderr == ""


# ---- depth -------------------------------------------------------------------

DEPTH = 1000
COMPONENT = "level-{:04d}-" + "d" * 13  # 24 bytes: ~25,000-byte paths


def make_deep(root):
    """Builds @root/<DEPTH nested directories>, each holding a file "f"
    with its level number, the deepest also "leaf.json"; returns the
    expected hash, computed from the definition without the filesystem."""
    os.mkdir(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(DEPTH):
            write_at(fd, "f", str(i).encode())
            name = COMPONENT.format(i)
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        write_at(fd, "leaf.json", b"{}")
    finally:
        os.close(fd)
    H = lambda b: hashlib.sha256(b).digest()  # noqa: E731
    h = H(b"leaf.json\0f" + H(b"{}"))
    for i in reversed(range(DEPTH)):
        # "f" < "level-..."
        h = H(b"f\0f" + H(str(i).encode()) + COMPONENT.format(i).encode() + b"\0d" + h)
    return h.hex()


def write_at(dir_fd, name, data):
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@pytest.fixture
def deep(tmp_path):
    root = tmp_path / "deep"
    want = make_deep(root)
    yield root, want
    # shutil.rmtree recurses in Python and may not reach the bottom
    run(["rm", "-rf", str(root)])


def test_deep_tree(deep):
    root, want = deep
    assert len(str(root)) + DEPTH * (len(COMPONENT.format(0)) + 1) > os.pathconf(root, "PC_PATH_MAX")
    assert tierfs_hash(root) == want


def test_deep_tree_with_few_file_descriptors(deep):
    """Descriptors are bounded, not one per level: 1,000 levels hash with
    64 descriptors allowed."""
    root, want = deep

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    cp = subprocess.run([str(TIERFS_BIN), "hash", str(root)], env=TOOL_ENV, preexec_fn=limit,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        timeout=TOOL_TIMEOUT)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == f"{want}  {root}\n"


def test_deep_symlink_is_named_by_its_full_path(deep):
    root, _ = deep
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(DEPTH):
            nfd = os.open(COMPONENT.format(i), os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.symlink("leaf.json", "link", dir_fd=fd)
    finally:
        os.close(fd)
    cp = hash_cmd(root, check_rc=1)
    path = "/".join([str(root)] + [COMPONENT.format(i) for i in range(DEPTH)] + ["link"])
    assert cp.stderr == f"tierfs hash: {path}: a symbolic link: {REFUSED}\n"
    assert cp.stdout == ""


# ---- progress ----------------------------------------------------------------

def small_counted_tree(tmp_path):
    root = tmp_path / "counted"
    root.mkdir()
    (root / "d").mkdir()
    write(root / "d" / "one", b"1")
    write(root / "two", b"2" * (3 * MIB))
    write(root / "three", b"3" * (2 * MIB))
    return root  # 3 files, 5 MiB + 1 byte


def test_progress_on_a_pipe(tmp_path):
    root = small_counted_tree(tmp_path)
    cp = hash_cmd("--progress", root)
    assert cp.stdout == f"{oracle(root).hex()}  {root}\n"
    lines = cp.stderr.splitlines(keepends=True)
    assert lines, "no progress line"
    for line in lines:
        assert re.fullmatch(r"tierfs hash: \d+ files, \d+ MiB\n", line), line
    assert lines[-1] == "tierfs hash: 3 files, 5 MiB\n"
    # and none without --progress when stderr is not a terminal
    assert hash_cmd(root).stderr == ""


def test_progress_on_a_terminal(tmp_path):
    root = small_counted_tree(tmp_path)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([str(TIERFS_BIN), "hash", str(root)], env=TOOL_ENV,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=slave)
    finally:
        os.close(slave)
    try:
        out, _ = proc.communicate(timeout=TOOL_TIMEOUT)
        tty = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError as e:  # EIO: the other side is closed
                if e.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            tty += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert out.decode() == f"{oracle(root).hex()}  {root}\n"
    # rewritten in place with \r, ended by the final line (the terminal
    # turns \n into \r\n)
    assert tty.startswith(b"\r"), tty
    assert tty.endswith(b"\rtierfs hash: 3 files, 5 MiB\r\n"), tty


def test_output_and_input_errors(tree):
    """A full stdout, a PATH that is a device, and a file whose read fails:
    exit 1 with the reason, never a hash for what could not be read."""
    with open("/dev/full", "w") as full:
        cp = subprocess.run([str(TIERFS_BIN), "hash", str(tree)], stdout=full,
                            stderr=subprocess.PIPE, text=True, env=TOOL_ENV,
                            timeout=TOOL_TIMEOUT)
    assert cp.returncode == 1
    assert cp.stderr == f"tierfs hash: cannot write the hashes: {os.strerror(errno.ENOSPC)}\n"
    cp = hash_cmd("/dev/null", check_rc=1)
    assert cp.stdout == ""
    assert cp.stderr == f"tierfs hash: /dev/null: a character device: {REFUSED}\n"
    cp = hash_cmd("/proc/self/mem", check_rc=1)  # reading offset 0 fails: EIO
    assert cp.stdout == ""
    assert cp.stderr == f"tierfs hash: /proc/self/mem: cannot read: {os.strerror(errno.EIO)}\n"
