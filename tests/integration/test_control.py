"""The hidden control directory .tierfs/ and `tierfs status`: absent from
listings, openable by path, exact sizes, JSON status and Prometheus metrics
that move with what the mount does, a reserved name that cannot be made,
removed or written."""

import errno
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import TIERFS_BIN, wait_for

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def metrics(m):
    """{name{labels}: value} from .tierfs/metrics."""
    out = {}
    for line in read(m.path(".tierfs", "metrics")).decode().splitlines():
        if line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def sync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_control_dir_is_hidden_but_openable(tierfs):
    m = tierfs
    with open(m.path("a.json"), "w") as f:
        f.write('{"a": 1}')
    assert ".tierfs" not in os.listdir(m.mnt)
    found = m.run(["find", "."]).stdout.split()
    assert not any(".tierfs" in p for p in found), found
    assert sorted(os.listdir(m.path(".tierfs"))) == ["metrics", "status"]
    # An idle mount, so that nothing moves between stat and read: the
    # negative-lookup filter's background build has finished (its end
    # turns "trusted": false into true, one byte shorter) and every change
    # is persisted.
    assert wait_for(lambda: json.loads(read(m.path(".tierfs", "status")))["filter"]["trusted"],
                    60), "the negative-lookup filter was never trusted"
    for name in ("status", "metrics"):
        p = m.path(".tierfs", name)
        sync_dir(m.mnt)
        size = os.stat(p).st_size
        data = read(p)
        assert size == len(data) > 0, name


def test_status_json_and_command(tierfs):
    m = tierfs
    for i in range(5):
        with open(m.path(f"f{i}.bin"), "wb") as f:
            f.write(b"x" * 1000)
    sync_dir(m.mnt)
    status = json.loads(read(m.path(".tierfs", "status")))
    assert status["state"] == "ok"
    assert status["l3"]["up"] is True
    assert status["l3"]["backend"] == ("postgres" if m.store.uses_postgres else "sqlite")
    assert status["queue"]["changes"] == 0  # fsync of the dir persisted all
    assert status["wal"]["max_bytes"] > 0
    assert status["filter"]["names"] >= 5
    if m.store.uses_redis:
        assert status["l2"]["backend"] == "redis"
    else:
        assert status["l2"] is None
    text = json.dumps(status)
    assert "secret" not in text and "://" not in text

    out = subprocess.run([str(TIERFS_BIN), "status", str(m.mnt)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"tierfs at {m.mnt}: ok" in out.stdout
    assert "write-ahead log" in out.stdout
    raw = subprocess.run([str(TIERFS_BIN), "status", "--json", str(m.mnt)],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(raw.stdout)["state"] == "ok"


def test_status_command_on_something_else(tmp_path):
    out = subprocess.run([str(TIERFS_BIN), "status", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "not a tierfs mount" in out.stderr


def wait_filter_trusted(m, timeout=60):
    """The filter is built in the background after mount: wait for it."""
    deadline = time.monotonic() + timeout
    while not json.loads(read(m.path(".tierfs", "status")))["filter"]["trusted"]:
        assert time.monotonic() < deadline, "the filter was never trusted"
        time.sleep(0.01)


def test_metrics_follow_the_mount(tierfs):
    m = tierfs
    wait_filter_trusted(m)
    before = metrics(m)
    for i in range(20):
        with open(m.path(f"m{i}.json"), "w") as f:
            f.write("[%d]" % i)
    sync_dir(m.mnt)
    # absent names, each distinct (the kernel caches negative entries)
    for i in range(100):
        assert not os.path.exists(m.path(f"absent-{i}.json"))
    after = metrics(m)
    assert after["tierfs_batches_total"] >= before["tierfs_batches_total"] + 1
    assert after["tierfs_batch_records_total"] >= before["tierfs_batch_records_total"] + 20
    assert after['tierfs_tier_calls_total{tier="l3",op="apply"}'] >= 1
    assert after["tierfs_queue_changes"] == 0
    assert after["tierfs_filter_negatives_total"] - before["tierfs_filter_negatives_total"] >= 99
    assert after["tierfs_l3_up"] == 1
    assert after["tierfs_l1_items"] >= 1
    for line in read(m.path(".tierfs", "metrics")).decode().splitlines():
        assert re.match(r"^(# (HELP|TYPE) tierfs_\w+ .+|tierfs_\w+(\{[^}]*\})? [0-9.e+-]+)$", line), line


def test_an_open_control_file_reads_as_one_text(tierfs):
    """The metrics grow while the mount works: a reader reading in several
    calls must get pieces of one rendering, not of two. An open handle
    keeps the text it opened with; a new open shows the new one."""
    m = tierfs
    fd = os.open(m.path(".tierfs", "metrics"), os.O_RDONLY)
    try:
        first = os.pread(fd, 1 << 20, 0)
        for i in range(20):
            with open(m.path(f"grow-{i}.json"), "w") as f:
                f.write("1")
        sync_dir(m.mnt)
        assert os.pread(fd, 1 << 20, 0) == first
        half = len(first) // 2
        assert os.pread(fd, 1 << 20, half) == first[half:]
    finally:
        os.close(fd)
    assert read(m.path(".tierfs", "metrics")) != first


def test_reserved_name(tierfs):
    m = tierfs
    with pytest.raises(OSError) as e:
        os.mkdir(m.path(".tierfs"))
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.rmdir(m.path(".tierfs"))
    assert e.value.errno == errno.EPERM
    # A control file (mode 0444) opened for writing: EACCES, from the
    # kernel (default_permissions) or, for root, from tierfs's open.
    with pytest.raises(OSError) as e:
        open(m.path(".tierfs", "status"), "w")
    assert e.value.errno == errno.EACCES
    with pytest.raises(OSError) as e:  # truncating is writing
        os.open(m.path(".tierfs", "metrics"), os.O_RDONLY | os.O_TRUNC)
    assert e.value.errno == errno.EACCES
    # A new name in .tierfs/ (mode 0555): the kernel refuses a user with
    # EACCES; root passes its check, and tierfs's create answers EPERM.
    with pytest.raises(OSError) as e:
        open(m.path(".tierfs", "new"), "w")
    assert e.value.errno == (errno.EPERM if os.geteuid() == 0 else errno.EACCES)
    os.mkdir(m.path("d"))
    with pytest.raises(OSError) as e:
        os.rename(m.path("d"), m.path(".tierfs"))
    assert e.value.errno == errno.EPERM
