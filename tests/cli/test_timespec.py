"""TIME parsing and formatting: exact nanoseconds, every zone, no guessing."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from journal.timespec import parse_time
from journal.units import NS, format_ts

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns"]
# 1970 .. 2200: everything a journal can hold, well inside time_t and datetime.
TS = st.integers(min_value=0, max_value=7_258_118_400 * NS - 1)


def _set_tz(name: str) -> None:
    os.environ["TZ"] = name
    time.tzset()


@pytest.fixture
def zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test in the local zone ``request.param``; restore the old one afterwards."""
    name = request.param
    if name != "UTC" and not Path("/usr/share/zoneinfo", name).exists():
        pytest.skip(f"no tzdata for {name}")
    old = os.environ.get("TZ")
    _set_tz(name)
    try:
        yield name
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.parametrize("zone", ZONES, indirect=True)
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ts=TS)
def test_format_then_parse_is_exact_in_every_zone(zone: str, ts: int) -> None:
    assert parse_time(format_ts(ts)) == ts


@given(ts=TS, offset_min=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
       digits=st.integers(min_value=0, max_value=9), sep=st.sampled_from(["T", " "]),
       colon=st.booleans())
def test_iso_with_offset_matches_an_independent_computation(ts: int, offset_min: int, digits: int,
                                                            sep: str, colon: bool) -> None:
    secs, ns = divmod(ts, NS)
    ns -= ns % (10 ** (9 - digits))  # what `digits` fractional digits can say
    off = timedelta(minutes=offset_min)
    wall = datetime.fromtimestamp(secs, timezone.utc).astimezone(timezone(off)).replace(tzinfo=None)
    sign = "-" if offset_min < 0 else "+"
    hh, mm = divmod(abs(offset_min), 60)
    zone = f"{sign}{hh:02d}:{mm:02d}" if colon else f"{sign}{hh:02d}{mm:02d}"
    frac = f".{ns:09d}"[: digits + 1] if digits else ""
    text = wall.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + zone
    expected = (calendar.timegm(wall.timetuple()) - offset_min * 60) * NS + ns
    assert parse_time(text) == expected


@given(secs=st.integers(min_value=0, max_value=10**11), frac=st.text("0123456789", min_size=0, max_size=9))
def test_epoch_is_exact(secs: int, frac: str) -> None:
    text = f"@{secs}" + (f".{frac}" if frac else "")
    assert parse_time(text) == secs * NS + (int(frac.ljust(9, "0")) if frac else 0)


@given(now=TS, d=st.integers(0, 30), h=st.integers(0, 48), m=st.integers(0, 200), s=st.integers(0, 10**5))
def test_relative_times_subtract_exactly(now: int, d: int, h: int, m: int, s: int) -> None:
    parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
    text = "-" + "".join(f"{n}{u}" for n, u in parts if n)
    assume(text != "-")
    assert parse_time(text, now_ns=now) == now - ((d * 24 + h) * 3600 + m * 60 + s) * NS


@pytest.mark.parametrize("text,delta", [("-90s", 90 * NS), ("-5m", 300 * NS), ("-2h", 7200 * NS),
                                        ("-1d", 86400 * NS), ("-1h30m", 5400 * NS),
                                        ("-1.5s", 1_500_000_000), ("-0.000000001s", 1)])
def test_relative_examples(text: str, delta: int) -> None:
    assert parse_time(text, now_ns=10**18) == 10**18 - delta


def test_now_and_marks() -> None:
    assert parse_time("now", now_ns=42) == 42
    marks = {"before-upgrade": 123}.get
    assert parse_time("mark:before-upgrade", marks=marks) == 123
    with pytest.raises(ValueError, match="no mark named 'nope'"):
        parse_time("mark:nope", marks=marks)
    with pytest.raises(ValueError, match="needs a name"):
        parse_time("mark:", marks=marks)


@pytest.mark.parametrize("zone", ["Europe/Berlin"], indirect=True)
def test_local_time_in_a_fold_is_ambiguous(zone: str) -> None:
    # 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
    with pytest.raises(ValueError, match="happens twice") as info:
        parse_time("2026-10-25T02:30")
    assert "\n" not in str(info.value)
    # With an offset it is one moment, an hour apart.
    first = parse_time("2026-10-25T02:30+02:00")
    second = parse_time("2026-10-25T02:30+01:00")
    assert second - first == 3600 * NS


@pytest.mark.parametrize("zone", ["Europe/Berlin"], indirect=True)
def test_local_time_in_a_gap_does_not_exist(zone: str) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        parse_time("2026-03-29T02:30")
    assert parse_time("2026-03-29T03:30") == parse_time("2026-03-29T01:30Z")


@pytest.mark.parametrize("zone", ["Europe/Berlin"], indirect=True)
def test_local_time_without_zone_is_local(zone: str) -> None:
    assert parse_time("2026-07-01T12:00:00.5") == parse_time("2026-07-01T10:00:00.5Z")
    assert parse_time("2026-01-01") == parse_time("2025-12-31T23:00Z")


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("10:00", "no date"),
    ("10:00:00Z", "no date"),
    ("2026-01-01T00:00:00.1234567891Z", "at most 9"),
    ("@1.1234567891", "at most 9"),
    ("2026-02-30T00:00Z", "not a real date"),
    ("2026-01-01T24:00Z", "not a real date"),
    ("2026-01-01T00:00:60Z", "not a real date"),
    ("2026-01-01T00:00+24:00", "impossible zone offset"),
    ("yesterday", "cannot read"),
    ("-5", "relative time"),
    ("-5x", "relative time"),
    ("-1m1m", "twice"),
    ("-1.5m", "only seconds"),
    ("@-5", "@EPOCH"),
    ("2026-1-1", "cannot read"),
    ("1767225600", "cannot read"),
])
def test_bad_times_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_time(text, now_ns=0, marks=lambda _name: None)
    assert "\n" not in str(info.value)


@given(st.text(max_size=40))
def test_garbage_only_ever_raises_value_error(text: str) -> None:
    try:
        parse_time(text, now_ns=10**18, marks=lambda _name: None)
    except ValueError as exc:
        assert "\n" not in str(exc)


def test_format_has_nanoseconds_and_offset() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        assert format_ts(1_767_225_600_000_000_001) == "2026-01-01T00:00:00.000000001+00:00"
    finally:
        os.environ.pop("TZ", None)
        time.tzset()
