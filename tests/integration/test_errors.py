"""What tierfs refuses, and that a refusal changes nothing: invalid JSON
(EINVAL), oversize items (EFBIG), bad names (EINVAL, ENAMETOOLONG), two
names for one item ID (EEXIST), links and special files (EPERM).

Shell redirections ignore close() errors, so the refusals reported at close
are checked with Python file operations and with tools that check close()
(cp, truncate, sed, mv). The coreutils exit 1 on such a failure; GNU sed
exits 4 when it cannot rename its output into place."""

import errno
import os
import subprocess
import shutil

import pytest

from conftest import read_settled

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

MIB = 1024 * 1024


def raises_errno(code, fn, *args, **kwargs):
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, (
        f"expected {errno.errorcode[code]}, got {errno.errorcode.get(info.value.errno)}: {info.value}")
    return info.value


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def create(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))


# --- invalid JSON ---------------------------------------------------------

def test_invalid_json_fails_einval_and_old_content_stays(tierfs, tmp_path):
    old = b'{"a": 1}'
    target = tierfs.path("x.json")
    write_file(target, old)

    fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b'{"a": ')
    raises_errno(errno.EINVAL, os.close, fd)
    assert read_settled(target, old) == old
    assert os.stat(target).st_size == len(old)

    bad = tmp_path / "bad.txt"
    write_file(bad, b"not json at all\n")
    cp = tierfs.run(["cp", str(bad), "x.json"], check=False)
    assert cp.returncode == 1 and "Invalid argument" in cp.stderr, cp.stderr
    assert read_settled(target, old) == old

    cp = tierfs.run(["truncate", "-s", "3", "x.json"], check=False)
    assert cp.returncode == 1 and "Invalid argument" in cp.stderr, cp.stderr
    assert read_settled(target, old) == old

    # sed -i writes a temporary (binary) file, then renames it onto
    # x.json: the rename is refused (EINVAL), and sed exits 4
    cp = tierfs.run(["sed", "-i", "s/}//", "x.json"], check=False)
    assert cp.returncode == 4 and "Invalid argument" in cp.stderr, cp.stderr
    assert read_file(target) == old

    # Renaming a file with invalid content onto a .json name is refused too.
    write_file(tierfs.path("plain.txt"), b"{oops")
    raises_errno(errno.EINVAL, os.rename, tierfs.path("plain.txt"), target)
    raises_errno(errno.EINVAL, os.rename, tierfs.path("plain.txt"), tierfs.path("fresh.json"))
    assert read_file(tierfs.path("plain.txt")) == b"{oops"
    assert read_file(target) == old
    assert not tierfs.path("fresh.json").exists()

    assert tierfs.getfattr(target, "user.tierfs.hash") == tierfs.run(["sha256sum", "x.json"]).stdout.split()[0]
    tierfs.remount()
    assert read_file(target) == old


def test_valid_and_empty_json_accepted(tierfs):
    for name, data in [("obj.json", b'{"k": [1, 2.5, "s", null, true]}'),
                       ("num.json", b"42"), ("str.json", b'"text"'),
                       ("ws.json", b"  [ ]\n\n"), ("empty.json", b"")]:
        write_file(tierfs.path(name), data)
        assert read_file(tierfs.path(name)) == data, name  # bytes are sacred
    tierfs.run(["touch", "touched.json"])
    assert os.stat(tierfs.path("touched.json")).st_size == 0
    tierfs.remount()
    assert read_file(tierfs.path("obj.json")) == b'{"k": [1, 2.5, "s", null, true]}'
    assert read_file(tierfs.path("ws.json")) == b"  [ ]\n\n"


# --- size limit -----------------------------------------------------------

def close_errno(fd):
    """Closes @fd (close(2) frees it even when it fails) and returns the
    errno close() reported, 0 for none. After a refused write it is EFBIG
    again: the refusal marks the working copy failed, and the flush at
    close will not publish it."""
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


def test_oversize_write_fails_efbig(tierfs_factory):
    m = tierfs_factory(options=["max_item_bytes=1048576"])
    path = m.path("big.bin")
    data = os.urandom(2 * MIB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    try:
        with pytest.raises(OSError) as info:
            while written < len(data):
                n = os.write(fd, data[written:written + 64 * 1024])
                assert n > 0
                written += n
        assert info.value.errno == errno.EFBIG, info.value
        # 16 writes of 64 KiB fill the limit exactly; the 17th crosses it
        assert written == MIB
    finally:
        closed = close_errno(fd)
    assert closed == errno.EFBIG, errno.errorcode.get(closed, closed)
    # Nothing is stored: the file that open(O_CREAT) made stays empty.
    assert read_settled(path, b"") == b""
    assert os.stat(path).st_size == 0

    # An existing file keeps its previous content.
    old = m.path("old.bin")
    write_file(old, b"previous")
    fd = os.open(old, os.O_WRONLY)
    try:
        raises_errno(errno.EFBIG, os.pwrite, fd, b"x", 2 * MIB)
    finally:
        closed = close_errno(fd)
    assert closed == errno.EFBIG, errno.errorcode.get(closed, closed)
    assert read_settled(old, b"previous") == b"previous"

    cp = m.run(["truncate", "-s", "2M", "old.bin"], check=False)
    assert cp.returncode == 1 and "File too large" in cp.stderr, cp.stderr
    assert read_settled(old, b"previous") == b"previous"

    # Exactly the limit is accepted.
    write_file(m.path("exact.bin"), data[:MIB])
    assert os.stat(m.path("exact.bin")).st_size == MIB

    m.remount()
    assert os.stat(path).st_size == 0
    assert read_file(old) == b"previous"
    assert read_file(m.path("exact.bin")) == data[:MIB]


def test_oversize_cp_fails(tierfs_factory, tmp_path):
    m = tierfs_factory(options=["max_item_bytes=1048576"])
    src = tmp_path / "two-mib.json"
    write_file(src, b'"' + b"a" * (2 * MIB - 2) + b'"')
    cp = m.run(["cp", str(src), "big.json"], check=False)
    assert cp.returncode == 1 and "File too large" in cp.stderr, cp.stderr
    # cp created big.json (empty, valid JSON) and leaves it after the error
    assert read_settled(m.path("big.json"), b"") == b""
    assert os.stat(m.path("big.json")).st_size == 0


# --- names ----------------------------------------------------------------

def test_control_bytes_in_names_fail_einval(tierfs):
    for name in ["a\nb.json", "tab\there", "bell\x07", "esc\x1b[0m"]:
        raises_errno(errno.EINVAL, create, tierfs.path(name))
        raises_errno(errno.EINVAL, os.mkdir, tierfs.path(name))
    cp = tierfs.run(["touch", "new\nline"], check=False)
    assert cp.returncode == 1 and "Invalid argument" in cp.stderr, cp.stderr
    write_file(tierfs.path("ok.bin"), b"x")
    raises_errno(errno.EINVAL, os.rename, tierfs.path("ok.bin"), tierfs.path("not\nok.bin"))
    assert os.listdir(tierfs.mnt) == ["ok.bin"]


def test_long_names_fail_enametoolong(tierfs):
    raises_errno(errno.ENAMETOOLONG, create, tierfs.path("n" * 256))
    raises_errno(errno.ENAMETOOLONG, os.mkdir, tierfs.path("d" * 256))
    raises_errno(errno.ENAMETOOLONG, create, tierfs.path("j" * 251 + ".json"))
    # looking a name that long up says so too (not ENOENT)
    raises_errno(errno.ENAMETOOLONG, os.stat, tierfs.path("n" * 256))
    raises_errno(errno.ENAMETOOLONG, open, tierfs.path("n" * 300), "rb")
    # 255 bytes is the limit, not past it.
    write_file(tierfs.path("m" * 255), b"x")
    write_file(tierfs.path("k" * 250 + ".json"), b"{}")
    assert sorted(os.listdir(tierfs.mnt)) == sorted(["m" * 255, "k" * 250 + ".json"])


def test_id_longer_than_4095_bytes_fails_enametoolong(tierfs):
    # Twenty 200-byte directories: an ID prefix of 20 * 200 + 19 = 4019
    # bytes (deeper than the 1,024-byte IDs of before). The mount's own path
    # would take an absolute path past PATH_MAX: walk with directory fds.
    fds = [os.open(tierfs.mnt, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for i in range(20):
            name = chr(ord("a") + i) * 200
            os.mkdir(name, dir_fd=fds[-1])
            fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        d = fds[-1]

        def put(name, data):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=d)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        def get(name):
            fd = os.open(name, os.O_RDONLY, dir_fd=d)
            try:
                return os.read(fd, 100)
            finally:
                os.close(fd)

        put("f" * 75, b"fits")  # ID of 4019 + 1 + 75 = 4095 bytes
        assert get("f" * 75) == b"fits"
        ino = os.stat("f" * 75, dir_fd=d).st_ino
        raises_errno(errno.ENAMETOOLONG, put, "x" * 76, b"")  # 4096 bytes
        raises_errno(errno.ENAMETOOLONG, os.mkdir, "y" * 200, 0o755, dir_fd=d)
        # Dots are escaped to three bytes each and count as such.
        raises_errno(errno.ENAMETOOLONG, put, "." * 25 + "z", b"")  # 4019 + 1 + 76
        assert os.listdir(d) == ["f" * 75]
        fd = os.open("f" * 75, os.O_RDONLY, dir_fd=d)
        try:
            idv = os.getxattr(f"/proc/self/fd/{fd}", "user.tierfs.id")
        finally:
            os.close(fd)
        assert len(idv) == 4095 and idv.endswith(b"." + b"f" * 75)
    finally:
        for fd in reversed(fds):
            os.close(fd)
    tierfs.remount()
    fd = os.open(tierfs.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(20):
            nfd = os.open(chr(ord("a") + i) * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        assert os.stat("f" * 75, dir_fd=fd).st_ino == ino
    finally:
        os.close(fd)


def test_deep_tree_round_trips_through_tar_and_rsync(tierfs, tmp_path):
    """A tree about as deep as Linux paths go (a 4,000-byte path) is copied
    in by tar and rsync and read back the same."""
    src = tmp_path / "src"
    d = src
    for i in range(30):
        d = d / (f"{i:02d}" + "d" * 128)
    d.mkdir(parents=True)
    (d / "leaf.json").write_bytes(b'{"deep": true}')
    (src / "top.bin").write_bytes(b"top")
    pack = subprocess.run(["tar", "-C", str(src), "-cf", "-", "."], check=True,
                          capture_output=True).stdout
    dst = tierfs.path("t")
    os.mkdir(dst)
    subprocess.run(["tar", "-C", str(dst), "-xf", "-"], input=pack, check=True,
                   capture_output=True)
    subprocess.run(["rsync", "-a", f"{src}/", str(tierfs.path("r")) + "/"],
                   check=True, capture_output=True)
    for root in (tierfs.path("t"), tierfs.path("r")):
        rel = d.relative_to(src)
        assert read_file(root / rel / "leaf.json") == b'{"deep": true}'
        assert read_file(root / "top.bin") == b"top"
    out = subprocess.run(["diff", "-r", str(src), str(tierfs.path("r"))],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --- one item ID, one name --------------------------------------------------

def test_binary_and_json_file_of_one_id_collide_eexist(tierfs):
    write_file(tierfs.path("x"), b"binary")
    raises_errno(errno.EEXIST, create, tierfs.path("x.json"))
    cp = tierfs.run(["cp", "x", "x.json"], check=False)
    assert cp.returncode == 1 and "File exists" in cp.stderr, cp.stderr

    write_file(tierfs.path("y.json"), b"{}")
    raises_errno(errno.EEXIST, create, tierfs.path("y"))
    write_file(tierfs.path("other"), b"{}")
    raises_errno(errno.EEXIST, os.rename, tierfs.path("other"), tierfs.path("y"))

    assert sorted(os.listdir(tierfs.mnt)) == ["other", "x", "y.json"]
    assert read_file(tierfs.path("x")) == b"binary"
    tierfs.remount()
    assert sorted(os.listdir(tierfs.mnt)) == ["other", "x", "y.json"]


def test_json_file_beside_directory_of_same_stem(tierfs):
    tierfs.sh("""mkdir user && printf '{"kind": "user"}' > user.json && printf 1 > user/1.json""")
    assert sorted(os.listdir(tierfs.mnt)) == ["user", "user.json"]
    assert tierfs.getfattr(tierfs.path("user.json"), "user.tierfs.id") == "user"
    assert tierfs.getfattr(tierfs.path("user"), "user.tierfs.id") == "user"
    assert tierfs.getfattr(tierfs.path("user", "1.json"), "user.tierfs.id") == "user.1"
    tierfs.remount()
    assert sorted(os.listdir(tierfs.mnt)) == ["user", "user.json"]
    assert read_file(tierfs.path("user.json")) == b'{"kind": "user"}'
    assert read_file(tierfs.path("user", "1.json")) == b"1"


# --- unsupported ------------------------------------------------------------

def test_links_and_special_files_fail_eperm(tierfs):
    write_file(tierfs.path("a"), b"x")
    raises_errno(errno.EPERM, os.link, tierfs.path("a"), tierfs.path("hard"))
    raises_errno(errno.EPERM, os.symlink, "a", tierfs.path("soft"))
    raises_errno(errno.EPERM, os.mkfifo, tierfs.path("fifo"))
    cp = tierfs.run(["ln", "a", "b"], check=False)
    assert cp.returncode == 1 and "Operation not permitted" in cp.stderr, cp.stderr
    cp = tierfs.run(["ln", "-s", "a", "c"], check=False)
    assert cp.returncode == 1 and "Operation not permitted" in cp.stderr, cp.stderr
    assert os.listdir(tierfs.mnt) == ["a"]
