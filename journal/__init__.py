"""The cdp journal: payload segments plus an LMDB index, read at any time.

``Journal`` is the one entry point; records, points and errors are shared
with the drain service and the user interfaces.
"""

from journal.journal import (
    Journal,
    JournalInfo,
    JournalStats,
    OverflowWindow,
    Problem,
    RecordInfo,
    RestoreResult,
    VerifyReport,
    device_size,
)
from journal.records import Point, Record, RecordFlag, RecordType
from journal.restore import Cancelled

__all__ = [
    "Cancelled", "Journal", "JournalInfo", "JournalStats", "OverflowWindow", "Point", "Problem",
    "Record", "RecordFlag", "RecordInfo", "RecordType", "RestoreResult", "VerifyReport", "device_size",
]
