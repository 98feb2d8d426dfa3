"""Readers never fail because the writer grew the map: loops of reads against appends at full speed.

The writer, its own process, starts from a 1 MiB map so it grows it many
times; meanwhile readers in this process (several threads, as the TUI has)
restore a fixed point, list points, read stats and verify, over and over.
Every call must succeed and every restore must equal the model.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import journal.index as index_module
from journal import Journal, Record, RecordType

ROOT = Path(__file__).resolve().parents[2]
SIZE = 8 << 20


def test_readers_in_loops_while_the_writer_grows_the_map(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(index_module, "_INITIAL_MAP", 1 << 20)
    path = tmp_path / "j"
    with Journal.create(path, device_bytes=SIZE) as j:
        t0 = j.info.created_ns
        j.append([Record(1, t0 + 1, RecordType.WRITE, 0, 0, 4096, b"x" * 4096),
                  Record(2, t0 + 2, RecordType.MARK, 0, 0, 0, b"fixed")])
    want = hashlib.sha256(b"x" * 4096 + bytes(SIZE - 4096)).hexdigest()
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time
        import journal.index as ix
        ix._INITIAL_MAP = 1 << 20
        from journal import Journal, Record, RecordType
        deadline = time.monotonic() + 8
        with Journal.open({str(path)!r}) as j:
            seq = j.last_seq
            while time.monotonic() < deadline:
                batch = []
                for _ in range(200):
                    seq += 1
                    # 64 KiB discards: 16 block entries each and no payload, so the index grows fast
                    batch.append(Record(seq, j.info.created_ns + 10 + seq, RecordType.DISCARD, 0,
                                        4096 + (seq % 100) * 65536, 65536))
                j.append(batch)
        """)], cwd=ROOT)
    errors: list[str] = []
    calls = [0]
    stop = threading.Event()

    def loop(job: str) -> None:
        n = 0
        with Journal.open(path, readonly=True) as reader:
            while not stop.is_set():
                n += 1
                try:
                    if job == "restore":
                        out = tmp_path / f"r-{threading.get_ident()}.img"
                        out.unlink(missing_ok=True)
                        reader.restore(out, seq=2)
                        if hashlib.sha256(out.read_bytes()).hexdigest() != want:
                            errors.append("restore at seq 2 differs")
                    elif job == "points":
                        if [p.name for p in reader.points(kinds=["mark"])] != ["fixed"]:
                            errors.append("points differ")
                        reader.stats()
                    elif job == "verify":
                        if not reader.verify().ok:
                            errors.append("verify found a problem")
                    calls[0] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
                    errors.append(f"{job}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=loop, args=(job,)) for job in ("restore", "points", "points", "verify")]
    for t in threads:
        t.start()
    writer.wait(timeout=60)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert writer.returncode == 0
    assert not errors, errors[:5]
    with Journal.open(path, readonly=True) as reader:
        grown = reader.index.env.info()["map_size"]
        assert reader.last_seq > 2000
    assert grown >= 8 << 20, "the map did not grow enough to test anything"
    assert calls[0] > 20
