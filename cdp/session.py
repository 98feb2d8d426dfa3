"""Which ring session the drain service is in, and the resume cursor it commits with each batch.

Journal seqs are the journal's own; ring seqs restart at 1 with every ring
(a new attach, a fresh ring file). The cursor, stored atomically with each
batch (``Journal.append(records, cursor)``), says which ring session the
batch came from (the ``seq`` and ``ts_ns`` of the first record the service
saw from it), the last ring seq and time journaled, and whether the
session ended (the producer detached and everything was journaled)::

    {"v": 1, "session": [seq, ts_ns], "ring_seq": N, "ring_ts": T, "done": false}

After ``kill -9`` the ring's ``tail`` may lag the journal (the batch became
durable but ``tail`` was not stored yet): on restart the records at or
below the cursor's ring seq are skipped, so nothing is journaled twice. A
ring that starts past the cursor (records released by someone else, a ring
replaced before it was drained) means writes were lost, which the service
turns into an overflow of the whole device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CURSOR_VERSION = 1


@dataclass(slots=True)
class RingSession:
    """Where the journal stands in the ring it drains."""

    #: the cursor the journal held when the service started (None: none of this version)
    prior: dict[str, Any] | None
    #: [seq, ts_ns] of the first record seen in this session; None until one is seen
    session: list[int] | None = None
    #: ring seqs at or below this were journaled before a restart: skip them
    skip_upto: int = 0
    #: the newest ring record journaled or passed, and its time
    ring_seq: int = 0
    ring_ts: int = 0
    #: the ring seq named by the last cursor committed
    committed_seq: int = 0
    #: the producer detached and everything it wrote is journaled
    done: bool = False

    @classmethod
    def resume(cls, cursor: Any) -> RingSession:
        """The session state for a journal whose last committed cursor is ``cursor``."""
        prior = cursor if isinstance(cursor, dict) and cursor.get("v") == CURSOR_VERSION else None
        return cls(prior)

    @property
    def started(self) -> bool:
        """Whether the first record of the ring has been seen (and judged)."""
        return self.session is not None

    @property
    def prior_done(self) -> bool:
        """Whether the previous run saw its session end."""
        return self.prior is not None and bool(self.prior.get("done"))

    def begin(self, seq: int | None, ts: int | None, created_ns: int) -> str:
        """Judge the first record seen (None: its header is damaged): '' or why writes were lost.

        The ring continues the prior session when it is the same ring
        restarted (seq 1 with the session's time), the ring resumed at or
        before the cursor, or right after it.
        """
        prior = self.prior
        lost = ""
        if prior is None:
            if seq != 1 and (ts is None or ts > created_ns):
                lost = f"the ring starts at seq {seq}: earlier writes were released before this journal saw them"
        else:
            rs, rts = prior["ring_seq"], prior["ring_ts"]
            same = seq is not None and ts is not None and (
                (seq == 1 and prior["session"] == [1, ts])
                or (1 < seq <= rs and ts <= rts)
                or (seq == rs + 1 and seq > 1 and ts >= rts))
            if same:
                self.session = list(prior["session"])
                self.skip_upto = rs
                self.ring_seq, self.ring_ts = rs, rts
                self.committed_seq = rs
                return ""
            if seq != 1:
                lost = (f"the ring resumes at seq {seq} but the journal stopped at ring seq {rs}: "
                        "records in between were lost")
            elif not prior.get("done"):
                lost = "a new ring session began before the previous one was drained to its end"
        self.session = [seq or 0, ts or 0]
        return lost

    def continues_finished_prior(self) -> bool:
        """Whether this is the session the previous run already saw to its end."""
        return self.prior_done and self.prior is not None and self.session == self.prior.get("session")

    def cursor(self) -> dict[str, Any]:
        """The cursor to commit with the next batch."""
        return {"v": CURSOR_VERSION, "session": self.session or [0, 0], "ring_seq": self.ring_seq,
                "ring_ts": self.ring_ts, "done": self.done}

    @property
    def unsaved(self) -> bool:
        """Whether the ring moved past what the last committed cursor says."""
        return self.ring_seq != self.committed_seq

    def saved(self) -> None:
        """A cursor from :meth:`cursor` was committed."""
        self.committed_seq = self.ring_seq
