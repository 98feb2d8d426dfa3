"""`cdp demo`, the README's first command: robust, fast, and its printed commands work."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from tests.cli.conftest import cdp


@pytest.mark.slow
def test_demo_runs_checks_and_prints_working_commands(tmp_path: Path) -> None:
    where = tmp_path / "demo"
    started = time.monotonic()
    run = cdp("demo", "--dir", where, "--seconds", "3", timeout=60)
    elapsed = time.monotonic() - started
    assert run.code == 0, run.err
    assert elapsed < 30
    assert run.err == ""
    oks = [line for line in run.out.splitlines() if line.strip().startswith("ok ")]
    assert len(oks) == 4 and "DIFF" not in run.out
    assert not (where / "ring").exists() and (where / "journal").is_dir()
    # Every command the demo suggests runs as printed.
    env = {"CDP_JOURNAL": str(where / "journal")}
    commands = [line.split("#")[0].strip() for line in run.out.splitlines() if line.startswith("  cdp ")]
    assert any(c.startswith("cdp restore --at mark:") for c in commands)
    for command in commands:
        if command.startswith("cdp tui"):
            continue
        for part in command.split(" ; "):
            argv = shlex.split(part)[1:]
            result = cdp(*argv, env=env)
            assert result.code == 0, f"{part}: {result.err}"
    marks = re.findall(r"mark:(\S+)", run.out)
    assert {"installed", "before-upgrade", "after-upgrade"} <= set(marks)


def test_demo_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    cdp("demo", "--dir", tmp_path).one_line_error(1, "not an empty directory")
    assert [p.name for p in tmp_path.iterdir()] == ["something"]


def test_demo_bad_seconds(tmp_path: Path) -> None:
    cdp("demo", "--dir", tmp_path / "d", "--seconds", "0").one_line_error(2, "--seconds")
    cdp("demo", "--dir", tmp_path / "d", "--seconds", "soon").one_line_error(2, "--seconds")
