"""What the TUI asks the journal, as plain functions that run in worker threads, one module per topic.

Nothing here touches a widget: every function takes an open
:class:`journal.Journal`, does bounded work (one page of points, one window
of activity, one block) and returns a frozen dataclass the UI thread renders.
Keeping the queries here lets them be tested and benchmarked without a
screen, and keeps the screens thin.

- :mod:`tui.model.points`: points a page at a time, newest first;
- :mod:`tui.model.timeline`: bytes written per column, points beneath;
- :mod:`tui.model.detail`: what changed since the previous point, block pairs;
- :mod:`tui.model.status`: the status bar's counters and the service's state;
- :mod:`tui.model.target`: whether the restore dialog may write a path;
- :mod:`tui.model.errors`: one line for any error a worker meets.

A TIME typed in a dialog is parsed by :mod:`journal.timespec`, as in the CLI.
"""
