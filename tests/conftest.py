"""Hypothesis profiles: the same examples on every run of the suite, new ones when asked.

``scripts/test`` and CI run the ``repeatable`` profile (derandomized: each
property test draws the same examples every time), so a red run is the
change's doing and reruns the same way, never a new example met by chance.
Finding new examples is a deliberate act: ``HYPOTHESIS_PROFILE=explore
scripts/test -k compact`` draws fresh ones each run, and with it
``--hypothesis-seed=N`` replays one such run (how a reindex bug that one
seed in six met was found, then pinned by a test of its own).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
