"""A journal held open for writing by another process, as `cdp run` holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOLD = """\
import sys
from journal import Journal
with Journal.open(sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.read()
"""


@contextmanager
def holding_writer(path: Path | str) -> Iterator[int]:
    """Hold the journal's writer lock in a child process for the body; yields the child's pid.

    A process of its own, not this one: LMDB must not be opened twice in
    one process, and the lock is what says a service runs.
    """
    child = subprocess.Popen([sys.executable, "-c", _HOLD, os.fspath(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready", "the writer did not start"
        yield child.pid
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)
