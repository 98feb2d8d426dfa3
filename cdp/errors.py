"""The one error type the `cdp` command shows to users.

A :class:`CdpError` means "the user asked for something that cannot be
done as asked": the top level of :mod:`cdp.cli` prints ``cdp: VERB:
message`` on one line and exits with :attr:`CdpError.exit_code`. Errors of
the journal and the ring library (``JournalError``, ``RingError``) are
shown the same way, through :func:`one_line`; anything else is a bug.
"""

from __future__ import annotations


class CdpError(Exception):
    """A one-line, user-facing failure of a `cdp` subcommand."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CdpError):
    """The command line itself is wrong (exit status 2, like argparse)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


def one_line(exc: BaseException) -> str:
    """The message of an error on one line (OSErrors as ``path: reason``)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else None
        text = f"{where}: {exc.strerror}" if where is not None else exc.strerror
    else:
        text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__
