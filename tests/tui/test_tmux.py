"""`cdp tui` in a real terminal: tmux runs it, sends keys, and the screen is read back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One detached tmux server on its own socket, so no user session is touched."""

    def __init__(self, width: int = 120, height: int = 40) -> None:
        self.socket = f"cdp-tui-test-{uuid.uuid4().hex[:8]}"
        self.width, self.height = width, height

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True).stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        self.run("new-session", "-d", "-s", "t", "-x", str(self.width), "-y", str(self.height),
                 # a moment for tmux to give the pane its size before the app asks for it
                 f"sleep 0.3; env {exports} {command}; echo cdp-exit=$?; sleep 60")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")
            time.sleep(0.1)

    def wait_gone(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text not in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never went away; the screen was:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


def cdp_command() -> str:
    script = Path(sys.executable).with_name("cdp")
    return str(script) if script.exists() else f"{sys.executable} -m cdp"


def test_cdp_tui_in_a_real_terminal(journal_dir: Path) -> None:
    tmux = Tmux()
    try:
        tmux.start(f"{cdp_command()} tui --journal {journal_dir}",
                   {"TZ": "UTC", "TERM": "xterm-256color", "PATH": os.environ.get("PATH", "")})
        screen = tmux.wait_for("baseline")
        assert "before-upgrade" in screen and "rewind points: all" in screen
        assert "write activity" in screen

        tmux.keys("f")
        tmux.wait_for("rewind points: marks only")
        # the title changes at once, the rows when the worker's page lands
        screen = tmux.wait_gone("flush      ")  # a row's kind column, not the legend
        assert "before-upgrade" in screen and "checkpoint" in screen

        tmux.keys("f")
        tmux.wait_for("rewind points: all")
        tmux.keys("g")
        tmux.wait_for("Go to the newest point")
        tmux.keys("2026-03-01T12:00:03.400Z", "Enter")
        tmux.wait_gone("Go to the newest point")
        tmux.keys("Enter")
        screen = tmux.wait_for("since the previous point")
        assert "before-upgrade" in screen  # the detail of the mark g landed on

        tmux.keys("Escape")
        tmux.wait_for("rewind points: all")
        tmux.keys("?")
        screen = tmux.wait_for("keys: Main screen")
        assert "Restore" in screen
        tmux.keys("Escape")
        tmux.wait_for("rewind points: all")
        tmux.keys("q")
        tmux.wait_for("cdp-exit=0")
    finally:
        tmux.close()


def test_cdp_tui_without_a_journal_says_so(tmp_path: Path) -> None:
    tmux = Tmux()
    try:
        tmux.start(f"{cdp_command()} tui --journal {tmp_path / 'missing'}", {"TERM": "xterm-256color"})
        tmux.wait_for("cannot open the journal")
        tmux.keys("q")
        screen = tmux.wait_for("cdp-exit=1")
        assert "Traceback" not in screen
    finally:
        tmux.close()
