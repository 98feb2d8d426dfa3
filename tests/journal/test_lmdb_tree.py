"""A damaged LMDB page tree is one line, never LMDB's assertion (SIGABRT) or a wrong image.

LMDB trusts its pages: a leaf page whose header is zeroed made a restore die
with "Assertion 'IS_LEAF(mp)' failed in mdb_cursor_next()" (exit 134).
Here pages of a real journal's index are damaged one at a time (zeroed,
or a byte of the header flipped), and `cdp restore`, `cdp verify` and
`cdp points` run as subprocesses: each must either give the healthy
answer or fail with one line, status 1.
"""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from journal.errors import CorruptJournal
from journal.lmdbcheck import P_BRANCH, P_LEAF
from tests.support.cli import cdp

SIZE = 4 << 20
PSIZE = 4096


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A journal of 3000 scattered 4 KiB writes (a block index of a few hundred pages) and its image."""
    root = tmp_path_factory.mktemp("tree")
    rng = random.Random(7)
    with Journal.create(root / "j", device_bytes=SIZE) as j:
        ts = j.info.created_ns
        records = [Record(i, ts + i, RecordType.WRITE, 0, rng.randrange(SIZE // 4096) * 4096, 4096,
                          rng.randbytes(4096)) for i in range(1, 3001)]
        for at in range(0, len(records), 500):
            j.append(records[at:at + 500])
    good = cdp("restore", "--journal", root / "j", "--seq", "3000", "--to", root / "good.img")
    assert good.code == 0, good.err
    return root / "j", (root / "good.img").read_bytes()


def _tree_pages(data: bytes) -> list[tuple[int, int]]:
    """(page number, flags) of every page formatted as a branch or a leaf of the tree."""
    out = []
    for pgno in range(2, len(data) // PSIZE):
        own, _pad, flags = struct.unpack_from("<QHH", data, pgno * PSIZE)
        if own == pgno and flags & (P_BRANCH | P_LEAF):
            out.append((pgno, flags))
    return out


@pytest.mark.parametrize("how", ["zero", "flags", "pgno", "bounds"])
def test_damaged_pages_are_one_line(journal: tuple[Path, bytes], tmp_path: Path, how: str) -> None:
    path, image = journal
    data = (path / "index" / "data.mdb").read_bytes()
    pages = _tree_pages(data)
    leaves = [p for p, f in pages if f & P_LEAF]
    branches = [p for p, f in pages if f & P_BRANCH]
    assert len(leaves) > 20 and branches, (len(leaves), len(branches))
    picks = branches[:2] + leaves[::max(1, len(leaves) // 6)][:6]
    failed = 0
    for pgno in picks:
        copy = tmp_path / f"j{pgno}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(path, copy)
        raw = bytearray(data)
        base = pgno * PSIZE
        if how == "zero":
            raw[base:base + PSIZE] = bytes(PSIZE)
        elif how == "flags":
            raw[base + 10] ^= P_BRANCH | P_LEAF      # a leaf now says branch, a branch says leaf
        elif how == "pgno":
            raw[base] ^= 0x40                        # the page names another page
        else:
            raw[base + 14] ^= 0xF0                   # upper bound far past the page
        (copy / "index" / "data.mdb").write_bytes(bytes(raw))
        out = tmp_path / "out.img"
        out.unlink(missing_ok=True)
        for args in (("restore", "--seq", "3000", "--to", out), ("verify",), ("points",)):
            r = cdp(args[0], "--journal", copy, *args[1:])
            assert r.code in (0, 1), f"{how} page {pgno}: {args[0]} died with {r.code}: {r.err[-500:]}"
            if r.code == 1:
                r.one_line_error(1, "the index is damaged")
                failed += 1
            elif args[0] == "restore":
                assert out.read_bytes() == image, f"{how} page {pgno}: restore exit 0 with a wrong image"
    assert failed, "no damage was noticed at all: the pages picked are not in the tree?"


def test_an_entry_dropped_from_a_leaf_is_caught_by_every_reader(journal: tuple[Path, bytes], tmp_path: Path) -> None:
    """``lower`` less 2: the leaf's last node loses its pointer and LMDB no longer sees the entry.

    No seal fails (the entry is simply gone). A restore counts its entries; a
    verify and an export check that each page's nodes fill it exactly. Some
    pages picked are free (a leaf an earlier transaction left behind):
    damage there changes no answer.
    """
    from journal.pointview import PointView

    path, image = journal
    data = (path / "index" / "data.mdb").read_bytes()
    leaves = [p for p, f in _tree_pages(data) if f & P_LEAF]
    caught = 0
    for pgno in leaves[::max(1, len(leaves) // 8)][:8]:
        copy = tmp_path / f"j{pgno}"
        shutil.copytree(path, copy)
        raw = bytearray(data)
        lower = struct.unpack_from("<H", raw, pgno * PSIZE + 12)[0]
        struct.pack_into("<H", raw, pgno * PSIZE + 12, lower - 2)
        (copy / "index" / "data.mdb").write_bytes(bytes(raw))
        out = tmp_path / f"out{pgno}.img"
        restore = cdp("restore", "--journal", copy, "--seq", "3000", "--to", out)
        with Journal.open(copy, readonly=True) as j:
            j.index.check_tree()  # the quick check reads headers only: this damage passes it
            try:
                j.index.check_tree(full=True)
            except CorruptJournal as exc:
                assert "pointers reach" in str(exc)
            else:
                # a free page: nothing reads it
                assert restore.code == 0 and out.read_bytes() == image
                continue
            with pytest.raises(CorruptJournal, match="pointers reach"):
                PointView(j, 3000)
        caught += 1
        cdp("verify", "--journal", copy).one_line_error(1, "pointers reach")
        if restore.code == 0:
            # the lost entry was not in the answer at seq 3000 (not the newest of its block)
            assert out.read_bytes() == image
        else:
            restore.one_line_error(1, "the index")
    assert caught >= 2, f"only {caught} of the pages picked were in the tree"
