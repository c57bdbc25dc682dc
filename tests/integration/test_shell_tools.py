"""Everyday shell tools on a real tierfs mount: cat, cp -r, diff -r, mv, rm,
mkdir/rmdir, sed -i, editor-style saves, truncate, append."""

import errno
import os
import shutil
import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

def raises_errno(code, fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == code, (
        f"expected {errno.errorcode[code]}, got {errno.errorcode.get(info.value.errno)}: {info.value}")


def write_file(path, data):
    """open(O_TRUNC)/write/close, every error raised (close included)."""
    with open(path, "wb") as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


# A tree with everything the path codec must carry: nested directories, JSON
# and binary files, dots, spaces, UTF-8, '%' (also one that looks like an
# escape), a hidden name, empty files, an empty directory, and a JSON file
# beside a directory of the same stem.
TREE_FILES = {
    "a.json": b'{"k": [1, 2, 3]}\n',
    "notes.v2.txt": b"dots in the name\n",
    "my file.txt": b"spaces in the name\n",
    "caf\u00e9 \u65e5\u672c.json": '{"s": "\u00fc\u00df"}\n'.encode(),
    "100%.txt": b"percent\n",
    "%2E.txt": b"a name that looks like an escape\n",
    "%25%2e": b"two of them\n",
    ".hidden.json": b"[]",
    "empty.bin": b"",
    "empty.json": b"",
    "x.json": b'{"x": true}',
    "x/inner.json": b"1",
    "x/y.z/w.json": b"null",
    "sp ace/dir.with.dots/f.json": b'"str"',
    "dotted.dir/x%y.bin": b"%",
    "deep/er/est/leaf.bin": bytes(range(256)) * 700,
    "bin/zeros": bytes(4096),
}
TREE_DIRS = ["emptydir", "deep/er/empty dir"]


def make_tree(root):
    for rel, data in TREE_FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        write_file(p, data)
    with open(root / "bin" / "random.dat", "wb") as f:
        f.write(os.urandom(300_000))
    for rel in TREE_DIRS:
        (root / rel).mkdir(parents=True, exist_ok=True)


def test_echo_then_cat(tierfs):
    tierfs.sh("""echo '{"a": 1}' > x.json""")
    tierfs.sh("echo hello > hello.txt")
    assert tierfs.sh("cat x.json").stdout == '{"a": 1}\n'
    assert tierfs.sh("cat hello.txt").stdout == "hello\n"
    assert sorted(os.listdir(tierfs.mnt)) == ["hello.txt", "x.json"]
    assert os.stat(tierfs.path("x.json")).st_size == len('{"a": 1}\n')


def test_create_read_only(tierfs):
    """open(O_CREAT|O_RDONLY) creates an empty file (the daemon once crashed
    on it: the kernel sends CREATE with a read-only access mode)."""
    p = tierfs.path("ro.json")
    fd = os.open(p, os.O_CREAT | os.O_RDONLY, 0o644)
    try:
        assert os.read(fd, 10) == b""
    finally:
        os.close(fd)
    assert os.stat(p).st_size == 0
    write_file(tierfs.path("after.bin"), b"still serving")
    assert read_file(tierfs.path("after.bin")) == b"still serving"
    assert sorted(os.listdir(tierfs.mnt)) == ["after.bin", "ro.json"]


def test_cp_r_in_and_diff_r_out(tierfs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    dst = tierfs.path("tree")
    tierfs.run(["cp", "-r", str(src), str(dst)])
    tierfs.run(["diff", "-r", str(src), str(dst)])

    out = tmp_path / "out"
    tierfs.run(["cp", "-r", str(dst), str(out)])
    tierfs.run(["diff", "-r", str(src), str(out)])

    tierfs.remount()
    tierfs.run(["diff", "-r", str(src), str(dst)])
    # Every name is listed exactly once (no duplicates from L3 + pending).
    listed = tierfs.run(["find", "tree", "-mindepth", "1"]).stdout.splitlines()
    assert len(listed) == len(set(listed))


def test_mv_files(tierfs):
    tierfs.sh("""printf '{"n": 1}' > a.json && mkdir d && printf 'bin' > b.bin""")
    tierfs.run(["mv", "a.json", "renamed.json"])
    assert not tierfs.path("a.json").exists()
    assert read_file(tierfs.path("renamed.json")) == b'{"n": 1}'

    tierfs.run(["mv", "renamed.json", "d/"])
    assert read_file(tierfs.path("d", "renamed.json")) == b'{"n": 1}'
    assert not tierfs.path("renamed.json").exists()

    # Onto an existing file: replaced.
    tierfs.sh("printf 'old' > d/target.bin")
    tierfs.run(["mv", "b.bin", "d/target.bin"])
    assert read_file(tierfs.path("d", "target.bin")) == b"bin"
    assert not tierfs.path("b.bin").exists()

    # A binary file holding valid JSON may become a JSON file.
    tierfs.sh("printf '[1, 2]' > list.txt")
    tierfs.run(["mv", "list.txt", "list.json"])
    assert read_file(tierfs.path("list.json")) == b"[1, 2]"

    tierfs.remount()
    assert sorted(os.listdir(tierfs.mnt)) == ["d", "list.json"]
    assert sorted(os.listdir(tierfs.path("d"))) == ["renamed.json", "target.bin"]
    assert read_file(tierfs.path("d", "target.bin")) == b"bin"
    assert tierfs.getfattr(tierfs.path("d", "renamed.json"), "user.tierfs.id") == "d.renamed"


def test_mv_directory_contents_follow(tierfs):
    tierfs.sh("""mkdir -p d/sub/deeper && printf '{"a": 1}' > d/1.json &&
                 printf 'two' > d/sub/2.bin && printf '3' > d/sub/deeper/3.json""")
    ino = os.stat(tierfs.path("d")).st_ino
    tierfs.run(["mv", "d", "e"])
    assert not tierfs.path("d").exists()
    assert os.stat(tierfs.path("e")).st_ino == ino

    def check():
        assert read_file(tierfs.path("e", "1.json")) == b'{"a": 1}'
        assert read_file(tierfs.path("e", "sub", "2.bin")) == b"two"
        assert read_file(tierfs.path("e", "sub", "deeper", "3.json")) == b"3"
        assert tierfs.getfattr(tierfs.path("e", "sub", "deeper", "3.json"), "user.tierfs.id") == "e.sub.deeper.3"
        assert tierfs.getfattr(tierfs.path("e", "sub"), "user.tierfs.id") == "e.sub"
        assert sorted(os.listdir(tierfs.mnt)) == ["e"]

    check()
    # Into another directory, under a new name.
    tierfs.sh("mkdir -p p/q && mv e p/q/f && mv p/q/f e && rmdir p/q p")
    check()
    tierfs.remount()
    check()
    assert not tierfs.path("d").exists()


def test_rm(tierfs):
    tierfs.sh("""printf '{}' > a.json && printf 'x' > b.bin && mkdir -p t/u && printf 1 > t/u/1.json""")
    tierfs.run(["rm", "a.json"])
    assert not tierfs.path("a.json").exists()
    raises_errno(errno.ENOENT, os.stat, tierfs.path("a.json"))
    tierfs.run(["rm", "-r", "t"])
    assert sorted(os.listdir(tierfs.mnt)) == ["b.bin"]
    # Written and deleted at once: the delete must beat the pending write.
    tierfs.sh("printf 'short-lived' > gone.bin && rm gone.bin")
    cp = tierfs.run(["rm", "no-such-file"], check=False)
    assert cp.returncode == 1 and "No such file or directory" in cp.stderr
    tierfs.remount()
    assert sorted(os.listdir(tierfs.mnt)) == ["b.bin"]


def test_unlinked_file_stays_readable_through_open_fd(tierfs):
    tierfs.sh("printf 'still here' > f.bin")
    with open(tierfs.path("f.bin"), "rb") as f:
        tierfs.run(["rm", "f.bin"])
        assert not tierfs.path("f.bin").exists()
        assert f.read() == b"still here"


def test_mkdir_rmdir(tierfs):
    tierfs.run(["mkdir", "d"])
    assert tierfs.path("d").is_dir()
    tierfs.run(["rmdir", "d"])
    assert not tierfs.path("d").exists()

    tierfs.sh("mkdir d && printf '{}' > d/f.json")
    raises_errno(errno.ENOTEMPTY, os.rmdir, tierfs.path("d"))
    cp = tierfs.run(["rmdir", "d"], check=False)
    assert cp.returncode == 1 and "Directory not empty" in cp.stderr
    assert read_file(tierfs.path("d", "f.json")) == b"{}"

    cp = tierfs.run(["mkdir", "d"], check=False)
    assert cp.returncode == 1 and "File exists" in cp.stderr
    raises_errno(errno.ENOENT, os.mkdir, tierfs.path("no", "parent"))


def test_empty_directories_survive_remount(tierfs):
    tierfs.run(["mkdir", "-p", "e1/e2/e3", "solo", "with.dot", "gone"])
    tierfs.run(["rmdir", "gone"])
    tierfs.remount()
    assert sorted(os.listdir(tierfs.mnt)) == ["e1", "solo", "with.dot"]
    assert os.listdir(tierfs.path("e1")) == ["e2"]
    assert os.listdir(tierfs.path("e1", "e2")) == ["e3"]
    assert os.listdir(tierfs.path("e1", "e2", "e3")) == []
    assert tierfs.path("with.dot").is_dir() and os.listdir(tierfs.path("with.dot")) == []


def test_sed_in_place(tierfs):
    tierfs.sh("""printf '{"a": 1, "b": "keep"}\\n' > x.json""")
    tierfs.run(["sed", "-i", "s/1/2/", "x.json"])
    assert read_file(tierfs.path("x.json")) == b'{"a": 2, "b": "keep"}\n'
    assert os.listdir(tierfs.mnt) == ["x.json"]  # sed's temp file is gone
    tierfs.remount()
    assert read_file(tierfs.path("x.json")) == b'{"a": 2, "b": "keep"}\n'


def test_editor_style_save(tierfs):
    """Write a temp file in the same directory, rename it onto the target."""
    target = tierfs.path("doc.json")
    write_file(target, b'{"version": "old-content"}')
    with open(target, "rb") as before:
        tmp = tierfs.path(".doc.json.tmp4913")
        write_file(tmp, b'{"version": "new-content"}')
        tmp_ino = os.stat(tmp).st_ino
        os.rename(tmp, target)
        assert read_file(target) == b'{"version": "new-content"}'
        assert not tmp.exists()
        assert os.stat(target).st_ino == tmp_ino  # rename moves the file itself
        # The replaced file stays readable through a descriptor opened before.
        assert before.read() == b'{"version": "old-content"}'
    assert os.listdir(tierfs.mnt) == ["doc.json"]
    grep = tierfs.run(["grep", "-r", "-l", "old-content", "."], check=False)
    assert grep.returncode == 1, grep.stdout
    tierfs.remount()
    assert read_file(target) == b'{"version": "new-content"}'
    grep = tierfs.run(["grep", "-r", "-l", "old-content", "."], check=False)
    assert grep.returncode == 1, grep.stdout


def test_vim_style_save(tierfs):
    """vim's backupcopy=no dance: probe file '4913', rename the original to
    'x.json~', write the new x.json, remove the backup."""
    write_file(tierfs.path("x.json"), b'{"v": 1}')
    tierfs.sh("""printf '' > 4913 && rm 4913 && mv x.json 'x.json~' &&
                 printf '{"v": 2}\\n' > x.json && rm 'x.json~'""")
    assert read_file(tierfs.path("x.json")) == b'{"v": 2}\n'
    assert os.listdir(tierfs.mnt) == ["x.json"]
    tierfs.remount()
    assert read_file(tierfs.path("x.json")) == b'{"v": 2}\n'
    assert os.listdir(tierfs.mnt) == ["x.json"]


def test_truncate(tierfs, tmp_path):
    write_file(tierfs.path("f.bin"), b"abcdefghij")
    tierfs.run(["truncate", "-s", "4", "f.bin"])
    assert read_file(tierfs.path("f.bin")) == b"abcd"
    tierfs.run(["truncate", "-s", "100000", "f.bin"])
    assert os.stat(tierfs.path("f.bin")).st_size == 100000
    ref = tmp_path / "ref"
    write_file(ref, b"abcd" + bytes(100000 - 4))
    tierfs.run(["cmp", str(ref), "f.bin"])
    tierfs.run(["truncate", "-s", "0", "f.bin"])
    assert os.stat(tierfs.path("f.bin")).st_size == 0

    write_file(tierfs.path("x.json"), b'{"a": 1}')
    tierfs.run(["truncate", "-s", "0", "x.json"])  # empty is a valid JSON file
    assert os.stat(tierfs.path("x.json")).st_size == 0
    tierfs.run(["truncate", "-s", "12345", "new.bin"])  # creates
    assert os.stat(tierfs.path("new.bin")).st_size == 12345

    tierfs.remount()
    assert os.stat(tierfs.path("f.bin")).st_size == 0
    assert os.stat(tierfs.path("x.json")).st_size == 0
    assert read_file(tierfs.path("new.bin")) == bytes(12345)


def test_append(tierfs):
    tierfs.sh("echo a > log.txt && echo b >> log.txt && printf c >> log.txt")
    assert read_file(tierfs.path("log.txt")) == b"a\nb\nc"
    assert os.stat(tierfs.path("log.txt")).st_size == 5
    tierfs.sh("""printf '[1]' > l.json && printf '\\n' >> l.json && echo '   ' >> l.json""")
    assert read_file(tierfs.path("l.json")) == b"[1]\n   \n"
    with open(tierfs.path("log.txt"), "ab") as f:
        f.write(b"\nd")
    tierfs.remount()
    assert read_file(tierfs.path("log.txt")) == b"a\nb\nc\nd"
    assert read_file(tierfs.path("l.json")) == b"[1]\n   \n"


def test_ls_l_and_stat_report_sizes(tierfs):
    write_file(tierfs.path("seven.bin"), b"1234567")
    out = tierfs.run(["stat", "-c", "%s %F", "seven.bin"]).stdout
    assert out == "7 regular file\n"
    out = tierfs.run(["stat", "-c", "%F", "."]).stdout
    assert out == "directory\n"
    line = tierfs.run(["ls", "-l", "seven.bin"]).stdout.split()
    assert line[0].startswith("-") and line[4] == "7"

