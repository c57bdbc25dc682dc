"""A change the engine refuses changes nothing (engine/eng_int.h,
"Changes"; engine/changes.c): an engine call that returns an error has
changed nothing in memory, nothing in the write-ahead log, and so nothing
that reaches L3 later. The records of a change are appended to the log in
one write before any node changes; the log refuses that write with ENOSPC
once its segments would pass wal_max_bytes, or when its disk is full.

Each test here makes the log refuse while L3 cannot drain it, then tries
every kind of change and checks:
  * each one fails with ENOSPC: the errno of the Python os call, and the
    exit status and message of the shell tool (touch, mkdir, mv, chmod,
    touch -d, setfattr, cp);
  * right away, on the mount: the entries they would have made are absent
    (lstat: ENOENT), the entries they would have changed keep their inode,
    mode, mtime, ctime, xattrs and content; the log on disk holds the
    bytes it held before the failures (no partial write is left behind)
    and none of the refused names or values;
  * once L3 is back and the log is drained, after a remount: every change
    that succeeded before the log filled is there, no refused one is, in
    the mount and in L3 itself (psql, or sqlite3 on the database file).

How the log is filled deterministically: mkdir of directories whose names
all have NAME_LEN bytes appends records of one size (wal.h: the record
layout), so once one mkdir fails with ENOSPC the room left is less than one
such record. Nothing else appends while L3 is down (a failed flush requeues
its batch without logging it again) and nothing frees the log until a batch
commits. Every change tried afterwards needs a record at least that large:
its name is as long or longer (renames, creates, mkdirs), it carries the
same name with added bytes (xattrs, content), or it is the same record with
other values (chmod, utime). Deletions (rmdir, unlink) log smaller records
and are not tried.

The stores:
  test_full_log_postgres     wal_max_bytes=64 KiB, the private PostgreSQL
                             stopped (conftest.private_pg)
  test_full_disk_postgres    the log on a 2 MiB tmpfs filled by a plain
                             file (wal_max_bytes stays 1 GiB), PostgreSQL
                             stopped; root only (mount -t tmpfs). First
                             two pages are left free and records larger
                             than that are refused: write(2) writes part
                             of them, which must be cut away again (the
                             free pages come back); then the tmpfs is
                             filled to the last page and the log as above
  test_full_log_sqlite       wal_max_bytes=64 KiB, the SQLite file locked
                             by a write transaction held by this test
                             (BEGIN IMMEDIATE): SQLite cannot be stopped,
                             but in WAL mode a held write lock makes every
                             batch fail (busy) while reads go on

Mounts use entry_timeout=0 and attr_timeout=0 so that every stat reaches
the daemon: a kernel cache must not hide a change the daemon made.
While L3 is down, lookups of new names need the negative-lookup filter, so
each test waits for it to be trusted before L3 goes away.
"""

import errno
import json
import os
import sqlite3
import stat

import pytest

from conftest import run, wait_for, write_file
from test_outages import store  # noqa: F401 (a fixture)
from test_outages import LogMark, describe, lines_with, read_file, wal_bytes

NAME_LEN = 100          # bytes of every name the log-filling mkdirs use
WAL_MAX = 64 * 1024     # wal_max_bytes of the full-log tests
MAX_FILL = 400          # mkdirs before giving up on filling the log: the
                        # ~280 that fit in 64 KiB stay inside the inode block
                        # the mount reserved (1024, refilled at half)
TMPFS_SIZE = "2m"
PAGE = 4096             # tmpfs allocates whole pages
DRAIN = 120.0           # seconds for L3 to take the log once it is back
L3_FAILING = 60.0       # seconds for the flusher to notice L3 is gone
                        # (SQLite: busy_timeout 5 s per attempt)
ROOT_INO = 1
OPTIONS = ["entry_timeout=0", "attr_timeout=0"]

FAIL_NS = 1_000_000_000_123_456_789     # an mtime no entry here has
FAIL_NS_SH = 1_100_000_000              # the same for touch -d (seconds)
OLD = b"the content before the log filled\n" * 4
NEW = b"REFUSED-CONTENT-python-" + b"n" * 200
NEW_SH = b"REFUSED-CONTENT-shell-" + b"s" * 200
XATTR_VALUE = b"REFUSED-XATTR-python"
XATTR_VALUE_SH = "REFUSED-XATTR-shell"
ENOSPC_TEXT = "No space left on device"
BIG_CONTENT = b"REFUSED-BIG-CONTENT-" + os.urandom(64 * 1024).hex().encode()
BIG_XATTR = b"REFUSED-BIG-XATTR-" + b"v" * (32 * 1024)


def name(tag, i=0, length=NAME_LEN):
    """A name of exactly @length bytes: @tag, @i, then padding (no '.', so
    the item ID is the name itself)."""
    s = f"{tag}-{i:05d}-"
    assert len(s) < length
    return s + "x" * (length - len(s))


def status(m):
    return json.loads(read_file(m.path(".tierfs", "status")))


def wait_filter_trusted(m):
    assert wait_for(lambda: status(m)["filter"]["trusted"], 60, interval=0.05), \
        f"the negative-lookup filter was never trusted: {status(m)}"


def wait_drained(m, timeout):
    """Waits until every change is in L3 and the log is empty."""
    def drained():
        s = status(m)
        return (s["queue"]["changes"] == 0 and s["queue"]["not_persisted"] == 0
                and s["wal"]["bytes"] == 0)

    if not wait_for(drained, timeout, interval=0.1):
        pytest.fail(f"the log was not drained into L3 within {timeout:.0f}s: {status(m)}\n"
                    f"{m.stderr_text()[-3000:]}")


def wait_l3_failing(m):
    if not wait_for(lambda: status(m)["l3"]["last_error"] is not None, L3_FAILING, interval=0.1):
        pytest.fail(f"the flusher did not fail to reach L3 within {L3_FAILING:.0f}s: "
                    f"{status(m)}\n{m.stderr_text()[-3000:]}")


def segments_bytes(m):
    """The concatenated bytes of every log segment on disk."""
    return b"".join(read_file(p) for p in sorted(m.wal.glob("wal-*.log")))


def errno_of(fn):
    """Runs fn(); returns None when it succeeded, else the OSError."""
    try:
        fn()
    except OSError as e:
        return e
    return None


class Plan:
    """The entries of one test: what is made before L3 goes away, what is
    made while it is away (before and while the log fills), the changes
    that must be refused, and the state every check compares with."""

    def __init__(self, m, tmp):
        self.m = m
        self.tmp = tmp
        self.committed = ["before"]         # made while L3 was up
        self.victim = name("file")           # a file whose content a refused change rewrites
        self.targets = {                     # dirs a refused change would change
            "rename": name("src"), "chmod": name("chmod"),
            "utime": name("utime"), "xattr": name("xattr"),
        }
        self.made = []                       # dirs the fill made (in order)
        self.fill_error = None
        self.before = {}                     # name -> os.stat before the refused changes
        self.victim_version = None
        self.absent = []                     # names no refused change may leave behind
        self.marks = []                      # bytes of refused changes: never in the log

    def p(self, rel):
        return self.m.path(rel)

    # -- phases -----------------------------------------------------------

    def before_outage(self):
        """Makes and commits one dir and waits for an empty log and a
        trusted filter."""
        os.mkdir(self.p("before"))
        write_file(self.p("before/kept.json"), b'{"kept": true}')
        wait_filter_trusted(self.m)
        wait_drained(self.m, DRAIN)

    def make_targets(self):
        """While L3 is away, before the log is full: the victim file and
        the target dirs (new entries stay in the node table while dirty,
        so they are found without L3)."""
        write_file(self.p(self.victim), OLD)
        for d in self.targets.values():
            os.mkdir(self.p(d))
        self.victim_version = os.getxattr(self.p(self.victim), "user.tierfs.version")

    def fill(self):
        """mkdir NAME_LEN-byte names until one fails."""
        for i in range(MAX_FILL):
            d = name("fill", i)
            e = errno_of(lambda: os.mkdir(self.p(d)))
            if e is not None:
                self.fill_error = e
                self.absent.append(d)
                return
            self.made.append(d)

    def expected_root(self):
        return set(self.committed) | {self.victim} | set(self.targets.values()) | set(self.made)

    def try_refused(self):
        """Every kind of change, through Python (errno) and through the
        shell tools (status and message). Returns {what: problem} for each
        that did not fail with ENOSPC."""
        m, t = self.m, self.targets
        for d in list(t.values()) + [self.victim]:
            if d not in self.before:
                self.before[d] = os.stat(self.p(d))
        new_file, new_dir, long_dir = name("new-file"), name("new-dir"), name("new-dir", 1, NAME_LEN + 50)
        renamed, long_renamed = name("renamed"), name("renamed", 1, NAME_LEN + 50)
        sh_file, sh_dir, sh_renamed = name("sh-file"), name("sh-dir"), name("sh-renamed")
        self.absent += [new_file, new_dir, long_dir, renamed, long_renamed,
                        sh_file, sh_dir, sh_renamed]
        self.marks += [NEW, NEW_SH, XATTR_VALUE, XATTR_VALUE_SH.encode()]

        def create():
            os.close(os.open(self.p(new_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))

        py = {
            "create (os.open O_CREAT)": create,
            "mkdir": lambda: os.mkdir(self.p(new_dir)),
            "mkdir, longer name": lambda: os.mkdir(self.p(long_dir)),
            "rename dir": lambda: os.rename(self.p(t["rename"]), self.p(renamed)),
            "rename dir, longer name": lambda: os.rename(self.p(t["rename"]), self.p(long_renamed)),
            "chmod dir": lambda: os.chmod(self.p(t["chmod"]), 0o700),
            "utime dir": lambda: os.utime(self.p(t["utime"]), ns=(FAIL_NS, FAIL_NS)),
            "setxattr dir": lambda: os.setxattr(self.p(t["xattr"]), "user.x", XATTR_VALUE),
            "write + close file": lambda: write_file(self.p(self.victim), NEW),
            "truncate file by path": lambda: os.truncate(self.p(self.victim), 5),
        }
        problems = {}
        for what, fn in py.items():
            e = errno_of(fn)
            if e is None or e.errno != errno.ENOSPC:
                problems[what] = f"{describe(e)}; expected ENOSPC"

        src = self.tmp / "new-content"
        src.write_bytes(NEW_SH)
        sh = {
            "touch (create)": ["touch", sh_file],
            "mkdir(1)": ["mkdir", sh_dir],
            "mv dir": ["mv", "-T", t["rename"], sh_renamed],
            "chmod(1) dir": ["chmod", "711", t["chmod"]],
            "touch -m -d dir": ["touch", "-m", "-d", f"@{FAIL_NS_SH}", t["utime"]],
            "setfattr dir": ["setfattr", "-n", "user.y", "-v", XATTR_VALUE_SH, t["xattr"]],
            "cp onto file": ["cp", str(src), self.victim],
        }
        for what, argv in sh.items():
            cp = m.run(argv, check=False)
            if cp.returncode != 1 or ENOSPC_TEXT not in cp.stderr:
                problems[what] = (f"exit status {cp.returncode}, stderr {cp.stderr.strip()!r}; "
                                  f"expected 1 and {ENOSPC_TEXT!r}")
        return problems

    # -- checks -----------------------------------------------------------

    def mount_problems(self, listing):
        """What the mount shows that differs from "every change that
        succeeded, none that was refused". @listing: compare the root's
        listing too (it needs L3)."""
        problems = []
        for d in self.committed + self.made + list(self.targets.values()):
            e = errno_of(lambda: os.stat(self.p(d)))
            if e is not None:
                problems.append(f"{d[:24]}...: made before the log filled, but stat {describe(e)}")
        for d in self.absent:
            e = errno_of(lambda: os.lstat(self.p(d)))
            if e is None or e.errno != errno.ENOENT:
                problems.append(f"{d[:24]}...: a refused change's name: lstat {describe(e)}; "
                                f"expected ENOENT")
        if listing:
            got = set(os.listdir(self.m.mnt))
            want = self.expected_root()
            if got != want:
                problems.append(f"root listing: missing {sorted(n[:24] for n in want - got)}, "
                                f"extra {sorted(n[:24] for n in got - want)}")
        for what, d in self.targets.items():
            was = self.before[d]
            try:
                st, xattrs = os.stat(self.p(d)), os.listxattr(self.p(d))
            except OSError as e:
                problems.append(f"{what} target {d[:24]}...: {describe(e)}")
                continue
            for field in ("st_ino", "st_mode", "st_mtime_ns", "st_ctime_ns"):
                if getattr(st, field) != getattr(was, field):
                    problems.append(f"{what} target {d[:24]}...: {field} {getattr(st, field)}, "
                                    f"was {getattr(was, field)}")
            if xattrs != []:
                problems.append(f"{what} target: xattrs {xattrs}")
        was = self.before[self.victim]
        try:
            st, data = os.stat(self.p(self.victim)), read_file(self.p(self.victim))
        except OSError as e:
            problems.append(f"victim file: {describe(e)}")
            return problems
        if data != OLD:
            problems.append(f"victim file: content {data[:60]!r}, "
                            f"not the content before the refused changes")
        for field in ("st_ino", "st_size", "st_mtime_ns", "st_ctime_ns"):
            if getattr(st, field) != getattr(was, field):
                problems.append(f"victim file: {field} {getattr(st, field)}, was {getattr(was, field)}")
        version = os.getxattr(self.p(self.victim), "user.tierfs.version")
        if version != self.victim_version:
            problems.append(f"victim file: version {version!r}, was {self.victim_version!r}")
        return problems

    def log_problems(self, want_bytes):
        """The log on disk holds @want_bytes (the status says the same) and
        none of the refused names or values, but the names made before."""
        problems = []
        have = wal_bytes(self.m)
        said = status(self.m)["wal"]["bytes"]
        if have != want_bytes or said != want_bytes:
            problems.append(f"the log holds {have} bytes on disk ({said} says the status), "
                            f"{want_bytes} before the refused changes")
        data = segments_bytes(self.m)
        for d in self.made[-1:] + list(self.targets.values()):
            if d.encode() not in data:
                problems.append(f"{d[:24]}...: made before the log filled, not in the log")
        for d in self.absent:
            if d.encode() in data:
                problems.append(f"{d[:24]}...: a refused change's name is in the log")
        for mark in self.marks:
            if mark in data:
                problems.append(f"{mark[:24]!r}: a refused change's bytes are in the log")
        return problems

    def l3_problems(self, rows):
        """@rows: {name: (mode, mtime_ns, ctime_ns, xattrs hex, version,
        content hex)} of L3's entries in the root."""
        problems = []
        want = self.expected_root()
        got = set(rows)
        if got != want:
            problems.append(f"L3's root holds extra {sorted(n[:24] for n in got - want)}, "
                            f"lacks {sorted(n[:24] for n in want - got)}")
        for what, d in self.targets.items():
            if d not in rows:
                continue
            mode, mtime, ctime, xattrs, _, _ = rows[d]
            was = self.before[d]
            if (stat.S_IMODE(mode), mtime, ctime, xattrs) != \
                    (stat.S_IMODE(was.st_mode), was.st_mtime_ns, was.st_ctime_ns, ""):
                problems.append(f"{what} target in L3: mode {mode:o} mtime {mtime} ctime {ctime} "
                                f"xattrs {xattrs!r}; was mode {was.st_mode:o} mtime "
                                f"{was.st_mtime_ns} ctime {was.st_ctime_ns}, no xattrs")
        if self.victim in rows:
            _, mtime, _, _, version, data = rows[self.victim]
            was = self.before[self.victim]
            if (data, str(version).encode(), mtime) != (OLD.hex(), self.victim_version,
                                                        was.st_mtime_ns):
                problems.append(f"victim file in L3: version {version}, mtime {mtime}, content "
                                f"{bytes.fromhex(data)[:60]!r}; was version "
                                f"{self.victim_version!r}, mtime {was.st_mtime_ns}, {OLD[:30]!r}")
        return problems


def rows_sql(hexed):
    """L3's entries in the root, one line each: name, mode, mtime, ctime,
    xattrs, version, content; @hexed(column) spells "hex of a blob"."""
    return (f"SELECT {hexed('e.name')}, e.mode, e.mtime_ns, e.ctime_ns,"
            f" coalesce({hexed('e.xattrs')}, ''), e.version, coalesce({hexed('c.data')}, '')"
            " FROM entries e LEFT JOIN contents c ON c.ino = e.ino"
            f" WHERE e.parent = {ROOT_INO}")


def parse_rows(out):
    rows = {}
    for line in out.splitlines():
        nm, mode, mtime, ctime, xattrs, version, data = line.split("|")
        rows[bytes.fromhex(nm).decode()] = (int(mode), int(mtime), int(ctime), xattrs.lower(),
                                            int(version), data.lower())
    return rows


def pg_rows(m):
    return parse_rows(m.psql(rows_sql(lambda col: f"encode({col}, 'hex')")))


def sqlite_rows(m):
    cp = run(["sqlite3", "-readonly", "-noheader", "-separator", "|", str(m.db),
              rows_sql(lambda col: f"hex({col})")])
    return parse_rows(cp.stdout)


def report(plan, refused, now, log_now, after, l3, daemon_log):
    """One failure message with everything that differs."""
    parts = []
    if refused:
        parts.append("changes that did not fail with ENOSPC:\n  " +
                     "\n  ".join(f"{k}: {v}" for k, v in refused.items()))
    if now:
        parts.append("on the mount right after the refusals:\n  " + "\n  ".join(now))
    if log_now:
        parts.append("in the write-ahead log right after the refusals:\n  " + "\n  ".join(log_now))
    if after:
        parts.append("on the mount after drain and remount:\n  " + "\n  ".join(after))
    if l3:
        parts.append("in L3 after drain and remount:\n  " + "\n  ".join(l3))
    parts.append(f"{len(plan.made)} dirs were made before the log filled")
    parts.append(f"daemon stderr:\n{daemon_log[-4000:]}")
    return "\n\n".join(parts)


def run_full_log(m, plan, l3_away, l3_back, rows):
    """The scenario of the full-log tests: fill the log to wal_max_bytes
    while L3 is away (@l3_away/@l3_back), try the refused changes, check,
    bring L3 back, drain, remount, check again (@rows reads L3)."""
    plan.before_outage()
    mark = LogMark(m)
    l3_away()
    try:
        plan.make_targets()
        wait_l3_failing(m)
        w0 = status(m)["wal"]["bytes"]
        plan.fill()
        w1 = status(m)["wal"]["bytes"]
        assert plan.fill_error is not None, \
            f"{MAX_FILL} mkdirs of {NAME_LEN}-byte names fit in a {WAL_MAX}-byte log ({w1} bytes)"
        assert plan.fill_error.errno == errno.ENOSPC, \
            f"mkdir #{len(plan.made)} {describe(plan.fill_error)}; expected ENOSPC\n{mark.text()[-3000:]}"
        assert len(plan.made) >= 10, f"only {len(plan.made)} dirs fit: the test fills nothing"
        # The fill's records are all one size, and less than one is left.
        rec, rest = divmod(w1 - w0, len(plan.made))
        assert rest == 0, f"{len(plan.made)} mkdirs grew the log by {w1 - w0} bytes: not one size"
        assert WAL_MAX - w1 < rec, f"{WAL_MAX - w1} bytes left, room for a {rec}-byte record"

        refused = plan.try_refused()
        assert m.proc.poll() is None, f"the daemon exited\n{mark.text()[-3000:]}"
        now = plan.mount_problems(listing=False)
        log_now = plan.log_problems(w1)
        daemon_log = mark.text()
    finally:
        l3_back()
    wait_drained(m, DRAIN)
    m.remount()
    after = plan.mount_problems(listing=True)
    l3 = plan.l3_problems(rows(m))

    assert not (refused or now or log_now or after or l3), \
        report(plan, refused, now, log_now, after, l3, m.stderr_text())
    # It was the bound that refused, and the daemon said so.
    assert lines_with(daemon_log, "change refused", "wal_max_bytes"), daemon_log[-3000:]
    assert not lines_with(daemon_log, "cannot append to wal segment"), daemon_log[-3000:]


@pytest.mark.stores("postgres")
def test_full_log_postgres(tierfs_factory, private_pg, tmp_path):
    m = tierfs_factory(options=OPTIONS + [f"wal_max_bytes={WAL_MAX}"])
    run_full_log(m, Plan(m, tmp_path), private_pg.stop, private_pg.resume, pg_rows)


@pytest.mark.sqlite_only
def test_full_log_sqlite(tierfs_factory, tmp_path):
    m = tierfs_factory(options=OPTIONS + [f"wal_max_bytes={WAL_MAX}"])
    holder = {}

    def lock():
        # In WAL mode a held write transaction makes every batch fail
        # (SQLITE_BUSY after tierfs's busy_timeout) while reads go on.
        con = sqlite3.connect(str(m.db), isolation_level=None, timeout=30)
        con.execute("BEGIN IMMEDIATE")
        holder["con"] = con

    def unlock():
        con = holder.pop("con", None)
        if con is not None:
            con.execute("ROLLBACK")
            con.close()

    run_full_log(m, Plan(m, tmp_path), lock, unlock, sqlite_rows)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A TMPFS_SIZE tmpfs mounted on a fresh dir (root only), unmounted at
    teardown (lazily if a test left it busy)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "tmpfs"
    d.mkdir()
    run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(d)])
    try:
        yield d
    finally:
        if run(["umount", str(d)], check=False).returncode != 0:
            run(["umount", "-l", str(d)], check=False)


def tmpfs_free_pages(d):
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize // PAGE


@pytest.mark.stores("postgres")
def test_full_disk_postgres(small_tmpfs, tierfs_factory, private_pg, tmp_path):
    """The log's disk is full (wal_max_bytes is 1 GiB): appends fail with
    ENOSPC from write(2). First the tmpfs keeps two free pages and changes
    whose records are larger (new content, a big xattr) are tried: their
    write is cut short by the disk and must be cut away again, so the
    segments and the free space are as before. Then the tmpfs is filled
    to the last page and every kind of change is tried as in the full-log
    tests."""
    m = tierfs_factory(start=False, options=OPTIONS)
    m.wal = small_tmpfs / "wal"
    m.start()
    plan = Plan(m, tmp_path)
    filler = small_tmpfs / "filler"
    plan.before_outage()
    mark = LogMark(m)
    private_pg.stop()
    try:
        plan.make_targets()
        wait_l3_failing(m)
        w0 = status(m)["wal"]["bytes"]

        # Two pages free, and records larger than that.
        spare = 2
        run(["dd", "if=/dev/zero", f"of={filler}", f"bs={PAGE}",
             f"count={tmpfs_free_pages(small_tmpfs) - spare}"])
        assert tmpfs_free_pages(small_tmpfs) == spare
        for d in list(plan.targets.values()) + [plan.victim]:
            plan.before[d] = os.stat(m.path(d))
        plan.marks += [BIG_CONTENT, BIG_XATTR]
        big = {
            "write + close file, content larger than the free space":
                lambda: write_file(m.path(plan.victim), BIG_CONTENT),
            "setxattr dir, value larger than the free space":
                lambda: os.setxattr(m.path(plan.targets["xattr"]), "user.big", BIG_XATTR),
        }
        torn = {}
        for what, fn in big.items():
            e = errno_of(fn)
            if e is None or e.errno != errno.ENOSPC:
                torn[what] = f"{describe(e)}; expected ENOSPC"
            free, on_disk = tmpfs_free_pages(small_tmpfs), wal_bytes(m)
            if free != spare or on_disk != w0:
                torn[what + ", after"] = (f"{free} pages free, the segments hold {on_disk} bytes; "
                                          f"before: {spare} pages, {w0} bytes")

        # Now full to the last page; records may still fit in the last
        # page of the current segment.
        cp = run(["dd", "if=/dev/zero", f"of={filler}", f"bs={PAGE}", "oflag=append",
                  "conv=notrunc"], check=False)
        assert cp.returncode == 1 and ENOSPC_TEXT in cp.stderr, cp.stderr
        assert tmpfs_free_pages(small_tmpfs) == 0
        plan.fill()
        assert plan.fill_error is not None, f"{MAX_FILL} mkdirs fit on a full tmpfs"
        assert plan.fill_error.errno == errno.ENOSPC, \
            f"mkdir #{len(plan.made)} {describe(plan.fill_error)}; expected ENOSPC\n{mark.text()[-3000:]}"
        w1 = status(m)["wal"]["bytes"]
        assert w1 < status(m)["wal"]["max_bytes"] // 2, "the bound is near: this tests the disk"

        refused = dict(torn, **plan.try_refused())
        assert m.proc.poll() is None, f"the daemon exited\n{mark.text()[-3000:]}"
        now = plan.mount_problems(listing=False)
        log_now = plan.log_problems(w1)
        # the mount keeps working meanwhile
        assert read_file(m.path("before/kept.json")) == b'{"kept": true}'
        daemon_log = mark.text()
    finally:
        filler.unlink(missing_ok=True)
        private_pg.resume()
    wait_drained(m, DRAIN)
    m.remount()
    after = plan.mount_problems(listing=True)
    l3 = plan.l3_problems(pg_rows(m))

    assert not (refused or now or log_now or after or l3), \
        report(plan, refused, now, log_now, after, l3, m.stderr_text())
    # It was the disk that refused, and the daemon said so.
    assert lines_with(daemon_log, "cannot append to wal segment", ENOSPC_TEXT), daemon_log[-3000:]
    assert lines_with(daemon_log, "change refused"), daemon_log[-3000:]
