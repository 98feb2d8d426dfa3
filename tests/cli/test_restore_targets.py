"""Restore targets are whole or absent, private, and never reached through a symbolic link.

A restore killed with SIGKILL at a random moment leaves nothing under the
target's name, and the next restore says what happened; outputs, journal
files and ring files are 0600 (the journal's directories 0700) under
umask 022 and 000 alike.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from journal import Journal
from tests.support.cli import CDP, cdp


def test_dangling_symlink_target_is_refused(journal_dir: Path, tmp_path: Path) -> None:
    link = tmp_path / "out.img"
    link.symlink_to(tmp_path / "nowhere" / "x.img")
    cdp("restore", "--journal", journal_dir, "--seq", "0", "--to", link).one_line_error(1, "symbolic link")
    assert not (tmp_path / "nowhere").exists()


def test_symlink_to_a_file_is_refused_even_with_force(journal_dir: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.img"
    real.write_bytes(b"keep")
    link = tmp_path / "link.img"
    link.symlink_to(real)
    cdp("restore", "--journal", journal_dir, "--seq", "0", "--to", link, "--force").one_line_error(
        1, "symbolic link")
    assert real.read_bytes() == b"keep"


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_modes_whatever_the_umask(tmp_path: Path, device: tuple[Path, bytes], umask: int) -> None:
    image, _data = device
    old = os.umask(umask)
    try:
        journal = tmp_path / "j"
        run = cdp("init", "--journal", journal, "--device", image)
        assert run.code == 0, run.err
        assert cdp("mark", "--journal", journal, "m").code == 0
        out = tmp_path / "restored.img"
        assert cdp("restore", "--journal", journal, "--seq", "0", "--to", out).code == 0
        replaced = tmp_path / "replaced.img"
        replaced.write_bytes(b"old")
        os.chmod(replaced, 0o644)
        assert cdp("restore", "--journal", journal, "--seq", "0", "--to", replaced, "--force").code == 0
        ring = tmp_path / "ring"
        sim = subprocess.run([str(CDP.parent / "python"), "-m", "cdp.sim", "--ring", str(ring), "--image",
                              str(image), "--ops", "1", "--ring-mb", "1"], capture_output=True, text=True)
        assert sim.returncode == 0, sim.stderr
    finally:
        os.umask(old)
    for path in [journal, *journal.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        assert mode == want, f"{path}: {oct(mode)}"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(replaced.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.stat().st_mode) == 0o600


def test_killed_restore_leaves_a_whole_image_or_nothing(tmp_path: Path) -> None:
    size = 64 << 20
    image = tmp_path / "dev.img"
    rng = random.Random(5)
    with open(image, "wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(rng.randbytes(1 << 20))
    journal = tmp_path / "j"
    Journal.create(journal, device_bytes=size, source=image).close()
    target = tmp_path / "out.img"
    killed = 0
    for delay in (0.05, 0.1, 0.2, 0.3, 0.4, 0.6):
        proc = subprocess.Popen([str(CDP), "restore", "--journal", str(journal), "--seq", "0", "--to",
                                 str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is not None:  # it finished first: a whole image, which is fine
            assert proc.returncode == 0 and target.read_bytes() == image.read_bytes()
            target.unlink()
            continue
        proc.send_signal(signal.SIGKILL)
        if proc.wait() == 0:  # it finished between the look and the kill
            target.unlink()
            continue
        killed += 1
        if target.exists():  # killed after the image got its name: then it must be whole
            assert target.read_bytes() == image.read_bytes(), f"a partial image under the target's name after {delay} s"
            target.unlink()
    assert killed, "every restore finished before it could be killed"
    run = cdp("restore", "--journal", journal, "--seq", "0", "--to", target)
    assert run.code == 0, run.err
    assert target.read_bytes() == image.read_bytes()
    partial = tmp_path / ".out.img.cdp-partial"
    assert not partial.exists()
    if "interrupted" in run.err:  # a kill that came after the partial file had bytes
        assert run.err.count("\n") == 1 and "note:" in run.err
