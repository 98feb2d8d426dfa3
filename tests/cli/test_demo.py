"""`cdp demo`, the README's first command: robust, fast, and its printed commands work."""

from __future__ import annotations

import re
import shlex
import shutil
import time
from pathlib import Path

import pytest

from tests.support.cli import CDP, cdp


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
    lines = run.out.split("Try it yourself:\n")[1].split("\n(everything")[0].splitlines()
    assert lines[0] == f"  export CDP_JOURNAL={where / 'journal'}"
    # The test runs the script by its full path, not on PATH: that is the path printed.
    prefix = f"  {CDP} " if shutil.which("cdp") != str(CDP) else "  cdp "
    commands = [line.split("#")[0].strip() for line in lines[1:]]
    assert all(line.startswith(prefix) for line in lines[1:]), lines
    assert any(" restore --at mark:before-upgrade " in c for c in commands)
    for command in commands:
        for part in command.split(" ; "):
            argv = shlex.split(part)[1:]
            if argv[0] == "tui":
                continue
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


def test_demo_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from tests.support.cli import CDP

    where = tmp_path / "demo"
    proc = subprocess.Popen([os.fspath(CDP), "demo", "--dir", os.fspath(where), "--seconds", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (where / "cdp-run.log").exists():  # the service has started
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert err == "cdp: demo: terminated\n"
    assert "Traceback" not in out
    assert not where.exists(), "the demo's files should be gone"
    pid = int(re.search(r"\(pid (\d+)\)", out).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the service it started is gone too
