"""Time and size units, and how cdp writes times, sizes, rates and durations for people.

One home for the nanosecond constant and for every formatter the CLI and
the TUI share, so `cdp status` and the TUI's status bar say the same thing
the same way. It lives in the journal package because both user interfaces
import the journal and nothing else in common (the TUI must not load the
CLI or the drain service), and because the journal's own one-line errors
name times too. Standard library only: it runs in the minimal VM guest.

Times are shown in the local zone, the zone a user types TIMEs in
(:mod:`journal.timespec`): :func:`format_ts` is exact and parses back,
the shorter forms are for lists and axes.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

#: Nanoseconds per second: every timestamp in cdp is an integer count of ns since the epoch.
NS = 1_000_000_000
#: Nanoseconds per millisecond.
MS = 1_000_000

_SECOND = timedelta(seconds=1)
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


# ------------------------------------------------------------------- times


def format_ts(ts_ns: int) -> str:
    """ISO 8601 in the local zone with all nine fractional digits and the offset.

    The offset makes the text unambiguous, so ``parse_time(format_ts(t)) == t``
    always holds, in any zone and across DST changes.
    """
    secs, ns = divmod(ts_ns, NS)
    local = datetime.fromtimestamp(secs, timezone.utc).astimezone()
    return f"{local.strftime('%Y-%m-%dT%H:%M:%S')}.{ns:09d}{_fmt_offset(local)}"


def _fmt_offset(aware: datetime) -> str:
    off = aware.utcoffset() or timedelta(0)
    total = off // _SECOND
    sign = "-" if total < 0 else "+"
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")


def format_ts_ms(ts_ns: int) -> str:
    """Local wall time to the millisecond, for lists: '2026-03-01 14:05:09.123'."""
    secs, ns = divmod(ts_ns, NS)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(secs)) + f".{ns // MS:03d}"


def format_clock(ts_ns: int, span_ns: int) -> str:
    """A time axis label whose precision follows the span shown."""
    secs, ns = divmod(ts_ns, NS)
    if span_ns >= 2 * 86400 * NS:
        return time.strftime("%m-%d %H:%M", time.localtime(secs))
    text = time.strftime("%H:%M:%S", time.localtime(secs))
    if span_ns < 20 * NS:
        text += f".{ns // MS:03d}"
    return text


def format_duration(ns: int) -> str:
    """A span for people: '350 ms', '12.5 s', '3 m 20 s', '2 h 5 m', '4 d 1 h'.

    The unit letters are those of the relative TIME grammar (``-5m``, ``-2h``).
    """
    if ns < NS:
        return f"{ns / MS:.0f} ms"
    secs = ns / NS
    if secs < 60:
        return f"{secs:.1f} s"
    whole = int(secs)
    if whole < 3600:
        return f"{whole // 60} m {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} m"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


# ------------------------------------------------------------------- sizes


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB': binary units, exact below 1 KiB."""
    value = float(n)
    for unit in _BYTE_UNITS:
        if abs(value) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_s: float) -> str:
    """3145728.0 -> '3.0 MiB/s'."""
    return f"{format_bytes(bytes_per_s)}/s"


def format_count(n: int) -> str:
    """1234567 -> '1,234,567'."""
    return f"{n:,}"


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (C0, DEL, C1) as ``\\xNN``.

    Mark names come from the kernel, the ring or a user; an escape sequence
    in one must never reach the terminal as one.
    """
    return "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" if ord(ch) < 256
                   else f"\\u{ord(ch):04x}" for ch in text)
