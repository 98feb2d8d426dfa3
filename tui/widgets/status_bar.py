"""The status bar: what the journal holds and whether the service is keeping up."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.format import fmt_bytes, fmt_count, fmt_duration, fmt_rate, fmt_ts
from tui.model import StatusSnapshot


class StatusBar(Static):
    """Two lines: the counters, then a plain warning when something needs attention."""

    def show(self, snap: StatusSnapshot, now_ns: int) -> None:
        """Render one refresh; ``now_ns`` is the app's clock (fixed in tests)."""
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(snap.device, style="bold")
        parts = [
            f"journal {fmt_bytes(snap.disk_bytes)}",
            f"{fmt_count(snap.records)} records",
            f"{fmt_bytes(snap.data_bytes)} data",
        ]
        if snap.running:
            parts.append("lag " + (fmt_duration(snap.lag_ns) if snap.lag_ns is not None else "?")
                         + (f" / {fmt_bytes(snap.lag_bytes)}" if snap.lag_bytes is not None else ""))
            parts.append(fmt_rate(snap.rate_bps) if snap.rate_bps is not None else "rate ?")
            parts.append(f"ring {snap.ring_fill * 100:.0f}%" if snap.ring_fill is not None else "ring ?")
        for part in parts:
            line.append("  │  ", style="dim")
            line.append(part)
        line.append("  │  ", style="dim")
        line.append(fmt_ts(now_ns)[11:19], style="dim")
        warnings = []
        if snap.overflow:
            warnings.append("OVERFLOW: writes were dropped and not yet resynced; newer points are not whole")
        if not snap.running:
            warnings.append(f"service not running ({snap.stopped_why}): showing the journal as it is")
        text = line
        if warnings:
            text = Text("\n").join([line, Text("  ".join(warnings), no_wrap=True, overflow="ellipsis")])
        self.set_class(bool(warnings), "-warning")
        self.set_class(snap.overflow, "-overflow")
        self.update(text)
