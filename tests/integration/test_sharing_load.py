"""Several mounts on one store under load and under trouble: a seeded random
workload on three mounts checked against a model, a PostgreSQL restart
while mounts listen to the feed, a mount cut off longer than the feed
keeps, eight mounts inside one user namespace, and two mounts creating the
same names at once.

As in test_sharing.py, every mount has kernel timeouts of ten minutes
(LONG): what another mount did can only reach this one's kernel through
the change feed, never by a timeout running out. Every check waits for
its condition with a deadline, polling.

The workload's seed is SEED (TIERFS_TEST_SEED overrides it); a failure
prints it, so that the sequence can be run again.

The restart test stops and resumes a private PostgreSQL server of its own
(conftest's private_pg, as test_outages.py uses): this module's
`store` fixture swaps the shared server for it in the tests that ask for
private_pg. It runs where the PostgreSQL configurations run (the
shared server's variables set), Redis being the shared one.
"""

import json
import os
import random
import shutil
import signal
import threading

import pytest

from conftest import (MOUNT_TIMEOUT, SANITIZER_MARKERS, TIERFS_BIN, PgServer, run, wait_for,
                      write_file)
from test_sharing import LONG, VISIBLE, gone, mounts, read, sees, synced, write, xattr

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="FUSE is unavailable here (/dev/fuse or fusermount3 missing)")

SEED = int(os.environ.get("TIERFS_TEST_SEED", "20250611"))
CONVERGE = 30.0   # seconds for three mounts to agree after a workload
BACK = 60.0       # seconds for a mount to catch up once PostgreSQL is back


@pytest.fixture
def store(request, store):
    """conftest's store; in a test that asks for private_pg, its
    PostgreSQL is that private server, which the test may stop."""
    if store.uses_postgres and "private_pg" in request.fixturenames:
        store.pg = PgServer(request.getfixturevalue("private_pg").uri)
    return store


# --- helpers ----------------------------------------------------------------

def metric(m, name):
    """The value of counter @name in @m's .tierfs/metrics."""
    for line in read(m.path(".tierfs", "metrics")).decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return int(line.split()[-1])
    raise AssertionError(f"{name} is not in {m.mnt}/.tierfs/metrics")


def snapshot(root):
    """{relative path: ("d", mode, xattrs) or ("f", mode, xattrs, bytes)}
    of everything below @root, xattrs being the user.* ones stored (the
    computed user.tierfs.* left out); None when an entry went away or
    changed kind while being read (the mounts are still converging)."""
    tree = {}

    def xattrs(path):
        return {n: os.getxattr(path, n) for n in sorted(os.listxattr(path))
                if not n.startswith("user.tierfs.")}

    def walk(rel):
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            if e.name == ".tierfs" and not rel:
                continue
            st = os.stat(e.path)
            mode = st.st_mode & 0o7777
            if e.is_dir(follow_symlinks=False):
                tree[r] = ("d", mode, xattrs(e.path))
                walk(r)
            else:
                with open(e.path, "rb") as f:
                    tree[r] = ("f", mode, xattrs(e.path), f.read())
    try:
        walk("")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return tree


def tree_diff(want, got):
    """A short account of how @got differs from @want."""
    if got is None:
        return "the tree changed while it was read"
    lines = [f"missing {p}: {want[p]!r:.120}" for p in sorted(set(want) - set(got))]
    lines += [f"extra {p}: {got[p]!r:.120}" for p in sorted(set(got) - set(want))]
    lines += [f"differs {p}: want {want[p]!r:.120} got {got[p]!r:.120}"
              for p in sorted(set(want) & set(got)) if want[p] != got[p]]
    return "\n".join(lines[:30]) + (f"\n... {len(lines) - 30} more" if len(lines) > 30 else "")


def merkle_views(ms):
    """{(mount name, "hash" | "xattr"): hash}: `tierfs hash MNT` and the
    root's user.tierfs.merkle of every mount."""
    out = {}
    for m in ms:
        out[(m.name, "hash")] = run([str(TIERFS_BIN), "hash", str(m.mnt)]).stdout.split()[0]
        out[(m.name, "xattr")] = xattr(m.mnt, "user.tierfs.merkle").decode()
    return out


# --- 1. a seeded random workload on three mounts, against a model ---------

SHARED = ("s0", "s1")
MODES = (0o600, 0o640, 0o644, 0o664, 0o700)
OPS = 400  # per thread


class Actor:
    """One thread's workload on one mount. The thread owns every name it
    makes (they start with its tag, and every stem is new), so the final
    state is its own sequence's alone, while its files and directories go
    in and out of the shared directories that the others use at the same
    time. @model maps the relative path of each entry it owns (its root
    own<k> and the shared directories excluded) to ["d", mode, xattrs] or
    ["f", mode, xattrs, bytes]."""

    def __init__(self, k, m, seed):
        self.k, self.m = k, m
        self.rng = random.Random(seed)
        self.root = f"own{k}"
        self.model = {}
        self.n = 0
        self.done = []  # the operations, for the failure message

    def fresh(self, ext):
        self.n += 1
        return f"t{self.k}_{self.n}{ext}"

    def content(self, ext):
        if ext == ".json":
            return json.dumps({"k": self.k, "n": self.n, "r": self.rng.random(),
                               "pad": "x" * self.rng.randrange(200)}).encode()
        return self.rng.randbytes(self.rng.randrange(0, 400))

    def files(self):
        return sorted(p for p, e in self.model.items() if e[0] == "f")

    def dirs(self):
        """The directories it may put things in: its own and the shared."""
        return [self.root, *SHARED, *sorted(p for p, e in self.model.items() if e[0] == "d")]

    def stat_mode(self, rel):
        return os.stat(self.m.path(rel)).st_mode & 0o7777

    def op(self):
        rng, path = self.rng, self.m.path
        kinds = ["create"] * 5 + ["mkdir"] * 2
        files, own_dirs = self.files(), [p for p, e in self.model.items() if e[0] == "d"]
        if files:
            kinds += ["overwrite"] * 3 + ["chmod"] * 2 + ["setxattr"] * 2 + ["rename"] * 3 + \
                     ["unlink"] * 2
        if own_dirs:
            kinds += ["rmdir", "rendir"]
        kind = rng.choice(kinds)
        if kind == "create":
            ext = rng.choice((".json", ".bin"))
            rel = f"{rng.choice(self.dirs())}/{self.fresh(ext)}"
            data = self.content(ext)
            write_file(path(rel), data, fsync=rng.random() < 0.2)
            self.model[rel] = ["f", self.stat_mode(rel), {}, data]
        elif kind == "mkdir":
            rel = f"{rng.choice(self.dirs())}/{self.fresh('')}"
            os.mkdir(path(rel))
            self.model[rel] = ["d", self.stat_mode(rel), {}]
        elif kind == "overwrite":
            rel = rng.choice(files)
            data = self.content(os.path.splitext(rel)[1])
            write_file(path(rel), data, fsync=rng.random() < 0.2)
            self.model[rel][3] = data
        elif kind == "chmod":
            rel, mode = rng.choice(files), rng.choice(MODES)
            os.chmod(path(rel), mode)
            self.model[rel][1] = mode
        elif kind == "setxattr":
            rel = rng.choice(files)
            name, value = f"user.a{rng.randrange(3)}", b"%d" % rng.randrange(10**6)
            os.setxattr(path(rel), name, value)
            self.model[rel][2] = dict(self.model[rel][2], **{name: value})
        elif kind == "rename":
            rel = rng.choice(files)
            ext = os.path.splitext(rel)[1]
            same_ext = [f for f in files if f != rel and f.endswith(ext)]
            if same_ext and rng.random() < 0.25:
                to = rng.choice(same_ext)  # onto one of its own: replaced
            else:
                to = f"{rng.choice(self.dirs())}/{self.fresh(ext)}"
            os.rename(path(rel), path(to))
            self.model[to] = self.model.pop(rel)
            rel = f"{rel} -> {to}"
        elif kind == "unlink":
            rel = rng.choice(files)
            os.unlink(path(rel))
            del self.model[rel]
        elif kind == "rmdir":
            empty = [d for d in own_dirs if not any(p.startswith(d + "/") for p in self.model)]
            if not empty:
                return
            rel = rng.choice(empty)
            os.rmdir(path(rel))
            del self.model[rel]
        elif kind == "rendir":
            rel = rng.choice(own_dirs)
            parent = rng.choice([d for d in self.dirs() if d != rel and not d.startswith(rel + "/")])
            to = f"{parent}/{self.fresh('')}"
            os.rename(path(rel), path(to))
            for p in sorted(p for p in self.model if p == rel or p.startswith(rel + "/")):
                self.model[to + p[len(rel):]] = self.model.pop(p)
            rel = f"{rel} -> {to}"
        self.done.append(f"{kind} {rel}")

    def run(self, errors):
        try:
            os.mkdir(self.m.path(self.root))
            for _ in range(OPS):
                self.op()
            synced(self.m)
        except OSError as e:
            errors.append(f"mount {self.m.name} (thread {self.k}) after "
                          f"{self.done[-3:]}: {e!r}")

    def expected(self):
        out = {self.root: ("d", self.stat_mode(self.root), {})}
        for p, e in self.model.items():
            out[p] = (e[0], e[1], dict(e[2]), *e[3:])
        return out


def test_random_workload_on_three_mounts_matches_the_model(tierfs_factory):
    ms = mounts(tierfs_factory, 3)
    for d in SHARED:
        os.mkdir(ms[0].path(d))
    synced(ms[0])
    for m in ms:
        assert wait_for(lambda: all(os.path.isdir(m.path(d)) for d in SHARED), VISIBLE)
    actors = [Actor(k, m, SEED * 10 + k) for k, m in enumerate(ms)]
    errors = []
    threads = [threading.Thread(target=a.run, args=(errors,)) for a in actors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"seed {SEED}: {errors}"
    for m in ms:
        synced(m)

    want = {d: ("d", os.stat(ms[0].path(d)).st_mode & 0o7777, {}) for d in SHARED}
    for a in actors:
        want.update(a.expected())
    assert sum(1 for e in want.values() if e[0] == "f") >= 30, "the workload left too little"
    views = {}

    def agreed():
        for m in ms:
            views[m.name] = snapshot(m.mnt)
        return all(v == want for v in views.values())
    if not wait_for(agreed, CONVERGE, interval=0.2):
        pytest.fail(f"seed {SEED}: the mounts do not match the model after {CONVERGE:.0f}s\n" +
                    "\n".join(f"--- {name}:\n{tree_diff(want, v)}" for name, v in views.items()))

    hashes = {}

    def one_hash():
        hashes.update(merkle_views(ms))
        return len(set(hashes.values())) == 1
    assert wait_for(one_hash, VISIBLE, interval=0.2), f"seed {SEED}: {hashes}"


# --- 2. PostgreSQL restarted while the mounts listen ------------------------

def filter_trusted(m):
    return json.loads(read(m.path(".tierfs", "status")))["filter"]["trusted"]


@pytest.mark.stores("postgres", "redis+postgres")
def test_postgres_restarted_while_mounts_listen(tierfs_factory, private_pg):
    a, b = mounts(tierfs_factory)
    os.mkdir(a.path("d"))
    write(a.path("d", "known.json"), b'{"v":0}')
    assert sees(b.path("d", "known.json"), b'{"v":0}')
    # Each kernel caches, for ten minutes, what only the feed can correct:
    # the names the other mount will make are looked up absent now.
    for i in range(5):
        assert not os.path.exists(b.path("d", f"a{i}.json"))
        assert not os.path.exists(a.path("d", f"b{i}.json"))
    assert os.stat(b.path("d", "known.json")).st_mode & 0o777 == 0o644
    # A makes new names in a known directory while PostgreSQL is down:
    # only a complete negative-lookup filter can vouch for them then.
    assert wait_for(lambda: filter_trusted(a), MOUNT_TIMEOUT), "A's filter was never trusted"

    private_pg.stop()
    try:
        write(a.path("d", "known.json"), b'{"v":1}')  # fsync: into A's log
        for i in range(5):
            write(a.path("d", f"a{i}.json"), b'{"a":%d}' % i)
        os.chmod(a.path("d", "known.json"), 0o600)
        assert read(a.path("d", "known.json")) == b'{"v":1}'
    finally:
        private_pg.resume()

    # B hears of every change A made meanwhile, once A's log reaches L3.
    for i in range(5):
        assert wait_for(lambda: read(b.path("d", f"a{i}.json")) == b'{"a":%d}' % i, BACK), \
            f"B does not see d/a{i}.json{a.stderr_text()[-3000:]}"
    assert sees(b.path("d", "known.json"), b'{"v":1}')
    assert wait_for(lambda: os.stat(b.path("d", "known.json")).st_mode & 0o777 == 0o600, VISIBLE)
    # ... and A hears of B's changes after the restart.
    for i in range(5):
        write(b.path("d", f"b{i}.json"), b'{"b":%d}' % i)
    write(b.path("d", "known.json"), b'{"v":2}')
    for i in range(5):
        assert sees(a.path("d", f"b{i}.json"), b'{"b":%d}' % i), f"A does not see d/b{i}.json"
    assert sees(a.path("d", "known.json"), b'{"v":2}')
    # and B of A's, through its own feed again
    os.unlink(a.path("d", "a0.json"))
    synced(a)
    assert gone(b.path("d", "a0.json"))
    names = sorted(["known.json"] + [f"a{i}.json" for i in range(1, 5)] +
                   [f"b{i}.json" for i in range(5)])
    assert sorted(os.listdir(a.path("d"))) == names
    assert sorted(os.listdir(b.path("d"))) == names
    for m in (a, b):
        assert metric(m, "tierfs_feed_resets_total") == 0, "a restart is no gap in the feed"


# --- 3. a mount cut off longer than the feed keeps --------------------------

KEEP = 20  # feed_keep_records on every mount


def test_a_mount_stopped_past_the_feed_trim_reads_everything_again(tierfs_factory):
    opts = LONG + [f"feed_keep_records={KEEP}"]
    a = tierfs_factory(options=opts)
    b = tierfs_factory(share=a, options=opts)
    os.makedirs(a.path("g", "sub"))
    files = {"keep.json": b'{"v":0}', "meta.bin": b"meta", "gone.json": b"[0]",
             "moved.json": b'"m"', "replaced.bin": b"old"}
    for name, data in files.items():
        write(a.path("g", name), data)
    # B knows every one of them (the kernel caches them for ten minutes),
    # the listing of g, and the absence of the names A will make.
    for name, data in files.items():
        assert sees(b.path("g", name), data), name
    old_ino = os.stat(b.path("g", "replaced.bin")).st_ino
    assert os.stat(b.path("g", "meta.bin")).st_mode & 0o777 == 0o644
    assert xattr(b.path("g", "meta.bin"), "user.color") is None
    assert sorted(os.listdir(b.path("g"))) == sorted(["sub", *files])
    assert not os.path.exists(b.path("g", "new.json"))
    assert not os.path.exists(b.path("top.json"))
    assert not os.path.exists(b.path("g", "sub", "moved.json"))
    assert metric(b, "tierfs_feed_resets_total") == 0

    os.kill(b.proc.pid, signal.SIGSTOP)  # from here on, B's mountpoint is not touched
    try:
        write(a.path("g", "keep.json"), b'{"v":1}')
        os.chmod(a.path("g", "meta.bin"), 0o600)
        os.setxattr(a.path("g", "meta.bin"), "user.color", b"blue")
        os.unlink(a.path("g", "gone.json"))
        os.rename(a.path("g", "moved.json"), a.path("g", "sub", "moved.json"))
        os.unlink(a.path("g", "replaced.bin"))
        write(a.path("g", "replaced.bin"), b"new")
        write(a.path("g", "new.json"), b'"new"')
        write(a.path("top.json"), b'"top"')
        synced(a)
        # Enough committed changes that the feed is trimmed past B's
        # position: every one is a batch of its own, and SQLite trims at
        # every batch, PostgreSQL when it holds more than KEEP + KEEP/16.
        for i in range(4 * KEEP):
            write(a.path("g", "sub", f"fill{i % 7}.bin"), b"%d" % i)
        write(a.path("g", "keep.json"), b'{"v":2}')
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)

    assert wait_for(lambda: metric(b, "tierfs_feed_resets_total") >= 1, VISIBLE), \
        f"B never noticed the gap\n{b.stderr_text()[-3000:]}"
    assert sees(b.path("g", "keep.json"), b'{"v":2}')
    assert wait_for(lambda: os.stat(b.path("g", "meta.bin")).st_mode & 0o777 == 0o600, VISIBLE)
    assert wait_for(lambda: xattr(b.path("g", "meta.bin"), "user.color") == b"blue", VISIBLE)
    assert gone(b.path("g", "gone.json"))
    assert gone(b.path("g", "moved.json"))
    assert sees(b.path("g", "sub", "moved.json"), b'"m"')
    assert sees(b.path("g", "replaced.bin"), b"new")
    assert os.stat(b.path("g", "replaced.bin")).st_ino != old_ino
    assert sees(b.path("g", "new.json"), b'"new"'), \
        "a name B had looked up as absent before the gap stays absent after it"
    assert sees(b.path("top.json"), b'"top"')
    want = sorted(["sub", "keep.json", "meta.bin", "replaced.bin", "new.json"])
    assert wait_for(lambda: sorted(os.listdir(b.path("g"))) == want, VISIBLE), \
        sorted(os.listdir(b.path("g")))
    want_sub = sorted(["moved.json"] + [f"fill{i}.bin" for i in range(7)])
    assert wait_for(lambda: sorted(os.listdir(b.path("g", "sub"))) == want_sub, VISIBLE)
    # and B follows the feed again afterwards
    write(a.path("g", "after.json"), b"1")
    assert sees(b.path("g", "after.json"), b"1")
    assert "trimmed past this mount's position" in b.stderr_text()


# --- 4. eight mounts inside one user namespace -------------------------------

# Mounts N daemons of one SQLite store inside the namespace (each its own
# write-ahead log), runs the Python workload on them, unmounts them and
# waits for each daemon. Prints "key: value" lines; the EXIT trap detaches
# whatever is still mounted.
NS_SH = r"""
bin=$1 dir=$2 n=$3 work=$4
detach() { for i in $(seq 0 $((n - 1))); do
    if mountpoint -q "$dir/m$i"; then fusermount3 -u -z "$dir/m$i"; fi; done; }
trap detach EXIT
pids=
for i in $(seq 0 $((n - 1))); do
    mkdir -p "$dir/m$i"
    "$bin" --sqlite="$dir/ns.db" -f -o wal_path="$dir/w$i,entry_timeout=600,attr_timeout=600" \
        "$dir/m$i" 2>"$dir/m$i.log" &
    pids="$pids $!"
done
python3 "$work" mount "$dir" "$n" $pids || exit 3
echo "uid: $(id -u)"
python3 "$work" load "$dir" "$n" || exit 4
i=0
for pid in $pids; do
    fusermount3 -u "$dir/m$i"
    rc=0
    wait "$pid" || rc=$?
    echo "exit m$i: $rc"
    i=$((i + 1))
done
"""

# The part in Python: waiting for the mounts (a daemon that exits first
# fails it), then each mount writes its 10 files at once (fsync each) and
# each lists and reads all of them, waiting with a deadline.
NS_PY = r"""
import os, sys, threading, time
verb, top, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
mnts = [os.path.join(top, f"m{i}") for i in range(n)]

def until(pred, secs):
    end = time.monotonic() + secs
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True

if verb == "mount":
    pids = [int(p) for p in sys.argv[4:]]
    def alive(p):  # the shell reaps its children late: a zombie is gone
        try:
            with open(f"/proc/{p}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
        except FileNotFoundError:
            return False
    def up():
        for i, p in enumerate(pids):
            if not alive(p):
                sys.exit(f"nomount: m{i} exited before mounting")
        return all(os.path.ismount(m) for m in mnts)
    if not until(up, float(os.environ["MOUNT_TIMEOUT"])):
        sys.exit("nomount: not every mount appeared in time")
    sys.exit(0)

def body(k, i):
    return b'{"k":%d,"i":%d}' % (k, i)

errors = []
def writer(k):
    try:
        os.mkdir(os.path.join(mnts[k], f"w{k}"))
        for i in range(10):
            fd = os.open(os.path.join(mnts[k], f"w{k}", f"{i}.json"),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, body(k, i))
            os.fsync(fd)
            os.close(fd)
    except OSError as e:
        errors.append(f"m{k}: {e!r}")
threads = [threading.Thread(target=writer, args=(k,)) for k in range(n)]
for t in threads: t.start()
for t in threads: t.join()
if errors:
    sys.exit(f"write errors: {errors}")

def read(p):
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError:
        return None

def complete(j):
    want = sorted(f"w{k}" for k in range(n))
    if sorted(os.listdir(mnts[j])) != want:
        return False
    for k in range(n):
        d = os.path.join(mnts[j], f"w{k}")
        if sorted(os.listdir(d)) != sorted(f"{i}.json" for i in range(10)):
            return False
        if any(read(os.path.join(d, f"{i}.json")) != body(k, i) for i in range(10)):
            return False
    return True

for j in range(n):
    ok = until(lambda: complete(j), float(os.environ["VISIBLE"]))
    print(f"complete m{j}: {'yes' if ok else 'no'}")
"""


@pytest.mark.sqlite_only
def test_eight_mounts_in_one_user_namespace(tierfs_factory, tmp_path):
    cp = run(["unshare", "-Urm", "true"], check=False)
    if cp.returncode != 0:
        pytest.skip(f"cannot create a user namespace here: {cp.stderr.strip()}")
    n = 8
    work = tmp_path / "ns_work.py"
    work.write_text(NS_PY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERFS_", "PG"))}
    env.update(LC_ALL="C.UTF-8", HOME=str(tmp_path), XDG_DATA_HOME=f"{tmp_path}/xdg-data",
               XDG_STATE_HOME=f"{tmp_path}/xdg-state", MOUNT_TIMEOUT=str(MOUNT_TIMEOUT),
               VISIBLE=str(VISIBLE))
    cp = run(["unshare", "-Urm", "sh", "-c", NS_SH, "ns", str(TIERFS_BIN), str(tmp_path), str(n),
              str(work)], check=False, env=env)
    logs = {i: (tmp_path / f"m{i}.log").read_text(errors="replace")
            if (tmp_path / f"m{i}.log").exists() else "" for i in range(n)}
    everything = "\n".join(f"--- m{i}.log:\n{t}" for i, t in logs.items())
    if cp.returncode == 3 and "nomount" in cp.stderr and any(
            "fuse:" in t and ("Operation not permitted" in t or "Permission denied" in t)
            for t in logs.values()):
        pytest.skip(f"FUSE cannot mount inside a user namespace here: {everything[:500]}")
    assert cp.returncode == 0, (f"status {cp.returncode}\nstdout:\n{cp.stdout}\n"
                                f"stderr:\n{cp.stderr}\n{everything}")
    out = dict(line.split(": ", 1) for line in cp.stdout.splitlines())
    assert out["uid"] == "0"
    for j in range(n):
        assert out[f"complete m{j}"] == "yes", f"m{j} does not list all 80 files\n{everything}"
        assert out[f"exit m{j}"] == "0", f"m{j} exited non-zero after fusermount3 -u\n{everything}"
    for marker in SANITIZER_MARKERS:
        assert marker not in everything, everything
    # and the store holds them all, for a mount outside the namespace
    m = tierfs_factory(sqlite=tmp_path / "ns.db")
    for k in range(n):
        for i in range(10):
            assert read(m.path(f"w{k}", f"{i}.json")) == b'{"k":%d,"i":%d}' % (k, i)


# --- 5. the same names made on two mounts at once ------------------------------

NAMES = 50


def test_same_names_created_at_once_on_two_mounts(tierfs_factory):
    a, b = mounts(tierfs_factory)
    os.mkdir(a.path("race"))
    synced(a)
    assert wait_for(lambda: os.path.isdir(b.path("race")), VISIBLE)
    start = threading.Barrier(2)
    errors = []

    def creator(m, tag):
        try:
            start.wait(timeout=VISIBLE)
            for i in range(NAMES):
                write(m.path("race", f"n{i}.json"), b'{"by":"%s","i":%d}' % (tag, i))
        except (OSError, threading.BrokenBarrierError) as e:
            errors.append(f"{tag}: {e!r}")
    threads = [threading.Thread(target=creator, args=(m, tag)) for m, tag in ((a, b"a"), (b, b"b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    synced(a)
    synced(b)

    names = sorted(f"n{i}.json" for i in range(NAMES))
    why = []

    def agreed():
        why.clear()
        for m in (a, b):
            listed = sorted(os.listdir(m.path("race")))
            if listed != names:
                why.append(f"{m.name} lists {len(listed)} names: extra "
                           f"{sorted(set(listed) - set(names))}, missing {sorted(set(names) - set(listed))}")
        for name in names:
            ra, rb = read(a.path("race", name)), read(b.path("race", name))
            va, vb = (xattr(m.path("race", name), "user.tierfs.version") for m in (a, b))
            if ra is None or ra != rb or va != vb:
                why.append(f"{name}: {a.name} reads {ra!r} v{va!r}, {b.name} {rb!r} v{vb!r}")
        return not why
    if not wait_for(agreed, VISIBLE, interval=0.1):
        rows = ""
        if a.pg is not None:
            rows = a.psql("SELECT ino, convert_from(name, 'UTF8'), version FROM entries "
                          "WHERE parent <> 1 ORDER BY name", check=False)
        pytest.fail("\n".join(why) + f"\nL3 rows (ino|name|version):\n{rows}")
    for name in names:
        i = int(name[1:-5])
        assert read(a.path("race", name)) in (b'{"by":"a","i":%d}' % i, b'{"by":"b","i":%d}' % i)
    races = metric(a, "tierfs_races_total") + metric(b, "tierfs_races_total")
    assert races >= 1, "fifty names made at once on two mounts, and no race counted"
