"""The front door in-process: a broken verb module, error formatting, TIME option values."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp import cli


def test_a_verb_that_fails_to_load_does_not_break_the_others(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             journal_dir: Path) -> None:
    real = importlib.import_module

    def flaky(name: str, *args: object) -> object:
        if name == "cdp.commands.demo":
            raise ImportError("No module named 'missing_dependency'")
        return real(name, *args)

    monkeypatch.delenv("CDP_DEBUG", raising=False)
    monkeypatch.setattr(cli.importlib, "import_module", flaky)
    assert cli.main(["demo"]) == cli.EXIT_BUG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cdp: demo: this command failed to load (ImportError" in err
    assert cli.main(["status", "--json", "--journal", str(journal_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["last_seq"] == 0


@pytest.mark.parametrize("argv,expected", [
    (["restore", "--at", "-5m", "--to", "x"], ["restore", "--at=-5m", "--to", "x"]),
    (["points", "--since", "-1h", "--until", "-90s"], ["points", "--since=-1h", "--until=-90s"]),
    (["points", "--since", "2026-01-01"], ["points", "--since", "2026-01-01"]),
    (["mark", "--", "--at", "-5m"], ["mark", "--", "--at", "-5m"]),
])
def test_time_values_that_start_with_a_dash(argv: list[str], expected: list[str]) -> None:
    assert cli._join_time_values(argv) == expected


def test_os_errors_read_as_path_and_reason() -> None:
    assert cli.one_line(FileNotFoundError(2, "No such file or directory", "/x")) == "/x: No such file or directory"
    assert cli.one_line(ValueError("two\nlines")) == "two lines"
    assert cli.one_line(RuntimeError()) == "RuntimeError"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=30),
                      st.from_regex(r"-?[0-9@:TZ.+\- mark]{0,24}", fullmatch=True)))
def test_any_since_value_is_a_result_or_one_line(text: str, journal_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = cli.main(["points", "--journal", str(journal_dir), "--json", "--since", text])
    except SystemExit as exc:  # argparse's own errors, already one line
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 0:
        assert isinstance(json.loads(out), list) and err == ""
    else:
        assert code in (1, 2) and out == "" and err.count("\n") == 1 and err.startswith("cdp: ")
