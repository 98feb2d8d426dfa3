"""Retention in the background of the process that appends (the drain service).

The :class:`Retainer` thread applies the journal's retention policy: every
:data:`CHECK_INTERVAL` seconds it asks whether the policy folds anything
now, and runs the compaction once the fold is worth one (at least a
sixteenth of the history since the last fold: :func:`compact_now`), a
bounded step at a time (each step is
one short LMDB transaction, so the drain's appends wait at most one step).
It also answers a ``cdp compact`` made while the service holds the journal
(meta ``compact_request``: the answer goes to ``compact_answer``) and
finishes a compaction a crash interrupted. Every second it also builds or moves
on the block-map checkpoint restores read (:mod:`journal.heads`).

The size cap: when the journal's bytes on disk pass ``max_size``, the
horizon moves forward past the oldest history that, written out, accounts
for the excess plus a tenth of the cap (so the next write does not trip it
again) - measured on the activity table, then checked against the real
size after the compaction; it moves again at the next check while the
journal is still over. Protection never stops for it, and the log and
``cdp status`` say that the cap moved the horizon.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lmdb
import msgpack

from journal import heads
from journal.compact import LAST_META, CompactionResult, policy_of
from journal.errors import JournalError
from journal.format import U64
from journal.index import unseal
from journal.reserve import RESERVE, keep_reserve
from journal.retention import Policy, horizon_time
from journal.units import format_bytes, format_ts

if TYPE_CHECKING:
    from journal.journal import Journal

#: Seconds between two looks at the policy (a request from `cdp compact` is seen within a second).
CHECK_INTERVAL = 60.0
#: The least share of the history since the last fold that a background fold must cover to run.
MIN_FOLD_SHARE = 1 / 16
#: The most of each second the checkpoint's steps take (a drain writing faster than a step
#: moves the checkpoint must not keep the retention check from running).
CHECKPOINT_SECONDS = 0.5
REQUEST_META = "compact_request"
#: The request the Retainer took up, written before it begins (`cdp compact` tells a live service
#: from a process that holds the journal and will never answer by it).
TAKEN_META = "compact_taken"
ANSWER_META = "compact_answer"


def cap_horizon(journal: Journal, policy: Policy, now_ns: int) -> tuple[int | None, str]:
    """The horizon the policy and the size cap ask for now, and why."""
    horizon = horizon_time(policy, now_ns)
    if policy.max_size is None:
        return horizon, "policy"
    size = journal.stats().disk_bytes
    if size <= policy.max_size:
        return horizon, "policy"
    need = size - policy.max_size + policy.max_size // 10
    written = 0
    cut = None
    with journal.index.read() as txn:
        for key, raw in txn.cursor(db=journal.index.db("activity")):
            _count, nbytes = msgpack.unpackb(unseal("activity", key, raw))
            written += nbytes
            if written >= need:
                cut = U64.unpack(key)[0] + 1_000_000_000
                break
    if cut is None:
        cut = now_ns  # everything written counts less than the excess: keep only the newest point
    why = (f"the journal is {format_bytes(size)}, over its cap of {format_bytes(policy.max_size)}: "
           f"history before {format_ts(cut)} folds into the base")
    if horizon is None or cut > horizon:
        return cut, why
    return horizon, "policy"


def compact_now(journal: Journal, now_ns: int | None = None,
                on_step: Callable[[str], None] | None = None, *,
                eager: bool = True) -> tuple[CompactionResult | None, str]:
    """Apply the policy (and the size cap) once; returns the result (None: nothing to fold) and why.

    Not ``eager`` (the background's minute-by-minute look): a fold the
    policy alone asks for waits until it covers :data:`MIN_FOLD_SHARE` of
    the records since the last fold. Every compaction walks the whole block
    table (its plan step), so one a minute that folds a minute's records
    would spend O(journal) of CPU per minute for nothing: with ``--keep 7d``
    the journal instead holds up to about 7d plus a sixteenth of it before
    the background folds again. The first compaction, the size cap and an
    unfinished compaction never wait.
    """
    now = time.time_ns() if now_ns is None else now_ns
    policy = policy_of(journal.index)
    horizon, why = cap_horizon(journal, policy, now)
    share = MIN_FOLD_SHARE if not eager and why == "policy" else 0.0
    return journal.compact(now, reason=why, horizon_ts=horizon, on_step=on_step, min_share=share), why


def make_room(journal: Journal) -> CompactionResult | None:
    """The journal's filesystem is full: fold the older half of what the policy keeps, if it has one.

    Only with a retention policy (None without one: the admin never agreed to
    lose history, and the drain stops instead); a history with fewer than two
    points, or folded already up to its middle one, has nothing to fold
    (:class:`JournalError`). A compaction needs a little room
    itself (its records, the index's copy-on-write pages, the live versions
    it moves): the journal's reserve file (:data:`RESERVE`) is given up for
    it, only as many bytes are moved as the reserve held, and the reserve is
    taken back afterwards where the room is there.
    """
    policy = policy_of(journal.index)
    if not policy.active:
        return None
    stats = journal.stats()
    points = [p.ts_ns for p in journal.points()]
    if len(points) < 2:
        raise JournalError("the history has no two points to fold between yet")
    horizon = points[0] + (points[-1] - points[0]) // 2
    why = (f"the journal's filesystem is full: history before {format_ts(horizon)} folds into the base "
           f"(the journal is {format_bytes(stats.disk_bytes)})")
    reserve = journal.path / RESERVE
    held = reserve.stat().st_size if reserve.exists() else 0
    reserve.unlink(missing_ok=True)
    try:
        result = journal.compact(time.time_ns(), reason=why, horizon_ts=horizon, move_budget=held)
    finally:
        keep_reserve(journal.path, spare=2)
    if result is None:
        raise JournalError("the history before the middle point is folded already")
    return result


class Retainer:
    """The background thread; see the module docstring."""

    def __init__(self, journal: Journal, log: Callable[[str], None], *,
                 interval: float = CHECK_INTERVAL, clock: Callable[[], int] = time.time_ns) -> None:
        self.journal = journal
        self.log = log
        self.interval = interval
        #: the present, in ns (a test compresses hours of simulated time into seconds)
        self.clock = clock
        self.compactions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cdp-retention", daemon=True)
        self._next = 0.0
        # a failure is said once, not at every look, until a look succeeds
        self._compaction_failure = _SaidOnce(log, "retention: compaction failed: ")
        self._checkpoint_failure = _SaidOnce(log, "checkpoint: ")  # restores walk meanwhile

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the step in progress (a compaction left half-way finishes next time)."""
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            self._checkpoint()
            try:
                request = self._request()
                if request is None and time.monotonic() < self._next:
                    continue
                if request is not None:
                    self._take(request)
                self._next = time.monotonic() + self.interval
                result, why = compact_now(self.journal, self.clock(), on_step=self._check_stop,
                                          eager=request is not None)
                if result is not None:
                    self.compactions += 1
                    self.log(_describe(result, why))
                self._compaction_failure.clear()
                if request is not None:
                    self._answer(request, result)
            except _Stopped:
                return
            except (JournalError, OSError, lmdb.Error) as exc:
                self._compaction_failure.say(exc)

    def _checkpoint(self) -> None:
        """Build or move the block-map checkpoint on (:mod:`journal.heads`), a short step at a time."""
        until = time.monotonic() + CHECKPOINT_SECONDS
        try:
            # a pause between steps lets the drain's commits in (LMDB's write lock is not fair)
            while heads.step(self.journal) and time.monotonic() < until and not self._stop.wait(0.005):
                pass
            self._checkpoint_failure.clear()
        except (JournalError, OSError, lmdb.Error) as exc:
            self._checkpoint_failure.say(exc)

    def _check_stop(self, _stage: str) -> None:
        if self._stop.is_set():
            raise _Stopped

    def _request(self) -> int | None:
        index = self.journal.index
        with index.read() as txn:
            request = index.get_meta(txn, REQUEST_META)
            answer = index.get_meta(txn, ANSWER_META) or {}
        if request is None or answer.get("request_ns") == request:
            return None
        return request

    def _take(self, request: int) -> None:
        index = self.journal.index
        index.write(lambda txn: index.put_meta(txn, TAKEN_META, request))

    def _answer(self, request: int, result: CompactionResult | None) -> None:
        index = self.journal.index
        doc: dict[str, Any] = {"request_ns": request, "result": None if result is None else result.describe()}
        index.write(lambda txn: index.put_meta(txn, ANSWER_META, doc))


class _SaidOnce:
    """A background failure logged once (its first line after ``prefix``), again only once it changes."""

    def __init__(self, log: Callable[[str], None], prefix: str) -> None:
        self._log = log
        self._prefix = prefix
        self._last = ""

    def say(self, exc: BaseException) -> None:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if text != self._last:
            self._log(f"{self._prefix}{text}")
        self._last = text

    def clear(self) -> None:
        """The work went through: the next failure is said again."""
        self._last = ""


class _Stopped(Exception):
    """The service is stopping: leave the compaction for the next start to finish."""


def _describe(result: CompactionResult, why: str) -> str:
    text = (f"retention: folded history before {format_ts(result.horizon_ts)} into the base "
            f"({result.kept} points kept up to seq {result.fold_seq}; {result.entries_dropped} block "
            f"versions and {result.records_dropped} records dropped, {result.segments_deleted} segments "
            f"deleted, {format_bytes(result.bytes_freed)} freed, {format_bytes(result.bytes_moved)} moved) "
            f"in {result.seconds:.1f}s")
    return text if why == "policy" else f"{text}; {why}"


def last_compaction(journal: Any) -> dict[str, Any] | None:
    """What the newest finished compaction did (meta ``last_compaction``)."""
    with journal.index.read() as txn:
        return journal.index.get_meta(txn, LAST_META)
