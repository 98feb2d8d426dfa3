"""What a journal is, kept outside its index: the marker file and the user marks log.

The index is a view that ``cdp reindex`` can rebuild from the segments, so
nothing that exists only in the index may be history. Two things are not
in any segment: the journal's fixed facts (the device's size, block size
and identity, when the journal began, the baseline's source) and the user
marks made by time (``cdp mark`` runs beside the service, which owns the
segments). The facts go into the marker file, written once by create; the
marks into an append-only log, one checked line each, written before the
index learns of them.

``DIR/cdp-journal``::

    cdp-journal 2
    {"device_bytes": ..., "block_size": ..., "device_id": "<32 hex>",
     "created_ns": ..., "source": "...", "crc": <CRC-32C of the JSON without "crc">}

``DIR/marks.log``: ``<ts_ns> <name as hex> <CRC-32C of the two, 8 hex>\\n``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import crc32c

from journal.errors import CorruptJournal, JournalBusy, NotAJournal, UnsupportedVersion
from journal.format import MARKER, REINDEXABLE, SCHEMA

MARKS_LOG = "marks.log"
#: Marks pinned with ``cdp mark --keep-forever``: same line format; retention never drops them.
PINS_LOG = "pins.log"


@dataclass(frozen=True, slots=True)
class Facts:
    """The journal's fixed facts, as create wrote them."""

    device_bytes: int
    block_size: int
    device_id: str  # 32 hex digits
    created_ns: int
    source: str


def _crc_of(fields: dict[str, object]) -> int:
    return crc32c.crc32c(json.dumps(fields, sort_keys=True).encode())


def write_marker(path: Path, facts: Facts) -> None:
    """Write the marker (last step of create: a journal without it is unfinished)."""
    fields = asdict(facts)
    fields["crc"] = _crc_of(asdict(facts))
    text = f"{MARKER} {SCHEMA}\n{json.dumps(fields, sort_keys=True)}\n"
    write_private(path / MARKER, text.encode())


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` as 0600 whatever the umask, write ``data`` and make it durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_writer(path: Path) -> int:
    """Take the journal's writer lock (the drain service, or a reindex), or say who holds it."""
    try:
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise NotAJournal(f"{path}: cannot lock the journal: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalBusy(f"{path} is being written by another process (is 'cdp run' running?)") from None
    return fd


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_marker(path: Path) -> tuple[int, Facts | None]:
    """(schema, facts) from the marker; facts is None where the marker has none or they fail their CRC."""
    marker = path / MARKER
    try:
        text = marker.read_text()
    except (FileNotFoundError, NotADirectoryError):
        raise NotAJournal(f"{path} is not a cdp journal (no {MARKER} file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotAJournal(f"{path}: cannot read the journal: {getattr(exc, 'strerror', exc)}") from None
    lines = text.split("\n")
    parts = lines[0].split()
    if len(parts) != 2 or parts[0] != MARKER or not parts[1].isdigit():
        raise NotAJournal(f"{path} is not a cdp journal (bad {MARKER} file)")
    schema = int(parts[1])
    if schema not in (*REINDEXABLE, SCHEMA):
        raise UnsupportedVersion(f"{path} is a journal of schema {schema}; this cdp reads schema {SCHEMA}")
    facts = None
    if len(lines) > 1 and lines[1].strip():
        try:
            fields = json.loads(lines[1])
            crc = fields.pop("crc")
            if crc == _crc_of(fields):
                facts = Facts(**fields)
        except (ValueError, TypeError, KeyError):
            facts = None
    return schema, facts


def append_mark(path: Path, ts_ns: int, name: bytes, log: str = MARKS_LOG) -> None:
    """Add a user mark to the log (or a pin to ``pins.log``), durably, before the index is told."""
    body = f"{ts_ns} {name.hex()}"
    line = f"{body} {crc32c.crc32c(body.encode()):08x}\n".encode()
    fd = os.open(path / log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_marks(path: Path, log: str = MARKS_LOG) -> Iterator[tuple[int, bytes]]:
    """Every intact (ts_ns, name) of the log; a damaged line is an error, never skipped silently."""
    try:
        text = (path / log).read_text()
    except FileNotFoundError:
        return
    lines = text.split("\n")
    # a last line without its newline was torn by a crash before the mark was acknowledged
    for number, line in enumerate(lines[:-1], start=1):
        parts = line.split()
        try:
            ts, name_hex, crc = parts
            if int(crc, 16) != crc32c.crc32c(f"{ts} {name_hex}".encode()):
                raise ValueError
            yield int(ts), bytes.fromhex(name_hex)
        except ValueError:
            raise CorruptJournal(f"{path / log} line {number} is damaged") from None
