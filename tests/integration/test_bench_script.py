"""tests/bench/bench.py works: a small run of tierfs (SQLite), passthrough_ll
and tmpfs writes a JSON report holding every workload for every system, the
ratios and the targets, leaves no mount behind, and --report prints it
again. Nothing here is timed: the figures are not judged, only that the
script measures what it says."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

from conftest import TIERFS_BIN  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tests" / "bench" / "bench.py"

# What every system runs (the cold read is "cold_sqlite" for tierfs on
# SQLite, "cold_ref" for the references).
EVERY = {"create", "stat", "stat_hot", "read", "ls", "ls_hot", "find", "find_hot", "grep",
         "tar", "overwrite", "cold_stat", "unlink"}


def mounts_under(path):
    prefix = os.fsencode(os.path.realpath(path))
    with open("/proc/self/mounts", "rb") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(prefix)]


def test_small_run_reports_every_workload(tmp_path):
    if not TIERFS_BIN.exists():
        pytest.fail(f"tierfs binary not found: {TIERFS_BIN}")
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    work.mkdir()
    cp = subprocess.run(
        [sys.executable, str(BENCH), "--files", "200", "--dirs", "4", "--repeat", "2",
         "--systems", "tierfs-sqlite,passthrough_ll,tmpfs", "--tierfs-bin", str(TIERFS_BIN),
         "--workdir", str(work), "--json", str(out)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert mounts_under(work) == []
    assert list(work.iterdir()) == []  # the work directory is removed

    r = json.loads(out.read_text())
    systems = ["tierfs-sqlite", "passthrough_ll", "tmpfs"]
    assert r["systems"] == systems
    assert (r["files"], r["dirs"], r["repeat"]) == (200, 4, 2)
    # Two rounds, the second in an order rotated by one.
    assert r["round_orders"] == [systems, systems[1:] + systems[:1]]
    cold = {"tierfs-sqlite": "cold_sqlite", "passthrough_ll": "cold_ref", "tmpfs": "cold_ref"}
    for s in systems:
        want = EVERY | {cold[s]}
        assert len(r["rounds"][s]) == 2
        for rnd in r["rounds"][s]:
            assert want <= set(rnd), (s, want - set(rnd))
            assert all(rnd[k]["seconds"] > 0 and rnd[k]["ops"] >= 200 for k in want)
        assert want <= set(r["median"][s]), (s, want - set(r["median"][s]))

    # Ratios of tierfs to both references and of passthrough_ll to tmpfs.
    for key in EVERY | {"cold_sqlite"}:
        assert set(r["ratios"]["tierfs-sqlite"][key]) == {"passthrough_ll", "tmpfs"}, key
        want = r["median"]["tierfs-sqlite"][key] / r["median"]["tmpfs"][
            "cold_ref" if key == "cold_sqlite" else key]
        assert r["ratios"]["tierfs-sqlite"][key]["tmpfs"] == pytest.approx(want)
    assert "tmpfs" in r["ratios"]["passthrough_ll"]["read"]

    # A target and its mark on every row that has one.
    t = r["targets"]["tierfs-sqlite"]
    assert set(t) == {"create", "overwrite", "unlink", "stat_hot", "ls_hot", "find_hot", "read",
                      "grep", "tar", "cold_stat", "cold_sqlite"}
    for key, m in t.items():
        assert m["passed"] == (m["ratio"] >= m["min"]), key
        assert m["ratio"] == pytest.approx(r["ratios"]["tierfs-sqlite"][key][m["ref"]])

    # The tables come back from the file alone; the chart's data too.
    rep = subprocess.run([sys.executable, str(BENCH), "--report", str(out), "--markdown"],
                         capture_output=True, text=True, timeout=60)
    assert rep.returncode == 0, rep.stderr
    assert "| grep -r (reads every file) |" in rep.stdout
    assert "**Summary: tierfs-sqlite" in rep.stdout
    assert "FAIL" in rep.stdout or "pass" in rep.stdout
    if shutil.which("gnuplot"):
        svg = tmp_path / "ratios.svg"
        ch = subprocess.run([str(REPO / "scripts" / "bench-chart.sh"), str(out), str(svg)],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, BENCH_SYSTEM="tierfs-sqlite"))
        assert ch.returncode == 0, ch.stderr
        assert b"<svg" in svg.read_bytes() and b"grep -r" in svg.read_bytes()


@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None and not os.path.isdir("/usr/lib/postgresql"),
                    reason="PostgreSQL is not installed")
def test_postgres_run_reports_persistence(tmp_path):
    """On PostgreSQL the run also times the creates until every row is
    there, by one writer and by 8 at once, and the same items written by 8
    programs through the library (tests/bench/fill), against the raw
    upsert; the 8 writers' and the 8 programs' ratios carry the
    persistence target."""
    fill = Path(TIERFS_BIN).resolve().parents[1] / "tests" / "fill"
    assert fill.exists(), f"{fill}: meson compile builds it"
    out = tmp_path / "bench.json"
    # the server runs as the postgres user: its data directory must be
    # reachable, which pytest's private temporary directories are not
    work = Path(tempfile.mkdtemp(prefix="tierfs-bench-test-", dir="/tmp"))
    try:
        work.chmod(0o755)
        cp = subprocess.run(
            [sys.executable, str(BENCH), "--files", "160", "--dirs", "4", "--repeat", "1",
             "--systems", "tierfs-pg,tmpfs", "--tierfs-bin", str(TIERFS_BIN),
             "--fill-bin", str(fill),
             "--workdir", str(work), "--json", str(out)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, cp.stderr[-3000:]
        assert mounts_under(work) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r = json.loads(out.read_text())
    assert "tierfs-pg" in r["rounds"], cp.stderr[-3000:]
    rnd = r["rounds"]["tierfs-pg"][0]
    assert rnd["persist"]["ops"] == 160 and rnd["persist8"]["ops"] == 160
    assert rnd["lib8"]["ops"] == 160
    assert rnd["raw"]["ops"] == 160
    m = r["median"]["tierfs-pg"]
    assert m["persist8/raw"] == pytest.approx(m["persist8"] / m["raw"])
    assert m["lib8/raw"] == pytest.approx(m["lib8"] / m["raw"])
    for key in ("persist8/raw", "lib8/raw"):
        t = r["targets"]["tierfs-pg"][key]
        assert t["ref"] == "raw" and t["min"] == 0.8 and t["passed"] == (t["ratio"] >= 0.8)
    assert "persist/raw" not in r["targets"]["tierfs-pg"]
    assert "persist8" not in r["median"]["tmpfs"]
    assert "8 writers persisted / raw upsert" in cp.stdout
    assert "8 programs persisted / raw upsert" in cp.stdout


def fuse_trace_event():
    for tracefs in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.isdir(f"{tracefs}/events"):
            return os.path.isdir(f"{tracefs}/events/fuse/fuse_request_send")
    # not mounted: bench.py mounts its own; the kernel's config decides
    return os.path.exists("/sys/kernel/tracing") or os.path.exists("/sys/kernel/debug")


@pytest.mark.skipif(os.geteuid() != 0, reason="--count-requests needs root")
def test_count_requests(tmp_path):
    """--count-requests counts each workload's FUSE requests and tierfs's
    calls to its tiers: a create is one CREATE and one WRITE, a cold stat at
    least one LOOKUP a file, a cold read calls L3; tmpfs has no count."""
    if not fuse_trace_event():
        pytest.skip("no tracefs here")
    out = tmp_path / "bench.json"
    cp = subprocess.run(
        [sys.executable, str(BENCH), "--files", "100", "--dirs", "2", "--repeat", "1",
         "--systems", "tierfs-sqlite,tmpfs", "--tierfs-bin", str(TIERFS_BIN),
         "--workdir", str(tmp_path), "--json", str(out), "--count-requests"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if cp.returncode != 0 and "no fuse/fuse_request_send trace event" in cp.stderr:
        pytest.skip("this kernel has no fuse trace events")
    assert cp.returncode == 0, cp.stderr[-3000:]
    r = json.loads(out.read_text())
    req = r["requests"]["tierfs-sqlite"]
    assert "tmpfs" not in r["requests"]
    assert req["create"]["CREATE"] == 100 and req["create"]["WRITE"] == 100
    assert req["unlink"]["UNLINK"] == 100
    assert req["cold_stat"]["LOOKUP"] >= 100
    cold = r["tier_calls"]["tierfs-sqlite"]["cold_sqlite"]
    assert any(k.startswith("l3 ") and v > 0 for k, v in cold.items()), cold
    assert "FUSE requests per file" in cp.stdout
