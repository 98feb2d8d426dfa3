"""`cdp tui`: browse rewind points, see what changed, restore (the Textual app in ``tui/``)."""

from __future__ import annotations

import argparse

from cdp.commands._common import add_verb, journal_path

ORDER = 80


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tui`` verb."""
    add_verb(
        subparsers, "tui", cmd_tui,
        help="browse rewind points in a terminal UI and restore one",
        description=(
            "Open the journal in a terminal UI (read-only, so it can run while 'cdp run'\n"
            "writes): a status bar (lag, write rate, ring fill, overflow warnings), a\n"
            "timeline of write activity with the rewind points on it, the list of points,\n"
            "what changed at each one down to a hex view of a block, and restore."),
        epilog=(
            "keys:\n"
            "  enter  detail of the selected point     r  restore it to a file or device\n"
            "  m      add a named mark                 g  go to a TIME (as in cdp restore --at)\n"
            "  f      marks only / all points          v  verify the journal\n"
            "  + -    zoom the timeline                [ ]  earlier / later\n"
            "  ?      all keys                         q  quit\n\n"
            "example:\n"
            "  cdp tui --journal /var/lib/cdp/sdb"),
    )


def cmd_tui(args: argparse.Namespace) -> int:
    """Run the app until the user quits; 1 when the journal could not be opened."""
    path = journal_path(args)
    from tui.app import CdpApp

    app = CdpApp(path)
    app.run()
    return app.return_code or 0
