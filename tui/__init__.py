"""The terminal UI (`cdp tui`) for browsing rewind points and restoring.

Layout, one job per module:

- :mod:`tui.app`: the :class:`~tui.app.CdpApp` (``CSS_PATH = "app.tcss"``); opens the
  journal read-only in a worker and owns it.
- :mod:`tui.model`: every question asked of the journal, as plain functions run in
  worker threads (points pages, timeline buckets, point detail, status, targets).
- :mod:`tui.workers`: ``@journal_worker``, Textual's thread worker plus a lease so the
  journal is never closed under a running read.
- :mod:`tui.screens`: the main screen, the detail screen, and the modal screens
  (restore, verify, mark, go to, block chooser, keys, open error).
- :mod:`tui.widgets`: status bar, timeline, virtual points list, hex view; they
  render what they are given and read nothing themselves.

How times, sizes and rates are written is :mod:`journal.units`, shared with
the CLI; the TIME grammar is :mod:`journal.timespec`.
"""
