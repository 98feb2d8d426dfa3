"""Helpers every verb shares: registering a verb with --journal, --json, TIME arguments, output.

Kept free of heavy imports: the journal library is imported inside the
functions that open a journal, so registering verbs costs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdp.errors import CdpError, UsageError

if TYPE_CHECKING:
    from journal import Journal, Point

JOURNAL_ENV = "CDP_JOURNAL"
#: A verb's handler: the parsed arguments in, the exit status out.
Handler = Callable[[argparse.Namespace], int]



class PointKindChoices:
    """The ``choices`` of ``--kind``: :class:`journal.records.PointKind`'s values, read when used.

    argparse asks for them only to check a given value and to write the help
    (``%(choices)s``), so registering the verb does not load the journal.
    """

    def __iter__(self) -> Iterator[str]:
        from journal.records import PointKind

        return iter([kind.value for kind in PointKind])

    def __contains__(self, value: object) -> bool:
        return value in list(self)


def kind_label(kind: str) -> str:
    """What the points table calls a kind of point, for people."""
    from journal.records import PointKind

    return "mark (user)" if kind == PointKind.USER_MARK else str(kind)


def add_verb(subparsers: argparse._SubParsersAction, name: str, handler: Handler, *, journal: bool = True,
             **parser_options: Any) -> argparse.ArgumentParser:
    """Add one verb: its parser, ``--journal DIR`` first (unless ``journal=False``), its handler.

    ``parser_options`` go to the verb's parser (help, description, epilog,
    ``time_help``); the verb then adds its own options, ``--json`` last.
    """
    parser = subparsers.add_parser(name, **parser_options)
    if journal:
        parser.add_argument(
            "--journal", "-j", metavar="DIR", default=None,
            help=f"the journal directory (default: ${JOURNAL_ENV})")
    parser.set_defaults(func=handler)
    return parser


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: machine-readable output on stdout, nothing else there."""
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout instead of text")


def add_compress_option(parser: argparse.ArgumentParser) -> None:
    """``--no-compress``, for the verbs that create a journal (init, attach)."""
    parser.add_argument("--no-compress", action="store_true",
                        help="a new journal only: store payloads as written, no zstd, zero blocks kept "
                             "(default: each 4 KiB block zstd-compressed at a low level when that saves "
                             "space, zero blocks stored as nothing; an existing journal keeps its setting)")


def compression_of(args: argparse.Namespace) -> Any:
    """The :class:`journal.codec.Compression` the verb's ``--no-compress`` asks for."""
    from journal.codec import OFF, Compression

    return OFF if getattr(args, "no_compress", False) else Compression()


def journal_path(args: argparse.Namespace) -> Path:
    """The journal the user means: --journal, else $CDP_JOURNAL, else an error."""
    given = args.journal or os.environ.get(JOURNAL_ENV)
    if not given:
        raise UsageError(f"no journal given: use --journal DIR or set {JOURNAL_ENV}")
    return Path(given)


def existing_journal_path(args: argparse.Namespace) -> Path:
    """:func:`journal_path`, with a clear error (and the fix) when nothing is there."""
    path = journal_path(args)
    if not path.exists():
        raise CdpError(f"no journal at {path} (create one with 'cdp init --journal {path} --device PATH')")
    return path


def open_journal(args: argparse.Namespace, *, readonly: bool = True, marks: bool = False) -> Journal:
    """Open the journal named by the arguments, with a clear error if there is none."""
    path = existing_journal_path(args)
    from journal import Journal

    return Journal.open(path, readonly=readonly, marks=marks)


def parse_time_arg(text: str, journal: Journal | None = None, *, option: str = "TIME",
                   now_ns: int | None = None) -> int:
    """A TIME argument as ns, or a one-line usage error naming the option."""
    from journal.timespec import mark_lookup, parse_time

    try:
        return parse_time(text, now_ns=now_ns, marks=mark_lookup(journal) if journal is not None else None)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def print_json(obj: Any) -> None:
    """One JSON document on stdout (ints stay exact: ns timestamps are never floats)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def point_json(point: Point) -> dict[str, Any]:
    """A point as scripts read it: exact ns plus the same moment in ISO 8601."""
    from journal.units import format_ts

    return {"seq": point.seq, "ts_ns": point.ts_ns, "time": format_ts(point.ts_ns),
            "kind": point.kind, "name": point.name, "whole": point.whole}
