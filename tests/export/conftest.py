"""Journals with a known history (writes, discards, zeroings, overflow windows) and live exports.

The history is built with ``Journal.append`` and applied to the independent
model of :mod:`tests.journal.model` at the same time; the export is the
real `cdp export` process (nbdkit and the plugin), read with libnbd.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from journal import Journal, Record, RecordType
from tests.support.cli import CDP
from tests.journal.model import DeviceModel

SECTOR = 512


def libnbd() -> ModuleType:
    """libnbd's Python binding (Debian's python3-libnbd), in this interpreter.

    The binding is packaged for the system Python only (the PyPI package
    called ``nbd`` is something else); its extension is built for the same
    CPython minor version as the virtualenv's, so it is loaded from its file.
    """
    try:
        import nbd  # noqa: PLC0415

        return nbd
    except ImportError:
        pass
    where = "/usr/lib/python3/dist-packages"
    tag = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
    found = glob.glob(f"{where}/libnbdmod.{tag}-*.so")
    if not found or not os.path.exists(f"{where}/nbd.py"):
        pytest.fail(f"libnbd's Python binding for {tag} is missing: scripts/setup installs python3-libnbd")
    for name, path in (("libnbdmod", found[0]), ("nbd", f"{where}/nbd.py")):
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    import nbd  # noqa: PLC0415

    return nbd


@dataclass
class Built:
    """A journal and the model of the device after every record."""

    path: Path
    model: DeviceModel
    size: int
    last_seq: int


def build_journal(path: Path, rng: random.Random, *, size: int, records: int) -> Built:
    """Journal a random history; the model sees exactly what the journal was given.

    Writes at any sector offset and length (partial blocks), discards and
    write-zeroes small and big (>= 1 MiB takes the extent path when the
    device is big enough), flushes, marks, and overflow windows: an
    OVERFLOW record for a range, resync copies of it later (or never).
    """
    base = bytearray(rng.randbytes(size))
    for block in range(0, size, 4096):
        if rng.random() < 0.3:
            base[block:block + 4096] = bytes(min(4096, size - block))
    source = path.parent / f"{path.name}-base.img"
    source.write_bytes(base)
    journal = Journal.create(path, device_bytes=size, source=source)
    source.unlink()
    model = DeviceModel(bytes(base))
    ts = journal.info.created_ns
    sectors = size // SECTOR
    pending: list[Record] = []
    resync: list[tuple[int, int]] = []  # ranges of open windows still to copy back
    seq = 0

    def add(rtype: int, offset: int = 0, length: int = 0, data: bytes = b"") -> None:
        nonlocal seq, ts
        seq += 1
        ts += rng.choice([1, 1000, 1_000_000])
        record = Record(seq, ts, rtype, 0, offset, length, data)
        pending.append(record)
        model.apply(record)

    while seq < records:
        roll = rng.random()
        if roll < 0.55:
            start = rng.randrange(sectors)
            count = rng.randint(1, min(sectors - start, rng.choice([1, 8, 40, 300])))
            add(RecordType.WRITE, start * SECTOR, count * SECTOR, rng.randbytes(count * SECTOR))
        elif roll < 0.65:
            start = rng.randrange(sectors)
            count = rng.randint(1, min(sectors - start, 200))
            add(rng.choice([RecordType.DISCARD, RecordType.WRITE_ZEROES]), start * SECTOR, count * SECTOR)
        elif roll < 0.68 and size >= 2 << 20:
            length = 1 << 20
            add(RecordType.WRITE_ZEROES, rng.randrange((size - length) // SECTOR + 1) * SECTOR, length)
        elif roll < 0.76:
            add(RecordType.FLUSH)
        elif roll < 0.82:
            add(RecordType.MARK, data=f"m{seq + 1}".encode())
        elif roll < 0.86 and not resync:
            start = rng.randrange(sectors)
            count = rng.randint(1, min(sectors - start, 64))
            # writes were dropped from just after the previous record on
            add(RecordType.OVERFLOW, start * SECTOR, count * SECTOR, (ts + 1).to_bytes(8, "little"))
            resync.append((start * SECTOR, count * SECTOR))
        elif resync and roll < 0.95:
            offset, length = resync.pop()
            add(RecordType.RESYNC, offset, length, rng.randbytes(length))
        if rng.random() < 0.2:
            journal.append(pending)
            pending = []
    journal.append(pending)
    last = journal.last_seq
    journal.close()
    return Built(path, model, size, last)


def model_at(built: Built, seq: int) -> bytes:
    """The model's device after record ``seq``."""
    return built.model.states[seq]


@dataclass
class Export:
    """A running `cdp export`."""

    proc: subprocess.Popen[str]
    info: dict
    uri: str

    def stop(self) -> tuple[int, str]:
        """SIGTERM it; returns (exit status, stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        _out, err = self.proc.communicate(timeout=30)
        assert "Traceback" not in err, err
        return self.proc.returncode, err


def start_export(journal: Path, *args: str, env: dict[str, str] | None = None) -> Export:
    """`cdp export --journal J ARGS --json`, once it printed its URI."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("CDP_JOURNAL", "CDP_DEBUG")}
    full_env.update(env or {})
    proc = subprocess.Popen([os.fspath(CDP), "export", "--journal", os.fspath(journal), *args, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        _out, err = proc.communicate(timeout=30)
        raise AssertionError(f"cdp export printed no URI (exit {proc.returncode}): {err}")
    info = json.loads(line)
    return Export(proc, info, info["uri"])


@pytest.fixture
def export_of() -> Iterator:
    """Start exports that are stopped (and checked: exit 0, no traceback) at the end of the test."""
    started: list[Export] = []

    def start(journal: Path, *args: str, env: dict[str, str] | None = None) -> Export:
        exp = start_export(journal, *args, env=env)
        started.append(exp)
        return exp

    yield start
    for exp in started:
        if exp.proc.poll() is None:
            code, err = exp.stop()
            assert code == 0, err


@pytest.fixture(scope="session")
def nbd() -> ModuleType:
    return libnbd()


def connect(nbd: ModuleType, uri: str):  # noqa: ANN201 - an nbd.NBD
    """A libnbd handle connected to ``uri``."""
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def read_all(h, size: int, chunk: int = 4 << 20) -> bytes:  # noqa: ANN001
    """The whole export through one connection."""
    out = bytearray()
    for offset in range(0, size, chunk):
        out += h.pread(min(chunk, size - offset), offset)
    return bytes(out)


#: LMDB's lock file is shared memory for its reader table, not journal content:
#: every reader rewrites it (the first one to open the index resets it), `cdp
#: points` as much as an export, so it is left out of "byte-identical".
LMDB_LOCK = os.path.join("index", "lock.mdb")


def tree_hashes(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (and so the set of names), but LMDB's lock file."""
    import hashlib

    return {name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()
            and (name := os.fspath(p.relative_to(path))) != LMDB_LOCK}
