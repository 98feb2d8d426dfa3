"""Errors as the TUI shows them: one line, never a traceback."""

from __future__ import annotations

from cdp.errors import CdpError
from journal.errors import JournalError
from journal.timespec import TimeError


def describe_error(exc: BaseException) -> str:
    """One printable line for any error a worker meets."""
    if isinstance(exc, (JournalError, TimeError, CdpError)):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
