"""Crash safety through the write-ahead log: every file whose close()
returned survives kill -9 of the daemon, without any fsync, even while
several writers are busy when the daemon dies."""

import os
import shutil
import threading
import time

import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

# Thresholds no test reaches: only the log can save what the kill interrupts.
NO_BACKGROUND_FLUSH = ["batch_flush_ms=60000", "batch_flush_count=1000000",
                       "batch_flush_bytes=268435456"]
CYCLES = 20
WRITERS = 4


def payload(cycle, writer, i):
    """Content that names itself, JSON or binary with NUL bytes."""
    if i % 2:
        return f'{{"c": {cycle}, "w": {writer}, "i": {i}}}'.encode(), "json"
    return bytes([cycle, writer, 0]) + os.urandom(64 + i * 13), "bin"


def writer(m, cycle, w, dying, done, errors):
    """Writes files until the daemon dies; records each whose close returned."""
    i = 0
    while True:
        data, ext = payload(cycle, w, i)
        rel = f"c{cycle}/w{w}/{i}.{ext}"
        try:
            fd = os.open(m.path(rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as e:
            # Once the daemon is being killed, failures are expected and
            # only this one file's fate is unknown.
            if not dying.is_set():
                errors.append((rel, e))
            return
        done.append((rel, data))
        i += 1


def test_kill9_under_concurrent_writers_loses_no_closed_file(tierfs_factory):
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH)
    survivors = {}
    for cycle in range(CYCLES):
        for w in range(WRITERS):
            os.makedirs(m.path(f"c{cycle}", f"w{w}"))
        dying, errors = threading.Event(), []
        done = [[] for _ in range(WRITERS)]
        threads = [threading.Thread(target=writer, args=(m, cycle, w, dying, done[w], errors))
                   for w in range(WRITERS)]
        for t in threads:
            t.start()
        # Kill once every writer has closed some files: a condition, not a
        # timer; the writers keep going until the daemon is gone.
        deadline_hit = not _wait(lambda: all(len(d) >= 5 for d in done), 60)
        dying.set()
        m.kill9()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a writer hangs on the dead mount"
        assert not deadline_hit, "the writers made no progress"
        assert not errors, errors
        for d in done:
            survivors.update(d)
        m.start()
        # Everything closed in this and every earlier cycle is there, whole.
        for rel, data in survivors.items():
            with open(m.path(rel), "rb") as f:
                assert f.read() == data, f"cycle {cycle}: {rel} lost or torn"
    assert len(survivors) >= CYCLES * WRITERS * 5


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True
