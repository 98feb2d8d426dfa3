"""Shared machinery for the benchmarks: ratios against a baseline in the same run.

Absolute speeds on a shared 2-core machine swing by tens of percent from one
minute to the next, so every figure that matters is a ratio: the baseline
(plain file appends, raw LMDB puts, `cp`) runs in pytest-benchmark's untimed
``setup`` right before each timed round of the subject, interleaved, and the
ratio of medians is reported at the end of the run.

``CDP_BENCH_SCALE`` (default 1) shrinks the data sizes for a quick smoke run
(CI uses a small scale with ``--benchmark-disable``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

SCALE = float(os.environ.get("CDP_BENCH_SCALE", "1"))


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` times the scale, at least ``minimum``."""
    return max(minimum, int(n * SCALE))


@dataclass
class Ratio:
    """One reported comparison."""

    name: str
    subject_s: list[float] = field(default_factory=list)
    baseline_s: list[float] = field(default_factory=list)
    units: float = 0.0  # work per round (bytes or records) for the throughput column
    unit_name: str = "B"
    baseline_name: str = ""
    target: float | None = None  # higher is better: subject speed / baseline speed

    @property
    def ratio(self) -> float:
        """Subject throughput over baseline throughput (>1: faster than baseline)."""
        return statistics.median(self.baseline_s) / statistics.median(self.subject_s)

    def line(self) -> str:
        rate = self.units / statistics.median(self.subject_s)
        base = self.units / statistics.median(self.baseline_s)
        unit = f"M{self.unit_name}/s"
        target = "" if self.target is None else f"  (target >= {self.target}x)"
        return (f"{self.name}: {self.ratio:.2f}x {self.baseline_name}{target}; "
                f"{rate / 1e6:.2f} {unit} vs {base / 1e6:.2f} {unit}")


RESULTS: list[Ratio] = []
FIGURES: list[str] = []


def compare(benchmark, ratio: Ratio, subject: Callable[[], None], baseline: Callable[[], None],
            rounds: int = 5, prepare: Callable[[], None] | None = None) -> Ratio:
    """Time ``subject`` with pytest-benchmark, ``baseline`` just before each round."""

    def setup() -> None:
        if prepare is not None:
            prepare()
        start = time.perf_counter()
        baseline()
        ratio.baseline_s.append(time.perf_counter() - start)

    def timed() -> None:
        start = time.perf_counter()
        subject()
        ratio.subject_s.append(time.perf_counter() - start)

    benchmark.pedantic(timed, setup=setup, rounds=rounds, iterations=1)
    RESULTS.append(ratio)
    benchmark.extra_info["ratio"] = round(ratio.ratio, 3)
    benchmark.extra_info["baseline"] = ratio.baseline_name
    return ratio


def figure(text: str) -> None:
    """Report a figure that is not a ratio (a latency, a rate)."""
    FIGURES.append(text)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS and not FIGURES:
        return
    terminalreporter.section("cdp ratios (same run)")
    for r in RESULTS:
        terminalreporter.write_line(r.line())
    for text in FIGURES:
        terminalreporter.write_line(text)
