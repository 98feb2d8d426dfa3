"""A restore's target: whole or absent for a file, recorded while in flight for a device.

A file target is written under a hidden partial name in the same
directory (``.NAME.cdp-partial``, 0600 whatever the umask), made durable,
and only then given its name: ``rename`` over an existing file (the
caller's --force), or ``link``, which fails if the name appeared since the
check (no gap between check and write). A restore killed on the way leaves
no file under the target's name; the next restore to it finds the partial
file (not locked by a live restore) and says so. A symbolic link is not
followed to a file: only to a block device (``/dev/disk/by-id/...``).

A block device cannot be written aside, so while one is written the
journal keeps a note of it in ``DIR/restores/``: a restore that never
finished leaves it there for the next restore and ``cdp status`` to
report (nothing is noted where the journal is read-only).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import time
from pathlib import Path

from journal.errors import JournalError, OutOfRange
from journal.facts import fsync_dir, write_private

RESTORES_DIR = "restores"


class RestoreTarget:
    """An open restore target; :meth:`finish` or :meth:`abandon` ends it."""

    def __init__(self, target: Path, device_bytes: int, overwrite: bool, journal_dir: Path) -> None:
        self.path = target
        self.size = device_bytes
        self.notes: list[str] = []
        self._partial: Path | None = None
        self._record: Path | None = None
        st = _inspect(target)
        self.is_device = st is not None and stat.S_ISBLK(st.st_mode)
        try:
            if self.is_device:
                self._open_device(journal_dir)
            else:
                if st is not None and not overwrite:
                    raise JournalError(f"{target} exists; refusing to overwrite it")
                if st is not None and not stat.S_ISREG(st.st_mode):
                    raise JournalError(f"{target} is neither a regular file nor a block device")
                self._open_partial(overwrite)
        except OSError as exc:
            raise JournalError(f"cannot write {target}: {exc.strerror}") from None

    # ------------------------------------------------------------------ files

    def _open_partial(self, overwrite: bool) -> None:
        self.overwrite = overwrite
        partial = self.path.with_name(f".{self.path.name}.cdp-partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(f"another restore to {self.path} is running") from None
        if os.fstat(fd).st_size:
            self.notes.append(f"an earlier restore to {self.path} was interrupted; its partial file "
                              f"{partial.name} was discarded")
        os.ftruncate(fd, 0)
        os.fchmod(fd, 0o600)  # a whole disk image: its owner's alone, whatever the umask
        self.fd = fd
        self._partial = partial

    # ---------------------------------------------------------------- devices

    def _open_device(self, journal_dir: Path) -> None:
        self.fd = os.open(self.path, os.O_WRONLY)
        have = os.lseek(self.fd, 0, os.SEEK_END)
        if have < self.size:
            os.close(self.fd)
            raise OutOfRange(f"{self.path} holds {have} bytes; the journaled device needs {self.size}")
        note_dir = journal_dir / RESTORES_DIR
        record = note_dir / (hashlib.sha256(os.fsencode(os.path.realpath(self.path))).hexdigest()[:16] + ".json")
        if record.exists():
            self.notes.append(_describe(record))
        try:
            note_dir.mkdir(mode=0o700, exist_ok=True)
            write_private(record, json.dumps({"target": os.fspath(self.path), "pid": os.getpid(),
                                              "started_ns": time.time_ns()}).encode())
            self._record = record
        except OSError:
            self.notes.append(f"the journal is read-only here: an interrupted restore to {self.path} "
                              "could not be noted")

    # ---------------------------------------------------------------- the end

    def finish(self) -> None:
        """Make the whole image durable and give it its name (a file), or forget the note (a device)."""
        os.fsync(self.fd)
        os.close(self.fd)
        if self._partial is not None:
            if self.overwrite:
                os.rename(self._partial, self.path)
            else:
                try:
                    os.link(self._partial, self.path)
                except FileExistsError:
                    self._partial.unlink(missing_ok=True)
                    raise JournalError(f"{self.path} appeared while restoring; refusing to overwrite it") from None
                self._partial.unlink()
            fsync_dir(self.path.parent)
        if self._record is not None:
            self._record.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Stop: remove the partial file; a device keeps its note (it is half written)."""
        os.close(self.fd)
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)


def _inspect(target: Path) -> os.stat_result | None:
    """The target's status; a symbolic link only where it leads to a block device."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"cannot use {target}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        if link_to_other_than_device(target):
            raise JournalError(f"{target} is a symbolic link; give the real path of the file to write")
        st = os.stat(target)
    return st


def link_to_other_than_device(target: Path) -> bool:
    """Whether ``target`` is a symbolic link that does not lead to a block device (dangling included).

    The one rule for links (the CLI's and the TUI's target checks use it too):
    a file is written aside and renamed, never through a link, while
    ``/dev/disk/by-id/...`` links to devices are what admins type.
    """
    try:
        if not stat.S_ISLNK(os.lstat(target).st_mode):
            return False
    except OSError:
        return False  # nothing there, or nothing this process may look at: not a link
    try:
        return not stat.S_ISBLK(os.stat(target).st_mode)
    except OSError:
        return True  # a dangling link


def _describe(record: Path) -> str:
    try:
        note = json.loads(record.read_text())
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(note["started_ns"] // 10**9))
        return f"an earlier restore to {note['target']} (started {when}) never finished: it was left half written"
    except (OSError, ValueError, KeyError):
        return f"an earlier restore to this device never finished ({record.name})"


def interrupted_restores(journal_dir: Path) -> list[str]:
    """One line for each device restore that started from this journal and never finished."""
    note_dir = journal_dir / RESTORES_DIR
    try:
        records = sorted(note_dir.glob("*.json"))
    except OSError:
        return []
    out = []
    for record in records:
        try:
            pid = json.loads(record.read_text())["pid"]
            os.kill(pid, 0)
            continue  # still running
        except (ProcessLookupError, ValueError, KeyError, OSError):
            pass
        out.append(_describe(record))
    return out
