"""The LMDB map grows by itself: no MapFullError reaches a user, in either process.

The initial map is shrunk to 1 MiB for the test so growth happens after a
few batches; everything else (LMDB, the growth and the reader's adoption of a
map another process grew) runs for real.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import journal.index as index_module
from journal import Journal, Record, RecordType

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64 << 20


def _discards(start: int, count: int, ts0: int) -> list[Record]:
    # 512 KiB discards: 128 block entries each and no payload, so the index grows fast
    return [Record(s, ts0 + s, RecordType.DISCARD, 0, (s % 120) * (512 << 10), 512 << 10)
            for s in range(start, start + count)]


def test_map_grows_under_the_writer(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(index_module, "_INITIAL_MAP", 1 << 20)
    with Journal.create(tmp_path / "j", device_bytes=SIZE) as journal:
        before = journal.index.env.info()["map_size"]
        for start in range(1, 2001, 200):
            journal.append(_discards(start, 200, journal.info.created_ns))
        after = journal.index.env.info()["map_size"]
        assert after > before
        assert journal.last_seq == 2000
        assert journal.read(0, 4096) == bytes(4096)


def test_reader_adopts_a_map_grown_by_another_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(index_module, "_INITIAL_MAP", 1 << 20)
    path = tmp_path / "j"
    Journal.create(path, device_bytes=SIZE).close()
    reader = Journal.open(path, readonly=True)
    assert reader.last_seq == 0
    writer = textwrap.dedent(f"""
        import journal.index as ix
        ix._INITIAL_MAP = 1 << 20
        from journal import Journal, Record, RecordType
        from tests.journal.test_mapsize import _discards
        with Journal.open({str(path)!r}) as j:
            for start in range(1, 2001, 200):
                j.append(_discards(start, 200, j.info.created_ns))
            j.append([Record(2001, j.info.created_ns + 5000, RecordType.WRITE, 0, 0, 4096, b"z" * 4096)])
    """)
    subprocess.run([sys.executable, "-c", writer], cwd=ROOT, check=True)
    assert reader.last_seq == 2001
    assert reader.index.env.info()["map_size"] > 1 << 20  # adopted the grown map
    assert reader.read(0, 4096) == b"z" * 4096
    assert len(reader.points()) == 1
    reader.close()
