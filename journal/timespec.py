"""TIME: how a user names a moment, parsed to exact nanoseconds.

The grammar (also printed by ``cdp help`` texts, see :data:`TIME_HELP`):

- ISO 8601: ``2026-03-01T14:05:09.123456789Z``; the date is required, the
  time may stop at minutes or seconds, up to nine fractional digits (``.``
  or ``,``), ``T`` or a space between date and time, and a zone that is
  ``Z``, an offset (``+01:00``, ``+0100``, ``+01``) or nothing (local time).
  A date alone means local midnight.
- ``@EPOCH[.fraction]``: seconds since 1970-01-01 UTC, e.g. ``@1767225600.5``.
- Relative to now: ``-90s``, ``-5m``, ``-2h``, ``-1d``, compounds such as
  ``-1h30m``, fractions of seconds such as ``-1.5s``; and ``now``.
- ``mark:NAME``: the time of the mark called NAME (looked up by the caller).

A TIME that could mean two moments (a local time repeated when the clocks
go back) or none (a local time skipped when they go forward) is an error,
never a guess; so is anything not in the grammar. Every error is a
:class:`TimeError` (a ValueError) whose message is one line.

Arithmetic is on integers all the way: a float cannot hold a nanosecond
timestamp of today exactly (2**53 ns is only about 104 days). The way back,
a timestamp written so that it parses to the same nanosecond, is
:func:`journal.units.format_ts`. Both user interfaces (the CLI and the TUI)
parse TIMEs here, so they accept exactly the same ones.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from journal.records import MARK_KINDS, Point, PointKind
from journal.units import NS, format_ts

if TYPE_CHECKING:
    from journal.reader import JournalReader

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)

TIME_HELP = """\
TIME is one of:
  2026-03-01T14:05:09.123456789Z   ISO 8601, up to 9 fractional digits; zone Z,
  2026-03-01 14:05:09+01:00        an offset, or none for local time; a date
  2026-03-01T14:05                 alone is local midnight
  @1767225600.25                   seconds since the Unix epoch (UTC)
  -90s  -5m  -2h  -1d  -1h30m      that long before now; 'now' is now
  mark:NAME                        the moment of the mark called NAME
A local time that happens twice (clocks going back) or never (clocks going
forward) is refused: add a zone offset to say which one you mean."""

_ISO = re.compile(
    r"""
    (?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})
    (?:
        [Tt ]
        (?P<hour>\d{2}):(?P<minute>\d{2})
        (?::(?P<second>\d{2})(?:[.,](?P<frac>\d+))?)?
        (?P<zone>[Zz]|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?
    )?
    """,
    re.VERBOSE | re.ASCII,
)
_EPOCH_RE = re.compile(r"@(?P<secs>\d+)(?:\.(?P<frac>\d+))?", re.ASCII)
_REL_RE = re.compile(r"-(?P<body>(?:\d+(?:\.\d+)?[dhms])+)", re.ASCII)
_REL_PART = re.compile(r"(\d+)(?:\.(\d+))?([dhms])", re.ASCII)
_UNIT_NS = {"d": 86400 * NS, "h": 3600 * NS, "m": 60 * NS, "s": NS}
_TIME_ONLY = re.compile(r"\d{1,2}:\d{2}(:\d{2}([.,]\d+)?)?([Zz]|[+-].*)?", re.ASCII)

MarkLookup = Callable[[str], "int | None"]


class TimeError(ValueError):
    """A TIME that cannot be read, or that names no moment or two; the message is one line."""


def mark_lookup(journal: JournalReader) -> MarkLookup:
    """The ``marks`` callback of :func:`parse_time` over a journal's marks, both kinds.

    Two marks with one name make ``mark:NAME`` ambiguous: that is an error,
    not a guess at which one was meant (the CLI and the TUI alike).
    """

    def lookup(name: str) -> int | None:
        point = find_mark(journal, name)
        return point.ts_ns if point is not None else None

    return lookup


def find_mark(journal: JournalReader, name: str) -> Point | None:
    """The one mark named ``name``, or None; two with that name is an error, not a guess."""
    found = [p for p in journal.points(kinds=MARK_KINDS) if p.name == name]
    if len(found) > 1:
        times = ", ".join(format_ts(p.ts_ns) for p in found[:3])
        raise TimeError(f"{len(found)} marks are named {name!r} ({times}{', ...' if len(found) > 3 else ''}); "
                        "give the time of the one you mean")
    return found[0] if found else None


def mark_position(journal: JournalReader, text: str | None) -> Point | None:
    """For ``mark:NAME`` naming a MARK record, that point: a position among the writes, not a time.

    A MARK record sits at an exact place in the ring's order; a write
    journaled after it may carry the same nanosecond stamp (the producer
    clamps a clock that steps back), so restoring "at its time" could take
    that write in. A user mark is made by time and stays one (None here).
    """
    if text is None or not text.strip().startswith("mark:"):
        return None
    try:
        point = find_mark(journal, text.strip()[5:])
    except TimeError:
        return None  # parse_time reports it
    return point if point is not None and point.kind == PointKind.MARK else None


def parse_time(text: str, *, now_ns: int | None = None, marks: MarkLookup | None = None) -> int:
    """Turn a TIME (see the module docstring) into nanoseconds since the epoch.

    ``now_ns`` anchors relative times (default: the current clock), so a
    caller resolving several TIMEs can give them one "now". ``marks`` maps a
    mark name to its time, or None when there is no such mark.
    """
    raw = text
    text = text.strip()
    if not text:
        raise TimeError("empty TIME; see --help for the accepted forms")
    if text.startswith("mark:"):
        return _parse_mark(text[5:], marks)
    if text == "now":
        return time.time_ns() if now_ns is None else now_ns
    if text.startswith("@"):
        return _parse_epoch(text)
    if text.startswith("-"):
        return _parse_relative(text, now_ns)
    match = _ISO.fullmatch(text)
    if match:
        return _parse_iso(text, match)
    if _TIME_ONLY.fullmatch(text):
        raise TimeError(f"TIME {raw!r} has no date; write e.g. {time.strftime('%Y-%m-%d')}T{text}")
    raise TimeError(f"cannot read TIME {raw!r}; expected ISO 8601, @EPOCH, -90s/-5m/-2h/-1d or mark:NAME")


def _fraction_ns(frac: str | None, text: str) -> int:
    """'25' -> 250_000_000; more than nine digits would be finer than a nanosecond."""
    if not frac:
        return 0
    if len(frac) > 9:
        raise TimeError(f"TIME {text!r} has {len(frac)} fractional digits; at most 9 (nanoseconds)")
    return int(frac.ljust(9, "0"))


def _parse_mark(name: str, marks: MarkLookup | None) -> int:
    if not name:
        raise TimeError("mark: needs a name, e.g. mark:before-upgrade")
    if marks is None:
        raise TimeError(f"cannot look up mark {name!r} here")
    ts = marks(name)
    if ts is None:
        raise TimeError(f"no mark named {name!r} (see 'cdp points --marks')")
    return ts


def _parse_epoch(text: str) -> int:
    match = _EPOCH_RE.fullmatch(text)
    if not match:
        raise TimeError(f"cannot read TIME {text!r}; @EPOCH is @ then seconds, e.g. @1767225600.25")
    return int(match["secs"]) * NS + _fraction_ns(match["frac"], text)


def _parse_relative(text: str, now_ns: int | None) -> int:
    match = _REL_RE.fullmatch(text)
    if not match:
        raise TimeError(f"cannot read TIME {text!r}; a relative time looks like -90s, -5m, -2h, -1d or -1h30m")
    now = time.time_ns() if now_ns is None else now_ns
    return now - _span_ns(match["body"], text, "TIME")


def parse_duration(text: str) -> int:
    """A DURATION (``5s``, ``1.5s``, ``90m``, ``1h30m``, ``7d``) in nanoseconds.

    The units of relative TIMEs, without the minus sign; a bare number is
    seconds. Errors are :class:`TimeError` with a one-line message.
    """
    body = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", body, re.ASCII):
        body += "s"
    if not _REL_RE.fullmatch("-" + body):
        raise TimeError(f"cannot read DURATION {text!r}; a duration looks like 30s, 5m, 2h, 7d or 1h30m")
    return _span_ns(body, text, "DURATION")


def _span_ns(body: str, text: str, what: str) -> int:
    """Nanoseconds of ``1h30m``-style text (``body``, already matched; ``text`` for errors)."""
    delta = 0
    seen: set[str] = set()
    for whole, frac, unit in _REL_PART.findall(body):
        if unit in seen:
            raise TimeError(f"{what} {text!r} names the unit {unit!r} twice")
        seen.add(unit)
        if frac and unit != "s":
            raise TimeError(f"{what} {text!r}: only seconds may have a fraction (e.g. 1.5s)")
        delta += int(whole) * _UNIT_NS[unit] + _fraction_ns(frac, text)
    return delta


def _parse_iso(text: str, m: re.Match[str]) -> int:
    try:
        naive = datetime(int(m["year"]), int(m["month"]), int(m["day"]),
                         int(m["hour"] or 0), int(m["minute"] or 0), int(m["second"] or 0))
    except ValueError as exc:
        raise TimeError(f"TIME {text!r} is not a real date and time ({exc})") from None
    frac = _fraction_ns(m["frac"], text)
    zone = m["zone"]
    if zone is None:
        aware = _local(naive, text)
    else:
        aware = naive.replace(tzinfo=_offset(zone, text))
    return ((aware - _EPOCH) // _SECOND) * NS + frac


def _offset(zone: str, text: str) -> timezone:
    if zone in ("Z", "z"):
        return timezone.utc
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    hours, minutes, seconds = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise TimeError(f"TIME {text!r} has an impossible zone offset {zone!r}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes, seconds=seconds))


def _local(naive: datetime, text: str) -> datetime:
    """The local-zone moment of a wall-clock time, if there is exactly one."""
    try:
        early = naive.replace(fold=0).astimezone()
        late = naive.replace(fold=1).astimezone()
    except (OverflowError, OSError):
        raise TimeError(f"local TIME {text!r} is outside what this system's clock can express") from None
    if early.utcoffset() == late.utcoffset():
        return early
    # The two readings differ: the wall time happens either twice or never.
    if _roundtrip(early, naive) and _roundtrip(late, naive):
        raise TimeError(
            f"local TIME {text!r} happens twice (clocks went back); add an offset, e.g. "
            f"{_iso_seconds(early)} or {_iso_seconds(late)}")
    raise TimeError(f"local TIME {text!r} does not exist (clocks went forward); add an offset or pick another time")


def _roundtrip(aware: datetime, naive: datetime) -> bool:
    """Whether the instant ``aware`` reads as ``naive`` on the local wall clock."""
    secs = (aware - _EPOCH) // _SECOND
    return datetime.fromtimestamp(secs).replace(fold=0) == naive


def _iso_seconds(aware: datetime) -> str:
    secs = (aware - _EPOCH) // _SECOND
    return datetime.fromtimestamp(secs, timezone.utc).astimezone().isoformat()
