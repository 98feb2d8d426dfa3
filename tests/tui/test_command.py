"""The `cdp tui` verb as the CLI runs it: help that teaches, one clear line without a journal."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cdp(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CDP_JOURNAL"}
    return subprocess.run([sys.executable, "-m", "cdp", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_help_lists_the_keys() -> None:
    out = run_cdp("tui", "--help")
    assert out.returncode == 0
    for words in ("--journal DIR", "CDP_JOURNAL", "restore", "go to a TIME", "verify"):
        assert words in out.stdout


def test_no_journal_given_is_one_line() -> None:
    out = run_cdp("tui")
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cdp: tui: ") and "CDP_JOURNAL" in lines[0]
