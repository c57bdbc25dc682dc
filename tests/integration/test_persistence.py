"""What survives: a remount keeps the tree, inode numbers, sizes and times;
fsync survives kill -9; unmount and SIGTERM drain every pending write."""

import hashlib
import os
import shutil

import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

# Flush thresholds no test reaches, so that only an explicit drain (unmount,
# SIGTERM) or fsync can persist anything.
NO_BACKGROUND_FLUSH = ["batch_flush_ms=60000", "batch_flush_count=1000000",
                       "batch_flush_bytes=268435456"]


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def snapshot(m):
    """{relative path: 'inode size mtime'} for every entry, root included,
    from find + stat."""
    out = m.run(["find", ".", "-exec", "stat", "-c", "%i %s %Y %n", "{}", "+"]).stdout
    snap = {}
    for line in out.splitlines():
        ino, size, mtime, name = line.split(" ", 3)
        assert name not in snap, f"{name} listed twice"
        snap[name] = f"{ino} {size} {mtime}"
    return snap


def contents(m):
    """{relative path: sha256} of every regular file."""
    result = {}
    for dirpath, _dirs, files in os.walk(m.mnt):
        for f in files:
            p = os.path.join(dirpath, f)
            result[os.path.relpath(p, m.mnt)] = hashlib.sha256(read_file(p)).hexdigest()
    return result


def small_tree(m, n=40):
    """Files in nested directories: {relative path: bytes}."""
    files = {}
    for i in range(n):
        d = f"dir{i % 4}/sub{i % 3}"
        os.makedirs(m.path(d), exist_ok=True)
        if i % 2:
            rel, data = f"{d}/item{i}.json", f'{{"i": {i}, "pad": "{"p" * i}"}}'.encode()
        else:
            rel, data = f"{d}/blob {i}.bin", bytes([i % 256]) * (i * 37)
        write_file(m.path(rel), data)
        files[rel] = data
    return files


def test_remount_keeps_tree_inodes_sizes_and_times(tierfs, tmp_path):
    m = tierfs
    small_tree(m)
    m.sh("""mkdir -p empty/nested 'name with space' && printf '{"x": 1}' > top.json &&
            printf abc > 'name with space/f.txt' && truncate -s 5000 sized.bin &&
            printf old > moved.bin && mv moved.bin dir0/moved.bin &&
            mkdir m1 && printf '[]' > m1/a.json && mv m1 m2 &&
            printf tmp > gone.bin && rm gone.bin &&
            touch -m -d @981173106 top.json""")
    assert m.run(["stat", "-c", "%Y", "top.json"]).stdout == "981173106\n"
    before, data_before = snapshot(m), contents(m)
    assert len(before) > 40
    inodes = [v.split()[0] for v in before.values()]
    assert len(inodes) == len(set(inodes)), "two entries share an inode number"

    m.remount()
    assert snapshot(m) == before
    assert contents(m) == data_before

    # And again, after changes on the second mount.
    m.sh("printf more >> top.json; printf '[1]' > m2/a.json; mkdir -p late/dir")
    before = snapshot(m)
    m.remount()
    assert snapshot(m) == before


def test_kill_9_after_fsync_loses_nothing(tierfs):
    m = tierfs
    # Something persisted by a clean unmount, then overwritten and fsynced.
    write_file(m.path("over.json"), b'{"v": "first"}')
    m.remount()

    expect = {"over.json": b'{"v": "second"}'}
    os.makedirs(m.path("a", "b"))
    for i in range(30):
        expect[f"a/b/f{i}.json"] = f'{{"n": {i}}}'.encode()
        expect[f"a/g{i}.bin"] = os.urandom(100 + i * 1000)
    expect["top.bin"] = os.urandom(300_000)
    for rel, data in expect.items():
        fd = os.open(m.path(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            assert os.write(fd, data) == len(data)
            os.fsync(fd)
        finally:
            os.close(fd)
    hashes = {rel: m.getfattr(m.path(rel), "user.tierfs.hash") for rel in expect}

    m.kill9()
    m.start()
    for rel, data in expect.items():
        assert read_file(m.path(rel)) == data, rel
        assert m.getfattr(m.path(rel), "user.tierfs.hash") == hashes[rel] == hashlib.sha256(data).hexdigest()
    assert sorted(os.listdir(m.mnt)) == ["a", "over.json", "top.bin"]


def test_unmount_drains_pending_writes(tierfs_factory):
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH)
    files = small_tree(m, n=300)
    write_file(m.path("deleted.json"), b"{}")
    os.unlink(m.path("deleted.json"))
    m.unmount()  # at once: no fsync, thresholds never reached
    m.start()
    for rel, data in files.items():
        assert read_file(m.path(rel)) == data, rel
    assert not m.path("deleted.json").exists()
    found = sum(len(fs) for _d, _s, fs in os.walk(m.mnt))
    assert found == len(files)


def test_sigterm_unmounts_after_persisting(tierfs_factory):
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH)
    files = small_tree(m, n=50)
    m.run(["mkdir", "-p", "kept/empty"])
    m.sigterm()
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        assert f" {m.mnt} " not in f.read(), "SIGTERM left the mount in place"
    m.start()
    for rel, data in files.items():
        assert read_file(m.path(rel)) == data, rel
    assert os.listdir(m.path("kept")) == ["empty"]


def test_chmod_chown_and_times_are_stored(tierfs):
    m = tierfs
    write_file(m.path("f.bin"), b"x")
    m.run(["mkdir", "d"])
    os.chmod(m.path("f.bin"), 0o600)
    os.chmod(m.path("d"), 0o700)
    os.utime(m.path("f.bin"), ns=(1_500_000_000_000_000_000, 1_500_000_000_123_456_789))
    owner = []
    if os.geteuid() == 0:
        os.chown(m.path("f.bin"), 1234, 5678)
        owner = ["1234", "5678"]
    fmt = ["stat", "-c", "%a %u %g %Y", "f.bin", "d"]
    before = m.run(fmt).stdout
    f_line = before.splitlines()[0].split()
    assert f_line[0] == "600" and f_line[3] == "1500000000"
    if owner:
        assert f_line[1:3] == owner
    assert before.splitlines()[1].split()[0] == "700"
    mtime_ns = os.stat(m.path("f.bin")).st_mtime_ns
    m.remount()
    assert m.run(fmt).stdout == before
    assert os.stat(m.path("f.bin")).st_mtime_ns == mtime_ns
