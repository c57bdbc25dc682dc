"""Cold walks: after a remount (no node, nothing in L1, the kernel's caches
empty), stat and read every file of a tree. A lookup that misses loads a
page of its directory and answers the siblings from it; a read fetches the
siblings' content with it. Checks that every answer is right (sizes,
bytes, absent names), that the walk made a few queries per directory
rather than one per entry (the daemon's metrics), and that another mount's
changes made after a directory was loaded are seen."""

import errno
import io
import os
import random
import subprocess
import tarfile

import pytest

from conftest import fuse_unavailable_reason
from test_sharing import read, sees, synced

pytestmark = pytest.mark.skipif(fuse_unavailable_reason() is not None,
                                reason=fuse_unavailable_reason() or "")

LONG = ["entry_timeout=600", "attr_timeout=600"]


def metrics(m):
    """{name{labels}: value} from .tierfs/metrics."""
    out = {}
    with open(m.path(".tierfs", "metrics"), "rb") as f:
        text = f.read().decode()
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def calls(after, before, tier, op):
    key = f'tierfs_tier_calls_total{{tier="{tier}",op="{op}"}}'
    return after.get(key, 0) - before.get(key, 0)


def content(d, name):
    return f'{{"dir": "{d}", "name": "{name}"}}'.encode()


def make_tree(m, dirs):
    """@dirs: {dir name: [file names]}; every file holds content()."""
    for d, names in dirs.items():
        os.mkdir(m.path(d))
        for name in names:
            with open(m.path(d, name), "wb") as f:
                f.write(content(d, name))
    fd = os.open(m.mnt, os.O_RDONLY)
    try:
        os.fsync(fd)  # everything in L3
    finally:
        os.close(fd)


def drop_caches():
    """Drops the page cache too, when allowed (the remount already empties
    what the kernel caches of the mount)."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def test_a_cold_walk_is_right_and_costs_a_few_queries_per_directory(tierfs):
    m = tierfs
    dirs = {f"d{i}": [f"f{j:03}.json" for j in range(100)] for i in range(3)}
    dirs["d0"] += ["a", "a b", "\u00e9t\u00e9.json", "~tilde"]
    make_tree(m, dirs)
    m.remount()
    drop_caches()
    before = metrics(m)
    # stat every file of d0 in a shuffled order, then read each
    names = list(dirs["d0"])
    random.Random(12).shuffle(names)
    for name in names:
        st = os.stat(m.path("d0", name))
        assert st.st_size == len(content("d0", name)), name
    for name in ["absent", "f100.json", "f0", "a c", "\u00e9t\u00e9"]:
        assert not os.path.exists(m.path("d0", name)), name
    for name in dirs["d0"]:
        with open(m.path("d0", name), "rb") as f:
            assert f.read() == content("d0", name), name
    after = metrics(m)
    n = len(dirs["d0"])
    # one page of the root (for d0) and one of d0 answered every lookup
    assert calls(after, before, "l3", "lookup") == 0
    assert calls(after, before, "l3", "list") <= 2
    assert after["tierfs_dir_loads_total"] - before["tierfs_dir_loads_total"] <= 2
    assert (after["tierfs_dir_snapshot_hits_total"]
            - before["tierfs_dir_snapshot_hits_total"]) >= n
    # the contents came in one or two batches, not one read per file
    single = (calls(after, before, "l3", "read") + calls(after, before, "l2", "fetch"))
    batches = after["tierfs_prefetch_batches_total"] - before["tierfs_prefetch_batches_total"]
    assert single <= 1
    assert 1 <= batches <= 2
    assert after["tierfs_prefetched_total"] - before["tierfs_prefetched_total"] >= n - 1
    # the other directories, read without a stat first, are right too
    for d in ("d1", "d2"):
        for name in dirs[d]:
            with open(m.path(d, name), "rb") as f:
                assert f.read() == content(d, name), (d, name)
    last = metrics(m)
    assert calls(last, after, "l3", "lookup") == 0
    assert calls(last, after, "l3", "read") + calls(last, after, "l2", "fetch") <= 2


def test_a_directory_bigger_than_a_page_is_walked_in_any_order(tierfs):
    m = tierfs
    names = [f"n{j:05}" for j in range(2500)]
    make_tree(m, {"big": names})
    m.remount()
    drop_caches()
    before = metrics(m)
    for name in names:  # in name order: a page at a time
        assert os.stat(m.path("big", name)).st_size == len(content("big", name))
    after = metrics(m)
    loads = after["tierfs_dir_loads_total"] - before["tierfs_dir_loads_total"]
    assert loads <= 10, loads
    m.remount()
    shuffled = list(names)
    random.Random(7).shuffle(shuffled)
    for name in shuffled[:600]:  # scattered: small pages, still right
        with open(m.path("big", name), "rb") as f:
            assert f.read() == content("big", name), name
    for name in ["n02500", "n0", "n000000", "m", "o"]:
        assert not os.path.exists(m.path("big", name)), name


def test_tar_of_a_big_directory_made_in_no_name_order(tierfs):
    """GNU tar reads a whole directory, then stats and reads each entry in
    the order readdir gave: inode order, here not name order. The lookups
    grow the directory's snapshot a page at a time (not a query per entry,
    nor a page from each name), and reads fetch many files' content at
    once."""
    m = tierfs
    names = [f"n{j:05}" for j in range(3000)]
    made = list(names)
    random.Random(3).shuffle(made)
    make_tree(m, {"big": made})
    m.remount()
    drop_caches()
    before = metrics(m)
    out = subprocess.run(["tar", "-cf", "-", "-C", str(m.mnt), "big"], check=True,
                         stdout=subprocess.PIPE).stdout
    after = metrics(m)
    with tarfile.open(fileobj=io.BytesIO(out)) as t:
        members = [x for x in t.getmembers() if x.isfile()]
        got = {os.path.basename(x.name): t.extractfile(x).read() for x in members}
    assert [os.path.basename(x.name) for x in members] == made  # readdir's order
    assert got == {n: content("big", n) for n in names}
    loads = after["tierfs_dir_loads_total"] - before["tierfs_dir_loads_total"]
    assert loads <= 6, loads  # 3 pages of 1,000, and a few more
    assert calls(after, before, "l3", "lookup") == 0
    batches = after["tierfs_prefetch_batches_total"] - before["tierfs_prefetch_batches_total"]
    assert batches <= 3000 // 127 + 5, batches


def test_another_mounts_changes_after_a_directory_was_loaded_are_seen(tierfs_factory):
    a = tierfs_factory(options=LONG)
    names = [f"f{j:03}.json" for j in range(50)]
    make_tree(a, {"d": names})
    b = tierfs_factory(share=a, options=LONG)
    # b loads d: one stat answers from a page of d (its snapshot)
    before = metrics(b)
    assert os.stat(b.path("d", "f000.json")).st_size == len(content("d", "f000.json"))
    assert metrics(b)["tierfs_dir_loads_total"] > before["tierfs_dir_loads_total"]
    # a changes d: a new name, a deleted one, a renamed one, a rewrite
    with open(a.path("d", "new.json"), "wb") as f:
        f.write(b'"new"')
    os.unlink(a.path("d", "f010.json"))
    os.rename(a.path("d", "f020.json"), a.path("d", "g020.json"))
    with open(a.path("d", "f030.json"), "wb") as f:
        f.write(b'"rewritten"')
    synced(a)

    # b's snapshot of d must not hide the new name, keep the deleted or
    # renamed one, or serve the old bytes
    assert sees(b.path("d", "new.json"), b'"new"')
    assert sees(b.path("d", "f010.json"), None)
    assert sees(b.path("d", "f020.json"), None)
    assert sees(b.path("d", "g020.json"), content("d", "f020.json"))
    assert sees(b.path("d", "f030.json"), b'"rewritten"')
    # and the rest of the directory still reads right from b
    for name in names:
        if name in ("f010.json", "f020.json", "f030.json"):
            continue
        assert read(b.path("d", name)) == content("d", name), name
    with pytest.raises(OSError) as e:
        os.stat(b.path("d", "f010.json"))
    assert e.value.errno == errno.ENOENT
