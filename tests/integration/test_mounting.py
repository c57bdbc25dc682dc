"""Mounting tierfs the ways users, init systems and containers do (issue 5,
items 2 and 3), each checked by reading the SQLite store afterwards with the
sqlite3 CLI (not through tierfs, whose log replay could hide a loss):

* inside a user namespace (`unshare -Urm`), as root and as an unprivileged
  user;
* on a /dev/fuse descriptor that a privileged parent opened and mounted
  (`/dev/fd/N` as the mountpoint, libfuse >= 3.3), the daemon running as
  root or as an unprivileged user;
* as an ordinary user through the setuid fusermount3;
* through mount.fuse3: `mount -t fuse.tierfs STORE MNT -o ...`, /etc/fstab
  lines (`mount -T FSTAB MNT`), and mount.fuse3's own /dev/fd handoff
  (`-o drop_privileges`);
* the systemd unit in examples/, run the way systemd runs it;
* `fusermount3 -u`, SIGTERM and SIGINT right after writes: every file is in
  the store once the daemon has exited, and the exit status is 0.

mount(8) clears PATH before it runs a helper, so mount.fuse3 finds `tierfs`
only in /bin/sh's default path (/usr/local/sbin:/usr/local/bin:...). The
mount.fuse3 tests therefore run in a private mount namespace of their own in
which /usr/local/sbin holds a `tierfs` symlink to the binary under test; the
host is left untouched. Their FUSE mounts live in that namespace, so the
tests reach them through nsenter.

The unprivileged user is `nobody`. Where /dev/fuse is not accessible to it
(some container hosts make it 0600; Debian's default is 0666), the test runs
in a private mount namespace in which /dev/fuse is a 0666 node of the same
device, as on a stock Debian host; without root to arrange that, it is
skipped.

All of these are about mounting, not storage: SQLite only.
"""

import ctypes
import errno
import json
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import (EXIT_TIMEOUT, MOUNT_TIMEOUT, REPO, SANITIZER_MARKERS, TIERFS_BIN,
                      TOOL_ENV, TOOL_TIMEOUT, _unescape_mount_field, in_mount_table, is_mounted,
                      run, wait_for)

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

pytestmark = pytest.mark.sqlite_only

# Flush thresholds no test reaches: only the drain at exit persists anything.
NO_BACKGROUND_FLUSH = ["batch_flush_ms=3600000", "batch_flush_count=10000000",
                       "batch_flush_bytes=1073741824"]

UNIT = REPO / "examples" / "tierfs.service"

# The paths examples/tierfs.service uses, replaced by temporary ones to run it.
UNIT_BIN = "/usr/local/bin/tierfs"
UNIT_DB = "/var/lib/tierfs/tierfs.db"
UNIT_MNT = "/srv/tierfs"


# -- the store, read without tierfs --------------------------------------

TREE_SQL = """
WITH RECURSIVE p(ino, path) AS (
    SELECT ino, CAST(name AS TEXT) FROM entries
     WHERE parent = (SELECT ino FROM entries WHERE parent = 0)
    UNION ALL
    SELECT e.ino, p.path || '/' || CAST(e.name AS TEXT)
      FROM entries e JOIN p ON e.parent = p.ino)
SELECT p.path AS path, e.kind AS kind, hex(c.data) AS data
  FROM p JOIN entries e USING (ino) LEFT JOIN contents c USING (ino)
"""


def store_tree(db):
    """{relative path: content bytes, or None for a directory} of every
    entry in the SQLite store @db, read with the sqlite3 CLI."""
    __tracebackhide__ = True
    if shutil.which("sqlite3") is None:
        pytest.fail("the sqlite3 CLI is missing (Debian package sqlite3; scripts/deps.sh installs it)")
    out = run(["sqlite3", "-readonly", "-json", str(db), TREE_SQL]).stdout
    rows = json.loads(out) if out.strip() else []
    tree = {}
    for r in rows:
        tree[r["path"]] = None if r["kind"] == 0 else bytes.fromhex(r["data"] or "")
    return tree


def with_parents(files):
    """@files ({path: bytes}) plus every parent directory (path: None)."""
    tree = dict(files)
    for rel in files:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            tree.setdefault("/".join(parts[:i]), None)
    return tree


def write_tree(root, n=200):
    """Writes @n files (JSON and binary, names with dots, spaces and UTF-8)
    in nested directories under @root, then overwrites one, renames one,
    deletes one and makes an empty directory. Returns {relative path: bytes,
    or None for a directory}: what the store must hold afterwards."""
    files = {}
    for i in range(n):
        d = f"d{i % 5}/sub.{i % 3}"
        os.makedirs(os.path.join(root, d), exist_ok=True)
        if i % 2:
            rel, data = f"{d}/item {i}.json", json.dumps({"i": i, "s": "é" * (i % 7)}).encode()
        else:
            rel, data = f"{d}/blob.v{i}.bin", bytes(range(256)) * (i % 5) + b"%d" % i
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
        files[rel] = data
    with open(os.path.join(root, "d0/sub.0/item 15.json"), "wb") as f:
        f.write(b'{"overwritten": true}')
    files["d0/sub.0/item 15.json"] = b'{"overwritten": true}'
    os.rename(os.path.join(root, "d1/sub.1/item 1.json"), os.path.join(root, "d1/renamé.json"))
    files["d1/renamé.json"] = files.pop("d1/sub.1/item 1.json")
    os.unlink(os.path.join(root, "d2/sub.2/blob.v2.bin"))
    del files["d2/sub.2/blob.v2.bin"]
    os.mkdir(os.path.join(root, "empty dir"))
    tree = with_parents(files)
    tree["empty dir"] = None
    return tree


def sanitizer_report(text):
    return next((m for m in SANITIZER_MARKERS if m in text), None)


def check_log(log):
    """Fails the test when the daemon log @log holds a sanitizer report."""
    __tracebackhide__ = True
    text = Path(log).read_text(errors="replace") if Path(log).exists() else ""
    marker = sanitizer_report(text)
    if marker:
        pytest.fail(f"{log} contains {marker!r}:\n{text}")
    return text


def daemon_env(home):
    """The environment of a daemon the tests start without TierfsMount: no
    store variables of the caller, XDG directories under @home."""
    env = {k: v for k, v in TOOL_ENV.items() if not k.startswith(("TIERFS_", "PG"))}
    env.update(HOME=str(home), XDG_DATA_HOME=f"{home}/xdg-data", XDG_STATE_HOME=f"{home}/xdg-state",
               PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def proc_cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="surrogateescape") for a in f.read().split(b"\0")[:-1]]


def proc_status(pid, field):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    return None


def mounts_of(pid="self"):
    """{mountpoint: (fstype, options)} as /proc/PID/mounts lists them."""
    result = {}
    with open(f"/proc/{pid}/mounts", "rb") as f:
        for line in f:
            fields = line.split()
            target = os.fsdecode(_unescape_mount_field(fields[1]))
            result[target] = (fields[2].decode(), fields[3].decode())
    return result


# -- running things as an unprivileged user ------------------------------

def setpriv_argv(uid, gid, argv):
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


def user_may(uid, gid, *test_args):
    """True when test(1) @test_args succeeds as @uid: access(2) as that
    user."""
    return subprocess.run(setpriv_argv(uid, gid, ["test", *test_args]),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def with_dev_fuse_for(uid, gid, argv, scratch):
    """@argv, run so that @uid can open /dev/fuse: unchanged when it already
    can; otherwise (as root) in a private mount namespace whose /dev/fuse is
    a 0666 node of the same device, as Debian's default /dev/fuse is. Skips
    the test when neither works."""
    if user_may(uid, gid, "-r", "/dev/fuse", "-a", "-w", "/dev/fuse"):
        return list(argv)
    if os.geteuid() != 0:
        pytest.skip(f"/dev/fuse is not read-writable by uid {uid} and the tests are "
                    "not root, so they cannot give it a usable one")
    rdev = os.stat("/dev/fuse").st_rdev
    devdir = Path(scratch) / "private-dev"
    devdir.mkdir()
    script = ('mount -t tmpfs -o mode=755 tierfs-test-dev "$1" && '
              f'mknod -m 666 "$1/fuse" c {os.major(rdev)} {os.minor(rdev)} && '
              'mount --bind "$1/fuse" /dev/fuse && shift && exec "$@"')
    probe = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                 str(devdir), *setpriv_argv(uid, gid, ["test", "-w", "/dev/fuse"])], check=False)
    if probe.returncode != 0:
        pytest.skip(f"/dev/fuse is 0{stat.S_IMODE(os.stat('/dev/fuse').st_mode):o} and a private "
                    f"0666 copy cannot be made here: {probe.stderr.strip()}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            str(devdir), *argv]


@pytest.fixture
def user_dir(monkeypatch):
    """(home, uid, gid): a fresh directory owned by the unprivileged user
    `nobody`, under a world-searchable directory in /tmp (pytest's tmp_path
    is root's alone). Removed at teardown, after detaching anything still
    mounted below it."""
    if os.geteuid() != 0:
        pytest.skip("running a daemon as another user needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is missing (Debian package util-linux)")
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user 'nobody'")
    base = Path(tempfile.mkdtemp(prefix="tierfs-user-"))
    try:
        os.chmod(base, 0o755)
        home = base / "home"
        home.mkdir()
        os.chown(home, pw.pw_uid, pw.pw_gid)
        if not user_may(pw.pw_uid, pw.pw_gid, "-x", str(TIERFS_BIN)):
            # A checkout in a closed directory (CI clones into a 0700 temp
            # dir): run a copy that 'nobody' can execute, for this test.
            copy = base / "bin" / "tierfs"
            copy.parent.mkdir()
            shutil.copy2(TIERFS_BIN, copy)
            os.chmod(copy, 0o755)
            monkeypatch.setattr(sys.modules[__name__], "TIERFS_BIN", copy)
            if not user_may(pw.pw_uid, pw.pw_gid, "-x", str(copy)):
                pytest.skip("no copy of tierfs is executable by 'nobody' here")
        yield home, pw.pw_uid, pw.pw_gid
    finally:
        for target in mounts_of():
            if target.startswith(f"{base}/"):
                subprocess.run(["fusermount3", "-u", "-z", target],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


# A session as a user would type it: mount in the background, wait for the
# mount, write, read back, read an xattr, unmount with fusermount3 -u, wait
# for the daemon. Prints "key: value" lines; exit status 0 when all went
# well. A failure leaves no mount behind (the EXIT trap detaches it, and the
# daemon exits when its mount goes).
SESSION_SH = r"""
bin=$1 db=$2 mnt=$3 log=$4
detach() { if mountpoint -q "$mnt"; then fusermount3 -u -z "$mnt"; fi; }
trap detach EXIT
"$bin" --sqlite="$db" -f "$mnt" 2>"$log" &
pid=$!
n=0
until mountpoint -q "$mnt"; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "error: tierfs exited before mounting"; exit 3; fi
    n=$((n + 1))
    if [ "$n" -gt 600 ]; then echo "error: no mount after 30 s"; kill "$pid"; exit 4; fi
    sleep 0.05
done
set -e
echo "uid: $(id -u)"
grep " $mnt " /proc/self/mounts | sed 's/^/mount: /'
mkdir "$mnt/dir"
printf '{"ns": 1}' > "$mnt/dir/one.json"
printf 'two' > "$mnt/two.bin"
echo "read: $(cat "$mnt/dir/one.json")"
echo "id: $(getfattr --only-values -n user.tierfs.id "$mnt/dir/one.json")"
echo "owner: $(stat -c %u "$mnt/two.bin")"
fusermount3 -u "$mnt"
rc=0
wait "$pid" || rc=$?
echo "exit: $rc"
"""

SESSION_TREE = {"dir": None, "dir/one.json": b'{"ns": 1}', "two.bin": b"two"}


def run_session(argv_prefix, db, mnt, log, env):
    """Runs SESSION_SH under @argv_prefix; returns {key: [values]} of its
    output. Fails the test when it fails."""
    __tracebackhide__ = True
    cp = run([*argv_prefix, "sh", "-c", SESSION_SH, "session", str(TIERFS_BIN), str(db), str(mnt),
              str(log)], check=False, env=env)
    text = check_log(log)
    if cp.returncode != 0:
        pytest.fail(f"the session failed (status {cp.returncode})\nstdout:\n{cp.stdout}\n"
                    f"stderr:\n{cp.stderr}\ndaemon log:\n{text}")
    out = {}
    for line in cp.stdout.splitlines():
        key, _, value = line.partition(": ")
        out.setdefault(key, []).append(value)
    return out


def require_userns(prefix=()):
    """Skips the test when `unshare -Urm` cannot run (under @prefix): user
    namespaces disabled, or a seccomp profile that forbids unshare(2)."""
    cp = run([*prefix, "unshare", "-Urm", "true"], check=False)
    if cp.returncode != 0:
        pytest.skip(f"cannot create a user namespace here: {cp.stderr.strip()}")


def check_session(out, uid, mnt):
    __tracebackhide__ = True
    assert out["uid"] == [str(uid)]
    [mount] = out["mount"]
    assert mount.split()[:3] == ["tierfs", str(mnt), "fuse.tierfs"]
    assert f"user_id={uid}" in mount and "default_permissions" in mount
    assert out["read"] == ['{"ns": 1}']
    assert out["id"] == ["dir.one"]
    assert out["owner"] == [str(uid)]
    assert out["exit"] == ["0"], "the daemon exited non-zero after fusermount3 -u"


# -- 2. unprivileged mounts ------------------------------------------------

def test_user_namespace_as_root(tierfs_factory, tmp_path):
    """unshare -Urm: root of a new user namespace mounts, writes, reads and
    unmounts; the data is in the store, and a mount outside reads it."""
    require_userns()
    db, mnt = tmp_path / "ns.db", tmp_path / "ns.mnt"
    mnt.mkdir()
    out = run_session(["unshare", "-Urm"], db, mnt, tmp_path / "ns.log", daemon_env(tmp_path))
    check_session(out, 0, mnt)
    assert not in_mount_table(mnt), "the namespace's mount leaked into the host"
    assert store_tree(db) == SESSION_TREE
    m = tierfs_factory(sqlite=db)
    with open(m.path("dir", "one.json"), "rb") as f:
        assert f.read() == b'{"ns": 1}'
    assert m.getfattr(m.path("two.bin"), "user.tierfs.id") == "two%2Ebin"


def test_user_namespace_as_unprivileged_user(tierfs_factory, user_dir):
    """A user who is root only inside its own user namespace (as rootless
    podman runs a container) mounts there: `setpriv --reuid nobody unshare
    -Urm`. Needs /dev/fuse usable by that user (see the module docstring)."""
    home, uid, gid = user_dir
    require_userns(setpriv_argv(uid, gid, []))
    db, mnt = home / "ns.db", home / "ns.mnt"
    mnt.mkdir()
    os.chown(mnt, uid, gid)
    prefix = with_dev_fuse_for(uid, gid, setpriv_argv(uid, gid, ["unshare", "-Urm"]), home.parent)
    out = run_session(prefix, db, mnt, home / "ns.log", daemon_env(home))
    check_session(out, 0, mnt)  # uid 0 inside the namespace
    assert os.stat(db).st_uid == uid, "the store was not created by the unprivileged user"
    assert store_tree(db) == SESSION_TREE
    m = tierfs_factory(sqlite=db)
    with open(m.path("two.bin"), "rb") as f:
        assert f.read() == b"two"


def test_ordinary_user_through_fusermount3(user_dir):
    """An ordinary user mounts on a directory it owns with the store in a
    directory it owns; libfuse goes through the setuid fusermount3."""
    home, uid, gid = user_dir
    fusermount = shutil.which("fusermount3")
    st = os.stat(fusermount)
    if not (st.st_mode & stat.S_ISUID and st.st_uid == 0):
        pytest.skip(f"{fusermount} is not setuid root, so ordinary users cannot mount with it")
    db, mnt = home / "u.db", home / "u.mnt"
    mnt.mkdir()
    os.chown(mnt, uid, gid)
    prefix = with_dev_fuse_for(uid, gid, setpriv_argv(uid, gid, []), home.parent)
    out = run_session(prefix, db, mnt, home / "u.log", daemon_env(home))
    check_session(out, uid, mnt)
    assert "nosuid" in out["mount"][0] and "nodev" in out["mount"][0]
    assert os.stat(db).st_uid == uid
    assert store_tree(db) == SESSION_TREE


MS_NOSUID, MS_NODEV = 2, 4


def sys_mount(source, target, fstype, flags, data):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_char_p]
    if libc.mount(os.fsencode(source), os.fsencode(target), os.fsencode(fstype), flags,
                  os.fsencode(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


def sys_umount(target, flags=0):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    if libc.umount2(os.fsencode(target), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


@pytest.mark.parametrize("stop", ["umount", "SIGTERM"])
@pytest.mark.parametrize("daemon_user", ["root", "nobody"])
def test_dev_fd_handoff(tierfs_factory, tmp_path, request, daemon_user, stop):
    """A privileged parent opens /dev/fuse and mounts it with mount(2); the
    daemon gets the descriptor and `/dev/fd/N` as its mountpoint, and serves
    the mount without mounting anything itself: run as root, and as an
    unprivileged user with no capabilities (what container helpers do).
    The mount is the parent's: when the parent unmounts, the daemon
    persists and exits 0; on SIGTERM the daemon persists and exits 0 too,
    and leaves the (now dead) mount for the parent to remove."""
    if os.geteuid() != 0:
        pytest.skip("the privileged parent needs root to call mount(2)")
    if daemon_user == "root":
        home, uid, gid = tmp_path, 0, 0
        prefix = []
    else:
        home, uid, gid = request.getfixturevalue("user_dir")
        prefix = setpriv_argv(uid, gid, [])
    db, mnt, log = home / "fd.db", tmp_path / "fd.mnt", tmp_path / "fd.log"
    mnt.mkdir()
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        sys_mount("tierfs", mnt, "fuse.tierfs", MS_NOSUID | MS_NODEV,
                  f"fd={fd},rootmode=40000,user_id=0,group_id=0,default_permissions")
    except OSError as e:
        os.close(fd)
        pytest.skip(f"mount(2) of a FUSE file system is refused here: {e}")
    proc = None
    try:
        with open(log, "wb") as err:
            proc = subprocess.Popen([*prefix, str(TIERFS_BIN), f"--sqlite={db}", "-f", f"/dev/fd/{fd}"],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                    env=daemon_env(home), pass_fds=[fd])
        os.close(fd)  # the daemon holds the only descriptor now
        fd = -1
        # The kernel holds every request until the daemon answers; so that a
        # daemon that fails cannot hang the test, wait for it to say it serves.
        wait_for(lambda: proc.poll() is not None or "mounted" in log.read_text(errors="replace"),
                 MOUNT_TIMEOUT)
        text = check_log(log)
        assert proc.poll() is None and "on '/dev/fd/" in text, f"the daemon did not start:\n{text}"
        if uid:
            assert proc_status(proc.pid, "Uid").split()[:2] == [str(uid)] * 2
            assert int(proc_status(proc.pid, "CapEff"), 16) == 0
        fstype, opts = mounts_of()[str(mnt)]
        assert fstype == "fuse.tierfs" and "default_permissions" in opts

        os.mkdir(mnt / "dir")
        (mnt / "dir" / "one.json").write_bytes(b'{"fd": 1}')
        (mnt / "two.bin").write_bytes(b"two")
        assert sorted(os.listdir(mnt)) == ["dir", "two.bin"]
        assert (mnt / "dir" / "one.json").read_bytes() == b'{"fd": 1}'
        # Last, a request that opens nothing: the kernel sends RELEASE and
        # RELEASEDIR in the background, and drops those still queued when
        # the mount goes (then tierfs never frees the handle; LeakSanitizer
        # reports it). A later request is read after them.
        assert os.getxattr(mnt / "dir" / "one.json", "user.tierfs.id") == b"dir.one"

        if stop == "umount":
            sys_umount(mnt)  # the parent's job: the daemon sees the end of its session
            rc = proc.wait(timeout=EXIT_TIMEOUT)
            proc = None
        else:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=EXIT_TIMEOUT)
            proc = None
            assert in_mount_table(mnt), "the daemon removed a mount it does not own"
            with pytest.raises(OSError) as e:
                os.listdir(mnt)
            assert e.value.errno == errno.ENOTCONN
            sys_umount(mnt)
        assert rc == 0, f"the daemon exited {rc} after {stop}\n{check_log(log)}"
    finally:
        if fd >= 0:
            os.close(fd)
        if proc is not None:
            if in_mount_table(mnt):
                sys_umount(mnt, 2)  # MNT_DETACH
            try:
                proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif in_mount_table(mnt):
            sys_umount(mnt, 2)
    check_log(log)
    assert store_tree(db) == {"dir": None, "dir/one.json": b'{"fd": 1}', "two.bin": b"two"}
    m = tierfs_factory(sqlite=db)
    assert m.path("dir", "one.json").read_bytes() == b'{"fd": 1}'


# -- 3. mount conventions --------------------------------------------------

class MountNamespace:
    """A private mount namespace held open by a child (`cat`, waiting on
    its stdin), in which /usr/local/sbin holds only a `tierfs` symlink to
    the binary under test (and /run/mount is private, so that libmount's
    utab stays out of the host). Commands run in it with nsenter."""

    def __init__(self, scratch):
        self.scratch = Path(scratch)
        self.bindir = self.scratch / "helper-path"
        self.bindir.mkdir()
        os.symlink(TIERFS_BIN, self.bindir / "tierfs")
        script = (f"mount --bind {shlex.quote(str(self.bindir))} /usr/local/sbin && "
                  "{ ! [ -d /run/mount ] || mount -t tmpfs -o mode=755 tierfs-test /run/mount; } && "
                  "echo ready && exec cat")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                      "sh", "-c", script],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            err = self.proc.communicate(timeout=TOOL_TIMEOUT)[1]
            pytest.skip(f"cannot make a private mount namespace: {err.strip()}")
        self.pid = self.proc.pid
        self.ns = os.stat(f"/proc/{self.pid}/ns/mnt").st_ino

    def run(self, argv, check=True):
        __tracebackhide__ = True
        return run(["nsenter", "-t", str(self.pid), "-m", "--", *argv], check=check)

    def sh(self, script, check=True):
        __tracebackhide__ = True
        return self.run(["sh", "-c", script], check=check)

    def mounts(self):
        return mounts_of(self.pid)

    def daemons(self):
        """Pids of the processes in this namespace that run the binary."""
        found = []
        target = os.path.realpath(TIERFS_BIN)
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if (os.stat(f"/proc/{name}/ns/mnt").st_ino == self.ns
                        and os.path.realpath(f"/proc/{name}/exe") == target):
                    found.append(int(name))
            except OSError:
                pass
        return found

    def wait_daemons_gone(self):
        __tracebackhide__ = True
        if not wait_for(lambda: not self.daemons(), EXIT_TIMEOUT):
            pytest.fail(f"tierfs (pids {self.daemons()}) did not exit within {EXIT_TIMEOUT:.0f}s "
                        "after the unmount")

    def close(self):
        """Detaches every mount of this test, waits for the daemons (kills
        them by pid after the deadline), ends the namespace."""
        for target in self.mounts():
            if target.startswith(f"{self.scratch}/"):
                self.run(["umount", "-l", target], check=False)
        if not wait_for(lambda: not self.daemons(), EXIT_TIMEOUT):
            for pid in self.daemons():
                os.kill(pid, signal.SIGKILL)
        self.proc.stdin.close()
        self.proc.wait(timeout=TOOL_TIMEOUT)


@pytest.fixture
def mount_ns(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mount(8) and a private mount namespace need root")
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (Debian package util-linux / mount)")
    if not os.path.exists("/sbin/mount.fuse3") and shutil.which("mount.fuse3") is None:
        pytest.skip("mount.fuse3 is missing (Debian package fuse3)")
    ns = MountNamespace(tmp_path)
    try:
        yield ns
    finally:
        ns.close()


def use_mount(ns, mnt):
    """Writes, reads back and checks xattrs through @mnt in @ns: the
    SESSION_TREE, as a user's shell would."""
    __tracebackhide__ = True
    q = shlex.quote(str(mnt))
    out = ns.sh(f"set -e; mkdir {q}/dir; printf '{{\"ns\": 1}}' > {q}/dir/one.json; "
                f"printf two > {q}/two.bin; cat {q}/dir/one.json; echo; "
                f"getfattr --only-values -n user.tierfs.id {q}/dir/one.json").stdout
    assert out.splitlines() == ['{"ns": 1}', "dir.one"]


@pytest.mark.parametrize("source", ["sqlite:{db}", "{db}"])
def test_mount_t_fuse_tierfs(tierfs_factory, mount_ns, tmp_path, source):
    """`mount -t fuse.tierfs STORE MNT -o OPTS`: mount(8) runs mount.fuse3,
    which runs `tierfs STORE MNT -o OPTS` in the background; `umount`
    unmounts, and the daemon persists everything before it exits."""
    db, mnt = tmp_path / "mt.db", tmp_path / "mt.mnt"
    mnt.mkdir()
    store = source.format(db=db)
    mount_ns.run(["mount", "-t", "fuse.tierfs", store, str(mnt), "-o", "batch_flush_ms=50"])
    fstype, opts = mount_ns.mounts()[str(mnt)]
    assert fstype == "fuse.tierfs" and "default_permissions" in opts
    [pid] = mount_ns.daemons()
    argv = proc_cmdline(pid)
    assert argv[1:3] == [store, str(mnt)], argv
    assert "batch_flush_ms=50" in argv[-1].split(","), argv
    assert not in_mount_table(mnt), "the namespace's mount leaked into the host"
    use_mount(mount_ns, mnt)
    mount_ns.run(["umount", str(mnt)])
    mount_ns.wait_daemons_gone()
    assert str(mnt) not in mount_ns.mounts()
    assert store_tree(db) == SESSION_TREE


FSTAB_OPTIONS = [
    "defaults",
    # what a boot-time line carries: mount(8) and mount.fuse3 drop these
    "rw,nofail,_netdev,noauto,x-systemd.automount,x-systemd.idle-timeout=60,batch_flush_ms=50",
    # relatime reaches tierfs: accepted and ignored (tierfs mounts noatime)
    "defaults,relatime,users,batch_flush_ms=50",
]


@pytest.mark.parametrize("options", FSTAB_OPTIONS, ids=["defaults", "boot", "relatime-users"])
def test_fstab_line(tierfs_factory, mount_ns, tmp_path, options):
    """An /etc/fstab line, `STORE MNT fuse.tierfs OPTIONS 0 0`, mounted with
    `mount MNT` (here `mount -T FSTAB MNT`, util-linux's --fstab), unmounted
    with `fusermount3 -u`."""
    db, mnt = tmp_path / "fs.db", tmp_path / "fs.mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# tierfs test\nsqlite:{db} {mnt} fuse.tierfs {options} 0 0\n")
    cp = mount_ns.run(["mount", "-T", str(fstab), str(mnt)], check=False)
    assert cp.returncode == 0, f"mount -T failed: {cp.stderr}"
    assert mount_ns.mounts()[str(mnt)][0] == "fuse.tierfs"
    use_mount(mount_ns, mnt)
    mount_ns.run(["fusermount3", "-u", str(mnt)])
    mount_ns.wait_daemons_gone()
    assert store_tree(db) == SESSION_TREE


def test_mount_fuse3_drop_privileges(tierfs_factory, mount_ns, tmp_path):
    """`-o drop_privileges`: mount.fuse3 opens /dev/fuse and mounts, then
    runs tierfs with no capabilities and /dev/fd/N as its mountpoint (the
    /dev/fd handoff, done by the stock helper). The helper decides the mount
    options, so default_permissions is given explicitly."""
    db, mnt = tmp_path / "dp.db", tmp_path / "dp.mnt"
    mnt.mkdir()
    mount_ns.run(["mount", "-t", "fuse.tierfs", str(db), str(mnt), "-o",
                  "drop_privileges,default_permissions"])
    fstype, opts = mount_ns.mounts()[str(mnt)]
    assert fstype == "fuse.tierfs" and "default_permissions" in opts
    [pid] = mount_ns.daemons()
    assert proc_cmdline(pid)[2].startswith("/dev/fd/"), proc_cmdline(pid)
    assert int(proc_status(pid, "CapEff"), 16) == 0
    assert int(proc_status(pid, "CapBnd"), 16) == 0
    use_mount(mount_ns, mnt)
    mount_ns.run(["umount", str(mnt)])
    mount_ns.wait_daemons_gone()
    assert store_tree(db) == SESSION_TREE


def test_fstab_only_options_accepted_when_called_directly(tierfs_factory):
    """Options that only mean something to mount(8) or systemd are accepted
    and ignored when tierfs gets them itself; an unknown one still fails."""
    ignored = ("defaults,auto,noauto,nofail,_netdev,user,users,nouser,owner,group,"
               "x-systemd.automount,x-systemd.device-timeout=10,comment=systemd.x,"
               "relatime,norelatime,strictatime,lazytime,nodiratime")
    m = tierfs_factory(options=[ignored])
    m.path("a.json").write_bytes(b"[1]")
    assert m.path("a.json").read_bytes() == b"[1]"
    m.unmount()
    # an unknown option next to them still fails (no -f: should it mount
    # anyway, it returns and the mount is detached below)
    bad = tierfs_factory(start=False, name="bad")
    argv = [str(TIERFS_BIN), f"--sqlite={bad.db}", "-o", "nofail,x_not_an_option", str(bad.mnt)]
    cp = run(argv, check=False, env=bad.env(), timeout=MOUNT_TIMEOUT)
    if is_mounted(bad.mnt):
        run(["fusermount3", "-u", "-z", str(bad.mnt)], check=False)
    assert cp.returncode == 2 and "x_not_an_option" in cp.stderr, cp.stderr


# -- the systemd unit ------------------------------------------------------

def unit_service_section(path):
    """{key: [values]} of the [Service] section of the unit file @path."""
    section, result = None, {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            result.setdefault(key.strip(), []).append(value.strip())
    return result


# Runs a command as systemd runs a Type=forking service: as a child
# subreaper, so that the daemon the command leaves behind becomes its child.
# Prints "started STATUS", then "daemon PID", then "exited PID STATUS" when
# the daemon exits; gives up (killed by SIGALRM) after argv[1] seconds.
SUBREAPER_PY = r"""
import ctypes, os, signal, subprocess, sys
signal.alarm(int(sys.argv[1]))
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
rc = subprocess.call(sys.argv[2:], stdin=subprocess.DEVNULL)
print("started", rc, flush=True)
if rc != 0:
    sys.exit(0)
me = str(os.getpid())
kids = []
for name in os.listdir("/proc"):
    try:
        with open(f"/proc/{name}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[1] == me:
                kids.append(int(name))
    except (OSError, IndexError):
        pass
if len(kids) != 1:
    print("daemons", kids, flush=True)
    sys.exit(1)
print("daemon", kids[0], flush=True)
_, status = os.waitpid(kids[0], 0)
print("exited", kids[0], os.waitstatus_to_exitcode(status), flush=True)
"""


def test_systemd_unit_example(tmp_path):
    """examples/tierfs.service, run as systemd would run it with its paths
    replaced by temporary ones: ExecStart returns once the mount is there
    (Type=forking), `systemctl stop` (SIGTERM to the daemon) persists
    everything, unmounts and exits 0, and ExecStopPost is harmless after a
    clean stop."""
    svc = unit_service_section(UNIT)
    assert svc.get("Type") == ["forking"]
    db, mnt = tmp_path / "unit.db", tmp_path / "unit.mnt"
    mnt.mkdir()
    subst = {UNIT_BIN: str(TIERFS_BIN), f"--sqlite={UNIT_DB}": f"--sqlite={db}", UNIT_MNT: str(mnt)}
    [exec_start] = svc["ExecStart"]
    argv = shlex.split(exec_start)
    assert set(subst) <= set(argv), f"ExecStart no longer uses {sorted(subst)}: {exec_start}"
    argv = [subst.get(a, a) for a in argv]

    log = tmp_path / "reaper.log"
    with open(log, "w") as err:
        reaper = subprocess.Popen([sys.executable, "-c", SUBREAPER_PY,
                                   str(int(MOUNT_TIMEOUT + EXIT_TIMEOUT)), *argv],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                  text=True, env=daemon_env(tmp_path))
    try:
        line = reaper.stdout.readline().split()
        assert line == ["started", "0"], f"ExecStart failed: {line} {log.read_text()}"
        # Type=forking: started means mounted, with no waiting
        assert is_mounted(mnt)
        line = reaper.stdout.readline().split()
        assert line[:1] == ["daemon"], f"{line} {log.read_text()}"
        pid = int(line[1])
        assert str(mnt) in proc_cmdline(pid)

        files = write_tree(mnt, n=60)
        os.kill(pid, signal.SIGTERM)  # systemctl stop
        line = reaper.stdout.readline().split()
        assert line == ["exited", str(pid), "0"], f"{line} {log.read_text()}"
    finally:
        if in_mount_table(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)])
        reaper.wait(timeout=EXIT_TIMEOUT)
    assert not in_mount_table(mnt)
    # After a clean stop there is nothing to detach: the unmount fails
    # (fusermount3 exits 1), and the leading '-' is what makes systemd
    # ignore that.
    for post in svc.get("ExecStopPost", []):
        assert post.startswith("-"), f"a clean stop makes {post!r} fail"
        post_argv = [subst.get(a, a) for a in shlex.split(post.lstrip("-"))]
        assert str(mnt) in post_argv, post
        cp = run(post_argv, check=False)
        assert cp.returncode == 1, f"{post}: exit {cp.returncode}: {cp.stderr}"
    assert store_tree(db) == files


def test_systemd_unit_verifies(tmp_path):
    """systemd-analyze verify accepts the unit (with ExecStart pointing at a
    binary that exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing")
    text = UNIT.read_text().replace(UNIT_BIN, str(TIERFS_BIN))
    copy = tmp_path / "tierfs.service"
    copy.write_text(text)
    cp = run(["systemd-analyze", "verify", "--man=no", str(copy)], check=False)
    problems = [l for l in (cp.stdout + cp.stderr).splitlines() if "tierfs.service" in l]
    assert cp.returncode == 0 and not problems, cp.stdout + cp.stderr


# -- unmount and signals persist everything ---------------------------------

@pytest.mark.parametrize("flush", ["default-thresholds", "no-background-flush"])
@pytest.mark.parametrize("stop", ["fusermount3-u", "SIGTERM", "SIGINT"])
def test_stop_right_after_writes_persists_every_file(tierfs_factory, stop, flush):
    """Writes, then at once (no fsync) `fusermount3 -u`, SIGTERM or SIGINT:
    once the daemon has exited (status 0, mount gone), the SQLite file holds
    every file and directory with its last content. With flush thresholds
    nothing reaches, the files are provably still pending when the stop
    comes, and absent from the store until then."""
    if stop == "SIGINT" and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        pytest.skip("SIGINT is ignored in this process, so the daemon inherits it ignored "
                    "and libfuse leaves it so (pytest runs in a background job)")
    m = tierfs_factory(options=NO_BACKGROUND_FLUSH if flush == "no-background-flush" else [])
    expected = write_tree(m.mnt)
    if flush == "no-background-flush":
        assert m.getfattr(m.path("d4/sub.1/item 19.json"), "user.tierfs.status") == "pending"
        before = store_tree(m.db)
        assert not set(before) & {p for p, v in expected.items() if v is not None}, \
            "files reached the store before the stop"
    if stop == "fusermount3-u":
        m.unmount()  # fails the test unless the daemon exits 0
    else:
        m.proc.send_signal(signal.SIGTERM if stop == "SIGTERM" else signal.SIGINT)
        rc = m.proc.wait(timeout=EXIT_TIMEOUT)
        m.proc = None
        assert rc == 0, f"tierfs exited {rc} after {stop}\n{m.stderr_text()}"
        assert not in_mount_table(m.mnt), f"{stop} left the mount in place"
    assert store_tree(m.db) == expected
