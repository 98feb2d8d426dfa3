"""The drain service: move records from the write ring into the journal, durably, once.

Group commit: the service reads every record waiting in the ring (up to a
batch limit), appends them to the journal as one batch (one segment sync,
one index transaction) together with its resume cursor, and only then moves
the ring's ``tail``. While the journal syncs, the producer keeps filling the
ring, so batches grow with the load.

Exactly once across crashes: the resume cursor stored atomically with each
batch names the ring session and the last ring seq journaled
(:mod:`cdp.session`); records at or below it are skipped after a restart,
and a ring that starts past it means lost writes, an overflow of the whole
device.

Overflow and damage: OVERFLOW records, and records that fail their checks,
become journal OVERFLOW records (the whole device when the damaged record's
range is not trustworthy); the service then copies the open windows' ranges
from the device as RESYNC records (:mod:`cdp.resync`), interleaved with
ring batches so the ring keeps draining.

The run's state is a few small objects: the :class:`~cdp.session.RingSession`,
the :class:`~cdp.resync.Resync`, the status publisher and the appender that
keeps one batch in flight.

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

from cdp.reattach import CompareStats
from cdp.resync import Resync
from cdp.ring import Corrupt, Entry, Ring
from cdp.ringabi import RING_FLAG_DETACHED, RING_FLAG_OVERFLOW, RecType, RingError
from cdp.session import RingSession
from journal import Journal, Record, RecordType
from journal.errors import DeviceMismatch, JournalError, JournalFull
from journal.health import Health, assess
from journal.maintain import CHECK_INTERVAL, Retainer, last_compaction, make_room
from journal.output import interrupted_restores
from journal.status import RUNNING, STOPPED, Service, ServiceStatus
from journal.units import NS

#: How often the live status record is published.
STATUS_INTERVAL = 1.0
#: Fault injection for tests: SIGKILL this process after N batches are durable
#: but before their ring space is released (the worst moment for duplicates).
CRASH_ENV = "CDP_DRAIN_CRASH_BEFORE_RELEASE"
_U64 = struct.Struct("<Q")
_MAX_PROBLEMS = 100
#: Folds retention may make for one batch on a full disk before the drain gives up.
MAX_FOLDS = 3

_MARK = int(RecType.MARK)
_OVERFLOW = int(RecType.OVERFLOW)
_J_OVERFLOW = int(RecordType.OVERFLOW)


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
    #: what closing reattach windows by comparing did (cdp.reattach)
    compare: CompareStats = field(default_factory=CompareStats)


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A batch handed to the appender: what to release and count once it is durable."""

    future: Future[int]
    #: ring position up to which the batch was read
    release: int
    records: int
    last_journal_seq: int
    last_ring_seq: int
    #: what was handed over, to hand it over again once room was made on a full filesystem
    batch: list[Record] = field(default_factory=list)
    cursor: dict[str, Any] | None = None


def append_making_room(journal: Journal, records: list[Record], cursor: dict[str, Any] | None,
                       make_room: Callable[[JournalFull], bool] | None, full: JournalFull | None = None) -> None:
    """Append ``records``; a full disk (``full``: one met already) lets ``make_room`` fold history first.

    :data:`MAX_FOLDS` folds at the most; without a policy (``make_room`` None or False)
    the full disk's error goes up as it is, and a failed fold raises its own.
    """
    folds = 0
    while True:
        if full is not None:
            if folds == MAX_FOLDS:
                raise JournalFull(f"{full} (retention folded history {folds} times and the batch still did "
                                  "not fit)") from None
            if make_room is None or not make_room(full):
                raise full
            folds += 1
        try:
            journal.append(records, cursor)
            return
        except JournalFull as exc:
            full = exc


class _Appender:
    """Group commit with one batch in flight: the journal syncs while the next batch is read.

    The previous batch is always made durable (and its ring space released
    by the caller) before the next is submitted, so the journal sees batches
    in ring order and ``tail`` never passes what is durable.
    """

    def __init__(self, journal: Journal, make_room: Callable[[JournalFull], bool] | None = None) -> None:
        self._journal = journal
        #: called when the journal's filesystem is full; True if it made room (retention folded history),
        #: False if there is no policy; raises the full disk's one line, with why, if retention failed
        self._make_room = make_room
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cdp-drain-append")
        self._in_flight: _InFlight | None = None
        crash = os.environ.get(CRASH_ENV, "")
        self._crash_countdown: int | None = int(crash) if crash.isdigit() else None

    def submit(self, records: list[Record], cursor: dict[str, Any], release: int, last_journal_seq: int,
               last_ring_seq: int) -> None:
        """Start appending a batch (after :meth:`wait` returned the previous one)."""
        assert self._in_flight is None
        future = self._pool.submit(self._journal.append, records, cursor)
        self._in_flight = _InFlight(future, release, len(records), last_journal_seq, last_ring_seq,
                                    records, cursor)

    def wait(self) -> _InFlight | None:
        """The batch in flight once it is durable (None if there is none); its errors are raised here."""
        batch, self._in_flight = self._in_flight, None
        if batch is None:
            return None
        try:
            batch.future.result()
        except JournalFull as full:
            # the batch was not committed: with a retention policy, fold the oldest history and
            # hand it over again; without one (or if that frees nothing) stop as before
            append_making_room(self._journal, batch.batch, batch.cursor, self._make_room, full)
        if self._crash_countdown is not None:
            self._crash_countdown -= 1
            if self._crash_countdown <= 0:  # fault injection: die with the batch durable, tail not moved
                os.kill(os.getpid(), signal.SIGKILL)
        return batch

    def shutdown(self) -> None:
        self._pool.shutdown()


class _StatusPublisher:
    """The live status record, published at most every :data:`STATUS_INTERVAL` seconds."""

    def __init__(self, journal: Journal, ring: Ring, device_path: str | None,
                 on_health: Callable[[Health], None] | None = None) -> None:
        self._journal = journal
        self._ring = ring
        self._device_path = device_path
        self._on_health = on_health
        self._at = 0.0
        self._rate_mark = (time.monotonic(), 0, 0)
        self._rates = (0.0, 0.0)

    def due(self, force: bool) -> bool:
        """Whether to publish now; if so, the interval starts again."""
        now = time.monotonic()
        if not force and now - self._at < STATUS_INTERVAL:
            return False
        self._at = now
        return True

    def publish(self, state: str, stats: DrainStats, last_seq: int, ring_seq: int, resync_pending: int) -> None:
        """Write one :class:`ServiceStatus` (rates over the last half second or more)."""
        now = self._at
        ring = self._ring
        t0, r0, b0 = self._rate_mark
        if now - t0 >= 0.5:
            self._rates = ((stats.records - r0) / (now - t0), (stats.bytes - b0) / (now - t0))
            self._rate_mark = (now, stats.records, stats.bytes)
        oldest = ring.oldest_ts()
        wall = time.time_ns()
        flags = ring.flags
        status = ServiceStatus(
            pid=os.getpid(), ring=ring.path, journal=os.fspath(self._journal.path),
            device=self._device_path or "", state=state,
            started_ns=stats.started_ns, updated_ns=wall,
            records=stats.records, bytes=stats.bytes,
            rate_records=round(self._rates[0], 1), rate_bytes=round(self._rates[1], 1),
            lag_bytes=max(0, ring.head - ring.released),
            lag_seconds=max(0.0, (wall - oldest) / NS) if oldest is not None else 0.0,
            ring_fill=round(ring.fill(), 4), ring_size=ring.data_size,
            dropped=ring.dropped, overflow=bool(flags & RING_FLAG_OVERFLOW),
            detached=bool(flags & RING_FLAG_DETACHED),
            corrupt=stats.corrupt, overflows=stats.overflows,
            resync_pending_bytes=resync_pending, last_seq=last_seq, ring_seq=ring_seq,
        )
        self._journal.set_status(status.as_record())
        if self._on_health is not None:
            # this process holds the writer lock: it is the running service
            path = self._journal.path
            self._on_health(assess(self._journal, Service(status, os.getpid()), wall,
                                   len(interrupted_restores(path))))


class _Drainer:
    """One drain run: a journal open for writing and a ring open as its consumer."""

    def __init__(self, journal: Journal, ring: Ring, *, device_path: str | None, batch_bytes: int,
                 batch_records: int, stop: threading.Event, on_progress: Callable[[DrainStats], None] | None,
                 on_health: Callable[[Health], None] | None = None,
                 on_compare: Callable[[CompareStats], None] | None = None) -> None:
        self.j = journal
        self.ring = ring
        self.batch_bytes = batch_bytes
        self.batch_records = batch_records
        self.stop = stop
        self.on_progress = on_progress
        self.stats = DrainStats(started_ns=time.time_ns())
        #: the last journal seq handed out
        self.jseq = journal.last_seq
        #: lower bound for the time of a damaged record: the last good write before it
        self.floor_ts = journal.last_ts_ns
        self.session = RingSession.resume(journal.cursor())
        source = device_path or journal.info.source or None
        device = os.fspath(source) if source else None
        self.resync = Resync(device, journal.info.device_bytes, batch_bytes, self._problem, on_compare)
        self.stats.compare = self.resync.compare
        self.status = _StatusPublisher(journal, ring, device, on_health)
        self.appender = _Appender(journal, self._make_room)

    def _next_jseq(self) -> int:
        self.jseq += 1
        return self.jseq

    # -------------------------------------------------------------- batching

    def _overflow_for(self, offset: int | None, length: int | None, first_ts: int | None,
                      reason: str) -> list[Record]:
        """OVERFLOW record(s) for a range whose content the journal must re-read."""
        self._problem(reason)
        if offset is None or length is None:
            offset, length = 0, self.j.info.device_bytes
        if length == 0:
            return []
        start = first_ts if first_ts is not None else self.floor_ts
        self.stats.overflows += 1
        self.resync.want()
        ts = max(start, self.session.ring_ts)
        return [Record(self._next_jseq(), ts, _J_OVERFLOW, 0, offset, length, _U64.pack(start))]

    def _make_room(self, full: JournalFull) -> bool:
        """The journal's filesystem is full: let retention fold history, and say so.

        Where retention fails, the drain stops with the full disk's one line,
        which then says why retention did not help (one line, not two).
        """
        try:
            result = make_room(self.j)
        except JournalError as exc:
            why = f"retention could not make room: {str(exc).splitlines()[0]}"
        else:
            if result is None:
                return False  # no retention policy: the admin never agreed to lose history; stop as before
            if result.bytes_freed:
                from journal.units import format_bytes

                print(f"cdp: run: retention: {result_reason(self.j)}; {result.segments_deleted} segments "
                      f"deleted, {format_bytes(result.bytes_freed)} given back", file=sys.stderr, flush=True)
                return True
            why = "retention found nothing to give back"
        self._remember(why)  # said once, in the line the drain stops with
        raise JournalFull(f"{full} ({why})") from None

    def _problem(self, text: str) -> None:
        self._remember(text)
        print(f"cdp: drain: {text}", file=sys.stderr, flush=True)

    def _remember(self, text: str) -> None:
        """Keep ``text`` among the run's problems (the first :data:`_MAX_PROBLEMS` of them)."""
        if len(self.stats.problems) < _MAX_PROBLEMS:
            self.stats.problems.append(text)

    def _begin_session(self, entries: list[Entry | Corrupt]) -> list[Record]:
        """At the first record of the ring: the OVERFLOW of the whole device if writes were lost before it."""
        first = self.ring.first_seen
        if first is None and entries:  # the very first header is damaged
            first = (None, None)
        if first is None:
            return []
        lost = self.session.begin(*first, self.j.info.created_ns)
        # the lost writes came after the last record journaled, before this one
        return self._overflow_for(None, None, None, lost) if lost else []

    def _convert(self, entries: list[Entry | Corrupt]) -> list[Record]:
        """Journal records for a batch of ring entries (the hot loop)."""
        records: list[Record] = []
        whole_device = False
        if not self.session.started:
            records += self._begin_session(entries)
            whole_device = bool(records)
        append = records.append
        session = self.session
        skip, jseq, nbytes = session.skip_upto, self.jseq, 0
        floor, ring_seq, ring_ts, dups = self.floor_ts, session.ring_seq, session.ring_ts, 0
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
                    self.resync.want()
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
                self.jseq, self.floor_ts, session.ring_seq, session.ring_ts = jseq, floor, ring_seq, ring_ts
                where = f"ring position {e.pos}" + ("" if e.seq is None else f" seq {e.seq}")
                if e.range_known or not whole_device:
                    first_ts = e.ts_ns if e.range_known else None
                    records += self._overflow_for(e.offset, e.length, first_ts, f"{where}: {e.reason}")
                    whole_device = whole_device or not e.range_known
                else:
                    self._problem(f"{where}: {e.reason}")
                jseq = self.jseq
                if e.seq is not None and e.seq > ring_seq:
                    ring_seq = e.seq
                    if e.ts_ns is not None:
                        ring_ts = max(ring_ts, e.ts_ns)
        self.jseq, self.floor_ts, session.ring_seq, session.ring_ts = jseq, floor, ring_seq, ring_ts
        self.stats.duplicates_skipped += dups
        self.stats.bytes += nbytes
        return records

    def _commit(self, records: list[Record], force_cursor: bool = False, wait: bool = True) -> None:
        """Append a batch with the cursor; release the ring once it is durable.

        With ``wait=False`` the append runs on the appender thread while the
        caller reads and checks the next batch (the journal's fsync and LMDB
        commit release the GIL).
        """
        ring, session = self.ring, self.session
        if ring.last_seq > session.ring_seq and session.started:
            session.ring_seq = ring.last_seq  # DISCARDED records consumed seqs too
        pos = ring.cursor
        self._flush_pending()
        if records or force_cursor or session.unsaved:
            cursor = session.cursor()
            session.saved()
            self.appender.submit(records, cursor, pos, self.jseq, session.ring_seq)
            if wait:
                self._flush_pending()
        else:
            ring.release(pos)

    def _flush_pending(self) -> None:
        """Wait for the batch in flight, then release its ring space."""
        batch = self.appender.wait()
        if batch is None:
            return
        self.ring.release(batch.release)
        self.stats.records += batch.records
        self.stats.batches += 1
        self.stats.last_journal_seq = batch.last_journal_seq
        self.stats.last_ring_seq = batch.last_ring_seq
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def drain_once(self) -> int:
        """Read and check what the ring holds now (one batch) and start journaling it."""
        entries = self.ring.read(self.batch_records, self.batch_bytes)
        if entries or self.ring.cursor != self.ring.released:
            self._commit(self._convert(entries), wait=False)
        return len(entries)

    # ---------------------------------------------------------------- resync

    def resync_step(self) -> bool:
        """Copy up to one batch of open overflow ranges from the device; True if work remains."""
        if not self.resync.wanted:
            return False
        self._flush_pending()  # a batch in flight may open windows
        records = self.resync.next_records(self.j, self._next_jseq)
        if records is None:
            return False
        # before the ring's first record is seen the prior cursor is still the truth: a
        # fresh one would say a session began and was not drained, and a restart would
        # count the ring's writes as lost
        append_making_room(self.j, records, self.session.cursor() if self.session.started else self.session.prior,
                           self._make_room)
        self.session.saved()
        covered = sum(r.length for r in records)
        self.stats.resync_bytes += sum(len(r.data) for r in records)  # a compare's unchanged runs copy nothing
        self.stats.records += len(records)
        self.stats.last_journal_seq = self.jseq
        self.resync.copied(covered)
        self.resync.compared()
        return True

    # ---------------------------------------------------------------- status

    def publish_status(self, state: str = RUNNING, force: bool = False) -> None:
        if self.status.due(force):
            self._flush_pending()
            try:
                self.status.publish(state, self.stats, self.jseq, self.session.ring_seq, self.resync.pending)
            except JournalFull:
                # the status is for the admin's eyes: a full disk is met by the next batch's append,
                # which says so (retention makes room, or the drain stops with its one line)
                pass
            except JournalError as exc:
                if str(exc) not in self.stats.problems:
                    self._problem(str(exc))

    # ------------------------------------------------------------------ run

    def finish_detached(self) -> None:
        """The producer is gone and everything is read: close the session in the cursor."""
        session = self.session
        if not session.started and session.prior_done:
            session.done = True  # a restart on a ring already finished: nothing new happened
            return
        if self.ring.overflow and not session.continues_finished_prior():
            # the producer left while still dropping, before it could say which ranges
            recs = self._overflow_for(None, None, None,
                                      "the producer detached while dropping writes; resyncing the whole device")
            self._commit(recs)
        session.done = True
        self._commit([], force_cursor=True)

    def run(self, until_detached: bool, poll_interval: float, until_resynced: bool = False) -> DrainStats:
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
                if until_resynced and not self.resync.wanted:
                    self.stats.stopped_by = "resynced"  # no window left to close (or none can be)
                    break
                if n:
                    continue
                self._flush_pending()
                detached = ring.detached  # read DETACHED before head: nothing follows it
                if detached and not ring.pending():
                    self.stats.detached = True
                    if not self.session.done:
                        self.finish_detached()
                        if self.resync.wanted:
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
                self.appender.shutdown()
            self.stats.ended_ns = time.time_ns()
            self.stats.last_journal_seq = self.jseq
            self.stats.last_ring_seq = self.session.ring_seq
            # best effort: an error already on its way out matters more than the status
            with contextlib.suppress(Exception):
                self.publish_status(STOPPED, force=True)
            self.resync.close()
        return self.stats


def result_reason(journal: Journal) -> str:
    """Why the last compaction ran, as it recorded."""
    last = last_compaction(journal) or {}
    return str(last.get("reason", ""))


def drain(
    journal_path: str | os.PathLike[str], ring_path: str | os.PathLike[str], *,
    device_path: str | os.PathLike[str] | None = None, until_detached: bool = False,
    stop: threading.Event | None = None, batch_bytes: int = 8 << 20, batch_records: int = 4096,
    poll_interval: float = 0.005, on_progress: Callable[[DrainStats], None] | None = None,
    handle_signals: bool = True, on_health: Callable[[Health], None] | None = None,
    retention_interval: float = CHECK_INTERVAL,
    until_resynced: bool = False, on_compare: Callable[[CompareStats], None] | None = None,
) -> DrainStats:
    """Drain ``ring_path`` into the journal at ``journal_path`` until stopped.

    Stops when ``stop`` is set, on SIGTERM/SIGINT (when called from the main
    thread with ``handle_signals``), or with ``until_detached`` once the
    producer detached and everything is journaled. The batch in progress is
    always finished first. Raises :class:`DeviceMismatch` when the ring
    protects another device than the journal, :class:`RingError` or
    :class:`JournalError` (one-line messages) for unusable inputs.
    ``on_health`` receives the journal's :class:`~journal.health.Health`
    each time the status is published (`cdp run --metrics`). With
    ``until_resynced`` it stops as soon as no overflow window is left to
    close (`cdp attach` onto an existing journal: the compare is done);
    ``on_compare`` sees the compare's counters after each step.
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
                               on_progress=on_progress, on_health=on_health, on_compare=on_compare)
            # the retention policy, applied beside the drain (its steps are short transactions)
            retainer = Retainer(journal, lambda text: print(f"cdp: run: {text}", file=sys.stderr, flush=True),
                                interval=retention_interval)
            retainer.start()
            try:
                return drainer.run(until_detached, poll_interval, until_resynced)
            finally:
                retainer.stop()
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
