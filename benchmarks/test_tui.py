"""TUI speed on a journal of a million records (issue 5: "Scale").

- open: from starting the app to the main screen showing the first page of
  points, the timeline and the status bar; target < 1 s;
- key to repaint: from a key press to the screen composed again with its
  effect (a worker's result included, for keys that start one); target
  < 100 ms at the 95th percentile.

The app runs headless (Pilot); "repainted" means the whole screen has been
composited again after the key's effects landed, which is the work a real
terminal frame costs short of writing bytes to the tty.

The journal is built once per session with ``Journal.append`` in batches of
8192: ``CDP_BENCH_SCALE`` shrinks it for a smoke run.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from pathlib import Path

import pytest
from textual import events

from benchmarks.conftest import figure, scaled
from journal import Journal, Record, RecordType
from tui.app import CdpApp
from tui.screens.detail import DetailScreen
from tui.screens.main import MainScreen
from tui.widgets.points_list import PointsList
from tui.widgets.timeline import Timeline

NS = 1_000_000_000
FLUSH_EVERY = 100
OPEN_TARGET_S = 1.0
KEY_TARGET_S = 0.1
CHARS = {"plus": "+", "minus": "-", "left_square_bracket": "[", "right_square_bracket": "]",
         "enter": "\r", "escape": "\x1b"}


def build_million(path: Path, records: int) -> Path:
    """``records`` records (writes of 512 B or 4 KiB, a flush every 100, a mark every 5000), 1 ms apart."""
    device = 1 << 30
    rng = random.Random(11)
    payload = rng.randbytes(8192)
    with Journal.create(path, device_bytes=device) as j:
        ts0 = j.info.created_ns + NS
        seq = 0
        batch: list[Record] = []
        while seq < records:
            seq += 1
            ts = ts0 + seq * 1_000_000
            if seq % FLUSH_EVERY == 0:
                batch.append(Record(seq, ts, RecordType.FLUSH))
            elif seq % 5_000 == 0:
                batch.append(Record(seq, ts, RecordType.MARK, data=f"mark-{seq}".encode()))
            else:
                size = 512 * rng.choice((1, 1, 1, 8))
                batch.append(Record(seq, ts, RecordType.WRITE, 0, rng.randrange(device // size) * size, size,
                                    memoryview(payload)[:size]))
            if len(batch) == 8192:
                j.append(batch)
                batch = []
        if batch:
            j.append(batch)
    return path


@pytest.fixture(scope="session")
def million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A million-record journal (CDP_BENCH_SCALE shrinks it), built once per session."""
    return build_million(tmp_path_factory.mktemp("tui-million") / "j", scaled(1_000_000, 20_000))


def _ready(app: CdpApp) -> bool:
    screen = app.screen
    if not isinstance(screen, MainScreen):
        return False
    tables, timelines = screen.query(PointsList), screen.query(Timeline)
    return bool(tables and tables.first().points and timelines and timelines.first().data is not None
                and screen.query_one("#status").render())


async def _until(pilot, condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise AssertionError(f"the app never got there {what}")
        await asyncio.sleep(0.001)
    await pilot.pause()


def _repaint(app: CdpApp) -> None:
    """Composite the whole screen, as a frame for the terminal would."""
    app.screen._compositor.render_strips()


def test_open_million_records(benchmark, million: Path) -> None:
    times: list[float] = []

    def open_once() -> None:
        async def run() -> None:
            start = time.perf_counter()
            app = CdpApp(million, status_interval=3600)
            async with app.run_test(size=(120, 40)) as pilot:
                await _until(pilot, lambda: _ready(app))
                _repaint(app)
                times.append(time.perf_counter() - start)

        asyncio.run(run())

    benchmark.pedantic(open_once, rounds=5, iterations=1, warmup_rounds=1)
    median = statistics.median(times[1:] if len(times) > 1 else times)
    figure(f"tui: open a journal of {Journal.open(million, readonly=True).stats().records:,} records to a "
           f"full first screen: median {median * 1000:.0f} ms (target < {OPEN_TARGET_S * 1000:.0f} ms)")
    benchmark.extra_info["open_median_s"] = median


def test_key_to_repaint_million_records(benchmark, million: Path) -> None:
    latencies: dict[str, list[float]] = {}

    async def press(pilot, key: str, done) -> None:
        # The key goes in as the terminal driver would send it; Pilot.press would add its own
        # waits for idle (tens of ms) that are not the app's latency.
        start = time.perf_counter()
        pilot.app.post_message(events.Key(key, CHARS.get(key, key if len(key) == 1 else None)))
        while not done():
            if time.perf_counter() - start > 30:
                raise AssertionError(f"the app never got there after {key}")
            await asyncio.sleep(0.0005)
        _repaint(pilot.app)
        latencies.setdefault(key, []).append(time.perf_counter() - start)
        await pilot.pause()

    async def session() -> None:
        app = CdpApp(million, status_interval=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: _ready(app))
            screen = app.screen
            table = screen.query_one(PointsList)
            timeline = screen.query_one(Timeline)
            for _ in range(40):
                row = table.cursor_row
                await press(pilot, "down", lambda row=row: table.cursor_row == row + 1)
            for _ in range(15):
                # paging down runs into the end of what is loaded: the next page comes in a worker
                row = table.cursor_row
                await press(pilot, "pagedown", lambda row=row: (table.cursor_row > row or table.done)
                            and not table.loading)
            for key in ("plus", "plus", "plus", "left_square_bracket", "right_square_bracket", "minus",
                        "minus", "minus") * 3:
                before = timeline.data
                await press(pilot, key, lambda before=before: timeline.data is not before)
            for _ in range(3):
                for _ in range(2):
                    marks = screen.marks_only
                    await press(pilot, "f", lambda marks=marks: screen.marks_only != marks and not table.loading)
                await press(pilot, "enter", lambda: isinstance(app.screen, DetailScreen)
                            and app.screen.shown_block is not None)
                await press(pilot, "escape", lambda: app.screen is screen)

    benchmark.pedantic(lambda: asyncio.run(session()), rounds=1, iterations=1)
    every = sorted(t for ts in latencies.values() for t in ts)
    p95 = every[int(len(every) * 0.95) - 1]
    parts = ", ".join(f"{k} {statistics.median(v) * 1000:.0f}/{max(v) * 1000:.0f}" for k, v in latencies.items())
    figure(f"tui: key to repaint on {scaled(1_000_000, 20_000):,} records: p95 {p95 * 1000:.0f} ms, "
           f"max {every[-1] * 1000:.0f} ms over {len(every)} keys (target < {KEY_TARGET_S * 1000:.0f} ms); "
           f"median/max ms per key: {parts}")
    benchmark.extra_info["key_p95_s"] = p95
