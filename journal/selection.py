"""What a compaction keeps: the horizon, the fold and the kept seqs (see journal.compact).

Its own module, free of policy parsing, because every reader consults it
(a seq or time the compaction folded away answers as the newest kept point
before it) and the policy side needs the time grammar, which needs readers.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Selection:
    """Which history a compaction keeps; see the module docstring."""

    horizon_seq: int
    horizon_ts: int
    fold_seq: int
    kept: tuple[int, ...] = field(default_factory=tuple)
    #: For each kept seq, the time of the first record after it that was folded (0: none), so a
    #: time that lands on a kept point can say whether it was thinned to it.
    folded_after: tuple[int, ...] = ()

    def maps(self, seq: int) -> int | None:
        """The kept seq that answers for ``seq`` (itself when not folded); None before the horizon."""
        if seq > self.fold_seq:
            return seq
        i = bisect_right(self.kept, seq)
        return self.kept[i - 1] if i else None

    def thinned_at(self, seq: int, ts_ns: int) -> bool:
        """Whether a time ``ts_ns`` that resolves to kept ``seq`` once named a folded record."""
        i = bisect_right(self.kept, seq) - 1
        if seq > self.fold_seq or i < 0 or self.kept[i] != seq or not self.folded_after:
            return False
        return 0 < self.folded_after[i] <= ts_ns

    def to_meta(self) -> dict[str, Any]:
        return {"horizon_seq": self.horizon_seq, "horizon_ts": self.horizon_ts,
                "fold_seq": self.fold_seq, "kept": list(self.kept), "folded_after": list(self.folded_after)}

    @classmethod
    def from_meta(cls, value: dict[str, Any]) -> Selection:
        return cls(value["horizon_seq"], value["horizon_ts"], value["fold_seq"], tuple(value["kept"]),
                   tuple(value.get("folded_after", ())))
