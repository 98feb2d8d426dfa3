"""`cdp run`: the drain service, ring to journal, until told to stop.

A thin shell over :func:`cdp.service.drain`: it turns SIGTERM and SIGINT
into the service's stop event (a clean stop finishes the batch in hand, so
nothing taken from the ring is lost) and reports how the run ended. It
must stay importable on a minimal guest: nothing here loads the TUI.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cdp.commands._common import add_verb, existing_journal_path

ORDER = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp run`."""
    p = add_verb(
        subparsers, "run", cmd_run, help="drain the write ring into the journal (the service)",
        description="Move every write the filter (or the simulator) put in the ring into the\n"
                    "journal, in batches made durable before the ring space is released.\n"
                    "Runs until SIGTERM or Ctrl-C (a clean stop, exit 0), or with\n"
                    "--until-detached until the device is detached and the ring is empty.\n"
                    "Killing it is safe too: a restart resumes where the journal ends, with\n"
                    "nothing lost and nothing twice. Writes dropped while the ring was full are\n"
                    "copied back from the device (--device) to close the overflow window.\n"
                    "Progress is published for 'cdp status' and the TUI.",
        epilog="examples:\n"
               "  cdp run --journal /var/lib/cdp/sdb --ring /dev/cdp/sdb --device /dev/sdb\n"
               "  cdp run --journal ./j --ring ./ring --until-detached    # a simulated device")
    p.add_argument("--ring", "-r", metavar="PATH", required=True,
                   help="the ring: the filter's character device or a ring file")
    p.add_argument("--device", "-d", metavar="PATH", default=None,
                   help="the protected device, read to resync overflow ranges "
                        "(default: the device the journal was made from)")
    p.add_argument("--until-detached", action="store_true",
                   help="exit 0 once the producer has detached and the ring is drained")
    p.add_argument("--metrics", metavar="ADDR:PORT", default=None,
                   help="serve Prometheus metrics (lag, newest point, filesystem fill, drops: "
                        "what 'cdp status --check' judges) at http://ADDR:PORT/metrics; "
                        "port 0 picks a free one, shown on stderr")


def cmd_run(args: argparse.Namespace) -> int:
    """Drain until stopped; SIGTERM/SIGINT set the stop event, a second one aborts."""
    return run_service(existing_journal_path(args), args.ring, device=args.device,
                       until_detached=args.until_detached, metrics=args.metrics)


def run_service(path: Path, ring: str, *, device: str | None, until_detached: bool,
                metrics: str | None = None) -> int:
    """The drain service in the foreground, reported on stderr when it ends (also `cdp attach --run`)."""
    from cdp import service
    from journal.units import NS, format_bytes, format_duration

    on_health = None
    if metrics is not None:
        on_health = _serve_metrics(metrics, path)

    stop = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second request: stop now, the journal stays consistent
        signals.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    started = time.monotonic()
    try:
        result = service.drain(path, ring, device_path=device, until_detached=until_detached, stop=stop,
                               handle_signals=False, on_health=on_health)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    elapsed = time.monotonic() - started
    why = f"stopped by {signal.Signals(signals[0]).name}" if signals else "ring detached and drained"
    problems = f"; {len(result.problems)} problem(s) reported above" if result.problems else ""
    print(f"cdp: run: {why} after {format_duration(int(elapsed * NS))}: {result.records} records "
          f"({format_bytes(result.bytes)}) in {result.batches} batches, journal at seq "
          f"{result.last_journal_seq}{problems}", file=sys.stderr)
    return 0


def _serve_metrics(listen: str, path: Path) -> Any:
    """Start the Prometheus endpoint; returns what the service feeds each Health to."""
    from cdp.errors import CdpError, UsageError

    try:
        from cdp.metrics import parse_listen, serve
    except ImportError as exc:
        raise CdpError(f"--metrics needs the prometheus-client package ({exc})") from None
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise UsageError(f"--metrics: {exc}") from None
    try:
        collector, url = serve(listen, str(path))
    except OSError as exc:
        raise CdpError(str(exc.strerror or exc)) from None
    print(f"cdp: run: metrics at {url}", file=sys.stderr, flush=True)
    return collector.update
