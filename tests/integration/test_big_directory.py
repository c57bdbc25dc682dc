"""ls -l of a directory of 10,000 files, before and after a remount (the
listing then pages through the L3 index alone)."""

import os
import shutil

import pytest

if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
    pytest.skip("FUSE is unavailable here (/dev/fuse or fusermount3 missing)",
                allow_module_level=True)

COUNT = 10_000


def check_ls_l(m, names):
    out = m.run(["ls", "-l", "big"]).stdout.splitlines()
    assert out[0].startswith("total "), out[0]
    entries = out[1:]
    assert len(entries) == COUNT
    listed = []
    for line in entries:
        fields = line.split(None, 8)
        assert fields[0].startswith("-"), line
        assert fields[4] == "7", line
        listed.append(fields[8])
    assert listed == sorted(names)  # each exactly once, in ls's order


def test_ls_l_of_10000_files(tierfs):
    m = tierfs
    big = m.path("big")
    os.mkdir(big)
    names = [f"f{i:05d}.json" if i % 2 == 0 else f"f{i:05d}.bin" for i in range(COUNT)]
    for name in names:
        with open(big / name, "wb") as f:
            f.write(b'{"i":1}')
    assert len(os.listdir(big)) == COUNT
    check_ls_l(m, names)
    m.remount()
    check_ls_l(m, names)
    assert len(os.listdir(big)) == COUNT
