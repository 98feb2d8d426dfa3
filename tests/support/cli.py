"""Run the installed `cdp` in subprocesses, checking the rule every verb shares.

Whatever happens, no Python traceback reaches the user: :func:`cdp` fails
the test if one does, and :meth:`Run.one_line_error` checks the shape of a
failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: The console script of the installed package, next to this interpreter.
CDP = Path(sys.executable).parent / "cdp"


@dataclass
class Run:
    """A finished `cdp` process."""

    args: list[str]
    code: int
    out: str
    err: str

    def one_line_error(self, code: int, *needles: str) -> str:
        """Assert the failure shape every verb promises; return the line."""
        assert self.code == code, f"{self.args}: exit {self.code}, wanted {code}; stderr: {self.err!r}"
        lines = self.err.splitlines()
        assert len(lines) == 1, f"{self.args}: wanted one line on stderr, got {self.err!r}"
        assert lines[0].startswith("cdp: "), lines[0]
        for needle in needles:
            assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
        assert self.out == "", f"{self.args}: stdout should be empty on error, got {self.out!r}"
        return lines[0]


def cdp(*args: str | os.PathLike[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        module: bool = False, timeout: float = 120) -> Run:
    """Run ``cdp ARGS`` (or ``python -m cdp ARGS``) without $CDP_JOURNAL unless given."""
    argv = [os.fspath(a) for a in args]
    cmd = [sys.executable, "-m", "cdp", *argv] if module else [os.fspath(CDP), *argv]
    full_env = {k: v for k, v in os.environ.items() if k not in ("CDP_JOURNAL", "CDP_DEBUG")}
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return Run(argv, proc.returncode, proc.stdout, proc.stderr)
