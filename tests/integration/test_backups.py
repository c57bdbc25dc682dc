"""Backup tools against a real tierfs mount (issue 5, item 1): tar (full
and --listed-incremental), rsync -a / -aX out of the mount and back in,
restic (a second backup, also after a remount, finds nothing new or
changed), borg create/extract, and find's count of the tree.

Every test writes the same tree into the mount (make_tree): NFILES JSON and
binary files in nested directories 3-4 levels deep, with names holding dots,
spaces, UTF-8 and '%', empty files, a few ~100 KiB binaries, user.* xattrs
on files and directories, and varied modes and mtimes (nanoseconds
included). What a tool restores is compared with the mount by `diff -r`,
by `stat -c` per path (type, mode, owner, mtime in seconds, size of files)
and by `getfattr -d` per path (the user.* names, less user.tierfs.*).

The tree is written with Python's os calls, which are the system calls
setfattr (setxattr), chmod and `touch -d` (utimensat) make: one process
instead of thousands keeps each test within seconds.

The tools run with HOME, caches and repositories in the test's temp dir
(on the real filesystem), never in the user's home.
"""

import json
import os
import random
import shutil

import pytest

from conftest import TOOL_ENV, run

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

NFILES = 2000  # files in the tree; the directories are fixed (tree_layout)
LARGE_BYTES = 100 * 1024  # the larger binary files
SEED = 5  # the tree is the same on every run

# The directory tree below the mount's "tree" directory: 4 x 4 x 3 leaves,
# a fourth level under some of them, and two directories left empty.
LEVEL1 = ("alpha", "dots.in.name", "sp ace", "caf\u00e9")
LEVEL2 = ("x", "100%", "\u65e5\u672c \u8a9e", "v1.2")
LEVEL3 = ("a", "b.c", "\u00fc \u00f6")
LEVEL4 = "deep.er %2E"  # under every LEVEL3 "a": depth 4 below "tree"
EMPTY_DIRS = ("empty dir", "alpha/x/empty.d")

DIR_MODES = (0o755, 0o750, 0o700)
FILE_MODES = (0o644, 0o600, 0o640, 0o755)
BASE_MTIME = 1_500_000_000  # July 2017


def need(*tools):
    """Fails the test when a tool is missing: scripts/deps.sh installs
    every one of them, so a missing one is a broken setup, not a reason to
    skip."""
    __tracebackhide__ = True
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (run scripts/deps.sh)")


class Tree:
    """What make_tree wrote: @files maps each relative path (below the
    mount root, "tree/...") to its bytes, @dirs lists the directories
    ("tree" included), @meta maps every path to (mode, mtime_ns), @xattrs
    maps a path to its {name: bytes} user attributes."""

    def __init__(self):
        self.files = {}
        self.dirs = []
        self.meta = {}
        self.xattrs = {}


def tree_layout():
    """The directories of the tree, parents first."""
    dirs = ["tree"]
    for a in LEVEL1:
        dirs.append(f"tree/{a}")
        for b in LEVEL2:
            dirs.append(f"tree/{a}/{b}")
            for c in LEVEL3:
                dirs.append(f"tree/{a}/{b}/{c}")
                if c == "a":
                    dirs.append(f"tree/{a}/{b}/{c}/{LEVEL4}")
    dirs += [f"tree/{e}" for e in EMPTY_DIRS]
    return dirs


def file_name(i, rng):
    """A name for file @i: JSON and binary, with dots, spaces, UTF-8 and '%'.
    Every name holds i, so no binary `x` ever meets a JSON `x.json`."""
    kind = i % 6
    if kind == 0:
        return f"{i:04d}.json"
    if kind == 1:
        return f"item {i}.v2.json"
    if kind == 2:
        return f"\u00fc{i} \u65e5\u672c.json"
    if kind == 3:
        return f"blob.{i}.bin"
    if kind == 4:
        return f"{i}%25 raw.dat"
    return f"r{i}%.tar.gz"


def file_content(i, name, rng):
    if i % 50 == 7:
        return b""  # an empty file, JSON or binary
    if name.endswith(".json"):
        doc = {"id": i, "name": name, "tags": [rng.choice("abcdef") for _ in range(rng.randrange(5))],
               "n": rng.random(), "nested": {"ok": i % 2 == 0, "s": "\u00e9t\u00e9 %2E"}}
        return json.dumps(doc, ensure_ascii=i % 4 == 0, indent=i % 3 or None).encode() + b"\n"
    if i % 100 == 3:
        return rng.randbytes(LARGE_BYTES)
    return rng.randbytes(rng.randrange(1, 4096))


def mtime_ns(i, rng):
    """Whole seconds for some entries, nanoseconds for the others."""
    sec = BASE_MTIME + i * 3607
    return sec * 10**9 + (0 if i % 3 == 0 else rng.randrange(1, 10**9))


def make_tree(root):
    """Writes the tree under @root/tree and returns its Tree. Files get
    their content, then their xattrs, mode and mtime (in that order, so
    nothing moves the mtime afterwards); directories get theirs deepest
    first, after everything inside them exists."""
    rng = random.Random(SEED)
    t = Tree()
    t.dirs = tree_layout()
    for d in t.dirs:
        os.mkdir(root / d)
    leaves = [d for d in t.dirs if d != "tree" and not d.endswith(EMPTY_DIRS)]
    for i in range(NFILES):
        name = file_name(i, rng)
        rel = f"{leaves[i % len(leaves)]}/{name}"
        data = file_content(i, name, rng)
        path = root / rel
        with open(path, "wb") as f:
            f.write(data)
        t.files[rel] = data
        if i % 7 == 0:
            xa = {"user.color": rng.choice([b"red", b"green", b"blue"])}
            if i % 21 == 0:
                xa["user.note"] = "a note with spaces, \u00fc and %2E".encode()
            if i % 35 == 0:
                xa["user.raw"] = bytes([0, 1, 0xFF, 0x80])
            for k, v in xa.items():
                os.setxattr(path, k, v)
            t.xattrs[rel] = xa
        mode = FILE_MODES[i % len(FILE_MODES)]
        os.chmod(path, mode)
        ns = mtime_ns(i, rng)
        os.utime(path, ns=(ns, ns))
        t.meta[rel] = (mode, ns)
    for j, d in enumerate(reversed(t.dirs)):
        path = root / d
        if j % 5 == 0:
            xa = {"user.dirtag": f"dir {j} \u00e9".encode()}
            os.setxattr(path, "user.dirtag", xa["user.dirtag"])
            t.xattrs[d] = xa
        mode = 0o755 if d == "tree" else DIR_MODES[j % len(DIR_MODES)]
        os.chmod(path, mode)
        ns = mtime_ns(NFILES + j, rng)
        os.utime(path, ns=(ns, ns))
        t.meta[d] = (mode, ns)
    return t


# -- what a tree looks like, as the tools report it ---------------------------

def stat_map(root):
    """{relative path: "type mode uid gid mtime size"} for @root and
    everything below it, from `stat --printf`; a directory's size is left out
    (tierfs says 0, ext4 4096). Paths are relative to @root ("." is @root)."""
    cp = run(["find", ".", "-exec", "stat", "--printf", r"%n\t%F %a %u %g %Y %s\n", "{}", "+"],
             cwd=root)
    assert cp.stderr == "", cp.stderr
    out = {}
    for line in cp.stdout.splitlines():
        name, fields = line.split("\t")
        ftype, *rest = fields.rsplit(" ", 5)  # "regular empty file" has spaces
        if ftype == "directory":
            rest = rest[:-1]
        out[os.path.normpath(name)] = f"{ftype} {' '.join(rest)}"
    return out


def xattr_map(root):
    """{relative path: {name: hex value}} of the user.* xattrs of @root and
    everything below it, from `getfattr -R -d -e hex`, without the synthetic
    user.tierfs.* names; paths without any are left out."""
    cp = run(["getfattr", "-R", "-d", "-m", r"^user\.", "-e", "hex", "."], cwd=root)
    assert cp.stderr == "", cp.stderr
    out = {}
    path = None
    for line in cp.stdout.splitlines():
        if line.startswith("# file: "):
            path = os.path.normpath(line[len("# file: "):])
        elif line and path is not None:
            name, _, value = line.partition("=")
            if not name.startswith("user.tierfs."):
                out.setdefault(path, {})[name] = value
    return out


def expected_stat_map(t, top="tree"):
    """stat_map() of @top ("tree" or below) as make_tree wrote it (owned
    by the caller)."""
    uid, gid = os.getuid(), os.getgid()
    out = {}
    for rel, (mode, ns) in t.meta.items():
        if rel != top and not rel.startswith(top + "/"):
            continue
        key = os.path.normpath(os.path.relpath(rel, top))
        sec = ns // 10**9
        if rel in t.files:
            out[key] = f"regular {'empty ' if not t.files[rel] else ''}file {mode:o} {uid} {gid} {sec} {len(t.files[rel])}"
        else:
            out[key] = f"directory {mode:o} {uid} {gid} {sec}"
    return out


def expected_xattr_map(t, top="tree"):
    out = {}
    for rel, xa in t.xattrs.items():
        if rel == top or rel.startswith(top + "/"):
            key = os.path.normpath(os.path.relpath(rel, top))
            out[key] = {k: "0x" + v.hex() for k, v in xa.items()}
    return out


def assert_same_tree(a, b, xattrs=True):
    """`diff -r` of @a and @b finds nothing, and their stat_map (and, with
    @xattrs, xattr_map) are equal."""
    __tracebackhide__ = True
    cp = run(["diff", "-r", str(a), str(b)], check=False)
    assert cp.returncode == 0 and cp.stdout == "" and cp.stderr == "", (
        f"diff -r {a} {b} exited {cp.returncode}\n{cp.stdout[:4000]}\n{cp.stderr[:2000]}")
    sa, sb = stat_map(a), stat_map(b)
    assert_maps_equal(sa, sb, f"stat -c of {a} and {b}")
    if xattrs:
        assert_maps_equal(xattr_map(a), xattr_map(b), f"getfattr -d of {a} and {b}")


def assert_maps_equal(a, b, what):
    """@a == @b, with a readable report of the first differences."""
    __tracebackhide__ = True
    if a == b:
        return
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            lines.append(f"  {key!r}: {a.get(key)!r} != {b.get(key)!r}")
    shown = "\n".join(lines[:30])
    pytest.fail(f"{what} differ at {len(lines)} paths:\n{shown}")


def check_mount_tree(m, t):
    """The mount shows what make_tree wrote: metadata by stat, xattrs by
    getfattr (the contents are diffed against each restore)."""
    __tracebackhide__ = True
    assert_maps_equal(stat_map(m.path("tree")), expected_stat_map(t), "stat -c of the mount vs the tree written")
    assert_maps_equal(xattr_map(m.path("tree")), expected_xattr_map(t), "getfattr -d of the mount vs the tree written")


@pytest.fixture
def tree_mount(tierfs):
    """A mount holding the tree: (TierfsMount, Tree)."""
    t = make_tree(tierfs.mnt)
    check_mount_tree(tierfs, t)
    return tierfs, t


def tool_env(tmp_path, **extra):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(TOOL_ENV, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    env.update(extra)
    return env


# -- tar ----------------------------------------------------------------------

@pytest.mark.stores("sqlite", "postgres")
def test_tar_round_trip_and_incremental(tree_mount, tmp_path):
    m, t = tree_mount
    need("tar")
    m.remount()  # tar reads every file from the store, not from L1
    archive = tmp_path / "full.tar"
    cp = run(["tar", "--xattrs", "-c", "-f", str(archive), "-C", str(m.mnt), "."], check=False)
    assert "file changed as we read it" not in cp.stderr, cp.stderr[:4000]
    assert cp.returncode == 0 and cp.stderr == "", f"tar c exited {cp.returncode}:\n{cp.stderr[:4000]}"

    out = tmp_path / "tar-out"
    out.mkdir()
    run(["tar", "--xattrs", "--xattrs-include=user.*", "-x", "-p", "-f", str(archive), "-C", str(out)])
    assert_same_tree(m.path("tree"), out / "tree")

    # Level 0, then level 1 with nothing changed in between: the second
    # archive holds the directories (tar always records them, with the
    # names they hold) and no file.
    snar = tmp_path / "tree.snar"
    level0, level1 = tmp_path / "level0.tar", tmp_path / "level1.tar"
    for archive in (level0, level1):
        cp = run(["tar", "-c", "-f", str(archive), f"--listed-incremental={snar}",
                  "-C", str(m.mnt), "."], check=False)
        assert "file changed as we read it" not in cp.stderr, cp.stderr[:4000]
        assert cp.returncode == 0 and cp.stderr == "", f"tar c exited {cp.returncode}:\n{cp.stderr[:4000]}"

    def listing(archive):
        lines = run(["tar", "-tv", "-f", str(archive)]).stdout.splitlines()
        return [line for line in lines if line]

    full = listing(level0)
    assert sum(line.startswith("-") for line in full) == NFILES
    assert sum(line.startswith("d") for line in full) == len(t.dirs) + 1  # and "./"
    second = listing(level1)
    not_dirs = [line for line in second if not line.startswith("d")]
    assert not_dirs == [], (f"the level-1 archive, with nothing changed since level 0, holds "
                            f"{len(not_dirs)} files:\n" + "\n".join(not_dirs[:20]))
    assert len(second) == len(t.dirs) + 1
    assert level1.stat().st_size < level0.stat().st_size // 10


# -- rsync --------------------------------------------------------------------

def rsync(flags, src, dst):
    """rsync @flags @src/ @dst/ with --itemize-changes; returns the
    itemized lines (what it changed). Exit status 0 and an empty stderr
    required."""
    __tracebackhide__ = True
    cp = run(["rsync", *flags, "--itemize-changes", f"{src}/", f"{dst}/"], check=False)
    assert cp.returncode == 0 and cp.stderr == "", (
        f"rsync {' '.join(flags)} {src}/ {dst}/ exited {cp.returncode}\n{cp.stderr[:4000]}")
    return [line for line in cp.stdout.splitlines() if line]


@pytest.mark.stores("sqlite", "postgres")
def test_rsync_out_and_back_in(tree_mount, tmp_path):
    m, t = tree_mount
    need("rsync")
    src = m.path("tree")
    for flags, name in ((["-a"], "a"), (["-aX"], "aX")):
        out = tmp_path / f"rsync-{name}"
        back = m.path(f"back-{name}")
        changed = rsync(flags, src, out)
        assert len(changed) >= NFILES
        assert_same_tree(src, out, xattrs="X" in flags[0])
        rsync(flags, out, back)
        assert_same_tree(out, back, xattrs="X" in flags[0])
        assert_same_tree(src, back, xattrs="X" in flags[0])
        if "X" not in flags[0]:
            assert xattr_map(back) == {}, "rsync -a without -X wrote xattrs"
    assert xattr_map(m.path("back-aX")) == expected_xattr_map(t)

    # A second run in either direction finds nothing to do: sizes, mtimes
    # (to the nanosecond), modes, owners and xattrs all match.
    out, back = tmp_path / "rsync-aX", m.path("back-aX")
    assert rsync(["-aX"], src, out) == []
    assert rsync(["-aX"], out, back) == []
    # And still after a remount: what was stored is what rsync had set.
    m.remount()
    assert rsync(["-aX"], src, out) == []
    assert rsync(["-aX"], out, back) == []
    assert_same_tree(src, back)


# -- restic -------------------------------------------------------------------

def restic(env, *args, check=True):
    __tracebackhide__ = True
    return run(["restic", *args], env=env, check=check)


def restic_summary(cp):
    """The summary message of `restic backup --json`."""
    summaries = []
    for line in cp.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("message_type") == "summary":
            summaries.append(msg)
    assert len(summaries) == 1, f"no single summary in restic's output:\n{cp.stdout[-4000:]}"
    return summaries[0]


@pytest.mark.stores("sqlite", "postgres")
def test_restic_backup_restore_and_unchanged_rebackup(tree_mount, tmp_path):
    m, t = tree_mount
    need("restic")
    env = tool_env(tmp_path, RESTIC_PASSWORD="tierfs-test", RESTIC_REPOSITORY=str(tmp_path / "restic-repo"),
                   RESTIC_CACHE_DIR=str(tmp_path / "restic-cache"))
    restic(env, "init")

    def backup(when):
        cp = restic(env, "backup", "--json", "--host", "tierfs-test", str(m.mnt), check=False)
        assert cp.returncode == 0, f"restic backup ({when}) exited {cp.returncode}:\n{cp.stderr[-4000:]}"
        return restic_summary(cp)

    first = backup("first")
    assert first["files_new"] == NFILES, first
    assert first["files_changed"] == 0 and first["files_unmodified"] == 0, first

    out = tmp_path / "restic-out"
    restic(env, "restore", "latest", "--target", str(out))
    assert_same_tree(m.path("tree"), out / m.path("tree").relative_to("/"))

    def unchanged(summary, when):
        assert (summary["files_new"], summary["files_changed"], summary["files_unmodified"]) == (0, 0, NFILES), (
            f"restic backup {when}, with nothing changed, saw new or changed files "
            f"(restic compares mtime, ctime, size and inode number): {summary}")

    unchanged(backup("second"), "on the same mount")
    m.remount()
    unchanged(backup("third"), "after an unmount and remount")


# -- borg ---------------------------------------------------------------------

@pytest.mark.stores("sqlite", "postgres")
def test_borg_create_extract_round_trip(tree_mount, tmp_path):
    m, t = tree_mount
    need("borg")
    base = tmp_path / "borg-base"
    env = tool_env(tmp_path, BORG_BASE_DIR=str(base), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                   BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
    repo = tmp_path / "borg-repo"
    run(["borg", "init", "--lock-wait", "60", "--encryption=none", str(repo)], env=env)
    m.remount()  # borg reads every file from the store, not from L1
    cp = run(["borg", "create", "--lock-wait", "60", "--stats", f"{repo}::first", "."],
             cwd=m.mnt, env=env, check=False)
    assert cp.returncode == 0, f"borg create exited {cp.returncode}:\n{cp.stderr[-4000:]}"
    listed = run(["borg", "list", "--lock-wait", "60", "--format", "{type}{NL}", f"{repo}::first"], env=env)
    types = listed.stdout.split()
    assert types.count("-") == NFILES and types.count("d") == len(t.dirs) + 1, listed.stdout[:2000]
    out = tmp_path / "borg-out"
    out.mkdir()
    run(["borg", "extract", "--lock-wait", "60", f"{repo}::first"], cwd=out, env=env)
    assert_same_tree(m.path("tree"), out / "tree")


# -- find ---------------------------------------------------------------------

def test_find_counts_every_entry_once(tree_mount):
    m, t = tree_mount

    def check():
        cp = run(["find", str(m.mnt)])
        assert cp.stderr == ""
        lines = cp.stdout.splitlines()
        # Every file, every directory ("tree" among them) and the root.
        assert len(lines) == NFILES + len(t.dirs) + 1
        assert len(set(lines)) == len(lines)
        hidden = [p for p in lines if any(part.startswith(".") for part in p[len(str(m.mnt)):].split("/"))]
        assert hidden == [], f"find lists hidden entries the tree does not have: {hidden[:20]}"
        assert run(["sh", "-c", f"find '{m.mnt}' | wc -l"]).stdout.strip() == str(NFILES + len(t.dirs) + 1)
        files = run(["find", str(m.mnt), "-type", "f"]).stdout.splitlines()
        assert sorted(os.path.relpath(p, m.mnt) for p in files) == sorted(t.files)
        dirs = run(["find", str(m.mnt), "-mindepth", "1", "-type", "d"]).stdout.splitlines()
        assert sorted(os.path.relpath(p, m.mnt) for p in dirs) == sorted(t.dirs)

    check()
    m.remount()  # the listing now comes from L3 alone
    check()
    check_mount_tree(m, t)
