"""The status bar: what the journal holds and whether the service is keeping up."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from journal.units import format_bytes, format_count, format_duration, format_rate, format_ts_ms
from tui.model.status import StatusSnapshot


class StatusBar(Static):
    """Two lines: the counters, then a plain warning when something needs attention."""

    def show(self, snap: StatusSnapshot, now_ns: int) -> None:
        """Render one refresh; ``now_ns`` is the app's clock (fixed in tests).

        Line one is the journal, line two the service's figures while it
        runs, then any warning: short lines that survive a narrow terminal.
        """
        sep = ("  │  ", "dim")
        journal = Text(no_wrap=True, overflow="ellipsis")
        journal.append(snap.device, style="bold")
        for part in (f"journal {format_bytes(snap.disk_bytes)}", f"{format_count(snap.records)} records",
                     f"{format_bytes(snap.data_bytes)} data"):
            journal.append(*sep)
            journal.append(part)
        journal.append(*sep)
        journal.append(format_ts_ms(now_ns)[11:19], style="dim")
        lines = [journal]
        if snap.running:
            service = Text("service  ", style="dim", no_wrap=True, overflow="ellipsis")
            service.append("lag " + (format_duration(snap.lag_ns) if snap.lag_ns is not None else "?")
                           + (f" / {format_bytes(snap.lag_bytes)}" if snap.lag_bytes is not None else ""), style="")
            service.append(*sep)
            service.append(format_rate(snap.rate_bps) if snap.rate_bps is not None else "rate ?", style="")
            service.append(*sep)
            service.append(f"ring {snap.ring_fill * 100:.0f}% full" if snap.ring_fill is not None else "ring ?",
                           style="")
            lines.append(service)
        if snap.overflow:
            lines.append(Text("OVERFLOW: writes were dropped and not yet resynced; newer points are not whole",
                              style="bold", no_wrap=True, overflow="ellipsis"))
        if not snap.running:
            lines.append(Text(f"service not running ({snap.stopped_why}): showing the journal as it is",
                              no_wrap=True, overflow="ellipsis"))
        self.set_class(snap.overflow or not snap.running, "-warning")
        self.set_class(snap.overflow, "-overflow")
        self.update(Text("\n").join(lines))
