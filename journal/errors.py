"""Errors the journal raises.

Every one of them carries a message fit to print on one line after
``cdp: ``: the CLI and the TUI show ``str(exc)`` and nothing else, so the
message must say what is wrong and, where it can, what to do.
"""

from __future__ import annotations


class JournalError(Exception):
    """Base of every error a journal user is expected to handle."""


class NotAJournal(JournalError):
    """The path does not hold a journal (or is not readable)."""


class UnsupportedVersion(JournalError):
    """The journal was written by a schema this code does not read."""


class DeviceMismatch(JournalError):
    """The journal protects another device than the one given."""


class JournalBusy(JournalError):
    """Another process holds the journal's writer lock."""


class JournalFull(JournalError):
    """The journal's filesystem (or its index's map) has no room for the batch in hand."""


class NotWhole(JournalError):
    """The asked-for time lies in an overflow window that is not resynced."""


class CorruptJournal(JournalError):
    """A record failed its CRC-32C or the index points at nothing valid."""


class OutOfRange(JournalError):
    """A time, sequence number or device range outside what the journal holds."""


#: The way out of a damaged index, said by every error that finds one.
REINDEX_HINT = "run 'cdp verify', then 'cdp reindex' to rebuild the index from the segments"
