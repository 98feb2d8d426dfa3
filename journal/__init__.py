"""The cdp journal: payload segments plus an LMDB index, read at any time.

``Journal`` is the one entry point for the writer and for readers; records,
points and errors are shared with the drain service and the user
interfaces. Restore and verify are functions over the journal's read
surface (:class:`journal.reader.JournalReader`), each owning its results.
"""

from journal.errors import JournalError
from journal.journal import Journal, device_size
from journal.points import OverflowWindow
from journal.reader import JournalInfo, JournalReader, JournalStats, RecordInfo
from journal.records import Point, Record, RecordFlag, RecordType
from journal.restore import Cancelled, RestoreResult, restore_to
from journal.verify import Problem, VerifyReport, verify_journal

__all__ = [
    "Cancelled", "Journal", "JournalError", "JournalInfo", "JournalReader", "JournalStats", "OverflowWindow", "Point",
    "Problem", "Record", "RecordFlag", "RecordType", "RecordInfo", "RestoreResult", "VerifyReport",
    "device_size", "restore_to", "verify_journal",
]
