"""Retention: how long a journal keeps its history, and which points it keeps.

A :class:`Policy` is the admin's answer to "how much history": ``keep``
(every point of the last DURATION; older ones fold into the base),
``max_size`` (a cap on the journal's bytes on disk; reaching it moves the
horizon forward rather than stopping the drain) and ``tiers`` (thinning:
``1h:all,1d:1m,30d:1h`` keeps every point of the last hour, then the newest
point of each minute for a day, then of each hour for 30 days). It is
stored in the journal's index (meta ``retention``), so the drain service,
``cdp compact`` and ``cdp status`` all read the same one.

:func:`select` turns a policy, the journal's points and the present into a
:class:`Selection`: the *horizon* (the oldest point kept: the device as of
it becomes the new base), the *fold* seq (everything at or below it is
thinned to the kept points; everything after it is left as it is) and the
kept seqs. Named marks are kept until they fall behind the horizon; a mark
pinned with ``cdp mark --keep-forever`` is kept whatever the policy says.
Overflow and resync points between horizon and fold are always kept (they
carry the windows that say which points are whole), and the horizon never
lands inside an overflow window: a horizon must be a whole point.

The selection is pure (no I/O), so the model tests can hold it to a
policy directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from journal.errors import JournalError
from journal.records import MARK_KINDS, PointKind
from journal.selection import Selection
from journal.timespec import TimeError, parse_duration
from journal.units import format_bytes

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
#: Kinds that are always kept between horizon and fold (their windows decide wholeness).
_WINDOW_KINDS = frozenset({PointKind.OVERFLOW, PointKind.RESYNC})


class PolicyError(JournalError):
    """A retention setting that cannot be read; the message is one line."""


@dataclass(frozen=True, slots=True)
class Tier:
    """Points younger than ``age_ns``: all of them (``every_ns`` None) or the newest per ``every_ns``."""

    age_ns: int
    every_ns: int | None

    def __str__(self) -> str:
        every = "all" if self.every_ns is None else short_duration(self.every_ns)
        return f"{short_duration(self.age_ns)}:{every}"


def short_duration(ns: int) -> str:
    """A DURATION as the user writes one (``7d``, ``1h30m``, ``90s``): parse_duration reads it back."""
    out = ""
    rest = ns // 1_000_000_000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    frac = ns % 1_000_000_000
    if frac:
        out = out.removesuffix("s") if out.endswith("s") else out
        secs = (ns // 1_000_000_000) % 60
        out = out[: len(out) - len(f"{secs}")] if secs and out.endswith(str(secs)) else out
        out += f"{secs}.{frac:09d}".rstrip("0") + "s"
    return out or "0s"


@dataclass(frozen=True, slots=True)
class Policy:
    """What a journal keeps; see the module docstring. All None/empty: keep everything."""

    keep_ns: int | None = None
    max_size: int | None = None
    tiers: tuple[Tier, ...] = ()

    @property
    def active(self) -> bool:
        return self.keep_ns is not None or self.max_size is not None or bool(self.tiers)

    def to_meta(self) -> dict[str, Any]:
        return {"keep_ns": self.keep_ns, "max_size": self.max_size,
                "tiers": [[t.age_ns, t.every_ns] for t in self.tiers]}

    @classmethod
    def from_meta(cls, value: dict[str, Any] | None) -> Policy:
        if not value:
            return cls()
        return cls(value.get("keep_ns"), value.get("max_size"),
                   tuple(Tier(a, e) for a, e in value.get("tiers", [])))

    def describe(self) -> dict[str, Any]:
        """The policy for people and for ``--json``."""
        return {
            "keep": None if self.keep_ns is None else short_duration(self.keep_ns),
            "keep_seconds": None if self.keep_ns is None else self.keep_ns / 1e9,
            "max_size": None if self.max_size is None else format_bytes(self.max_size),
            "max_size_bytes": self.max_size,
            "thin": ",".join(str(t) for t in self.tiers) or None,
        }


def parse_size(text: str) -> int:
    """A SIZE (``200G``, ``1.5T``, ``512MiB``, ``4096``) in bytes; powers of 1024."""
    m = _SIZE.fullmatch(text.strip())
    if not m or (m[3] and m[3].lower() not in ("b", "ib")) or (m[3].lower() == "ib" and not m[2]):
        raise PolicyError(f"cannot read SIZE {text!r}; a size looks like 500M, 200G or 2T")
    value = int(float(m[1]) * _SIZE_UNITS[m[2].lower()])
    if value <= 0:
        raise PolicyError(f"SIZE {text!r} must be more than zero")
    return value


def parse_tiers(text: str) -> tuple[Tier, ...]:
    """``1h:all,1d:1m,30d:1h`` as tiers, youngest first; ages must grow, spacing must too."""
    tiers: list[Tier] = []
    for part in text.split(","):
        age_text, sep, every_text = part.strip().partition(":")
        if not sep:
            raise PolicyError(f"cannot read tier {part.strip()!r}; a tier is AGE:EVERY, e.g. 1d:1m or 1h:all")
        try:
            age = parse_duration(age_text)
            every = None if every_text.strip() == "all" else parse_duration(every_text)
        except TimeError as exc:
            raise PolicyError(f"tier {part.strip()!r}: {exc}") from None
        if age <= 0 or (every is not None and every <= 0):
            raise PolicyError(f"tier {part.strip()!r}: durations must be more than zero")
        if tiers and age <= tiers[-1].age_ns:
            raise PolicyError(f"tier {part.strip()!r}: tiers go from the youngest to the oldest age")
        if tiers and every is not None and tiers[-1].every_ns is not None and every < tiers[-1].every_ns:
            raise PolicyError(f"tier {part.strip()!r}: older tiers keep fewer points, not more")
        if tiers and every is None and tiers[-1].every_ns is not None:
            raise PolicyError(f"tier {part.strip()!r}: 'all' can only follow 'all'")
        tiers.append(Tier(age, every))
    return tuple(tiers)


@dataclass(frozen=True, slots=True)
class PointRef:
    """What selection needs of a point: its seq, time, kind, and whether it is whole."""

    seq: int
    ts_ns: int
    kind: str
    whole: bool = True
    pinned: bool = False


def horizon_time(policy: Policy, now_ns: int) -> int | None:
    """The oldest time the policy keeps points from (None: no limit)."""
    if policy.keep_ns is not None:
        return now_ns - policy.keep_ns
    return now_ns - policy.tiers[-1].age_ns if policy.tiers else None


def select(points: Iterable[PointRef], policy: Policy, now_ns: int, *,
           horizon_ts: int | None = None) -> Selection | None:
    """What to keep now (None: nothing to fold). ``horizon_ts`` overrides the policy's (a size cap)."""
    pts = sorted(points, key=lambda p: (p.seq, p.ts_ns))
    if not pts:
        return None
    if horizon_ts is None:
        horizon_ts = horizon_time(policy, now_ns)
    all_start = now_ns
    if policy.tiers and policy.tiers[0].every_ns is None:
        all_start = now_ns - max(t.age_ns for t in policy.tiers if t.every_ns is None)
    elif not policy.tiers:
        all_start = horizon_ts if horizon_ts is not None else pts[0].ts_ns
    if horizon_ts is None:
        horizon_ts = pts[0].ts_ns
    # the horizon: the newest whole point at or before the horizon time
    h = None
    for p in pts:
        if p.ts_ns > horizon_ts:
            break
        if p.whole:
            h = p
    if h is None:
        return None
    # the fold: the newest point at or before the start of the "keep everything" age
    fold = None
    for p in pts:
        if p.ts_ns > max(all_start, h.ts_ns):
            break
        fold = p
    assert fold is not None
    kept: set[int] = {h.seq, fold.seq}
    buckets: dict[tuple[int, int], int] = {}
    for p in pts:
        if p.seq > fold.seq:
            break
        if p.pinned:
            kept.add(p.seq)
        if p.seq < h.seq:
            continue
        if p.kind in MARK_KINDS or p.kind in _WINDOW_KINDS:
            kept.add(p.seq)
            continue
        tier = _tier_for(policy.tiers, now_ns - p.ts_ns)
        if tier is None:
            continue
        if tier.every_ns is None:
            kept.add(p.seq)
        else:
            buckets[(tier.age_ns, p.ts_ns // tier.every_ns)] = p.seq  # the newest point of the bucket wins
    kept.update(buckets.values())
    return Selection(h.seq, h.ts_ns, fold.seq, tuple(sorted(kept)))


def folds_more(sel: Selection, previous: Selection | None) -> bool:
    """Whether ``sel`` would drop anything ``previous`` (the last compaction) kept."""
    if previous is None:
        return sel.fold_seq > 0 or sel.kept != (0,)
    if sel.fold_seq > previous.fold_seq:
        return True
    return set(sel.kept) != {s for s in previous.kept if s <= sel.fold_seq}


def _tier_for(tiers: tuple[Tier, ...], age_ns: int) -> Tier | None:
    """The tier a point of this age falls in; past the oldest tier, the oldest's spacing."""
    if not tiers:
        return None
    for t in tiers:
        if age_ns < t.age_ns:
            return t
    return tiers[-1]
