"""Continuing a journal after a gap: a detach, a reboot, a crash of the host.

While no filter was on the device anything may have written it, so a
reattach cannot just go on appending. It opens a *reattach window*: an
OVERFLOW record over the whole device flagged
:attr:`~journal.records.RecordFlag.REATTACH`, whose first possibly-missed
moment is just after the journal's last record. The drain service
(:mod:`cdp.resync`) closes such a window by comparing, not copying: it
reads the device a batch at a time, computes the CRC-32C of each 4 KiB block
(:func:`device_crcs`), asks the index for the CRC of the same block in the
journal's newest state (:func:`journal_crcs`), and journals only the blocks
that differ as RESYNC copies; a run of equal blocks becomes one RESYNC
without payload flagged UNCHANGED, which moves the window on like a copy
would. The window closes when the compare reaches the device's end, and the
points inside it are not whole, as for any overflow.

Why the result is exact, with writes arriving during the compare (the
filter is on before the window is opened, so each of them is in the ring):

- Before a compare step the service makes every batch read from the ring
  durable, then reads the device, then looks up the journal's state at that
  moment (seq S, nothing is appended in between), then appends the step's
  RESYNC records at seqs above S. The kernel commits a WRITE record only
  once its bio completed and the service never reads past a BUSY record, so
  every write journaled at or below S is on the device when the device is
  read: the read holds them all, plus possibly writes still in the ring.
- A block whose read equals the journal's state at S: a RESYNC copy of it
  would restore exactly what the journal already gives at S, so recording
  "unchanged" and recording the copy give the same bytes at every later seq.
  A block that differs is copied: the copy is the device's content at the
  read, and every write the read might have seen but the journal had not
  yet taken is journaled after the copy, in ring order, so replaying it over
  the copy ends in what the device holds. This is the overflow resync's
  argument (``docs/ring-abi.md``), and the window stays open until the last
  step, so a point in between is reported as not whole, never restored as if
  it were.
- Equal CRC-32C is taken as equal content: a block that changed while
  detached and happens to keep its CRC-32C (a 1 in 2^32 chance per changed
  block) would be missed. The index holds no stronger digest to compare.
- Every step is durable on its own (the window's ``resynced_to`` is in the
  index), so a compare killed at any moment goes on where it stopped.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import crc32c

from journal import Journal, Record, RecordType
from journal.blockcrc import block_crcs
from journal.blockmap import compose_block, versions_back
from journal.errors import DeviceMismatch
from journal.format import BLOCK, FULL_MASK, KIND_ZERO
from journal.points import OverflowWindow
from journal.reader import JournalReader
from journal.records import RecordFlag

ZERO_CRC = crc32c.crc32c(bytes(BLOCK))
_U64 = struct.Struct("<Q")
_J_OVERFLOW = int(RecordType.OVERFLOW)
_J_RESYNC = int(RecordType.RESYNC)


@dataclass
class CompareStats:
    """What the compares of one run did (``cdp attach --json`` prints them)."""

    blocks_compared: int = 0
    blocks_differing: int = 0
    bytes_journaled: int = 0
    #: bytes of the device compared so far and in all, for a progress bar
    done_bytes: int = 0
    total_bytes: int = 0


def is_reattach(journal: JournalReader, window: OverflowWindow) -> bool:
    """Whether ``window`` was opened by a reattach (closed by a compare, not a copy)."""
    for info in journal.records(window.seq, window.seq):
        return info.type == _J_OVERFLOW and bool(info.flags & RecordFlag.REATTACH)
    return False


def open_reattach_windows(journal: JournalReader) -> list[OverflowWindow]:
    """The reattach windows no compare has closed yet."""
    return [w for w in journal.overflow_windows() if w.resync_seq is None and is_reattach(journal, w)]


#: The resume cursor a reattach commits: the previous ring session is over.
ENDED_SESSION = {"v": 1, "session": [0, 0], "ring_seq": 0, "ring_ts": 0, "done": True}


def open_window(journal: Journal, *, old_ring_gone: bool) -> OverflowWindow:
    """Append the reattach window over the whole device; returns it.

    Its first possibly-missed moment is one nanosecond after the journal's
    last record, so the last point before the gap stays whole. With
    ``old_ring_gone`` (the filter was off: its ring died with it) the resume
    cursor committed with it says the previous ring session is over: the
    window already covers whatever that session did not deliver, so the
    drain must not open a second window that copies the whole device for
    it. Otherwise the cursor is left as it is, and the drain's own check
    decides whether the ring it meets continues it.
    """
    start = journal.last_ts_ns + 1
    seq = journal.last_seq + 1
    rec = Record(seq, max(time.time_ns(), start), _J_OVERFLOW, int(RecordFlag.REATTACH), 0,
                 journal.info.device_bytes, _U64.pack(start))
    prior = journal.cursor()
    ended = old_ring_gone or not isinstance(prior, dict) or bool(prior.get("done"))
    journal.append([rec], cursor=dict(ENDED_SESSION) if ended else None)
    return next(w for w in journal.overflow_windows() if w.seq == seq)


def check_device(journal: JournalReader, device: str) -> None:
    """Refuse a device that is not the journal's: another identity or another size (one line)."""
    from journal.identity import device_id

    from cdp.attach import device_bytes

    info = journal.info
    try:
        did = device_id(device)
    except (OSError, ValueError) as exc:
        raise DeviceMismatch(f"cannot use {device}: {getattr(exc, 'strerror', None) or exc}") from None
    size = device_bytes(device)
    if size != info.device_bytes:
        raise DeviceMismatch(f"{device} holds {size} bytes but journal {journal.path} protects a device of "
                             f"{info.device_bytes}: not its device")
    if any(info.device_id) and did != info.device_id:
        raise DeviceMismatch(f"{device} is not the device journal {journal.path} protects (its id is "
                             f"{did.hex()}, the journal's {info.device_id.hex()})")


def journal_crcs(journal: JournalReader, first: int, count: int, seq: int) -> list[int]:
    """CRC-32C of blocks ``first..first+count-1`` as the journal gives them at ``seq``.

    Read from the index alone for a block whose newest version covers it
    whole (data: its CRC; zeroed or never written: the zero block's), and
    composed from the segments (checked) for a partly written block or one a
    newer zeroing extent touches. A block past the device's end reads as
    zeros beyond it, like :func:`device_crcs` pads it.
    """
    out: list[int] = []
    with journal.index.read() as txn:
        zext = journal.zero_extents(txn, seq, first * BLOCK, (first + count) * BLOCK)
        cur = txn.cursor(db=journal.index.db("blocks"))
        for block in range(first, first + count):
            versions = versions_back(cur, block, seq)
            zseqs = zext.sector_seqs(block) if zext else None
            if not versions:
                out.append(ZERO_CRC)
                continue
            top = versions[0]
            if top.mask == FULL_MASK and (zseqs is None or max(zseqs) < top.seq):
                out.append(top.crc if top.kind != KIND_ZERO else ZERO_CRC)  # raw or zstd: the bytes' CRC
                continue
            out.append(crc32c.crc32c(compose_block(journal.segments, block, versions, zseqs)))
    return out


def device_crcs(data: bytes | memoryview) -> list[int]:
    """CRC-32C of each 4 KiB block of ``data``; a short last block is padded with zeros."""
    whole = len(data) - len(data) % BLOCK
    crcs = block_crcs(memoryview(data)[:whole]) if whole else []
    if whole < len(data):
        crcs.append(crc32c.crc32c(bytes(data[whole:]) + bytes(BLOCK - (len(data) - whole))))
    return crcs


def compare_records(data: memoryview, pos: int, theirs: list[int], read_ns: int,
                    next_seq: Callable[[], int], max_copy: int) -> tuple[list[Record], int, int]:
    """The RESYNC records for device bytes ``data`` read at ``pos`` against the journal's CRCs.

    Ascending and back to back from ``pos`` (overflow windows advance only
    over a contiguous run): a copy per run of differing blocks (at most
    ``max_copy`` bytes each), one UNCHANGED record per run of equal blocks.
    Returns the records, the blocks that differ and the bytes copied.
    """
    mine = device_crcs(data)
    records: list[Record] = []
    differing = copied = 0
    i = 0
    n = len(mine)
    while i < n:
        same = mine[i] == theirs[i]
        j = i + 1
        while j < n and (mine[j] == theirs[j]) == same:
            j += 1
        lo, hi = i * BLOCK, min(j * BLOCK, len(data))
        if same:
            records.append(Record(next_seq(), read_ns, _J_RESYNC, int(RecordFlag.UNCHANGED), pos + lo, hi - lo))
        else:
            differing += j - i
            for at in range(lo, hi, max_copy):
                end = min(at + max_copy, hi)
                records.append(Record(next_seq(), read_ns, _J_RESYNC, 0, pos + at, end - at,
                                      bytes(data[at:end])))
                copied += end - at
        i = j
    return records, differing, copied


class DeviceReader:
    """The device read for a compare: O_DIRECT for a block device, so no stale cached page is compared.

    A filesystem's data writes do not go through the block device's own page
    cache, so a page of it read before (a udev probe, say) can be older than
    the device; the compare must see the device itself. A regular file (an
    image, the simulator's device) is read through its cache, which is its
    content.
    """

    def __init__(self, path: str, device_bytes: int) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.direct = stat.S_ISBLK(os.fstat(fd).st_mode)
            size = os.lseek(fd, 0, os.SEEK_END)
            if size != device_bytes:
                raise DeviceMismatch(f"{path} holds {size} bytes but the journal protects {device_bytes}")
            if self.direct:
                os.close(fd)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._buf: mmap.mmap | None = None

    def read(self, pos: int, n: int) -> memoryview:
        """``n`` bytes at ``pos`` (valid until the next read)."""
        if not self.direct:
            data = os.pread(self.fd, n, pos)
            if len(data) != n:
                raise DeviceMismatch(f"{self.path} ended at byte {pos + len(data)}")
            return memoryview(data)
        if self._buf is None or len(self._buf) < n:
            if self._buf is not None:
                self._buf.close()
            self._buf = mmap.mmap(-1, max(n, 1 << 20))   # page-aligned, as O_DIRECT wants
        view = memoryview(self._buf)[:n]
        got = 0
        while got < n:
            k = os.preadv(self.fd, [view[got:]], pos + got)
            if k <= 0:
                raise DeviceMismatch(f"{self.path} ended at byte {pos + got}")
            got += k
        return view

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._buf is not None:
            try:
                self._buf.close()
            except BufferError:
                pass  # a view of it is still held: the mapping goes with it
            self._buf = None
