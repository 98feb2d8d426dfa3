"""Progress bars for long verbs (init, verify, restore): a bar on a terminal, silence elsewhere.

Library calls report progress as ``progress(done_bytes, total_bytes)``;
:func:`progress_bar` turns that callback into a ``rich`` bar on stderr
when stderr is a terminal, so pipes, logs and ``--json`` output stay
clean. ``rich`` is imported only when a bar is really drawn, which keeps
``cdp`` fast to start and usable where only the journal is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[int, int], None]


def _ignore(_done: int, _total: int) -> None:
    """The callback used when no bar is shown."""


@contextmanager
def progress_bar(description: str, *, enabled: bool | None = None) -> Iterator[Progress]:
    """Yield a ``progress(done, total)`` callback drawing a byte-count bar.

    ``enabled`` defaults to whether stderr is a terminal. The bar is removed
    when the block ends, successful or not, so the verb's own summary line
    is what stays on screen.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
