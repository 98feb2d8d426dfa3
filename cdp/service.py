"""The drain service: move records from the write ring into the journal, durably, once.

Group commit: the service reads every record waiting in the ring (up to a
batch limit), appends them to the journal as one batch (one segment sync,
one index transaction) together with its resume cursor, and only then moves
the ring's ``tail``. While the journal syncs, the producer keeps filling the
ring, so batches grow with the load.

Exactly once across crashes
---------------------------
Journal seqs are the journal's own (``last_seq + 1``, ...). The cursor
stored atomically with each batch says which ring session it came from (the
``seq`` and ``ts_ns`` of the first record the service saw from it: a fresh
ring restarts at seq 1) and the last ring seq journaled. After ``kill -9``
the ring's ``tail`` may lag the journal (the batch became durable but
``tail`` was not stored yet): on restart the records at or below the
cursor's ring seq are skipped, so nothing is journaled twice, and a ring
seq that jumps past the cursor (records released by someone else, a ring
replaced before it was drained) is treated as lost writes: the whole device
becomes an overflow range.

Overflow and damage
-------------------
OVERFLOW records, and records that fail their checks, become journal
OVERFLOW records (the whole device when the damaged record's range is not
trustworthy). The service then copies the open windows' ranges from the
device (``device_path``, or the journal's source) and journals them as
RESYNC records of at most 4 MiB, ascending and contiguous, interleaved with
ring batches so the ring keeps draining; the journal closes a window once
RESYNC copies cover it.

This module must run in a minimal guest: it imports only the standard
library, lmdb, msgpack and crc32c (through the journal).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from cdp.ring import Corrupt, Entry, Ring
from cdp.ringabi import RING_FLAG_DETACHED, RING_FLAG_OVERFLOW, RecType, RingError
from journal import Journal, Record, RecordType
from journal.errors import DeviceMismatch, JournalError
from journal.status import RUNNING, STOPPED, ServiceStatus
from journal.units import NS

#: Largest RESYNC record.
RESYNC_CHUNK = 4 << 20
#: How often the live status record is published.
STATUS_INTERVAL = 1.0
CURSOR_VERSION = 1
#: Fault injection for tests: SIGKILL this process after N batches are durable
#: but before their ring space is released (the worst moment for duplicates).
CRASH_ENV = "CDP_DRAIN_CRASH_BEFORE_RELEASE"
_U64 = struct.Struct("<Q")
_MAX_PROBLEMS = 100

_MARK = int(RecType.MARK)
_OVERFLOW = int(RecType.OVERFLOW)
_J_OVERFLOW = int(RecordType.OVERFLOW)
_J_RESYNC = int(RecordType.RESYNC)
_DATA_TYPES = (int(RecType.WRITE),)


@dataclass
class DrainStats:
    """What one run of the service did."""

    records: int = 0
    bytes: int = 0
    batches: int = 0
    duplicates_skipped: int = 0
    corrupt: int = 0
    overflows: int = 0
    resync_bytes: int = 0
    last_ring_seq: int = 0
    last_journal_seq: int = 0
    started_ns: int = 0
    ended_ns: int = 0
    detached: bool = False
    stopped_by: str = ""
    problems: list[str] = field(default_factory=list)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
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


class _Drainer:
    """One drain run: a journal open for writing and a ring open as its consumer."""

    def __init__(self, journal: Journal, ring: Ring, *, device_path: str | None, batch_bytes: int,
                 batch_records: int, stop: threading.Event, on_progress: Callable[[DrainStats], None] | None) -> None:
        self.j = journal
        self.ring = ring
        self.batch_bytes = batch_bytes
        self.batch_records = batch_records
        self.stop = stop
        self.on_progress = on_progress
        self.device_bytes = journal.info.device_bytes
        source = device_path or journal.info.source or None
        self.device_path: str | None = os.fspath(source) if source else None
        self._device_fd = -1
        self.stats = DrainStats(started_ns=time.time_ns())
        self._jseq = journal.last_seq
        cursor = journal.cursor()
        self._prior = cursor if isinstance(cursor, dict) and cursor.get("v") == CURSOR_VERSION else None
        self._session: list[int] | None = None
        self._skip_upto = 0
        self._ring_seq = 0
        self._ring_ts = 0
        self._cursor_seq = 0  # ring seq named by the last committed cursor
        self._done = False
        #: Lower bound for the time of a damaged record: the last good write before it.
        self._floor_ts = journal.last_ts_ns
        self._resync_wanted = True  # check for open windows left by an earlier run
        self._resync_warned = False
        self._resync_pending = 0
        self._status_at = 0.0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cdp-drain-append")
        self._pending: tuple[Future[int], int, int, int, int] | None = None
        crash = os.environ.get(CRASH_ENV, "")
        self._crash_countdown: int | None = int(crash) if crash.isdigit() else None
        self._rate_mark = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)

    # ---------------------------------------------------------------- session

    def _check_session(self, seq: int | None, ts: int | None) -> list[Record]:
        """Decide, at the first record seen, whether the ring continues the cursor's session."""
        prior = self._prior
        lost = ""
        if prior is None:
            if seq != 1 and (ts is None or ts > self.j.info.created_ns):
                lost = f"the ring starts at seq {seq}: earlier writes were released before this journal saw them"
        else:
            rs, rts = prior["ring_seq"], prior["ring_ts"]
            same = seq is not None and ts is not None and (
                (seq == 1 and prior["session"] == [1, ts])
                or (1 < seq <= rs and ts <= rts)
                or (seq == rs + 1 and seq > 1 and ts >= rts))
            if same:
                self._session = list(prior["session"])
                self._skip_upto = rs
                self._ring_seq, self._ring_ts = rs, rts
                self._cursor_seq = rs
                return []
            if seq != 1:
                lost = (f"the ring resumes at seq {seq} but the journal stopped at ring seq {rs}: "
                        "records in between were lost")
            elif not prior.get("done"):
                lost = "a new ring session began before the previous one was drained to its end"
        self._session = [seq or 0, ts or 0]
        if lost:
            # the lost writes came after the last record journaled, before this one
            return self._overflow_for(None, None, None, lost)
        return []

    # -------------------------------------------------------------- batching

    def _overflow_for(self, offset: int | None, length: int | None, first_ts: int | None,
                      reason: str) -> list[Record]:
        """OVERFLOW record(s) for a range whose content the journal must re-read."""
        self._problem(reason)
        if offset is None or length is None:
            offset, length = 0, self.device_bytes
        if length == 0:
            return []
        start = first_ts if first_ts is not None else self._floor_ts
        self._jseq += 1
        self.stats.overflows += 1
        self._resync_wanted = True
        ts = max(start, self._ring_ts)
        return [Record(self._jseq, ts, _J_OVERFLOW, 0, offset, length, _U64.pack(start))]

    def _problem(self, text: str) -> None:
        if len(self.stats.problems) < _MAX_PROBLEMS:
            self.stats.problems.append(text)
        print(f"cdp: drain: {text}", file=sys.stderr, flush=True)

    def _convert(self, entries: list[Entry | Corrupt]) -> list[Record]:
        """Journal records for a batch of ring entries (the hot loop)."""
        records: list[Record] = []
        append = records.append
        skip = self._skip_upto
        jseq = self._jseq
        nbytes = 0
        whole_device = False
        if self._session is None:
            first = self.ring.first_seen
            if first is None and entries:  # the very first header is damaged
                first = (None, None)
            if first is not None:
                records += self._check_session(*first)
                jseq = self._jseq
                skip = self._skip_upto
                whole_device = bool(records)
        floor, ring_seq, ring_ts, dups = self._floor_ts, self._ring_seq, self._ring_ts, 0
        for e in entries:
            if e.__class__ is Entry:
                _pos, _end, seq, ts, rtype, flags, offset, length, payload, dcrc, crcs = e
                if seq <= skip:
                    dups += 1
                    continue
                if rtype == _MARK:
                    try:
                        str(payload, "utf-8")
                    except UnicodeDecodeError:
                        self.stats.corrupt += 1
                        self._problem(f"ring seq {seq}: mark name is not UTF-8; mark dropped")
                        ring_seq, ring_ts = seq, ts
                        continue
                elif rtype == _OVERFLOW:
                    self._resync_wanted = True
                    self.stats.overflows += 1
                else:
                    floor = ts
                jseq += 1
                append(Record(jseq, ts, rtype, flags, offset, length, payload, dcrc, crcs))
                nbytes += len(payload)
                ring_seq, ring_ts = seq, ts
            else:
                # rare: hand the running state to the helpers, then take it back
                self.stats.corrupt += 1
                self._jseq, self._floor_ts, self._ring_seq, self._ring_ts = jseq, floor, ring_seq, ring_ts
                where = f"ring position {e.pos}" + ("" if e.seq is None else f" seq {e.seq}")
                if e.range_known or not whole_device:
                    first_ts = e.ts_ns if e.range_known else None
                    records += self._overflow_for(e.offset, e.length, first_ts, f"{where}: {e.reason}")
                    whole_device = whole_device or not e.range_known
                else:
                    self._problem(f"{where}: {e.reason}")
                jseq = self._jseq
                if e.seq is not None and e.seq > ring_seq:
                    ring_seq = e.seq
                    if e.ts_ns is not None:
                        ring_ts = max(ring_ts, e.ts_ns)
        self._jseq, self._floor_ts, self._ring_seq, self._ring_ts = jseq, floor, ring_seq, ring_ts
        self.stats.duplicates_skipped += dups
        self.stats.bytes += nbytes
        return records

    def _cursor(self) -> dict[str, Any]:
        return {"v": CURSOR_VERSION, "session": self._session or [0, 0], "ring_seq": self._ring_seq,
                "ring_ts": self._ring_ts, "done": self._done}

    def _commit(self, records: list[Record], force_cursor: bool = False, wait: bool = True) -> None:
        """Append a batch with the cursor; release the ring once it is durable.

        With ``wait=False`` the append runs on the appender thread while the
        caller reads and checks the next batch (the journal's fsync and LMDB
        commit release the GIL); the previous batch is always made durable
        and released first, so the journal sees batches in ring order and
        ``tail`` never passes what is durable.
        """
        ring = self.ring
        if ring.last_seq > self._ring_seq and self._session is not None:
            self._ring_seq = ring.last_seq  # DISCARDED records consumed seqs too
        pos = ring.cursor
        self._flush_pending()
        if records or force_cursor or self._ring_seq != self._cursor_seq:
            cursor = self._cursor()
            self._cursor_seq = self._ring_seq
            future = self._pool.submit(self.j.append, records, cursor)
            self._pending = (future, pos, len(records), self._jseq, self._ring_seq)
            if wait:
                self._flush_pending()
        else:
            ring.release(pos)

    def _flush_pending(self) -> None:
        """Wait for the batch in flight, then release its ring space."""
        if self._pending is None:
            return
        future, pos, count, jseq, ring_seq = self._pending
        self._pending = None
        future.result()
        if self._crash_countdown is not None:
            self._crash_countdown -= 1
            if self._crash_countdown <= 0:  # fault injection: die with the batch durable, tail not moved
                os.kill(os.getpid(), signal.SIGKILL)
        self.ring.release(pos)
        self.stats.records += count
        self.stats.batches += 1
        self.stats.last_journal_seq = jseq
        self.stats.last_ring_seq = ring_seq
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def drain_once(self) -> int:
        """Read and check what the ring holds now (one batch) and start journaling it."""
        entries = self.ring.read(self.batch_records, self.batch_bytes)
        if entries or self.ring.cursor != self.ring.released:
            self._commit(self._convert(entries), wait=False)
        return len(entries)

    # ---------------------------------------------------------------- resync

    def _device(self) -> int:
        if self._device_fd < 0:
            assert self.device_path is not None
            self._device_fd = os.open(self.device_path, os.O_RDONLY | os.O_CLOEXEC)
            size = os.lseek(self._device_fd, 0, os.SEEK_END)
            if size != self.device_bytes:
                os.close(self._device_fd)
                self._device_fd = -1
                raise DeviceMismatch(f"{self.device_path} holds {size} bytes but the journal protects "
                                     f"{self.device_bytes}")
        return self._device_fd

    def _close_device(self) -> None:
        if self._device_fd >= 0:
            os.close(self._device_fd)
            self._device_fd = -1

    def resync_step(self) -> bool:
        """Copy up to one batch of open overflow ranges from the device; True if work remains."""
        if not self._resync_wanted:
            return False
        self._flush_pending()
        windows = [w for w in self.j.overflow_windows() if w.resync_seq is None]
        ranges = _merge([(w.resynced_to, w.offset + w.length) for w in windows])
        self._resync_pending = sum(b - a for a, b in ranges)
        if not ranges:
            self._resync_wanted = False
            self._close_device()  # an open device would keep 'dmsetup remove' busy
            return False
        if self.device_path is None:
            if not self._resync_warned:
                self._problem("writes were dropped but no device to copy them from is known "
                              "(give the device path); the journal stays not whole from then on")
                self._resync_warned = True
            self._resync_wanted = False
            return False
        try:
            fd = self._device()
        except OSError as exc:
            if not self._resync_warned:
                self._problem(f"cannot read {self.device_path} to resync: {exc.strerror}")
                self._resync_warned = True
            self._resync_wanted = False
            return False
        start, end = ranges[0]
        records: list[Record] = []
        pos = start
        while pos < end and (pos - start) < self.batch_bytes:
            n = min(RESYNC_CHUNK, end - pos)
            data = os.pread(fd, n, pos)
            if len(data) != n:
                raise DeviceMismatch(f"{self.device_path} ended at byte {pos + len(data)}")
            self._jseq += 1
            records.append(Record(self._jseq, time.time_ns(), _J_RESYNC, 0, pos, n, data))
            pos += n
        self.j.append(records, cursor=self._cursor())
        self._cursor_seq = self._ring_seq
        self.stats.resync_bytes += pos - start
        self.stats.records += len(records)
        self.stats.last_journal_seq = self._jseq
        self._resync_pending -= pos - start
        return True

    # ---------------------------------------------------------------- status

    def publish_status(self, state: str = RUNNING, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < STATUS_INTERVAL:
            return
        self._status_at = now
        self._flush_pending()
        ring = self.ring
        t0, r0, b0 = self._rate_mark
        if now - t0 >= 0.5:
            self._rates = ((self.stats.records - r0) / (now - t0), (self.stats.bytes - b0) / (now - t0))
            self._rate_mark = (now, self.stats.records, self.stats.bytes)
        oldest = ring.oldest_ts()
        wall = time.time_ns()
        flags = ring.flags
        self.j.set_status(ServiceStatus(
            pid=os.getpid(), ring=ring.path, journal=os.fspath(self.j.path),
            device=self.device_path or "", state=state,
            started_ns=self.stats.started_ns, updated_ns=wall,
            records=self.stats.records, bytes=self.stats.bytes,
            rate_records=round(self._rates[0], 1), rate_bytes=round(self._rates[1], 1),
            lag_bytes=max(0, ring.head - ring.released),
            lag_seconds=max(0.0, (wall - oldest) / NS) if oldest is not None else 0.0,
            ring_fill=round(ring.fill(), 4), ring_size=ring.data_size,
            dropped=ring.dropped, overflow=bool(flags & RING_FLAG_OVERFLOW),
            detached=bool(flags & RING_FLAG_DETACHED),
            corrupt=self.stats.corrupt, overflows=self.stats.overflows,
            resync_pending_bytes=self._resync_pending, last_seq=self._jseq,
            ring_seq=self._ring_seq,
        ).as_record())

    # ------------------------------------------------------------------ run

    def finish_detached(self) -> None:
        """The producer is gone and everything is read: close the session in the cursor."""
        if self._session is None and self._prior is not None and self._prior.get("done"):
            self._done = True  # a restart on a ring already finished: nothing new happened
            return
        if self.ring.overflow and not (self._prior is not None and self._prior.get("done")
                                       and self._session == self._prior.get("session")):
            # the producer left while still dropping, before it could say which ranges
            recs = self._overflow_for(None, None, None,
                                      "the producer detached while dropping writes; resyncing the whole device")
            self._commit(recs)
        self._done = True
        self._commit([], force_cursor=True)

    def run(self, until_detached: bool, poll_interval: float) -> DrainStats:
        ring = self.ring
        try:
            while not self.stop.is_set():
                n = self.drain_once()
                if n >= self.batch_records:
                    self.publish_status()
                    continue
                if self.resync_step():
                    self.publish_status()
                    continue
                self.publish_status()
                if n:
                    continue
                self._flush_pending()
                detached = ring.detached  # read DETACHED before head: nothing follows it
                if detached and not ring.pending():
                    self.stats.detached = True
                    if not self._done:
                        self.finish_detached()
                        if self._resync_wanted:
                            continue
                    if until_detached:
                        self.stats.stopped_by = "detached"
                        break
                ring.wait(poll_interval)
            else:
                self.stats.stopped_by = self.stats.stopped_by or "stop"
        finally:
            try:
                self._flush_pending()
            finally:
                self._pool.shutdown()
            self.stats.ended_ns = time.time_ns()
            self.stats.last_journal_seq = self._jseq
            self.stats.last_ring_seq = self._ring_seq
            # best effort: an error already on its way out matters more than the status
            with contextlib.suppress(Exception):
                self.publish_status(STOPPED, force=True)
            self._close_device()
        return self.stats


def drain(
    journal_path: str | os.PathLike[str], ring_path: str | os.PathLike[str], *,
    device_path: str | os.PathLike[str] | None = None, until_detached: bool = False,
    stop: threading.Event | None = None, batch_bytes: int = 8 << 20, batch_records: int = 4096,
    poll_interval: float = 0.005, on_progress: Callable[[DrainStats], None] | None = None,
    handle_signals: bool = True,
) -> DrainStats:
    """Drain ``ring_path`` into the journal at ``journal_path`` until stopped.

    Stops when ``stop`` is set, on SIGTERM/SIGINT (when called from the main
    thread with ``handle_signals``), or with ``until_detached`` once the
    producer detached and everything is journaled. The batch in progress is
    always finished first. Raises :class:`DeviceMismatch` when the ring
    protects another device than the journal, :class:`RingError` or
    :class:`JournalError` (one-line messages) for unusable inputs.
    """
    stop = stop if stop is not None else threading.Event()
    old_handlers: dict[int, Any] = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old_handlers[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        with Journal.open(journal_path) as journal, Ring(ring_path) as ring:
            info = journal.info
            if ring.device_bytes != info.device_bytes:
                raise DeviceMismatch(f"ring {ring.path} protects a device of {ring.device_bytes} bytes "
                                     f"but journal {journal_path} protects {info.device_bytes}")
            if any(info.device_id) and ring.device_id != info.device_id:
                # same size is not same device: journaling another disk's writes would make the
                # journal equal neither
                said = ring.device_id.hex() if any(ring.device_id) else "no device id"
                raise DeviceMismatch(f"ring {ring.path} is not for the device journal {journal_path} "
                                     f"protects (the ring says {said}, the journal {info.device_id.hex()})")
            drainer = _Drainer(journal, ring, device_path=None if device_path is None else os.fspath(device_path),
                               batch_bytes=batch_bytes, batch_records=batch_records, stop=stop,
                               on_progress=on_progress)
            return drainer.run(until_detached, poll_interval)
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m cdp.service``: the drain loop on its own, for guests and tests."""
    p = argparse.ArgumentParser(prog="python -m cdp.service", description="Drain a cdp ring into a journal.")
    p.add_argument("--journal", required=True)
    p.add_argument("--ring", required=True)
    p.add_argument("--device", help="device or image to copy overflow ranges from (default: the journal's source)")
    p.add_argument("--until-detached", action="store_true", help="exit once the producer detached and all is journaled")
    p.add_argument("--batch-mb", type=float, default=8.0)
    p.add_argument("--batch-records", type=int, default=4096)
    args = p.parse_args(argv)
    try:
        stats = drain(args.journal, args.ring, device_path=args.device, until_detached=args.until_detached,
                      batch_bytes=int(args.batch_mb * (1 << 20)), batch_records=args.batch_records)
    except (JournalError, RingError) as exc:
        print(f"cdp: drain: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cdp: drain: {exc.strerror or exc}", file=sys.stderr)
        return 1
    summary = asdict(stats)
    summary["problems"] = len(stats.problems)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
