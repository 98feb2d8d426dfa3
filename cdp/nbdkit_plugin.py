"""nbdkit plugin: serve one point of a cdp journal as a read-only NBD export.

Run by `cdp export` (see :mod:`cdp.export`) as::

    nbdkit python .../cdp/nbdkit_plugin.py journal=DIR seq=N python=3.11 syspath=DIR...

Why nbdkit: it is a well-kept NBD server (Debian's ``nbdkit`` and
``nbdkit-plugin-python``) that speaks the whole protocol (newstyle fixed,
structured replies, block status, multi-conn), and its ``cow`` filter gives
the writable overlay; this file only answers "what are these bytes".

nbdkit embeds the *system* Python, not cdp's virtualenv, so nothing of cdp
or of its dependencies (lmdb, msgpack, crc32c) is importable here at first.
`cdp export` passes the directories its own interpreter imports from as
``syspath=`` keys: each is added with ``site.addsitedir`` (so the
virtualenv's ``.pth`` files, an editable install's included, take effect)
in front of the system's, so the journal code nbdkit runs is the code `cdp`
itself runs. The compiled dependencies only load in the same Python minor
version, hence the ``python=`` key: a mismatch is one clear error instead
of an import failure deep in lmdb.

The journal is opened read-only and nothing here writes to it; reads go
through :class:`journal.pointview.PointView`, which checks every CRC-32C.
A damaged block is an EIO for that request (and one line in the log), never
wrong bytes.
"""

from __future__ import annotations

import errno
import site
import sys

import nbdkit  # type: ignore[import-not-found]  # provided by nbdkit's python plugin

API_VERSION = 2
#: Lines of ours on nbdkit's stderr start with this; `cdp export` shows them.
REPORT_PREFIX = "cdp-export: "

_conf: dict[str, str] = {}
_paths: list[str] = []
_state: dict[str, object] = {}


def config(key: str, value: str) -> None:
    """Collect the keys `cdp export` passes; unknown ones are an error."""
    if key == "syspath":
        _paths.append(value)
    elif key in ("journal", "seq", "python"):
        _conf[key] = value
    else:
        raise RuntimeError(f"unknown parameter {key!r}")


def config_complete() -> None:
    """Check the keys and the Python version, and make cdp importable."""
    for key in ("journal", "seq"):
        if key not in _conf:
            _fail_start(f"missing parameter {key}=")
    want = _conf.get("python")
    have = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if want is not None and want != have:
        _fail_start(f"nbdkit's Python is {have} but cdp runs on Python {want}; "
                    "install cdp with the system python3")
    # in reverse, each in front: the first syspath ends up first
    for path in reversed(_paths):
        before = list(sys.path)
        site.addsitedir(path)
        added = [p for p in sys.path if p not in before]
        sys.path[:] = added + [p for p in before if p not in added]


def _report(message: str) -> None:
    """One line for `cdp export`, which shows these (nbdkit's own error is a traceback)."""
    sys.stderr.write(f"{REPORT_PREFIX}{message}\n")
    sys.stderr.flush()


def _fail_start(message: str) -> None:
    _report(message)
    raise RuntimeError(message)


def thread_model() -> int:
    """Parallel: segment reads and CRC checks overlap; the view serializes its index work."""
    return nbdkit.THREAD_MODEL_PARALLEL


def get_ready() -> None:
    """Open the journal before nbdkit serves (and writes its pid file, which `cdp export` waits for).

    LMDB does not survive a fork: this is safe because `cdp export` starts
    nbdkit by socket activation, which implies --foreground (no fork).
    """
    try:
        from journal.errors import JournalError
        from journal.pointview import PointView, open_readonly
    except ImportError as exc:
        _fail_start(f"cannot import cdp's journal code in nbdkit's Python: {exc}")
    try:
        journal = open_readonly(_conf["journal"])
        _state["journal"] = journal
        _state["view"] = PointView(journal, int(_conf["seq"]))
    except (JournalError, OSError, ValueError) as exc:
        _fail_start(str(exc))


def cleanup() -> None:
    view = _state.pop("view", None)
    if view is not None:
        view.close()  # type: ignore[attr-defined]
    journal = _state.pop("journal", None)
    if journal is not None:
        journal.close()  # type: ignore[attr-defined]


def open(readonly: bool) -> object:  # noqa: A001 - the name nbdkit calls
    return _state["view"]


def get_size(h: object) -> int:
    return h.size  # type: ignore[attr-defined]


def can_write(h: object) -> bool:
    return False


def can_multi_conn(h: object) -> bool:
    return True  # every connection sees the same immutable bytes


def can_extents(h: object) -> bool:
    return True


def can_cache(h: object) -> int:
    return nbdkit.CACHE_NONE


def is_rotational(h: object) -> bool:
    return False


def export_description(h: object) -> str:
    return f"cdp journal {_conf['journal']} at seq {_conf['seq']}"


def _fail(what: str, exc: BaseException) -> None:
    """Report one line and make the request fail with EIO."""
    _report(f"{what} failed: {exc}")
    nbdkit.set_error(errno.EIO)
    raise RuntimeError(f"{type(exc).__name__}: {exc}") from None


def pread(h: object, buf: bytearray, offset: int, flags: int) -> None:
    from journal.errors import JournalError

    try:
        h.readinto(offset, buf)  # type: ignore[attr-defined]
    except (JournalError, OSError) as exc:
        _fail(f"read at {offset}+{len(buf)}", exc)


def extents(h: object, count: int, offset: int, flags: int) -> list[tuple[int, int, int]]:
    from journal.errors import JournalError

    try:
        found = h.extents(offset, count)  # type: ignore[attr-defined]
    except (JournalError, OSError) as exc:
        _fail(f"block status at {offset}+{count}", exc)
    zero = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO
    out = [(e.offset, e.length, zero if e.zero else 0) for e in found]
    return out[:1] if flags & nbdkit.FLAG_REQ_ONE else out
