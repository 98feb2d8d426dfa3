"""The restore dialog's policy over :func:`journal.target.inspect_target` (the CLI's is --force)."""

from __future__ import annotations

import os

from journal.target import inspect_target


def check_target(path: str, journal_dir: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """(exists, problem) for a restore target, before anything is written.

    ``problem`` is a one-line reason the restore cannot go there ('' if it
    can): what :func:`journal.target.inspect_target` finds wrong (inside the
    journal, a directory, a missing parent directory, ...), a block device
    in use (mounted, itself or a partition; swap; held by another device),
    which the TUI never overwrites, or a target it may not write. The
    journal itself refuses to overwrite unless told, so the modal asks the
    user first when ``exists`` is True.
    """
    if not path:
        return False, "type a path to restore to"
    found = inspect_target(path, journal_dir)
    if found.problem:
        return found.exists, found.problem
    if found.users:
        return True, f"{found.in_use}; stop using it first"
    if found.exists and not found.writable:
        return True, f"cannot write {path}: permission denied"
    return found.exists, ""
