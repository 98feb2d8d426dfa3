"""The cdp journal: payload segments plus an LMDB index, read at any time.

``Journal`` is the one entry point for the writer and for readers; records,
points and errors are shared with the drain service and the user
interfaces. Restore and verify are functions over the journal's read
surface (:class:`journal.reader.JournalReader`), each owning its results.

What both user interfaces (the CLI and the TUI) need beyond that has one
home here too: TIME parsing (:mod:`journal.timespec`), the formatting of
times, sizes and durations (:mod:`journal.units`), the service's status
(:mod:`journal.status`) and the restore-target check (:mod:`journal.target`).
"""

from journal.errors import JournalError
from journal.journal import Journal, device_size
from journal.points import OverflowWindow
from journal.reader import JournalInfo, JournalReader, JournalStats, RecordInfo
from journal.records import MARK_KINDS, Point, PointKind, Record, RecordFlag, RecordType
from journal.restore import Cancelled, RestoreResult, restore_to
from journal.status import Service, ServiceStatus, read_service
from journal.target import TargetInfo, inspect_target
from journal.timespec import TIME_HELP, TimeError, mark_lookup, parse_time
from journal.verify import Problem, VerifyReport, verify_journal

__all__ = [
    "Cancelled", "Journal", "JournalError", "JournalInfo", "JournalReader", "JournalStats", "OverflowWindow", "Point",
    "Problem", "Record", "RecordFlag", "RecordType", "RecordInfo", "RestoreResult", "VerifyReport",
    "device_size", "restore_to", "verify_journal",
    "MARK_KINDS", "PointKind", "TargetInfo", "Service", "ServiceStatus", "TIME_HELP", "TimeError",
    "inspect_target", "mark_lookup", "parse_time", "read_service",
]
