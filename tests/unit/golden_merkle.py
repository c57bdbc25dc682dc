#!/usr/bin/env python3
"""Prints the golden Merkle hashes that case_golden_merkle() in
store_helpers.h checks (test_l3_sqlite and test_l3_pg run it alike).

It builds the same tree as the C case, as real files and directories in a
temporary directory, and hashes it with the reference function of
docs/merkle.md, copied here unchanged: an oracle that shares no code with
tierfs (hashlib, the filesystem and Python's bytes order). Then it makes the
second batch's changes (a rename, a delete, a content change) with os.rename,
os.remove and a rewrite, and hashes again.

usage: python3 tests/unit/golden_merkle.py
Each output line is NAME HEX, NAME being the constant in store_helpers.h.
"""
import hashlib
import os
import tempfile


# docs/merkle.md, "In Python, for any directory tree", verbatim
def merkle(path):
    if not os.path.isdir(path):
        return hashlib.sha256(open(path, "rb").read()).digest()
    h = hashlib.sha256()
    for name in sorted(os.listdir(os.fsencode(path))):
        child = os.path.join(os.fsencode(path), name)
        kind = b"d" if os.path.isdir(child) else b"f"
        h.update(name + b"\0" + kind + merkle(child))
    return h.digest()


# The tree of batch 1, as in case_golden_merkle(): directories, then files
# with their content (paths are bytes: some names are not UTF-8).
DIRS = [
    b"a",  # beside the files "a.json" and "ab": one prefix, two kinds
    b"a/empty",  # an explicit directory that stays empty
    b"B",  # sorts before "a" and "b": 'B' is 0x42
    b"B/deep",
    b"B/deep/deeper",  # three levels below the root
]
FILES = [
    (b"a.json", b'{"id":"a"}'),
    (b"ab", b"a\x00b"),
    (b"b", b""),  # the empty file
    (b"\xc3\xa9t\xc3\xa9", b"summer"),  # "ete" with accents, UTF-8
    (b"\xff.json", b"[1,2,3]"),  # a name's first byte 0xff: last
    (b"a/x", b"\x00\x01\x02\xfe\xff"),
    (b"a/y.json", b'{"y":[1,2]}'),
    (b"B/deep/mid", b"middle"),
    (b"B/deep/deeper/leaf.json", b'{"depth":3}'),
]


def hexof(root, rel=b""):
    return merkle(os.path.join(root, rel) if rel else root).hex()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(os.fsencode(tmp), b"root")
        os.mkdir(root)
        for d in DIRS:
            os.mkdir(os.path.join(root, d))
        for name, data in FILES:
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
        deep = hexof(root, b"B/deep")
        print("GOLDEN_ROOT_1", hexof(root))
        print("GOLDEN_A_1", hexof(root, b"a"))
        print("GOLDEN_DEEP", deep)

        # batch 2: directory B/deep moves to a/Deep (its subtree with it),
        # the empty file b goes, a/x gets new content
        os.rename(os.path.join(root, b"B/deep"), os.path.join(root, b"a/Deep"))
        os.remove(os.path.join(root, b"b"))
        with open(os.path.join(root, b"a/x"), "wb") as f:
            f.write(b"changed")
        print("GOLDEN_ROOT_2", hexof(root))
        print("GOLDEN_A_2", hexof(root, b"a"))
        # what the C case checks without a constant of its own: the moved
        # directory keeps its hash (only what is below a directory counts),
        # and B, left empty, hashes no bytes
        assert hexof(root, b"a/Deep") == deep
        assert hexof(root, b"B") == hashlib.sha256(b"").hexdigest()


if __name__ == "__main__":
    main()
