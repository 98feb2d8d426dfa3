"""Which files of an ext2/3/4 filesystem changed between two images, given the ranges that did.

`cdp diff --files` has the byte ranges written between two points (from the
index) and the device at both points (restored into sparse temporary
images). e2fsprogs' ``debugfs`` answers the rest, read-only:

- every filesystem block in the ranges whose bytes really differ between
  the two images is either in an inode table (then the inodes whose 256
  bytes or so differ are the changed ones: a chmod, a truncate, a new or
  freed inode) or anything else, which ``icheck`` maps to the inode that
  owns it in each image (file data, directory blocks, extent tree blocks);
- ``ncheck`` names those inodes in each image: named in both is
  "modified", only in the newer "added", only in the older "deleted".

Filesystem metadata (superblock, bitmaps, the ext4 journal, inode 8) is
not a file and is left out; the root directory is reported as ``/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cdp.errors import CdpError

if TYPE_CHECKING:
    from journal import Journal
    from journal.changes import Changes

EXT_MAGIC = 0xEF53
#: Inodes below this are the filesystem's own (root directory 2 aside).
FIRST_USER_INODE = 11
_BATCH = 500
_GROUP = re.compile(r"Group\s+(\d+): block bitmap at \d+, inode bitmap at \d+, inode table at (\d+)")


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file or directory whose content or inode changed."""

    path: str
    inode: int
    change: str  # "modified", "added" or "deleted"


@dataclass(frozen=True, slots=True)
class Geometry:
    """What is needed to tell inode-table blocks from the rest."""

    block_size: int
    inode_size: int
    inodes_per_group: int
    inode_tables: tuple[int, ...]  # first block of each group's inode table

    @property
    def table_blocks(self) -> int:
        return -(-self.inodes_per_group * self.inode_size // self.block_size)

    def inodes_in(self, block: int) -> range | None:
        """The inode numbers stored in ``block`` if it is inode-table space, else None."""
        for group, start in enumerate(self.inode_tables):
            if start <= block < start + self.table_blocks:
                per_block = self.block_size // self.inode_size
                first = group * self.inodes_per_group + (block - start) * per_block + 1
                return range(first, first + per_block)
        return None


def is_ext(image: Path) -> bool:
    """Whether ``image`` starts with an ext2/3/4 superblock."""
    with open(image, "rb") as fh:
        fh.seek(1024 + 56)
        return int.from_bytes(fh.read(2), "little") == EXT_MAGIC


def _debugfs(image: Path, commands: list[str]) -> list[tuple[int, str]]:
    """Run read-only debugfs commands; the "NUMBER<TAB>TEXT" lines of their output."""
    program = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
    if program is None:
        raise CdpError("--files needs debugfs (apt-get install e2fsprogs)")
    proc = subprocess.run([program, "-f", "-", os.fspath(image)], input="\n".join(commands) + "\n",
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise CdpError(f"debugfs failed on the image: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    out = []
    for line in proc.stdout.splitlines():
        number, tab, text = line.partition("\t")
        if tab and number.isdigit():
            out.append((int(number), text))
    return out


def geometry(image: Path) -> Geometry:
    """Block and inode sizes and the inode tables' places, from ``debugfs -R stats``."""
    program = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")
    if program is None:
        raise CdpError("--files needs debugfs (apt-get install e2fsprogs)")
    proc = subprocess.run([program, "-R", "stats", os.fspath(image)], capture_output=True, text=True, timeout=600)
    text = proc.stdout

    def field(name: str) -> int:
        found = re.search(rf"^{name}:\s+(\d+)", text, re.M)
        if found is None:
            raise CdpError(f"debugfs stats has no {name!r}: {proc.stderr.strip()}")
        return int(found.group(1))

    tables = {int(g): int(b) for g, b in _GROUP.findall(text)}
    return Geometry(field("Block size"), field("Inode size"), field("Inodes per group"),
                    tuple(tables[g] for g in sorted(tables)))


def _batches(items: list[int]) -> Iterable[list[int]]:
    for i in range(0, len(items), _BATCH):
        yield items[i:i + _BATCH]


def owners(image: Path, blocks: list[int]) -> set[int]:
    """The inodes that own ``blocks`` in ``image`` (``icheck``)."""
    found = _debugfs(image, [f"icheck {' '.join(map(str, b))}" for b in _batches(blocks)])
    return {int(text) for _block, text in found if text.isdigit()}


def names(image: Path, inodes: set[int]) -> dict[int, list[str]]:
    """Paths of ``inodes`` in ``image`` (``ncheck``); inode 2 is ``/``."""
    out: dict[int, list[str]] = {}
    wanted = sorted(inodes)
    for inode, path in _debugfs(image, [f"ncheck {' '.join(map(str, b))}" for b in _batches(wanted)]):
        out.setdefault(inode, []).append(re.sub("/+", "/", path))
    if 2 in inodes:
        out[2] = ["/"]
    return out


def changed_files(older: Path, newer: Path, ranges: list[tuple[int, int]]) -> list[FileChange]:
    """The files and directories whose blocks or inodes differ between the two images in ``ranges``."""
    for image in (older, newer):
        if not is_ext(image):
            raise CdpError("files are named for ext2/3/4 only, and the device holds no ext2/3/4 "
                           "filesystem at one of the points")
    geo_old, geo_new = geometry(older), geometry(newer)
    bs = geo_new.block_size
    inodes: set[int] = set()
    other: list[int] = []
    with open(older, "rb") as fo, open(newer, "rb") as fn:
        blocks = sorted({b for offset, length in ranges for b in range(offset // bs, (offset + length - 1) // bs + 1)})
        for block in blocks:
            a = os.pread(fo.fileno(), bs, block * bs)
            b = os.pread(fn.fileno(), bs, block * bs)
            if a == b:
                continue  # rewritten with the same bytes
            table = geo_new.inodes_in(block) or geo_old.inodes_in(block)
            if table is None:
                other.append(block)
                continue
            size = geo_new.inode_size
            for i, inode in enumerate(table):
                if a[i * size:(i + 1) * size] != b[i * size:(i + 1) * size]:
                    inodes.add(inode)
    old_owned = owners(older, other) if other else set()
    new_owned = owners(newer, other) if other else set()
    candidates = {i for i in inodes | old_owned | new_owned if i == 2 or i >= FIRST_USER_INODE}
    old_names = names(older, candidates)
    new_names = names(newer, candidates)
    out: list[FileChange] = []
    for inode in sorted(candidates):
        before, after = set(old_names.get(inode, [])), set(new_names.get(inode, []))
        for path in sorted(before & after):
            out.append(FileChange(path, inode, "modified"))
        for path in sorted(after - before):
            out.append(FileChange(path, inode, "added"))
        for path in sorted(before - after):
            out.append(FileChange(path, inode, "deleted"))
    return sorted(out, key=lambda c: (c.path, c.change))


def files_between(journal: Journal, changes: Changes, *, progress: Callable[[int, int], None] | None = None,
                  cancel: threading.Event | None = None) -> list[FileChange]:
    """The files that differ between the two points of ``changes`` (`cdp diff --files`, the TUI).

    debugfs reads image files, so both points are restored into sparse
    temporary images under ``$TMPDIR`` (holes cost no space), removed at the
    end. ``progress(done, total)`` counts the bytes of both restores;
    ``cancel`` stops a restore between chunks (``journal.Cancelled``).
    """
    if not changes.ranges:
        return []
    device = journal.info.device_bytes

    def part(first: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, _total: progress(first + done, 2 * device)

    with tempfile.TemporaryDirectory(prefix="cdp-files-") as tmp:
        older, newer = Path(tmp) / "older.img", Path(tmp) / "newer.img"
        journal.restore(older, seq=changes.lo_seq, allow_partial=True, progress=part(0), cancel=cancel)
        journal.restore(newer, seq=changes.hi_seq, allow_partial=True, progress=part(device), cancel=cancel)
        return changed_files(older, newer, changes.ranges)
