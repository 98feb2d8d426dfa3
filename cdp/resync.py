"""Closing overflow windows: the drain service copies their ranges back from the device.

When the ring was full the producer dropped writes and said which ranges
changed (OVERFLOW records; a damaged record whose range is unknown counts
as the whole device). The journal keeps an overflow window open until
RESYNC records, copies of those ranges read from the device after the
drop, cover it. :class:`Resync` reads them a batch at a time, in records
of at most :data:`RESYNC_CHUNK` bytes, ascending and contiguous, so the
service can interleave them with ring batches and the ring keeps draining.

A reattach's window (the whole device after a gap, :mod:`cdp.reattach`)
is closed the same way, a batch at a time, but by comparing: only the
blocks whose CRC-32C differs from the journal's are copied, the rest is
recorded as unchanged (why that is exact: :mod:`cdp.reattach`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from cdp.reattach import CompareStats, DeviceReader, compare_records, is_reattach, journal_crcs
from journal import Journal, Record, RecordType
from journal.errors import DeviceMismatch
from journal.format import BLOCK
from journal.points import OverflowWindow

#: Fault injection for tests: SIGKILL this process once a compare has covered this many bytes.
COMPARE_CRASH_ENV = "CDP_COMPARE_CRASH_AFTER"
#: Largest RESYNC record.
RESYNC_CHUNK = 4 << 20
_J_RESYNC = int(RecordType.RESYNC)


def merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of [start, end) ranges, ascending."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


class Resync:
    """The device a journal protects, read to close its open overflow windows."""

    def __init__(self, device_path: str | None, device_bytes: int, batch_bytes: int,
                 problem: Callable[[str], None],
                 on_compare: Callable[[CompareStats], None] | None = None) -> None:
        #: where to read from (the device, or the image the journal was made from); None: unknown
        self.device_path = device_path
        self.device_bytes = device_bytes
        self.batch_bytes = batch_bytes
        #: look for open windows at the next chance (at start: ones an earlier run left)
        self.wanted = True
        #: bytes of open windows still to copy, as of the last look
        self.pending = 0
        self._problem = problem
        self._warned = False
        self._fd = -1
        #: what the compares did, and whom to tell after each step
        self.compare = CompareStats()
        self._on_compare = on_compare
        self._reader: DeviceReader | None = None
        #: window seq -> whether it is a reattach's (asked once per window)
        self._kinds: dict[int, bool] = {}

    def want(self) -> None:
        """Writes were dropped (or damaged): look for open windows again."""
        self.wanted = True

    def next_records(self, journal: Journal, next_seq: Callable[[], int]) -> list[Record] | None:
        """Up to one batch of RESYNC records of the lowest open range; None when there is nothing to copy now.

        ``next_seq`` hands out the journal seqs. With no device to read, or
        one that cannot be opened, the problem is said once and the windows
        stay open (the journal is not whole from then on).
        """
        if not self.wanted:
            return None
        windows = [w for w in journal.overflow_windows() if w.resync_seq is None]
        ranges = merge([(w.resynced_to, w.offset + w.length) for w in windows])
        self.pending = sum(b - a for a, b in ranges)
        if not ranges:
            self.wanted = False
            self.close()  # an open device would keep 'dmsetup remove' busy
            return None
        fd = self._open()
        if fd < 0:
            self.wanted = False
            return None
        start, end = ranges[0]
        compared = [w for w in windows if self._is_reattach(journal, w)]
        if compared:
            todo = merge([(w.resynced_to, w.offset + w.length) for w in compared])
            self.compare.total_bytes = max(self.compare.total_bytes,
                                           self.compare.done_bytes + sum(b - a for a, b in todo))
            if any(a < end and b > start for a, b in todo):
                if start % BLOCK == 0:
                    return self._compare_step(journal, start, end, next_seq)
                # a range that starts mid-block (an ordinary window's): copy to the block's end
                end = min(end, start - start % BLOCK + BLOCK)
        records: list[Record] = []
        pos = start
        while pos < end and (pos - start) < self.batch_bytes:
            n = min(RESYNC_CHUNK, end - pos)
            data = os.pread(fd, n, pos)
            if len(data) != n:
                raise DeviceMismatch(f"{self.device_path} ended at byte {pos + len(data)}")
            records.append(Record(next_seq(), time.time_ns(), _J_RESYNC, 0, pos, n, data))
            pos += n
        return records

    def _is_reattach(self, journal: Journal, window: OverflowWindow) -> bool:
        """Whether a reattach opened ``window`` (its OVERFLOW's flag, looked up once)."""
        if window.seq not in self._kinds:
            self._kinds[window.seq] = is_reattach(journal, window)
        return self._kinds[window.seq]

    def _compare_step(self, journal: Journal, start: int, end: int,
                      next_seq: Callable[[], int]) -> list[Record] | None:
        """One batch of a compare from ``start`` (block-aligned): read, then compare with the journal.

        The caller made every ring batch durable first, and nothing is
        appended between the read and the lookup, so the journal's state at
        its last seq is what the records that follow are compared against.
        """
        reader = self._open_reader()
        if reader is None:
            self.wanted = False
            return None
        n = min(end - start, max(self.batch_bytes, BLOCK))
        if start + n < end:
            n -= n % BLOCK
        data = reader.read(start, n)
        read_ns = time.time_ns()
        first = start // BLOCK
        theirs = journal_crcs(journal, first, (n + BLOCK - 1) // BLOCK, journal.last_seq)
        records, differing, copied = compare_records(data, start, theirs, read_ns, next_seq, RESYNC_CHUNK)
        stats = self.compare
        stats.blocks_compared += len(theirs)
        stats.blocks_differing += differing
        stats.bytes_journaled += copied
        stats.done_bytes += n
        return records

    def compared(self) -> None:
        """The records of the last compare step are durable: tell the watcher."""
        if self._on_compare is not None:
            self._on_compare(self.compare)
        crash = os.environ.get(COMPARE_CRASH_ENV, "")
        if crash.isdigit() and self.compare.done_bytes >= int(crash):
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection: die between two compare steps

    def _open_reader(self) -> DeviceReader | None:
        if self._reader is not None:
            return self._reader
        if self.device_path is None:
            self._warn("a reattach window is open but no device to compare is known "
                       "(give the device path); the journal stays not whole from then on")
            return None
        try:
            self._reader = DeviceReader(self.device_path, self.device_bytes)
        except OSError as exc:
            self._warn(f"cannot read {self.device_path} to compare: {exc.strerror}")
            return None
        return self._reader

    def copied(self, nbytes: int) -> None:
        """``nbytes`` of RESYNC records are durable in the journal."""
        self.pending -= nbytes

    def _open(self) -> int:
        """The device, opened once and checked for size; -1 (said once) when it cannot be read."""
        if self._fd >= 0:
            return self._fd
        if self.device_path is None:
            self._warn("writes were dropped but no device to copy them from is known "
                       "(give the device path); the journal stays not whole from then on")
            return -1
        try:
            fd = os.open(self.device_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.lseek(fd, 0, os.SEEK_END)
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            self._warn(f"cannot read {self.device_path} to resync: {exc.strerror}")
            return -1
        if size != self.device_bytes:
            os.close(fd)
            raise DeviceMismatch(f"{self.device_path} holds {size} bytes but the journal protects "
                                 f"{self.device_bytes}")
        self._fd = fd
        return fd

    def _warn(self, text: str) -> None:
        if not self._warned:
            self._problem(text)
            self._warned = True

    def close(self) -> None:
        """Close the device (reopened when windows open again)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._reader is not None:
            self._reader.close()
            self._reader = None
