"""Run the installed `cdp` in subprocesses, and build journals with a known history.

Every helper here checks the rule all verbs share: whatever happens, no
Python traceback reaches the user.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from journal import Journal, Record, RecordType
from journal.units import NS

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


def random_image(size: int, seed: int) -> bytes:
    """Device content: random data with runs of zero blocks (so baselines are sparse)."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    for block in range(0, size, 4096):
        if rng.random() < 0.4:
            data[block:block + 4096] = bytes(4096)
    return bytes(data)


@pytest.fixture
def device(tmp_path: Path) -> tuple[Path, bytes]:
    """A 1 MiB image file and its content."""
    data = random_image(1 << 20, seed=7)
    path = tmp_path / "device.img"
    path.write_bytes(data)
    return path, data


@pytest.fixture
def journal_dir(tmp_path: Path, device: tuple[Path, bytes]) -> Path:
    """A journal made by `cdp init` over :func:`device`, no records yet."""
    path = tmp_path / "journal"
    run = cdp("init", "--journal", path, "--device", device[0])
    assert run.code == 0, run.err
    return path


@dataclass
class History:
    """A journal with a known sequence of records, and the device after each of them."""

    path: Path
    baseline: bytes
    created_ns: int
    #: (seq, ts_ns, device after that record), in seq order; seq 0 is the baseline.
    states: list[tuple[int, int, bytes]] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)
    flushes: list[tuple[int, int]] = field(default_factory=list)

    def at(self, ts_ns: int) -> bytes:
        """The model's device at a time: the last state with ts <= ts_ns."""
        found = self.states[0][2]
        for _seq, ts, data in self.states:
            if ts <= ts_ns:
                found = data
            else:
                break
        return found


def build_history(path: Path, baseline: bytes, *, records: int, seed: int) -> History:
    """Journal ``records`` random writes, zeroings, flushes and marks; model every state.

    The model is a plain bytearray the same operations are applied to, kept
    apart from the journal: what `cdp restore` gives is compared with it.
    """
    rng = random.Random(seed)
    size = len(baseline)
    src = path.parent / f"{path.name}-baseline.img"
    src.write_bytes(baseline)
    model = bytearray(baseline)
    with Journal.create(path, device_bytes=size, source=src) as journal:
        hist = History(path, baseline, journal.info.created_ns)
        hist.states.append((0, hist.created_ns, bytes(model)))
        ts = hist.created_ns
        batch: list[Record] = []
        for seq in range(1, records + 1):
            ts += rng.choice([1, 1000, 1_000_000, 37_000_000])
            roll = rng.random()
            if roll < 0.70:
                sectors = rng.choice([1, 1, 8, 8, 16, 128])
                offset = rng.randrange(0, size // 512 - sectors + 1) * 512
                data = rng.randbytes(sectors * 512)
                model[offset:offset + len(data)] = data
                rec = Record(seq, ts, RecordType.WRITE, 0, offset, len(data), data)
            elif roll < 0.80:
                sectors = rng.choice([8, 64, 512])
                offset = rng.randrange(0, size // 512 - sectors + 1) * 512
                kind = rng.choice([RecordType.DISCARD, RecordType.WRITE_ZEROES])
                model[offset:offset + sectors * 512] = bytes(sectors * 512)
                rec = Record(seq, ts, kind, 0, offset, sectors * 512)
            elif roll < 0.93:
                rec = Record(seq, ts, RecordType.FLUSH)
                hist.flushes.append((seq, ts))
            else:
                name = f"m{seq}"
                rec = Record(seq, ts, RecordType.MARK, 0, 0, 0, name.encode())
                hist.marks[name] = ts
            batch.append(rec)
            hist.states.append((seq, ts, bytes(model)))
            if len(batch) >= rng.choice([1, 5, 50]):
                journal.append(batch)
                batch = []
        journal.append(batch)
    return hist


def ts_arg(ts_ns: int) -> str:
    """An exact @EPOCH TIME for a nanosecond timestamp."""
    return f"@{ts_ns // NS}.{ts_ns % NS:09d}"


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A directory nobody may write into, root included.

    As root (how CI runs) permission bits do not stop writes, so the
    directory is a read-only tmpfs mount; otherwise mode 0555 does it.
    """
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "cdp-test-ro", str(ro)], check=True)
        try:
            yield ro
        finally:
            subprocess.run(["umount", str(ro)], check=True)
    else:
        ro.chmod(0o555)
        try:
            yield ro
        finally:
            ro.chmod(0o755)
