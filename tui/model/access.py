"""Instant access from the detail view: a point served over NBD, mounted, or its changed files.

The TUI does what the CLI does, through the same code: :class:`cdp.export.ExportServer`
(what `cdp export` runs: nbdkit with its ``--exit-with-parent``, so an export
never outlives the TUI, even a killed one), :mod:`cdp.mount` (what `cdp mount`
and `cdp umount` run) and :func:`cdp.extfiles.files_between` (what `cdp diff
--files` runs). Each is a blocking call for a worker thread; the screens only
show what they return, and every failure is one line.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cdp.errors import CdpError
from cdp.export import ExportServer
from cdp.extfiles import FileChange, files_between
from journal import Journal, Point
from journal.changes import Changes, changed_between
from tui.model.detail import previous_point


class Export:
    """One point served over NBD (read-only) on a unix socket of its own, until :meth:`stop`.

    ``start`` runs in a worker while the screen may already be closing: a
    ``stop`` that comes first wins, and the server a late ``start`` brings up
    is stopped at once instead of being left to serve.
    """

    def __init__(self, journal: Journal, point: Point) -> None:
        self.server = ExportServer(Path(journal.path), point.seq)
        self.uri = ""
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> str:
        """Serve the point (blocks until nbdkit accepts connections); the NBD URI."""
        uri = self.server.start()
        with self._lock:
            if not self._stopped:
                self.uri = uri
                return uri
        self.server.stop()
        raise CdpError("the export was stopped while it started")

    def stop(self) -> None:
        """Stop serving (nbdkit gone, socket and working directory removed); idempotent."""
        with self._lock:
            self._stopped = True
        self.server.stop()

    @property
    def pid(self) -> int | None:
        """nbdkit's pid while it runs (tests check it is gone after a stop)."""
        proc = self.server.proc
        return proc.pid if proc is not None else None


def mount_problem() -> str | None:
    """Why this host cannot `cdp mount` (no nbd module, no nbd-client, not root), or None."""
    from cdp import mount

    try:
        mount.check_nbd_support()
    except CdpError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class Mounted:
    """A point mounted read-only on a directory the TUI made for it."""

    mountpoint: Path
    device: str
    fstype: str


def mount_point(journal: Journal, point: Point) -> Mounted:
    """`cdp mount` of ``point`` on a new directory under ``$TMPDIR``; the directory goes if it fails."""
    from cdp import mount

    where = Path(tempfile.mkdtemp(prefix=f"cdp-seq{point.seq}-"))
    try:
        state = mount.mount(Path(journal.path), point.seq, where, fs_options=None, allow_partial=not point.whole)
    except BaseException:
        os.rmdir(where)
        raise
    return Mounted(where, state.device, state.fstype)


def unmount_point(mounted: Mounted) -> None:
    """`cdp umount` of what :func:`mount_point` set up, and its directory removed."""
    from cdp import mount

    mount.umount(mounted.mountpoint)
    try:
        os.rmdir(mounted.mountpoint)
    except OSError:
        pass  # something was put there meanwhile: leave it


@dataclass(frozen=True, slots=True)
class FilesSince:
    """The files changed between the previous point and this one."""

    previous: Point | None
    changes: Changes | None
    files: list[FileChange]


def files_since_previous(journal: Journal, point: Point, *, ranges: Callable[[Point, Changes], None],
                         progress: Callable[[int, int], None] | None = None,
                         cancel: threading.Event | None = None) -> FilesSince:
    """What `cdp diff --files` says between the previous point (of any kind) and ``point``.

    ``ranges`` hears the changed byte ranges first (from the index alone, at
    once), before the two restores that the files need.
    """
    prev = previous_point(journal, point)
    if prev is None:
        return FilesSince(None, None, [])
    changes = changed_between(journal, prev.seq, prev.ts_ns, point.seq, point.ts_ns)
    ranges(prev, changes)
    return FilesSince(prev, changes, files_between(journal, changes, progress=progress, cancel=cancel))
