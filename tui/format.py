"""How the TUI writes times, sizes and rates: short, aligned, unambiguous enough.

Times are shown in the local zone (the zone a user types TIMEs in) to the
millisecond; the point list adds nothing else, the detail view shows the
full nanosecond ISO form the CLI accepts back.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

NS = 1_000_000_000

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; exact below 1 KiB."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_rate(bytes_per_s: float) -> str:
    return f"{fmt_bytes(bytes_per_s)}/s"


def fmt_count(n: int) -> str:
    """1234567 -> '1,234,567'."""
    return f"{n:,}"


def fmt_ts(ts_ns: int) -> str:
    """Local wall time to the millisecond: '2026-03-01 14:05:09.123'."""
    secs, ns = divmod(ts_ns, NS)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(secs)) + f".{ns // 1_000_000:03d}"


def fmt_ts_full(ts_ns: int) -> str:
    """ISO 8601 with nine fractional digits and the zone offset (parses back exactly)."""
    secs, ns = divmod(ts_ns, NS)
    local = datetime.fromtimestamp(secs, UTC).astimezone()
    offset = local.strftime("%z")
    return f"{local.strftime('%Y-%m-%dT%H:%M:%S')}.{ns:09d}{offset[:3]}:{offset[3:]}"


def fmt_clock(ts_ns: int, span_ns: int) -> str:
    """A time axis label whose precision follows the span shown."""
    secs, ns = divmod(ts_ns, NS)
    if span_ns >= 2 * 86400 * NS:
        return time.strftime("%m-%d %H:%M", time.localtime(secs))
    text = time.strftime("%H:%M:%S", time.localtime(secs))
    if span_ns < 20 * NS:
        text += f".{ns // 1_000_000:03d}"
    return text


def fmt_duration(ns: int) -> str:
    """A span for people: '350 ms', '12.5 s', '3 m 20 s', '2 h 5 m', '4 d 1 h'."""
    if ns < NS:
        return f"{ns / 1_000_000:.0f} ms"
    secs = ns / NS
    if secs < 60:
        return f"{secs:.1f} s"
    whole = int(secs)
    if whole < 3600:
        return f"{whole // 60} m {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} m"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"
